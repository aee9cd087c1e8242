"""Time spans as the progress lines show them."""

import pytest

from app.ui.durations import format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (-3, "0:00"), (59.6, "1:00"), (65, "1:05"), (3599.4, "59:59"), (3725, "1:02:05")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
