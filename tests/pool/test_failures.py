"""ThreadPool under adversity: thread starts that fail or stall, shutdown
racing the pool's own threads, done-callbacks that use the pool.

Deterministic, as test_contract.py: nothing asserts on how long anything took.
What a done-callback sees is recorded there and asserted by the test itself
(an AssertionError raised in a done-callback is only logged).
"""

from __future__ import annotations

import contextlib
import random
import threading
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest

from iothreads._pool import ThreadPool, ThreadPoolStatistics
from iothreads._pool._spawner import Spawner
from iothreads._pool._worker import Worker

from ..helpers import (
    BOUND,
    Gate,
    LoopFactory,
    Pools,
    blocker,
    line_of,
    occupy,
    pool_threads,
    refuse_thread_start,
    task_of_a_closed_loop,
    thread_name,
    wait_until,
)

# ------------------------------------------------------- failed thread starts


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
    may_fail = threading.Event()  # the three requests are queued by then
    refuse_thread_start(monkeypatch, "boom-1", after=may_fail)
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


def test_a_request_cancelled_while_queued_is_not_failed_by_a_thread_start(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It keeps the outcome its caller gave it, and counts as cancelled."""
    may_fail = threading.Event()  # both requests are queued by then
    refuse_thread_start(monkeypatch, "boom-1", after=may_fail)
    pool = pools.new(0, 1, name="boom")
    ran: list[int] = []
    failed, withdrawn = pool.submit(ran.append, 1), pool.submit(ran.append, 2)
    assert withdrawn.cancel()
    may_fail.set()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        failed.result(BOUND)
    assert withdrawn.cancelled()
    assert ran == []
    stats = pool.statistics()
    assert (stats.cancelled, stats.completed, stats.queued) == (1, 0, 0)


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


def test_a_woken_worker_that_fails_to_start_passes_the_queue_on(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # half-2 is woken for a request before its thread exists; half-1, busy,
    # takes that request and goes idle, and the next request finds half-2
    # still on its way.  Then half-2 cannot be started: the idle half-1 must
    # be woken in its place.
    may_fail = pools.gate()
    refuse_thread_start(monkeypatch, "half-2", after=may_fail)
    pool = pools.new(1, 2, name="half")
    gate, started = pools.gate(), threading.Event()
    busy = pool.submit(blocker(gate, started))
    assert started.wait(BOUND)
    pool.min_threads = 2  # the spawner makes half-2, idle, and is stuck starting it
    wait_until(lambda: pool.statistics().idle == 1)
    first = pool.submit(thread_name)  # wakes half-2
    gate.set()
    assert busy.result(BOUND) == "half-1"
    assert first.result(BOUND) == "half-1"  # half-1 drained the queue on its way out
    wait_until(lambda: pool.statistics().idle == 1)
    second = pool.submit(thread_name)  # half-2 is still on its way: no wake-up
    assert pool.statistics().idle == 1
    may_fail.set()
    assert second.result(BOUND) == "half-1"
    stats = pool.statistics()
    assert (stats.threads, stats.spawned, stats.exited, stats.completed) == (1, 2, 1, 3)
    assert stats.start_failures == 1


def test_a_worker_retired_while_its_thread_is_refused_is_undone_once(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    may_fail = pools.gate()
    refuse_thread_start(monkeypatch, "gone-1", after=may_fail)
    pool = pools.new(0, 2, name="gone")
    pool.min_threads = 1  # gone-1: idle, stuck being started
    wait_until(lambda: pool.statistics().idle == 1)
    pool.shutdown(wait=False)  # retires it
    may_fail.set()
    wait_until(lambda: pool.statistics().start_failures == 1)
    stats = pool.statistics()
    assert (stats.threads, stats.spawned, stats.exited, stats.idle) == (0, 1, 1, 0)


def test_a_spawner_that_meets_a_failed_start_with_workers_left_stays_the_spawner(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a spawner that fails the queue (no worker left) hands its role
    over: with a worker left, the request waits for a worker, and the same
    spawner starts the next one."""
    real_start = threading.Thread.start
    starters: dict[str, threading.Thread] = {}

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("stay-") and thread.name[5:].isdigit():
            starters[thread.name] = threading.current_thread()
            if thread.name == "stay-2":
                raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    pool = pools.new(0, 3, idle_timeout=3600.0, name="stay")
    gate, started = pools.gate(), threading.Event()
    first = pool.submit(blocker(gate, started))
    assert started.wait(BOUND)
    second = pool.submit(thread_name)  # stay-2 is refused; stay-1 is left, busy
    wait_until(lambda: pool.statistics().exited == 1)
    assert not second.done()
    third = pool.submit(thread_name)  # stay-3
    assert [second.result(BOUND), third.result(BOUND)] == ["stay-3", "stay-3"]
    assert starters["stay-3"] is starters["stay-1"]
    gate.set()
    assert first.result(BOUND) == "stay-1"


def test_a_pool_below_min_after_a_failed_start_keeps_its_workers(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused thread start can leave fewer workers than min: the ones
    left are not above min, so their idle waits time out and they stay."""
    refuse_thread_start(monkeypatch, "few-2")
    pool = pools.new(0, 2, idle_timeout=0.01, name="few")
    real_expire = pool._expire_locked
    decisions: list[bool] = []
    decided = threading.Event()  # twice to stay, or once to leave

    def expire(worker: Worker) -> bool:
        leaves = real_expire(worker)
        # Only the idle timeouts after the refusal count: until then few-2
        # is counted, and the pool is at min.
        if pool._start_failures:  # read under the pool lock, as it is written
            decisions.append(leaves)
            if leaves or len(decisions) == 2:
                decided.set()
        return leaves

    monkeypatch.setattr(pool, "_expire_locked", expire)
    # The spawner starts few-1, then is refused few-2 and stops there: every
    # idle timeout of few-1 from then on finds the pool below min.
    pool.set_limits(2, 2)
    assert decided.wait(BOUND)
    assert decisions[:2] == [False, False]
    stats = pool.statistics()
    assert (stats.threads, stats.idle, stats.exited, stats.start_failures) == (1, 1, 1, 1)
    assert pool.submit(thread_name).result(BOUND) == "few-1"


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


# ------------------------------------------------------------- shutdown races


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


@pytest.mark.interleaving
def test_shutdown_joining_a_spawner_that_retires(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shutdown() joins the spawner while it is stuck starting a worker; the
    start fails, which fails the queue, and the spawner retires (it delivers
    the failures, whose callbacks may use the pool).  shutdown() joins it
    all the same: when it returns, every thread of the pool is gone."""
    may_fail = pools.gate()
    refuse_thread_start(monkeypatch, "hand-1", after=may_fail)
    pool = pools.new(0, 2, name="hand")
    pool.set_limits(1, 2)  # hand-1 is to start idle, and is stuck
    wait_until(lambda: pool.statistics().idle == 1)
    future = pool.submit(pow, 2, 2)  # wakes hand-1
    joining = Gate(marks=[line_of(Spawner.join, "thread.join()")])

    def shut_down() -> None:
        joining.install()
        try:
            pool.shutdown(wait=True)
        finally:
            joining.uninstall()

    stopper = threading.Thread(target=shut_down)
    stopper.start()
    try:
        assert joining.stopped.wait(BOUND)  # joining the spawner stuck on hand-1
    finally:
        may_fail.set()
        stopper.join(BOUND)
    assert not stopper.is_alive()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        future.result(0)
    assert pool_threads("hand") == []
    stats = pool.statistics()
    assert (stats.threads, stats.spawned, stats.exited, stats.queued) == (0, 1, 1, 0)
    assert stats.start_failures == 1


def race_shutdown(pool: ThreadPool) -> list[Future[Any]]:
    """Shut *pool* down while two submitters (some resubmitting from done-
    callbacks) and a limit changer use it; check that the statistics stayed
    consistent, as the callbacks saw them and at the end; return every future
    submitted."""
    futures: list[Future[Any]] = []
    # Asserted below: an AssertionError raised in a done-callback would only
    # be logged.
    seen: list[ThreadPoolStatistics] = []

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

    racers = [threading.Thread(target=submitter) for _ in range(2)]
    racers.append(threading.Thread(target=limiter))
    for racer in racers:
        racer.start()
    pool.shutdown(wait=True)
    for racer in racers:
        racer.join(BOUND)
    assert not [t for t in racers if t.is_alive()]
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


def test_a_retired_spawner_and_a_worker_shutting_the_pool_down_do_not_wait_for_each_other(
    pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spawner that delivers a failed start's failure runs the
    done-callbacks as a pool thread: one that shuts the pool down, while a
    worker does too, neither waits for that worker nor is waited for."""
    may_fail = threading.Event()  # the callback is added by then
    refuse_thread_start(monkeypatch, "pair-1", after=may_fail)
    pool = pools.new(0, 2, name="pair")
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

    def retry_and_shut_down(_: object) -> None:  # in the spawner, handed over
        try:
            pool.submit(shut_down)  # pair-2, which shuts the pool down too
        except BaseException as exc:
            returned.append(exc)
            all_returned.release()
        shut_down()

    failed = pool.submit(pow, 2, 2)
    failed.add_done_callback(retry_and_shut_down)
    may_fail.set()
    for _ in range(2):
        assert all_returned.acquire(timeout=BOUND)  # each shutdown() returned
    assert sorted(map(str, returned)) == ["pair-2", "pair-spawner"]
    with pytest.raises(RuntimeError, match="can't start new thread"):
        failed.result(0)


@pytest.mark.interleaving
def test_a_worker_back_from_shutdown_is_waited_for_like_any_other(pools: Pools) -> None:
    """A pool thread is skipped by the others only while it is inside
    shutdown(): once back, it is joined like any worker."""
    pool = pools.new(0, 2, name="back")
    both_running = threading.Barrier(2)
    # b stops inside shutdown(), registered; then marks its first join.
    b_inside = Gate(
        line_of(ThreadPool.shutdown, "self._spawner.join()"),
        marks=[line_of(ThreadPool.shutdown, "thread.join()")],
    )
    a_back, b_back, a_may_end = threading.Event(), threading.Event(), pools.gate()

    def a() -> None:
        both_running.wait(BOUND)
        assert b_inside.stopped.wait(BOUND)
        pool.shutdown(wait=True)  # does not wait for b, inside shutdown()
        a_back.set()
        assert a_may_end.wait(BOUND)

    def b() -> None:
        both_running.wait(BOUND)
        b_inside.install()
        try:
            pool.shutdown(wait=True)
        finally:
            b_inside.uninstall()
        b_back.set()

    futures = [pool.submit(a), pool.submit(b)]
    assert a_back.wait(BOUND)
    b_inside.go_on()
    wait_until(lambda: b_inside.stopped.is_set() or b_back.is_set(), "b to join or return")
    assert not b_back.is_set()  # b waits for a, back from shutdown() but running
    a_may_end.set()
    assert b_back.wait(BOUND)
    assert [f.result(BOUND) for f in futures] == [None, None]


@pytest.mark.interleaving
def test_a_worker_shutting_the_pool_down_waits_for_the_other_workers(pools: Pools) -> None:
    """Only the pool threads inside shutdown() are not waited for: a worker
    that shuts the pool down returns once every other worker has exited."""
    pool = pools.new(0, 2, name="last")
    gate, started = pools.gate(), threading.Event()
    busy = pool.submit(blocker(gate, started))
    assert started.wait(BOUND)
    joining = Gate(marks=[line_of(ThreadPool.shutdown, "thread.join()")])
    returned = threading.Event()

    def shut_down() -> bool:
        joining.install()
        try:
            pool.shutdown(wait=True)
        finally:
            joining.uninstall()
            returned.set()
        return busy.done()

    closer = pool.submit(shut_down)
    wait_until(lambda: joining.stopped.is_set() or returned.is_set(), "shutdown() to wait")
    gate.set()
    assert closer.result(BOUND) is True  # the busy worker had finished
    assert busy.result(0) == "last-1"


# ------------------------------------------------ run() callers whose loop is gone


def test_a_run_whose_loop_closed_is_delivered_to_nobody(
    pools: Pools, loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker finds the awaiting loop closed: nobody is left to take the
    outcome, nothing is reported, and the worker goes on serving."""
    pool = pools.new(0, 1, name="gone")
    gate = pools.gate()
    with caplog.at_level("CRITICAL", logger="iothreads"):
        task_of_a_closed_loop(loop_factory, pool.run(blocker(gate)))
        gate.set()
        # max is 1: the worker serves this once it has handed the outcome over.
        assert pool.submit(pow, 2, 5).result(BOUND) == 32
    assert caplog.text == ""
    assert pool.statistics().completed == 2


def test_a_queued_run_whose_loop_closed_is_withdrawn_quietly(
    pools: Pools, loop_factory: LoopFactory
) -> None:
    """shutdown(cancel_futures=True) finds the awaiting loop closed: nobody is
    left to tell, and the shutdown raises nothing."""
    pool = pools.new(0, 1, name="gone")
    gate, _ = occupy(pools, pool, 1)
    ran: list[str] = []
    task_of_a_closed_loop(loop_factory, pool.run(ran.append, "never"))
    assert pool.statistics().queued == 1
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    pool.shutdown(wait=True)
    assert ran == []
    assert pool.statistics().cancelled == 1
    assert pool_threads("gone") == []


# ---------------------------------------------- done-callbacks in the workers


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
    [record] = [r for r in caplog.records if "delivering the outcome" in r.getMessage()]
    assert record.exc_info is not None  # with its traceback
    assert record.exc_info[0] is error
    assert pool_threads("sys") == ["sys-1", "sys-spawner"]
