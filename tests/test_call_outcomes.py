"""Every io.run and io.submit call gets exactly one outcome, also when its
caller gives up while the IOThread stops, or its caller's loop is gone.

(docs/design.md, "Threading rules": every submission gets exactly one
outcome; cancel-and-wait.)  The ordinary cases are tests/test_iothread.py's;
here the stop, the caller and the caller's loop get in the way.  A stop is
held up in the inner work's clean-up (``SlowToCancel``), after the
IOThread's inbox has closed, so that the caller acts exactly then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from types import SimpleNamespace
from typing import NoReturn

import pytest

from iothreads import IOThread, IOThreadStopped
from iothreads._call import CALLER_LOOP, FutureCall

from .helpers import (
    WAIT,
    LoopFactory,
    SlowToCancel,
    gate_loop,
    loop_errors,
    task_of_a_closed_loop,
)


async def test_a_caller_cancelled_while_the_iothread_stops_still_waits_for_the_inner_work(
    loop_factory: LoopFactory,
) -> None:
    """The caller cannot queue its cancellation (the inbox is closed): the
    stop cancels the inner work itself, and the caller is released only once
    that work has ended, with the CancelledError it asked for."""
    io = IOThread("io0", loop_factory=loop_factory)
    await io.astart()
    inner = SlowToCancel()
    caller = asyncio.create_task(io.run(inner))
    assert await asyncio.to_thread(inner.started.wait, WAIT)
    closing = asyncio.create_task(io.aclose())
    assert await asyncio.to_thread(inner.cancelled.wait, WAIT)  # by the stop
    caller.cancel()
    await asyncio.sleep(0)  # the caller handles its cancellation
    assert not caller.done()  # the inner work is still cleaning up
    inner.release.set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, WAIT)
    assert inner.finished.is_set()
    await asyncio.wait_for(closing, WAIT)
    assert not io.running


def test_a_future_cancelled_while_the_iothread_stops_stays_cancelled(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled by its owner after the inbox closed: the cancellation cannot
    be queued, the stop cancels the task itself, and the future keeps the
    outcome its owner gave it (not IOThreadStopped); nothing is logged."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    errors = loop_errors(io)
    inner = SlowToCancel()
    future = io.submit(inner)
    assert inner.started.wait(WAIT)
    stopper = threading.Thread(target=io.stop)
    stopper.start()
    try:
        assert inner.cancelled.wait(WAIT)  # by the stop
        assert future.cancel()
    finally:
        inner.release.set_result(None)
        stopper.join(WAIT)
    assert not stopper.is_alive()
    assert future.cancelled()
    assert inner.finished.is_set()
    assert errors == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("ends", ["returns", "raises"])
def test_a_future_whose_plain_function_runs_cannot_be_cancelled(
    loop_factory: LoopFactory, ends: str
) -> None:
    """concurrent.futures' contract, as ThreadPoolExecutor keeps it: a plain
    function's future is running once the call begins; cancel() returns
    False, and the future gets what the function returns or raises."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        errors = loop_errors(io)
        running, go = threading.Event(), threading.Event()

        def work() -> str:
            running.set()
            assert go.wait(WAIT)
            if ends == "raises":
                raise ValueError("ran to its end")
            return "ran to its end"

        future = io.submit(work)
        assert running.wait(WAIT)
        assert future.running()
        assert not future.cancel()
        go.set()
        if ends == "raises":
            with pytest.raises(ValueError, match="ran to its end"):
                future.result(WAIT)
        else:
            assert future.result(WAIT) == "ran to its end"
        assert not future.cancelled()
        assert errors == []


def test_a_running_future_whose_task_ended_cancelled_raises_cancelled_error(
    loop_factory: LoopFactory,
) -> None:
    """A plain function that returns a coroutine: its future is running (it
    cannot be cancelled any more) when the coroutine's task ends cancelled,
    so ``result()`` raises ``CancelledError``, as it does for a future that
    was cancelled, while ``cancelled()`` stays False."""

    async def cancels_itself() -> None:
        raise asyncio.CancelledError

    with IOThread("io0", loop_factory=loop_factory) as io:
        future = io.submit(lambda: cancels_itself())
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(WAIT)
        assert not future.cancelled()


def test_a_plain_function_cancelled_before_it_ran_never_runs_and_is_never_marked_running(
    loop_factory: LoopFactory,
) -> None:
    """Cancelled while queued, the call is withdrawn by
    set_running_or_notify_cancel() in the IOThread: the function never runs,
    and whoever waits on the future (concurrent.futures.wait) is told."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        gate = gate_loop(io)
        ran: list[str] = []
        future = io.submit(ran.append, "ran")
        assert future.cancel()
        gate.set()
        done, _ = concurrent.futures.wait([future], WAIT)
        assert done == {future}
        assert io.run_sync(lambda: "alive", timeout=WAIT) == "alive"
        assert future.cancelled()
        assert ran == []


def test_a_plain_function_returning_a_coroutine_gets_a_running_future(
    loop_factory: LoopFactory,
) -> None:
    """Only a coroutine function or object is taken as a coroutine up front;
    any other callable is a plain function, whose future runs from its call
    on, even if it returns a coroutine that then runs as a task."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        started, go = threading.Event(), asyncio.Event()

        async def body() -> str:
            started.set()
            await go.wait()
            return "done"

        future = io.submit(lambda: body())
        assert started.wait(WAIT)
        assert future.running()
        assert not future.cancel()
        assert io.loop is not None
        io.loop.call_soon_threadsafe(go.set)
        assert future.result(WAIT) == "done"


def _submitted_once(io: IOThread, started: threading.Event) -> None:
    """Make io's next run_sync() wait for its work to start before its
    timeout begins, so that the timeout finds the work running."""
    submit = io._submit

    def submit_and_wait(func: object, args: tuple[object, ...]) -> FutureCall:
        call = submit(func, args)
        assert started.wait(WAIT)
        return call

    io._submit = submit_and_wait  # type: ignore[method-assign]


def test_run_sync_timing_out_on_a_running_function_says_it_will_complete(
    loop_factory: LoopFactory,
) -> None:
    """A plain function cannot be interrupted: the TimeoutError says it is
    still running and will complete, and it does."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        running, go = threading.Event(), threading.Event()
        ended: list[str] = []

        def work() -> None:
            running.set()
            assert go.wait(WAIT)
            ended.append("side effect")

        _submitted_once(io, running)
        with pytest.raises(TimeoutError, match=r"still running .* will run to completion"):
            io.run_sync(work, timeout=0.001)
        go.set()
        assert io.run_sync(lambda: "alive", timeout=WAIT) == "alive"  # queued behind work
        assert ended == ["side effect"]


def test_run_sync_timing_out_before_the_function_started_says_it_will_not_run(
    loop_factory: LoopFactory,
) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        gate = gate_loop(io)
        ran: list[str] = []
        try:
            with pytest.raises(TimeoutError, match="cancelled before it started and will not run"):
                io.run_sync(ran.append, "ran", timeout=0.001)
        finally:
            gate.set()
        assert io.run_sync(lambda: "alive", timeout=WAIT) == "alive"
        assert ran == []


def test_run_sync_timing_out_as_its_function_completes_returns_the_outcome(
    loop_factory: LoopFactory,
) -> None:
    """The timeout runs out just as the work completes: cancel() finds the
    future done, and the caller gets the outcome, not a TimeoutError."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        go = threading.Event()
        submit = io._submit

        def submit_timing_out_as_it_completes(func: object, args: tuple[object, ...]) -> FutureCall:
            call = submit(func, args)
            future = call.future
            result = future.result

            def timed_out_as_it_completed(timeout: float | None = None) -> object:
                del future.result  # once: the caller's next look is the real one
                go.set()
                result(WAIT)  # the work completes...
                raise TimeoutError  # ...as the caller's wait runs out

            future.result = timed_out_as_it_completed  # type: ignore[method-assign]
            return call

        io._submit = submit_timing_out_as_it_completes  # type: ignore[method-assign]

        def work() -> str:
            assert go.wait(WAIT)
            return "done"

        assert io.run_sync(work, timeout=0.001) == "done"


def test_run_sync_timing_out_on_a_task_says_it_was_cancelled(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        started, cancelled = threading.Event(), threading.Event()

        async def forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        _submitted_once(io, started)
        with pytest.raises(TimeoutError, match="its task was cancelled"):
            io.run_sync(forever, timeout=0.001)
        assert cancelled.wait(WAIT)


async def test_run_abandon_on_cancel_releases_the_caller_while_the_function_runs(
    loop_factory: LoopFactory,
) -> None:
    """anyio's abandon_on_cancel: the cancelled caller leaves at once; the
    plain function already running completes on the IOThread, unawaited."""
    async with IOThread("io0", loop_factory=loop_factory) as io:
        running, go = threading.Event(), threading.Event()
        ended: list[str] = []

        def work() -> str:
            running.set()
            assert go.wait(WAIT)
            ended.append("side effect")
            return "dropped"

        caller = asyncio.create_task(io.run(work, abandon_on_cancel=True))
        assert await asyncio.to_thread(running.wait, WAIT)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, WAIT)
        assert ended == []  # left while the function still ran
        go.set()
        assert await io.run(lambda: "alive") == "alive"
        assert ended == ["side effect"]


async def test_run_abandon_on_cancel_still_withdraws_queued_work_and_cancels_tasks(
    loop_factory: LoopFactory,
) -> None:
    async with IOThread("io0", loop_factory=loop_factory) as io:
        gate = await asyncio.to_thread(gate_loop, io)
        ran: list[str] = []
        queued = asyncio.create_task(io.run(ran.append, "ran", abandon_on_cancel=True))
        await asyncio.sleep(0)  # the call is queued on the IOThread
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(queued, WAIT)
        gate.set()
        assert await io.run(lambda: "alive") == "alive"
        assert ran == []

        inner = SlowToCancel()
        caller = asyncio.create_task(io.run(inner, abandon_on_cancel=True))
        assert await asyncio.to_thread(inner.started.wait, WAIT)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, WAIT)
        assert await asyncio.to_thread(inner.cancelled.wait, WAIT)
        assert not inner.finished.is_set()  # the caller did not wait for it
        inner.release.set_result(None)
        assert await asyncio.to_thread(inner.finished.wait, WAIT)


async def test_run_refuses_a_non_bool_abandon_on_cancel(loop_factory: LoopFactory) -> None:
    async with IOThread("io0", loop_factory=loop_factory) as io:
        ran: list[str] = []
        with pytest.raises(TypeError, match="abandon_on_cancel must be a bool, not 1"):
            await io.run(ran.append, "ran", abandon_on_cancel=1)  # type: ignore[call-overload]
        assert await io.run(lambda: "alive") == "alive"
        assert ran == []


def test_a_caller_whose_loop_closed_leaves_the_iothread_serving(
    loop_factory: LoopFactory,
) -> None:
    """io.run's outcome finds the caller's loop closed: nobody is left to
    tell, and nothing goes wrong on the IOThread."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        errors = loop_errors(io)
        go = threading.Event()
        ran: list[str] = []

        def work() -> int:
            assert go.wait(WAIT)
            ran.append("work")
            return 42

        caller = task_of_a_closed_loop(loop_factory, io.run(work))
        go.set()
        assert io.run_sync(lambda: "alive", timeout=WAIT) == "alive"  # queued behind work's outcome
        assert ran == ["work"]
        assert errors == []
        assert not caller.done()  # its loop is gone: it never hears back


@pytest.mark.parametrize("ends", ["returns", "raises", "is cancelled"])
async def test_the_outcome_reaches_the_callers_loop_without_an_error(
    loop_factory: LoopFactory, ends: str
) -> None:
    """io.run's outcome is handed over in one callback on the caller's loop,
    which raises nothing there: an error in it would reach that loop's
    exception handler alone, after the caller already had its outcome."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))

    async def work() -> int:
        if ends == "raises":
            raise ValueError("from the work")
        if ends == "is cancelled":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
        return 42

    try:
        async with IOThread("io0", loop_factory=loop_factory) as io:
            if ends == "returns":
                assert await asyncio.wait_for(io.run(work), WAIT) == 42
            elif ends == "raises":
                with pytest.raises(ValueError, match="from the work"):
                    await asyncio.wait_for(io.run(work), WAIT)
            else:
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(io.run(work), WAIT)
            # The callback that resolved the outcome ran before the caller
            # resumed: anything it raised has been handled by now.
            assert errors == []
    finally:
        loop.set_exception_handler(None)


async def never_run() -> None:
    raise AssertionError("a withdrawn or refused coroutine ran")


async def test_a_task_factory_that_raises_gives_the_call_its_error(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The IOThread's loop refused to make the task (its task factory
    raised): that error is the call's outcome, and the coroutine is closed,
    where the caller used to wait for ever.  The stop, whose shutdown is a
    task too, is not the factory's to refuse."""

    class Refused(Exception):
        pass

    def refuse(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> NoReturn:
        raise Refused("no tasks here")

    async def work() -> None:
        pass

    async with IOThread("io0", loop_factory=loop_factory) as io:
        await io.run(lambda: asyncio.get_running_loop().set_task_factory(refuse))
        coro = work()
        with pytest.raises(Refused, match="no tasks here"):
            await asyncio.wait_for(io.run(coro), WAIT)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        with pytest.raises(Refused):
            await asyncio.wait_for(io.run(work), WAIT)
        with pytest.raises(Refused):
            await asyncio.wrap_future(io.submit(work))
    assert not caplog.records


def test_a_coroutine_refused_by_a_stopped_iothread_is_closed(loop_factory: LoopFactory) -> None:
    """Else Python warns, when it is collected, that it was never awaited."""
    io = IOThread("io0", loop_factory=loop_factory)
    coroutine = never_run()
    with pytest.raises(IOThreadStopped):
        io.submit(coroutine)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
    coroutine = never_run()
    with pytest.raises(IOThreadStopped):
        asyncio.run(io.run(coroutine))
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


def test_a_coroutine_given_arguments_is_closed(loop_factory: LoopFactory) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        coroutine = never_run()
        with pytest.raises(TypeError, match="a coroutine object takes no arguments"):
            io.submit(coroutine, 1)  # type: ignore[call-overload]
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


async def test_a_coroutine_withdrawn_while_queued_is_closed(loop_factory: LoopFactory) -> None:
    """Cancelled by its caller before the IOThread started it: it never runs,
    and it is closed (io.submit's future cancelled; io.run's caller cancelled)."""
    async with IOThread("io0", loop_factory=loop_factory) as io:
        release = await asyncio.to_thread(gate_loop, io)  # the loop is held
        submitted = never_run()
        future = io.submit(submitted)
        assert future.cancel()
        awaited = never_run()
        caller = asyncio.create_task(io.run(awaited))
        await asyncio.sleep(0)  # queued on the held loop
        caller.cancel()
        await asyncio.sleep(0)  # the cancellation is queued behind it
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await io.run(asyncio.sleep, 0)  # everything queued before has been served
        assert inspect.getcoroutinestate(submitted) == inspect.CORO_CLOSED
        assert inspect.getcoroutinestate(awaited) == inspect.CORO_CLOSED


async def test_the_callers_loop_is_the_loop_running_the_caller(loop_factory: LoopFactory) -> None:
    """The thread role io.run()'s caller side is marked with (and, in debug
    mode, checked against): the loop running now is the caller's loop; another
    loop is not, nor is a thread running no loop."""
    holds = CALLER_LOOP.holds
    assert holds is not None
    running = asyncio.get_running_loop()
    other = loop_factory()
    try:
        assert holds(SimpleNamespace(caller_loop=running))
        assert not holds(SimpleNamespace(caller_loop=other))
    finally:
        other.close()
    elsewhere: list[bool] = []
    thread = threading.Thread(
        target=lambda: elsewhere.append(holds(SimpleNamespace(caller_loop=running)))
    )
    thread.start()
    thread.join(WAIT)
    assert elsewhere == [False]
