"""ThreadPool: QEMU's thread-pool rules, the Executor contract, run() on any loop.

Deterministic: threads are synchronised with Events and Barriers, conditions
are awaited with bounded polls, and nothing asserts on how long anything took.
Every pool is shut down (the ``pools`` fixture does it even when a test
fails, after opening every gate it handed out).  How the workers come and go
is tested in test_workers.py; failing thread starts, shutdown races and
done-callbacks that use the pool in test_failures.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any
from unittest import mock

import pytest

from iothreads import InvalidParameterType, InvalidParameterValue
from iothreads._pool import ThreadPool, ThreadPoolStatistics
from iothreads._pool._requests import LoopRequest
from iothreads._pool._spawner import SPAWNER
from iothreads._pool._thread_pool import _check_idle_timeout
from iothreads._pool._worker import OWN_THREAD, POOL_WORKER, current_worker
from iothreads._runs_in import ThreadRole

from ..helpers import BOUND, Pools, blocker, occupy, thread_name, wait_until, workers

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


async def until(predicate: Callable[[], bool]) -> None:
    """The same, for a coroutine: the loop keeps running while it waits."""
    for _ in range(int(BOUND / 0.002)):
        if predicate():
            return
        await asyncio.sleep(0.002)
    assert predicate(), "condition not reached in time"


# ------------------------------------------------------------------- creation


def test_defaults(pools: Pools) -> None:
    pool = pools.new()
    assert (pool.min_threads, pool.max_threads) == (0, 64)
    assert pool.idle_timeout == 10.0
    assert pool.name == "worker"
    assert pool.statistics() == ThreadPoolStatistics(
        threads=0, idle=0, active=0, queued=0, min=0, max=64,
        peak=0, spawned=0, exited=0, completed=0, cancelled=0, start_failures=0,
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


@pytest.mark.parametrize("timeout", [threading.TIMEOUT_MAX, 1e-9, 3])
def test_idle_timeouts_up_to_what_a_lock_can_wait_for_are_taken(timeout: float) -> None:
    assert _check_idle_timeout(timeout) == float(timeout)


def test_the_limits_are_taken_by_keyword_and_the_rest_only_so(pools: Pools) -> None:
    """As ThreadPoolExecutor's max_workers: the limits by position or by
    name; idle_timeout and name, which follow, by name alone."""
    pool = pools.new(min_threads=1, max_threads=2, idle_timeout=5.0, name="kw")
    stats = pool.statistics()
    assert (stats.min, stats.max, pool.idle_timeout, pool.name) == (1, 2, 5.0, "kw")
    with pytest.raises(TypeError, match="positional"):
        ThreadPool(0, 2, 5.0)  # type: ignore[call-arg]


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
        # Equal to everything, so not to be mistaken for "keep this limit".
        ("min_threads", mock.ANY, NOT_INT.format("thread-pool-min")),
        ("max_threads", mock.ANY, NOT_INT.format("thread-pool-max")),
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


# --------------------------------------------------------------- the Executor


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


def test_a_running_future_cannot_be_cancelled(pools: Pools) -> None:
    """concurrent.futures' contract, as ThreadPoolExecutor keeps it: a worker
    marks the future running before the call, and cancel() returns False."""
    pool = pools.new(0, 1)
    gate, started = pools.gate(), threading.Event()
    running = pool.submit(blocker(gate, started))
    assert started.wait(BOUND)
    assert running.running()
    assert not running.cancel()
    gate.set()
    assert running.result(BOUND).startswith("worker-")
    assert not running.cancelled()


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


# ---------------------------------------------------------------------- run()


async def test_run_returns_on_the_awaiting_loop(pools: Pools) -> None:
    pool = pools.new(name="aw")
    assert await pool.run(pow, 2, 8) == 256
    assert (await pool.run(thread_name)).startswith("aw-")
    stats = pool.statistics()
    # One worker served both: it is idle again before the caller has a result.
    assert (stats.completed, stats.spawned) == (2, 1)


async def test_a_run_is_handed_over_once_its_worker_is_idle_again(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-over to the awaiting loop is the worker's last act for the
    request: a caller that runs again at once finds it idle, rather than an
    empty stack and a needless spawn."""
    pool = pools.new(0, 4, idle_timeout=3600.0, name="handover")
    seen: list[ThreadPoolStatistics] = []
    real_deliver = LoopRequest.deliver

    def deliver(request: LoopRequest, result: Any, exc: BaseException | None) -> None:
        seen.append(pool.statistics())  # in the worker, as it hands the outcome over
        real_deliver(request, result, exc)

    monkeypatch.setattr(LoopRequest, "deliver", deliver)
    assert await pool.run(thread_name) == "handover-1"
    assert await pool.run(thread_name) == "handover-1"
    assert [(s.idle, s.active, s.completed) for s in seen] == [(1, 0, 1), (1, 0, 2)]
    assert pool.statistics().spawned == 1


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


# ----------------------------------------------- as a loop's default executor


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


# ----------------------------------------------------------------- statistics


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


def test_owns_current_thread(pools: Pools) -> None:
    pool = pools.new(0, 2, name="own")
    other = pools.new(0, 2, name="other")
    assert not pool.owns_current_thread()
    assert pool.submit(pool.owns_current_thread).result(BOUND)  # even a worker's first request
    assert not other.submit(pool.owns_current_thread).result(BOUND)


def holds(role: ThreadRole, obj: object) -> bool:
    assert role.holds is not None
    return role.holds(obj)


def test_the_pool_threads_play_their_roles_only_there(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks the thread markers make in asyncio's debug mode (docs/design.md,
    "Threading rules"): a pool's worker, a worker's own thread and the spawner
    are each recognised in their thread, and in no other."""
    pool = pools.new(0, 2, name="roles")
    other = pools.new(0, 2, name="other")
    real_start = threading.Thread.start
    in_spawner: list[bool] = []

    def start(thread: threading.Thread) -> None:
        if thread.name == "roles-1":  # started by the spawner thread
            in_spawner.append(holds(SPAWNER, pool._spawner))
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)

    def in_a_worker() -> tuple[Any, ...]:
        worker = current_worker()
        return (
            worker,
            holds(POOL_WORKER, pool),
            holds(POOL_WORKER, other),
            holds(OWN_THREAD, worker),
            holds(SPAWNER, pool._spawner),
        )

    worker, *seen = pool.submit(in_a_worker).result(BOUND)
    assert seen == [True, False, True, False]
    assert in_spawner == [True]
    assert not holds(POOL_WORKER, pool)
    assert not holds(OWN_THREAD, worker)
    assert not holds(SPAWNER, pool._spawner)
