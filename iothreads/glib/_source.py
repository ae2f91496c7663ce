"""Sources: the GSource base class, its polled descriptors, and the stock
sources (:class:`Idle`, :class:`Timeout`, and the fd watch of ``io_add_watch``).

A source's fields are guarded by the lock of the context it is attached to
(see the ``_context`` module); before it is attached, a source belongs to the
thread that created it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._runs_in import ANY, runs_in
from ._checks import check_callable, check_events, check_fd, check_int
from ._constants import (
    _US_PER_MS,
    PRIORITY_DEFAULT,
    PRIORITY_DEFAULT_IDLE,
    SOURCE_CONTINUE,
    SOURCE_REMOVE,
    IOCondition,
)
from ._ownership import OWNER
from ._poll import get_monotonic_time

if TYPE_CHECKING:
    from ._context import MainContext

__all__ = ["Idle", "Source", "Timeout"]

_logger = logging.getLogger(__package__)

_SourceFunc = Callable[..., Any]

# Process-wide source ids (GLib's are per context; unique-per-process is
# stricter and keeps find_source_by_id unambiguous).  Guarded by _ID_LOCK.
_ID_LOCK = threading.Lock()
_next_id = itertools.count(1)


def _default_context() -> MainContext:
    """``MainContext.default()``, imported on call: the context module imports this one."""
    from ._context import MainContext

    return MainContext.default()


class _UnixFD:
    """One polled descriptor of a source (the tag of ``add_unix_fd``)."""

    __slots__ = ("events", "fd", "revents")

    def __init__(self, fd: int, events: IOCondition) -> None:
        self.fd = fd
        self.events = events  # guarded by the context lock once attached
        self.revents = IOCondition(0)  # owner only: written by check()


class Source:
    """An event source, as ``GSource``; subclass and override the hooks.

    ``prepare()`` returns ``(ready, timeout_ms)`` (-1 = no timeout),
    ``check()`` returns whether the source is ready after the poll,
    ``dispatch(callback, args)`` runs the source and returns whether to keep
    it, ``finalize()`` runs once after it is destroyed.  A source is also
    ready when one of its unix fds has events, or its ready time is reached.
    """

    def __init__(self) -> None:
        self._context: MainContext | None = None  # set once, by attach()
        self._id = 0
        self._name: str | None = None
        self._priority = PRIORITY_DEFAULT
        self._can_recurse = False
        self._ready_time = -1  # monotonic µs; -1 = none
        self._callback: _SourceFunc | None = None
        self._args: tuple[Any, ...] = ()
        self._fds: list[_UnixFD] = []
        self._destroyed = False
        self._ready = False  # found ready, not yet dispatched
        self._blocked = False  # in a dispatch that may not recurse
        self._in_call = 0  # dispatches of this source in progress
        self._finalized = False

    def __repr__(self) -> str:
        name = f" {self._name!r}" if self._name else ""
        state = " destroyed" if self._destroyed else ""
        return f"<{type(self).__name__}{name} id={self._id} priority={self._priority}{state}>"

    # -- the hooks ---------------------------------------------------------

    @runs_in(OWNER)
    def prepare(self) -> tuple[bool, int]:
        """Before the poll: ``(ready, timeout_ms)``; the default is not ready, no timeout."""
        return False, -1

    @runs_in(OWNER)
    def check(self) -> bool:
        """After the poll: whether the source is ready; the default is ``False``."""
        return False

    @runs_in(OWNER)
    def dispatch(self, callback: _SourceFunc | None, args: tuple[Any, ...]) -> bool:
        """Run the source; return whether to keep it.  The default calls ``callback(*args)``."""
        return _call_callback(self, callback, *args)

    @runs_in(ANY)
    def finalize(self) -> None:
        """Called once, after the source is destroyed and no dispatch of it runs."""

    # -- attaching and destroying ------------------------------------------

    @runs_in(ANY)
    def attach(self, context: MainContext | None = None) -> int:
        """Attach to *context* (default: the global default); return the source id.

        Raises:
            RuntimeError: the source is already attached, or destroyed, or
                *context* belongs to an IOThread whose stop() has begun.
        """
        ctx = context if context is not None else _default_context()
        with ctx._lock:
            if self._context is not None:
                raise RuntimeError(f"{self!r} is already attached to {self._context!r}")
            if self._destroyed:
                raise RuntimeError(f"{self!r} was destroyed and cannot be attached")
            if ctx._refusal is not None:
                raise RuntimeError(
                    f"cannot attach {self!r}: {ctx!r} {ctx._refusal}; "
                    "attach it to the context of a running IOThread"
                )
            with _ID_LOCK:
                self._id = next(_next_id)
            self._context = ctx
            ctx._sources[self._id] = self
            ctx._sorted = None
            if self._fds:
                ctx._poll_changed = True
            ctx._wakeup.signal_if_waiting_locked()
            return self._id

    @runs_in(ANY)
    def destroy(self) -> None:
        """Remove the source from its context; it is never dispatched again.

        A dispatch of it already running in another thread completes; none
        starts after this returns.  Destroying twice is harmless.
        """
        ctx = self._context
        if ctx is None:
            finalize = not self._destroyed
            self._destroyed = True
            self._finalized = True
        else:
            with ctx._lock:
                self._destroy_locked(ctx)
                finalize = self._take_finalize_locked()
        if finalize:
            self._run_finalize()

    def _destroy_locked(self, ctx: MainContext) -> None:
        # caller holds ctx._lock
        if self._destroyed:
            return
        self._destroyed = True
        del ctx._sources[self._id]
        ctx._sorted = None
        # As GLib, the callback (and what it holds) is dropped at once.
        self._callback, self._args = None, ()
        if self._fds:
            ctx._poll_changed = True
        ctx._wakeup.signal_if_waiting_locked()

    def _take_finalize_locked(self) -> bool:
        # caller holds the context lock
        if self._destroyed and not self._in_call and not self._finalized:
            self._finalized = True
            return True
        return False

    def _run_finalize(self) -> None:
        try:
            self.finalize()
        except Exception:
            _logger.exception("finalize() of %r raised", self)

    @runs_in(ANY)
    def is_destroyed(self) -> bool:
        """Whether :meth:`destroy` was called (or a dispatch removed the source)."""
        return self._destroyed

    # -- properties -------------------------------------------------------

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        return self._context._lock if self._context is not None else contextlib.nullcontext()

    def _changed_locked(self, poll_changed: bool) -> None:
        # caller holds the context lock (if attached)
        ctx = self._context
        if ctx is not None and not self._destroyed:
            if poll_changed:
                ctx._poll_changed = True
            ctx._wakeup.signal_if_waiting_locked()

    @runs_in(ANY)
    def get_id(self) -> int:
        """The id given by :meth:`attach`; 0 before."""
        return self._id

    @runs_in(ANY)
    def get_context(self) -> MainContext | None:
        """The context attached to, else ``None``."""
        return self._context

    @runs_in(ANY)
    def set_name(self, name: str | None) -> None:
        """Name the source (shown in its repr and in logged errors)."""
        self._name = name

    @runs_in(ANY)
    def get_name(self) -> str | None:
        """The name given by :meth:`set_name`."""
        return self._name

    @runs_in(ANY)
    def set_priority(self, priority: int) -> None:
        """Set the priority (lower is more urgent).

        Raises:
            TypeError: *priority* is not an int.
        """
        check_int("priority", priority)
        with self._guard():
            self._priority = priority
            if self._context is not None:
                self._context._sorted = None
            self._changed_locked(poll_changed=bool(self._fds))

    @runs_in(ANY)
    def get_priority(self) -> int:
        """The priority."""
        return self._priority

    @runs_in(ANY)
    def set_can_recurse(self, can_recurse: bool) -> None:
        """Allow dispatching this source from a nested iteration of its own callback."""
        with self._guard():
            self._can_recurse = bool(can_recurse)

    @runs_in(ANY)
    def get_can_recurse(self) -> bool:
        """Whether the source may be dispatched recursively."""
        return self._can_recurse

    @runs_in(ANY)
    def set_callback(self, func: _SourceFunc, *args: Any) -> None:
        """Set the callback passed to :meth:`dispatch` as ``(func, args)``.

        Raises:
            TypeError: *func* is not callable.
        """
        check_callable(func)
        with self._guard():
            self._callback, self._args = func, args

    @runs_in(ANY)
    def set_ready_time(self, ready_time: int) -> None:
        """Make the source ready at *ready_time* (monotonic µs); -1 clears it.

        Raises:
            TypeError: *ready_time* is not an int.
            ValueError: *ready_time* is below -1.
        """
        check_int("ready_time", ready_time)
        if ready_time < -1:
            raise ValueError(f"ready_time must be >= -1, not {ready_time}")
        with self._guard():
            if self._ready_time != ready_time:
                self._ready_time = ready_time
                self._changed_locked(poll_changed=False)

    @runs_in(ANY)
    def get_ready_time(self) -> int:
        """The ready time (monotonic µs), -1 if none."""
        return self._ready_time

    @runs_in(ANY)
    def get_time(self) -> int:
        """The context's clock (µs) cached for the current iteration.

        Raises:
            RuntimeError: the source is not attached.
        """
        if self._context is None:
            raise RuntimeError(f"{self!r} is not attached to a context")
        return self._context._time

    # -- polled descriptors ------------------------------------------------

    @runs_in(ANY)
    def add_unix_fd(self, fd: int, events: int) -> object:
        """Poll *fd* for *events* (IOCondition) with this source; return a tag.

        The source is ready when the fd has events; :meth:`query_unix_fd`
        tells which.  ERR, HUP and NVAL are reported even if not asked for.

        Raises:
            TypeError: *fd* or *events* is not an int.
            ValueError: *fd* is negative, or *events* has unknown bits.
        """
        tag = _UnixFD(check_fd(fd), check_events(events))
        with self._guard():
            self._fds.append(tag)
            self._changed_locked(poll_changed=True)
        return tag

    def _tag(self, tag: object) -> _UnixFD:
        """*tag* as this source's polled fd record; the caller holds the guard.

        Raises:
            ValueError: *tag* is not one returned by this source's add_unix_fd().
        """
        if not isinstance(tag, _UnixFD) or all(t is not tag for t in self._fds):
            raise ValueError(f"{tag!r} is not a unix fd tag of {self!r}")
        return tag

    @runs_in(ANY)
    def modify_unix_fd(self, tag: object, events: int) -> None:
        """Change the events polled for the fd of *tag* (0 pauses it).

        Raises:
            ValueError: *tag* is not from this source, or *events* has unknown bits.
            TypeError: *events* is not an int.
        """
        new_events = check_events(events)
        with self._guard():
            self._tag(tag).events = new_events
            self._changed_locked(poll_changed=True)

    @runs_in(ANY)
    def remove_unix_fd(self, tag: object) -> None:
        """Stop polling the fd of *tag*.

        Raises:
            ValueError: *tag* is not from this source.
        """
        with self._guard():
            self._fds.remove(self._tag(tag))
            self._changed_locked(poll_changed=True)

    @runs_in(ANY)
    def query_unix_fd(self, tag: object) -> IOCondition:
        """The events the last poll found on the fd of *tag*.

        Raises:
            ValueError: *tag* is not from this source.
        """
        with self._guard():
            return self._tag(tag).revents


def _call_callback(source: Source, callback: _SourceFunc | None, *args: Any) -> bool:
    """``callback(*args)`` as a keep/remove decision; no callback removes the source."""
    if callback is None:
        warnings.warn(
            f"{source!r} dispatched without a callback; call set_callback()",
            RuntimeWarning,
            stacklevel=2,
        )
        return SOURCE_REMOVE
    return bool(callback(*args))


class Idle(Source):
    """A source that is always ready (default priority ``PRIORITY_DEFAULT_IDLE``)."""

    def __init__(self, priority: int = PRIORITY_DEFAULT_IDLE) -> None:
        super().__init__()
        self.set_priority(priority)

    @runs_in(OWNER)
    def prepare(self) -> tuple[bool, int]:
        return True, 0

    @runs_in(OWNER)
    def check(self) -> bool:
        return True


class Timeout(Source):
    """A source ready *interval* ms after creation, then every *interval* ms.

    After each dispatch that keeps it, the next expiry is *interval* after the
    iteration's clock (no catching up, as GLib).

    Raises:
        TypeError: *interval* or *priority* is not an int.
        ValueError: *interval* is negative.
    """

    def __init__(self, interval: int = 0, priority: int = PRIORITY_DEFAULT) -> None:
        super().__init__()
        if check_int("interval", interval) < 0:
            raise ValueError(f"interval must be >= 0 ms, not {interval}")
        self._interval_us = interval * _US_PER_MS
        self.set_priority(priority)
        self.set_ready_time(get_monotonic_time() + self._interval_us)

    @runs_in(OWNER)
    def dispatch(self, callback: _SourceFunc | None, args: tuple[Any, ...]) -> bool:
        if not _call_callback(self, callback, *args):
            return SOURCE_REMOVE
        self.set_ready_time(self.get_time() + self._interval_us)
        return SOURCE_CONTINUE


class _IOWatch(Source):
    """The source of :func:`io_add_watch`: ``callback(channel, condition, *args)``."""

    def __init__(self, channel: Any, condition: IOCondition) -> None:
        super().__init__()
        self._channel = channel
        fd = channel if isinstance(channel, int) else channel.fileno()
        self._watch = self.add_unix_fd(fd, condition)

    @runs_in(OWNER)
    def dispatch(self, callback: _SourceFunc | None, args: tuple[Any, ...]) -> bool:
        return _call_callback(self, callback, self._channel, self.query_unix_fd(self._watch), *args)
