"""A pure-Python GLib-like main context, API after PyGObject's ``GLib`` module.

Code written as ``from gi.repository import GLib`` runs on
``from iothreads import glib as GLib`` for the parts implemented here:
:class:`MainContext`, :class:`MainLoop`, :class:`Source` (subclassable, with
:class:`Timeout` and :class:`Idle`), the module functions ``timeout_add``,
``timeout_add_seconds``, ``idle_add``, ``io_add_watch``, ``source_remove`` and
the constants.  Each module function also takes ``context=`` (an extension);
without it the global default context is used, as in GLib.

The semantics follow GLib's ``gmain.c``:

- one iteration is prepare -> query -> poll -> check -> dispatch; only the
  ready sources of the highest ready priority are dispatched;
- a callback returning a false value (``SOURCE_REMOVE``, ``None``) destroys its
  source; an exception from a callback is logged and also destroys it (as
  PyGObject treats it as ``False``);
- no dispatch of a source starts after ``destroy()`` has returned, whichever
  thread destroyed it; a dispatch already running is not interrupted;
- a source is not dispatched recursively (from a nested iteration run by its
  own callback) unless ``set_can_recurse(True)``;
- attaching, destroying, or changing a source from another thread wakes a
  context blocked in poll;
- ``MainLoop.run()`` in a second thread, while another thread owns the
  context, never iterates it: it waits, dispatching nothing, until it can own
  the context or its loop is quit (``g_main_loop_run``); ``iteration(False)``
  from such a thread returns ``False`` at once;
- ``finalize()`` runs once, after the source is destroyed and no dispatch of
  it is running, in the thread that did the last of the two.

Deviations, each deliberate:

- source ids are unique in the process, not only per context;
- a file-descriptor watch reports ``revents & (condition | ERR | HUP | NVAL)``
  (GLib's ``g_unix_fd_add`` rule), so a closed peer is always reported as HUP
  even to a watch that asked only for IN, instead of spinning unreported;
- ready timeouts of one priority are dispatched in deadline order (GLib uses
  attach order), so timeouts fire in deadline order even when an iteration
  finds several of them due;
- ``timeout_add_seconds`` does not round the first expiry to a whole second;
- a ``prepare()``/``check()`` that raises is logged and its source destroyed.

A foreign event loop can drive a context GLib-style (the caller must own it,
see :meth:`MainContext.acquire`): ``prepare()``, ``query()``, wait on the fds
from ``query()`` plus :meth:`MainContext.fileno` for at most the timeout, then
``check()`` and ``dispatch()``.  :class:`_AsyncioDriver` does this on an
asyncio loop (stdlib or uvloop).

Threads: a function runs in any thread unless its comment names one.
Locking: every field of a context, of its attached sources and of its main
loops is guarded by the context's ``_lock``, unless a comment says otherwise.
User code (``prepare``, ``check``, ``dispatch``, ``finalize``, callbacks) never
runs under that lock.  Fields marked "owner only" are touched only by the
thread that owns (has acquired) the context.  Before it is attached, a source
belongs to the thread that created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import os
import select
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

__all__ = [
    "IO_ERR",
    "IO_HUP",
    "IO_IN",
    "IO_NVAL",
    "IO_OUT",
    "IO_PRI",
    "PRIORITY_DEFAULT",
    "PRIORITY_DEFAULT_IDLE",
    "PRIORITY_HIGH",
    "PRIORITY_HIGH_IDLE",
    "PRIORITY_LOW",
    "SOURCE_CONTINUE",
    "SOURCE_REMOVE",
    "IOCondition",
    "Idle",
    "MainContext",
    "MainLoop",
    "Source",
    "Timeout",
    "get_monotonic_time",
    "idle_add",
    "io_add_watch",
    "source_remove",
    "timeout_add",
    "timeout_add_seconds",
]

_logger = logging.getLogger(__name__)

# GLib's G_PRIORITY_* values (gmain.h); lower is more urgent.
PRIORITY_HIGH: Final = -100
PRIORITY_DEFAULT: Final = 0
PRIORITY_HIGH_IDLE: Final = 100
PRIORITY_DEFAULT_IDLE: Final = 200
PRIORITY_LOW: Final = 300

SOURCE_CONTINUE: Final = True
SOURCE_REMOVE: Final = False


class IOCondition(enum.IntFlag):
    """Poll conditions; the values are the host's ``POLL*`` bits, as in GLib."""

    IN = select.POLLIN
    OUT = select.POLLOUT
    PRI = select.POLLPRI
    ERR = select.POLLERR
    HUP = select.POLLHUP
    NVAL = select.POLLNVAL


# PyGObject also exports the flags as module constants.
IO_IN: Final = IOCondition.IN
IO_OUT: Final = IOCondition.OUT
IO_PRI: Final = IOCondition.PRI
IO_ERR: Final = IOCondition.ERR
IO_HUP: Final = IOCondition.HUP
IO_NVAL: Final = IOCondition.NVAL

_ALL_CONDITIONS: Final = int(
    IOCondition.IN
    | IOCondition.OUT
    | IOCondition.PRI
    | IOCondition.ERR
    | IOCondition.HUP
    | IOCondition.NVAL
)
# poll(2) reports these whether or not they were asked for (GLib masks
# revents with events | G_IO_ERR | G_IO_HUP | G_IO_NVAL in g_main_context_check).
_ALWAYS_REPORTED: Final = int(IOCondition.ERR | IOCondition.HUP | IOCondition.NVAL)
# The events the driver's epoll is asked for: POLLIN, POLLPRI and POLLOUT have
# the values of EPOLLIN, EPOLLPRI and EPOLLOUT on Linux (and epoll reports ERR
# and HUP unasked); NVAL has no epoll counterpart.
_EPOLL_EVENTS: Final = int(IOCondition.IN | IOCondition.PRI | IOCondition.OUT)

# G_MAXINT: the "no source is ready" priority returned by prepare(), and the
# largest timeout in ms, which is also the most poll(2) takes (a C int).
_MAX_INT: Final = 2**31 - 1
_US_PER_MS: Final = 1000
_MS_PER_S: Final = 1000
# At most one wake-up byte is ever outstanding (MainContext._woken), so one
# read of any size >= 1 drains the pipe.
_WAKE_READ_SIZE: Final = 64

_SourceFunc = Callable[..., Any]

# Process-wide source ids (GLib's are per context; unique-per-process is
# stricter and keeps find_source_by_id unambiguous).  Guarded by _ID_LOCK.
_ID_LOCK = threading.Lock()
_next_id = itertools.count(1)


def get_monotonic_time() -> int:
    """The monotonic clock in microseconds, as ``g_get_monotonic_time()``."""
    # runs in any thread
    return time.monotonic_ns() // 1000


def _check_int(name: str, value: object) -> int:
    """Return *value* if it is an ``int`` (a ``bool`` is not).

    Raises:
        TypeError: *value* is not an int.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    return value


def _check_callable(value: object) -> None:
    """Check that *value* can be a callback.

    Raises:
        TypeError: *value* is not callable.
    """
    if not callable(value):
        raise TypeError(f"callback must be callable, not {value!r}")


def _check_events(value: object) -> IOCondition:
    """Return *value* as an :class:`IOCondition`.

    Raises:
        TypeError: *value* is not an int.
        ValueError: *value* has bits that are not IOCondition flags.
    """
    events = _check_int("condition", value)
    if events & ~_ALL_CONDITIONS:
        raise ValueError(f"condition {value!r} has bits that are not IOCondition flags")
    return IOCondition(events)


def _check_fd(value: object) -> int:
    """Return *value* if it is a non-negative file descriptor number.

    Raises:
        TypeError: *value* is not an int.
        ValueError: *value* is negative.
    """
    fd = _check_int("fd", value)
    if fd < 0:
        raise ValueError(f"fd must be >= 0, not {fd}")
    return fd


class _UnixFD:
    """One polled descriptor of a source (the tag of ``add_unix_fd``)."""

    __slots__ = ("events", "fd", "revents")

    def __init__(self, fd: int, events: IOCondition) -> None:
        self.fd = fd
        self.events = events  # guarded by the context lock once attached
        self.revents = IOCondition(0)  # owner only: written by check()


class _Waker:
    """A non-blocking pipe whose read end a poller watches to be woken."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def signal(self) -> None:
        # runs in any thread, under the context lock
        with contextlib.suppress(BlockingIOError):  # a full pipe is signalled already
            os.write(self.w, b"\0")

    def drain(self) -> None:
        # runs in the owner thread, under the context lock
        with contextlib.suppress(BlockingIOError):
            os.read(self.r, _WAKE_READ_SIZE)

    @staticmethod
    def close(r: int, w: int) -> None:
        os.close(r)
        os.close(w)


class _ThreadDefaults(threading.local):
    stack: list[MainContext]

    def __init__(self) -> None:
        self.stack = []


_thread_defaults = _ThreadDefaults()
_DEFAULT_LOCK = threading.Lock()
_default_context: MainContext | None = None  # guarded by _DEFAULT_LOCK


class MainContext:
    """A set of sources and the machinery to run them, as ``GMainContext``.

    Any thread may attach and destroy sources and call :meth:`wakeup`; one
    thread at a time owns the context (:meth:`acquire`) and runs its
    iterations.  The wake-up pipe is created by the first poll (:meth:`fileno`)
    and closed by ``_AsyncioDriver.close()``, or when the context is
    garbage-collected.

    An IOThread's context is closed when the IOThread stops
    (``_AsyncioDriver.close()``): its sources are destroyed and finalised, and
    from then on :meth:`Source.attach` refuses new ones, since no IOThread
    would ever run them.  A ``MainLoop`` may still run the closed context
    until it is quit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # notified when ownership frees
        self._sources: dict[int, Source] = {}  # attached, not destroyed, in attach order
        self._sorted: list[Source] | None = None  # _sources by priority; None = stale
        self._owner: int | None = None  # thread ident of the owner
        self._owner_count = 0
        self._closed = False  # closed with the IOThread that drove it: no attach
        self._waker: _Waker | None = None  # created on first need
        self._close_waker_fds: Callable[[], object] | None = None  # closes _waker's fds once
        self._poll_waiting = False  # between prepare() and check(): changes must wake
        self._woken = False  # a wake-up is pending: a byte is in the pipe, if there is one
        self._poll_changed = False  # fds changed since query(): revents are stale
        self._time = get_monotonic_time()  # the iteration's cached clock
        self._timeout = -1  # owner only: computed by prepare(), returned by query()
        self._pending: list[Source] = []  # owner only: chosen by check()
        self._in_check_or_prepare = 0  # owner only

    def __repr__(self) -> str:
        return f"<MainContext at {id(self):#x} sources={len(self._sources)}>"

    # -- the global and thread-default contexts -------------------------

    @classmethod
    def default(cls) -> MainContext:
        """The process-wide default context (created on first use)."""
        # runs in any thread
        global _default_context
        with _DEFAULT_LOCK:
            if _default_context is None:
                _default_context = cls()
            return _default_context

    @staticmethod
    def get_thread_default() -> MainContext | None:
        """The calling thread's pushed context; ``None`` means the global default."""
        # runs in any thread; reads only that thread's stack (and
        # _default_context without its lock: it is set once, never changed)
        stack = _thread_defaults.stack
        if not stack or stack[-1] is _default_context:
            return None
        return stack[-1]

    @staticmethod
    def ref_thread_default() -> MainContext:
        """The calling thread's pushed context, else the global default."""
        # runs in any thread
        stack = _thread_defaults.stack
        return stack[-1] if stack else MainContext.default()

    def push_thread_default(self) -> None:
        """Acquire this context and make it the calling thread's default.

        Raises:
            RuntimeError: another thread owns this context.
        """
        # runs in the thread that will use the context
        if not self.acquire():
            raise RuntimeError(f"cannot push {self!r}: it is owned by thread {self._owner}")
        _thread_defaults.stack.append(self)

    def pop_thread_default(self) -> None:
        """Undo :meth:`push_thread_default` and release this context.

        Raises:
            RuntimeError: this context is not the calling thread's top default.
        """
        # runs in the thread that pushed
        stack = _thread_defaults.stack
        if not stack or stack[-1] is not self:
            top = stack[-1] if stack else None
            raise RuntimeError(f"cannot pop {self!r}: the thread's default is {top!r}")
        stack.pop()
        self.release()

    def _discard_thread_default(self) -> None:
        """Take every push of this context off the calling thread's stack,
        releasing it once per push; contexts pushed above it stay pushed.

        For a thread that is shutting down (``AioContext.close()`` at an
        IOThread's stop): unlike :meth:`pop_thread_default` it never raises,
        so code in that thread that pushed a context and never popped it (or
        popped once too often) cannot break the shutdown; the imbalance is
        logged.
        """
        # runs in the thread that pushed
        stack = _thread_defaults.stack
        if not stack or stack[-1] is not self:
            _logger.warning(
                "%r is not the thread's top default context (the stack is %r): "
                "a push_thread_default() without its pop_thread_default()?",
                self,
                stack,
            )
        pushes = [i for i, context in enumerate(stack) if context is self]
        for i in reversed(pushes):
            del stack[i]
            self.release()

    # -- ownership -------------------------------------------------------

    def acquire(self) -> bool:
        """Become (recursively) the owner; ``False`` if another thread owns it."""
        # runs in any thread
        me = threading.get_ident()
        with self._lock:
            if self._owner is None:
                self._owner = me
            elif self._owner != me:
                return False
            self._owner_count += 1
            return True

    def release(self) -> None:
        """Undo one :meth:`acquire`.

        Raises:
            RuntimeError: the calling thread does not own the context.
        """
        # runs in the owner thread
        with self._lock:
            if self._owner != threading.get_ident():
                raise RuntimeError(
                    f"{self!r} released by thread {threading.get_ident()}, "
                    f"but its owner is {self._owner}"
                )
            self._owner_count -= 1
            if self._owner_count == 0:
                self._owner = None
                self._cond.notify_all()

    def is_owner(self) -> bool:
        """Whether the calling thread owns the context."""
        # runs in any thread
        with self._lock:
            return self._owner == threading.get_ident()

    def _wait_for_ownership(self, keep_waiting: Callable[[], bool]) -> bool:
        """Block until the calling thread owns the context, or *keep_waiting* is false.

        *keep_waiting* is evaluated under the context lock.
        """
        # runs in any thread
        me = threading.get_ident()
        with self._cond:
            while True:
                if self._owner is None or self._owner == me:
                    self._owner = me
                    self._owner_count += 1
                    return True
                if not keep_waiting():
                    return False
                self._cond.wait()

    def _require_owner(self, what: str) -> None:
        """Check that the calling thread may run the step *what* of an iteration.

        Raises:
            RuntimeError: the calling thread does not own the context, or
                *what* is called from a source's ``prepare()``/``check()``.
        """
        with self._lock:
            owner = self._owner
        if owner != threading.get_ident():
            raise RuntimeError(
                f"MainContext.{what}() needs the context acquired by the calling thread "
                f"{threading.get_ident()}; its owner is {owner}"
            )
        if self._in_check_or_prepare:
            raise RuntimeError(
                f"MainContext.{what}() called from within a source's prepare() or check()"
            )

    # -- wake-ups --------------------------------------------------------

    def fileno(self) -> int:
        """The wake-up descriptor: readable when the context must run again.

        A foreign loop driving the context watches it beside the fds from
        :meth:`query`; :meth:`check` drains it.
        """
        # runs in any thread
        with self._lock:
            return self._waker_locked().r

    def _waker_locked(self) -> _Waker:
        # caller holds self._lock.  Only a poller creates the pipe (fileno()),
        # so a context nobody polls holds no descriptor; a wake-up that came
        # while there was none is written at once.
        if self._waker is None:
            self._waker = _Waker()
            self._close_waker_fds = weakref.finalize(
                self, _Waker.close, self._waker.r, self._waker.w
            )
            if self._woken:
                self._waker.signal()
        return self._waker

    def _close_waker(self) -> None:
        """Close the wake-up pipe now; it is re-created on next need.

        Only while no thread polls it: by the owner, or when nothing runs the
        context.
        """
        with self._lock:
            if self._close_waker_fds is not None:
                self._close_waker_fds()
            self._waker = self._close_waker_fds = None
            # Nobody polls now: changes need not wake anyone.  A pending
            # wake-up (_woken) stays pending for the next poller.
            self._poll_waiting = False

    def _signal_locked(self) -> None:
        # caller holds self._lock
        if not self._woken:
            self._woken = True
            if self._waker is not None:  # else the next poller's pipe starts signalled
                self._waker.signal()

    def _wake_locked(self) -> None:
        """Wake the poller if the context is (about to be) waiting; suppressed otherwise."""
        # caller holds self._lock
        if self._poll_waiting:
            self._signal_locked()

    def wakeup(self) -> None:
        """Make the current or next poll of the context return at once."""
        # runs in any thread
        with self._lock:
            self._signal_locked()

    # -- the iteration, in GLib's steps ----------------------------------

    def _sorted_locked(self) -> list[Source]:
        # caller holds self._lock; the list returned is never mutated, only replaced
        if self._sorted is None:
            # sorted() is stable: attach order within one priority.
            self._sorted = sorted(self._sources.values(), key=lambda s: s._priority)
        return self._sorted

    def _call_prepare(self, source: Source) -> tuple[bool, int]:
        # runs in the owner thread, without the lock
        try:
            ready, timeout = source.prepare()
            return bool(ready), int(timeout)
        except Exception:
            _logger.exception("prepare() of %r raised; destroying it", source)
            source.destroy()
            return False, -1

    def _call_check(self, source: Source) -> bool:
        # runs in the owner thread, without the lock
        try:
            return bool(source.check())
        except Exception:
            _logger.exception("check() of %r raised; destroying it", source)
            source.destroy()
            return False

    def _unblocked(self, sources: list[Source]) -> Iterator[tuple[Source, bool, int, int]]:
        """Each of *sources* neither destroyed nor blocked, with its ready flag,
        priority and ready time, read under the lock (prepare() and check()).
        """
        # runs in the owner thread, without the lock between sources
        for source in sources:
            with self._lock:
                if source._destroyed or source._blocked:
                    continue
                state = source._ready, source._priority, source._ready_time
            yield source, *state

    def prepare(self) -> tuple[bool, int]:
        """Prepare every source; return (any ready?, highest ready priority).

        The priority is ``2**31 - 1`` (G_MAXINT) when none is ready.

        Raises:
            RuntimeError: the calling thread does not own the context, or this
                is called from a source's ``prepare()``/``check()``.
        """
        # runs in the owner thread
        self._require_owner("prepare")
        with self._lock:
            # From here until check(), a change by any thread must wake the poll.
            self._poll_waiting = True
            now = self._time = get_monotonic_time()
            sources = self._sorted_locked()
        timeout = -1
        current = _MAX_INT
        n_ready = 0
        self._in_check_or_prepare += 1
        try:
            for source, ready, priority, ready_time in self._unblocked(sources):
                if n_ready and priority > current:
                    break
                if not ready:
                    ready, source_timeout = self._call_prepare(source)
                    if not ready and ready_time != -1:
                        if ready_time <= now:
                            ready = True
                        else:
                            # Rounded up so that the poll never wakes early.
                            until = -(-(ready_time - now) // _US_PER_MS)
                            source_timeout = (
                                until if source_timeout < 0 else min(source_timeout, until)
                            )
                    if ready:
                        with self._lock:
                            ready = source._ready = not source._destroyed
                    elif source_timeout >= 0:
                        timeout = source_timeout if timeout < 0 else min(timeout, source_timeout)
                if ready:
                    n_ready += 1
                    current = priority
        finally:
            self._in_check_or_prepare -= 1
        self._timeout = 0 if n_ready else min(timeout, _MAX_INT)
        return n_ready > 0, current

    def query(self, max_priority: int) -> tuple[int, list[tuple[int, IOCondition]]]:
        """The poll timeout (ms, -1 = infinite) and the ``(fd, events)`` to poll.

        Only sources of priority ``<= max_priority`` contribute fds; events of
        one fd are merged.  The wake-up descriptor (:meth:`fileno`) is not in
        the list: poll it too.

        Raises:
            RuntimeError: the calling thread does not own the context.
        """
        # runs in the owner thread
        self._require_owner("query")
        merged: dict[int, IOCondition] = {}
        with self._lock:
            self._poll_changed = False
            for source in self._sorted_locked():
                if source._priority > max_priority:
                    break
                if source._destroyed or source._blocked:
                    continue
                for tag in source._fds:
                    if tag.events:
                        merged[tag.fd] = merged.get(tag.fd, IOCondition(0)) | tag.events
        return self._timeout, list(merged.items())

    def check(self, max_priority: int, fds: Iterable[tuple[int, int]]) -> bool:
        """Record the poll results *fds* (``(fd, revents)``); choose what to dispatch.

        Returns whether any source is ready.  Drains the wake-up descriptor.

        Raises:
            RuntimeError: the calling thread does not own the context, or this
                is called from a source's ``prepare()``/``check()``.
        """
        # runs in the owner thread
        self._require_owner("check")
        revents: dict[int, int] = {}
        for fd, events in fds:
            revents[fd] = revents.get(fd, 0) | events
        with self._lock:
            if self._woken:
                self._woken = False
                if self._waker is not None:
                    self._waker.drain()
            self._poll_waiting = False
            self._pending = []
            if self._poll_changed:
                # The fd set changed during the poll: these revents may be stale
                # (GLib returns FALSE here too); the next iteration polls afresh.
                return False
            now = self._time = get_monotonic_time()
            sources = self._sorted_locked()
            for source in sources:
                for tag in source._fds:
                    mask = int(tag.events) | _ALWAYS_REPORTED if tag.events else 0
                    tag.revents = IOCondition(revents.get(tag.fd, 0) & mask)
        pending: list[Source] = []
        self._in_check_or_prepare += 1
        try:
            for source, ready, priority, ready_time in self._unblocked(sources):
                if pending and priority > max_priority:
                    break
                if not ready:
                    ready = (
                        self._call_check(source)
                        or any(tag.revents for tag in source._fds)
                        or (ready_time != -1 and ready_time <= now)
                    )
                    if ready:
                        with self._lock:
                            ready = source._ready = not source._destroyed
                if ready:
                    pending.append(source)
                    # Never dispatch a source less urgent than the first one chosen.
                    max_priority = priority
        finally:
            self._in_check_or_prepare -= 1
        with self._lock:
            # Timed sources take each other's places in deadline order; the
            # others keep attach order.
            slots = [i for i, s in enumerate(pending) if s._ready_time != -1]
            timed = sorted((pending[i] for i in slots), key=lambda s: s._ready_time)
        for i, source in zip(slots, timed, strict=True):
            pending[i] = source
        self._pending = pending
        return bool(pending)

    def dispatch(self) -> None:
        """Dispatch the sources chosen by the last :meth:`check`.

        Raises:
            RuntimeError: the calling thread does not own the context.
        """
        # runs in the owner thread
        self._require_owner("dispatch")
        pending, self._pending = self._pending, []
        for source in pending:
            with self._lock:
                # A source destroyed by now, or dispatched by a nested
                # iteration since check(), is skipped.
                if source._destroyed or not source._ready:
                    continue
                source._ready = False
                blocked_here = not source._can_recurse
                if blocked_here:
                    source._blocked = True
                source._in_call += 1
                callback, args = source._callback, source._args
            # None: a BaseException (KeyboardInterrupt...) went through; the
            # source is left as it was.
            keep: bool | None = None
            try:
                keep = bool(source.dispatch(callback, args))
            except Exception:
                _logger.exception("dispatch of %r raised; destroying it", source)
                keep = False
            finally:
                with self._lock:
                    source._in_call -= 1
                    if blocked_here:
                        source._blocked = False
                    if keep is False:
                        source._destroy_locked(self)
                    finalize = source._take_finalize_locked()
                if finalize:
                    source._run_finalize()

    def _poll(self, timeout: int, fds: list[tuple[int, IOCondition]]) -> list[tuple[int, int]]:
        # runs in the owner thread
        if timeout == 0 and not fds:
            return []
        return _poll_fds([(self.fileno(), IOCondition.IN), *fds], timeout)

    def _iterate(self, block: bool, dispatch: bool) -> bool:
        """One GLib iteration (g_main_context_iterate).

        Raises:
            RuntimeError: called from a source's ``prepare()``/``check()``.
        """
        # runs in any thread; waits for ownership when *block*
        if not self.acquire():
            if not block:
                return False
            self._wait_for_ownership(lambda: True)
        # Between its prepare() and check(), a foreign driver (the
        # _AsyncioDriver) relies on _poll_waiting to be woken by changes; an
        # iteration run meanwhile on its thread clears it in check().
        with self._lock:
            outer_waiting = self._poll_waiting
        try:
            _, max_priority = self.prepare()
            timeout, fds = self.query(max_priority)
            revents = self._poll(timeout if block else 0, fds)
            some_ready = self.check(max_priority, revents)
            if dispatch and some_ready:
                self.dispatch()
            return some_ready
        finally:
            if outer_waiting:
                with self._lock:
                    # Wake the outer driver: what it prepared may be stale
                    # (sources attached here without a wake-up), and let
                    # later changes wake it again.
                    self._poll_waiting = True
                    self._signal_locked()
            self.release()

    def iteration(self, may_block: bool = True) -> bool:
        """Run one iteration; return whether any source was dispatched.

        With *may_block*, wait for the context if another thread owns it and
        poll until something is ready; else return ``False`` at once if the
        context is owned elsewhere.

        Raises:
            RuntimeError: called from a source's ``prepare()``/``check()``.
        """
        # runs in any thread
        return self._iterate(may_block, dispatch=True)

    def pending(self) -> bool:
        """Whether any source is ready (prepares and checks, dispatches nothing).

        Raises:
            RuntimeError: called from a source's ``prepare()``/``check()``.
        """
        # runs in any thread
        return self._iterate(block=False, dispatch=False)

    # -- sources ---------------------------------------------------------

    def find_source_by_id(self, source_id: int) -> Source | None:
        """The attached, not destroyed source with that id, else ``None``."""
        # runs in any thread
        with self._lock:
            return self._sources.get(source_id)

    def invoke_full(self, priority: int, function: _SourceFunc, *args: Any) -> None:
        """Run ``function(*args)`` in the owner thread of the context.

        As ``g_main_context_invoke_full``: if the calling thread owns the
        context, or the context is its thread default and can be acquired,
        *function* runs at once (again while it returns a true value);
        otherwise an idle source at *priority* runs it from the context.

        Raises:
            TypeError: *function* is not callable or *priority* not an int.
        """
        # runs in any thread
        _check_callable(function)
        _check_int("priority", priority)
        if self.is_owner():
            while function(*args):
                pass
            return
        if self is MainContext.ref_thread_default() and self.acquire():
            try:
                while function(*args):
                    pass
            finally:
                self.release()
            return
        source = Idle(priority)
        source.set_callback(function, *args)
        source.attach(self)

    def invoke(self, function: _SourceFunc, *args: Any, priority: int = PRIORITY_DEFAULT) -> None:
        """:meth:`invoke_full` at *priority* (default ``PRIORITY_DEFAULT``).

        Raises:
            TypeError: *function* is not callable or *priority* not an int.
        """
        # runs in any thread
        self.invoke_full(priority, function, *args)

    def _close(self) -> None:
        """Refuse new sources from now on, then destroy (and so finalise) every attached one.

        Closing first means that a source attached by another thread
        meanwhile is either among those destroyed here or refused: none is
        left attached to a context nothing runs any more.
        """
        # runs in the driver's thread, as its IOThread stops
        with self._lock:
            self._closed = True
        self._destroy_all()

    def _destroy_all(self) -> None:
        """Destroy (and so finalise) every attached source."""
        # runs in any thread
        with self._lock:
            sources = list(self._sources.values())
        for source in sources:
            source.destroy()


class MainLoop:
    """Runs a context's iterations until :meth:`quit`, as ``GMainLoop``."""

    def __init__(self, context: MainContext | None = None) -> None:
        self._context = context if context is not None else MainContext.default()
        self._running = False  # guarded by the context lock

    def __repr__(self) -> str:
        return f"<MainLoop running={self._running} context={self._context!r}>"

    def get_context(self) -> MainContext:
        """The context this loop runs."""
        return self._context

    def is_running(self) -> bool:
        """Whether :meth:`run` is in progress (or waiting for the context)."""
        # runs in any thread
        with self._context._lock:
            return self._running

    def run(self) -> None:
        """Iterate the context until :meth:`quit`.

        If another thread owns the context (its own loop is running, or an
        IOThread drives it), this thread does not iterate it: like
        ``g_main_loop_run`` it waits, without dispatching anything, until it
        can own the context or until :meth:`quit`.

        Raises:
            RuntimeError: called from a source's ``prepare()``/``check()``.
        """
        # runs in the thread that will own the context
        ctx = self._context
        owner = ctx.acquire()
        if owner and ctx._in_check_or_prepare:
            # As g_main_loop_run: refused before the loop is marked running,
            # so a refused run() leaves it (and an outer run() of it) as it was.
            ctx.release()
            raise RuntimeError("MainLoop.run() called from within a source's prepare() or check()")
        with ctx._lock:
            self._running = True
        try:
            # quit() while waiting makes run() return without ever owning the context.
            if not owner and not ctx._wait_for_ownership(lambda: self._running):
                return
            try:
                while self.is_running():
                    ctx.iteration(True)
            finally:
                ctx.release()
        except BaseException:
            # A KeyboardInterrupt (or any BaseException a callback let
            # through), while waiting for the context or running it, ends
            # run(): the loop is no longer running, so a later run() starts
            # afresh and is_running() does not lie meanwhile.
            with ctx._lock:
                self._running = False
            raise

    def quit(self) -> None:
        """Make :meth:`run` return after the current iteration."""
        # runs in any thread
        ctx = self._context
        with ctx._lock:
            self._running = False
            ctx._signal_locked()
            ctx._cond.notify_all()


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

    def prepare(self) -> tuple[bool, int]:
        """Before the poll: ``(ready, timeout_ms)``; the default is not ready, no timeout."""
        # runs in the owner thread of the context
        return False, -1

    def check(self) -> bool:
        """After the poll: whether the source is ready; the default is ``False``."""
        # runs in the owner thread of the context
        return False

    def dispatch(self, callback: _SourceFunc | None, args: tuple[Any, ...]) -> bool:
        """Run the source; return whether to keep it.  The default calls ``callback(*args)``."""
        # runs in the owner thread of the context
        return _call_callback(self, callback, *args)

    def finalize(self) -> None:
        """Called once, after the source is destroyed and no dispatch of it runs."""

    # -- attaching and destroying ------------------------------------------

    def attach(self, context: MainContext | None = None) -> int:
        """Attach to *context* (default: the global default); return the source id.

        Raises:
            RuntimeError: the source is already attached, or destroyed, or
                *context* was closed when the IOThread that drove it stopped.
        """
        # runs in any thread
        ctx = context if context is not None else MainContext.default()
        with ctx._lock:
            if self._context is not None:
                raise RuntimeError(f"{self!r} is already attached to {self._context!r}")
            if self._destroyed:
                raise RuntimeError(f"{self!r} was destroyed and cannot be attached")
            if ctx._closed:
                raise RuntimeError(
                    f"cannot attach {self!r}: {ctx!r} was closed when its IOThread stopped"
                )
            with _ID_LOCK:
                self._id = next(_next_id)
            self._context = ctx
            ctx._sources[self._id] = self
            ctx._sorted = None
            if self._fds:
                ctx._poll_changed = True
            ctx._wake_locked()
            return self._id

    def destroy(self) -> None:
        """Remove the source from its context; it is never dispatched again.

        A dispatch of it already running in another thread completes; none
        starts after this returns.  Destroying twice is harmless.
        """
        # runs in any thread
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
        ctx._wake_locked()

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
            ctx._wake_locked()

    def get_id(self) -> int:
        """The id given by :meth:`attach`; 0 before."""
        return self._id

    def get_context(self) -> MainContext | None:
        """The context attached to, else ``None``."""
        return self._context

    def set_name(self, name: str | None) -> None:
        """Name the source (shown in its repr and in logged errors)."""
        self._name = name

    def get_name(self) -> str | None:
        """The name given by :meth:`set_name`."""
        return self._name

    def set_priority(self, priority: int) -> None:
        """Set the priority (lower is more urgent).

        Raises:
            TypeError: *priority* is not an int.
        """
        # runs in any thread
        _check_int("priority", priority)
        with self._guard():
            self._priority = priority
            if self._context is not None:
                self._context._sorted = None
            self._changed_locked(poll_changed=bool(self._fds))

    def get_priority(self) -> int:
        """The priority."""
        return self._priority

    def set_can_recurse(self, can_recurse: bool) -> None:
        """Allow dispatching this source from a nested iteration of its own callback."""
        with self._guard():
            self._can_recurse = bool(can_recurse)

    def get_can_recurse(self) -> bool:
        """Whether the source may be dispatched recursively."""
        return self._can_recurse

    def set_callback(self, func: _SourceFunc, *args: Any) -> None:
        """Set the callback passed to :meth:`dispatch` as ``(func, args)``.

        Raises:
            TypeError: *func* is not callable.
        """
        _check_callable(func)
        with self._guard():
            self._callback, self._args = func, args

    def set_ready_time(self, ready_time: int) -> None:
        """Make the source ready at *ready_time* (monotonic µs); -1 clears it.

        Raises:
            TypeError: *ready_time* is not an int.
            ValueError: *ready_time* is below -1.
        """
        # runs in any thread
        _check_int("ready_time", ready_time)
        if ready_time < -1:
            raise ValueError(f"ready_time must be >= -1, not {ready_time}")
        with self._guard():
            if self._ready_time != ready_time:
                self._ready_time = ready_time
                self._changed_locked(poll_changed=False)

    def get_ready_time(self) -> int:
        """The ready time (monotonic µs), -1 if none."""
        return self._ready_time

    def get_time(self) -> int:
        """The context's clock (µs) cached for the current iteration.

        Raises:
            RuntimeError: the source is not attached.
        """
        if self._context is None:
            raise RuntimeError(f"{self!r} is not attached to a context")
        return self._context._time

    # -- polled descriptors ------------------------------------------------

    def add_unix_fd(self, fd: int, events: int) -> object:
        """Poll *fd* for *events* (IOCondition) with this source; return a tag.

        The source is ready when the fd has events; :meth:`query_unix_fd`
        tells which.  ERR, HUP and NVAL are reported even if not asked for.

        Raises:
            TypeError: *fd* or *events* is not an int.
            ValueError: *fd* is negative, or *events* has unknown bits.
        """
        # runs in any thread
        tag = _UnixFD(_check_fd(fd), _check_events(events))
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

    def modify_unix_fd(self, tag: object, events: int) -> None:
        """Change the events polled for the fd of *tag* (0 pauses it).

        Raises:
            ValueError: *tag* is not from this source, or *events* has unknown bits.
            TypeError: *events* is not an int.
        """
        new_events = _check_events(events)
        with self._guard():
            self._tag(tag).events = new_events
            self._changed_locked(poll_changed=True)

    def remove_unix_fd(self, tag: object) -> None:
        """Stop polling the fd of *tag*.

        Raises:
            ValueError: *tag* is not from this source.
        """
        with self._guard():
            self._fds.remove(self._tag(tag))
            self._changed_locked(poll_changed=True)

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

    def prepare(self) -> tuple[bool, int]:
        return True, 0

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
        if _check_int("interval", interval) < 0:
            raise ValueError(f"interval must be >= 0 ms, not {interval}")
        self._interval_us = interval * _US_PER_MS
        self.set_priority(priority)
        self.set_ready_time(get_monotonic_time() + self._interval_us)

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

    def dispatch(self, callback: _SourceFunc | None, args: tuple[Any, ...]) -> bool:
        return _call_callback(self, callback, self._channel, self.query_unix_fd(self._watch), *args)


def _poll_fds(fds: list[tuple[int, IOCondition]], timeout: int) -> list[tuple[int, int]]:
    """poll(2) *fds* for at most *timeout* ms (-1 = no limit); ``(fd, revents)``."""
    poller = select.poll()
    for fd, events in fds:
        poller.register(fd, events)
    return poller.poll(timeout)


def _attach(
    source: Source, function: _SourceFunc, args: tuple[Any, ...], context: MainContext | None
) -> int:
    source.set_callback(function, *args)
    return source.attach(context)


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
    """
    # runs in any thread
    _check_callable(function)
    return _attach(Timeout(interval, priority), function, args, context)


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
    """
    # runs in any thread
    _check_callable(function)
    if _check_int("interval", interval) < 0:
        raise ValueError(f"interval must be >= 0 s, not {interval}")
    return _attach(Timeout(interval * _MS_PER_S, priority), function, args, context)


def idle_add(
    function: _SourceFunc,
    *args: Any,
    priority: int = PRIORITY_DEFAULT_IDLE,
    context: MainContext | None = None,
) -> int:
    """Call ``function(*args)`` whenever nothing more urgent is ready, until it returns false.

    Raises:
        TypeError: *function* is not callable, or *priority* not an int.
    """
    # runs in any thread
    _check_callable(function)
    return _attach(Idle(priority), function, args, context)


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
    """
    # runs in any thread
    _check_callable(function)
    if not isinstance(fd, int) and not callable(getattr(fd, "fileno", None)):
        raise TypeError(f"fd must be an int or have fileno(), not {fd!r}")
    source = _IOWatch(fd, _check_events(condition))
    source.set_priority(priority)
    return _attach(source, function, args, context)


def source_remove(tag: int, context: MainContext | None = None) -> bool:
    """Destroy the source with id *tag*; ``False`` (and a warning) if there is none.

    Raises:
        TypeError: *tag* is not an int.
    """
    # runs in any thread
    ctx = context if context is not None else MainContext.default()
    source = ctx.find_source_by_id(_check_int("tag", tag))
    if source is None:
        warnings.warn(
            f"Source ID {tag} was not found when attempting to remove it",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    source.destroy()
    return True


class _AsyncioDriver:
    """Runs a :class:`MainContext` on an asyncio loop (stdlib or uvloop), GLib style.

    ``start()`` acquires the context for the loop's thread and registers the
    wake-up fd and the sources' fds with ``add_reader``/``add_writer``, kept in
    sync as sources come and go, plus a ``call_later`` for the next timeout.
    When any of them fires, one round runs: check and dispatch what the last
    prepare/query found, then prepare/query again.  Readiness from the loop
    only says *when*; a zero-timeout poll(2) of the fds says *what* (HUP, ERR,
    NVAL included).

    Where ``select.epoll`` exists the sources' fds are not given to the loop:
    they go into the driver's own level-triggered epoll with exactly the
    events asked for, and the loop watches that epoll's fd.  So a watch for
    PRI alone wakes it (a loop reader would not), a watch for HUP alone does
    not turn unread data into a round per loop pass, and a loop reader or
    transport on the same fd is neither replaced nor refused.  Elsewhere the
    fds are loop readers and writers.

    Fairness: a round dispatches one priority level only, and when sources
    stay ready (a busy idle) the next round is queued with ``call_soon``,
    behind the callbacks already queued, so asyncio work is never starved; the
    timeout is a loop timer, which the loop runs even under a flood of
    callbacks, and prepare() finds every due timeout at each round.

    Every method and every field belongs to the loop's thread.
    """

    def __init__(self, context: MainContext, loop: asyncio.AbstractEventLoop) -> None:
        self._context = context
        self._loop = loop
        self._state = "new"  # "new" -> "running" -> "closed"
        self._wake_fd = -1
        self._readers: set[int] = set()  # fds registered with add_reader
        self._writers: set[int] = set()  # fds registered with add_writer
        self._epoll: Any = None  # select.epoll, created with the first polled fd
        self._in_epoll: set[int] = set()  # fds registered in _epoll
        self._fds: list[tuple[int, IOCondition]] = []  # from the last query()
        self._max_priority = _MAX_INT  # from the last prepare()
        self._soon: asyncio.Handle | None = None  # a round queued with call_soon
        self._timer: asyncio.TimerHandle | None = None  # a round at the next timeout

    def start(self) -> None:
        """Acquire the context for the loop's thread and start serving it.

        Raises:
            RuntimeError: the driver was started before, or another thread
                owns the context.
        """
        # runs in the loop's thread
        if self._state != "new":
            raise RuntimeError(f"driver of {self._context!r} is {self._state}, cannot start")
        if not self._context.acquire():
            raise RuntimeError(
                f"cannot drive {self._context!r}: it is owned by thread {self._context._owner}"
            )
        self._state = "running"
        self._wake_fd = self._context.fileno()
        self._loop.add_reader(self._wake_fd, self._schedule)
        self._prepare()

    def close(self) -> None:
        """Stop serving: unregister everything, destroy and finalise every
        source of the context, close its wake-up pipe, release it.  Harmless
        if not running.
        """
        # runs in the loop's thread
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closed"
        # Each step runs even if one before it raised: the sources are
        # finalised, the descriptors closed and the context released whatever
        # happens, since nothing calls close() again.
        try:
            self._cancel_round()
            self._loop.remove_reader(self._wake_fd)
            self._sync([])
            if self._epoll is not None:
                self._loop.remove_reader(self._epoll.fileno())
        finally:
            try:
                if self._epoll is not None:
                    self._epoll.close()
                    self._epoll = None
                self._context._close()
            finally:
                try:
                    self._context._close_waker()
                finally:
                    self._context.release()

    def _cancel_round(self) -> None:
        for handle in (self._soon, self._timer):
            if handle is not None:
                handle.cancel()
        self._soon = self._timer = None

    def _schedule(self) -> None:
        """Queue one round (idempotent: readers are level-triggered)."""
        if self._soon is None:
            self._soon = self._loop.call_soon(self._round)

    def _round(self) -> None:
        self._cancel_round()
        ctx = self._context
        revents = _poll_fds(self._fds, 0) if self._fds else []
        if ctx.check(self._max_priority, revents):
            ctx.dispatch()
        # A callback may have closed the driver (stopping its IOThread).
        if self._state == "running":
            self._prepare()

    def _prepare(self) -> None:
        ctx = self._context
        _, self._max_priority = ctx.prepare()
        timeout, self._fds = ctx.query(self._max_priority)
        self._sync(self._fds)
        if timeout == 0:
            self._schedule()
        elif timeout > 0:
            self._timer = self._loop.call_later(timeout / _MS_PER_S, self._round)

    def _sync(self, fds: list[tuple[int, IOCondition]]) -> None:
        """Make the loop's readers and writers those that *fds* asks for."""
        if hasattr(select, "epoll"):
            self._sync_epoll(fds)
            return
        # Anything but OUT (IN, PRI, or only ERR/HUP, which the loop reports
        # as readable) needs a reader.
        readers = {fd for fd, events in fds if events & ~IOCondition.OUT}
        writers = {fd for fd, events in fds if events & IOCondition.OUT}
        for fd in self._readers - readers:
            self._loop.remove_reader(fd)
        for fd in self._writers - writers:
            self._loop.remove_writer(fd)
        self._readers &= readers
        self._writers &= writers
        for fd in readers - self._readers:
            self._watch(self._loop.add_reader, fd, self._readers)
        for fd in writers - self._writers:
            self._watch(self._loop.add_writer, fd, self._writers)

    def _sync_epoll(self, fds: list[tuple[int, IOCondition]]) -> None:
        """Make the driver's epoll watch exactly *fds* for their events."""
        if self._epoll is None:
            if not fds or self._state != "running":
                return
            self._epoll = select.epoll()
            self._loop.add_reader(self._epoll.fileno(), self._schedule)
        wanted = {fd: int(events) & _EPOLL_EVENTS for fd, events in fds}
        for fd in self._in_epoll - wanted.keys():
            # OSError: closed since (which already took it out of the epoll).
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
        self._in_epoll &= wanted.keys()
        for fd, events in wanted.items():
            # Registered again at every round, not only when new: a closed fd
            # leaves the epoll silently, and its number may be reused since.
            try:
                try:
                    self._epoll.modify(fd, events)
                except FileNotFoundError:  # not in the epoll (under this file)
                    self._epoll.register(fd, events)
            except OSError:
                # Closed, or a file epoll cannot watch: a round's poll(2)
                # reports it (NVAL, or always ready), as GLib's poll would.
                self._in_epoll.discard(fd)
                self._schedule()
            else:
                self._in_epoll.add(fd)

    def _watch(self, add: Callable[..., Any], fd: int, registered: set[int]) -> None:
        try:
            add(fd, self._schedule)
        except OSError:
            # A closed fd: run a round, whose poll reports NVAL to its source.
            self._schedule()
        else:
            registered.add(fd)
