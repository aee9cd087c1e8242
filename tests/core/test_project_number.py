import logging

import pytest

from app.core.project_number import ProjectNumber
from app.core.store import ProjectStore
from app.errors import MaskLoopError


class TooBig(MaskLoopError):
    pass


def _check(value: float) -> float:
    if value > 5:
        raise TooBig(f"{value} is above 5")
    return round(value, 1)


SETTING = ProjectNumber("some_number", 2.5, 1, _check, "some number")


@pytest.fixture
def store(tmp_path):
    with ProjectStore.open(tmp_path / "p", create=True) as s:
        yield s


def test_default_until_saved_then_the_saved_rounded_value(store):
    assert SETTING.read(store) == 2.5
    assert SETTING.write(store, 3.14159) == 3.1
    assert store.get_meta("some_number") == "3.1"
    assert SETTING.read(store) == 3.1


def test_a_bad_value_is_refused_on_write_and_ignored_on_read(store, caplog):
    with pytest.raises(TooBig, match="above 5"):
        SETTING.write(store, 7)
    assert store.get_meta("some_number") is None  # nothing written
    for damaged in ("7", "abc"):
        store.set_meta("some_number", damaged)  # e.g. edited by hand
        with caplog.at_level(logging.WARNING):
            assert SETTING.read(store) == 2.5
        assert f"unreadable some number {damaged!r}" in caplog.text
