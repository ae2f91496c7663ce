"""A main-loop installed with a window: the application's loop polls too.

The replies of ``io.run`` calls awaited on that loop come through the inbox
of the AioContext serving it (so a spin there catches them), every call
still gets exactly one outcome, and ``close()`` gives the loop back as it
was.  Each test runs on both loop kinds and both inbox implementations.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import NoReturn

import pytest

from iothreads import InvalidParameterType, InvalidParameterValue, IOThread, MainLoop
from iothreads._aio import AioContext, _inbox, context_of

from .helpers import (
    LOOP_FACTORIES,
    WAIT,
    LoopFactory,
    LoopThread,
    loop_kind,
    refusing_executors,
)

#: Wide enough that the window, once grown, covers a round trip here.
WINDOW_NS = 262_144

CALLS = 20


@pytest.fixture
def main_loop() -> Iterator[MainLoop]:
    ml = MainLoop()
    try:
        yield ml
    finally:
        ml.close()


async def noop() -> None:
    pass


def selector_of(loop: asyncio.AbstractEventLoop) -> object:
    """The stdlib loop's selector (None for uvloop, which has none)."""
    return getattr(loop, "_selector", None)


async def test_replies_come_through_the_main_loops_inbox(
    main_loop: MainLoop, loop_factory: LoopFactory
) -> None:
    loop = asyncio.get_running_loop()
    main_loop.install(poll_max_ns=WINDOW_NS)
    aio = main_loop.aio_context
    assert isinstance(aio, AioContext)
    assert context_of(loop) is aio
    with IOThread("io0", loop_factory=loop_factory) as io:
        results = [await io.run(lambda i=i: i) for i in range(CALLS)]
        await io.run(noop)
        native = io.aio_context.statistics().native
    assert results == list(range(CALLS))
    stats = aio.statistics()
    assert stats.submitted == CALLS + 1  # one reply each, none by the loop's own channel
    assert stats.native is native  # the implementation the test runs on


async def test_close_gives_the_loop_back(main_loop: MainLoop, loop_factory: LoopFactory) -> None:
    loop = asyncio.get_running_loop()
    before = selector_of(loop)
    main_loop.install(poll_max_ns=WINDOW_NS)
    if loop_kind(loop) == "stdlib":
        assert selector_of(loop) is not before  # wrapped: select() polls first
    main_loop.close()
    assert (main_loop.aio_context, context_of(loop)) == (None, None)
    assert selector_of(loop) is before
    with IOThread("io0", loop_factory=loop_factory) as io:
        assert await io.run(lambda: "by the loop's own channel") == "by the loop's own channel"


async def test_close_from_another_thread_detaches_in_the_loops_thread(
    main_loop: MainLoop,
) -> None:
    loop = asyncio.get_running_loop()
    main_loop.install(poll_max_ns=WINDOW_NS)
    aio = main_loop.aio_context
    assert aio is not None
    closed = asyncio.Event()

    def close_elsewhere() -> None:
        main_loop.close()
        # Queued after the detach close() queued: the loop runs them in order.
        loop.call_soon_threadsafe(closed.set)

    thread = threading.Thread(target=close_elsewhere)
    thread.start()
    try:
        await asyncio.wait_for(closed.wait(), WAIT)
    finally:
        thread.join(WAIT)
    assert aio.closed
    assert context_of(loop) is None


async def test_a_reply_refused_by_a_closed_inbox_takes_the_loops_own_channel(
    loop_factory: LoopFactory,
) -> None:
    """Between a context's close_inbox() and its close() the loop still runs:
    a reply its inbox refuses goes through the loop's own channel."""
    loop = asyncio.get_running_loop()
    aio = AioContext(loop, poll_max_ns=0, poll_grow=0, poll_shrink=0, aio_max_batch=0)
    try:
        aio.close_inbox()
        with IOThread("io0", loop_factory=loop_factory) as io:
            assert await io.run(lambda: 42) == 42
        assert aio.statistics().submitted == 0
    finally:
        aio.close()


async def test_an_iothreads_replies_come_through_its_own_inbox(
    loop_factory: LoopFactory,
) -> None:
    with (
        IOThread("caller", loop_factory=loop_factory) as caller,
        IOThread("callee", loop_factory=loop_factory) as callee,
    ):

        async def ask() -> list[int]:
            return [await callee.run(lambda i=i: i) for i in range(CALLS)]

        before = caller.aio_context.statistics().submitted
        assert await caller.run(ask) == list(range(CALLS))
        # The call of ask() itself, and one reply per inner call.
        assert caller.aio_context.statistics().submitted - before == CALLS + 1


@pytest.mark.parametrize(
    ("window", "error", "message"),
    [
        ({"poll_max_ns": -1}, InvalidParameterValue, r"^poll-max-ns value must be in range"),
        ({"poll_grow": -2}, InvalidParameterValue, r"^poll-grow value must be in range"),
        ({"poll_shrink": "2"}, InvalidParameterType, r"^Invalid parameter type for 'poll-shrink'"),
        ({"poll_max_ns": True}, InvalidParameterType, r"^Invalid parameter type for 'poll-max-ns'"),
    ],
)
async def test_a_bad_window_installs_nothing(
    main_loop: MainLoop, window: dict[str, object], error: type[Exception], message: str
) -> None:
    loop = asyncio.get_running_loop()
    before = selector_of(loop)
    with pytest.raises(error, match=message):
        main_loop.install(**window)  # type: ignore[arg-type]
    assert (main_loop.loop, main_loop.thread_pool, main_loop.aio_context) == (None, None, None)
    assert (context_of(loop), selector_of(loop)) == (None, before)
    main_loop.install()  # and it can still be installed
    assert main_loop.loop is loop


def test_a_window_for_a_loop_running_elsewhere_is_refused(
    main_loop: MainLoop, loop_factory: LoopFactory
) -> None:
    kind = next(name for name, factory in LOOP_FACTORIES.items() if factory is loop_factory)
    with LoopThread(kind) as other:
        with pytest.raises(RuntimeError, match="runs in another thread: install a main-loop"):
            main_loop.install(other.loop, poll_max_ns=WINDOW_NS)
        assert (main_loop.loop, main_loop.thread_pool) == (None, None)
        assert context_of(other.loop) is None
        main_loop.install(other.loop)  # without a window it may
        assert main_loop.aio_context is None


async def test_a_loop_serves_one_context_at_most(loop_factory: LoopFactory) -> None:
    """A main-loop cannot poll the loop of an IOThread: that loop has its context."""
    main_loop = MainLoop()
    try:
        with IOThread("io0", loop_factory=loop_factory) as io:

            async def install_there() -> None:
                main_loop.install(poll_max_ns=WINDOW_NS)

            with pytest.raises(
                RuntimeError, match="has an AioContext already, owned by IOThread 'io0'"
            ):
                await io.run(install_there)
        assert (main_loop.loop, main_loop.thread_pool) == (None, None)
    finally:
        main_loop.close()


async def test_aio_max_batch_reaches_the_main_loops_context_live(main_loop: MainLoop) -> None:
    main_loop.install(poll_max_ns=WINDOW_NS)
    aio = main_loop.aio_context
    assert aio is not None
    assert aio.statistics().max_batch == 0
    aio.window.poll_ns = 4000  # as if grown: a restart would set it to 0
    main_loop.aio_max_batch = 5
    # Applied by a callback through the context's inbox, which the loop
    # serves at its next look (a zero-timeout select: no sleep, no window
    # change meanwhile).
    while aio.statistics().max_batch != 5:
        await asyncio.sleep(0)
    assert aio.statistics().poll_ns == 4000  # aio-max-batch alone leaves the window


def test_install_before_the_loop_runs(main_loop: MainLoop, loop_factory: LoopFactory) -> None:
    """A loop that is not running yet may be given a window."""
    loop = loop_factory()
    try:
        main_loop.install(loop, poll_max_ns=WINDOW_NS)
        assert context_of(loop) is main_loop.aio_context
        main_loop.close()
        assert context_of(loop) is None
    finally:
        loop.close()


@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built")
async def test_a_serve_queued_before_the_close_finds_nothing_to_do() -> None:
    """uvloop's poller queues ``serve_inbox``; a main-loop's context may close
    before it runs, and the loop goes on: the closed inbox is not served, and
    (native core) its loop is not counted awake again."""
    loop = asyncio.get_running_loop()
    core = _inbox.native_core
    assert core is not None
    aio = AioContext(loop, poll_max_ns=0, poll_grow=0, poll_shrink=0, aio_max_batch=0)
    aio.close()
    awake = core._loops_awake()
    aio.serve_inbox()
    assert core._loops_awake() == awake
    assert aio.closed


async def test_close_runs_what_the_inbox_holds(main_loop: MainLoop) -> None:
    """Work queued when the context closes still runs: every call one outcome."""
    main_loop.install(poll_max_ns=WINDOW_NS)
    aio = main_loop.aio_context
    assert aio is not None
    ran: list[str] = []
    aio.call_soon_threadsafe(ran.append, "queued before the close")
    main_loop.close()
    assert ran == ["queued before the close"]


async def test_close_is_idempotent(main_loop: MainLoop) -> None:
    main_loop.install(poll_max_ns=WINDOW_NS)
    aio = main_loop.aio_context
    assert aio is not None
    aio.close()
    aio.close()
    main_loop.close()  # its context is closed already
    assert context_of(asyncio.get_running_loop()) is None


def test_close_from_another_thread_after_the_loop_stopped_detaches_there(
    main_loop: MainLoop, loop_factory: LoopFactory
) -> None:
    """A loop runs no callback queued after its last iteration began: the
    detach that close() queued never runs there, so close() does it itself
    once the loop has stopped, and returns with the loop given back."""
    loop = loop_factory()
    selector = selector_of(loop)
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        installed = threading.Event()

        def install() -> None:
            main_loop.install(poll_max_ns=WINDOW_NS)
            installed.set()

        loop.call_soon_threadsafe(install)
        assert installed.wait(WAIT)
        in_last, release, queued = threading.Event(), threading.Event(), threading.Event()

        def last_iteration() -> None:
            loop.stop()
            in_last.set()
            release.wait(WAIT)

        real = loop.call_soon_threadsafe
        real(last_iteration)
        assert in_last.wait(WAIT)

        def spy(callback: object, *args: object) -> object:
            handle = real(callback, *args)  # type: ignore[arg-type]
            queued.set()
            return handle

        loop.call_soon_threadsafe = spy  # type: ignore[method-assign, assignment]
        closer = threading.Thread(target=main_loop.close)
        closer.start()
        assert queued.wait(WAIT)  # the detach is queued, after the stop
        release.set()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert (context_of(loop), selector_of(loop)) == (None, selector)
    finally:
        release.set()
        thread.join(WAIT)
        loop.close()


@pytest.mark.parametrize("failing", ["the pool", "the loop"])
def test_install_that_fails_leaves_the_loop_as_it_was(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The pool cannot be made, or the loop refuses it, after the context
    was attached: the context is detached again."""
    main_loop = MainLoop()
    if failing == "the pool":
        loop = loop_factory()

        def no_pool(*args: object) -> NoReturn:
            raise TypeError("this loop keeps its own executor")

        monkeypatch.setattr(main_loop, "_new_pool", no_pool)
    else:
        loop = refusing_executors(loop_factory)()
    selector = selector_of(loop)
    try:
        with pytest.raises(TypeError, match="this loop keeps its own executor"):
            main_loop.install(loop, poll_max_ns=WINDOW_NS)
        assert (main_loop.loop, main_loop.thread_pool, main_loop.aio_context) == (None, None, None)
        assert (context_of(loop), selector_of(loop)) == (None, selector)
    finally:
        main_loop.close()
        loop.close()
