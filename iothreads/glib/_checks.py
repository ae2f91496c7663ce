"""Argument checks shared by the public functions: a bad argument raises, naming itself."""

from __future__ import annotations

from ._constants import _ALL_CONDITIONS, IOCondition

__all__ = ["check_callable", "check_events", "check_fd", "check_int"]


def check_int(name: str, value: object) -> int:
    """Return *value* if it is an ``int`` (a ``bool`` is not).

    Raises:
        TypeError: *value* is not an int.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    return value


def check_callable(value: object) -> None:
    """Check that *value* can be a callback.

    Raises:
        TypeError: *value* is not callable.
    """
    if not callable(value):
        raise TypeError(f"callback must be callable, not {value!r}")


def check_events(value: object) -> IOCondition:
    """Return *value* as an :class:`IOCondition`.

    Raises:
        TypeError: *value* is not an int.
        ValueError: *value* has bits that are not IOCondition flags.
    """
    events = check_int("condition", value)
    if events & ~_ALL_CONDITIONS:
        raise ValueError(f"condition {value!r} has bits that are not IOCondition flags")
    return IOCondition(events)


def check_fd(value: object) -> int:
    """Return *value* if it is a non-negative file descriptor number.

    Raises:
        TypeError: *value* is not an int.
        ValueError: *value* is negative.
    """
    fd = check_int("fd", value)
    if fd < 0:
        raise ValueError(f"fd must be >= 0, not {fd}")
    return fd
