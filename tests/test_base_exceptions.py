"""SystemExit and KeyboardInterrupt from user code never end an IOThread.

(docs/design.md, "BaseException in an IOThread".)  Where a caller waits for
the outcome it gets the exception; where nobody does, the IOThread loop's
exception handler gets it; either way the IOThread goes on serving.  Should
its thread ever end unexpectedly all the same (a bug of ours), everything
that reports its state says so.  The poll handlers' case is in test_aio.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import Any

import pytest

import iothreads
import iothreads._iothread
from iothreads import IOThread, IOThreadStopped, glib
from iothreads._call import CallSet

from .helpers import WAIT, LoopFactory, gate_loop, wait_until

ERRORS = [KeyboardInterrupt, SystemExit]


def reported(io: IOThread) -> list[dict[str, Any]]:
    """What reaches *io*'s loop exception handler from now on."""
    contexts: list[dict[str, Any]] = []
    assert io.loop is not None
    io.run_sync(
        io.loop.set_exception_handler, lambda loop, context: contexts.append(context), timeout=WAIT
    )
    return contexts


def assert_serving(io: IOThread, thread_id: int) -> None:
    assert io.run_sync(threading.get_native_id, timeout=WAIT) == thread_id
    assert io.running
    assert io.thread_id == thread_id


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("when", ["first step", "after a wait"])
def test_out_of_a_submitted_coroutine_it_reaches_the_caller_and_the_iothread_serves_on(
    loop_factory: LoopFactory, error: type[BaseException], when: str
) -> None:
    """asyncio lets it out of the loop as well as keeping it as the task's
    outcome: the caller gets it, nothing is reported twice (nor as a task
    exception never retrieved), and the other work goes on.  From Python
    3.12 a first step runs eagerly, as the call starts, and asyncio lets
    the exception out of the task's creation instead."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        thread_id = io.thread_id
        contexts = reported(io)
        started, go = threading.Event(), threading.Event()

        async def other() -> str:
            started.set()
            await asyncio.to_thread(go.wait, WAIT)
            return "other finished"

        async def boom() -> None:
            if when == "after a wait":
                await asyncio.sleep(0)
            raise error("from a task")

        pending = io.submit(other)
        assert started.wait(WAIT)
        with pytest.raises(error, match="from a task"):
            io.submit(boom).result(WAIT)
        with pytest.raises(error, match="from a task"):
            io.run_sync(boom, timeout=WAIT)
        go.set()
        assert pending.result(WAIT) == "other finished"
        assert_serving(io, thread_id)
        io.run_sync(gc.collect)  # a task never retrieved would say so as it goes
        assert contexts == []


@pytest.mark.parametrize("error", ERRORS)
async def test_out_of_an_awaited_coroutine_or_function_it_reaches_the_caller(
    loop_factory: LoopFactory, error: type[BaseException]
) -> None:
    async with IOThread("io0", loop_factory=loop_factory) as io:
        thread_id = io.thread_id

        async def boom_async() -> None:
            raise error("awaited")

        def boom() -> None:
            raise error("plain")

        with pytest.raises(error, match="awaited"):
            await io.run(boom_async)
        with pytest.raises(error, match="plain"):
            await io.run(boom)
        with pytest.raises(error, match="plain"):
            await asyncio.to_thread(io.run_sync, boom)
        assert await io.run(threading.get_native_id) == thread_id
        assert io.running


@pytest.mark.parametrize("error", ERRORS)
def test_out_of_a_threadsafe_callback_it_is_reported_and_the_drain_goes_on(
    loop_factory: LoopFactory, error: type[BaseException]
) -> None:
    """Both inboxes (the fixture runs each): the callback's error is
    reported as asyncio reports a callback's, and the callbacks queued
    behind it in the same pass run."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        thread_id = io.thread_id
        contexts = reported(io)
        gate = gate_loop(io)
        ran: list[str] = []

        def boom() -> None:
            raise error("from a callback")

        # One pass takes all three: the gate holds the loop meanwhile.
        io.call_soon_threadsafe(boom)
        io.call_soon_threadsafe(ran.append, "behind it")
        gate.set()
        assert_serving(io, thread_id)
        assert ran == ["behind it"]
        [context] = contexts
        assert type(context["exception"]) is error
        assert context["message"].startswith("Exception in callback")


@pytest.mark.parametrize("error", ERRORS)
def test_out_of_a_callback_the_loop_queued_itself_it_is_reported(
    loop_factory: LoopFactory, error: type[BaseException]
) -> None:
    """A callback the code queued on the IOThread's own loop: asyncio lets
    the exception out of the loop, and the IOThread reports it."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        thread_id = io.thread_id
        contexts = reported(io)

        def boom() -> None:
            raise error("from loop.call_soon")

        io.run_sync(lambda: asyncio.get_running_loop().call_soon(boom), timeout=WAIT)
        wait_until(lambda: contexts, "the error to be reported")
        assert_serving(io, thread_id)
        [context] = contexts
        assert type(context["exception"]) is error
        assert context["message"] == (
            f"{error.__name__} raised in IOThread 'io0', which goes on serving"
        )


@pytest.mark.parametrize("error", ERRORS)
def test_out_of_a_task_of_its_own_it_stays_the_task_outcome_and_is_reported(
    loop_factory: LoopFactory, error: type[BaseException]
) -> None:
    """A task the code started itself keeps the exception as its outcome
    (asyncio's rule); since asyncio also lets it out of the loop, where no
    caller of ours waits, the IOThread reports it once."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        thread_id = io.thread_id
        contexts = reported(io)
        tasks: list[asyncio.Task[None]] = []

        async def boom() -> None:
            raise error("own task")

        io.run_sync(
            lambda: tasks.append(asyncio.get_running_loop().create_task(boom())), timeout=WAIT
        )
        wait_until(lambda: contexts, "the error to be reported")
        assert_serving(io, thread_id)
        assert io.run_sync(lambda: type(tasks[0].exception()), timeout=WAIT) is error
        [context] = contexts
        assert context["exception"] is io.run_sync(tasks[0].exception, timeout=WAIT)


@pytest.mark.parametrize("error", ERRORS)
def test_out_of_a_glib_callback_it_is_logged_and_the_context_goes_on(
    loop_factory: LoopFactory, error: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    """As an Exception from a source is: logged, and the source destroyed
    (a standalone context lets it through instead, for a Ctrl-C)."""
    with IOThread("io0", loop_factory=loop_factory) as io:
        thread_id = io.thread_id
        ctx = io.get_g_main_context()
        calls: list[str] = []
        done = threading.Event()

        def boom() -> bool:
            calls.append("boom")
            raise error("from a source")

        def finish() -> bool:
            done.set()
            return False

        with caplog.at_level(logging.ERROR, logger="iothreads.glib"):
            source_id = io.run_sync(lambda: glib.idle_add(boom, context=ctx), timeout=WAIT)
            io.run_sync(lambda: glib.timeout_add(1, finish, context=ctx), timeout=WAIT)
            assert done.wait(WAIT)
        assert calls == ["boom"]
        assert io.run_sync(ctx.find_source_by_id, source_id, timeout=WAIT) is None
        assert "from a source" in caplog.text
        assert_serving(io, thread_id)


def test_an_iothread_ending_unexpectedly_says_so_everywhere(
    loop_factory: LoopFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug of ours ends the thread (simulated: reporting an escaped
    SystemExit fails): its state says it is stopped, as after stop(), before
    anybody calls stop(); pending and later calls get IOThreadStopped."""

    def broken(self: IOThread, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(IOThread, "_escaped", broken)
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    try:
        started = threading.Event()

        async def forever() -> None:
            started.set()
            await asyncio.Event().wait()

        def exit_soon() -> None:
            asyncio.get_running_loop().call_soon(lambda: exec("raise SystemExit(3)"))

        pending = io.submit(forever)
        assert started.wait(WAIT)
        with caplog.at_level(logging.ERROR, logger="iothreads"):
            io.run_sync(exit_soon, timeout=WAIT)
            with pytest.raises(IOThreadStopped):
                pending.result(WAIT)
            wait_until(lambda: io.thread_id == -1, "the thread's end to be published")
        assert not io.running
        assert io.loop is None
        [info] = iothreads.query_iothreads()
        assert info.thread_id == -1
        assert info.to_qmp()["thread-id"] == -1
        with pytest.raises(IOThreadStopped):
            io.submit(lambda: None)
        assert "IOThread 'io0' ended unexpectedly" in caplog.text
    finally:
        io.stop()
    assert iothreads.query_iothreads() == []


def test_calls_whose_tasks_a_failed_shutdown_left_get_iothread_stopped(
    loop_factory: LoopFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A shutdown cut short (simulated: a bug of ours in it) leaves tasks
    that will never run again: their callers are told, not left waiting."""

    async def broken(*args: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(iothreads._iothread, "shut_down", broken)
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    pending = io.submit(forever)
    assert started.wait(WAIT)
    with caplog.at_level(logging.ERROR, logger="iothreads"):
        io.stop()
    with pytest.raises(IOThreadStopped, match="'io0' ended before the call completed"):
        pending.result(WAIT)
    assert "IOThread 'io0' ended unexpectedly" in caplog.text


class EqualToAny(Exception):
    """An exception that compares equal to anything: identity, not equality,
    tells which exception ended a call."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = Exception.__hash__


def test_only_the_very_exception_a_call_ended_with_counts_as_its_outcome() -> None:
    """``CallSet.outcome_of_a_call``: an exception let out of the loop is a
    call's outcome only if it is the one a call's task ended with or was
    delivered, not one merely equal to it."""
    loop = asyncio.new_event_loop()
    try:
        calls = CallSet("IOThread 'io0'")
        ended = loop.create_future()
        ended.set_exception(EqualToAny())
        calls.tasks[ended] = None  # type: ignore[index, assignment]  # only its outcome is read
        escaped = KeyboardInterrupt()
        assert not calls.outcome_of_a_call(escaped)
        calls.delivered_escapes = [EqualToAny()]
        assert not calls.outcome_of_a_call(escaped)
        calls.delivered_escapes = [escaped]
        assert calls.outcome_of_a_call(escaped)
        ended.exception()  # retrieved: no "never retrieved" warning
    finally:
        loop.close()
