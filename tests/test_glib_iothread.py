"""The GLib-like context attached lazily to an IOThread (issue 5), on both loops.

Sync tests that take ``loop_factory`` run once per loop kind, async tests run
on both kinds through conftest's hook; each IOThread uses the test's kind.
No test asserts on timing: threads meet on Events and futures, every wait is
bounded by WAIT, and "never early" compares the clock at dispatch with the
source's deadline.  conftest's autouse ``no_leaks`` checks that stop() leaves
no thread and no file descriptor behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from iothreads import IOThread, IOThreadStopped, glib
from iothreads.glib import IOCondition, MainContext, Source
from iothreads.glib import _context as glib_context
from iothreads.glib import _source as glib_source
from iothreads.glib._driver import AsyncioDriver
from iothreads.glib._poll import _WakePipe

from .conftest import LoopFactory, _fds, wait_until
from .test_glib import (
    WAIT,
    WAIT_MS,
    Probe,
    assert_a_main_loop_elsewhere_waits,
    in_thread,
    keep_calling,
    record_thread,
)


@pytest.fixture
def io(loop_factory: LoopFactory) -> Iterator[IOThread]:
    with IOThread("g0", loop_factory=loop_factory) as io:
        yield io


@pytest.fixture
def ctx(io: IOThread) -> MainContext:
    """The IOThread's context, attached by the first get_g_main_context()."""
    return io.get_g_main_context()


def io_ident(io: IOThread) -> int:
    """The Python thread ident of the IOThread's thread."""
    return io.run_sync(threading.get_ident)


def flush(io: IOThread) -> None:
    """Return once the IOThread has finished what its loop is running now
    (a dispatch in progress, a round of the context) and what was queued
    before this call."""
    io.run_sync(lambda: None)


class Rounds(Probe):
    """A never-ready source at PRIORITY_HIGH counting the context's prepares.

    Every round of the driver ends with a prepare, and a prepare always
    reaches the most urgent source first, so ``count`` read by a callback
    names the round it is dispatched in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.set_priority(glib.PRIORITY_HIGH)

    def prepare(self) -> tuple[bool, int]:
        self.count += 1
        return super().prepare()


class Finalized(Source):
    """A source that records the threads its finalize() ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.finalized_in: list[int] = []

    def finalize(self) -> None:
        self.finalized_in.append(threading.get_ident())


# -- lazy attach -------------------------------------------------------------------


class GlibSpy:
    """Records every creation of GLib machinery (contexts, drivers, pipes,
    the default context) and every iteration step, by wrapping glib's classes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for owner, name in [
            (glib.MainContext, "__init__"),
            (glib.MainContext, "prepare"),
            (glib.MainContext, "check"),
            (AsyncioDriver, "__init__"),
            (_WakePipe, "__init__"),
        ]:
            monkeypatch.setattr(
                owner, name, self._spy(f"{owner.__name__}.{name}", vars(owner)[name])
            )
        default = glib.MainContext.default

        def spy_default() -> MainContext:
            self.calls.append("MainContext.default")
            return default()

        monkeypatch.setattr(glib.MainContext, "default", staticmethod(spy_default))

    def _spy(self, label: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(label)
            return method(*args, **kwargs)

        return spy


def glib_state() -> tuple[object, str]:
    """glib's module state: the global default context, the next source id."""
    # repr() does not consume the count
    return glib_context._default_context, repr(glib_source._next_id)


def thread_defaults() -> tuple[MainContext | None, list[MainContext]]:
    """The calling thread's default context and its pushed stack."""
    return MainContext.get_thread_default(), list(glib_context._thread_defaults.stack)


def test_no_glib_machinery_runs_before_the_first_call(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = GlibSpy(monkeypatch)
    state = glib_state()
    with IOThread("g0", loop_factory=loop_factory) as io:
        fds_before = _fds()
        # Asyncio work of every kind: callbacks, a coroutine, a timer, a reader.
        ran = threading.Event()
        io.call_soon_threadsafe(ran.set)
        assert ran.wait(WAIT)

        async def coro() -> int:
            await asyncio.sleep(0)
            timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.001, timer.set_result, None)
            await timer
            return 1

        assert io.submit(coro).result(WAIT) == 1
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)

            async def read() -> bytes:
                return await asyncio.get_running_loop().sock_recv(a, 1)

            future = io.submit(read)
            b.send(b"x")
            assert future.result(WAIT) == b"x"
        assert io.run_sync(thread_defaults) == (None, [])
        assert io._gdriver is None
        assert spy.calls == []
        assert glib_state() == state
        assert _fds() == fds_before  # no wake-up pipe, nothing registered

        ctx = io.get_g_main_context()
        assert set(spy.calls) >= {
            "MainContext.__init__",
            "AsyncioDriver.__init__",
            "_WakePipe.__init__",
            "MainContext.prepare",  # the loop serves the context from now on
        }
        assert spy.calls.count("MainContext.__init__") == 1
        # The context's wake-up pipe, watched by the loop.  (Sizes, not sets:
        # the listing's own fd may take a freed number.)
        fds_after = _fds()
        assert len(fds_after) == len(fds_before) + 2
        assert ctx.fileno() in fds_after
        assert glib_context._default_context is state[0]  # the global default is not involved


def test_the_first_call_makes_the_context_the_iothreads_thread_default(io: IOThread) -> None:
    assert io.run_sync(thread_defaults) == (None, [])
    ctx = io.get_g_main_context()
    assert isinstance(ctx, MainContext)
    assert ctx is not MainContext.default()
    assert io.run_sync(thread_defaults) == (ctx, [ctx])
    assert io.run_sync(MainContext.ref_thread_default) is ctx
    assert io.run_sync(ctx.is_owner)  # the IOThread's thread drives it
    assert not ctx.is_owner()
    assert thread_defaults() == (None, [])  # the caller's thread is not touched
    assert io.get_g_main_context() is ctx
    assert in_thread(io.get_g_main_context) is ctx
    assert io.run_sync(io.get_g_main_context) is ctx  # from inside the IOThread


def test_the_first_call_can_come_from_inside_the_iothread(io: IOThread) -> None:
    ctx = io.run_sync(io.get_g_main_context)
    assert io.run_sync(thread_defaults) == (ctx, [ctx])
    assert io.get_g_main_context() is ctx
    ran_in: list[int] = []
    done = threading.Event()
    glib.idle_add(record_thread, ran_in, done, context=ctx)
    assert done.wait(WAIT)
    assert ran_in == [io_ident(io)]


def test_racing_first_calls_get_one_context(io: IOThread) -> None:
    racers = 3
    barrier = threading.Barrier(racers)

    def first_call() -> MainContext:
        barrier.wait(WAIT)
        return io.get_g_main_context()

    with ThreadPoolExecutor(racers) as pool:
        futures = [pool.submit(first_call) for _ in range(racers)]
        contexts = {id(future.result(WAIT)) for future in futures}
    ctx = io.get_g_main_context()
    assert contexts == {id(ctx)}
    assert io.run_sync(thread_defaults) == (ctx, [ctx])  # pushed once


async def test_the_first_call_from_a_coroutine_on_the_iothread(loop_factory: LoopFactory) -> None:
    async with IOThread("g0", loop_factory=loop_factory) as io:

        async def attach() -> MainContext:
            await asyncio.sleep(0)
            return io.get_g_main_context()

        ctx = await io.run(attach)
        assert io.get_g_main_context() is ctx
        caller = asyncio.get_running_loop()
        fired: asyncio.Future[int] = caller.create_future()

        def report() -> bool:
            # runs in the IOThread: hands its thread ident back to this loop
            caller.call_soon_threadsafe(fired.set_result, threading.get_ident())
            return glib.SOURCE_REMOVE

        glib.idle_add(report, context=ctx)
        assert await asyncio.wait_for(fired, WAIT) == await io.run(threading.get_ident)


def test_get_g_main_context_on_a_stopped_iothread_raises(loop_factory: LoopFactory) -> None:
    io = IOThread("g0", loop_factory=loop_factory)
    with pytest.raises(IOThreadStopped, match="is not running; start"):
        io.get_g_main_context()
    with io:
        io.get_g_main_context()
    with pytest.raises(IOThreadStopped, match="is stopped"):
        io.get_g_main_context()
    # An IOThread that never attached one raises the same way once stopped.
    with IOThread("g1", loop_factory=loop_factory) as unused:
        pass
    with pytest.raises(IOThreadStopped, match="is stopped"):
        unused.get_g_main_context()


# -- issue 5's semantics on the IOThread's context --------------------------------


def test_only_the_highest_ready_priority_is_dispatched_per_round(
    io: IOThread, ctx: MainContext
) -> None:
    rounds = Rounds()
    dispatched: list[tuple[str, int]] = []  # (name, round)
    done = threading.Event()

    def record(name: str) -> bool:
        dispatched.append((name, rounds.count))
        if name == "low":
            done.set()
        return glib.SOURCE_REMOVE

    def attach_all() -> None:
        # In one callback of the IOThread: all are ready in the same round.
        rounds.attach(ctx)
        for name, priority in [
            ("low", glib.PRIORITY_LOW),
            ("a", glib.PRIORITY_DEFAULT),
            ("high-idle", glib.PRIORITY_HIGH_IDLE),
            ("b", glib.PRIORITY_DEFAULT),
        ]:
            glib.idle_add(record, name, priority=priority, context=ctx)

    io.run_sync(attach_all)
    assert done.wait(WAIT)
    assert [name for name, _ in dispatched] == ["a", "b", "high-idle", "low"]
    round_of = dict(dispatched)
    assert round_of["a"] == round_of["b"] < round_of["high-idle"] < round_of["low"]
    rounds.destroy()


def test_an_fd_ready_at_a_higher_priority_preempts_a_ready_idle(
    io: IOThread, ctx: MainContext
) -> None:
    order: list[str] = []
    done = threading.Event()
    a, b = socket.socketpair()
    with a, b:
        b.send(b"x")  # readable before the sources exist

        def on_fd(sock: socket.socket, condition: IOCondition) -> bool:
            order.append("fd")
            return glib.SOURCE_REMOVE

        def on_idle() -> bool:
            order.append("idle")
            done.set()
            return glib.SOURCE_REMOVE

        def attach_both() -> None:
            glib.idle_add(on_idle, priority=glib.PRIORITY_DEFAULT, context=ctx)
            glib.io_add_watch(a, glib.PRIORITY_HIGH, glib.IO_IN, on_fd, context=ctx)

        io.run_sync(attach_both)
        assert done.wait(WAIT)
    assert order == ["fd", "idle"]


@pytest.mark.parametrize("result", [glib.SOURCE_REMOVE, None, 0])
def test_a_false_result_destroys_the_source(io: IOThread, ctx: MainContext, result: object) -> None:
    calls: list[int] = []
    done = threading.Event()

    def callback() -> object:
        calls.append(1)
        done.set()
        return result

    source = glib.Idle()
    source.set_callback(callback)
    source_id = source.attach(ctx)
    assert done.wait(WAIT)
    flush(io)
    assert source.is_destroyed()
    assert ctx.find_source_by_id(source_id) is None
    # Later rounds run without it.
    later = threading.Event()
    glib.idle_add(later.set, context=ctx)
    assert later.wait(WAIT)
    assert calls == [1]


def test_a_true_result_keeps_the_source(io: IOThread, ctx: MainContext) -> None:
    count = 0
    done = threading.Event()

    def callback() -> bool:
        nonlocal count
        count += 1
        if count == 3:
            done.set()
        return glib.SOURCE_CONTINUE

    source_id = glib.idle_add(callback, context=ctx)
    assert done.wait(WAIT)
    assert ctx.find_source_by_id(source_id) is not None
    glib.source_remove(source_id, context=ctx)


def test_destroyed_from_another_thread_mid_round_never_dispatches(
    io: IOThread, ctx: MainContext
) -> None:
    calls: list[str] = []
    entered, gate = threading.Event(), threading.Event()
    victim = glib.Idle()
    victim.set_callback(keep_calling(calls.append, "victim"))

    def first() -> bool:
        # The round has chosen both; the victim comes next.
        calls.append("first")
        entered.set()
        assert gate.wait(WAIT)
        return glib.SOURCE_REMOVE

    def attach_both() -> None:
        glib.idle_add(first, context=ctx)
        victim.attach(ctx)

    io.run_sync(attach_both)
    assert entered.wait(WAIT)
    victim.destroy()  # from this thread, while the IOThread is mid-round
    gate.set()
    flush(io)  # the round is over
    later = threading.Event()
    glib.idle_add(later.set, context=ctx)
    assert later.wait(WAIT)
    assert calls == ["first"]


@pytest.mark.parametrize("can_recurse", [False, True])
def test_no_recursive_dispatch_unless_the_source_can_recurse(
    io: IOThread, ctx: MainContext, can_recurse: bool
) -> None:
    depth = 0
    nested: list[int] = []
    done = threading.Event()
    source = glib.Idle()

    def callback() -> bool:
        nonlocal depth
        depth += 1
        nested.append(depth)
        if depth == 1:
            ctx.iteration(False)  # a nested iteration, on the IOThread
            done.set()
        depth -= 1
        return depth > 0  # the outer call removes the source

    source.set_callback(callback)
    source.set_can_recurse(can_recurse)
    source.attach(ctx)
    assert done.wait(WAIT)
    flush(io)
    assert source.is_destroyed()
    assert nested == ([1, 2] if can_recurse else [1])


def test_attach_and_destroy_from_another_thread_wake_the_iothread(
    io: IOThread, ctx: MainContext
) -> None:
    far = glib.Timeout(2**31 - 1)  # far away: the driver has nothing to do until woken
    far.set_callback(lambda: True)
    attached = Probe()
    after_destroy = Probe(far.is_destroyed)
    far.attach(ctx)
    attached.attach(ctx)  # from this thread: only a wake-up makes it prepared
    assert attached.prepared.wait(WAIT)
    after_destroy.attach(ctx)
    flush(io)
    far.destroy()  # from this thread: only a wake-up makes the driver prepare again
    assert after_destroy.prepared.wait(WAIT)
    fired = threading.Event()
    in_thread(lambda: glib.timeout_add(1, fired.set, context=ctx))  # from a third thread
    assert fired.wait(WAIT)
    attached.destroy()
    after_destroy.destroy()


def test_timeouts_fire_in_deadline_order_and_never_early(io: IOThread, ctx: MainContext) -> None:
    intervals = [30, 10, 20, 0, 10, 5, 30]
    fired: list[tuple[int, int, int]] = []  # (index, deadline, clock at dispatch)
    done = threading.Event()
    start = glib.get_monotonic_time()

    def on_timeout(index: int) -> bool:
        fired.append((index, deadlines[index], glib.get_monotonic_time()))
        if len(fired) == len(intervals):
            done.set()
        return glib.SOURCE_REMOVE

    sources = [glib.Timeout(ms) for ms in intervals]
    deadlines = [source.get_ready_time() for source in sources]

    def attach_all() -> None:
        # Reversed, so that attach order is not the deadline order.
        for index, source in reversed(list(enumerate(sources))):
            source.set_callback(on_timeout, index)
            source.attach(ctx)

    io.run_sync(attach_all)
    assert done.wait(WAIT)
    assert [deadline for _, deadline, _ in fired] == sorted(deadlines)
    for index, deadline, now in fired:
        assert now >= deadline >= start + intervals[index] * 1000


def test_a_repeating_timeout_is_never_early(io: IOThread, ctx: MainContext) -> None:
    interval_ms = 3
    source = glib.Timeout(interval_ms)
    seen: list[tuple[int, int]] = []  # (deadline, clock at dispatch)
    done = threading.Event()

    def tick() -> bool:
        seen.append((source.get_ready_time(), glib.get_monotonic_time()))
        if len(seen) == 4:
            done.set()
            return glib.SOURCE_REMOVE
        return glib.SOURCE_CONTINUE

    source.set_callback(tick)
    source.attach(ctx)
    assert done.wait(WAIT)
    for index, (deadline, now) in enumerate(seen):
        assert now >= deadline
        if index:
            assert deadline >= seen[index - 1][0] + interval_ms * 1000


def test_a_fd_watch_reports_in_then_hup_on_a_closed_pipe(io: IOThread, ctx: MainContext) -> None:
    r, w = os.pipe()
    conditions: list[IOCondition] = []
    data: list[bytes] = []
    got_in, got_hup = threading.Event(), threading.Event()

    def on_fd(fd: int, condition: IOCondition, tag: str) -> bool:
        assert tag == "tag"
        conditions.append(condition)
        if condition & glib.IO_HUP:
            got_hup.set()
            return glib.SOURCE_REMOVE
        data.append(os.read(fd, 100))
        got_in.set()
        return glib.SOURCE_CONTINUE

    try:
        source_id = glib.io_add_watch(
            r, glib.PRIORITY_DEFAULT, glib.IO_IN, on_fd, "tag", context=ctx
        )
        os.write(w, b"hello")
        assert got_in.wait(WAIT)
        os.close(w)
        assert got_hup.wait(WAIT)
        flush(io)
        assert ctx.find_source_by_id(source_id) is None
        # The driver stopped watching the fd with the IOThread's loop.
        assert not io.run_sync(lambda: io.loop.remove_reader(r))  # type: ignore[union-attr]
    finally:
        os.close(r)
        with contextlib.suppress(OSError):
            os.close(w)
    assert conditions[0] == glib.IO_IN
    assert data == [b"hello"]
    assert conditions[-1] & glib.IO_HUP  # reported though only IN was asked for


def test_a_fd_watch_on_a_socket_reports_out_then_in_and_hup(io: IOThread, ctx: MainContext) -> None:
    a, b = socket.socketpair()
    conditions: list[IOCondition] = []
    got_out, got_hup = threading.Event(), threading.Event()

    def on_out(sock: socket.socket, condition: IOCondition) -> bool:
        conditions.append(condition)
        got_out.set()
        return glib.SOURCE_REMOVE

    def on_in(sock: socket.socket, condition: IOCondition) -> bool:
        assert sock is a  # the object given, not its fd
        conditions.append(condition)
        got_hup.set()
        return glib.SOURCE_REMOVE

    with a, b:
        glib.io_add_watch(a, glib.PRIORITY_DEFAULT, glib.IO_OUT, on_out, context=ctx)
        assert got_out.wait(WAIT)
        glib.io_add_watch(a, glib.PRIORITY_DEFAULT, glib.IO_IN, on_in, context=ctx)
        b.close()
        assert got_hup.wait(WAIT)
        flush(io)
    assert conditions[0] == glib.IO_OUT
    assert conditions[1] & glib.IO_HUP
    assert conditions[1] & glib.IO_IN  # the EOF is readable


# -- cross-thread attach / destroy / invoke ---------------------------------------


def test_sources_attached_from_any_thread_run_on_the_iothread(
    io: IOThread, ctx: MainContext
) -> None:
    ran_in: list[int] = []
    events = [threading.Event() for _ in range(4)]
    glib.idle_add(record_thread, ran_in, events[0], context=ctx)  # this thread
    glib.timeout_add(1, record_thread, ran_in, events[1], context=ctx)
    in_thread(lambda: glib.idle_add(record_thread, ran_in, events[2], context=ctx))
    io.run_sync(lambda: glib.timeout_add(1, record_thread, ran_in, events[3], context=ctx))
    for event in events:
        assert event.wait(WAIT)
    assert set(ran_in) == {io_ident(io)}


def test_destroy_from_another_thread_cancels_and_finalizes(io: IOThread, ctx: MainContext) -> None:
    calls: list[str] = []
    never = Finalized()
    never.set_ready_time(glib.get_monotonic_time() + WAIT_MS * 1000)
    never.set_callback(keep_calling(calls.append, "never"))
    never_id = never.attach(ctx)
    removed_id = glib.timeout_add(WAIT_MS, keep_calling(calls.append, "removed"), context=ctx)
    flush(io)  # both are known to the driver
    in_thread(never.destroy)
    assert glib.source_remove(removed_id, context=ctx)
    assert never.is_destroyed()
    assert len(never.finalized_in) == 1
    assert ctx.find_source_by_id(never_id) is None
    assert ctx.find_source_by_id(removed_id) is None
    later = threading.Event()
    glib.idle_add(later.set, context=ctx)
    assert later.wait(WAIT)
    assert calls == []
    never.destroy()  # twice: harmless, finalized once
    assert len(never.finalized_in) == 1


def test_invoke_from_another_thread_runs_on_the_iothread(io: IOThread, ctx: MainContext) -> None:
    ran_in: list[int] = []
    done = [threading.Event() for _ in range(2)]
    ctx.invoke(record_thread, ran_in, done[0])
    in_thread(lambda: ctx.invoke(record_thread, ran_in, done[1], priority=glib.PRIORITY_HIGH))
    for event in done:
        assert event.wait(WAIT)
    assert ran_in == [io_ident(io)] * 2


def test_invoke_on_the_iothread_runs_at_once(io: IOThread, ctx: MainContext) -> None:
    def invoke_here() -> list[int]:
        calls: list[int] = []

        def thrice() -> bool:
            calls.append(len(calls))
            return len(calls) < 3  # invoke repeats it while it returns true

        ctx.invoke(thrice)
        return calls  # filled before invoke() returned

    assert io.run_sync(invoke_here) == [0, 1, 2]


def test_a_main_loop_elsewhere_waits_while_the_iothread_drives_the_context(
    io: IOThread, ctx: MainContext
) -> None:
    assert_a_main_loop_elsewhere_waits(ctx, io_ident(io))


# -- neither starves the other ------------------------------------------------------


async def test_a_busy_idle_does_not_starve_asyncio_work(loop_factory: LoopFactory) -> None:
    async with IOThread("g0", loop_factory=loop_factory) as io:
        ctx = io.get_g_main_context()
        caller = asyncio.get_running_loop()
        idles = 0

        def busy() -> bool:
            nonlocal idles
            idles += 1
            return glib.SOURCE_CONTINUE

        def report(future: asyncio.Future[int]) -> None:
            # runs in the IOThread: hands the idle count back to this loop
            caller.call_soon_threadsafe(future.set_result, idles)

        started: asyncio.Future[int] = caller.create_future()
        source_id = glib.idle_add(busy, priority=glib.PRIORITY_DEFAULT_IDLE, context=ctx)
        glib.idle_add(report, started, priority=glib.PRIORITY_DEFAULT_IDLE, context=ctx)
        seen = [await asyncio.wait_for(started, WAIT)]  # the busy idle is running
        for _ in range(20):
            # A plain callback from another thread...
            handled: asyncio.Future[int] = caller.create_future()
            io.call_soon_threadsafe(report, handled)
            seen.append(await asyncio.wait_for(handled, WAIT))
            # ...a plain function and a coroutine through run()...
            seen.append(await asyncio.wait_for(io.run(lambda: idles), WAIT))

            async def task() -> int:
                for _ in range(3):
                    await asyncio.sleep(0)  # the task yields to the busy idle
                return idles

            seen.append(await asyncio.wait_for(io.run(task), WAIT))
        # The idle kept running between them: both made progress.
        assert seen[-1] > seen[0]
        glib.source_remove(source_id, context=ctx)


def test_a_flood_of_asyncio_callbacks_does_not_stop_a_timeout(
    io: IOThread, ctx: MainContext
) -> None:
    stop = threading.Event()
    fired = threading.Event()
    floods = 0

    def flood() -> None:
        nonlocal floods
        floods += 1
        if not stop.is_set():
            asyncio.get_running_loop().call_soon(flood)

    def start() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(10):  # ten callbacks always queued on the loop
            loop.call_soon(flood)

    try:
        io.run_sync(start)
        glib.timeout_add(5, fired.set, context=ctx)
        # And a flood through the cross-thread path, until the timeout fires.
        deadline = time.monotonic() + WAIT
        while not fired.is_set() and time.monotonic() < deadline:
            io.call_soon_threadsafe(int)  # a no-op callback
        assert fired.is_set()
        flooding = floods
    finally:
        stop.set()
    assert flooding > 0


# -- stop with live sources -----------------------------------------------------------


def test_stop_destroys_and_finalizes_live_sources(loop_factory: LoopFactory) -> None:
    io = IOThread("g0", loop_factory=loop_factory)
    io.start()
    a, b = socket.socketpair()
    try:
        ctx = io.get_g_main_context()
        ident = io_ident(io)
        busy = threading.Event()

        class BusyIdle(Finalized):
            def check(self) -> bool:
                return True

            def prepare(self) -> tuple[bool, int]:
                return True, 0

        idle = BusyIdle()
        idle.set_callback(keep_calling(busy.set))
        timer = Finalized()
        timer.set_ready_time(glib.get_monotonic_time() + WAIT_MS * 1000)
        timer.set_callback(lambda: True)
        watch = Finalized()
        watch.add_unix_fd(a.fileno(), glib.IO_IN)  # b sends nothing: never ready
        watch.set_callback(lambda: True)
        sources = [idle, timer, watch]
        for source in sources:
            source.attach(ctx)
        module_id = glib.timeout_add(WAIT_MS, lambda: True, context=ctx)
        assert busy.wait(WAIT)
        flush(io)
        assert not any(source.is_destroyed() for source in sources)
    finally:
        io.stop()
        b.close()
        a.close()
    for source in sources:
        assert source.is_destroyed()
        assert source.finalized_in == [ident]  # once, on the IOThread, while it stopped
    assert ctx.find_source_by_id(module_id) is None
    assert all(ctx.find_source_by_id(s.get_id()) is None for s in sources)
    assert ctx.acquire()  # released by the IOThread
    ctx.release()
    # Once the IOThread is gone, attaching is refused and a wake-up opens no fd.
    fds = _fds()
    with pytest.raises(RuntimeError, match="closed when its IOThread stopped"):
        glib.idle_add(lambda: None, context=ctx)
    ctx.wakeup()
    assert _fds() == fds


def test_a_source_attached_while_the_iothread_stops_is_refused(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread attaching while stop destroys the sources: the source
    is refused, not left attached to a context nothing runs or finalises."""
    io = IOThread("g0", loop_factory=loop_factory)
    io.start()
    ctx = io.get_g_main_context()
    before = [Finalized() for _ in range(3)]
    for source in before:
        source.attach(ctx)
    during = Finalized()
    outcome: list[str] = []
    destroy_all = ctx._destroy_all

    def attach_from_another_thread_then_destroy_all() -> None:
        def attach() -> None:
            try:
                during.attach(ctx)
            except RuntimeError as exc:
                outcome.append(str(exc))
            else:
                outcome.append("attached")

        in_thread(attach)
        destroy_all()

    monkeypatch.setattr(ctx, "_destroy_all", attach_from_another_thread_then_destroy_all)
    io.stop()
    assert len(outcome) == 1
    assert "closed when its IOThread stopped" in outcome[0]
    assert not during.is_destroyed()  # never attached
    for source in before:
        assert source.is_destroyed()
        assert len(source.finalized_in) == 1


def test_a_main_loop_waiting_for_the_context_runs_it_after_the_iothread_stops(
    loop_factory: LoopFactory,
) -> None:
    """g_main_loop_run waits for the context's owner; once the IOThread has
    stopped and released it, the waiting loop owns it and runs until quit."""
    io = IOThread("g0", loop_factory=loop_factory)
    io.start()
    ctx = io.get_g_main_context()
    loop = glib.MainLoop(ctx)
    outcome: list[str] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:
            outcome.append(repr(exc))
        else:
            outcome.append("returned")

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until(loop.is_running, "run() waiting for the context")
        io.stop()
        wait_until(lambda: ctx._owner == thread.ident, "the waiting loop to own the context")
    finally:
        loop.quit()
        thread.join(WAIT)
    assert outcome == ["returned"]
    ctx._close_waker()  # the pipe its poll created; nothing polls it any more


def test_stop_while_a_source_is_being_dispatched(loop_factory: LoopFactory) -> None:
    io = IOThread("g0", loop_factory=loop_factory)
    io.start()
    entered, gate = threading.Event(), threading.Event()
    source = Finalized()
    try:
        ctx = io.get_g_main_context()

        def hold() -> bool:
            entered.set()
            assert gate.wait(WAIT)
            return glib.SOURCE_CONTINUE

        source.set_ready_time(0)
        source.set_callback(hold)
        source.attach(ctx)
        assert entered.wait(WAIT)
        stopper = threading.Thread(target=io.stop, name="stopper")
        stopper.start()
        wait_until(lambda: not io.running)
        gate.set()
        stopper.join(WAIT)
        assert not stopper.is_alive()
    finally:
        gate.set()
        io.stop()
    assert source.is_destroyed()
    assert len(source.finalized_in) == 1


def test_many_iothreads_each_have_their_own_context(loop_factory: LoopFactory) -> None:
    with (
        IOThread("g0", loop_factory=loop_factory) as io0,
        IOThread("g1", loop_factory=loop_factory) as io1,
    ):
        ctx0, ctx1 = io0.get_g_main_context(), io1.get_g_main_context()
        assert ctx0 is not ctx1
        ran_in: list[int] = []
        done = [threading.Event(), threading.Event()]
        glib.idle_add(record_thread, ran_in, done[0], context=ctx0)
        assert done[0].wait(WAIT)
        glib.idle_add(record_thread, ran_in, done[1], context=ctx1)
        assert done[1].wait(WAIT)
        assert ran_in == [io_ident(io0), io_ident(io1)]


def test_stop_survives_an_unbalanced_thread_default_stack(loop_factory: LoopFactory) -> None:
    """Code on the IOThread that pushes a context and never pops it must not
    keep stop() from finishing, nor the IOThread's sources from finalising."""
    finalized = threading.Event()

    class Marked(glib.Timeout):
        def finalize(self) -> None:
            finalized.set()

    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    try:
        context = io.get_g_main_context()
        Marked(10_000).attach(context)
        stray = MainContext()
        io.run_sync(stray.push_thread_default)  # never popped
    finally:
        io.stop()
    assert finalized.is_set()
    assert not io.running
