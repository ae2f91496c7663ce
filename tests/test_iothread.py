"""IOThread lifecycle and every cross-thread path, on both loops.

Async tests run once per loop kind (conftest's loop factories hook) and their
IOThread uses the same kind; sync tests that take ``loop_factory`` run once
per kind too.  Nothing here sleeps to synchronise: threads meet on
``threading.Event``s and futures, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import os
import random
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, TypeAlias

import pytest

import iothreads._shutdown
from iothreads import IOThread, IOThreadStopped

from .helpers import WAIT, LoopFactory, gate_loop, loop_kind, wait_until

if sys.version_info >= (3, 12):
    TaskCoroutine: TypeAlias = Coroutine[Any, Any, Any]
else:  # what a task factory is given: a generator-based coroutine too
    TaskCoroutine: TypeAlias = Coroutine[Any, Any, Any] | Generator[Any, None, Any]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.fixture
async def io(loop_factory: LoopFactory) -> AsyncIterator[IOThread]:
    async with IOThread("io0", loop_factory=loop_factory) as io:
        yield io


def flush(io: IOThread) -> None:
    """Return once everything queued on io before this call has run."""
    io.submit(lambda: None).result(WAIT)


# -- lifecycle ----------------------------------------------------------------


def test_start_publishes_thread_and_loop(loop_factory: LoopFactory) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    try:
        assert io.running
        assert io.thread_id == io.run_sync(threading.get_native_id)
        assert io.run_sync(lambda: threading.current_thread().name) == "IO io0"
        probe = loop_factory()
        probe.close()
        assert loop_kind(io.loop) == loop_kind(probe)  # type: ignore[arg-type]
    finally:
        io.stop()
    assert (io.running, io.thread_id, io.loop) == (False, -1, None)


def test_os_thread_name(loop_factory: LoopFactory) -> None:
    with IOThread("a-long-iothread-name", loop_factory=loop_factory) as io:
        path = f"/proc/self/task/{io.thread_id}/comm"
        if not os.path.exists(path):
            pytest.skip("no /proc on this platform")
        with open(path) as f:
            assert f.read().strip() == "IO a-long-iothr"  # the kernel keeps 15 bytes


def test_stop_is_idempotent_and_start_is_one_shot(loop_factory: LoopFactory) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    io.stop()  # never started: nothing to do
    io.start()
    with pytest.raises(RuntimeError, match="can only be started once"):
        io.start()
    io.stop()
    io.stop()
    with pytest.raises(RuntimeError, match="can only be started once; create a new IOThread"):
        io.start()


def test_init_error_reaches_start_and_leaves_no_thread() -> None:
    class Boom(Exception):
        pass

    def factory() -> asyncio.AbstractEventLoop:
        raise Boom("no loop today")

    io = IOThread("io0", loop_factory=factory)
    with pytest.raises(Boom, match="no loop today"):
        io.start()
    assert not io.running
    assert all(t.name != "IO io0" for t in threading.enumerate())
    assert iothreads.iothread_by_id("io0") is None


async def test_init_error_reaches_astart() -> None:
    io = IOThread("io0", loop_factory=lambda: 1 / 0)  # type: ignore[arg-type, return-value]
    with pytest.raises(ZeroDivisionError):
        await io.astart()
    assert iothreads.iothread_by_id("io0") is None


@pytest.mark.parametrize(("choice", "kind"), [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_iothreads_loop_env_picks_the_default(
    monkeypatch: pytest.MonkeyPatch, choice: str, kind: str
) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.setenv("IOTHREADS_LOOP", choice)
    with IOThread("io0") as io:
        assert loop_kind(io.loop) == kind  # type: ignore[arg-type]


def test_iothreads_loop_env_rejects_junk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTHREADS_LOOP", "trio")
    with pytest.raises(
        ValueError, match="IOTHREADS_LOOP must be 'asyncio' or 'uvloop', not 'trio'"
    ):
        IOThread("io0").start()


def test_stop_from_its_own_thread_is_refused(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        with pytest.raises(RuntimeError, match="cannot be stopped from its own thread"):
            io.run_sync(io.stop)
        assert io.running


def test_200_create_stop_cycles_leave_nothing_behind(loop_factory: LoopFactory) -> None:
    before = threading.active_count()
    for i in range(200):
        with IOThread(f"io{i}", loop_factory=loop_factory) as io:
            assert io.run_sync(lambda: 1) == 1
    assert threading.active_count() == before
    # conftest's no_leaks also checks that every wake-up descriptor closed.


async def test_async_context_manager_never_blocks_the_caller(loop_factory: LoopFactory) -> None:
    # While astart/aclose are pending, the caller's loop keeps running callbacks.
    ticks = 0
    stop_ticking = False

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if not stop_ticking:
            asyncio.get_running_loop().call_soon(tick)

    asyncio.get_running_loop().call_soon(tick)
    async with IOThread("io0", loop_factory=loop_factory) as io:
        assert io.running
    stop_ticking = True
    assert ticks > 0


# -- call_soon_threadsafe -------------------------------------------------------


async def test_call_soon_threadsafe_runs_in_the_iothread(io: IOThread) -> None:
    done = concurrent.futures.Future[str]()
    handle = io.call_soon_threadsafe(lambda: done.set_result(threading.current_thread().name))
    assert isinstance(handle, asyncio.Handle)
    assert await asyncio.wrap_future(done) == "IO io0"


def test_cancelled_handle_never_runs(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        ran: list[int] = []
        gate = gate_loop(io)
        handles = [io.call_soon_threadsafe(ran.append, i) for i in range(10)]
        for h in handles[::2]:
            h.cancel()
        gate.set()
        flush(io)
        assert ran == [1, 3, 5, 7, 9]
        assert all(h.cancelled() for h in handles[::2])


def test_call_soon_threadsafe_copies_context_or_takes_one(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        seen = concurrent.futures.Future[tuple[str, str]]()
        token = request_id.set("from-caller")
        try:
            io.call_soon_threadsafe(lambda: seen.set_result((request_id.get(), "")))
            assert seen.result(WAIT)[0] == "from-caller"
            ctx = contextvars.Context()
            other = concurrent.futures.Future[str]()
            io.call_soon_threadsafe(lambda: other.set_result(request_id.get()), context=ctx)
            assert other.result(WAIT) == "none"
        finally:
            request_id.reset(token)


def test_callback_exception_goes_to_the_loop_handler(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        got = concurrent.futures.Future[BaseException]()
        assert io.loop is not None
        io.loop.set_exception_handler(lambda loop, ctx: got.set_result(ctx["exception"]))
        io.call_soon_threadsafe(lambda: 1 / 0)
        assert isinstance(got.result(WAIT), ZeroDivisionError)
        assert io.run_sync(lambda: "still serving") == "still serving"


# -- run ------------------------------------------------------------------------


async def coro_add(a: int, b: int) -> tuple[int, str]:
    await asyncio.sleep(0)
    return a + b, threading.current_thread().name


async def test_run_coroutine_function(io: IOThread) -> None:
    assert await io.run(coro_add, 1, 2) == (3, "IO io0")


async def test_run_coroutine_object(io: IOThread) -> None:
    assert await io.run(coro_add(2, 3)) == (5, "IO io0")


async def test_run_plain_function_on_the_iothread(io: IOThread) -> None:
    assert await io.run(lambda x: (x * 2, threading.current_thread().name), 21) == (42, "IO io0")


async def test_run_copies_contextvars_in(io: IOThread) -> None:
    async def read() -> str:
        return request_id.get()

    request_id.set("req-1")
    assert await io.run(read) == "req-1"
    assert await io.run(request_id.get) == "req-1"


async def test_run_propagates_exceptions_with_traceback(io: IOThread) -> None:
    async def fail() -> None:
        await asyncio.sleep(0)
        raise KeyError("inner")

    def fail_sync() -> None:
        raise ValueError("sync inner")

    with pytest.raises(KeyError, match="inner") as info:
        await io.run(fail)
    assert "fail" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    with pytest.raises(ValueError, match="sync inner") as info2:
        await io.run(fail_sync)
    assert "fail_sync" in [f.name for f in traceback.extract_tb(info2.value.__traceback__)]


async def test_run_from_the_iothreads_own_loop_is_inline(io: IOThread) -> None:
    async def outer() -> tuple[Any, Any, int]:
        inner_thread = await io.run(threading.get_native_id)
        return inner_thread, await io.run(coro_add, 1, 1), io.aio_context.statistics().submitted

    before = io.aio_context.statistics().submitted
    thread_id, added, submitted_inside = await io.run(outer)
    assert thread_id == io.thread_id
    assert added == (2, "IO io0")
    # Only `outer` itself crossed threads: the inner runs used no inbox.
    assert submitted_inside == before + 1


async def test_run_from_another_iothread(io: IOThread, loop_factory: LoopFactory) -> None:
    async with IOThread("io1", loop_factory=loop_factory) as io1:

        async def hop() -> tuple[int, str]:
            return await io.run(coro_add, 20, 22)

        assert await io1.run(hop) == (42, "IO io0")


@pytest.mark.parametrize("cancels", [1, 2])
async def test_cancelling_the_caller_cancels_and_waits_for_the_inner_task(
    io: IOThread, cancels: int
) -> None:
    """Cancelled again while it waits, the caller goes on waiting."""
    caller = asyncio.get_running_loop()
    started = caller.create_future()
    saw_cancel = caller.create_future()
    release: asyncio.Event | None = None
    finished = threading.Event()

    async def inner() -> None:
        nonlocal release
        release = asyncio.Event()
        caller.call_soon_threadsafe(started.set_result, None)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            caller.call_soon_threadsafe(saw_cancel.set_result, None)
            await release.wait()  # cleanup that takes a while
            finished.set()
            raise

    task = asyncio.create_task(io.run(inner))
    await asyncio.wait_for(started, WAIT)
    task.cancel()
    await asyncio.wait_for(saw_cancel, WAIT)
    for _ in range(cancels - 1):
        task.cancel()
        for _ in range(3):
            await asyncio.sleep(0)  # loop iterations enough for the task to see it
    # The inner task is cancelled but still cleaning up: the caller must wait.
    assert not task.done()
    assert release is not None
    io.call_soon_threadsafe(release.set)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert finished.is_set()


async def test_cancelled_while_queued_never_runs(io: IOThread) -> None:
    ran = threading.Event()

    async def body() -> None:
        ran.set()

    gate = gate_loop(io)
    task = asyncio.create_task(io.run(body))
    await asyncio.sleep(0)  # the task submits its call, which queues behind the gate
    task.cancel()
    await asyncio.sleep(0)  # the task handles its cancellation: it queues the inner cancel
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    await io.run(lambda: None)
    assert not ran.is_set()


async def test_inner_cancelling_itself_reaches_the_caller(io: IOThread) -> None:
    async def give_up() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await io.run(give_up)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the caller itself was not cancelled


async def test_run_on_a_stopped_iothread(loop_factory: LoopFactory) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    with pytest.raises(IOThreadStopped, match="'io0' is not running; start\\(\\) it first"):
        await io.run(lambda: None)
    await io.astart()
    await io.aclose()
    with pytest.raises(IOThreadStopped, match="'io0' is stopped; it takes no more work"):
        await io.run(lambda: None)
    with pytest.raises(IOThreadStopped):
        io.call_soon_threadsafe(lambda: None)
    with pytest.raises(IOThreadStopped):
        io.submit(lambda: None)
    assert issubclass(IOThreadStopped, RuntimeError)


async def test_run_rejects_what_it_cannot_run(io: IOThread) -> None:
    with pytest.raises(TypeError, match="expected a callable or a coroutine object, not 42"):
        await io.run(42)  # type: ignore[call-overload]
    coro = coro_add(1, 2)
    with pytest.raises(TypeError, match="a coroutine object takes no arguments, got 1"):
        await io.run(coro, 3)  # type: ignore[call-overload]
    coro.close()
    with pytest.raises(TypeError, match="not 'nope'"):
        io.submit("nope")  # type: ignore[call-overload]


# -- submit and run_sync ---------------------------------------------------------


def test_submit_from_a_plain_thread(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        assert io.submit(coro_add, 1, 2).result(WAIT) == (3, "IO io0")
        assert io.submit(coro_add(1, 1)).result(WAIT) == (2, "IO io0")
        with pytest.raises(ZeroDivisionError):
            io.submit(lambda: 1 / 0).result(WAIT)


def test_cancelling_the_future_cancels_the_inner_task(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        started = threading.Event()
        cancelled = threading.Event()

        async def forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        future = io.submit(forever)
        assert started.wait(WAIT)
        assert future.cancel()
        assert cancelled.wait(WAIT)


def test_future_cancelled_while_queued_never_runs(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        ran = threading.Event()
        gate = gate_loop(io)
        future = io.submit(ran.set)
        assert future.cancel()
        gate.set()
        flush(io)
        assert not ran.is_set()


def test_run_sync(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        assert io.run_sync(coro_add, 2, 2) == (4, "IO io0")
        with pytest.raises(RuntimeError, match="would deadlock"):
            io.run_sync(lambda: io.run_sync(lambda: None))


# -- stop with work pending --------------------------------------------------------


def test_stop_gives_every_pending_submission_an_outcome(loop_factory: LoopFactory) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    ran: list[int] = []
    cleaned_up = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    async def agen() -> Any:
        try:
            yield 1
            yield 2
        finally:
            ran.append(-1)

    suspended: list[Any] = []

    async def start_agen() -> None:
        gen = agen()
        suspended.append(gen)
        await gen.__anext__()  # left suspended: shutdown_asyncgens must close it

    io.run_sync(start_agen)
    gate = gate_loop(io)
    for i in range(100):
        io.call_soon_threadsafe(ran.append, i)
    pending_task = io.submit(forever)
    stopper = threading.Thread(target=io.stop)
    stopper.start()
    # The stop request is queued behind the work: the loop is still held.
    gate.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert ran == [*range(100), -1]  # callbacks in order, then the async generator closed
    with pytest.raises(IOThreadStopped, match="stopped before the call completed"):
        pending_task.result(WAIT)
    assert cleaned_up.is_set()


@pytest.mark.parametrize("stuck_in", ["task", "pool", "task and pool", "chain of tasks"])
def test_a_stop_held_up_by_user_code_says_what_it_waits_for(
    loop_factory: LoopFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stuck_in: str,
) -> None:
    """Tasks that go on after their cancellation (or start successors), or a
    pool call that does not return, hold stop() up: once the stop as a whole
    has taken the delay, it warns once, naming them, and goes on waiting."""
    monkeypatch.setattr(iothreads._shutdown, "STOP_WARNING_DELAY", 0.01)
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    started, release = threading.Event(), threading.Event()

    def warned() -> bool:
        return "has been stopping" in caplog.text

    def blocked() -> None:
        started.set()
        release.wait(WAIT)

    def occupy_the_pool() -> None:
        asyncio.get_running_loop().run_in_executor(None, blocked)

    async def stubborn() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.to_thread(release.wait, WAIT)  # clean-up that takes a while

    async def succeeded(generation: int) -> None:
        # Each generation ends at once when cancelled, but starts the next one:
        # no single wait is long, the stop as a whole is (bounded: 10 000).
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not warned() and generation < 10_000:
                await asyncio.sleep(0.001)  # pacing only: the warning is what ends it
                asyncio.get_running_loop().create_task(succeeded(generation + 1))

    if "task" in stuck_in:
        io.submit(succeeded, 0) if stuck_in == "chain of tasks" else io.submit(stubborn)
    if "pool" in stuck_in:
        io.run_sync(occupy_the_pool)
    assert started.wait(WAIT)
    with caplog.at_level("WARNING", logger="iothreads"):
        stopper = threading.Thread(target=io.stop)
        stopper.start()
        wait_until(warned, "the warning")
        assert "IOThread 'io0'" in caplog.text
        assert (
            "active=1" if stuck_in == "pool" else "succeeded" if "chain" in stuck_in else "stubborn"
        ) in caplog.text
        release.set()
        stopper.join(WAIT)
    assert not stopper.is_alive()
    assert caplog.text.count("has been stopping") == 1


def test_a_coroutines_result_is_delivered_by_its_tasks_last_step(
    loop_factory: LoopFactory,
) -> None:
    """Not by the task's done callback, which asyncio calls one loop
    iteration later: what the last step itself schedules finds the outcome
    delivered already.  The task is named after the coroutine (its repr
    shows the IOThread's wrapper around it)."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    gate = asyncio.Event()
    checked = threading.Event()
    seen: list[object] = []

    async def last_step() -> int:
        await gate.wait()  # until the test holds the future
        seen.append(asyncio.current_task().get_name())  # type: ignore[union-attr]

        def check() -> None:
            seen.append(future.done())
            checked.set()

        asyncio.get_running_loop().call_soon(check)
        return 42

    try:
        future = io.submit(last_step)
        io.call_soon_threadsafe(gate.set)
        assert future.result(WAIT) == 42
        assert checked.wait(WAIT)
        assert seen == [last_step.__qualname__, True]
        # Nor does the finished task stay registered (nothing would drop it).
        assert io.run_sync(lambda: len(io._calls.tasks)) == 0
    finally:
        io.stop()


@pytest.mark.parametrize("task_factory", ["none", "lazy"])
def test_a_coroutines_first_step_runs_in_its_calls_turn_from_python_3_12(
    loop_factory: LoopFactory, task_factory: str
) -> None:
    """From Python 3.12 a call's coroutine starts eagerly: its first step
    runs before the work queued after the call.  On 3.11, or where the loop
    has a task factory of its own (here one making lazy tasks), the task's
    first step waits for the loop's ready callbacks, after that work."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    order: list[str] = []

    async def coroutine() -> None:
        order.append("coroutine")

    def lazy(
        loop: asyncio.AbstractEventLoop,
        coro: TaskCoroutine,
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
        eager_start: bool | None = None,  # uvloop 0.23 passes one
    ) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=loop, name=name, context=context)

    try:
        if task_factory == "lazy":
            io.run_sync(lambda: asyncio.get_running_loop().set_task_factory(lazy))
        gate = gate_loop(io)
        # One pass takes both: the gate holds the loop meanwhile.
        calls = [io.submit(coroutine), io.submit(order.append, "function")]
        gate.set()
        for call in calls:
            call.result(WAIT)
        eager = sys.version_info >= (3, 12) and task_factory == "none"
        assert order == (["coroutine", "function"] if eager else ["function", "coroutine"])
    finally:
        io.stop()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks came in Python 3.12")
async def test_a_coroutine_gets_one_outcome_under_an_eager_task_factory(
    loop_factory: LoopFactory,
) -> None:
    """An eager task runs its first step inside ``create_task``: a coroutine
    done by then has delivered its result before the IOThread registered the
    task and its done callback, which then finds nothing left to do."""

    def eager() -> None:
        if sys.version_info < (3, 12):  # the skipif's condition, where mypy reads it
            raise AssertionError("eager tasks came in Python 3.12")
        # Not asyncio.eager_task_factory: uvloop 0.23 passes it an eager_start
        # it refuses.
        asyncio.get_running_loop().set_task_factory(
            lambda loop, coro, **kw: asyncio.Task(
                coro, loop=loop, name=kw.get("name"), context=kw.get("context"), eager_start=True
            )
        )

    async with IOThread("io0", loop_factory=loop_factory) as io:
        await io.run(eager)

        async def done_at_once() -> int:
            return 42

        async def suspends() -> int:
            await asyncio.sleep(0)
            return 43

        assert await io.run(done_at_once) == 42
        assert io.submit(done_at_once).result(WAIT) == 42
        assert await io.run(suspends) == 43
        # Nothing left registered: the done callbacks ran (the call after them).
        await io.run(lambda: None)
        assert await io.run(lambda: len(io._calls.tasks)) == 0


def test_a_submitted_coroutine_whose_future_is_dropped_is_not_collected_mid_run(
    loop_factory: LoopFactory,
) -> None:
    """asyncio holds a task only weakly: the IOThread holds its calls' tasks,
    so one waiting on nothing else outlives a garbage collection and is
    cancelled by the stop, its clean-up running as a cancellation."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    started = threading.Event()
    cleaned_up: list[str] = []

    async def waits_on_nothing_else() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaned_up.append("cancelled")
            raise

    io.submit(waits_on_nothing_else)  # its future is dropped at once
    assert started.wait(WAIT)
    io.run_sync(gc.collect)
    io.stop()
    assert cleaned_up == ["cancelled"]


async def test_stop_while_awaiting_run_raises_iothread_stopped(loop_factory: LoopFactory) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    await io.astart()
    started = asyncio.get_running_loop().create_future()
    caller = asyncio.get_running_loop()

    async def forever() -> None:
        caller.call_soon_threadsafe(started.set_result, None)
        await asyncio.Event().wait()

    task = asyncio.create_task(io.run(forever))
    await asyncio.wait_for(started, WAIT)
    await io.aclose()
    with pytest.raises(IOThreadStopped):
        await asyncio.wait_for(task, WAIT)


def test_submissions_racing_stop_get_exactly_one_outcome(loop_factory: LoopFactory) -> None:
    """Producers hammer the IOThread while it stops: every call either raises
    IOThreadStopped or has its callback run, exactly once."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    lock = threading.Lock()
    ran: list[int] = []
    accepted: list[int] = []
    go = threading.Barrier(5)

    def producer(base: int) -> None:
        rng = random.Random(base)
        go.wait(WAIT)
        for i in range(base, base + 20000):
            try:
                io.call_soon_threadsafe(ran.append, i)
            except IOThreadStopped:
                return
            with lock:
                accepted.append(i)
            if rng.random() < 0.01:
                os.sched_yield()

    threads = [threading.Thread(target=producer, args=(k * 100000,)) for k in range(4)]
    for t in threads:
        t.start()
    go.wait(WAIT)
    io.stop()
    for t in threads:
        t.join(WAIT)
    assert sorted(ran) == sorted(accepted)
    assert len(set(ran)) == len(ran)


# -- in_iothread / current_iothread -----------------------------------------------


def test_in_iothread_and_current_iothread(loop_factory: LoopFactory) -> None:
    assert not iothreads.in_iothread()
    assert iothreads.current_iothread() is None
    with IOThread("io0", loop_factory=loop_factory) as io:
        assert io.run_sync(iothreads.in_iothread)
        assert io.run_sync(iothreads.current_iothread) is io


# -- lifecycle races (found in review) ----------------------------------------------


def gated_factory(
    loop_factory: LoopFactory, gate: threading.Event, entered: threading.Event
) -> LoopFactory:
    """A loop factory that waits for *gate*: start() is in progress meanwhile."""

    def factory() -> asyncio.AbstractEventLoop:
        entered.set()
        assert gate.wait(WAIT)
        return loop_factory()

    return factory


def test_stop_while_start_is_in_progress(loop_factory: LoopFactory) -> None:
    gate, entered = threading.Event(), threading.Event()
    io = IOThread("io0", loop_factory=gated_factory(loop_factory, gate, entered))
    starter = threading.Thread(target=io.start)
    starter.start()
    assert entered.wait(WAIT)
    stopper = threading.Thread(target=io.stop)
    stopper.start()
    wait_until(lambda: io._stop_requested, "stop() to ask")
    gate.set()
    starter.join(WAIT)
    stopper.join(WAIT)
    assert not starter.is_alive()
    assert not stopper.is_alive()
    assert not io.running


async def test_cancelling_astart_before_the_loop_runs(loop_factory: LoopFactory) -> None:
    gate, entered = threading.Event(), threading.Event()
    io = IOThread("io0", loop_factory=gated_factory(loop_factory, gate, entered))
    task = asyncio.create_task(io.astart())
    await asyncio.sleep(0)
    assert entered.wait(WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()  # the thread now finds the stop request and shuts down
    wait_until(lambda: iothreads.iothread_by_id("io0") is None, "the IOThread to be forgotten")
    assert not io.running


async def test_cancelling_astart_after_the_thread_is_ready(loop_factory: LoopFactory) -> None:
    # The thread is held until astart() awaits it: a thread ready before
    # astart() wraps its future would let it return at once (CPython 3.13.1+
    # resolves an already-done future in the same step), with nothing to cancel.
    gate, entered = threading.Event(), threading.Event()
    io = IOThread("io0", loop_factory=gated_factory(loop_factory, gate, entered))
    task = asyncio.create_task(io.astart())
    await asyncio.sleep(0)
    assert entered.wait(WAIT)
    gate.set()
    wait_until(lambda: io.thread_id != -1, "the thread to be ready")  # blocks this loop
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    wait_until(lambda: iothreads.iothread_by_id("io0") is None, "the IOThread to be forgotten")
    assert not io.running


async def test_cancelling_aclose_lets_the_stop_finish(loop_factory: LoopFactory) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    await io.astart()
    release: concurrent.futures.Future[None] = concurrent.futures.Future()
    started, cleaning = threading.Event(), threading.Event()

    async def slow_to_cancel() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.wrap_future(release)
            raise

    io.submit(slow_to_cancel)
    # Running before the stop: a task cancelled before its first step never
    # reaches its except clause.
    assert await asyncio.to_thread(started.wait, WAIT)
    closing = asyncio.create_task(io.aclose())
    assert await asyncio.to_thread(cleaning.wait, WAIT)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    release.set_result(None)
    wait_until(lambda: iothreads.iothread_by_id("io0") is None, "the IOThread to be forgotten")
    await io.aclose()  # nothing left to do: returns at once
    async with IOThread("io0", loop_factory=loop_factory):  # the id is free again
        pass


def test_stop_from_the_iothreads_own_pool_is_refused(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:

        async def stop_from_a_worker() -> None:
            await asyncio.to_thread(io.stop)

        with pytest.raises(RuntimeError, match="its worker pool"):
            io.run_sync(stop_from_a_worker)
        assert io.running


async def test_run_of_a_plain_function_cancelled_while_queued_never_runs(io: IOThread) -> None:
    ran = threading.Event()
    gate = gate_loop(io)
    task = asyncio.create_task(io.run(ran.set))
    await asyncio.sleep(0)  # the call is queued behind the gate
    task.cancel()
    await asyncio.sleep(0)  # the task handles its cancellation
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    await io.run(lambda: None)
    assert not ran.is_set()


async def test_inline_run_checks_its_arguments_too(io: IOThread) -> None:
    async def inline() -> str:
        coro = coro_add(1, 2)
        try:
            await io.run(coro, 3)  # type: ignore[call-overload]
        except TypeError as exc:
            coro.close()
            return str(exc)
        return "accepted"

    assert "takes no arguments" in await io.run(inline)


class HeldAfterItsSnapshot(IOThread):
    """An IOThread whose thread stops, while it starts, after it read its
    properties and before the loop is published: where a write finds nothing
    running to push it to."""

    def __init__(self, loop_factory: LoopFactory) -> None:
        super().__init__("io0", loop_factory=loop_factory)
        self.held, self.gate = threading.Event(), threading.Event()

    def _new_pool(self, name: str, params: Any) -> Any:  # type: ignore[override]
        self.held.set()
        assert self.gate.wait(WAIT)
        return IOThread._new_pool(name, params)


def test_writes_made_while_the_thread_starts_reach_the_loop_and_the_pool(
    loop_factory: LoopFactory,
) -> None:
    cpu = min(os.sched_getaffinity(0))
    io = HeldAfterItsSnapshot(loop_factory)
    starter = threading.Thread(target=io.start)
    starter.start()
    try:
        assert io.held.wait(WAIT)
        io.update_params({"poll-max-ns": 0, "thread-pool-max": 4})
        io.cpu_affinity = {cpu}
    finally:
        io.gate.set()
        starter.join(WAIT)
    try:
        assert io.running
        window, applied = io.run_sync(
            lambda: (io.aio_context.window.poll_max_ns, io.aio_context.cpu_affinity),
            timeout=WAIT,
        )
        assert window == 0
        assert applied == frozenset({cpu})
        pool = io.thread_pool
        assert pool is not None
        assert pool.max_threads == 4
    finally:
        io.stop()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_cpu_affinity_set_again_and_cleared_moves_the_thread_each_time(
    loop_factory: LoopFactory,
) -> None:
    """Clearing an affinity never set leaves the thread where it is; setting
    one twice keeps what the thread inherited to return to; clearing it then
    returns the thread there."""
    inherited = frozenset(os.sched_getaffinity(0))
    cpu = min(inherited)
    with IOThread("io0", loop_factory=loop_factory) as io:

        def placed() -> tuple[frozenset[int], frozenset[int] | None]:
            return frozenset(os.sched_getaffinity(0)), io.aio_context.cpu_affinity

        io.cpu_affinity = None
        assert io.run_sync(placed, timeout=WAIT) == (inherited, None)
        io.cpu_affinity = {cpu}
        assert io.run_sync(placed, timeout=WAIT) == (frozenset({cpu}), frozenset({cpu}))
        io.cpu_affinity = {cpu}
        assert io.run_sync(placed, timeout=WAIT) == (frozenset({cpu}), frozenset({cpu}))
        io.cpu_affinity = None
        assert io.run_sync(placed, timeout=WAIT) == (inherited, None)


def test_call_soon_threadsafe_looked_up_on_the_class_runs_the_callback(
    loop_factory: LoopFactory,
) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        ran = threading.Event()
        IOThread.call_soon_threadsafe(io, ran.set)
        assert ran.wait(WAIT)
    with pytest.raises(IOThreadStopped):
        IOThread.call_soon_threadsafe(io, ran.set)
