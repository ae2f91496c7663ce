"""Thread-pool limits an object is given: bounded, validated, and applied
without making the writer (the monitor, over QMP) wait for threads.

A write of thread-pool-min/max returns while the pool's spawner is held
starting a worker: it never waits for threads, nor makes them one by one
itself.  A value above ``THREAD_POOL_LIMIT`` is refused, naming it, and
changes nothing.  Thread starts the system refuses are counted, logged, and
the pool goes on with the workers it has.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator

import pytest

import iothreads
from iothreads import IOThread, MainLoop, ThreadPool
from iothreads._props import THREAD_POOL_LIMIT

from .helpers import BOUND, HUGE, LoopFactory, above_limit, hold_thread_starts, wait_until


@pytest.fixture
def io0(loop_factory: LoopFactory) -> Iterator[IOThread]:
    with IOThread("io0", loop_factory=loop_factory) as io:
        yield io


# -- the bound -------------------------------------------------------------------------


@pytest.mark.parametrize("updates", [
    {"thread-pool-max": HUGE, "thread-pool-min": HUGE},
    {"thread-pool-max": HUGE},
    {"thread-pool-max": THREAD_POOL_LIMIT + 1},
])  # fmt: skip
def test_limits_above_the_bound_are_refused_and_change_nothing(
    io0: IOThread, updates: dict[str, int]
) -> None:
    pool = io0.thread_pool
    assert pool is not None
    before, stats = io0.properties(), pool.statistics()
    message = above_limit("thread-pool-max", updates["thread-pool-max"])
    with pytest.raises(iothreads.InvalidParameterValue, match=f"^{re.escape(message)}$"):
        io0.update_params(updates)
    assert io0.properties() == before
    assert pool.statistics() == stats
    assert io0.run_sync(pow, 2, 3) == 8


def test_the_bound_names_the_limit_it_refuses() -> None:
    message = above_limit("thread-pool-min", THREAD_POOL_LIMIT + 1)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        MainLoop(thread_pool_min=THREAD_POOL_LIMIT + 1, thread_pool_max=THREAD_POOL_LIMIT)
    assert MainLoop.instance() is None
    with pytest.raises(ValueError, match=re.escape(above_limit("thread-pool-max", HUGE))):
        ThreadPool(0, HUGE)


# -- no work in proportion to the value on the writer's path --------------------------


def test_raising_the_limits_to_the_bound_returns_while_the_spawner_is_held(
    io0: IOThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    may_start = hold_thread_starts(monkeypatch, "IO io0 worker-")
    pool = io0.thread_pool
    assert pool is not None
    try:
        # The spawner makes the first worker and is held starting it: the
        # write has returned all the same, having made no worker itself.
        io0.update_params(
            {"thread-pool-max": THREAD_POOL_LIMIT, "thread-pool-min": THREAD_POOL_LIMIT}
        )
        assert io0.thread_pool_min == THREAD_POOL_LIMIT
        wait_until(lambda: pool.statistics().spawned == 1, "the spawner to make a worker")
        # The object tree answers meanwhile, and a smaller min stops the spawner.
        assert [info.id for info in iothreads.query_iothreads()] == ["io0"]
        io0.update_params({"thread-pool-min": 0, "thread-pool-max": 4})
        stats = pool.statistics()
        assert (stats.spawned, stats.min, stats.max) == (1, 0, 4)
    finally:
        may_start.set()
    assert io0.run_sync(pow, 2, 3) == 8
    assert pool.submit(pow, 2, 4).result(BOUND) == 16
    assert pool.statistics().spawned == 1


# -- refused thread starts -----------------------------------------------------------


def test_a_refused_thread_start_is_counted_logged_and_the_pool_serves_on(
    io0: IOThread, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_start = threading.Thread.start
    refuse = True

    def start(thread: threading.Thread) -> None:
        if refuse and thread.name == "IO io0 worker-2":
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    pool = io0.thread_pool
    assert pool is not None
    with caplog.at_level(logging.WARNING, logger="iothreads"):
        io0.thread_pool_min = 3
        # Logged (outside the pool's lock) once the refused worker is undone.
        # The text, not the records: the handler appends the record before it
        # writes the line, and a free-threaded build can read in between.
        wait_until(
            lambda: "refused to start thread 'IO io0 worker-2'" in caplog.text,
            "the refusal's log line",
        )
    # The spawner stopped at the refusal instead of trying again at once.
    stats = pool.statistics()
    assert (stats.threads, stats.spawned, stats.exited, stats.min) == (1, 2, 1, 3)
    assert "can't start new thread" in caplog.text
    assert io0.run_sync(pow, 2, 3) == 8
    assert pool.submit(pow, 2, 4).result(BOUND) == 16
    # A new write of the limits tries again.
    refuse = False
    io0.thread_pool_max = 8
    wait_until(lambda: pool.statistics().threads == 3, "the min workers")
    assert pool.statistics().start_failures == 1
