"""The AioContext: wake-up suppression, polling, poll handlers, batching.

(That no wake-up is ever lost is tests/test_wakeups.py's.)

Each test runs on both loops: the stdlib loop goes through the selector
wrapper, uvloop through the self-rescheduling callback poller.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import os
import pathlib
import shlex
import shutil
import socket
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

import iothreads._aio
from iothreads import AioContextStatistics, IOThread, IOThreadStopped, PollHandler
from iothreads._aio import _inbox
from iothreads._aio._callback_poller import STEP_NS
from iothreads._aio._context import NATIVE_SPIN_SHARED
from iothreads._aio._wakeup import WakeupChannel

from .helpers import WAIT, FakeClock, LoopFactory, gate_loop, wait_until

#: A poll-max-ns so large that every round trip in a test grows the window.
HUGE_POLL_NS = 10**11
#: A window of a second: given it, the loop spins far longer than the test
#: needs to set a flag the spin must see.
SPINNING_NS = 10**9


def wake_a_sleeping_loop(io: IOThread) -> int:
    """Hand a sleeping loop a round trip, wait until it sleeps again, and
    return the window it adjusted from the sleep the round trip ended."""
    blocks = io.aio_context.statistics().blocks
    io.submit(lambda: None).result(WAIT)
    wait_until(lambda: io.aio_context.statistics().blocks > blocks, "the loop to sleep again")
    return io.aio_context.statistics().poll_ns


def use_a_fake_clock(io: IOThread) -> None:
    """Measure the window with a fake clock (a microsecond per reading) from
    a window of 0, and return once the loop sleeps: from then on what it
    measures no longer depends on the machine's speed."""
    aio = io.aio_context

    def reset() -> int:
        aio.clock = FakeClock()
        aio.spin_guard = False  # each spin runs its window out, as the sequences expect
        aio.window.poll_ns = 0
        return aio.statistics().blocks

    blocks = io.run_sync(reset)
    wait_until(lambda: aio.statistics().blocks > blocks, "the loop to sleep")


def set_window(io: IOThread, poll_ns: int) -> None:
    """Give the loop a polling window as if traffic had grown it: the loop's
    next way to sleep spins for *poll_ns* first (the guard, off, would end a
    spin whose CPU the test's threads share)."""
    io.run_sync(set_window_here, io.aio_context, poll_ns)


def set_window_here(aio: iothreads._aio.AioContext, poll_ns: int) -> None:
    """set_window(), in the loop's thread."""
    aio.spin_guard = False
    aio.window.poll_ns = poll_ns


def test_the_window_follows_the_block_time_the_loop_measures(loop_factory: LoopFactory) -> None:
    """QEMU's rule on the block times the loop itself measures.  With the
    fake clock a sleep takes no time, so a block is the spin through the
    whole window plus a few clock readings: a little longer than the window,
    so it grows (0, 4000, then doubling) until spin and readings together
    exceed poll-max-ns (32768), and the window drops to 0."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        use_a_fake_clock(io)
        windows = [wake_a_sleeping_loop(io) for _ in range(7)]
        assert windows == [4000, 8000, 16000, 32000, 0, 4000, 8000]
        stats = io.aio_context.statistics()
        assert stats.polls >= 5
        assert stats.poll_hits == 0  # every spin ran out: the round trips came in sleeps


def test_a_spin_never_delays_a_timer(loop_factory: LoopFactory) -> None:
    """With a window of 100 s, a timer due in 10 ms still fires: the stdlib
    loop spins for min(window, time to the next timer), uvloop runs its
    timers between spin steps."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS) as io:
        fired = threading.Event()

        def arm() -> None:
            io.aio_context.window.poll_ns = HUGE_POLL_NS  # as set_window() does
            asyncio.get_running_loop().call_later(0.01, fired.set)

        io.call_soon_threadsafe(arm)
        assert fired.wait(WAIT)


def test_awake_loop_suppresses_wakeups(loop_factory: LoopFactory) -> None:
    """While the loop is busy, producers only enqueue: no eventfd writes."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=0) as io:
        gate = gate_loop(io)
        before = io.aio_context.statistics()
        for _ in range(1000):
            io.call_soon_threadsafe(lambda: None)
        gate.set()
        io.submit(lambda: None).result(WAIT)
        # The loop counts the writes when it reads the channel, after the
        # gate: the 1000 wrote nothing, the last submission at most once.
        final = io.aio_context.statistics()
        assert final.wakeups_sent - before.wakeups_sent <= 1
        assert final.wakeups_suppressed - before.wakeups_suppressed >= 1000


def test_poll_max_ns_zero_disables_polling(loop_factory: LoopFactory) -> None:
    with IOThread("io1", loop_factory=loop_factory, poll_max_ns=0) as io:
        for _ in range(50):
            io.submit(lambda: None).result(WAIT)
        stats = io.aio_context.statistics()
        assert (stats.poll_ns, stats.polls, stats.spin_ns) == (0, 0, 0)


def share_the_cpu_in_every_spin(
    io: IOThread, implementation: str, *, then: Callable[[], object]
) -> AioContextStatistics:
    """From the loop's next way to sleep on, every spin learns after its
    first yield that another thread ran on its CPU, just after *then* ran
    (in the loop's thread); its window is HUGE_POLL_NS, the guard on.

    Returns the statistics as the loop's thread read them when it installed
    this: whatever the loop does after, not a sleep it took before (a
    baseline read by the test's thread may predate the loop's first sleep).
    """
    aio = io.aio_context

    def install() -> AioContextStatistics:
        if implementation == "native":  # the guard's detection is in C: stub the C spin

            def native_spin(duration_ns: int, fd: int) -> int:
                then()
                return NATIVE_SPIN_SHARED

            aio._native_spin = native_spin
        else:
            counts = itertools.count()

            def switches() -> int:
                n = next(counts)
                if n % 2:  # the reading after a yield
                    then()
                return n

            aio.switches = switches
        aio.spin_guard = True
        aio.window.poll_ns = HUGE_POLL_NS
        return aio.statistics()

    return io.run_sync(install)


def test_the_guard_ends_a_spin_whose_cpu_is_shared(
    loop_factory: LoopFactory, implementation: str
) -> None:
    """A spin whose yield ran another thread looks once more and gives up:
    the loop sleeps at once instead of spinning for its window (100 s, ten
    times the test's wait), the window stays as it was, and work still wakes
    the loop."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS) as io:
        before = share_the_cpu_in_every_spin(io, implementation, then=lambda: None)
        wait_until(lambda: io.aio_context.statistics().blocks > before.blocks, "the loop to sleep")
        stats = io.aio_context.statistics()
        assert stats.spins_shared - before.spins_shared == stats.polls - before.polls == 1
        assert stats.poll_hits == before.poll_hits
        assert stats.poll_ns == HUGE_POLL_NS  # QEMU's arithmetic saw no block time yet
        assert io.submit(lambda: "woken").result(WAIT) == "woken"


def test_the_guard_takes_one_more_look(loop_factory: LoopFactory, implementation: str) -> None:
    """Work the threads sharing the CPU handed over while the spin yielded
    ends the spin as a hit: the guard looks once more before it gives up."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS) as io:
        aio = io.aio_context
        caught: list[AioContextStatistics] = []  # as the phase that caught the work left them
        ran = threading.Event()

        def run() -> None:
            caught.append(aio.statistics())
            ran.set()

        def hand_over_once() -> None:  # in the loop's thread, as another thread would
            if not ran.is_set() and not caught:
                caught.append(aio.statistics())
                aio.call_soon_threadsafe(run)

        share_the_cpu_in_every_spin(io, implementation, then=hand_over_once)
        assert ran.wait(WAIT)
        before, after = caught
        assert after.poll_hits - before.poll_hits == 1
        assert after.spins_shared == before.spins_shared  # the look caught it: no giving up


@pytest.mark.implementations("python")  # the native spin reads the switches after every yield
def test_the_guard_reads_the_switches_as_a_short_spin_ends(loop_factory: LoopFactory) -> None:
    """A spin that ends before its GUARD_STEPS-th yield still reads the
    switches: uvloop's poller spins in steps of STEP_NS, and where each yield
    hands the CPU to a busy process for long, a step runs out after a yield
    or two.  Here the clock moves a quarter of a step per reading, and the
    loop still gives up its window (100 s) at once."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS) as io:
        aio = io.aio_context
        io.run_sync(setattr, aio, "clock", FakeClock(step_ns=STEP_NS // 4))
        before = share_the_cpu_in_every_spin(io, "python", then=lambda: None)
        wait_until(lambda: aio.statistics().blocks > before.blocks, "the loop to sleep")
        assert aio.statistics().spins_shared - before.spins_shared == 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_the_guard_sees_a_thread_running_on_the_spins_cpu(loop_factory: LoopFactory) -> None:
    """No stub: the loop's thread and a thread that keeps yielding share one
    CPU, so the spin's first yield runs that thread, and the guard ends the
    spin (of 100 s) at once, on either implementation."""
    cpu = min(os.sched_getaffinity(0))
    stop = threading.Event()

    def share_the_cpu() -> None:
        os.sched_setaffinity(0, {cpu})
        while not stop.is_set():
            os.sched_yield()

    with IOThread("io0", loop_factory=loop_factory, cpu_affinity={cpu}) as io:
        neighbour = threading.Thread(target=share_the_cpu)
        neighbour.start()
        try:
            aio = io.aio_context
            before = aio.statistics()
            io.run_sync(setattr, aio.window, "poll_ns", HUGE_POLL_NS)
            wait_until(lambda: aio.statistics().spins_shared > before.spins_shared, "the guard")
        finally:
            stop.set()
            neighbour.join(WAIT)


def test_a_spin_waits_for_what_the_callbacks_before_it_queue(loop_factory: LoopFactory) -> None:
    """A task that finishes as the loop starts to poll delivers its result
    before the loop spins: its done callbacks, which the task's step queues
    once the polling phase has begun, run before the first spin step."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS) as io:
        aio = io.aio_context
        order: list[str] = []
        spin = aio.spin

        def recording_spin(deadline_ns: int, fd: int = -1) -> bool:
            order.append("spin")
            return spin(deadline_ns, fd)

        async def noop() -> None:
            pass

        def start() -> None:
            aio.spin = recording_spin  # type: ignore[method-assign]
            set_window_here(aio, SPINNING_NS)
            task = asyncio.get_running_loop().create_task(noop())
            task.add_done_callback(lambda _: order.append("done"))

        io.call_soon_threadsafe(start)
        wait_until(lambda: "done" in order, "the task to finish")
        assert order[0] == "done"


def test_live_tuning_resets_the_window(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS) as io:
        set_window(io, 8000)
        io.poll_max_ns = 0
        # The reset is applied by the loop itself, after what was queued.
        io.submit(lambda: None).result(WAIT)
        assert io.aio_context.statistics().poll_ns == 0
        polls = io.aio_context.statistics().polls
        for _ in range(20):
            io.submit(lambda: None).result(WAIT)
        assert io.aio_context.statistics().polls == polls  # polling is off


def test_poll_handler_is_polled_during_the_spin(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS, poll_grow=1000) as io:
        flag = threading.Event()
        readied = threading.Event()
        calls: list[str] = []

        def poll() -> bool:
            return flag.is_set()

        def ready() -> None:
            calls.append("ready")
            flag.clear()
            readied.set()

        handler = io.aio_context.add_poll_handler(
            poll, ready, begin=lambda: calls.append("begin"), end=lambda: calls.append("end")
        )
        set_window(io, SPINNING_NS)
        # The loop is now spinning with a window far longer than our wait;
        # the flag is the only signal (no wake-up is written).
        # Read on the loop, after it drained the channel: a wake-up written
        # for an earlier call may be counted only after that call returned.
        wakeups = io.run_sync(lambda: io.aio_context.statistics().wakeups_sent, timeout=WAIT)
        flag.set()
        assert readied.wait(WAIT)
        assert io.aio_context.statistics().wakeups_sent == wakeups
        assert "begin" in calls
        assert "end" in calls
        assert calls.index("begin") < calls.index("ready")
        handler.remove()
        io.submit(lambda: None).result(WAIT)
        readied.clear()
        flag.set()
        io.submit(lambda: None).result(WAIT)  # a full iteration with the flag set
        assert not readied.is_set()


def test_poll_handler_brackets_come_in_pairs_when_handlers_change_mid_phase(
    loop_factory: LoopFactory,
) -> None:
    """A handler added during a polling phase gets no end() for it (its first
    begin() comes at the next phase); one removed during it gets no end()."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS, poll_grow=1000) as io:
        context = io.aio_context
        calls: list[str] = []

        def brackets(name: str) -> dict[str, Callable[[], object]]:
            return {
                "begin": lambda: calls.append(f"{name}.begin"),
                "end": lambda: calls.append(f"{name}.end"),
            }

        removed = context.add_poll_handler(lambda: False, lambda: None, **brackets("removed"))
        changed = threading.Event()

        def poll() -> bool:
            # Change the handlers once, inside a polling phase (begun for
            # "removed"), not in the re-check that follows a phase's end.
            if changed.is_set() or calls[-1:] != ["removed.begin"]:
                return False
            context.add_poll_handler(lambda: False, lambda: None, **brackets("added"))
            removed.remove()
            changed.set()
            return True

        context.add_poll_handler(poll, lambda: None)
        set_window(io, SPINNING_NS)
        wait_until(changed.is_set, "a poll() inside a phase")
        # A phase begun after the change, ended by a round trip's work.  A
        # round trip ends a phase only if it comes while the loop spins; one
        # that comes before the loop's next select() is served without a
        # phase, and the loop begins one once it has served it.
        wait_until(
            lambda: io.run_sync(lambda: calls.count("added.end")) >= 1,
            "a phase begun after the change to end",
        )
        added = [c for c in calls if c.startswith("added.")]
        assert added[0] == "added.begin"
        assert all(a != b for a, b in itertools.pairwise(added))  # alternate
        assert calls.count("removed.end") == calls.count("removed.begin") - 1


@pytest.mark.parametrize("removing_in", ["begin", "end"])
def test_a_poll_handler_removed_by_another_ones_bracket_is_not_called_again(
    loop_factory: LoopFactory, removing_in: str
) -> None:
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=0) as io:
        context = io.aio_context
        calls: list[str] = []
        removed: list[PollHandler] = []
        remover = {"begin": lambda: None, "end": lambda: None}
        remover[removing_in] = lambda: removed[0].remove()
        context.add_poll_handler(lambda: False, lambda: None, **remover)
        removed.append(
            context.add_poll_handler(
                lambda: False,
                lambda: None,
                begin=lambda: calls.append("begin"),
                end=lambda: calls.append("end"),
            )
        )

        def one_phase() -> list[str]:
            # poll-max-ns 0: the loop opens no phase of its own; this one is
            # opened and closed as the spin does.
            context.begin_polling()
            context.end_polling(time.monotonic_ns())
            return list(calls)

        # Removed before its begin(): never called.  Removed by an end() that
        # runs before its own: begun, but not called again.
        assert io.run_sync(one_phase) == ([] if removing_in == "begin" else ["begin"])


def test_a_poll_handler_removed_by_another_ones_ready_is_not_run(
    loop_factory: LoopFactory,
) -> None:
    """Both were found ready by the same poll; the first one's ready()
    removes the second, whose ready() then never runs."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=0) as io:
        context = io.aio_context
        calls: list[str] = []
        handlers: list[PollHandler] = []

        def first_ready() -> None:
            calls.append("first")
            handlers[1].remove()

        handlers.append(context.add_poll_handler(lambda: True, first_ready))
        handlers.append(context.add_poll_handler(lambda: True, lambda: calls.append("second")))

        def one_phase() -> list[str]:
            # poll-max-ns 0: the loop opens no phase of its own; this one
            # polls both handlers, then runs the ready ones as the loop does.
            context.begin_polling()
            assert context.poll_step()
            context.end_polling(time.monotonic_ns())
            context.drain()
            return list(calls)

        assert io.run_sync(one_phase) == ["first"]
        handlers[0].remove()


def test_stopping_mid_phase_ends_it(loop_factory: LoopFactory) -> None:
    """A stop that comes while the loop polls (on uvloop the spin is a queued
    callback that the stop outruns): the handlers still get their end()."""
    calls: list[str] = []
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS, poll_grow=1000) as io:
        io.aio_context.add_poll_handler(
            lambda: False,
            lambda: None,
            begin=lambda: calls.append("begin"),
            end=lambda: calls.append("end"),
        )
        set_window(io, SPINNING_NS)
        # Without the GIL the stop could otherwise be queued before the loop
        # looks for work, and no phase would begin.
        wait_until(lambda: "begin" in calls, "the polling phase to begin")
    assert calls.count("begin") == calls.count("end") > 0


def test_poll_handler_errors_go_to_the_exception_handler(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS, poll_grow=1000) as io:
        errors: list[BaseException] = []
        seen = threading.Event()
        assert io.loop is not None

        def handler(loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
            errors.append(ctx["exception"])
            seen.set()

        io.loop.set_exception_handler(handler)
        fire = threading.Event()

        def ready() -> float:
            fire.clear()
            return 1 / 0

        io.aio_context.add_poll_handler(fire.is_set, ready)
        set_window(io, SPINNING_NS)
        fire.set()
        assert seen.wait(WAIT)
        assert isinstance(errors[0], ZeroDivisionError)
        assert io.run_sync(lambda: "alive") == "alive"


def test_flood_does_not_starve_timers_or_sockets(loop_factory: LoopFactory) -> None:
    """aio-max-batch: the inbox never empties, yet timers and I/O are served.

    Each flood callback re-queues itself through the inbox, so a loop that
    drained the inbox until empty would never get to anything else.
    """
    with IOThread("io0", loop_factory=loop_factory, aio_max_batch=8) as io:
        flooding = True
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        timer_ticks = 0
        echoes = 0
        served = threading.Event()

        def flood() -> None:
            if flooding:
                io.call_soon_threadsafe(flood)

        def check() -> None:
            if timer_ticks >= 20 and echoes >= 20:
                served.set()

        def tick() -> None:
            nonlocal timer_ticks
            timer_ticks += 1
            check()
            assert io.loop is not None
            io.loop.call_later(0.0001, tick)

        def on_readable() -> None:
            nonlocal echoes
            b.recv(1)
            echoes += 1
            check()
            a.send(b"x")

        def setup() -> None:
            assert io.loop is not None
            io.loop.add_reader(b.fileno(), on_readable)
            io.loop.call_later(0.0001, tick)
            a.send(b"x")
            for _ in range(200):
                io.call_soon_threadsafe(flood)

        try:
            io.call_soon_threadsafe(setup)
            assert served.wait(WAIT), (timer_ticks, echoes)
            assert io.aio_context.statistics().max_batch == 8
        finally:
            flooding = False
            assert io.loop is not None
            io.run_sync(io.loop.remove_reader, b.fileno())
            a.close()
            b.close()


def test_batch_change_keeps_the_window(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS) as io:
        set_window(io, 8000)
        io.aio_max_batch = 7
        stats = io.run_sync(io.aio_context.statistics)  # applied in order before this
        assert stats.max_batch == 7
        assert stats.poll_ns >= 8000


@pytest.mark.parametrize(("max_batch", "marker_at"), [(0, 100), (8, 8)])
def test_a_pass_runs_what_was_queued_when_it_began(
    loop_factory: LoopFactory, max_batch: int, marker_at: int
) -> None:
    """QEMU's aio_bh_poll rule: a pass of the inbox runs everything queued
    when it began (aio-max-batch 0), or that many of them; what arrives
    during the pass, and what the loop schedules meanwhile, comes after."""
    with IOThread("io0", loop_factory=loop_factory, aio_max_batch=max_batch) as io:
        assert io.aio_context.statistics().max_batch == max_batch
        order: list[object] = []
        gate = gate_loop(io)

        def first() -> None:
            order.append(0)
            asyncio.get_running_loop().call_soon(order.append, "marker")
            io.call_soon_threadsafe(order.append, "late")  # arrives during the pass

        io.call_soon_threadsafe(first)
        for i in range(1, 100):
            io.call_soon_threadsafe(order.append, i)
        gate.set()  # the 100 arrived during the gate's pass: they make the next one
        # The first round trip may land in the pass of the 100, before the
        # marker; the second lands after it.
        io.run_sync(lambda: None)
        io.run_sync(lambda: None)
        assert order.index("marker") == marker_at
        assert [x for x in order if x != "marker"] == [*range(100), "late"]


def test_work_a_callback_hands_over_runs_after_what_it_queued_before(
    loop_factory: LoopFactory,
) -> None:
    """First in, first out within one thread: a callback of the loop queues X
    (``call_soon``), then hands W over through the inbox, without a wake-up
    (the loop is awake).  X runs first, as with the loop's own
    ``call_soon_threadsafe``; the stdlib wrapper serves the inbox before the
    loop's batch only when nothing is queued."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS) as io:
        order: list[str] = []
        done = threading.Event()

        def there() -> None:
            asyncio.get_running_loop().call_soon(order.append, "X")
            io.call_soon_threadsafe(order.append, "W")
            io.call_soon_threadsafe(done.set)

        io.call_soon_threadsafe(there)
        assert done.wait(WAIT)
        assert order == ["X", "W"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_cpu_affinity(loop_factory: LoopFactory) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    first = {allowed[0]}
    with IOThread("io0", loop_factory=loop_factory, cpu_affinity=first) as io:
        assert io.run_sync(os.sched_getaffinity, 0) == first
        assert io.aio_context.statistics().cpu_affinity == frozenset(first)
        io.cpu_affinity = set(allowed)
        assert io.run_sync(os.sched_getaffinity, 0) == set(allowed)
        io.cpu_affinity = None  # None: back to the CPUs the thread inherited
        assert io.cpu_affinity is None
        io.submit(lambda: None).result(WAIT)  # applied by the loop, in order
        assert io.aio_context.statistics().cpu_affinity is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_cpu_affinity_written_before_the_start_is_applied_by_it(loop_factory: LoopFactory) -> None:
    first = {min(os.sched_getaffinity(0))}
    io = IOThread("io0", loop_factory=loop_factory)
    io.cpu_affinity = first
    with io:
        assert io.run_sync(os.sched_getaffinity, 0) == first
        assert io.aio_context.statistics().cpu_affinity == frozenset(first)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_cpu_affinity_none_leaves_an_unpinned_thread_where_it_is(loop_factory: LoopFactory) -> None:
    """None undoes the IOThread's own pinning only: a thread it never pinned,
    placed by someone else (taskset, say), stays where that put it."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs to tell a placement from the default")
    with IOThread("io0", loop_factory=loop_factory) as io:
        os.sched_setaffinity(io.thread_id, {allowed[0]})
        io.cpu_affinity = None
        io.submit(lambda: None).result(WAIT)  # applied by the loop, in order
        assert io.run_sync(os.sched_getaffinity, 0) == {allowed[0]}


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_cpu_affinity_rejects_bad_sets() -> None:
    io = IOThread("io0")
    with pytest.raises(ValueError, match="cpu_affinity must not be empty"):
        io.cpu_affinity = set()
    missing = os.cpu_count() or 1  # ids run from 0: one past the last
    with pytest.raises(ValueError, match=f"CPU {missing} is not allowed to this process"):
        IOThread("io1", cpu_affinity={missing})
    with pytest.raises(TypeError, match="cpu_affinity must be a set of CPU ids or None"):
        io.cpu_affinity = {"0"}  # type: ignore[arg-type]
    assert io.cpu_affinity is None


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("failing", ["poll", "begin", "end"])
def test_a_raising_poll_handler_never_stops_the_loop(
    loop_factory: LoopFactory, failing: str, error: type[BaseException]
) -> None:
    """Whatever a handler raises, SystemExit and KeyboardInterrupt included,
    is reported as the handler's, and the polling phase goes on (docs/design.md,
    "BaseException in an IOThread")."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=HUGE_POLL_NS, poll_grow=1000) as io:
        errors: list[BaseException] = []
        messages: list[str] = []

        def handler(loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
            errors.append(ctx["exception"])
            messages.append(ctx["message"])

        assert io.loop is not None
        io.loop.set_exception_handler(handler)

        def boom() -> bool:
            raise error(failing)

        methods: dict[str, Callable[[], object]] = {
            "poll": lambda: False,
            "begin": lambda: None,
            "end": lambda: None,
        }
        methods[failing] = boom
        io.aio_context.add_poll_handler(
            methods["poll"],  # type: ignore[arg-type]
            lambda: None,
            begin=methods["begin"],
            end=methods["end"],
        )
        set_window(io, 8000)  # the next way to sleep spins, calling the handler
        assert io.run_sync(lambda: "alive") == "alive"
        # The phase that calls the handler may end after run_sync() returned
        # (its caller's thread runs on meanwhile, really so without the GIL).
        wait_until(lambda: errors, "the handler's error to be reported")
        assert all(type(e) is error for e in errors)
        assert all(m == f"Exception in poll handler {failing}()" for m in messages)
        assert io.run_sync(lambda: "still serving") == "still serving"


# -- the wake-up channel -------------------------------------------------------------

needs_eventfd = pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux's")


@needs_eventfd
def test_a_closed_wakeup_channel_leaves_a_reused_descriptor_alone() -> None:
    """A producer may wake a loop just as it closes: once closed, the channel
    neither writes to nor closes its old number, which the next descriptor
    the process opens (here, at once) may well reuse."""
    channel = WakeupChannel()
    channel.close()
    assert channel.fileno() == -1
    reused = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        channel.wake()
        channel.close()  # twice: nothing more to close
        os.fstat(reused)  # still open
        with pytest.raises(BlockingIOError):
            os.eventfd_read(reused)  # nothing was written to it
    finally:
        os.close(reused)


@needs_eventfd
def test_a_full_wakeup_channel_takes_another_wakeup_silently() -> None:
    """The counter at its maximum: one more wake-up would block, and a wake-up
    is pending anyway, so it is dropped, not raised to the producer."""
    channel = WakeupChannel()
    try:
        most = 2**64 - 2  # an eventfd counter's largest value
        os.eventfd_write(channel.fileno(), most)
        channel.wake()
        assert channel.drain() == most
        assert channel.drain() == 0
    finally:
        channel.close()


def test_the_selector_wrapper_answers_for_what_the_loop_registered() -> None:
    """The stdlib loop looks its readers up through the wrapped selector:
    with get_key() before Python 3.12, with get_map() since."""
    ours, theirs = socket.socketpair()
    with IOThread("io0", loop_factory=asyncio.new_event_loop) as io, ours, theirs:
        loop = io.loop
        assert loop is not None

        def registered() -> tuple[int, bool]:
            selector = loop._selector  # type: ignore[attr-defined]
            loop.add_reader(ours, lambda: None)
            try:
                return selector.get_key(ours).fd, ours.fileno() in selector.get_map()
            finally:
                loop.remove_reader(ours)

        assert io.run_sync(registered) == (ours.fileno(), True)


# -- the inbox: its implementations, the loop's way to sleep, debug mode -------------------


def test_the_native_core_is_left_out_when_turned_off_or_not_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Either way the pure-Python inbox serves: IOTHREADS_NO_EXTENSIONS, or
    an install where nothing compiled."""
    monkeypatch.setenv("IOTHREADS_NO_EXTENSIONS", "1")
    assert _inbox._load_native() is None
    monkeypatch.delenv("IOTHREADS_NO_EXTENSIONS")
    monkeypatch.delattr(iothreads._aio, "_core", raising=False)
    monkeypatch.setitem(sys.modules, "iothreads._aio._core", None)  # not built
    assert _inbox._load_native() is None


def test_the_native_core_is_built_wherever_a_compiler_is() -> None:
    """The extension is optional: where it fails to build, the package
    installs without it and pip's log alone says so.  Where the compiler
    setuptools uses and the interpreter's headers are present, it must have
    built, and be the inbox used unless turned off (IOTHREADS_NO_EXTENSIONS
    chooses at import, not at build: the module is there either way)."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "")
    if not compiler or shutil.which(compiler[0]) is None:
        pytest.skip(f"no C compiler on PATH ({compiler[0] if compiler else 'CC unset'})")
    headers = pathlib.Path(sysconfig.get_paths()["include"], "Python.h")
    if not headers.exists():
        pytest.skip(f"no Python headers ({headers})")
    core = importlib.import_module("iothreads._aio._core")  # fails where it did not build
    turned_off = bool(os.environ.get("IOTHREADS_NO_EXTENSIONS"))
    assert _inbox.native_core is (None if turned_off else core)


@pytest.mark.implementations("python")
def test_the_locked_inbox_of_free_threaded_builds(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a GIL the pure-Python inbox takes a lock for its steps; it
    keeps the inbox's contract (checked here on any build): calls run in
    order, a sleeping loop is woken, and once the stop has closed the inbox
    a call is refused."""
    monkeypatch.setattr(_inbox, "_FREE_THREADED", True)
    with IOThread("io0", loop_factory=loop_factory) as io:
        aio = io.aio_context
        assert isinstance(aio._inbox, _inbox.LockedPyInbox)
        ran: list[int] = []
        for i in range(100):
            io.call_soon_threadsafe(ran.append, i)
        io.run_sync(io.call_soon_threadsafe, ran.append, 100)  # from the loop, awake
        io.submit(lambda: None).result(WAIT)
        assert ran == list(range(101))
        wake_a_sleeping_loop(io)  # from then on it sleeps
        wakeups = aio.statistics().wakeups_sent
        assert io.submit(lambda: "woken").result(WAIT) == "woken"
        assert aio.statistics().wakeups_sent > wakeups
    with pytest.raises(IOThreadStopped, match="'io0' is stopped; it takes no more work"):
        aio.call_soon_threadsafe(ran.append, -1)
    assert -1 not in ran


def test_the_loop_does_not_sleep_while_a_poll_handler_is_ready(loop_factory: LoopFactory) -> None:
    """A handler found ready when the loop announces its sleep: no sleep,
    the handler's ready() runs first."""
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=0) as io:
        context = io.aio_context
        calls: list[str] = []
        handler = context.add_poll_handler(lambda: True, lambda: calls.append("ready"))

        def about_to_sleep() -> tuple[bool, list[str]]:
            context.begin_polling()
            assert context.poll_step()  # the handler is found ready
            context.end_polling(time.monotonic_ns())
            may_sleep = context.prepare_to_block()
            context.drain()
            return may_sleep, list(calls)

        assert io.run_sync(about_to_sleep) == (False, ["ready"])
        handler.remove()


def test_in_debug_mode_a_failing_callback_is_reported_with_where_it_was_submitted(
    loop_factory: LoopFactory,
) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        assert io.loop is not None
        io.run_sync(io.loop.set_debug, True)
        reported: list[dict[str, object]] = []
        done = threading.Event()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            reported.append(context)
            done.set()

        io.run_sync(io.loop.set_exception_handler, handler)

        def fails() -> None:
            raise ValueError("in a callback")

        io.call_soon_threadsafe(fails)  # submitted here
        assert done.wait(WAIT)
        source = reported[0]["source_traceback"]
        assert isinstance(source, traceback.StackSummary)
        # Innermost last: the line that submitted (the running IOThread's
        # call_soon_threadsafe is the inbox's own, which has no frame).
        innermost = source[-1]
        assert (innermost.name, innermost.line) == (
            "test_in_debug_mode_a_failing_callback_is_reported_with_where_it_was_submitted",
            "io.call_soon_threadsafe(fails)  # submitted here",
        )
        assert isinstance(reported[0]["exception"], ValueError)
