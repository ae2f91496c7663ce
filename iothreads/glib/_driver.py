"""The asyncio driver: a context served by an asyncio loop (stdlib or uvloop).

Private to users: the IOThread creates one, in its loop's thread, on the first
``get_g_main_context()``, and closes it when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import select
import threading
from collections.abc import Callable, Generator
from typing import Any, Final

from .._runs_in import ThreadRole, runs_in
from ._constants import _MAX_INT, _MS_PER_S, IOCondition
from ._context import MainContext
from ._poll import _poll_fds

__all__ = ["DRIVER_THREAD", "SOURCES_PER_ROUND", "AsyncioDriver"]

#: The most sources one round checks, dispatches or prepares before the loop
#: runs its other callbacks (docs/design.md, "The GLib context"): large enough
#: that a round pays its loop iteration and its GIL hand-off seldom, small
#: enough that the asyncio side waits milliseconds for GLib, whatever the backlog.
SOURCES_PER_ROUND: Final = 1024

# The events the driver's epoll is asked for: POLLIN, POLLPRI and POLLOUT have
# the values of EPOLLIN, EPOLLPRI and EPOLLOUT on Linux (and epoll reports ERR
# and HUP unasked); NVAL has no epoll counterpart.
_EPOLL_EVENTS: Final = int(IOCondition.IN | IOCondition.PRI | IOCondition.OUT)


def _made_the_driver(driver: AsyncioDriver) -> bool:
    return threading.get_ident() == driver._thread


#: The thread that created the driver: its loop's thread, whether or not the
#: loop runs yet (start()) or still (close()).
DRIVER_THREAD: Final = ThreadRole("the thread of the driver's loop", _made_the_driver)


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


def _run_every(*steps: Callable[[], object]) -> None:
    """Run each of *steps*, the later ones even if an earlier one raised;
    then raise the first error."""
    errors: list[BaseException] = []
    for step in steps:
        try:
            step()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


class AsyncioDriver:
    """Runs a :class:`MainContext` on an asyncio loop (stdlib or uvloop), GLib style.

    ``start()`` acquires the context for the loop's thread, makes it the
    thread's default, and registers the wake-up fd and the sources' fds with
    ``add_reader``/``add_writer``, kept in sync as sources come and go, plus a
    ``call_later`` for the next timeout.
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

    Fairness: a cycle (check, dispatch, prepare) dispatches one priority
    level only, and runs as rounds of at most SOURCES_PER_ROUND sources
    checked, dispatched or prepared each; the next round, or the next cycle
    when sources stay ready (a busy idle), is queued with ``call_soon``,
    behind the callbacks already queued, so asyncio work waits for one round
    at most, however many sources there are; the timeout is a loop timer,
    which the loop runs even under a flood of callbacks, and prepare() finds
    every due timeout at each cycle.

    Every method and every field belongs to the loop's thread, the thread
    that creates the driver (DRIVER_THREAD).
    """

    def __init__(self, context: MainContext, loop: asyncio.AbstractEventLoop) -> None:
        self.context: Final = context
        self._loop = loop
        self._thread = threading.get_ident()  # DRIVER_THREAD
        self._state = _State.NEW
        self._wake_fd = -1
        self._readers: set[int] = set()  # fds registered with add_reader
        self._writers: set[int] = set()  # fds registered with add_writer
        self._epoll: Any = None  # select.epoll, created with the first polled fd
        self._in_epoll: set[int] = set()  # fds registered in _epoll
        self._fds: list[tuple[int, IOCondition]] = []  # from the last query()
        self._max_priority = _MAX_INT  # from the last prepare()
        self._soon: asyncio.Handle | None = None  # a round queued with call_soon
        # The check, dispatch and prepare in progress, paused to let the loop
        # run its other callbacks; None while the driver waits.
        self._cycle: Generator[None, None, None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # a round at the next timeout

    @runs_in(DRIVER_THREAD)
    def start(self) -> None:
        """Acquire the context, make it this thread's thread-default context
        (``push_thread_default()``), and start serving it from the loop.

        Raises:
            RuntimeError: the driver was started before, or another thread
                owns the context.
        """
        context = self.context
        if self._state is not _State.NEW:
            raise RuntimeError(f"driver of {context!r} is {self._state.value}, cannot start")
        if not context.acquire():
            raise RuntimeError(f"cannot drive {context!r}: it is owned by thread {context._owner}")
        context.push_thread_default()  # acquires again, which cannot fail now
        self._state = _State.RUNNING
        self._wake_fd = context.fileno()
        self._loop.add_reader(self._wake_fd, self._schedule)
        for _ in self._prepare(None):
            pass  # None: it does not pause

    @runs_in(DRIVER_THREAD)
    def close(self) -> None:
        """Stop serving: unregister everything from the loop, destroy and
        finalise every source of the context (while it is still the thread's
        default), close its wake-up pipe, release it, and take it off this
        thread's thread-default stack.  Harmless if not running.

        The stack is left clean even if code on this thread pushed a context
        and never popped it (the imbalance is logged), and every step runs
        even if one before it raised, since nothing calls close() again; the
        first error is raised at the end.
        """
        if self._state is not _State.RUNNING:
            self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        context = self.context
        _run_every(
            self._end_cycle,
            lambda: self._loop.remove_reader(self._wake_fd),
            lambda: self._sync([]),
            self._close_epoll,
            context._close,
            context._close_waker,
            context.release,
            context._discard_thread_default,
        )

    def _close_epoll(self) -> None:
        epoll, self._epoll = self._epoll, None
        if epoll is not None:
            try:
                self._loop.remove_reader(epoll.fileno())
            finally:
                epoll.close()

    def _cancel_round(self) -> None:
        for handle in (self._soon, self._timer):
            if handle is not None:
                handle.cancel()
        self._soon = self._timer = None

    def _end_cycle(self) -> None:
        self._cancel_round()
        self._cycle = None

    @runs_in(DRIVER_THREAD)
    def _schedule(self) -> None:
        """Queue one round (idempotent: readers are level-triggered)."""
        if self._soon is None:
            self._soon = self._loop.call_soon(self._round)

    @runs_in(DRIVER_THREAD)
    def _round(self) -> None:
        """One slice of the current cycle; queue the next slice if it paused."""
        self._cancel_round()
        if self._cycle is None:
            self._cycle = self._check_dispatch_prepare()
        try:
            next(self._cycle)
        except StopIteration:
            self._cycle = None  # waiting for a reader, the timer or a round queued
        else:
            if self._state is _State.RUNNING:
                self._schedule()  # behind the asyncio callbacks queued meanwhile

    def _check_dispatch_prepare(self) -> Generator[None, None, None]:
        """Check, dispatch and prepare, pausing after each SOURCES_PER_ROUND
        sources checked, dispatched or prepared."""
        ctx = self.context
        revents = _poll_fds(self._fds, 0) if self._fds else []
        yield from ctx._check_steps(self._max_priority, revents, SOURCES_PER_ROUND)
        while ctx._dispatch_some(SOURCES_PER_ROUND):
            yield
        # A callback may have closed the driver (stopping its IOThread).
        if self._state is _State.RUNNING:
            yield from self._prepare(SOURCES_PER_ROUND)

    def _prepare(self, step: int | None) -> Generator[None, None, None]:
        ctx = self.context
        _, self._max_priority = yield from ctx._prepare_steps(step)
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
            if not fds or self._state is not _State.RUNNING:
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
