"""The GLib-like context an IOThread attaches lazily, and what stop() does to it.

The semantics the IOThread shares with every other driver of a context are
in test_glib_dispatch.py and test_glib_asyncio.py, which run them on IOThreads
too.  Each test runs once per loop kind, its IOThreads on that kind
(``loop_factory``).  No test asserts on timing: threads meet on Events and
futures, every wait is bounded by WAIT.  conftest's autouse ``no_leaks``
checks that stop() leaves no thread and no file descriptor behind.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from iothreads import IOThread, IOThreadStopped, glib
from iothreads.glib import MainContext, Source, _context, _poll, _source
from iothreads.glib._driver import SOURCES_PER_ROUND, AsyncioDriver

from .helpers import (
    WAIT,
    WAIT_MS,
    Finalized,
    LoopFactory,
    gate_loop,
    in_thread,
    keep_calling,
    open_fds,
    record_thread,
    thread_defaults,
    wait_until,
)


@pytest.fixture
def io(loop_factory: LoopFactory) -> Iterator[IOThread]:
    with IOThread("g0", loop_factory=loop_factory) as io:
        yield io


def io_ident(io: IOThread) -> int:
    """The Python thread ident of the IOThread's thread."""
    return io.run_sync(threading.get_ident)


# -- lazy attach ---------------------------------------------------------------


class GlibSpy:
    """Records every creation of GLib machinery (contexts, drivers, pipes,
    the default context) and every iteration step, by wrapping glib's classes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for owner, name in [
            (glib.MainContext, "__init__"),
            (glib.MainContext, "prepare"),
            (glib.MainContext, "_prepare_steps"),
            (glib.MainContext, "check"),
            (glib.MainContext, "_check_steps"),
            (AsyncioDriver, "__init__"),
            (_poll._WakePipe, "__init__"),
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
    return _context._default_context, repr(_source._next_id)


def test_no_glib_machinery_runs_before_the_first_call(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = GlibSpy(monkeypatch)
    state = glib_state()
    with IOThread("g0", loop_factory=loop_factory) as io:
        fds_before = open_fds()
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
        assert open_fds() == fds_before  # no wake-up pipe, nothing registered

        ctx = io.get_g_main_context()
        assert set(spy.calls) >= {
            "MainContext.__init__",
            "AsyncioDriver.__init__",
            "_WakePipe.__init__",
            "MainContext._prepare_steps",  # the loop serves the context from now on
        }
        assert spy.calls.count("MainContext.__init__") == 1
        # The context's wake-up pipe, watched by the loop.  (Sizes, not sets:
        # the listing's own fd may take a freed number.)
        fds_after = open_fds()
        assert len(fds_after) == len(fds_before) + 2
        assert ctx.fileno() in fds_after
        assert _context._default_context is state[0]  # the global default is not involved


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


# -- stop with live sources ----------------------------------------------------


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
        io.run_sync(lambda: None)  # the dispatches under way are over
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
    fds = open_fds()
    with pytest.raises(RuntimeError, match="closed when its IOThread stopped"):
        glib.idle_add(lambda: None, context=ctx)
    ctx.wakeup()
    assert open_fds() == fds


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


# -- fairness and the stop under a flood of sources ---------------------------


def test_a_flood_of_ready_sources_leaves_the_asyncio_side_its_turn(
    loop_factory: LoopFactory,
) -> None:
    """Each dispatch attaches two more sources (their number doubles every
    round): a callback queued from inside one dispatch runs after at most a
    few rounds' share of dispatches, not after the whole, growing, snapshot."""
    limit = 1 << 15  # sources in all
    # The dispatch that queues the callback: the first of a generation of
    # 1 << 13 sources (the 1 << 13 - 1 of the earlier ones came before it).
    queued_at = 1 << 13
    dispatched = [0]
    attached = [1]
    seen_at: list[int] = []
    done = threading.Event()

    def record() -> None:
        seen_at.append(dispatched[0])
        done.set()

    def bomb() -> bool:
        dispatched[0] += 1
        for _ in range(2):
            if attached[0] < limit:
                attached[0] += 1
                glib.idle_add(bomb, context=ctx)
        if dispatched[0] == queued_at:
            # From the IOThread itself, through its inbox: counted exactly.
            io.call_soon_threadsafe(record)
        return glib.SOURCE_REMOVE

    with IOThread("g0", loop_factory=loop_factory) as io:
        ctx = io.get_g_main_context()
        glib.idle_add(bomb, context=ctx)
        assert done.wait(WAIT)
        # And a run_sync from another thread completes while the flood goes on.
        assert io.run_sync(lambda: dispatched[0]) >= queued_at
        wait_until(lambda: io.run_sync(lambda: dispatched[0]) == limit, "the flood to end")
    # The round in progress, at most one more and a margin for the loop's
    # order of callbacks; without the cap the rest of the generation.
    assert seen_at[0] - queued_at <= 4 * SOURCES_PER_ROUND < queued_at - 1


class Scanned(Source):
    """Never ready, always wants another iteration; counts its prepare and
    check calls, and at the *at*-th call of *hook* queues a callback that
    notes the count when it runs."""

    counts: ClassVar[dict[str, int]]
    seen: ClassVar[list[int]]

    def __init__(self, io: IOThread, hook: str, at: int, done: threading.Event) -> None:
        super().__init__()
        self.io, self.hook, self.at, self.done = io, hook, at, done

    def _count(self, hook: str) -> None:
        # Runs in the IOThread only.
        self.counts[hook] += 1
        if hook == self.hook and self.counts[hook] == self.at:
            self.io.call_soon_threadsafe(self._note)

    def _note(self) -> None:
        self.seen.append(self.counts[self.hook])
        self.done.set()

    def prepare(self) -> tuple[bool, int]:
        self._count("prepare")
        return False, 0

    def check(self) -> bool:
        self._count("check")
        return False


@pytest.mark.parametrize("hook", ["prepare", "check"])
def test_a_scan_of_many_sources_leaves_the_asyncio_side_its_turn(
    loop_factory: LoopFactory, hook: str
) -> None:
    """prepare() and check() walk every source: a callback queued at the
    start of a walk runs before the walk ends, not after it."""
    n = 8 * SOURCES_PER_ROUND
    Scanned.counts = {"prepare": 0, "check": 0}
    Scanned.seen = []
    done = threading.Event()
    with IOThread("g0", loop_factory=loop_factory) as io:
        ctx = io.get_g_main_context()
        # The first call of the second walk (the first may have begun before
        # the last source was attached).
        sources = [Scanned(io, hook, n + 1, done) for _ in range(n)]
        io.run_sync(lambda: [source.attach(ctx) for source in sources])
        assert done.wait(WAIT)
    # The walk's round in progress, at most one more, and a margin for the
    # loop's order of callbacks; without the rounds the walk's other n - 1.
    assert Scanned.seen[0] - (n + 1) <= 4 * SOURCES_PER_ROUND < n - 1


def test_attach_after_stop_began_raises(loop_factory: LoopFactory) -> None:
    io = IOThread("g0", loop_factory=loop_factory)
    io.start()
    ctx = io.get_g_main_context()
    ran = threading.Event()
    glib.idle_add(lambda: ran.set(), context=ctx)  # attached before: it runs
    release = gate_loop(io)
    stopper = threading.Thread(target=io.stop)
    stopper.start()
    try:
        wait_until(lambda: not io.running, "stop() to begin")
        late = Finalized()
        with pytest.raises(RuntimeError, match=r"IOThread 'g0', whose stop\(\) has begun"):
            late.attach(ctx)
        with pytest.raises(RuntimeError, match=r"whose stop\(\) has begun"):
            glib.idle_add(lambda: None, context=ctx)
        assert not late.is_destroyed()  # never attached: nothing to finalise
    finally:
        release.set()
        stopper.join(WAIT)
    assert not stopper.is_alive()
    assert ran.is_set()


def test_stop_completes_while_a_thread_keeps_attaching(loop_factory: LoopFactory) -> None:
    io = IOThread("g0", loop_factory=loop_factory)
    io.start()
    ctx = io.get_g_main_context()
    flooding = threading.Event()
    refusal: list[str] = []

    def attacher() -> None:
        for n in range(1, 200_000):  # bounded: a failing stop must not leave it running
            try:
                glib.idle_add(lambda: glib.SOURCE_REMOVE, context=ctx)
            except RuntimeError as exc:
                refusal.append(str(exc))
                return
            if n == 1000:
                flooding.set()

    thread = threading.Thread(target=attacher)
    thread.start()
    assert flooding.wait(WAIT)
    stopper = threading.Thread(target=io.stop)
    stopper.start()
    stopper.join(WAIT)
    thread.join(WAIT)
    assert not stopper.is_alive()
    assert not thread.is_alive()
    # Refused, by the stop (or, if the attacher was not scheduled between the
    # stop's start and its end, by the closed context).  That the refusal
    # starts with stop() is held deterministically by
    # test_attach_after_stop_began_raises; under the GIL one attacher cannot
    # outrun the loop, so what this test adds, a stop that ends while sources
    # keep coming, is tested where they really come in parallel: free-threaded.
    assert len(refusal) == 1
    assert "whose stop() has begun" in refusal[0] or "was closed" in refusal[0]


def test_a_context_first_asked_for_by_a_call_the_stop_drains_refuses_sources(
    loop_factory: LoopFactory,
) -> None:
    """get_g_main_context() from another thread queues the context's
    creation; queued before stop() began, it still runs in the stop's drain,
    and the context it makes is already closed to new sources, as one made
    earlier would be."""
    io = IOThread("g0", loop_factory=loop_factory)
    io.start()

    def make_and_attach() -> str:
        ctx = io._attach_g_main_context()  # what get_g_main_context() queues
        try:
            glib.idle_add(lambda: glib.SOURCE_REMOVE, context=ctx)
        except RuntimeError as exc:
            return str(exc)
        return "attached"

    release = gate_loop(io)
    queued = io.submit(make_and_attach)
    stopper = threading.Thread(target=io.stop)
    stopper.start()
    try:
        wait_until(lambda: not io.running, "stop() to begin")
    finally:
        release.set()
        stopper.join(WAIT)
    assert not stopper.is_alive()
    assert "IOThread 'g0', whose stop() has begun" in queued.result(WAIT)
