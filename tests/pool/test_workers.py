"""ThreadPool's workers: spawned on demand by the spawner, woken most recently
idle first and one at a time, timed out when idle, resized by the limits.

Deterministic, as test_contract.py: nothing asserts on how long anything took.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import Future

import pytest

from iothreads._pool import ThreadPool
from iothreads._pool._worker import Worker

from ..helpers import (
    BOUND,
    Gate,
    Pools,
    blocker,
    line_of,
    occupy,
    pool_threads,
    thread_name,
    wait_until,
    watch_spawner,
    workers,
)

# Idle timeout small enough for shrink tests to be quick (the poll in
# wait_until makes the test independent of how quickly it really happens).
TINY = 0.01


def idle_workers(pool: ThreadPool, n: int) -> Callable[[], bool]:
    """For wait_until: whether *pool* has *n* idle workers."""
    return lambda: pool.statistics().idle == n


# ------------------------------------------------------------------- spawning


def test_spawns_on_demand_up_to_max_then_queues(pools: Pools) -> None:
    pool = pools.new(0, 2, name="grow")
    gate = pools.gate()
    first_started, second_started = threading.Event(), threading.Event()
    first = pool.submit(blocker(gate, first_started))
    assert first_started.wait(BOUND)
    second = pool.submit(blocker(gate, second_started))
    assert second_started.wait(BOUND)  # a second worker: the first was busy
    third = pool.submit(thread_name)
    stats = pool.statistics()
    assert (stats.threads, stats.active, stats.queued, stats.spawned) == (2, 2, 1, 2)
    gate.set()
    names = {first.result(BOUND), second.result(BOUND), third.result(BOUND)}
    assert names <= {"grow-1", "grow-2"}
    assert pool.statistics().peak == 2


@pytest.mark.interleaving
@pytest.mark.parametrize("min_threads", [1, 2])
def test_the_constructor_waits_for_its_min_workers_to_boot(
    pools: Pools, monkeypatch: pytest.MonkeyPatch, min_threads: int
) -> None:
    """Workers whose threads have started but not reached their first wait:
    the constructor waits for them, so that when it returns every min worker
    is idle and no request meets a thread still booting.  (With one worker,
    the constructor is woken by that worker alone, as the last to boot.)"""
    go = threading.Event()
    real_main = Worker._main

    def slow_boot(worker: Worker, idle: bool) -> None:
        assert go.wait(BOUND)
        real_main(worker, idle)

    monkeypatch.setattr(Worker, "_main", slow_boot)
    waiting = Gate(marks=[line_of(ThreadPool.__init__, "self._booted.wait()")])
    made: list[ThreadPool] = []

    def construct() -> None:
        waiting.install()
        try:
            made.append(pools.new(min_threads, 2, name="seed"))
        finally:
            waiting.uninstall()

    constructor = threading.Thread(target=construct, daemon=True)  # never left waiting
    constructor.start()
    try:
        assert waiting.stopped.wait(BOUND)  # waiting for the workers
        assert made == []
    finally:
        go.set()
        constructor.join(BOUND)
    assert not constructor.is_alive()
    stats = made[0].statistics()
    assert (stats.threads, stats.idle) == (min_threads, min_threads)


@pytest.mark.interleaving
def test_the_min_workers_are_idle_from_their_start(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The constructor puts its min workers on the idle stack before their
    threads run, so they are idle the moment it returns: even a worker held
    up right after it booted, before it ever looked at the queue."""
    real_main = Worker._main
    booted = line_of(real_main, "finished: Request | None = None")  # the line after
    held: list[Gate] = []
    lock = threading.Lock()

    def held_after_boot(worker: Worker, idle: bool) -> None:
        gate = Gate(booted)
        with lock:
            held.append(gate)
        gate.install()
        try:
            real_main(worker, idle)
        finally:
            gate.uninstall()

    monkeypatch.setattr(Worker, "_main", held_after_boot)
    try:
        pool = pools.new(2, 2, name="held")
        assert all(gate.stopped.wait(BOUND) for gate in held)
        stats = pool.statistics()
        assert (stats.threads, stats.idle) == (2, 2)
    finally:
        for gate in held:
            gate.go_on()
    assert pool.submit(thread_name).result(BOUND) == "held-1"  # the top of the stack


def test_submit_does_not_wait_for_a_thread_to_be_created(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stall every worker start; submit() must return anyway, and the start
    # must happen in the spawner thread, not in the submitter.
    real_start = threading.Thread.start
    may_start = pools.gate()
    starters: list[str] = []

    def stalled_start(thread: threading.Thread) -> None:
        if thread.name.startswith("lazy-") and thread.name[5:].isdigit():
            starters.append(thread_name())
            assert may_start.wait(BOUND)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", stalled_start)
    pool = pools.new(0, 4, name="lazy")
    future = pool.submit(pow, 2, 5)
    assert not future.done()
    stats = pool.statistics()
    assert (stats.threads, stats.queued, stats.idle) == (1, 1, 0)
    wait_until(lambda: starters == ["lazy-spawner"])
    may_start.set()
    assert future.result(BOUND) == 32


def test_a_burst_larger_than_the_idle_workers_spawns_up_to_max(pools: Pools) -> None:
    # 2 idle workers, 6 requests that each wait for all the others: the 4
    # requests no idle worker will come for must each get a new worker at
    # submit time (QEMU spawns per request that finds no idle worker), or the
    # barrier never fills and the bounded waits fail.
    pool = pools.new(2, 8, name="grow")
    together = threading.Barrier(6)
    futures = [pool.submit(together.wait, BOUND) for _ in range(6)]
    assert sorted(f.result(BOUND) for f in futures) == [0, 1, 2, 3, 4, 5]
    stats = pool.statistics()
    assert (stats.spawned, stats.peak) == (6, 6)


def test_a_min_zero_pool_has_no_thread_until_a_worker_is_needed(pools: Pools) -> None:
    before = set(threading.enumerate())
    pool = pools.new(0, 4, name="unused")
    assert set(threading.enumerate()) == before  # not even the spawner
    pool.set_limits(0, 8)  # a change that needs no worker starts nothing either
    assert set(threading.enumerate()) == before
    # The first submit works: it starts the spawner, which starts the worker.
    assert pool.submit(pow, 2, 5).result(BOUND) == 32
    assert pool_threads("unused") == ["unused-1", "unused-spawner"]
    assert pool.statistics().spawned == 1


def test_shutdown_of_a_never_used_pool(pools: Pools) -> None:
    before = set(threading.enumerate())
    pool = pools.new(name="never")
    pool.shutdown(wait=True)
    assert set(threading.enumerate()) == before
    with pytest.raises(RuntimeError, match="'never': it is shut down"):
        pool.submit(pow, 2, 2)
    pool.set_limits(2, 4)  # recorded, but a shut-down pool starts nothing
    assert set(threading.enumerate()) == before
    stats = pool.statistics()
    assert (stats.min, stats.threads, stats.spawned) == (2, 0, 0)
    pool.shutdown(wait=True)  # again: harmless


def test_raising_min_on_an_unused_pool_starts_the_spawner(pools: Pools) -> None:
    pool = pools.new(0, 4, name="late")
    pool.min_threads = 2
    wait_until(lambda: pool_threads("late") == ["late-1", "late-2", "late-spawner"])
    assert pool.submit(pow, 2, 2).result(BOUND) == 4
    assert pool.statistics().spawned == 2


def test_a_pool_with_min_workers_starts_its_spawner_with_them(pools: Pools) -> None:
    # Its first request beyond min then finds a spawner already running.
    pools.new(1, 4, name="ready")
    assert pool_threads("ready") == ["ready-1", "ready-spawner"]


def test_the_pool_threads_are_daemons(pools: Pools) -> None:
    """A pool never shut down does not hold the interpreter at exit: its
    min workers and its spawner would wait for work forever."""
    pools.new(1, 4, name="daemon")
    threads = [t for t in threading.enumerate() if t.name.startswith("daemon-")]
    assert sorted(t.name for t in threads) == ["daemon-1", "daemon-spawner"]
    assert all(t.daemon for t in threads)


# ------------------------------------------------ the idle stack and wake-ups


def test_idle_workers_are_reused_most_recently_idle_first(pools: Pools) -> None:
    pool = pools.new(0, 3, name="lifo")
    gates = [pools.gate() for _ in range(3)]
    futures = [pool.submit(blocker(gate)) for gate in gates]
    wait_until(lambda: pool.statistics().active == 3)
    # Let them go idle one at a time: 0 first, 2 last.
    for n, gate in enumerate(gates, start=1):
        gate.set()
        wait_until(idle_workers(pool, n))
    order = [f.result(0) for f in futures]
    assert pool.submit(thread_name).result(BOUND) == order[2]
    # Hold the most recent one busy: the next request goes to the one below.
    hold = pools.gate()
    busy = pool.submit(blocker(hold))
    wait_until(lambda: pool.statistics().active == 1)
    assert pool.submit(thread_name).result(BOUND) == order[1]
    hold.set()
    assert busy.result(BOUND) == order[2]
    assert pool.statistics().spawned == 3


def test_a_worker_started_idle_goes_to_the_bottom_of_the_stack(pools: Pools) -> None:
    """A worker started by raising min is idle before its thread runs: it
    goes below the workers already idle, which are woken first."""
    pool = pools.new(0, 3, idle_timeout=3600.0, name="bottom")
    gates = [pools.gate() for _ in range(2)]
    futures = [pool.submit(blocker(gate)) for gate in gates]
    wait_until(lambda: pool.statistics().active == 2)
    order = []
    for n, gate in enumerate(gates, start=1):  # they go idle one after the other
        gate.set()
        order.append(futures[n - 1].result(BOUND))
        wait_until(idle_workers(pool, n))
    pool.min_threads = 3  # the spawner makes bottom-3, started idle
    wait_until(lambda: pool.statistics().idle == 3, "the spawner's top-up")
    hold = pools.gate()
    started = [threading.Event() for _ in range(3)]
    busy = [pool.submit(blocker(hold, event)) for event in started]
    for event in started:
        assert event.wait(BOUND)
    hold.set()
    assert [f.result(BOUND) for f in busy] == [order[1], order[0], "bottom-3"]


def stall_starts(pools: Pools, monkeypatch: pytest.MonkeyPatch, names: set[str]) -> threading.Event:
    """Make the start of the threads called *names* wait for the returned gate."""
    real_start = threading.Thread.start
    may_start = pools.gate()

    def stalled_start(thread: threading.Thread) -> None:
        if thread.name in names:
            assert may_start.wait(BOUND)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", stalled_start)
    return may_start


def test_a_submit_wakes_an_idle_worker_only_when_none_is_on_its_way(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two idle workers whose threads cannot run yet: a woken one stays "on
    # its way" to the queue for as long as the test wants.
    # way-1 runs and is idle; way-2, below it, is stuck being started.
    may_start = stall_starts(pools, monkeypatch, {"way-2"})
    pool = pools.new(1, 2, name="way")
    pool.min_threads = 2
    wait_until(lambda: pool.statistics().idle == 2)
    gate, started = pools.gate(), threading.Event()
    busy = pool.submit(blocker(gate, started))  # way-1, the top of the stack
    assert started.wait(BOUND)
    futures = [pool.submit(thread_name) for _ in range(3)]
    stats = pool.statistics()
    # The first submit woke way-2; the others found it on its way.
    assert (stats.idle, stats.queued, stats.active, stats.threads) == (0, 3, 1, 2)
    may_start.set()
    assert {f.result(BOUND) for f in futures} == {"way-2"}
    gate.set()
    assert busy.result(BOUND) == "way-1"
    wait_until(lambda: pool.statistics().idle == 2)
    stats = pool.statistics()
    assert (stats.completed, stats.spawned, stats.queued, stats.active) == (4, 2, 0, 0)


def test_workers_started_idle_count_once_for_the_queue(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two idle workers whose threads cannot start yet, one of them woken:
    # each counts once against the queue (on the idle stack, or as woken),
    # not again as a worker waiting for the spawner, so the third request
    # gets a worker of its own.
    may_start = stall_starts(pools, monkeypatch, {"once-1", "once-2"})
    pool = pools.new(0, 4, name="once")
    pool.set_limits(2, 4)
    futures = [pool.submit(thread_name) for _ in range(2)]
    assert pool.statistics().spawned == 2  # the two idle ones come for these
    futures.append(pool.submit(thread_name))
    assert pool.statistics().spawned == 3
    may_start.set()
    assert {f.result(BOUND) for f in futures} <= {"once-1", "once-2", "once-3"}


def test_a_worker_that_finishes_drains_the_queue(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker woken for the queue cannot run: the busy one, once free,
    # takes every queued request before it goes idle.
    may_start = stall_starts(pools, monkeypatch, {"sink-2"})
    pool = pools.new(0, 2, name="sink")
    gate, started = pools.gate(), threading.Event()
    first = pool.submit(blocker(gate, started))
    assert started.wait(BOUND)
    pool.min_threads = 2  # sink-2: idle, its thread not started
    wait_until(lambda: pool.statistics().idle == 1)
    queued = [pool.submit(thread_name) for _ in range(3)]
    stats = pool.statistics()
    assert (stats.idle, stats.queued, stats.active) == (0, 3, 1)
    gate.set()
    assert first.result(BOUND) == "sink-1"
    assert [f.result(BOUND) for f in queued] == ["sink-1"] * 3
    may_start.set()  # sink-2 wakes up to an empty queue and goes idle
    wait_until(lambda: pool.statistics().idle == 2)
    stats = pool.statistics()
    assert (stats.completed, stats.spawned, stats.exited) == (4, 2, 0)


def test_a_burst_of_blocking_requests_spreads_over_the_idle_workers(pools: Pools) -> None:
    # Each request waits for all the others: they can only finish if every
    # idle worker was woken, one after another, by those woken before it.
    pool = pools.new(4, 4, name="spread")
    together = threading.Barrier(4)
    futures = [pool.submit(together.wait, BOUND) for _ in range(4)]
    assert sorted(f.result(BOUND) for f in futures) == [0, 1, 2, 3]
    assert pool.statistics().spawned == 4


@pytest.mark.parametrize(
    ("lo", "hi", "idle_timeout"),
    [(0, 3, 0.001), (2, 2, 10.0), (1, 8, 0.001), (0, 1, 0.001)],
    ids=["shrinking", "fixed", "wide", "single"],
)
def test_no_request_is_stranded_under_racing_submitters(
    pools: Pools, lo: int, hi: int, idle_timeout: float
) -> None:
    # Many submitters with random gaps, against workers that go idle, time
    # out, get woken and spawned all the while: a lost wake-up would leave a
    # request queued with every worker asleep, and its bounded wait fails.
    pool = pools.new(lo, hi, idle_timeout=idle_timeout, name="storm")
    submitters, per_submitter = 6, 150
    start = threading.Barrier(submitters)
    errors: list[BaseException] = []

    def work(n: int) -> int:
        return sum(range(n))

    def submitter(seed: int) -> None:
        rng = random.Random(seed)
        pause = threading.Event()  # never set: bounded pauses
        pending: list[tuple[int, Future[int]]] = []
        try:
            start.wait(BOUND)
            for _ in range(per_submitter):
                n = rng.randrange(0, 2000)
                pending.append((n, pool.submit(work, n)))
                if rng.random() < 0.3:
                    pause.wait(rng.uniform(0, 0.002))
                if rng.random() < 0.5 or len(pending) > 8:
                    for k, future in pending:
                        assert future.result(BOUND) == sum(range(k))
                    pending.clear()
            for k, future in pending:
                assert future.result(BOUND) == sum(range(k))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(seed,)) for seed in range(submitters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(4 * BOUND)
    assert not [t for t in threads if t.is_alive()]
    assert errors == []
    stats = pool.statistics()
    assert (stats.completed, stats.queued, stats.active) == (submitters * per_submitter, 0, 0)
    assert lo <= stats.threads <= hi
    assert stats.threads == stats.spawned - stats.exited


# -------------------------------------------------------- idleness and limits


def test_idle_workers_above_min_exit_after_the_idle_timeout(pools: Pools) -> None:
    pool = pools.new(1, 4, idle_timeout=TINY, name="shrink")
    gate, _ = occupy(pools, pool, 4)
    assert pool.statistics().threads == 4
    gate.set()
    wait_until(lambda: pool.statistics().threads == 1)
    wait_until(lambda: len(workers("shrink")) == 1)
    stats = pool.statistics()
    assert (stats.idle, stats.spawned, stats.exited, stats.peak) == (1, 4, 3, 4)
    # The min worker outlives many more timeouts.
    threading.Event().wait(20 * TINY)
    assert pool.statistics().threads == 1
    assert len(workers("shrink")) == 1


@pytest.mark.interleaving
@pytest.mark.parametrize("taken_by", ["a submit", "shutdown"])
def test_a_worker_taken_off_the_stack_as_its_idle_wait_times_out(
    pools: Pools, taken_by: str
) -> None:
    """Its wait has just timed out when a submit summons it (or shutdown
    retires it), before it takes the lock: it does what it was taken for,
    and is neither lost nor counted twice."""
    pool = pools.new(1, 1, idle_timeout=TINY, name="late")
    timed_out = Gate(line_of(Worker._idle_wait, "with pool._lock:"))
    pool.submit(timed_out.install).result(BOUND)  # traces the worker from now on
    try:
        assert timed_out.stopped.wait(BOUND)  # timed out, not at the lock yet
        if taken_by == "a submit":
            future = pool.submit(thread_name)
        else:
            pool.shutdown(wait=False)
    finally:
        timed_out.go_on()
    if taken_by == "a submit":
        assert future.result(BOUND) == "late-1"
        stats = pool.statistics()
        assert (stats.threads, stats.spawned, stats.exited) == (1, 1, 0)
    else:
        pool.shutdown(wait=True)
        assert pool_threads("late") == []
        stats = pool.statistics()
        assert (stats.threads, stats.spawned, stats.exited) == (0, 1, 1)


def test_a_pool_with_min_zero_shrinks_to_nothing(pools: Pools) -> None:
    pool = pools.new(0, 4, idle_timeout=TINY, name="empty")
    assert pool.submit(pow, 2, 2).result(BOUND) == 4
    wait_until(lambda: pool.statistics().threads == 0)
    wait_until(lambda: workers("empty") == [])
    assert pool.submit(pow, 2, 3).result(BOUND) == 8  # and grows again


def test_raising_min_starts_the_missing_workers_at_once(pools: Pools) -> None:
    pool = pools.new(0, 4, name="raise")
    pool.set_limits(3, 4)
    assert pool.statistics().min == 3
    wait_until(lambda: len(workers("raise")) == 3)
    stats = pool.statistics()
    assert (stats.threads, stats.idle, stats.spawned) == (3, 3, 3)
    pool.min_threads = 4
    wait_until(lambda: len(workers("raise")) == 4)
    assert pool.statistics().spawned == 4


def test_lowering_min_lets_the_surplus_time_out(pools: Pools) -> None:
    pool = pools.new(3, 4, idle_timeout=TINY, name="lower")
    pool.min_threads = 1
    wait_until(lambda: pool.statistics().threads == 1)
    wait_until(lambda: len(workers("lower")) == 1)


def test_lowering_max_retires_idle_workers_promptly(pools: Pools) -> None:
    # The idle timeout is far beyond the bounded wait: only retirement can
    # make the workers go.
    pool = pools.new(4, 4, idle_timeout=3600.0, name="cut")
    pool.set_limits(0, 1)
    stats = pool.statistics()
    assert (stats.threads, stats.idle, stats.exited, stats.max) == (1, 1, 3, 1)
    wait_until(lambda: len(workers("cut")) == 1)
    assert pool.submit(pow, 2, 2).result(BOUND) == 4


def test_lowering_max_retires_the_coldest_idle_worker(pools: Pools) -> None:
    """The idle stack's bottom goes first: the worker idle the longest, whose
    caches are coldest; the recently idle ones stay."""
    pool = pools.new(0, 3, idle_timeout=3600.0, name="cold")
    gates = [pools.gate() for _ in range(3)]
    futures = [pool.submit(blocker(gate)) for gate in gates]
    wait_until(lambda: pool.statistics().active == 3)
    order = []
    for n, gate in enumerate(gates, start=1):  # they go idle one after the other
        gate.set()
        order.append(futures[n - 1].result(BOUND))
        wait_until(idle_workers(pool, n))
    pool.max_threads = 2
    coldest = order[0]
    wait_until(lambda: coldest not in workers("cold"), f"{coldest} to exit")
    assert workers("cold") == sorted(order[1:])


def test_lowering_max_retires_busy_workers_when_they_finish(pools: Pools) -> None:
    pool = pools.new(0, 3, idle_timeout=3600.0, name="busy")
    gate, futures = occupy(pools, pool, 3)
    pool.max_threads = 1
    assert pool.statistics().threads == 3  # busy: they finish first
    gate.set()
    assert all(f.result(BOUND).startswith("busy-") for f in futures)
    wait_until(lambda: pool.statistics().threads == 1)
    wait_until(lambda: len(workers("busy")) == 1)
    assert pool.statistics().exited == 2


def test_busy_workers_above_a_lowered_max_get_no_help(pools: Pools) -> None:
    """While the busy workers are still more than the new max, the queued
    requests, and those submitted meanwhile, wait for them: no worker is
    started for them."""
    pool = pools.new(0, 3, idle_timeout=3600.0, name="over")
    gate, futures = occupy(pools, pool, 3)
    queued = [pool.submit(thread_name) for _ in range(2)]
    pool.max_threads = 1
    assert pool.statistics().spawned == 3
    queued.append(pool.submit(thread_name))
    stats = pool.statistics()
    assert (stats.threads, stats.spawned, stats.queued) == (3, 3, 3)
    gate.set()
    assert all(f.result(BOUND).startswith("over-") for f in [*futures, *queued])
    wait_until(lambda: pool.statistics().threads == 1)
    assert pool.statistics().spawned == 3


def test_a_worker_started_for_the_queue_counts_for_it_until_it_gets_there(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its Thread.start() has returned, a worker started for queued
    requests may still be far from the queue (on a loaded machine, or
    without a GIL, its thread runs late): it counts as coming for them until
    it gets there, so neither the spawner's next look at the queue nor a
    raised max makes another worker for the same request."""
    real_main = Worker._main
    may_run = pools.gate()

    def late(worker: Worker, idle: bool) -> None:
        assert may_run.wait(BOUND)
        real_main(worker, idle)

    monkeypatch.setattr(Worker, "_main", late)
    pool = pools.new(0, 4, name="late")
    caught_up = watch_spawner(pool)
    futures = [pool.submit(thread_name) for _ in range(2)]
    wait_until(caught_up, "the spawner to catch up")
    assert pool.statistics().spawned == 2
    pool.max_threads = 8
    wait_until(caught_up, "the spawner to catch up")
    assert pool.statistics().spawned == 2
    may_run.set()
    assert {f.result(BOUND) for f in futures} <= {"late-1", "late-2"}


def test_raising_max_gives_queued_requests_workers(pools: Pools) -> None:
    """The spawner gives each queued request a worker, and no more: not one
    beyond a max written with its own value, nor up to a raised max."""
    pool = pools.new(0, 1, name="wider")
    caught_up = watch_spawner(pool)
    gate, _ = occupy(pools, pool, 1)
    hold = pools.gate()
    queued = [pool.submit(blocker(hold)) for _ in range(2)]
    assert pool.statistics().queued == 2
    pool.max_threads = 1  # unchanged: still no worker beyond it
    wait_until(caught_up, "the spawner to catch up")
    assert pool.statistics().spawned == 1
    pool.max_threads = 5
    wait_until(lambda: pool.statistics().active == 3, "both queued requests to run")
    # Held busy, so that no worker of theirs is idle when the spawner looks
    # at the queue again: a worker more would be made for nothing then.
    wait_until(caught_up, "the spawner to catch up")
    assert pool.statistics().spawned == 3  # one per queued request, not up to max
    hold.set()
    assert sorted(f.result(BOUND) for f in queued) == ["wider-2", "wider-3"]
    gate.set()
