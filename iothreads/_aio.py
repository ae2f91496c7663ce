"""AioContext: one event loop's cross-thread inbox, wake-ups and polling window.

Work from other threads reaches the loop through
``AioContext.call_soon_threadsafe``: the handle is appended to a lock-free
inbox (a ``deque``, whose append and popleft are atomic) and the loop is
woken through an eventfd **only when it is blocking or about to block** --
QEMU's ``notify_me`` protocol.  While the loop is awake
or spinning, appending is enough: it will look at the inbox before it sleeps.

Why no wake-up is ever lost: the loop publishes ``notify_me = True`` *before*
its last look at the inbox, and a producer appends *before* it reads
``notify_me``.  Under the GIL these four steps are totally ordered, so either
the loop's last look sees the handle, or the producer sees ``notify_me`` and
writes the eventfd, whose readiness then ends the sleep.

Two ways to hook a loop, one window arithmetic (``_polling.PollWindow``):

* stdlib ``SelectorEventLoop``: its selector is wrapped (``_PollingSelector``).
  ``select(timeout)`` is exactly "the loop is about to block for *timeout*", so
  the wrapper spins there for up to ``min(poll_ns, timeout)`` -- each spin step
  checks the inbox, the poll handlers and zero-timeout I/O readiness, and
  releases the GIL twice (``os.sched_yield()``, which also lets a producer on
  the same CPU run, and the zero-timeout ``select``) -- then announces
  ``notify_me`` and sleeps.
* any other loop, uvloop first among them (libuv has no selector to wrap): a
  self-rescheduling callback (``_CallbackPoller``).  While it is queued the loop
  cannot sleep (libuv polls with a zero timeout while an idle handle is
  active), so re-queueing it with ``call_soon`` *is* the busy-poll; each step
  yields the CPU with ``os.sched_yield()`` (which releases the GIL) so that
  producers get in.  Timers and I/O keep being served between steps, so the
  window needs no "time to next timer" bound there.  When the window closes it
  announces ``notify_me`` and lets the loop sleep.  The loop's own idleness is
  invisible to it, so ``notify_me`` is only cleared by inbox work: the loop may
  be woken while it is busy with other callbacks, which costs a syscall, never
  a lost wake-up.

Threads: ``call_soon_threadsafe``, ``add_poll_handler``, ``wake`` and
``statistics`` may be called from any thread; everything else runs in the
loop's thread.

What the spin costs: in CPython the spinning thread holds the GIL between its
syscalls, so a producer that is a Python thread of the same process competes
with it for the GIL; a producer that holds none of it (another process, a
socket peer, a C extension) does not.  benchmarks/polling.py measures both.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import os
import selectors
import sys
import threading
import time
from asyncio import format_helpers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import glib
from ._errors import IOThreadStopped
from ._polling import PollWindow

__all__ = ["AioContext", "AioContextStatistics", "PollHandler"]

#: Submissions taken from the inbox per loop iteration when aio-max-batch is 0.
#: 32 is QEMU's default batch (block/linux-aio.c ``DEFAULT_MAX_BATCH``, used
#: when aio-max-batch is 0): big enough to amortise an iteration, small enough
#: that timers and sockets on the same loop keep being served under a flood.
DEFAULT_AIO_MAX_BATCH: Final = 32

#: One spin step's yield: sched_yield(2) releases the GIL and lets a thread
#: waiting for this CPU run.  Windows has none; there, the zero-timeout select
#: of each step is the only release.
_yield_cpu: Final[Callable[[], None]] = getattr(os, "sched_yield", lambda: None)


class ThreadsafeHandle(asyncio.Handle):
    """An ``asyncio.Handle`` whose ``cancel()`` is safe from any thread.

    ``asyncio.Handle.cancel`` clears the callback; done from another thread
    while the loop is about to run it, the loop would call ``None``.  Here
    cancel only sets the flag, which the loop checks before running.
    """

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        # asyncio.Handle.__init__, flattened: this runs once per hand-off.
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._repr = None
        self._context = context if context is not None else contextvars.copy_context()
        self._source_traceback = (
            format_helpers.extract_stack(sys._getframe(1)) if loop.get_debug() else None
        )

    def cancel(self) -> None:
        self._cancelled = True


@dataclass(frozen=True)
class AioContextStatistics:
    """A snapshot of one AioContext's counters (read in any thread)."""

    #: the polling window now, in ns
    poll_ns: int
    #: polling phases started (the loop would have blocked and polled first)
    polls: int
    #: polling phases that ended because work arrived while spinning
    poll_hits: int
    #: times the loop actually went to sleep
    blocks: int
    #: handles submitted through the inbox and taken by the loop
    submitted: int
    #: eventfd writes by producers (the loop was blocking or about to block)
    wakeups_sent: int
    #: submissions that needed no wake-up because the loop was awake or spinning
    #: (submitted minus wakeups_sent)
    wakeups_suppressed: int
    #: total time spent busy-polling, in ns
    spin_ns: int
    #: submissions taken per iteration at most (aio-max-batch, 0 resolved to 32)
    max_batch: int
    #: the CPUs the loop's thread is pinned to, or None when unpinned
    cpu_affinity: frozenset[int] | None


class PollHandler:
    """A registered QEMU-style poll handler; ``remove()`` unregisters it.

    ``poll()`` is a cheap readiness check called while the loop spins;
    ``ready()`` runs when ``poll()`` said yes; ``begin``/``end`` bracket a
    polling phase (to silence another notification channel meanwhile), and
    always come in pairs: a handler added during a phase has its first
    ``begin()`` at the next one, and one removed during a phase gets no
    ``end()``, since it is not called again.
    """

    __slots__ = ("_context", "_in_ready", "begin", "end", "poll", "ready")

    def __init__(
        self,
        context: AioContext,
        poll: Callable[[], bool],
        ready: Callable[[], object],
        begin: Callable[[], object] | None,
        end: Callable[[], object] | None,
    ) -> None:
        self._context = context
        self.poll = poll
        self.ready = ready
        self.begin = begin
        self.end = end
        # True while ready() runs: a handler is never re-entered from it.
        self._in_ready = False

    def remove(self) -> None:
        """Unregister the handler (from any thread); it is not called again."""
        self._context._remove_poll_handler(self)


class AioContext:
    """The runtime of one event loop: inbox, wake-ups, polling, poll handlers.

    Created in the loop's thread by the IOThread, before the loop runs.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        poll_max_ns: int,
        poll_grow: int,
        poll_shrink: int,
        aio_max_batch: int,
        owner: str = "the event loop",
    ) -> None:
        self.loop = loop
        #: who runs the loop, for error messages ("IOThread 'io0'")
        self.owner = owner
        # Lock-free MPSC queue: producers append, the loop thread poplefts.
        self._inbox: collections.deque[asyncio.Handle] = collections.deque()
        # QEMU's notify_me: True while the loop blocks or is about to block.
        # Written by the loop thread only; read by producers.
        self._notify_me = True
        # Set (once) by the loop thread when it stops taking work; see _take_back().
        self._closing = False
        self._window = PollWindow(poll_max_ns, poll_grow, poll_shrink)
        self._max_batch = aio_max_batch or DEFAULT_AIO_MAX_BATCH
        # Where the owning IOThread pinned the loop's thread (None: unpinned).
        self.cpu_affinity: frozenset[int] | None = None
        # The GLib-like context, attached on first request (QEMU's
        # run_gcontext); until then no GLib machinery runs here at all.
        self._gcontext: glib.MainContext | None = None
        self._gdriver: glib._AsyncioDriver | None = None
        # Poll handlers: the tuple is replaced, never mutated, so the spin
        # iterates a consistent snapshot while other threads add or remove.
        self._poll_handlers: tuple[PollHandler, ...] = ()
        # Serialises the rewrites of _poll_handlers (add and remove may come
        # from different threads at once); readers need no lock.
        self._handlers_lock = threading.Lock()
        self._ready_handlers: list[PollHandler] = []
        # The handlers whose begin() opened the current polling phase: only
        # they get its end() (PollHandler: brackets come in pairs).
        self._bracketed: tuple[PollHandler, ...] = ()
        # Counters, each written by the loop thread only (so exact).
        self._polls = 0
        self._poll_hits = 0
        self._blocks = 0
        self._submitted = 0
        self._wakeups = 0
        self._spin_ns = 0
        self._wake_rfd, self._wake_wfd = _make_wake_channel()
        # Guards the wake channel against close(): a producer that saw
        # notify_me may write just as the loop closes, and the descriptor
        # number could by then belong to an unrelated file.  Only wake-ups
        # take it, and they make a syscall anyway.
        self._wake_lock = threading.Lock()
        loop.add_reader(self._wake_rfd, self._on_wake)
        self._poller: _CallbackPoller | None = None
        selector = getattr(loop, "_selector", None)
        if isinstance(loop, asyncio.SelectorEventLoop) and isinstance(
            selector, selectors.BaseSelector
        ):
            # The loop is new and not yet running: nothing holds the old
            # selector object but the loop, so swapping it is safe.
            loop._selector = _PollingSelector(selector, self)  # type: ignore[attr-defined]
        else:
            self._poller = _CallbackPoller(self)

    # -- any thread ---------------------------------------------------------

    def _take_back(self, handle: asyncio.Handle) -> None:
        """The loop closed between a producer's two looks (any thread).

        Its last drain ran after it set _closing; if that drain took *handle*,
        the handle has its outcome.  Otherwise take it back, so that it is not
        silently lost, and tell the producer.
        """
        try:
            self._inbox.remove(handle)
        except ValueError:
            return
        raise IOThreadStopped(f"{self.owner} is stopped; it takes no more work")

    def wake(self) -> None:
        """Make the loop leave its sleep (any thread)."""
        with self._wake_lock:
            if self._wake_wfd < 0:
                return  # closed: the loop is gone, and _take_back() tells the producer
            try:
                _wake_write(self._wake_wfd)
            except BlockingIOError:
                pass  # the channel is full, so the loop has a wake-up pending already

    def call_soon_threadsafe(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        """Schedule *callback* on the loop from any thread; the handle can be cancelled.

        Raises:
            IOThreadStopped: the loop no longer takes work.
        """
        if self._closing:
            raise IOThreadStopped(f"{self.owner} is stopped; it takes no more work")
        handle = ThreadsafeHandle(callback, args, self.loop, context)
        self._inbox.append(handle)
        if self._notify_me:
            self.wake()
        if self._closing:
            self._take_back(handle)
        return handle

    def add_poll_handler(
        self,
        poll: Callable[[], bool],
        ready: Callable[[], object],
        *,
        begin: Callable[[], object] | None = None,
        end: Callable[[], object] | None = None,
    ) -> PollHandler:
        """Register a poll handler (any thread); see :class:`PollHandler`.

        Poll handlers are consulted only during a polling window, as in QEMU:
        with poll-max-ns 0 they are never called, so pair them with a channel
        that wakes the loop (a ``call_soon_threadsafe``) for the sleeping case.
        """
        handler = PollHandler(self, poll, ready, begin, end)
        with self._handlers_lock:
            self._poll_handlers = (*self._poll_handlers, handler)
        self.wake()  # a sleeping loop starts polling the new handler next time
        return handler

    def statistics(self) -> AioContextStatistics:
        """A snapshot of the counters (any thread; each counter is exact)."""
        return AioContextStatistics(
            poll_ns=self._window.poll_ns,
            polls=self._polls,
            poll_hits=self._poll_hits,
            blocks=self._blocks,
            submitted=self._submitted,
            wakeups_sent=self._wakeups,
            wakeups_suppressed=max(0, self._submitted - self._wakeups),
            spin_ns=self._spin_ns,
            max_batch=self._max_batch,
            cpu_affinity=self.cpu_affinity,
        )

    def _remove_poll_handler(self, handler: PollHandler) -> None:
        with self._handlers_lock:
            self._poll_handlers = tuple(h for h in self._poll_handlers if h is not handler)

    # -- the loop's thread --------------------------------------------------

    def set_params(self, params: Mapping[str, int]) -> None:
        """Apply new poll / batch parameters (runs in the loop's thread).

        Like QEMU, a change to a poll parameter restarts the window from 0; a
        change of aio-max-batch alone leaves the window as it is.
        """
        window = self._window
        poll = (params["poll-max-ns"], params["poll-grow"], params["poll-shrink"])
        if poll != (window.poll_max_ns, window.poll_grow, window.poll_shrink):
            window.reset(*poll)
        self._max_batch = params["aio-max-batch"] or DEFAULT_AIO_MAX_BATCH

    def _on_wake(self) -> None:
        """The wake channel is readable, or work is queued (runs in the loop)."""
        self._wakeups += _wake_drain(self._wake_rfd)
        self._notify_me = False
        self._run_inbox()
        if self._poller is not None:
            self._poller.after_work()

    def _run_inbox(self) -> None:
        """Run up to one batch of queued handles and the ready poll handlers."""
        inbox = self._inbox
        # What is queued now, up to one batch; later arrivals wait for the
        # next iteration, behind the loop's timers and I/O.
        for _ in range(min(len(inbox), self._max_batch)):
            try:
                handle = inbox.popleft()
            except IndexError:
                break  # a producer that raced close_inbox() took its handle back
            self._submitted += 1
            if not handle._cancelled:
                handle._run()
        if self._ready_handlers:
            ready, self._ready_handlers = self._ready_handlers, []
            for handler in ready:
                if handler._in_ready or handler not in self._poll_handlers:
                    continue
                handler._in_ready = True
                try:
                    self._call_handler(handler.ready, "ready")
                finally:
                    handler._in_ready = False

    def _call_handler(self, method: Callable[[], object], name: str) -> object:
        """Call a poll handler's method; report what it raises, never raise.

        A poll handler runs inside the loop's select() or poller: an exception
        escaping it would stop the loop itself.  Returns None after an error.
        """
        try:
            return method()
        except Exception as exc:
            self.loop.call_exception_handler(
                {"message": f"Exception in poll handler {name}()", "exception": exc}
            )
            return None

    def _work_pending(self) -> bool:
        """True when the inbox or a poll handler has work (runs in the loop)."""
        return bool(self._inbox) or bool(self._ready_handlers)

    def _poll_once(self) -> bool:
        """One spin step over the poll handlers; True if one became ready."""
        for handler in self._poll_handlers:
            if handler._in_ready or handler in self._ready_handlers:
                continue
            if self._call_handler(handler.poll, "poll"):
                self._ready_handlers.append(handler)
        return bool(self._ready_handlers)

    def _poll_phase(self, started: bool) -> None:
        """Open a polling phase (begin() on every poll handler) or close it
        (end() on those it opened), then poll once more.  Runs in the loop.
        """
        if not started:
            self._end_phase()
            # QEMU re-checks after io_poll_end: an event that arrived while the
            # other channel was silenced must not wait for that channel.
            self._poll_once()
            return
        snapshot = self._poll_handlers
        opened = []
        for handler in snapshot:
            # As QEMU skips deleted nodes: a handler removed by an earlier
            # begin() is not called again.
            if self._poll_handlers is not snapshot and handler not in self._poll_handlers:
                continue
            opened.append(handler)
            if handler.begin is not None:
                self._call_handler(handler.begin, "begin")
        # The snapshot itself when nothing was skipped: _end_phase's fast path.
        self._bracketed = snapshot if len(opened) == len(snapshot) else tuple(opened)

    def _end_phase(self) -> None:
        """end() on the handlers the open phase began, if still registered (runs in the loop)."""
        opened, self._bracketed = self._bracketed, ()
        for handler in opened:
            if handler.end is None:
                continue
            current = self._poll_handlers  # an end() may remove another handler
            if current is opened or handler in current:
                self._call_handler(handler.end, "end")

    def get_g_main_context(self) -> glib.MainContext:
        """The loop's GLib-like context, created and attached on the first call.

        Runs in the loop's thread.  From then on the loop dispatches the
        context's sources too (see ``glib._AsyncioDriver``), and the context
        is this thread's thread-default context.
        """
        if self._gcontext is None:
            context = glib.MainContext()
            driver = glib._AsyncioDriver(context, self.loop)
            driver.start()
            context.push_thread_default()
            self._gcontext, self._gdriver = context, driver
        return self._gcontext

    def close_inbox(self) -> None:
        """Stop taking work (runs in the loop, while it still runs).

        After this, the loop's shutdown drains the inbox until it is empty;
        producers racing with it take their handle back (see _take_back()).
        """
        self._closing = True
        self._notify_me = True

    def drain(self) -> bool:
        """Run everything queued now; True if anything ran (runs in the loop)."""
        ran = False
        while self._inbox or self._ready_handlers:
            ran = True
            self._run_inbox()
        return ran

    def close(self) -> None:
        """Detach from the loop (runs in the loop's thread, before it closes).

        Closes the wake channel, drops the poller and the poll handlers, and
        detaches the GLib-like context, destroying and finalising its sources.
        """
        if self._gcontext is not None and self._gdriver is not None:
            driver, self._gdriver = self._gdriver, None
            try:
                driver.close()  # destroy and finalise while still the thread default
            finally:
                # Never raises, even if code on this thread left the
                # thread-default stack unbalanced: stop must finish.
                self._gcontext._discard_thread_default()
        self.loop.remove_reader(self._wake_rfd)
        with self._wake_lock:
            _close_wake_channel(self._wake_rfd, self._wake_wfd)
            self._wake_rfd = self._wake_wfd = -1
        self._poller = None  # breaks the cycle; no loop iteration runs after close
        # A phase the stop cut short (uvloop's spin is a callback, which may
        # still be queued): its begin()s get their end()s.
        self._end_phase()
        with self._handlers_lock:
            self._poll_handlers = ()
        self._ready_handlers = []


class _PollingSelector(selectors.BaseSelector):
    """Wraps a stdlib loop's selector: poll first, then sleep, QEMU style.

    Runs in the loop's thread (the loop calls it from ``_run_once``).
    """

    def __init__(self, inner: selectors.BaseSelector, context: AioContext) -> None:
        self._inner = inner
        self._context = context
        self._wake_key: selectors.SelectorKey | None = None

    # Registration is the inner selector's business.
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        context = self._context
        if context._work_pending() or (timeout is not None and timeout <= 0):
            return self._with_work(self._inner.select(0))
        start = time.monotonic_ns()
        window = context._window
        events: list[tuple[selectors.SelectorKey, int]] = []
        if window.poll_ns:
            events = self._spin(start, window.poll_ns, timeout)
            spun = time.monotonic_ns() - start
            context._spin_ns += spun
            if events or context._work_pending():
                context._poll_hits += 1
                window.adjust(spun)
                return self._with_work(events)
        # Announce the sleep, then take the last look (see the module doc).
        context._notify_me = True
        if context._work_pending():
            context._notify_me = False
            return self._with_work(self._inner.select(0))
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic_ns() - start) / 1e9)
        context._blocks += 1
        events = self._inner.select(timeout)
        context._notify_me = False
        window.adjust(time.monotonic_ns() - start)
        return self._with_work(events)

    def _spin(
        self, start: int, poll_ns: int, timeout: float | None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """Busy-poll for up to min(poll_ns, timeout); return I/O events seen."""
        context = self._context
        context._polls += 1
        limit = poll_ns if timeout is None else min(poll_ns, int(timeout * 1e9))
        deadline = start + limit
        inner_select = self._inner.select
        context._poll_phase(started=True)
        try:
            while True:
                if context._inbox or context._poll_once():
                    return []
                # The zero-timeout select is the GIL-releasing step: producers
                # run while we are in the syscall.
                _yield_cpu()
                events = inner_select(0)
                if events:
                    return events
                if time.monotonic_ns() >= deadline:
                    return []
        finally:
            context._poll_phase(started=False)

    def _with_work(
        self, events: list[tuple[selectors.SelectorKey, int]]
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """Report the wake channel readable when work is queued.

        Queued work written no eventfd (its wake-up was suppressed), so make
        the loop run the wake reader as if it had been written.
        """
        context = self._context
        if not context._work_pending():
            return events
        if self._wake_key is None:
            self._wake_key = self._inner.get_key(context._wake_rfd)
        if any(key is self._wake_key for key, _ in events):
            return events
        return [*events, (self._wake_key, selectors.EVENT_READ)]


class _CallbackPoller:
    """The polling window for loops without a selector to wrap (uvloop).

    Runs in the loop's thread.  See the module docstring for why a
    self-rescheduling callback keeps the loop polling.
    """

    def __init__(self, context: AioContext) -> None:
        self._context = context
        self._spinning = False
        self._spin_start = 0
        self._deadline = 0
        # When the loop last went idle (notify_me published), for block_ns.
        self._idle_since: int | None = None

    def after_work(self) -> None:
        """The inbox was served: more work, a spin, or announce the sleep."""
        context = self._context
        now = time.monotonic_ns()
        if self._idle_since is not None:
            context._window.adjust(now - self._idle_since)
            self._idle_since = None
        if context._closing:
            return
        if context._work_pending():
            # Still behind (aio-max-batch): come back after the other callbacks.
            context.loop.call_soon(context._on_wake)
            return
        poll_ns = context._window.poll_ns
        if poll_ns and not self._spinning:
            self._spinning = True
            self._spin_start = now
            self._deadline = now + poll_ns
            context._polls += 1
            context._poll_phase(started=True)
            context.loop.call_soon(self._spin)
        elif not self._spinning:
            self._go_idle(now)

    def _spin(self) -> None:
        context = self._context
        now = time.monotonic_ns()
        if context._inbox or context._poll_once():
            self._end_spin(now)
            context._poll_hits += 1
            context._window.adjust(now - self._spin_start)
            context._on_wake()
            return
        if now < self._deadline:
            _yield_cpu()  # releases the GIL: let producers in
            context.loop.call_soon(self._spin)
            return
        self._end_spin(now)
        if context._work_pending():
            context._on_wake()
        else:
            self._go_idle(self._spin_start)

    def _end_spin(self, now: int) -> None:
        self._spinning = False
        self._context._spin_ns += now - self._spin_start
        self._context._poll_phase(started=False)

    def _go_idle(self, since: int) -> None:
        context = self._context
        context._notify_me = True
        if context._work_pending():
            # Work slipped in before notify_me was visible: serve it now.
            context._notify_me = False
            context.loop.call_soon(context._on_wake)
            return
        context._blocks += 1
        self._idle_since = since


# -- the wake channel: an eventfd on Linux, a pipe elsewhere -------------------

if hasattr(os, "eventfd"):

    def _make_wake_channel() -> tuple[int, int]:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd

    def _wake_write(fd: int) -> None:
        os.eventfd_write(fd, 1)

    def _wake_drain(fd: int) -> int:
        """Return how many wake-ups were written since the last drain."""
        try:
            return os.eventfd_read(fd)
        except BlockingIOError:
            return 0

    def _close_wake_channel(rfd: int, wfd: int) -> None:
        os.close(rfd)

else:  # pragma: no cover - exercised on non-Linux hosts only

    def _make_wake_channel() -> tuple[int, int]:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        return rfd, wfd

    def _wake_write(fd: int) -> None:
        os.write(fd, b"\0")

    def _wake_drain(fd: int) -> int:
        count = 0
        while True:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return count
            if not data:
                return count
            count += len(data)

    def _close_wake_channel(rfd: int, wfd: int) -> None:
        os.close(rfd)
        os.close(wfd)
