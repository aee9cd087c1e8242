"""Typed exceptions. Each message says what went wrong and what the user can do about it."""


class MaskLoopError(Exception):
    """Base class for every error MaskLoop reports to a user."""
