"""Stress: producers with random gaps, cancels from other threads, a stop under load.

Every submission is accounted for, on both loops and both inbox
implementations: its callback ran exactly once; or it was cancelled, and ran
at most once (a cancel may come as the loop starts the callback), and never
when it was cancelled while the loop was held before reaching it; or it was
refused with ``IOThreadStopped``, and never ran.  A lost wake-up leaves a
producer waiting for its callback: the wait is bounded and fails the test.

Under the GIL a stress test reaches few of the interleavings that matter
(the gates of ``test_wakeups.py`` and ``test_stop_races.py`` reach them one
by one, docs/design.md, "Testing"); on the free-threaded build the threads
run in parallel and it reaches real races.  Its size is the number of
hand-offs (callbacks run) per case: small by default, set by the
environment variable ``IOTHREADS_STRESS_HANDOFFS`` (CI's free-threaded leg
raises it).
"""

from __future__ import annotations

import collections
import os
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from iothreads import IOThread, IOThreadStopped

from .helpers import WAIT, LoopFactory

#: Callbacks that must run per case (the producers go on past it until the
#: stop refuses them).
HANDOFFS = int(os.environ.get("IOTHREADS_STRESS_HANDOFFS", "2000"))
PRODUCERS = 4
CANCELLERS = 2
#: A producer stops by itself after this many times its share, should the
#: stop never come (the test fails then: nothing was refused).
CAP = 10
#: The bound on a whole case, a guard against a hang the other bounds miss:
#: every step has its own bound (WAIT), and the stop waits for the producers
#: only while callbacks still run.  A loaded machine is slow, not stuck: on
#: the free-threaded build beside two busy processes a hand-off took 5 ms
#: (2000 in 10.5 s; 0.1 s on an idle machine).
RUN_LIMIT = WAIT + HANDOFFS * 0.05

Item = tuple[int, Any, int]  # (submission id, its handle, the hold it was submitted under)


class Holder:
    """Holds the loop in a callback while a canceller works.

    A handle submitted once the loop is held cannot have been looked at by
    the loop before the hold ends: cancelled before that, it must never run.
    ``epoch`` names the current hold (0: none); producers read it before
    they submit and tag their handles with it.
    """

    def __init__(self, io: IOThread, failures: list[str]) -> None:
        self.io = io
        self.failures = failures
        self.epoch = 0
        self._holds = 0

    def hold(self, work: Callable[[int], None]) -> None:
        """Run work(epoch) in this thread while the loop waits in a callback."""
        held, release = threading.Event(), threading.Event()

        def holding() -> None:
            held.set()
            if not release.wait(WAIT):
                self.failures.append("a hold was never released")

        try:
            self.io.call_soon_threadsafe(holding)
        except IOThreadStopped:
            return
        try:
            if not held.wait(WAIT):
                self.failures.append("a hold callback never ran")
                return
            self._holds += 1
            self.epoch = self._holds
            work(self.epoch)
        finally:
            self.epoch = 0
            release.set()


@pytest.mark.parametrize("poll_max_ns", [0, 32768, 500_000])
@pytest.mark.timeout(300 + RUN_LIMIT)  # the suite's bound, plus the run's
def test_every_submission_runs_once_is_cancelled_or_is_refused(
    loop_factory: LoopFactory, poll_max_ns: int
) -> None:
    """Gaps range from none to longer than the window, so submissions land
    while the loop is awake, spinning, announcing its sleep, asleep and
    stopping.  Half the producers keep the bound ``call_soon_threadsafe``
    they took at the start, as a hot loop would: after the stop began they
    reach the inbox itself, which refuses them or takes their handle back."""
    quota = -(-HANDOFFS // PRODUCERS)
    io = IOThread("io0", loop_factory=loop_factory, poll_max_ns=poll_max_ns)
    io.start()
    aio = io.aio_context
    failures: list[str] = []
    holder = Holder(io, failures)
    # Written by the loop's thread only (the callbacks), read once all is over.
    ran: list[int] = []
    # One list per thread, read once all is over.
    accepted: list[list[int]] = [[] for _ in range(PRODUCERS + 1)]
    refused: list[list[int]] = [[] for _ in range(PRODUCERS)]
    cancelled: list[list[int]] = [[] for _ in range(CANCELLERS)]
    never_to_run: list[int] = []  # canceller 0's, while the loop was held
    to_cancel: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
    reached = [threading.Event() for _ in range(PRODUCERS)]

    def finish(i: int, done: threading.Event) -> None:
        ran.append(i)
        done.set()

    def producer(p: int) -> None:
        # Producer p's submissions are p, p + PRODUCERS, p + 2 * PRODUCERS...
        rng = random.Random(p)
        done = threading.Event()
        kept = 0  # submissions left alone, all ran once done is set (FIFO)
        cached = io.call_soon_threadsafe if p % 2 else None
        k = 0
        try:
            while kept < CAP * quota:
                submit = cached or io.call_soon_threadsafe
                burst = rng.randint(1, 8)
                done.clear()
                for b in range(burst):
                    i, k = k * PRODUCERS + p, k + 1
                    last = b == burst - 1
                    epoch = holder.epoch
                    try:
                        handle = submit(finish, i, done) if last else submit(ran.append, i)
                    except IOThreadStopped:
                        refused[p].append(i)
                        return
                    accepted[p].append(i)
                    if not last and rng.random() < 0.25:
                        to_cancel.put((i, handle, epoch))
                    else:
                        kept += 1
                if not done.wait(WAIT):
                    failures.append(f"producer {p}: callback {k - 1} never ran")
                    return
                if kept >= quota:
                    reached[p].set()
                gap = rng.random()
                if gap < 0.3:
                    continue  # back to back
                if gap < 0.6:
                    for _ in range(rng.randrange(2000)):
                        pass  # a short busy gap, inside or around the window
                else:
                    threading.Event().wait(rng.random() / 2000)  # up to 0.5 ms asleep
        finally:
            reached[p].set()  # also on failure: the stop must come

    def canceller(c: int) -> None:
        rng = random.Random(100 + c)
        own = 0

        def while_held(epoch: int) -> None:
            # Its own submissions, and the producers' made since the hold
            # began, cancelled before the loop can look at them.
            nonlocal own
            for _ in range(rng.randint(1, 4)):
                own -= 1
                try:
                    handle = io.call_soon_threadsafe(ran.append, own)
                except IOThreadStopped:
                    break
                accepted[PRODUCERS].append(own)
                handle.cancel()
                never_to_run.append(own)
            while True:
                try:
                    item = to_cancel.get_nowait()
                except queue.Empty:
                    return
                if item is None:
                    to_cancel.put(None)  # the end: for the loop below
                    return
                i, handle, tag = item
                handle.cancel()
                cancelled[c].append(i)
                if tag == epoch:
                    never_to_run.append(i)

        taken = 0
        while (item := to_cancel.get(timeout=RUN_LIMIT)) is not None:
            i, handle, _ = item
            handle.cancel()  # racing the loop: it may be running the callback
            cancelled[c].append(i)
            taken += 1
            if c == 0 and taken % 8 == 0:
                holder.hold(while_held)

    def stopper() -> None:
        for p, event in enumerate(reached):
            seen = -1  # callbacks run when last looked
            while not event.wait(WAIT):
                if len(ran) == seen:
                    failures.append(
                        f"producer {p} neither reached its share nor ended, "
                        f"and no callback ran for {WAIT:g} s"
                    )
                    break
                seen = len(ran)
        io.stop()

    producers = [threading.Thread(target=producer, args=(p,)) for p in range(PRODUCERS)]
    cancellers = [threading.Thread(target=canceller, args=(c,)) for c in range(CANCELLERS)]
    stopping = threading.Thread(target=stopper)
    try:
        for thread in [*producers, *cancellers, stopping]:
            thread.start()
        for thread in [*producers, stopping]:
            thread.join(RUN_LIMIT)
    finally:
        for _ in cancellers:
            to_cancel.put(None)
        for thread in cancellers:
            thread.join(WAIT)
        io.stop()

    assert failures == []
    runs = collections.Counter(ran)
    all_accepted = {i for ids in accepted for i in ids}
    all_cancelled = {i for ids in cancelled for i in ids} | set(never_to_run)
    assert [i for i, n in runs.items() if n > 1] == [], "ran twice"
    assert set(runs) <= all_accepted, "refused, or never submitted, yet ran"
    assert sorted(all_accepted - all_cancelled - set(runs)) == [], "lost"
    assert [i for i in never_to_run if i in runs] == [], "ran though cancelled in time"
    # Every part was exercised: the checks above could have failed.
    assert sum(map(len, refused)) > 0, "the stop came after the load"
    assert never_to_run
    handoffs = sum(1 for i in runs if i >= 0)
    assert handoffs >= HANDOFFS
    # Every accepted submission was taken by the loop (the IOThread's own
    # calls, as its stop, are counted too).
    assert aio.statistics().submitted >= len(all_accepted)
