"""AioContext: one event loop's cross-thread inbox, wake-ups and polling window.

Work from other threads reaches the loop through
``AioContext.call_soon_threadsafe``: the handle is appended to a lock-free
inbox (a ``deque``, whose append and popleft are atomic) and the loop is
woken through its wake-up channel **only when it is blocking or about to
block** -- QEMU's ``notify_me`` protocol (docs/design.md, "Wake-up
suppression").  While the loop is awake or spinning, appending is enough: it
will look at the inbox before it sleeps.

Why no wake-up is ever lost: the loop publishes ``notify_me = True`` *before*
its last look at the inbox (``prepare_to_block``), and a producer appends
*before* it reads ``notify_me``.  Under the GIL these four steps are totally
ordered, so either the loop's last look sees the handle, or the producer sees
``notify_me`` and writes the channel, whose readiness then ends the sleep.

How the loop sleeps is a poller's business, chosen once, in the constructor:
the stdlib selector loop's selector is wrapped (``SelectorPoller``); any other
loop, uvloop first among them, gets a self-rescheduling callback
(``CallbackPoller``).  Both drive the same polling window and talk to the
context through the methods under "the pollers' interface" below.

What the spin costs: in CPython the spinning thread holds the GIL between its
system calls, so a producer that is a Python thread of the same process
competes with it for the GIL; a producer that holds none of it (another
process, a socket peer, a C extension) does not (docs/design.md,
"Measurements").
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .._errors import IOThreadStopped
from .._runs_in import ANY, LOOP, runs_in
from ._callback_poller import CallbackPoller
from ._handle import ThreadsafeHandle
from ._poll_handlers import PollHandler, PollHandlerSet
from ._selector_poller import SelectorPoller
from ._wakeup import WakeupChannel
from ._window import PollWindow

__all__ = ["AioContext", "AioContextStatistics"]

#: Submissions taken from the inbox per loop iteration when aio-max-batch is 0.
#: 32 is QEMU's default batch (block/linux-aio.c ``DEFAULT_MAX_BATCH``, used
#: when aio-max-batch is 0): big enough to amortise an iteration, small enough
#: that timers and sockets on the same loop keep being served under a flood.
DEFAULT_AIO_MAX_BATCH: Final = 32


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
    #: wake-up channel writes by producers (the loop was blocking or about to block)
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


class Poller(Protocol):
    """How a loop polls and sleeps: what the context needs of either poller."""

    @runs_in(LOOP)
    def after_work(self) -> None:
        """The inbox was served."""


class AioContext:
    """The runtime of one event loop: inbox, wake-ups, polling, poll handlers.

    Created in the loop's thread, before the loop runs.
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
        #: the clock (ns) the polling window and its statistics are measured
        #: with (the loop's thread reads it); tests drive the window with a
        #: fake one
        self.clock: Callable[[], int] = time.monotonic_ns
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
        #: where the owning IOThread pinned the loop's thread (None: unpinned)
        self.cpu_affinity: frozenset[int] | None = None
        self._handlers = PollHandlerSet(loop)
        # Counters, each written by the loop thread only (so exact).
        self._polls = 0
        self._poll_hits = 0
        self._blocks = 0
        self._submitted = 0
        self._wakeups = 0
        self._spin_ns = 0
        self._wakeup = WakeupChannel()
        loop.add_reader(self._wakeup.fileno(), self.serve_inbox)
        # The one place that chooses how this loop polls.
        self._poller: Poller = SelectorPoller.attach(loop, self) or CallbackPoller(self)

    # -- any thread ---------------------------------------------------------

    @runs_in(ANY)
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
            self._wakeup.wake()
        if self._closing:
            self._take_back(handle)
        return handle

    @runs_in(ANY)
    def _take_back(self, handle: asyncio.Handle) -> None:
        """The loop closed between a producer's two looks.

        Its last drain ran after it set _closing; if that drain took *handle*,
        the handle has its outcome.  Otherwise take it back, so that it is not
        silently lost, and tell the producer.
        """
        try:
            self._inbox.remove(handle)
        except ValueError:
            return
        raise IOThreadStopped(f"{self.owner} is stopped; it takes no more work")

    @runs_in(ANY)
    def add_poll_handler(
        self,
        poll: Callable[[], bool],
        ready: Callable[[], object],
        *,
        begin: Callable[[], object] | None = None,
        end: Callable[[], object] | None = None,
    ) -> PollHandler:
        """Register a poll handler; see :class:`PollHandler`.

        Poll handlers are consulted only during a polling window, as in QEMU:
        with poll-max-ns 0 they are never called, so pair them with a channel
        that wakes the loop (a ``call_soon_threadsafe``) for the sleeping case.
        """
        handler = self._handlers.add(poll, ready, begin, end)
        self._wakeup.wake()  # a sleeping loop starts polling the new handler next time
        return handler

    @runs_in(ANY)
    def statistics(self) -> AioContextStatistics:
        """A snapshot of the counters (each counter is exact)."""
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

    # -- the loop's thread --------------------------------------------------

    @runs_in(LOOP)
    def set_params(self, params: Mapping[str, int]) -> None:
        """Apply new poll / batch parameters.

        Like QEMU, a change to a poll parameter restarts the window from 0; a
        change of aio-max-batch alone leaves the window as it is.
        """
        window = self._window
        poll = (params["poll-max-ns"], params["poll-grow"], params["poll-shrink"])
        if poll != (window.poll_max_ns, window.poll_grow, window.poll_shrink):
            window.reset(*poll)
        self._max_batch = params["aio-max-batch"] or DEFAULT_AIO_MAX_BATCH

    @runs_in(LOOP)
    def close_inbox(self) -> None:
        """Stop taking work, while the loop still runs.

        After this, the loop's shutdown drains the inbox until it is empty;
        producers racing with it take their handle back (see _take_back()).
        """
        self._closing = True
        self._notify_me = True

    @runs_in(LOOP)
    def drain(self) -> bool:
        """Run everything queued now; True if anything ran."""
        ran = False
        while self.work_pending():
            ran = True
            self._run_inbox()
        return ran

    @runs_in(LOOP)
    def close(self) -> None:
        """Detach from the loop, before it closes.

        Closes the wake-up channel and drops the poll handlers (a phase the
        stop cut short gets its ``end()`` calls: uvloop's spin is a callback,
        which may still be queued).  No loop iteration runs after this.
        """
        self.loop.remove_reader(self._wakeup.fileno())
        self._wakeup.close()
        self._handlers.close()

    # -- the pollers' interface (the loop's thread) --------------------------

    @property
    def closing(self) -> bool:
        """True once the loop takes no more work."""
        return self._closing

    @property
    def poll_ns(self) -> int:
        """The polling window now, in ns (0: do not poll)."""
        return self._window.poll_ns

    def wakeup_fileno(self) -> int:
        """The descriptor producers make readable to end the loop's sleep."""
        return self._wakeup.fileno()

    @runs_in(LOOP)
    def work_pending(self) -> bool:
        """True when the inbox or a poll handler has work."""
        return bool(self._inbox) or self._handlers.has_ready()

    @runs_in(LOOP)
    def serve_inbox(self) -> None:
        """The wake-up channel is readable, or work is queued: serve it."""
        self._wakeups += self._wakeup.drain()
        self._notify_me = False
        self._run_inbox()
        self._poller.after_work()

    @runs_in(LOOP)
    def begin_polling(self) -> None:
        """A polling phase starts: the poll handlers' ``begin()``."""
        self._polls += 1
        self._handlers.begin_phase()

    @runs_in(LOOP)
    def poll_step(self) -> bool:
        """One spin step: True when the inbox or a poll handler has work."""
        return bool(self._inbox) or self._handlers.poll()

    @runs_in(LOOP)
    def end_polling(self, started_ns: int, *, io_ready: bool = False) -> bool:
        """The polling phase begun at *started_ns* ends; True if it caught work.

        Ends the phase (the handlers' ``end()``, then one more poll), counts
        the time spun, and, when the phase caught work (queued, a ready
        handler, or *io_ready*), counts a hit and moves the window by the
        time it took.
        """
        self._handlers.end_phase()
        spun = self.clock() - started_ns
        self._spin_ns += spun
        if not (io_ready or self.work_pending()):
            return False
        self._poll_hits += 1
        self._window.adjust(spun)
        return True

    @runs_in(LOOP)
    def prepare_to_block(self) -> bool:
        """Announce the sleep, then take the last look; True if the loop may sleep.

        False when work slipped in before ``notify_me`` was visible: the loop
        serves it instead of sleeping (see the module doc).
        """
        self._notify_me = True
        if self.work_pending():
            self._notify_me = False
            return False
        self._blocks += 1
        return True

    @runs_in(LOOP)
    def woke(self, block_ns: int) -> None:
        """The loop has work again after blocking for *block_ns* (polling plus sleeping)."""
        self._notify_me = False
        self._window.adjust(block_ns)

    @runs_in(LOOP)
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
        self._handlers.run_ready()
