"""PyGObject's module functions: a source made, given its callback and attached
in one call.

Each takes ``context=`` (an extension); without it the global default
context is used, as in GLib.
"""

from __future__ import annotations

import warnings
from typing import Any

from .._runs_in import ANY, runs_in
from ._checks import check_callable, check_events, check_int
from ._constants import _MS_PER_S, PRIORITY_DEFAULT, PRIORITY_DEFAULT_IDLE
from ._context import MainContext
from ._source import Idle, Source, Timeout, _IOWatch, _SourceFunc

__all__ = [
    "idle_add",
    "io_add_watch",
    "source_remove",
    "timeout_add",
    "timeout_add_seconds",
]


def _attach(
    source: Source, function: _SourceFunc, args: tuple[Any, ...], context: MainContext | None
) -> int:
    source.set_callback(function, *args)
    return source.attach(context)


@runs_in(ANY)
def timeout_add(
    interval: int,
    function: _SourceFunc,
    *args: Any,
    priority: int = PRIORITY_DEFAULT,
    context: MainContext | None = None,
) -> int:
    """Call ``function(*args)`` every *interval* ms until it returns a false value.

    Returns the source id.  *context* (an extension) defaults to the global
    default context.

    Raises:
        TypeError: *function* is not callable, or *interval*/*priority* not an int.
        ValueError: *interval* is negative.
        RuntimeError: *context* belongs to an IOThread whose stop() has begun.
    """
    check_callable(function)
    return _attach(Timeout(interval, priority), function, args, context)


@runs_in(ANY)
def timeout_add_seconds(
    interval: int,
    function: _SourceFunc,
    *args: Any,
    priority: int = PRIORITY_DEFAULT,
    context: MainContext | None = None,
) -> int:
    """:func:`timeout_add` with *interval* in seconds.

    Raises:
        TypeError: *function* is not callable, or *interval*/*priority* not an int.
        ValueError: *interval* is negative.
        RuntimeError: *context* belongs to an IOThread whose stop() has begun.
    """
    check_callable(function)
    if check_int("interval", interval) < 0:
        raise ValueError(f"interval must be >= 0 s, not {interval}")
    return _attach(Timeout(interval * _MS_PER_S, priority), function, args, context)


@runs_in(ANY)
def idle_add(
    function: _SourceFunc,
    *args: Any,
    priority: int = PRIORITY_DEFAULT_IDLE,
    context: MainContext | None = None,
) -> int:
    """Call ``function(*args)`` whenever nothing more urgent is ready, until it returns false.

    Raises:
        TypeError: *function* is not callable, or *priority* not an int.
        RuntimeError: *context* belongs to an IOThread whose stop() has begun.
    """
    check_callable(function)
    return _attach(Idle(priority), function, args, context)


@runs_in(ANY)
def io_add_watch(
    fd: Any,
    priority: int,
    condition: int,
    function: _SourceFunc,
    *args: Any,
    context: MainContext | None = None,
) -> int:
    """Call ``function(fd, condition, *args)`` when *fd* has *condition*.

    *fd* is an int or an object with ``fileno()``; the callback receives it
    as given, and the conditions that occurred (ERR, HUP, NVAL included).

    Raises:
        TypeError: *function* is not callable, *fd* is neither an int nor has
            ``fileno()``, or *priority*/*condition* is not an int.
        ValueError: the fd is negative, or *condition* has unknown bits.
        RuntimeError: *context* belongs to an IOThread whose stop() has begun.
    """
    check_callable(function)
    if not isinstance(fd, int) and not callable(getattr(fd, "fileno", None)):
        raise TypeError(f"fd must be an int or have fileno(), not {fd!r}")
    source = _IOWatch(fd, check_events(condition))
    source.set_priority(priority)
    return _attach(source, function, args, context)


@runs_in(ANY)
def source_remove(tag: int, context: MainContext | None = None) -> bool:
    """Destroy the source with id *tag*; ``False`` (and a warning) if there is none.

    Raises:
        TypeError: *tag* is not an int.
    """
    ctx = context if context is not None else MainContext.default()
    source = ctx.find_source_by_id(check_int("tag", tag))
    if source is None:
        warnings.warn(
            f"Source ID {tag} was not found when attempting to remove it",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    source.destroy()
    return True
