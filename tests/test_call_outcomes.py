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
import inspect
import logging
import threading
from types import SimpleNamespace

import pytest

from iothreads import IOThread, IOThreadStopped
from iothreads._call import CALLER_LOOP

from .helpers import WAIT, LoopFactory, SlowToCancel, loop_errors, task_of_a_closed_loop


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
def test_a_future_cancelled_while_its_function_runs_stays_cancelled(
    loop_factory: LoopFactory, ends: str
) -> None:
    """A plain function cannot be interrupted: it runs to its end, and what
    it returns or raises is dropped, since the future already has its
    outcome; the IOThread goes on serving."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        errors = loop_errors(io)
        running, go = threading.Event(), threading.Event()
        ended: list[str] = []

        def work() -> str:
            running.set()
            assert go.wait(WAIT)
            ended.append(ends)
            if ends == "raises":
                raise ValueError("too late")
            return "too late"

        future = io.submit(work)
        assert running.wait(WAIT)
        assert future.cancel()
        go.set()
        assert io.run_sync(lambda: "alive") == "alive"  # queued behind work's outcome
        assert ended == [ends]
        assert future.cancelled()
        assert errors == []


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
        assert io.run_sync(lambda: "alive") == "alive"  # queued behind work's outcome
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
            io.submit(coroutine, 1)  # type: ignore[arg-type]
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


async def test_a_coroutine_withdrawn_while_queued_is_closed(loop_factory: LoopFactory) -> None:
    """Cancelled by its caller before the IOThread started it: it never runs,
    and it is closed (io.submit's future cancelled; io.run's caller cancelled)."""
    async with IOThread("io0", loop_factory=loop_factory) as io:
        busy, release = threading.Event(), threading.Event()
        io.call_soon_threadsafe(lambda: (busy.set(), release.wait(WAIT)))
        assert await asyncio.to_thread(busy.wait, WAIT)  # the loop is held
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
