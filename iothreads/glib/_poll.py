"""How a context waits: the clock its timeouts count on, poll(2), and the wake-up
that cuts a poll short.

A context's poller (its owner, or a driver on its behalf) sleeps in poll(2) on
the sources' fds plus the read end of a wake-up pipe.  Any thread that changes
what the poller waits for writes to that pipe, but only while the poller is
waiting or about to wait; otherwise the change is seen by the next prepare()
anyway (docs/design.md, "Wake-up suppression").
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import weakref
from collections.abc import Callable

from .._runs_in import ANY, runs_in
from ._constants import IOCondition

__all__ = ["get_monotonic_time"]

# At most one wake-up byte is ever outstanding (_Wakeup.pending), so one read
# of any size >= 1 drains the pipe.
_WAKE_READ_SIZE = 64


@runs_in(ANY)
def get_monotonic_time() -> int:
    """The monotonic clock in microseconds, as ``g_get_monotonic_time()``."""
    return time.monotonic_ns() // 1000


@runs_in(ANY)
def _poll_fds(fds: list[tuple[int, IOCondition]], timeout: int) -> list[tuple[int, int]]:
    """poll(2) *fds* for at most *timeout* ms (-1 = no limit); ``(fd, revents)``."""
    poller = select.poll()
    for fd, events in fds:
        poller.register(fd, events)
    return poller.poll(timeout)


class _WakePipe:
    """A non-blocking pipe whose read end a poller watches to be woken."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    @runs_in(ANY)
    def signal(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe is signalled already
            os.write(self.w, b"\0")

    @runs_in(ANY)
    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.r, _WAKE_READ_SIZE)

    @staticmethod
    def close(r: int, w: int) -> None:
        os.close(r)
        os.close(w)


class _Wakeup:
    """The wake-up of one context's poller.

    Every field is guarded by the lock of the context that holds it, and every
    method is called with that lock held (hence the ``_locked`` names), from
    any thread; ``consume_locked()`` is the poller's.  The pipe is created by
    the first poller (``fileno_locked()``), so a context nobody polls holds no
    descriptor; it is closed by ``close_locked()``, or when the context is
    garbage-collected.
    """

    def __init__(self) -> None:
        self.waiting = False  # between prepare() and check(): changes must wake
        self.pending = False  # a wake-up is pending: a byte is in the pipe, if there is one
        self._pipe: _WakePipe | None = None  # created on first need
        self._close_pipe: Callable[[], object] | None = None  # closes _pipe's fds once

    def fileno_locked(self) -> int:
        """The read end of the pipe, created now if there is none; a wake-up
        that came while there was none is written at once."""
        if self._pipe is None:
            self._pipe = _WakePipe()
            self._close_pipe = weakref.finalize(self, _WakePipe.close, self._pipe.r, self._pipe.w)
            if self.pending:
                self._pipe.signal()
        return self._pipe.r

    def signal_locked(self) -> None:
        """Make the current or next poll return at once."""
        if not self.pending:
            self.pending = True
            if self._pipe is not None:  # else the next poller's pipe starts signalled
                self._pipe.signal()

    def signal_if_waiting_locked(self) -> None:
        """Wake the poller if it is (about to be) waiting; suppressed otherwise."""
        if self.waiting:
            self.signal_locked()

    def consume_locked(self) -> None:
        """The poll is over: drain the pending wake-up; changes need not wake
        anyone until the next prepare()."""
        if self.pending:
            self.pending = False
            if self._pipe is not None:
                self._pipe.drain()
        self.waiting = False

    def close_locked(self) -> None:
        """Close the pipe now; it is re-created on next need.

        Only while no thread polls it.  A pending wake-up stays pending for
        the next poller.
        """
        if self._close_pipe is not None:
            self._close_pipe()
        self._pipe = self._close_pipe = None
        self.waiting = False
