"""The worker pool of every EventLoopBase, and the main-loop object."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from typing import cast

import pytest

import iothreads
from iothreads import IOThread, MainLoop, ThreadPool

from .helpers import LoopFactory, refusing_executors, wait_until


def worker_names(prefix: str) -> list[str]:
    """The pool's worker threads (named prefix + a number; not its spawner)."""
    return [
        t.name for t in threading.enumerate() if re.fullmatch(re.escape(prefix) + r"\d+", t.name)
    ]


@pytest.fixture
def main_loop() -> Iterator[MainLoop]:
    ml = MainLoop(thread_pool_max=4)
    try:
        yield ml
    finally:
        ml.close()


# -- the IOThread's pool -----------------------------------------------------------


def test_min_threads_exist_before_the_first_request(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory, thread_pool_min=3) as io:
        pool = io.thread_pool
        assert isinstance(pool, ThreadPool)
        stats = pool.statistics()
        assert (stats.threads, stats.idle, stats.min, stats.max) == (3, 3, 3, 64)
        assert len(worker_names("IO io0 worker-")) == 3
    assert io.thread_pool is None
    assert worker_names("IO io0 worker-") == []


def test_pool_is_the_loops_default_executor(loop_factory: LoopFactory) -> None:
    async def in_iothread() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        a = await asyncio.to_thread(lambda: threading.current_thread().name)
        b = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        return a, b

    with IOThread("io0", loop_factory=loop_factory) as io:
        a, b = io.run_sync(in_iothread)
        assert a.startswith("IO io0 worker-")
        assert b.startswith("IO io0 worker-")
        assert io.thread_pool is not None
        assert io.thread_pool.statistics().completed == 2


def test_pool_limits_follow_the_properties_live(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        pool = io.thread_pool
        assert pool is not None
        io.update_params({"thread-pool-min": 2, "thread-pool-max": 5})
        assert (pool.min_threads, pool.max_threads) == (2, 5)
        wait_until(lambda: pool.statistics().threads == 2, "the 2 min workers")
        with pytest.raises(ValueError, match="bad thread-pool-min/thread-pool-max values"):
            io.thread_pool_max = 1
        assert (pool.min_threads, pool.max_threads) == (2, 5)
        iothreads.qom_set("/objects/io0", "thread-pool-min", 0)
        assert pool.min_threads == 0


# -- MainLoop ----------------------------------------------------------------------


def test_only_one_main_loop(main_loop: MainLoop) -> None:
    with pytest.raises(ValueError, match=r"^only one main-loop instance allowed$"):
        MainLoop()
    assert MainLoop.instance() is main_loop


def test_main_loop_can_be_created_again_after_close() -> None:
    MainLoop().close()
    ml = MainLoop()
    ml.close()
    ml.close()  # idempotent
    assert MainLoop.instance() is None


def test_main_loop_has_no_poll_properties(main_loop: MainLoop) -> None:
    assert main_loop.properties() == {
        "aio-max-batch": 0,
        "thread-pool-min": 0,
        "thread-pool-max": 4,
    }
    with pytest.raises(LookupError, match=r"^Property 'main-loop.poll-max-ns' not found$"):
        main_loop.get_property("poll-max-ns")
    assert not hasattr(main_loop, "poll_max_ns")


async def test_install_makes_its_pool_the_default_executor(main_loop: MainLoop) -> None:
    assert main_loop.thread_pool is None  # nothing before install
    main_loop.install()
    assert main_loop.loop is asyncio.get_running_loop()
    name = await asyncio.to_thread(lambda: threading.current_thread().name)
    assert name.startswith("main-loop worker-")
    main_loop.thread_pool_min = 2
    pool = main_loop.thread_pool
    assert pool is not None
    assert pool.min_threads == 2
    with pytest.raises(RuntimeError, match="already installed"):
        main_loop.install()


def test_install_on_a_loop_that_is_not_running_yet(
    main_loop: MainLoop, loop_factory: LoopFactory
) -> None:
    loop = loop_factory()
    try:
        main_loop.install(loop)
        assert main_loop.loop is loop
        name = loop.run_until_complete(asyncio.to_thread(lambda: threading.current_thread().name))
        assert name.startswith("main-loop worker-")
    finally:
        loop.close()


def test_install_on_a_loop_that_refuses_the_pool_leaves_nothing_installed(
    loop_factory: LoopFactory,
) -> None:
    """The loop keeps its own executor: install() raises its error, the pool
    (with its thread-pool-min workers) is shut down, and the main-loop can
    be installed on another loop."""
    main_loop = MainLoop(thread_pool_min=2)
    refusing, other = refusing_executors(loop_factory)(), loop_factory()
    try:
        with pytest.raises(TypeError, match="this loop keeps its own executor"):
            main_loop.install(refusing)
        assert (main_loop.loop, main_loop.thread_pool) == (None, None)
        assert worker_names("main-loop worker-") == []
        main_loop.install(other)
        assert main_loop.loop is other
    finally:
        main_loop.close()
        refusing.close()
        other.close()


def test_main_loop_in_the_object_tree() -> None:
    ml = iothreads.object_add("main-loop", "main-loop", **{"thread-pool-max": 8})
    try:
        assert isinstance(ml, MainLoop)
        assert iothreads.qom_get("/objects/main-loop", "type") == "main-loop"
        assert iothreads.qom_get("/objects/main-loop", "thread-pool-max") == 8
        assert [p.name for p in iothreads.qom_list("/objects/main-loop")] == [
            "type",
            "aio-max-batch",
            "thread-pool-min",
            "thread-pool-max",
        ]
        assert iothreads.query_iothreads() == []
        assert iothreads.iothread_by_id("main-loop") is None
        with pytest.raises(
            iothreads.IOThreadsError, match=r"^object 'main-loop' is in use, can not be deleted$"
        ):
            iothreads.object_del("main-loop")
        with pytest.raises(ValueError, match=r"^only one main-loop instance allowed$"):
            iothreads.object_add("main-loop", "other")
        with pytest.raises(ValueError, match=r"^Parameter 'poll-max-ns' is unexpected$"):
            iothreads.object_add("main-loop", "main-loop2", **{"poll-max-ns": 0})
    finally:
        cast(MainLoop, ml).close()  # asserted above
    with pytest.raises(iothreads.DeviceNotFound):
        iothreads.qom_get("/objects/main-loop", "type")
