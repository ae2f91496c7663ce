"""No wake-up is ever lost: a producer landing at any step of the loop's path to sleep.

Deterministic interleavings on both loops, in the spirit of trio's thread
tests: the loop's thread and a producer thread are traced line by line
(``sys.settrace``, lines of iothreads' own code only) and paused at chosen
lines, so that the producer's ``call_soon_threadsafe`` is cut at every one
of its lines and the pieces land at every line of the loop's way from its
last callback to its sleep.  Under the GIL a stress test cannot reach most
of these interleavings (no thread switch happens between the loop's last
look at the inbox and its sleep); here each one is one trial.  Real races,
where threads run in parallel (the free-threaded build), are left to the
stress test of ``test_stress.py``.

A lost wake-up leaves the loop asleep with work queued: the producer's
bounded wait for its callback fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from iothreads import IOThread
from iothreads._aio import AioContext
from iothreads._aio._callback_poller import CallbackPoller
from iothreads._aio._selector_poller import SelectorPoller

from .helpers import (
    WAIT,
    FakeClock,
    Gate,
    Line,
    LoopFactory,
    OwnedLock,
    ParkingEvent,
    line_of,
    native,
    wait_until,
)

pytestmark = pytest.mark.interleaving

#: Where the loop is about to sleep: the line each Python poller runs once
#: the inbox's prepare_to_block() said it may; the native callback poller
#: runs no Python there, and its way to sleep ends at the native inbox's
#: point after its last look found nothing.
SLEEPING_PYTHON = frozenset(
    {
        line_of(SelectorPoller.select, "events = self._inner.select(timeout)"),
        line_of(CallbackPoller._go_idle, "self._idle_since = since"),
    }
)
SLEEPING_NATIVE = frozenset({native("sleeping")})
#: The first line each loop runs once its sleep has ended: the stdlib
#: poller's select() measures the block, uvloop calls the inbox's reader.
WAKING = {
    line_of(SelectorPoller.select, "context.woke("),
    line_of(AioContext.serve_inbox, "inbox.drain_wakeups()"),
}


class Trial:
    """One IOThread, and the means to land a producer at a chosen point.

    Every hand-off between the test's threads parks in the kernel
    (``ParkingEvent``, a producer thread kept for the whole test): the
    trials number thousands, and on the free-threaded build each hand-off
    through ``threading`` would first spin on ``sched_yield()``, which beside
    busy processes costs a time slice a yield.  ``close()`` frees the events
    once the IOThread has stopped.
    """

    def __init__(self, io: IOThread, poll_ns: int) -> None:
        self.io = io
        self.aio = io.aio_context
        self.poll_ns = poll_ns
        python = isinstance(self.aio._poller, (SelectorPoller, CallbackPoller))
        self.sleeping = SLEEPING_PYTHON if python else SLEEPING_NATIVE
        self.locks = self._own_inbox_lock()
        self._events: list[ParkingEvent] = []
        self.loop_gate = Gate(marks=self.sleeping, locks=self.locks, event=self._event)
        self.producer_gate = Gate(locks=self.locks, event=self._event)
        self._ran = self._event()
        self._done = self._event()
        self._job: Callable[[], object] | None = None
        self._job_posted = self._event()
        self._job_done = self._event()
        self._producer = threading.Thread(target=self._produce, name="producer")
        self._producer.start()

    def asleep(self, lines: list[Line], start: int = 0) -> int:
        """The index of the first line of *lines* from *start* where the loop sleeps."""
        return next(i for i in range(start, len(lines)) if lines[i] in self.sleeping)

    def _event(self) -> ParkingEvent:
        event = ParkingEvent()
        self._events.append(event)
        return event

    def close(self) -> None:
        """End the producer thread and free the events."""
        self._job = None
        self._job_posted.set()
        self._producer.join(WAIT)
        for event in self._events:
            event.close()

    def _produce(self) -> None:
        """The producer thread: runs each job it is given, until given none."""
        while self._job_posted.wait(WAIT * 100):
            self._job_posted.clear()
            job = self._job
            if job is None:
                return
            try:
                job()
            finally:
                self._job_done.set()

    def _own_inbox_lock(self) -> tuple[OwnedLock, ...]:
        """The inbox's lock, where it has one (the pure-Python inbox of a
        free-threaded build), made one the gates keep their stops out of.

        Swapped from outside the loop, which no callback may disturb before
        the trials (on uvloop one would start a poll window); no producer
        uses the lock yet, and a critical section the loop may be in ends on
        the lock it began with.
        """
        inbox = self.aio._inbox
        if not hasattr(inbox, "_lock"):
            return ()
        inbox._lock = OwnedLock()
        return (inbox._lock,)

    def _in_loop(self, func: Callable[[], object]) -> bool:
        """Run *func* in the IOThread; False if it did not run within the bound."""
        done = self._done
        done.clear()

        def run() -> None:
            func()
            done.set()

        self.io.call_soon_threadsafe(run)
        return done.wait(WAIT)

    def settle(self) -> None:
        """Return once the loop sleeps: every trial starts from the same state."""
        blocks: list[int] = []
        assert self._in_loop(lambda: blocks.append(self.aio.statistics().blocks))
        wait_until(lambda: self.aio.statistics().blocks > blocks[0], "the loop to sleep")

    def arm(self, gate: Gate) -> None:
        """Trace the loop from now on, starting each trial from the same state.

        Runs in the IOThread, as a callback: the loop's way to sleep starts
        when it returns.  The window is set directly: grown by traffic, its
        size would depend on the machine's speed.
        """
        self.aio.clock = FakeClock()
        # The guard would end a spin whenever a thread of the test's shares
        # its CPU, so that the loop's path would change from trial to trial;
        # where it ends a spin, the way to sleep goes on as after a spin
        # that ran out, whose lines every trial covers.
        self.aio.spin_guard = False
        self.aio.window.poll_ns = self.poll_ns
        gate.install()

    def loop_path(self, *, woken: bool) -> list[Line]:
        """The lines the loop runs from a callback to its sleep, when no work
        comes; *woken*: and on, from a wake-up by a no-op to its next sleep."""
        gate = self.loop_gate
        gate.reset()
        self.settle()
        self.io.call_soon_threadsafe(self.arm, gate)
        assert gate.stopped.wait(WAIT), "the loop never reached its sleep"
        end = self.asleep(gate.lines) + 1
        if woken:
            gate.stopped.clear()
            self.io.call_soon_threadsafe(lambda: None)  # from an untraced thread
            assert gate.stopped.wait(WAIT), "the loop never slept again"
            end = self.asleep(gate.lines, end) + 1
        path = gate.lines[:end]
        assert self._in_loop(gate.uninstall)
        return path

    def producer_length(self) -> int:
        """How many lines a ``call_soon_threadsafe`` runs on the asleep loop."""
        gate = self.producer_gate
        gate.reset()
        gate.install()
        try:
            self.io.call_soon_threadsafe(self._ran.set)
        finally:
            gate.uninstall()
        assert self._ran.wait(WAIT)
        self._ran.clear()
        return len(gate.lines)

    def land(self, loop_stops_at: int, producer_stops_at: int, *, woken: bool) -> bool:
        """Cut the loop at one line and the producer at another, and see the callback run.

        The loop runs its first *loop_stops_at* lines and stops (with
        *woken*, a no-op from an untraced thread wakes it from its first
        sleep on the way); the producer runs *producer_stops_at* lines of its
        ``call_soon_threadsafe`` and stops (unless it finishes first); the
        loop goes on to its sleep (or to the callback); the producer
        finishes.  Returns False when the callback never ran, or a round
        trip after it did not come back: a lost wake-up.
        """
        ran, loop_gate, producer_gate = self._ran, self.loop_gate, self.producer_gate
        ran.clear()
        loop_gate.reset(loop_stops_at)
        producer_gate.reset(producer_stops_at)

        def callback() -> None:
            ran.set()
            loop_gate.stopped.set()  # the loop took the work instead of sleeping

        def produce() -> None:
            producer_gate.install()
            try:
                self.io.call_soon_threadsafe(callback)
            finally:
                producer_gate.uninstall()
                producer_gate.stopped.set()  # finished before its stop line

        self.settle()
        self.io.call_soon_threadsafe(self.arm, loop_gate)
        assert loop_gate.stopped.wait(WAIT)
        if woken:  # that was its first sleep: wake it, on to the stop
            loop_gate.stopped.clear()
            self.io.call_soon_threadsafe(lambda: None)
            assert loop_gate.stopped.wait(WAIT)
        self._job_done.clear()
        self._job = produce
        self._job_posted.set()
        try:
            assert producer_gate.stopped.wait(WAIT)
            loop_gate.go_on()
            assert loop_gate.stopped.wait(WAIT)  # asleep, or serving the callback
            producer_gate.go_on()
        finally:
            loop_gate.resume.set()
            producer_gate.resume.set()
            self._job_done.wait(WAIT)
        # And the channel still works after the callback: a stale "wake-up
        # pending" would make the next producer skip its write.
        return ran.wait(WAIT) and self._in_loop(loop_gate.uninstall)


#: The window of the polling-on trials, in fake-clock readings of 1 us: the
#: shortest whose way to sleep runs every line a longer one does (the test
#: checks it against twice as long).  Each step of a spin yields the CPU,
#: which beside a busy process costs a time slice, and each line of the way
#: is a trial: a longer window would only repeat steps.
POLL_NS = 3000


@pytest.fixture(params=[0, POLL_NS], ids=["polling-off", "polling-on"])
def trial(request: pytest.FixtureRequest, loop_factory: LoopFactory) -> Iterator[Trial]:
    # poll-max-ns is huge so that the window set by each trial stays as it
    # is: it only ever grows toward poll-max-ns or shrinks past it.
    poll_max_ns = 10**15 if request.param else 0
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=poll_max_ns) as io:
        trial = Trial(io, request.param)
        try:
            yield trial
        finally:
            io.stop()
            trial.close()


# Thousands of trials, each bounded by WAIT: a few seconds on a quiet
# machine, but beyond the suite's 60 s under heavy load.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("woken", [False, True], ids=["to-sleep", "from-wake-up"])
def test_a_producer_landing_anywhere_on_the_loops_way_is_never_lost(
    trial: Trial, woken: bool
) -> None:
    """On the way from a callback to the loop's sleep, and on the way from a
    wake-up through the serving of the inbox back to sleep."""
    path = trial.loop_path(woken=woken)
    if trial.poll_ns:  # no line of a longer window is left out
        shorter, trial.poll_ns = trial.poll_ns, 2 * trial.poll_ns
        assert set(trial.loop_path(woken=woken)) == set(path)
        trial.poll_ns = shorter
    first = 0
    if woken:  # from the first line the loop runs once its sleep has ended
        first = next(i for i in range(trial.asleep(path), len(path)) if path[i] in WAKING)
    # One cut more than the producer's lines: the last one falls after it.
    for producer_line in range(trial.producer_length() + 1):
        for loop_line in range(first, len(path)):
            if not trial.land(loop_line, producer_line, woken=woken):
                pytest.fail(
                    f"wake-up lost: the loop stopped before {path[loop_line]}, "
                    f"the producer after {producer_line} lines"
                )
    # The trials did land on both sides of the loop's announcement.
    stats = trial.aio.statistics()
    assert stats.wakeups_sent > 0
    assert stats.wakeups_suppressed > 0
