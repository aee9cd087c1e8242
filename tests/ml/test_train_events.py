"""The training protocol: every event survives a JSON line, and readers of an older version
skip what a newer trainer adds but say clearly when a field they need is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.ml.train_events import (
    EVENT_KEY,
    EVENT_TYPES,
    EpochEvent,
    ErrorEvent,
    FinishedEvent,
    IterationEvent,
    RegisteredEvent,
    TrainEventError,
    from_dict,
)

EXAMPLES = [
    IterationEvent(
        epoch=0, iteration=3, total_iterations=8, loss=1.5, losses={"loss_mask": 0.5}, lr=3e-4,
        images_per_s=2.5, eta_s=12.0,
    ),
    EpochEvent(epoch=1, checkpoint=Path("models/checkpoints/last.pt"), metrics={"segm_AP": 0.25}),
    EpochEvent(epoch=2, checkpoint=None),
    FinishedEvent(model_state_path=Path("models/checkpoints/model.pt"), iterations=8),
    FinishedEvent(model_state_path=None, iterations=4, cancelled=True),
    RegisteredEvent(version=3, metrics={"segm_AP50": 0.5, "val_images": 2.0}),
    ErrorEvent("The training loss became nan."),
]  # fmt: skip


def line_round_trip(event):
    return from_dict(json.loads(event.to_line()))


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_survives_a_json_line(event) -> None:
    assert line_round_trip(event) == event
    assert event.to_dict()[EVENT_KEY] == event.KIND


def test_the_examples_cover_every_kind() -> None:
    assert {type(e) for e in EXAMPLES} == set(EVENT_TYPES.values())


def test_numbers_written_as_integers_read_back_as_floats() -> None:
    event = from_dict({EVENT_KEY: "registered", "version": 1, "metrics": {"segm_AP": 1}})
    assert event == RegisteredEvent(1, {"segm_AP": 1.0})
    assert isinstance(event.metrics["segm_AP"], float)


def test_keys_and_kinds_a_newer_trainer_adds_are_skipped() -> None:
    data = {EVENT_KEY: "finished", "model_state_path": None, "iterations": 2, "peak_gib": 3.5}
    assert from_dict(data) == FinishedEvent(None, 2)
    assert from_dict({EVENT_KEY: "memory", "gib": 3.5}) is None


def test_a_missing_field_says_which_and_why() -> None:
    with pytest.raises(TrainEventError, match="'iteration' has no 'loss'.*same MaskLoop version"):
        from_dict({EVENT_KEY: "iteration", "epoch": 0, "iteration": 1, "total_iterations": 2})


@pytest.mark.parametrize(
    "data",
    [
        {EVENT_KEY: "registered", "version": "v1"},
        {EVENT_KEY: "registered", "version": 1.5},
        {EVENT_KEY: "registered", "version": 1, "metrics": [0.5]},
        {EVENT_KEY: "finished", "model_state_path": None, "iterations": 1, "cancelled": "no"},
        {EVENT_KEY: "error", "message": None},
    ],
)
def test_a_field_of_the_wrong_type_is_an_error(data) -> None:
    with pytest.raises(TrainEventError, match="is not a"):
        from_dict(data)
