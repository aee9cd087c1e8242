"""The training progress protocol: what a run reports, as dataclasses and as JSON lines.

:func:`app.ml.train.train` yields the run's events; ``maskloop train --events-json`` writes
each, and the registration or the error that ends the command, as one JSON object per line
(:meth:`to_line`); the Train dialog reads them back with :func:`from_dict`. Both sides use
these classes, so a field has one name. A reader ignores keys and event kinds it does not
know (a newer trainer may add them); a known event that lacks a field it needs, or holds
one of the wrong type, is a :class:`TrainEventError`. Torch-free: the GUI reads events
without loading the trainer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from app.errors import MaskLoopError

EVENT_KEY = "event"  # the key naming an event's kind on each line


class TrainEventError(MaskLoopError):
    """A training event line does not have the fields its kind needs."""


class _Event:
    """What every event can do: become a protocol line."""

    KIND: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON values, its kind under :data:`EVENT_KEY`."""
        out: dict[str, Any] = {EVENT_KEY: self.KIND}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    def to_line(self) -> str:
        """One protocol line (without its newline)."""
        return json.dumps(self.to_dict())


@dataclass(frozen=True)
class IterationEvent(_Event):
    """One optimiser step (``iteration`` counts from 1 over the whole run)."""

    KIND: ClassVar[str] = "iteration"
    epoch: int
    iteration: int
    total_iterations: int
    loss: float
    losses: dict[str, float]
    lr: float
    images_per_s: float
    eta_s: float


@dataclass(frozen=True)
class EpochEvent(_Event):
    """An epoch ended; ``metrics`` holds its validation figures (see :mod:`.metric_keys`)."""

    KIND: ClassVar[str] = "epoch"
    epoch: int
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FinishedEvent(_Event):
    """The run ended. ``model_state_path`` is None when cancelled or without checkpoint_dir."""

    KIND: ClassVar[str] = "finished"
    model_state_path: Path | None
    iterations: int
    cancelled: bool = False


@dataclass(frozen=True)
class RegisteredEvent(_Event):
    """``maskloop train`` registered the trained model as project version ``version``."""

    KIND: ClassVar[str] = "registered"
    version: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorEvent(_Event):
    """``maskloop train`` stopped without registering; ``message`` says why."""

    KIND: ClassVar[str] = "error"
    message: str


RunEvent = IterationEvent | EpochEvent | FinishedEvent  # what train() yields
TrainEvent = RunEvent | RegisteredEvent | ErrorEvent
EVENT_TYPES: dict[str, type[TrainEvent]] = {
    cls.KIND: cls
    for cls in (IterationEvent, EpochEvent, FinishedEvent, RegisteredEvent, ErrorEvent)
}


def from_dict(data: dict[str, Any]) -> TrainEvent | None:
    """The event ``data`` describes; None for a kind this version does not know."""
    kind = data.get(EVENT_KEY)
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TrainEventError(
                    f"The training event {kind!r} has no {f.name!r}; the app and the trainer "
                    "it started are not the same MaskLoop version (reinstall MaskLoop)."
                )
            continue
        try:
            values[f.name] = _convert(hints[f.name], data[f.name])
        except (TypeError, ValueError) as exc:
            raise TrainEventError(
                f"The training event {kind!r} has {f.name!r} = {data[f.name]!r}, "
                f"which is not a {hints[f.name]}."
            ) from exc
    return cls(**values)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint: Any, value: Any) -> Any:
    """``value`` as the field type ``hint`` (the few types these events use)."""
    if isinstance(hint, types.UnionType):  # X | None
        if value is None:
            return None
        (inner,) = (a for a in typing.get_args(hint) if a is not type(None))
        return _convert(inner, value)
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise TypeError("not a mapping")
        return {str(k): float(v) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("not a boolean")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("not a number")
        if hint is int and value != int(value):
            raise ValueError("not a whole number")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("not a string")
        return value
    if hint is Path:
        return Path(str(value))
    raise TypeError(f"unsupported field type {hint}")
