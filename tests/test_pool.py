"""ThreadPool: QEMU's thread-pool rules, the Executor contract, run() on any loop.

Deterministic: threads are synchronised with Events and Barriers, conditions
are awaited with bounded polls, and nothing asserts on how long anything took.
Every pool is shut down (the ``pools`` fixture does it even when a test
fails, after opening every gate it handed out).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest

from iothreads import InvalidParameterType, InvalidParameterValue
from iothreads._pool import ThreadPool, ThreadPoolStatistics

from .conftest import WAIT, wait_until

# Upper bound of every wait; far above anything a passing test needs.
BOUND = WAIT
# Idle timeout small enough for shrink tests to be quick (the poll in
# wait_until makes the test independent of how quickly it really happens).
TINY = 0.01

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class Pools:
    """Creates pools and gates; at teardown opens the gates, then shuts the pools down."""

    def __init__(self) -> None:
        self._pools: list[ThreadPool] = []
        self._gates: list[threading.Event] = []

    def new(self, *args: Any, **kwargs: Any) -> ThreadPool:
        pool = ThreadPool(*args, **kwargs)
        self._pools.append(pool)
        return pool

    def gate(self) -> threading.Event:
        gate = threading.Event()
        self._gates.append(gate)
        return gate

    def close(self) -> None:
        for gate in self._gates:
            gate.set()
        for pool in self._pools:
            pool.shutdown(wait=True)


@pytest.fixture
def pools() -> Iterator[Pools]:
    kit = Pools()
    yield kit
    kit.close()


async def until(predicate: Callable[[], bool]) -> None:
    """The same, for a coroutine: the loop keeps running while it waits."""
    for _ in range(int(BOUND / 0.002)):
        if predicate():
            return
        await asyncio.sleep(0.002)
    assert predicate(), "condition not reached in time"


def workers(name: str) -> list[str]:
    """Names of the live worker threads of the pool called *name*."""
    prefix = f"{name}-"
    return sorted(
        t.name
        for t in threading.enumerate()
        if t.name.startswith(prefix) and t.name[len(prefix) :].isdigit()
    )


def thread_name() -> str:
    return threading.current_thread().name


def blocker(gate: threading.Event, started: threading.Event | None = None) -> Callable[[], str]:
    """A function that signals *started*, waits (bounded) for *gate*, returns its thread."""

    def block() -> str:
        if started is not None:
            started.set()
        assert gate.wait(BOUND)
        return thread_name()

    return block


# ------------------------------------------------------------------ creation


def test_defaults(pools: Pools) -> None:
    pool = pools.new()
    assert (pool.min_threads, pool.max_threads) == (0, 64)
    assert pool.idle_timeout == 10.0
    assert pool.name == "worker"
    assert pool.statistics() == ThreadPoolStatistics(
        threads=0, idle=0, active=0, queued=0, min=0, max=64,
        peak=0, spawned=0, exited=0, completed=0, cancelled=0,
    )  # fmt: skip
    assert workers("worker") == []


def test_min_workers_exist_and_are_idle_when_the_constructor_returns(pools: Pools) -> None:
    pool = pools.new(3, 8, name="eager")
    stats = pool.statistics()
    assert (stats.threads, stats.idle, stats.spawned, stats.peak) == (3, 3, 3, 3)
    assert workers("eager") == ["eager-1", "eager-2", "eager-3"]


RANGE = "value must be in range [0, 9223372036854775807]"
BAD_PAIR = "bad thread-pool-min/thread-pool-max values"
NOT_INT = "Invalid parameter type for '{}', expected: integer"
BAD_LIMITS = [
    (-1, 4, InvalidParameterValue, f"thread-pool-min {RANGE}"),
    (0, -1, InvalidParameterValue, f"thread-pool-max {RANGE}"),
    (5, 4, InvalidParameterValue, BAD_PAIR),
    (0, 0, InvalidParameterValue, BAD_PAIR),
    (True, 4, InvalidParameterType, NOT_INT.format("thread-pool-min")),
    (1, 4.0, InvalidParameterType, NOT_INT.format("thread-pool-max")),
    ("1", 4, InvalidParameterType, NOT_INT.format("thread-pool-min")),
    (0, 2**63, InvalidParameterType, NOT_INT.format("thread-pool-max")),
]


@pytest.mark.parametrize(("lo", "hi", "error", "message"), BAD_LIMITS)
def test_constructor_rejects_bad_limits(
    lo: Any, hi: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        ThreadPool(lo, hi)
    assert str(info.value) == message


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), True, "1", None])
def test_constructor_rejects_bad_idle_timeouts(timeout: Any) -> None:
    with pytest.raises((InvalidParameterValue, InvalidParameterType), match="idle_timeout"):
        ThreadPool(idle_timeout=timeout)


def test_constructor_rejects_a_name_that_is_not_a_str() -> None:
    with pytest.raises(InvalidParameterType, match="name"):
        ThreadPool(name=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(("lo", "hi", "error", "message"), BAD_LIMITS)
def test_rejected_limits_change_nothing(
    pools: Pools, lo: Any, hi: Any, error: type[Exception], message: str
) -> None:
    pool = pools.new(1, 4, name="firm")
    before = pool.statistics()
    with pytest.raises(error) as info:
        pool.set_limits(lo, hi)
    assert str(info.value) == message
    assert pool.statistics() == before
    assert workers("firm") == ["firm-1"]


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("min_threads", 5, BAD_PAIR),
        ("min_threads", -1, f"thread-pool-min {RANGE}"),
        ("max_threads", 0, BAD_PAIR),
        ("max_threads", False, NOT_INT.format("thread-pool-max")),
    ],
)
def test_rejected_property_writes_change_nothing(
    pools: Pools, attribute: str, value: Any, message: str
) -> None:
    pool = pools.new(1, 4)
    before = pool.statistics()
    with pytest.raises((InvalidParameterValue, InvalidParameterType)) as info:
        setattr(pool, attribute, value)
    assert str(info.value) == message
    assert pool.statistics() == before


# ---------------------------------------------------------------- the Executor


def test_submit_and_map(pools: Pools) -> None:
    pool = pools.new(name="exe")
    assert pool.submit(pow, 2, 10).result(BOUND) == 1024
    assert pool.submit(int, "ff", base=16).result(BOUND) == 255
    assert list(pool.map(pow, [2, 3, 4], [2, 2, 2], timeout=BOUND)) == [4, 9, 16]
    assert pool.submit(thread_name).result(BOUND).startswith("exe-")


def test_exceptions_reach_the_caller_with_their_traceback_and_the_worker_survives(
    pools: Pools,
) -> None:
    pool = pools.new(0, 1)

    def explode() -> None:
        raise ValueError("boom")

    first = pool.submit(thread_name).result(BOUND)
    with pytest.raises(ValueError, match="boom") as info:
        pool.submit(explode).result(BOUND)
    assert "explode" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    # The same (only) worker serves the next request: it did not die.
    assert pool.submit(thread_name).result(BOUND) == first
    stats = pool.statistics()
    assert (stats.spawned, stats.exited, stats.completed) == (1, 0, 3)


def test_base_exceptions_are_delivered_too(pools: Pools) -> None:
    pool = pools.new(0, 1)

    def leave() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        pool.submit(leave).result(BOUND)
    assert pool.submit(pow, 2, 2).result(BOUND) == 4


def test_contextvars_are_copied_into_the_worker(pools: Pools) -> None:
    pool = pools.new()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def read_then_write() -> str:
        seen = var.get()
        var.set("worker")
        return seen

    token = var.set("caller")
    try:
        assert pool.submit(read_then_write).result(BOUND) == "caller"
        assert var.get() == "caller"  # a copy: the worker's write stays there
    finally:
        var.reset(token)


def test_submit_after_shutdown_raises(pools: Pools) -> None:
    pool = pools.new(1, 2, name="closed")
    pool.shutdown()
    with pytest.raises(RuntimeError, match="'closed': it is shut down"):
        pool.submit(pow, 2, 2)
    pool.shutdown()  # again: harmless


def test_shutdown_drains_the_queue_and_joins_every_worker(pools: Pools) -> None:
    pool = pools.new(0, 2, name="drain")
    gate = pools.gate()
    running = [pool.submit(blocker(gate)) for _ in range(2)]
    wait_until(lambda: pool.statistics().active == 2)
    queued = [pool.submit(pow, 2, n) for n in range(3)]
    assert pool.statistics().queued == 3
    gate.set()
    pool.shutdown(wait=True)
    assert [f.result(0) for f in queued] == [1, 2, 4]
    assert all(f.done() for f in running)
    # Joined: no worker (nor the spawner) is alive once shutdown() returns.
    assert not [t for t in threading.enumerate() if t.name.startswith("drain-")]
    stats = pool.statistics()
    assert (stats.threads, stats.exited, stats.completed) == (0, 2, 5)


def test_shutdown_with_cancel_futures_cancels_the_queue(pools: Pools) -> None:
    pool = pools.new(0, 1)
    gate = pools.gate()
    ran: list[int] = []
    running = pool.submit(blocker(gate))
    wait_until(lambda: pool.statistics().active == 1)
    queued = [pool.submit(ran.append, n) for n in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.set()
    pool.shutdown(wait=True)
    assert running.result(0).startswith("worker-")  # a running request completes
    assert ran == []
    assert pool.statistics().cancelled == 3


def test_a_cancelled_queued_future_never_runs(pools: Pools) -> None:
    pool = pools.new(0, 1)
    gate = pools.gate()
    ran: list[str] = []
    pool.submit(blocker(gate))
    wait_until(lambda: pool.statistics().active == 1)
    doomed = pool.submit(ran.append, "doomed")
    assert doomed.cancel()
    gate.set()
    assert pool.submit(ran.append, "after").result(BOUND) is None
    assert ran == ["after"]
    with pytest.raises(CancelledError):
        doomed.result(0)
    stats = pool.statistics()
    assert (stats.cancelled, stats.completed) == (1, 2)


# ---------------------------------------------------------------- spawning


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


@pytest.mark.parametrize("error", [RuntimeError, MemoryError])
def test_a_failed_thread_start_fails_the_request_and_the_pool_recovers(
    pools: Pools, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    real_start = threading.Thread.start

    def failing_start(thread: threading.Thread) -> None:
        if thread.name.startswith("boom-") and thread.name[5:].isdigit():
            raise error("can't start new thread")
        real_start(thread)

    pool = pools.new(0, 2, name="boom")
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", failing_start)
        with pytest.raises(error, match="can't start new thread"):
            pool.submit(pow, 2, 2).result(BOUND)
        stats = pool.statistics()
        assert (stats.threads, stats.spawned, stats.exited, stats.queued) == (0, 1, 1, 0)
        # The constructor does not wait forever for min workers that never start.
        eager = pools.new(2, 4, name="boom")
        stats = eager.statistics()
        assert (stats.threads, stats.idle, stats.exited) == (0, 0, 2)
    assert pool.submit(pow, 2, 3).result(BOUND) == 8


def test_requests_failed_by_a_thread_start_never_count_as_run(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = threading.Thread.start
    may_fail = threading.Event()

    def failing_start(thread: threading.Thread) -> None:
        if thread.name == "boom-1":
            assert may_fail.wait(BOUND)  # the three requests are queued by then
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", failing_start)
    pool = pools.new(0, 1, name="boom")
    ran: list[int] = []
    seen: list[ThreadPoolStatistics] = []
    futures = [pool.submit(ran.append, n) for n in range(3)]
    futures[0].add_done_callback(lambda _: seen.append(pool.statistics()))
    may_fail.set()
    for future in futures:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            future.result(BOUND)
    stats = pool.statistics()
    assert ran == []
    assert (stats.threads, stats.active, stats.completed, stats.queued) == (0, 0, 0, 0)
    assert (seen[0].threads, seen[0].active) == (0, 0)  # as the failure is delivered


@pytest.mark.parametrize("then", ["submit again and wait", "shut the pool down"])
def test_a_done_callback_of_a_request_failed_by_a_thread_start_may_use_the_pool(
    pools: Pools, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    """Such a callback runs in the spawner thread, which hands its role over
    first: a retry gets a worker, and shutdown() does not join its own thread."""
    real_start = threading.Thread.start
    failed_once = threading.Event()
    may_fail = threading.Event()

    def failing_once(thread: threading.Thread) -> None:
        is_worker = thread.name.startswith("boom-") and thread.name != "boom-spawner"
        if is_worker and not failed_once.is_set():
            failed_once.set()
            assert may_fail.wait(BOUND)  # the callback is added by then
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", failing_once)
    pool = pools.new(0, 4, name="boom")
    outcome: list[object] = []

    def use_the_pool(_: object) -> None:
        try:
            if then == "submit again and wait":
                outcome.append(pool.submit(pow, 2, 10).result(BOUND))
            else:
                pool.shutdown(wait=True)
                outcome.append("shut down")
        except BaseException as exc:
            outcome.append(exc)

    future = pool.submit(pow, 2, 2)
    future.add_done_callback(use_the_pool)
    may_fail.set()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        future.result(BOUND)
    wait_until(lambda: outcome, "the callback's outcome")
    assert outcome == [1024 if then == "submit again and wait" else "shut down"]
    pool.shutdown(wait=True)
    assert pool_threads("boom") == []


def race_shutdown(pool: ThreadPool) -> list[Future[Any]]:
    """Shut *pool* down while two submitters (some resubmitting from done-
    callbacks) and a limit changer use it; check that the statistics stayed
    consistent, as the callbacks saw them and at the end; return every future
    submitted."""
    futures: list[Future[Any]] = []
    # Asserted here, in the test's thread: an AssertionError raised in a
    # done-callback would only be logged, and one in a racer only warned of.
    seen: list[ThreadPoolStatistics] = []
    errors: list[BaseException] = []

    def resubmit(_: object) -> None:
        seen.append(pool.statistics())
        with contextlib.suppress(RuntimeError):  # shut down meanwhile
            futures.append(pool.submit(pow, 2, 2))

    def submitter() -> None:
        for n in range(10):
            try:
                future = pool.submit(pow, 2, n)
            except RuntimeError:
                return  # shut down
            if n % 3 == 0:
                future.add_done_callback(resubmit)
            futures.append(future)

    def limiter() -> None:
        for n in range(3):
            pool.set_limits(n % 2, 1 + n)

    def racer(target: Callable[[], None]) -> threading.Thread:
        def recording() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return threading.Thread(target=recording)

    racers = [racer(submitter) for _ in range(2)]
    racers.append(racer(limiter))
    for thread in racers:
        thread.start()
    pool.shutdown(wait=True)
    for thread in racers:
        thread.join(BOUND)
    assert not [t for t in racers if t.is_alive()]
    assert errors == []
    for s in [*seen, pool.statistics()]:
        assert s.threads == s.spawned - s.exited
        assert min(s.threads, s.active, s.idle, s.queued) >= 0
    return futures


def test_failing_thread_starts_racing_submit_limits_and_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers and spawners fail to start at random while the pool is used and
    shut down: shutdown(wait=True) neither raises nor leaves a pool thread
    behind, every future gets its outcome, the statistics stay consistent."""
    real_start = threading.Thread.start
    chance = random.Random(4)

    def flaky_start(thread: threading.Thread) -> None:
        if thread.name.startswith("flaky") and chance.random() < 0.3:
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", flaky_start)
    for round_ in range(40):
        pool = ThreadPool(0, chance.randint(1, 4), name=f"flaky{round_}", idle_timeout=0.05)
        futures = race_shutdown(pool)
        assert pool_threads(f"flaky{round_}") == []
        for future in list(futures):
            with contextlib.suppress(RuntimeError, CancelledError):
                future.result(BOUND)
        final = pool.statistics()
        assert (final.threads, final.active, final.queued, final.idle) == (0, 0, 0, 0)


@pytest.mark.parametrize("from_where", ["the function", "a done-callback"])
def test_two_workers_shutting_the_pool_down_do_not_wait_for_each_other(
    pools: Pools, from_where: str
) -> None:
    pool = pools.new(2, 2, name="both")
    both_running = threading.Barrier(2)
    callbacks_added = threading.Event()
    returned: list[object] = []  # each shutdown()'s thread, or what it raised
    all_returned = threading.Semaphore(0)

    def shut_down() -> None:
        try:
            pool.shutdown(wait=True)
            returned.append(threading.current_thread().name)
        except BaseException as exc:  # asserted by the test, not lost in a callback
            returned.append(exc)
        finally:
            all_returned.release()

    def task() -> None:
        both_running.wait(BOUND)
        assert callbacks_added.wait(BOUND)  # so that the callbacks run in the workers
        if from_where == "the function":
            shut_down()

    futures = [pool.submit(task) for _ in range(2)]
    if from_where == "a done-callback":
        for future in futures:
            future.add_done_callback(lambda _: shut_down())
    callbacks_added.set()
    for _ in futures:
        assert all_returned.acquire(timeout=BOUND)  # each shutdown() returned
    assert sorted(map(str, returned)) == ["both-1", "both-2"]  # one in each worker
    assert [f.result(BOUND) for f in futures] == [None, None]  # task()'s asserts held
    pool.shutdown(wait=True)
    assert pool_threads("both") == []


def test_a_done_callback_in_a_worker_may_submit_and_wait(pools: Pools) -> None:
    """The worker runs its done-callbacks once idle again: a submit from one
    must not count on that very worker, busy in the callback."""
    pool = pools.new(0, 4, name="cb")
    outcome: list[object] = []
    delivered, callback_added = threading.Event(), threading.Event()

    def submit_and_wait(_: object) -> None:
        outcome.append(threading.current_thread().name)
        try:
            outcome.append(pool.submit(pow, 2, 7).result(BOUND))
        except BaseException as exc:  # asserted by the test, not lost in a callback
            outcome.append(exc)
        finally:
            delivered.set()

    pool.submit(callback_added.wait, BOUND).add_done_callback(submit_and_wait)
    callback_added.set()  # the callback runs in the worker, once it is idle
    assert delivered.wait(BOUND)
    assert outcome == ["cb-1", 128]


def test_a_done_callback_waiting_on_the_pool_while_others_submit(pools: Pools) -> None:
    """Requests submitted from outside while a worker runs a done-callback
    never count on that worker, nor does the callback's own request."""
    pool = pools.new(2, 4, name="busy")
    in_callback, outside_submitted = threading.Event(), threading.Event()
    outcome: list[object] = []

    def callback(_: object) -> None:
        # Records, for the test to assert: a callback's AssertionError would
        # only be logged.
        in_callback.set()
        outcome.append(outside_submitted.wait(BOUND))
        try:
            outcome.append(pool.submit(pow, 2, 5).result(BOUND))
        except BaseException as exc:
            outcome.append(exc)

    gate = threading.Event()
    pool.submit(gate.wait, BOUND).add_done_callback(callback)
    gate.set()
    assert in_callback.wait(BOUND)
    outside = pool.submit(pow, 2, 3)  # while the callback runs
    outside_submitted.set()
    assert outside.result(BOUND) == 8
    wait_until(lambda: len(outcome) == 2, "the callback's own request")
    assert outcome == [True, 32]


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt])
def test_a_done_callback_raising_a_base_exception_does_not_end_its_worker(
    pools: Pools, caplog: pytest.LogCaptureFixture, error: type[BaseException]
) -> None:
    pool = pools.new(0, 1, name="sys")
    gate = threading.Event()

    def raise_error(_: object) -> None:
        raise error

    with caplog.at_level("CRITICAL", logger="iothreads"):
        pool.submit(gate.wait, BOUND).add_done_callback(raise_error)
        gate.set()  # the callback runs in the worker
        # max is 1: only that worker can serve this.
        assert pool.submit(pow, 2, 4).result(BOUND) == 16
    assert "delivering the outcome" in caplog.text
    assert pool_threads("sys") == ["sys-1", "sys-spawner"]


def pool_threads(name: str) -> list[str]:
    """Names of every live thread of the pool called *name*, its spawner included."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(f"{name}-"))


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


def test_shutdown_while_the_first_submit_starts_the_spawner(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The submitter is stalled inside the spawner's start(); shutdown(wait=True)
    # must wait for it, then drain the queued request and join everything.
    real_start = threading.Thread.start
    starting, may_start = threading.Event(), pools.gate()

    def stalled_start(thread: threading.Thread) -> None:
        if thread.name == "race-spawner":
            starting.set()
            assert may_start.wait(BOUND)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", stalled_start)
    pool = pools.new(0, 2, name="race")
    futures: list[Future[int]] = []
    submitter = threading.Thread(target=lambda: futures.append(pool.submit(pow, 2, 6)))
    submitter.start()
    assert starting.wait(BOUND)
    stopper = threading.Thread(target=pool.shutdown)
    stopper.start()

    def closed() -> bool:
        try:
            pool.submit(pow, 0, 0).cancel()
        except RuntimeError:
            return True
        return False

    wait_until(closed)
    may_start.set()
    submitter.join(BOUND)
    stopper.join(BOUND)
    assert not submitter.is_alive()
    assert not stopper.is_alive()
    assert futures[0].result(0) == 64
    assert pool_threads("race") == []


@pytest.mark.parametrize("error", [RuntimeError, MemoryError])
def test_a_failed_spawner_start_fails_the_request_and_the_pool_recovers(
    pools: Pools, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    real_start = threading.Thread.start

    def failing_start(thread: threading.Thread) -> None:
        if thread.name == "nospawn-spawner":
            raise error("can't start new thread")
        real_start(thread)

    pool = pools.new(0, 2, name="nospawn")
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", failing_start)
        future = pool.submit(pow, 2, 2)
        with pytest.raises(error, match="can't start new thread"):
            future.result(BOUND)
        stats = pool.statistics()
        assert (stats.threads, stats.spawned, stats.exited, stats.queued) == (0, 1, 1, 0)
        assert pool_threads("nospawn") == []
    # The next spawn tries again with a new spawner.
    assert pool.submit(pow, 2, 3).result(BOUND) == 8
    assert pool_threads("nospawn") == ["nospawn-2", "nospawn-spawner"]


def test_idle_workers_are_reused_most_recently_idle_first(pools: Pools) -> None:
    pool = pools.new(0, 3, name="lifo")
    gates = [pools.gate() for _ in range(3)]
    futures = [pool.submit(blocker(gate)) for gate in gates]
    wait_until(lambda: pool.statistics().active == 3)
    # Let them go idle one at a time: 0 first, 2 last.
    for n, gate in enumerate(gates, start=1):
        gate.set()
        wait_until(lambda n=n: pool.statistics().idle == n)  # type: ignore[misc]
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
    may_start = stall_starts(pools, monkeypatch, {"way-1", "way-2"})
    pool = pools.new(0, 2, name="way")
    pool.set_limits(2, 2)
    assert pool.statistics().idle == 2
    futures = [pool.submit(thread_name) for _ in range(3)]
    stats = pool.statistics()
    # The first submit woke one worker; the others left the second asleep.
    assert (stats.idle, stats.queued, stats.active, stats.threads) == (1, 3, 0, 2)
    may_start.set()
    assert {f.result(BOUND) for f in futures} <= {"way-1", "way-2"}
    wait_until(lambda: pool.statistics().idle == 2)
    stats = pool.statistics()
    assert (stats.completed, stats.spawned, stats.queued, stats.active) == (3, 2, 0, 0)


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
    assert pool.statistics().idle == 1
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


def test_a_woken_worker_that_fails_to_start_passes_the_queue_on(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # half-1 is woken for the request before its thread exists, then cannot
    # be started: the idle half-2 must be woken in its place.
    real_start = threading.Thread.start
    may_fail = pools.gate()

    def failing_start(thread: threading.Thread) -> None:
        if thread.name == "half-1":
            assert may_fail.wait(BOUND)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", failing_start)
    pool = pools.new(0, 2, name="half")
    pool.set_limits(2, 2)
    future = pool.submit(thread_name)
    assert pool.statistics().idle == 1  # half-1, the top of the stack, was woken
    may_fail.set()
    assert future.result(BOUND) == "half-2"
    stats = pool.statistics()
    assert (stats.threads, stats.spawned, stats.exited, stats.completed) == (1, 2, 1, 1)


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


# ---------------------------------------------------------- idleness and limits


def occupy(pools: Pools, pool: ThreadPool, n: int) -> tuple[threading.Event, list[Future[str]]]:
    """Make *n* workers busy at once; returns the gate that frees them."""
    gate = pools.gate()
    futures = [pool.submit(blocker(gate)) for _ in range(n)]
    wait_until(lambda: pool.statistics().active == n)
    return gate, futures


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


def test_a_pool_with_min_zero_shrinks_to_nothing(pools: Pools) -> None:
    pool = pools.new(0, 4, idle_timeout=TINY, name="empty")
    assert pool.submit(pow, 2, 2).result(BOUND) == 4
    wait_until(lambda: pool.statistics().threads == 0)
    wait_until(lambda: workers("empty") == [])
    assert pool.submit(pow, 2, 3).result(BOUND) == 8  # and grows again


def test_raising_min_starts_the_missing_workers_at_once(pools: Pools) -> None:
    pool = pools.new(0, 4, name="raise")
    pool.set_limits(3, 4)
    stats = pool.statistics()
    assert (stats.min, stats.threads, stats.idle) == (3, 3, 3)
    wait_until(lambda: len(workers("raise")) == 3)
    pool.min_threads = 4
    assert pool.statistics().threads == 4
    wait_until(lambda: len(workers("raise")) == 4)


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


def test_raising_max_gives_queued_requests_workers(pools: Pools) -> None:
    pool = pools.new(0, 1, name="wider")
    gate, _ = occupy(pools, pool, 1)
    both = threading.Barrier(2)
    # Two queued requests that can only finish by running side by side.
    queued = [pool.submit(both.wait, BOUND) for _ in range(2)]
    assert pool.statistics().queued == 2
    pool.max_threads = 3
    assert sorted(f.result(BOUND) for f in queued) == [0, 1]
    gate.set()


# ---------------------------------------------------------------- run()


async def test_run_returns_on_the_awaiting_loop(pools: Pools) -> None:
    pool = pools.new(name="aw")
    assert await pool.run(pow, 2, 8) == 256
    assert (await pool.run(thread_name)).startswith("aw-")
    stats = pool.statistics()
    # One worker served both: it is idle again before the caller has a result.
    assert (stats.completed, stats.spawned) == (2, 1)


async def test_run_exceptions_keep_their_traceback(pools: Pools) -> None:
    pool = pools.new()

    def explode() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError) as info:
        await pool.run(explode)
    assert "explode" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    with pytest.raises(RuntimeError, match="StopIteration") as stop:
        await pool.run(next, iter([]))
    assert isinstance(stop.value.__cause__, StopIteration)


async def test_run_copies_contextvars(pools: Pools) -> None:
    pool = pools.new()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("task")  # the task's own context: gone with the task
    assert await pool.run(var.get) == "task"


async def test_run_after_shutdown_raises(pools: Pools) -> None:
    pool = pools.new()
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        await pool.run(pow, 2, 2)


async def test_cancelling_a_queued_run_withdraws_it(pools: Pools) -> None:
    pool = pools.new(0, 1)
    gate = pools.gate()
    ran: list[str] = []
    pool.submit(blocker(gate))
    await until(lambda: pool.statistics().active == 1)
    task = asyncio.ensure_future(pool.run(ran.append, "doomed"))
    await until(lambda: pool.statistics().queued == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = pool.statistics()
    assert (stats.queued, stats.cancelled) == (0, 1)
    gate.set()
    await pool.run(ran.append, "after")
    assert ran == ["after"]


async def test_cancelling_a_running_run_discards_its_result(pools: Pools) -> None:
    pool = pools.new(0, 1)
    gate, started = pools.gate(), threading.Event()
    task = asyncio.ensure_future(pool.run(blocker(gate, started)))
    await until(started.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await until(lambda: pool.statistics().active == 0)
    stats = pool.statistics()
    assert (stats.cancelled, stats.completed, stats.exited) == (1, 0, 0)
    assert await pool.run(pow, 2, 2) == 4


async def test_shutdown_cancel_futures_cancels_a_queued_run(pools: Pools) -> None:
    pool = pools.new(0, 1)
    gate, _ = occupy(pools, pool, 1)
    task = asyncio.ensure_future(pool.run(pow, 2, 2))
    await until(lambda: pool.statistics().queued == 1)
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    assert pool.statistics().cancelled == 1


def test_run_from_loops_in_other_threads(pools: Pools, loop_factory: LoopFactory) -> None:
    pool = pools.new(0, 2)
    together = threading.Barrier(2)
    results: dict[str, Any] = {}

    def caller(key: str) -> None:
        loop = loop_factory()
        try:
            results[key] = loop.run_until_complete(pool.run(together.wait, BOUND))
        finally:
            loop.close()

    threads = [threading.Thread(target=caller, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    # Each loop got its own result: the two calls met at the barrier.
    assert sorted(results.values()) == [0, 1]


# ------------------------------------------------------ as a loop's default executor


async def test_default_executor_of_the_running_loop(pools: Pools) -> None:
    pool = pools.new(name="dflt")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(pool)
    assert (await asyncio.to_thread(thread_name)).startswith("dflt-")
    assert (await loop.run_in_executor(None, thread_name)).startswith("dflt-")
    await loop.shutdown_default_executor()
    assert workers("dflt") == []
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(pow, 2, 2)


def test_default_executor_of_a_runner(pools: Pools, loop_factory: LoopFactory) -> None:
    pool = pools.new(2, 4, name="runner")
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def main() -> tuple[str, str]:
        asyncio.get_running_loop().set_default_executor(pool)
        var.set("main")
        return await asyncio.to_thread(thread_name), await asyncio.to_thread(var.get)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        name, value = runner.run(main())
    assert name.startswith("runner-")
    assert value == "main"
    # Closing the runner shut the default executor down and joined it.
    assert workers("runner") == []
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(pow, 2, 2)


# ---------------------------------------------------------------- statistics


def test_statistics_add_up(pools: Pools) -> None:
    pool = pools.new(1, 3, name="sum")
    gate, _ = occupy(pools, pool, 3)
    queued = pool.submit(pow, 3, 2)
    stats = pool.statistics()
    assert (stats.threads, stats.active, stats.idle, stats.queued) == (3, 3, 0, 1)
    assert stats.threads == stats.spawned - stats.exited
    gate.set()
    assert queued.result(BOUND) == 9
    wait_until(lambda: pool.statistics().idle == 3)
    stats = pool.statistics()
    assert (stats.active, stats.queued, stats.completed, stats.peak) == (0, 0, 4, 3)
    assert stats.threads == stats.spawned - stats.exited
    with pytest.raises(AttributeError):
        stats.threads = 0  # type: ignore[misc]


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


def test_owns_current_thread(pools: Pools) -> None:
    pool = pools.new(0, 2, name="own")
    other = pools.new(0, 2, name="other")
    assert not pool.owns_current_thread()
    assert pool.submit(pool.owns_current_thread).result(BOUND)  # even a worker's first request
    assert not other.submit(pool.owns_current_thread).result(BOUND)
