"""The child of a fork(): the parent's IOThreads, pools and main-loop read as
stopped there, no lock they held can hang it, and it makes its own.

Each child runs its checks inside ``os.fork()``'s return (never back into
pytest), reports what it saw through a pipe and exits with ``os._exit``; the
parent waits for the report and the child, bounded, kills a child that does
not report in time, and asserts on the report.  A child that would hang on
an inherited lock also has an alarm that ends it.

Forking a process with threads warns on Python 3.12+ and on the
free-threaded build ("This process ... is multi-threaded, use of fork() may
lead to deadlocks in the child"): that is the very case under test, so the
tests filter that warning, and only it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest

import iothreads
from iothreads import IOThread, MainLoop, ThreadPool
from iothreads._aio import _inbox, context_of
from iothreads._registry import USER_OBJECTS

from .helpers import WAIT, LoopFactory, Report, fork_and_inspect

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()"),
    # The situation under test; see the module docstring.
    pytest.mark.filterwarnings(
        r"ignore:This process \(pid=\d+\) is multi-threaded:DeprecationWarning"
    ),
]


def outcome(call: Callable[[], object]) -> str:
    """What *call* did: 'ok: <result>' or '<error type>: <message>'."""
    try:
        return f"ok: {call()!r}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def inspect_in_child(io: IOThread, pool: ThreadPool, loop_factory: LoopFactory) -> Report:
    """In the child: what the parent's objects do, and whether new ones work."""
    # A child that hangs on an inherited lock is ended by the alarm (whatever
    # handler the parent had, pytest-timeout's say, is not wanted here).
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(int(WAIT))
    report: Report = {
        "running": io.running,
        "thread_id": io.thread_id,
        "current_iothread": iothreads.current_iothread() is not None,
        "in_pool_worker": pool.owns_current_thread(),
        "run_sync": outcome(lambda: io.run_sync(pow, 2, 3)),
        "call_soon_threadsafe": outcome(lambda: io.call_soon_threadsafe(print)),
        "submit": outcome(lambda: io.submit(pow, 2, 3)),
        "pool_submit": outcome(lambda: pool.submit(pow, 2, 3)),
        "pool_threads": pool.statistics().threads,
        "properties": outcome(lambda: io.update_params({"poll-max-ns": 1}) or io.poll_max_ns),
        "stop": outcome(io.stop),
        "start": outcome(io.start),
        "objects": [info.id for info in iothreads.query_iothreads()],
    }
    # The child's own: under the same id, and a main-loop of its own.
    with IOThread("io0", loop_factory=loop_factory, thread_pool_min=1) as mine:
        report["own_run_sync"] = outcome(lambda: mine.run_sync(pow, 2, 5))
        report["own_pool"] = outcome(lambda: mine.submit(pool_square, 6).result(WAIT))
        report["own_objects"] = [info.id for info in iothreads.query_iothreads()]
    main_loop = MainLoop()
    main_loop.close()
    report["main_loop"] = "ok"
    signal.alarm(0)
    return report


async def pool_square(n: int) -> int:
    """n*n computed in a worker of the running IOThread's pool."""
    return await asyncio.to_thread(pow, n, 2)


def stopped(what: str) -> str:
    return f"{what}: IOThread 'io0' belongs to process {os.getpid()}, which this process"


def check_report(report: Report) -> None:
    """The parent's IOThread and pool read as stopped; the child's own work."""
    assert "child failed" not in report, report
    pool_refusal = f"RuntimeError: thread pool 'IO io0 worker' belongs to process {os.getpid()}"
    assert report == report | {
        "running": False,
        "thread_id": -1,
        "current_iothread": False,
        "in_pool_worker": False,
        "pool_threads": 0,
        "properties": "ok: 1",
        "stop": "ok: None",
        "start": "RuntimeError: IOThread 'io0' can only be started once; create a new IOThread",
        "objects": [],
        "own_run_sync": "ok: 32",
        "own_pool": "ok: 36",
        "own_objects": ["io0"],
        "main_loop": "ok",
    }
    for call in ("run_sync", "call_soon_threadsafe", "submit"):
        assert report[call].startswith(stopped("IOThreadStopped")), report[call]
    assert report["pool_submit"].startswith(pool_refusal), report["pool_submit"]


@pytest.fixture
def io0(loop_factory: LoopFactory) -> Iterator[IOThread]:
    with IOThread("io0", loop_factory=loop_factory, thread_pool_min=1) as io:
        assert io.run_sync(pow, 2, 2) == 4
        yield io
        # The child used nothing of the parent's.
        assert io.running
        assert io.run_sync(pow, 2, 3) == 8
        assert io.submit(pool_square, 3).result(WAIT) == 9
        assert [info.id for info in iothreads.query_iothreads()] == ["io0"]


def test_a_forked_child_sees_the_iothread_stopped_and_makes_its_own(
    io0: IOThread, loop_factory: LoopFactory
) -> None:
    pool = io0.thread_pool
    assert pool is not None
    check_report(fork_and_inspect(lambda: inspect_in_child(io0, pool, loop_factory)))


def test_no_lock_held_at_the_fork_hangs_the_child(io0: IOThread, loop_factory: LoopFactory) -> None:
    """Another thread holds every lock the child goes on to take; the parent
    has a main-loop, and the child makes one of its own."""
    pool = io0.thread_pool
    assert pool is not None
    main_loop = MainLoop()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with io0._lock, pool._lock, USER_OBJECTS._lock, MainLoop._INSTANCE_LOCK:
            held.set()
            assert release.wait(WAIT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(WAIT)
        report = fork_and_inspect(lambda: inspect_in_child(io0, pool, loop_factory))
    finally:
        release.set()
        holder.join(WAIT)
        main_loop.close()
    check_report(report)


@pytest.mark.parametrize("where", ["the IOThread", "a worker of its pool"])
def test_a_fork_from_an_iothread_or_a_worker(
    io0: IOThread, loop_factory: LoopFactory, where: str
) -> None:
    """The child's one thread is no IOThread's, nor a worker's."""
    pool = io0.thread_pool
    assert pool is not None

    def fork_there() -> Report:
        return fork_and_inspect(lambda: inspect_in_child(io0, pool, loop_factory))

    if where == "the IOThread":
        report = io0.run_sync(fork_there)
    else:
        report = pool.submit(fork_there).result(WAIT)
    check_report(report)


def multiprocessing_child(
    conn: Connection, io: IOThread, pool: ThreadPool, loop_factory: LoopFactory
) -> None:
    """The target of a multiprocessing child: the report goes through *conn*."""
    conn.send(inspect_in_child(io, pool, loop_factory))
    conn.close()


def test_multiprocessing_fork_children(io0: IOThread, loop_factory: LoopFactory) -> None:
    pool = io0.thread_pool
    assert pool is not None
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    children = [
        ctx.Process(target=multiprocessing_child, args=(sender, io0, pool, loop_factory))
        for _ in range(2)
    ]
    reports = []
    try:
        for child in children:
            child.start()
        for _ in children:
            assert receiver.poll(WAIT), "a child did not report in time"
            reports.append(receiver.recv())
        for child in children:
            child.join(WAIT)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        receiver.close()
        sender.close()
    assert [child.exitcode for child in children] == [0, 0]
    for report in reports:
        check_report(report)


def test_an_iothread_never_started_can_start_in_the_child(loop_factory: LoopFactory) -> None:
    """Only what had started is stopped by the fork: an IOThread made but
    not started yet in the parent starts and serves in the child."""
    io = IOThread("unstarted", loop_factory=loop_factory)

    def in_child() -> Report:
        io.start()
        try:
            return {"ran_on": io.run_sync(lambda: threading.current_thread().name, timeout=WAIT)}
        finally:
            io.stop()

    try:
        assert fork_and_inspect(in_child) == {"ran_on": "IO unstarted"}
        assert not io.running  # the parent's is still unstarted
    finally:
        io.stop()


async def test_a_forked_child_forgets_the_contexts_serving_the_parents_loops() -> None:
    """The parent's loops do not run in the child: no AioContext serves them
    (a main-loop's that polls, here), and the native count of loops running
    Python, for the spin's hand-over wait, starts from 0."""
    loop = asyncio.get_running_loop()
    main_loop = MainLoop()
    main_loop.install(poll_max_ns=262_144)
    try:
        aio = main_loop.aio_context
        assert aio is not None
        assert context_of(loop) is aio
        core = _inbox.native_core
        if core is not None:
            aio._inbox.woke()  # counted awake: it runs Python (this test)
            assert core._loops_awake() > 0

        def inspect() -> dict[str, object]:
            return {
                "served": context_of(loop) is not None,
                "awake": core._loops_awake() if core is not None else 0,
            }

        assert fork_and_inspect(inspect) == {"served": False, "awake": 0}
        assert context_of(loop) is not None  # the parent's own stays
    finally:
        main_loop.close()
