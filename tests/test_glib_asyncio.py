"""A context served by an asyncio loop: the AsyncioDriver, alone and in an IOThread.

Tests taking ``driver`` run on every asyncio-based driver (``driver-asyncio``,
``driver-uvloop``, ``iothread-asyncio``, ``iothread-uvloop``; see
``helpers.running_driver``); the others test the ``AsyncioDriver`` interface
on a loop of each kind (``kind``).  No test asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from iothreads import glib
from iothreads.glib import IOCondition, MainContext, Source
from iothreads.glib._driver import AsyncioDriver

from .helpers import (
    ASYNCIO_DRIVERS,
    LOOP_FACTORIES,
    WAIT,
    AsyncioLoopDriver,
    LoopThread,
    new_context,
    record_thread,
    running_driver,
    thread_defaults,
)

LOOP_KINDS = list(LOOP_FACTORIES)


@pytest.fixture(params=ASYNCIO_DRIVERS)
def driver(request: pytest.FixtureRequest) -> Iterator[AsyncioLoopDriver]:
    with running_driver(request.param) as driver:
        assert isinstance(driver, AsyncioLoopDriver)
        yield driver


@pytest.fixture
def ctx() -> Iterator[MainContext]:
    with new_context() as context:
        yield context


# -- neither starves the other ----------------------------------------------------


def test_a_busy_idle_does_not_starve_asyncio_work(driver: AsyncioLoopDriver) -> None:
    ctx = driver.context
    idles = 0

    def busy() -> bool:
        nonlocal idles
        idles += 1
        return glib.SOURCE_CONTINUE

    source_id = glib.idle_add(busy, context=ctx)
    # A chain of callbacks on the loop, each queueing the next.
    done = threading.Event()
    idles_during: list[int] = []

    def step(n: int) -> None:
        idles_during.append(idles)
        if n == 0:
            done.set()
        else:
            asyncio.get_running_loop().call_soon(step, n - 1)

    driver.call_soon_threadsafe(step, 50)
    assert done.wait(WAIT)
    # The idle kept running between the callbacks: both made progress.
    assert idles_during[-1] > idles_during[0]
    # Cross-thread work of every kind meanwhile.
    seen = [driver.call(lambda: idles)]

    def report(handled: threading.Event) -> None:
        seen.append(idles)
        handled.set()

    for _ in range(20):
        # A plain callback from another thread...
        handled = threading.Event()
        driver.call_soon_threadsafe(report, handled)
        assert handled.wait(WAIT)
        # ...a plain function and a coroutine...
        seen.append(driver.call(lambda: idles))

        async def task() -> int:
            for _ in range(3):
                await asyncio.sleep(0)  # the task yields to the busy idle
            return idles

        seen.append(driver.run_coroutine(task))
    assert seen[-1] > seen[0]
    assert glib.source_remove(source_id, context=ctx)


def test_a_timeout_fires_under_a_flood_of_callbacks(driver: AsyncioLoopDriver) -> None:
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
        glib.timeout_add(1, fired.set, context=driver.context)

    try:
        driver.call(start)
        # And a flood through the cross-thread path, until the timeout fires.
        deadline = time.monotonic() + WAIT
        while not fired.is_set() and time.monotonic() < deadline:
            driver.call_soon_threadsafe(int)  # a no-op callback
        assert fired.is_set()
        flooding = floods
    finally:
        stop.set()
    assert flooding > 0


class CountingProbe(Source):
    """A never-ready source counting its prepares, i.e. the driver's rounds."""

    def __init__(self) -> None:
        super().__init__()
        self.prepares = 0

    def prepare(self) -> tuple[bool, int]:
        self.prepares += 1
        return False, -1


def test_a_hup_only_watch_does_not_spin_on_unread_data(driver: AsyncioLoopDriver) -> None:
    # poll(2) ignores IN for a watch that asked only for HUP, so GLib sleeps
    # while data sits unread; the driver must not run a round per loop pass.
    ctx = driver.context
    probe = CountingProbe()
    probe.attach(ctx)
    hup = threading.Event()
    a, b = socket.socketpair()
    with a:
        glib.io_add_watch(
            a, glib.PRIORITY_DEFAULT, glib.IO_HUP, lambda s, c: hup.set(), context=ctx
        )
        for _ in range(3):  # the rounds woken by the attaches are over
            driver.flush()
        before = driver.call(lambda: probe.prepares)
        b.send(b"unread")
        for _ in range(20):  # twenty passes of the loop
            driver.flush()
        assert driver.call(lambda: probe.prepares) - before <= 2
        b.close()
        assert hup.wait(WAIT)


@pytest.mark.parametrize("step", ["pending", "iteration"])
def test_the_driver_still_wakes_after_an_iteration_run_on_its_thread(
    driver: AsyncioLoopDriver, step: str
) -> None:
    # An iteration run by plain asyncio code on the loop's thread (it owns the
    # context) must not leave the driver deaf to later attaches.
    ctx = driver.context

    def run_step() -> bool:
        return ctx.pending() if step == "pending" else ctx.iteration(False)

    assert driver.call(run_step) is False
    ran_in: list[int] = []
    from_here, from_loop = threading.Event(), threading.Event()
    glib.idle_add(record_thread, ran_in, from_here, context=ctx)
    assert from_here.wait(WAIT)
    driver.call(run_step)
    driver.call(lambda: glib.idle_add(record_thread, ran_in, from_loop, context=ctx))
    assert from_loop.wait(WAIT)
    assert ran_in == [driver.ident] * 2


# -- the AsyncioDriver interface ----------------------------------------------------


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_start_errors(kind: str, ctx: MainContext) -> None:
    with LoopThread(kind) as lt:
        driver = lt.call(AsyncioDriver, ctx, lt.loop)
        assert driver.context is ctx
        assert ctx.acquire()
        try:
            with pytest.raises(RuntimeError, match="it is owned by thread"):
                lt.call(driver.start)
        finally:
            ctx.release()
        assert lt.call(thread_defaults) == (None, [])  # a refused start pushes nothing
        lt.call(driver.start)
        with pytest.raises(RuntimeError, match="is running, cannot start"):
            lt.call(driver.start)
        lt.call(driver.close)
        lt.call(driver.close)  # harmless twice
        with pytest.raises(RuntimeError, match="is closed, cannot start"):
            lt.call(driver.start)
        assert lt.call(thread_defaults) == (None, [])


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_start_pushes_the_thread_default_and_close_takes_it_off(
    kind: str, ctx: MainContext, caplog: pytest.LogCaptureFixture
) -> None:
    stray = MainContext()
    with LoopThread(kind) as lt:
        driver = lt.call(AsyncioDriver, ctx, lt.loop)
        lt.call(driver.start)
        assert lt.call(thread_defaults) == (ctx, [ctx])
        assert thread_defaults() == (None, [])  # the caller's thread is not touched
        lt.call(stray.push_thread_default)  # never popped
        with caplog.at_level(logging.WARNING, logger="iothreads.glib"):
            lt.call(driver.close)
        assert "is not the thread's top default context" in caplog.text
        assert lt.call(thread_defaults) == (stray, [stray])  # only ctx was taken off
        assert ctx.acquire()  # released by the loop thread, once per acquire
        ctx.release()
        lt.call(stray.pop_thread_default)


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_close_unregisters_destroys_finalizes_and_releases(kind: str, ctx: MainContext) -> None:
    finalized = threading.Event()

    class Watched(Source):
        def finalize(self) -> None:
            finalized.set()

    a, b = socket.socketpair()
    with a, b, LoopThread(kind) as lt:
        driver = lt.call(AsyncioDriver, ctx, lt.loop)
        lt.call(driver.start)
        wake_fd = ctx.fileno()
        # Neither readable (b sends nothing) nor writable (a's buffer is full):
        # the driver keeps a reader and a writer registered for it.
        a.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                a.send(b"x" * 65536)  # a chunk size: fewer calls to fill the buffer
        source = Watched()
        source.add_unix_fd(a.fileno(), glib.IO_IN | glib.IO_OUT)
        source.set_callback(lambda: True)
        source_id = source.attach(ctx)
        idle_id = glib.idle_add(lambda: True, context=ctx)
        # Let the driver register the source's fd.
        synced = threading.Event()
        glib.idle_add(synced.set, priority=glib.PRIORITY_HIGH, context=ctx)
        assert synced.wait(WAIT)
        assert not finalized.is_set()
        lt.call(driver.close)
        assert finalized.is_set()
        assert source.is_destroyed()
        assert ctx.find_source_by_id(source_id) is None
        assert ctx.find_source_by_id(idle_id) is None
        assert not lt.call(lt.loop.remove_reader, a.fileno())
        assert not lt.call(lt.loop.remove_writer, a.fileno())
        assert not lt.call(lt.loop.remove_reader, wake_fd)
        assert ctx.acquire()  # released by the loop thread
        ctx.release()


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_the_driver_survives_being_closed_from_a_callback(kind: str, ctx: MainContext) -> None:
    with LoopThread(kind) as lt:
        driver = lt.call(AsyncioDriver, ctx, lt.loop)
        lt.call(driver.start)
        closed = threading.Event()

        def close() -> None:
            driver.close()
            closed.set()

        glib.idle_add(close, context=ctx)
        assert closed.wait(WAIT)
        assert lt.call(ctx.acquire)
        lt.call(ctx.release)
        assert lt.call(thread_defaults) == (None, [])


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_close_finishes_even_if_a_step_raises(kind: str) -> None:
    # The loop is not running: start() and close() run in this, its thread.
    loop = LOOP_FACTORIES[kind]()
    ctx = MainContext()
    finalized: list[bool] = []

    class Marked(glib.Timeout):
        def finalize(self) -> None:
            finalized.append(True)

    driver = AsyncioDriver(ctx, loop)
    try:
        driver.start()
        Marked(10_000).attach(ctx)
        real_remove = loop.remove_reader
        calls = 0

        def flaky_remove(fd: int) -> bool:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("remove_reader failed")
            return real_remove(fd)

        loop.remove_reader = flaky_remove  # type: ignore[method-assign, assignment]
        with pytest.raises(RuntimeError, match="remove_reader failed"):
            driver.close()
        assert finalized == [True]
        assert not ctx.is_owner()
        assert thread_defaults() == (None, [])
    finally:
        loop.close()


async def test_the_driver_on_the_running_loop(ctx: MainContext) -> None:
    loop = asyncio.get_running_loop()
    driver = AsyncioDriver(ctx, loop)
    driver.start()
    try:
        fired: asyncio.Future[int] = loop.create_future()
        deadline = glib.get_monotonic_time() + 2000
        glib.timeout_add(2, lambda: fired.set_result(glib.get_monotonic_time()), context=ctx)
        assert await asyncio.wait_for(fired, WAIT) >= deadline
        a, b = socket.socketpair()
        with a, b:
            got: asyncio.Future[IOCondition] = loop.create_future()
            glib.io_add_watch(
                a, glib.PRIORITY_DEFAULT, glib.IO_IN, lambda s, c: got.set_result(c), context=ctx
            )
            b.send(b"x")
            assert await asyncio.wait_for(got, WAIT) == glib.IO_IN
    finally:
        driver.close()
