"""AioContext: one event loop's runtime: inbox, wake-ups, polling window, poll handlers.

Work from other threads reaches the loop through
``AioContext.call_soon_threadsafe``, which hands it to the loop's inbox
(``_inbox``: the native core or its pure-Python fallback): the handle is
queued and the loop is woken **only when it is blocking or about to
block** -- QEMU's ``notify_me`` protocol (docs/design.md, "Wake-up
suppression").  While the loop is awake or spinning, queueing is enough: it
will look at the inbox before it sleeps.

Each pass of the loop runs what was queued when the pass began, capped by
aio-max-batch when it is set (0: no cap), as QEMU's ``aio_bh_poll`` runs
every bottom half queued at its entry.

How the loop sleeps is a poller's business, chosen once, in the constructor:
the stdlib selector loop's selector is wrapped (``SelectorPoller``); any other
loop, uvloop first among them, gets a self-rescheduling callback
(``CallbackPoller``, or the native core's).  Both drive the same polling
window, spin through ``spin()`` (in C without the GIL where the native core
is built) and talk to the context through the methods under "the pollers'
interface" below and the attributes the constructor binds for the wake-up
path: ``window``, ``work_pending`` and ``prepare_to_block``.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from .. import _fork
from .._runs_in import ANY, LOOP, runs_in
from . import _inbox
from ._callback_poller import new_callback_poller
from ._inbox import new_inbox
from ._poll_handlers import PollHandler, PollHandlerSet
from ._selector_poller import SelectorPoller
from ._window import PollWindow, involuntary_switches, yield_cpu

__all__ = ["AioContext", "AioContextStatistics", "context_of"]

#: The longest the native spin runs without the GIL while poll handlers are
#: registered: they are Python code, called between slices.  20 us keeps
#: them within QEMU's default window of 32 us.
POLL_HANDLER_SLICE_NS: Final = 20_000

#: The pure-Python spin reads its thread's switch count (the guard) every
#: this many steps: a reading costs about what a step's yield does (0.5 us),
#: and holds the GIL the producers may be waiting for (on every step it cost
#: the handle round trip 10-20 % with the threads on two CPUs).
GUARD_STEPS: Final = 8

#: What the native spin answers when a yield ran another thread on its CPU
#: and its last look found nothing (the guard; spin.c).
NATIVE_SPIN_SHARED: Final = 3
#: ... and when that last look found work: caught, on a CPU shared.
NATIVE_SPIN_CAUGHT_SHARED: Final = 4


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
    #: polling phases the guard ended early: a yield of the spin ran another
    #: thread on its CPU, and the look after it found no work
    spins_shared: int
    #: submissions run per pass at most (aio-max-batch; 0: all queued at its start)
    max_batch: int
    #: the CPUs the loop's thread is pinned to, or None when unpinned
    cpu_affinity: frozenset[int] | None
    #: whether the native core serves this loop (else the pure-Python inbox)
    native: bool


class Poller(Protocol):
    """How a loop polls and sleeps: what the context needs of either poller."""

    @runs_in(LOOP)
    def after_work(self) -> None:
        """The inbox was served."""

    @runs_in(LOOP)
    def detach(self) -> None:
        """The context closes; the loop may go on running without it."""


# The context serving each loop, registered by its constructor and dropped by
# its close(): where a reply to that loop goes first (``context_of``).
_SERVING: dict[asyncio.AbstractEventLoop, AioContext] = {}


@runs_in(ANY)
def context_of(loop: asyncio.AbstractEventLoop) -> AioContext | None:
    """The AioContext serving *loop*, if one does (an IOThread's, or a
    main-loop's that polls): its ``call_soon_threadsafe`` reaches the loop
    without a wake-up while the loop is awake or spinning."""
    return _SERVING.get(loop)


@runs_in(_fork.FORK_CHILD)
def _forget_after_fork() -> None:
    """In a forked child the parent's loops do not run: no context serves
    them, and none counts as awake for the native spin's hand-over wait
    (their inboxes are kept, never shut down, in the child: ``_fork``)."""
    _SERVING.clear()
    core = _inbox.native_core
    if core is not None:
        core._after_fork_in_child()


os.register_at_fork(after_in_child=_forget_after_fork)


class AioContext:
    """The runtime of one event loop: inbox, wake-ups, polling, poll handlers.

    Created in the loop's thread, or before the loop runs; at most one per loop.

    Raises:
        RuntimeError: *loop* has an AioContext already.
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
        if loop in _SERVING:
            owner = _SERVING[loop].owner
            raise RuntimeError(f"{loop!r} has an AioContext already, owned by {owner}")
        self.loop: asyncio.AbstractEventLoop = loop
        #: the clock (ns) the polling window and its statistics are measured
        #: with (the loop's thread reads it); tests drive the window with a
        #: fake one
        self.clock: Callable[[], int] = time.monotonic_ns
        #: the loop thread's involuntary context switches so far, which tell
        #: the pure-Python spin that a yield ran another thread (None: no
        #: guard); tests stub it
        self.switches: Callable[[], int] | None = involuntary_switches
        #: whether a spin gives up once its CPU proves shared (the guard);
        #: tests of what a spin does over a whole window turn it off
        self.spin_guard = True
        #: True once a spin of the current polling phase found its CPU
        #: shared, whether the look after caught work or it gave up (the
        #: loop's thread writes and reads it)
        self.cpu_shared = False
        #: who runs the loop, for error messages ("IOThread 'io0'")
        self.owner: str = owner
        self._handlers = PollHandlerSet(loop)
        self._inbox = new_inbox(
            loop, f"{owner} is stopped; it takes no more work", self._handlers.ready_handlers
        )
        # The pollers' interface, on the wake-up path: the inbox's own
        # methods, which count the ready poll handlers as work, with no
        # Python call in between (docs/design.md, "The wake-up path in Python").
        #: True when the inbox or a poll handler has work (the loop's thread).
        self.work_pending: Callable[[], bool] = self._inbox.pending
        #: Announce the sleep, then take the last look; True if the loop may
        #: sleep, False when work slipped in before ``notify_me`` was visible
        #: or a poll handler is ready: the loop serves it instead of
        #: sleeping (the loop's thread; see the module doc).
        self.prepare_to_block: Callable[[], bool] = self._inbox.prepare_to_block
        # The native inbox's spin, which waits without the GIL; None: spin in Python.
        self._native_spin: Callable[[int, int], int] | None = getattr(self._inbox, "spin", None)
        #: True once the loop takes no more work (set once, by the loop's thread).
        self.closing = False
        #: True once the context is detached from the loop, which may go on
        #: running: a main-loop's (set once, by the loop's thread).
        self.closed = False
        #: the polling window (the loop's thread moves it; tests set it):
        #: the native core's, which moves without a Python call, with the
        #: native inbox
        core = _inbox.native_core
        self.window: PollWindow = (PollWindow if core is None else core.PollWindow)(
            poll_max_ns, poll_grow, poll_shrink
        )
        self._max_batch = aio_max_batch
        #: where the owning IOThread pinned the loop's thread (None: unpinned)
        self.cpu_affinity: frozenset[int] | None = None
        # Counters, each written by the loop thread only (so exact).
        self._polls = 0
        self._poll_hits = 0
        self._spin_ns = 0
        self._spins_shared = 0
        try:
            loop.add_reader(self._inbox.fileno(), self.serve_inbox)
        except BaseException:
            self._inbox.shutdown()  # a closed loop, say: no one else would close its channel
            raise
        # The one place that chooses how this loop polls.
        self._poller: Poller = SelectorPoller.attach(loop, self) or new_callback_poller(self)
        #: Schedule ``callback(*args)`` on the loop from any thread; the
        #: handle can be cancelled from any thread.  Raises IOThreadStopped
        #: once the loop takes no more work.  (The inbox's own method: the
        #: hot path of every hand-off, with nothing in between.)
        self.call_soon_threadsafe: Callable[..., asyncio.Handle] = self._inbox.submit
        _SERVING[loop] = self

    # -- any thread ---------------------------------------------------------

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
        self._inbox.wake()  # a sleeping loop starts polling the new handler next time
        return handler

    @runs_in(ANY)
    def statistics(self) -> AioContextStatistics:
        """A snapshot of the counters (each counter is exact)."""
        submitted, wakeups = self._inbox.submitted, self._inbox.wakeups
        return AioContextStatistics(
            poll_ns=self.window.poll_ns,
            polls=self._polls,
            poll_hits=self._poll_hits,
            blocks=self._inbox.blocks,
            submitted=submitted,
            wakeups_sent=wakeups,
            wakeups_suppressed=max(0, submitted - wakeups),
            spin_ns=self._spin_ns,
            spins_shared=self._spins_shared,
            max_batch=self._max_batch,
            cpu_affinity=self.cpu_affinity,
            native=self._native_spin is not None,
        )

    # -- the loop's thread --------------------------------------------------

    @runs_in(LOOP)
    def set_params(self, params: Mapping[str, int]) -> None:
        """Apply new poll / batch parameters; those not given keep their value.

        Like QEMU, a change to a poll parameter restarts the window from 0; a
        change of aio-max-batch alone leaves the window as it is.
        """
        window = self.window
        now = (window.poll_max_ns, window.poll_grow, window.poll_shrink)
        poll = (
            params.get("poll-max-ns", window.poll_max_ns),
            params.get("poll-grow", window.poll_grow),
            params.get("poll-shrink", window.poll_shrink),
        )
        if poll != now:
            window.reset(*poll)
        self._max_batch = params.get("aio-max-batch", self._max_batch)

    @runs_in(LOOP)
    def close_inbox(self) -> None:
        """Stop taking work, while the loop still runs.

        After this, the loop's shutdown drains the inbox until it is empty;
        producers racing with it are refused or take their handle back.
        """
        self.closing = True
        self._inbox.close()

    @runs_in(LOOP)
    def drain(self) -> bool:
        """Run everything queued now; True if anything ran."""
        ran = False
        while self.work_pending():
            ran = True
            self._inbox.run(self._max_batch)
            self._handlers.run_ready()
        return ran

    @runs_in(LOOP)
    def close(self) -> None:
        """Detach from the loop (an IOThread's, before it closes; a main-loop's,
        which goes on running); idempotent.

        Stops taking work (if the loop's shutdown has not already) and runs
        what the inbox holds, unless the loop is closed and can run nothing
        more: a producer refused from here on takes its work elsewhere
        (``IOThreadStopped``).  Then closes the wake-up channel, gives the
        loop its own way of sleeping back, and drops the poll handlers (a
        phase the stop cut short gets its ``end()`` calls: uvloop's spin is a
        callback, which may still be queued; it finds the poller detached and
        does nothing).
        """
        if self.closed:
            return
        if not self.closing:
            self.close_inbox()
        # The poll handlers are dropped below, their ready() calls with them:
        # pending() then counts the queued handles alone.
        self._handlers.ready_handlers.clear()
        if not self.loop.is_closed():
            while self._inbox.pending():
                self._inbox.run(0)
        _SERVING.pop(self.loop, None)  # ours (one per loop), unless a fork cleared it
        self.closed = True
        self._poller.detach()
        self.loop.remove_reader(self._inbox.fileno())
        self._inbox.shutdown()
        self._handlers.close()

    # -- the pollers' interface (the loop's thread) --------------------------

    @property
    def poll_ns(self) -> int:
        """The polling window now, in ns (0: do not poll)."""
        return self.window.poll_ns

    def wakeup_fileno(self) -> int:
        """The descriptor producers make readable to end the loop's sleep."""
        return self._inbox.fileno()

    @runs_in(LOOP)
    def serve_inbox(self) -> None:
        """The wake-up channel is readable, or work is queued: serve it."""
        # The wake-up path, where each Python call costs the round trip about
        # 0.3 us on the free-threaded build (docs/design.md, "The wake-up
        # path in Python"): the inbox is a local, and the poll handlers'
        # pass is called only when one is ready.
        if self.closed:
            return  # queued by a poller before the context closed
        inbox = self._inbox
        inbox.drain_wakeups()
        inbox.woke()
        inbox.run(self._max_batch)
        if self._handlers.ready_handlers:
            self._handlers.run_ready()
        self._poller.after_work()

    @runs_in(LOOP)
    def begin_polling(self) -> None:
        """A polling phase starts: the poll handlers' ``begin()``."""
        self._polls += 1
        self.cpu_shared = False
        self._handlers.begin_phase()

    @runs_in(LOOP)
    def poll_step(self) -> bool:
        """One look: True when the inbox or a poll handler has work."""
        return self._inbox.pending() or self._handlers.poll()

    @runs_in(LOOP)
    def spin(self, deadline_ns: int, fd: int = -1) -> bool:
        """Busy-wait until work comes, *fd* is readable or the clock reaches
        *deadline_ns*; True when work came (or *fd* became readable).

        The native core waits in C with the GIL released, in slices when
        poll handlers need calling; the fallback yields the CPU between looks.
        The guard (docs/design.md, "The polling window"): once a yield has
        run another thread on this CPU, the spin takes one more look and
        returns what it found, giving up if nothing, and ``cpu_shared`` says
        the CPU proved shared until the next phase.
        """
        native = self._native_spin
        switches = self.switches if self.spin_guard and native is None else None
        before = switches() if switches is not None else 0
        steps = 0
        while True:
            if self.poll_step():
                return True
            now = self.clock()
            if now >= deadline_ns:
                # Yields since the guard's last reading count too: uvloop's
                # poller spins in short steps, and where each yield hands the
                # CPU to a busy process a step ends before its GUARD_STEPS-th.
                shared = switches is not None and steps % GUARD_STEPS != 0 and switches() != before
                if not shared:
                    return False
            elif native is not None:
                slice_ns = deadline_ns - now
                if self._handlers.registered():
                    slice_ns = min(slice_ns, POLL_HANDLER_SLICE_NS)
                outcome = native(slice_ns, fd)
                if outcome == NATIVE_SPIN_CAUGHT_SHARED:
                    self.cpu_shared = self.spin_guard
                    return True
                if outcome and outcome != NATIVE_SPIN_SHARED:
                    return True
                # After the yield that shared the CPU, C looked at the inbox and fd.
                shared = outcome == NATIVE_SPIN_SHARED and self.spin_guard
            else:
                yield_cpu()
                if fd >= 0 and select.select([fd], [], [], 0)[0]:
                    return True
                steps += 1
                shared = switches is not None and steps % GUARD_STEPS == 0 and switches() != before
            if shared:
                # The threads sharing this CPU have run up to their next wait:
                # what they were about to hand over is queued by now.
                self.cpu_shared = True
                if self.poll_step():
                    return True
                self._spins_shared += 1
                return False

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
        self.window.adjust(spun)
        return True

    @runs_in(LOOP)
    def woke(self, block_ns: int) -> None:
        """The loop has work again after blocking for *block_ns* (polling plus sleeping)."""
        self._inbox.woke()
        self.window.adjust(block_ns)
