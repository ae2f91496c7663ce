"""One loop's cross-thread inbox: many producers, one consumer, wake-ups only when needed.

Producers ``submit()`` from any thread; the loop ``run()`` s what was queued
when the pass began (QEMU's ``aio_bh_poll``: what arrives during a pass runs
in the next one, so a flood cannot starve the loop's timers and sockets).  A
producer writes the wake-up channel only while the loop is blocking or about
to block (QEMU's ``notify_me``, docs/design.md, "Wake-up suppression").

The loop's poll handlers found ready count as pending work too (the list of
them, which the loop's thread mutates in place, is given at construction):
so ``pending()`` and ``prepare_to_block()`` answer for all the loop has to
do, and the context hands them to its pollers as they are, with no Python
call in between on the wake-up path (docs/design.md, "The wake-up path in
Python").

Two implementations with one interface (``Inbox`` below):

* the native core, ``_core.Inbox`` (C11 atomics; the spin without the GIL),
  used wherever it was built, unless ``IOTHREADS_NO_EXTENSIONS`` is set;
* ``PyInbox`` here, the fallback and the reference.  Its orderings: under
  the GIL, a producer's append and its read of ``notify_me`` and the loop's
  store of ``notify_me`` and its last look fall in one total order that
  keeps each thread's program order (one thread runs at a time; each GIL
  hand-off is a full barrier), which is all Dekker's pattern needs
  (docs/design.md, "Wake-up suppression"); without the GIL (a free-threaded
  build) nothing orders them, so ``LockedPyInbox`` makes each pair one
  critical section of a lock, and mutual exclusion orders them.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import os
import sysconfig
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from .._errors import IOThreadStopped
from .._runs_in import ANY, LOOP, runs_in
from ._handle import ThreadsafeHandle, report_error
from ._wakeup import WakeupChannel

__all__ = ["Inbox", "native_core", "new_inbox"]


class Inbox(Protocol):
    """What an AioContext needs of its inbox, whichever implementation it is."""

    submitted: int  # handles the loop took (the loop writes, any thread reads)
    wakeups: int  # wake-ups producers wrote
    blocks: int  # sleeps the loop announced and kept

    @runs_in(ANY)
    def submit(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        """Queue a callback; raises IOThreadStopped once closed."""

    @runs_in(LOOP)
    def run(self, limit: int, /) -> None:
        """Run what was queued when the pass began, at most *limit* (0: all)."""

    @runs_in(ANY)
    def wake(self) -> None:
        """Make the loop leave its sleep."""

    @runs_in(LOOP)
    def pending(self) -> bool:
        """True when work is queued or a poll handler is ready."""

    @runs_in(LOOP)
    def prepare_to_block(self) -> bool:
        """Announce the sleep, then take the last look; True if the loop may sleep."""

    @runs_in(LOOP)
    def woke(self) -> None: ...
    @runs_in(LOOP)
    def close(self) -> None: ...
    @runs_in(LOOP)
    def fileno(self) -> int: ...
    @runs_in(LOOP)
    def drain_wakeups(self) -> int: ...
    @runs_in(LOOP)
    def shutdown(self) -> None: ...


def _load_native() -> ModuleType | None:
    """The native core, unless disabled (aio-libs' convention) or not built."""
    if os.environ.get("IOTHREADS_NO_EXTENSIONS"):
        return None
    try:
        from . import _core
    except ImportError:
        return None
    return _core


#: The native core module, or None: the pure-Python inbox is used.  Tests
#: switch it to run every behaviour on both implementations.
native_core: ModuleType | None = _load_native()


class PyInbox:
    """The pure-Python inbox: a deque (atomic append and popleft) and two flags."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, stopped_message: str, ready: list[Any]
    ) -> None:
        self.loop = loop
        self._stopped_message = stopped_message
        # The poll handlers found ready (the loop's thread mutates the list).
        self._ready = ready
        # Producers append, the loop poplefts.
        self._queue: collections.deque[ThreadsafeHandle] = collections.deque()
        # QEMU's notify_me: True while the loop blocks or is about to block.
        # Written by the loop's thread only; read by producers.
        self._notify_me = True
        # Set once by the loop's thread when it stops taking work.
        self._closing = False
        self._wakeup = WakeupChannel()
        # Written by the loop's thread only (so exact); read by any.
        self.submitted = 0
        self.wakeups = 0
        self.blocks = 0

    @runs_in(ANY)
    def submit(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if self._closing:
            raise IOThreadStopped(self._stopped_message)
        handle = ThreadsafeHandle(callback, args, self.loop, context)
        self._queue.append(handle)
        if self._notify_me:
            self._wakeup.wake()
        if self._closing:
            self._take_back(handle)
        return handle

    @runs_in(ANY)
    def _take_back(self, handle: ThreadsafeHandle) -> None:
        """The loop closed between a producer's two looks.

        Its last drain ran after it set _closing; if that drain took *handle*,
        the handle has its outcome.  Otherwise take it back, so that it is
        not silently lost, and tell the producer.
        """
        try:
            self._queue.remove(handle)
        except ValueError:
            return
        raise IOThreadStopped(self._stopped_message)

    @runs_in(ANY)
    def wake(self) -> None:
        self._wakeup.wake()

    @runs_in(LOOP)
    def run(self, limit: int, /) -> None:
        queue = self._queue
        for _ in range(min(len(queue), limit) if limit else len(queue)):
            try:
                handle = queue.popleft()
            except IndexError:
                break  # a producer that raced close() took its handle back
            self.submitted += 1
            if not handle._cancelled:
                # Not handle._run(), which lets SystemExit and
                # KeyboardInterrupt out of the loop: nobody waits for a
                # callback's outcome, so every error is reported and the
                # IOThread goes on (docs/design.md, "BaseException in an
                # IOThread"); the native drain does the same.
                try:
                    handle._context.run(handle._callback, *handle._args)
                except BaseException as exc:
                    report_error(handle, exc)

    @runs_in(LOOP)
    def pending(self) -> bool:
        return bool(self._queue or self._ready)

    @runs_in(LOOP)
    def prepare_to_block(self) -> bool:
        """Announce the sleep, then take the last look; True if the loop may sleep."""
        if self._ready:
            # Only the loop's thread makes a handler ready: no need to
            # announce first.  The loop stays awake, and producers need not wake it.
            self.woke()
            return False
        self._notify_me = True
        if self._queue:
            self._notify_me = False
            return False
        self.blocks += 1
        return True

    @runs_in(LOOP)
    def woke(self) -> None:
        self._notify_me = False

    @runs_in(LOOP)
    def close(self) -> None:
        self._closing = True
        self._notify_me = True

    def fileno(self) -> int:
        return self._wakeup.fileno()

    @runs_in(LOOP)
    def drain_wakeups(self) -> int:
        count = self._wakeup.drain()
        self.wakeups += count
        return count

    @runs_in(LOOP)
    def shutdown(self) -> None:
        # The queue is left as it is: what is still in it was appended after
        # the last drain by a producer yet to look at _closing again, which
        # takes its handle back and is told; cleared here, the handle would
        # be gone as if a drain had run it.
        self._wakeup.close()


class LockedPyInbox(PyInbox):
    """The pure-Python inbox where no GIL orders its steps (free-threaded builds).

    The producer's append and read of ``notify_me`` and ``_closing``, and the
    loop's store of ``notify_me`` and last look, or of ``_closing``, are each
    one critical section of ``_lock``: mutual exclusion orders them, so the
    loop's last look sees the append or the producer sees ``notify_me``, and
    a producer after ``close()`` is refused (no handle needs taking back).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, stopped_message: str, ready: list[Any]
    ) -> None:
        super().__init__(loop, stopped_message, ready)
        self._lock = threading.Lock()

    @runs_in(ANY)
    def submit(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = ThreadsafeHandle(callback, args, self.loop, context)
        with self._lock:
            if self._closing:
                raise IOThreadStopped(self._stopped_message)
            self._queue.append(handle)
            wake = self._notify_me
        if wake:
            self._wakeup.wake()
        return handle

    @runs_in(LOOP)
    def prepare_to_block(self) -> bool:
        with self._lock:
            return super().prepare_to_block()

    @runs_in(LOOP)
    def close(self) -> None:
        with self._lock:
            super().close()


#: Whether this interpreter was built without the GIL (PEP 703).  Decided by
#: the build, not by whether the GIL is on now: an extension may turn it on
#: after an inbox was made.
_FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@runs_in(ANY)
def new_inbox(loop: asyncio.AbstractEventLoop, stopped_message: str, ready: list[Any]) -> Inbox:
    """An inbox for *loop*: the native one where available.  *ready* is the
    list of the loop's poll handlers found ready, which it counts as work."""
    if native_core is not None:
        inbox: Inbox = native_core.Inbox(loop, stopped_message, ready)
        return inbox
    return (LockedPyInbox if _FREE_THREADED else PyInbox)(loop, stopped_message, ready)
