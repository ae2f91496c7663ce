"""iothreads.glib: GLib semantics on a standalone context, and the asyncio driver.

No test asserts on timing: threads meet on Events and futures, every wait is
bounded by WAIT, and "never early" compares the clock at dispatch with the
source's deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from iothreads import glib
from iothreads.glib import (
    IOCondition,
    MainContext,
    MainLoop,
    Source,
    _constants,
    _context,
    _functions,
    _mainloop,
    _poll,
    _source,
)
from iothreads.glib import _context as glib_context
from iothreads.glib._driver import AsyncioDriver as _AsyncioDriver

from .conftest import WAIT, _fds, wait_until

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")

# Bound of every wait: long enough for a loaded CI machine, short enough that a
# broken wake-up fails the test instead of hanging it.
WAIT_MS = int(WAIT * 1000)


@pytest.fixture
def ctx() -> Iterator[MainContext]:
    context = MainContext()
    yield context
    context._destroy_all()
    context._close_waker()


@pytest.fixture(autouse=True)
def _clean_default_context() -> Iterator[None]:
    yield
    default = MainContext.default()
    default._destroy_all()
    default._close_waker()


def iterate_until(context: MainContext, predicate: Callable[[], bool]) -> None:
    """Run blocking iterations of *context* until *predicate*; a watchdog bounds them."""
    expired: list[bool] = []
    watchdog = glib.Timeout(WAIT_MS, glib.PRIORITY_HIGH)
    watchdog.set_callback(expired.append, True)
    watchdog.attach(context)
    try:
        while not predicate() and not expired:
            context.iteration(True)
    finally:
        watchdog.destroy()
    assert predicate(), "watchdog expired"


@contextlib.contextmanager
def loop_in_thread(
    context: MainContext, started: threading.Event | None = None
) -> Iterator[tuple[MainLoop, threading.Thread]]:
    """A MainLoop running *context* in a plain thread, quit and joined on exit.

    *started* is set by the loop once it runs; by default an idle source sets it.
    """
    loop = MainLoop(context)
    if started is None:
        started = threading.Event()
        glib.idle_add(started.set, context=context)  # returns None: runs once
    thread = threading.Thread(target=loop.run, name="glib-loop")
    thread.start()
    try:
        assert started.wait(WAIT)
        yield loop, thread
    finally:
        loop.quit()
        thread.join(WAIT)
    assert not thread.is_alive()


class Probe(Source):
    """A source that is never ready; ``prepared`` is set by the first prepare
    (the first step of an iteration) that finds *condition* true.
    """

    def __init__(self, condition: Callable[[], bool] = lambda: True) -> None:
        super().__init__()
        self.condition = condition
        self.prepared = threading.Event()

    def prepare(self) -> tuple[bool, int]:
        if self.condition():
            self.prepared.set()
        return False, -1


def keep_calling(fn: Callable[..., object], *args: object) -> Callable[..., bool]:
    """A source callback running ``fn(*args, *callback_args)`` that keeps its source."""

    def callback(*callback_args: object) -> bool:
        fn(*args, *callback_args)
        return glib.SOURCE_CONTINUE

    return callback


def record_thread(into: list[int], done: threading.Event) -> bool:
    """A source callback: note the thread it runs in, signal, remove the source."""
    into.append(threading.get_ident())
    done.set()
    return glib.SOURCE_REMOVE


def in_thread(fn: Callable[[], T]) -> T:
    """Run *fn* in a new thread, wait for it, return its result."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(WAIT)


# -- constants -----------------------------------------------------------------


def test_constants_are_glibs() -> None:
    assert (
        glib.PRIORITY_HIGH,
        glib.PRIORITY_DEFAULT,
        glib.PRIORITY_HIGH_IDLE,
        glib.PRIORITY_DEFAULT_IDLE,
        glib.PRIORITY_LOW,
    ) == (-100, 0, 100, 200, 300)
    assert glib.SOURCE_CONTINUE is True
    assert glib.SOURCE_REMOVE is False
    assert IOCondition.IN == select.POLLIN == glib.IO_IN
    assert IOCondition.OUT == select.POLLOUT == glib.IO_OUT
    assert IOCondition.PRI == select.POLLPRI == glib.IO_PRI
    assert IOCondition.ERR == select.POLLERR == glib.IO_ERR
    assert IOCondition.HUP == select.POLLHUP == glib.IO_HUP
    assert IOCondition.NVAL == select.POLLNVAL == glib.IO_NVAL


def test_all_is_complete() -> None:
    """The package exports exactly the ``__all__`` of its user-facing modules,
    and each lists every public class and function it defines."""
    modules = (_constants, _context, _functions, _mainloop, _poll, _source)
    for module in modules:
        defined = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        }
        assert defined <= set(module.__all__), module.__name__
    constants = {
        name
        for name, value in vars(_constants).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - {"annotations", "Final"}
    assert constants == set(_constants.__all__)
    exported = [name for module in modules for name in module.__all__]
    assert sorted(glib.__all__) == sorted(exported)
    public = {name for name in vars(glib) if not name.startswith("_")} - {"annotations"}
    assert public == set(glib.__all__)
    assert all(hasattr(glib, name) for name in glib.__all__)


# -- default and thread-default contexts ----------------------------------------


def test_default_context_is_process_wide_and_the_module_functions_use_it() -> None:
    default = MainContext.default()
    assert in_thread(MainContext.default) is default
    calls: list[str] = []
    source_id = glib.idle_add(calls.append, "idle")
    source = default.find_source_by_id(source_id)
    assert source is not None
    assert source.get_context() is default
    assert source.get_priority() == glib.PRIORITY_DEFAULT_IDLE
    assert default.iteration(False)
    assert calls == ["idle"]
    assert source.is_destroyed()
    timer_id = glib.timeout_add(WAIT_MS, calls.append, "timer")
    seconds_id = glib.timeout_add_seconds(int(WAIT), calls.append, "seconds")
    assert glib.source_remove(timer_id)
    assert glib.source_remove(seconds_id)
    with pytest.warns(RuntimeWarning, match=f"Source ID {timer_id} was not found"):
        assert not glib.source_remove(timer_id)


def test_thread_default_stack(ctx: MainContext) -> None:
    assert MainContext.get_thread_default() is None
    assert MainContext.ref_thread_default() is MainContext.default()
    other = MainContext()
    ctx.push_thread_default()
    try:
        assert MainContext.get_thread_default() is ctx
        assert MainContext.ref_thread_default() is ctx
        assert ctx.is_owner()  # pushing acquires, as GLib >= 2.64
        other.push_thread_default()
        assert MainContext.get_thread_default() is other
        with pytest.raises(RuntimeError, match="the thread's default is <MainContext"):
            ctx.pop_thread_default()
        other.pop_thread_default()
        assert not other.is_owner()
        # The stack is per thread.
        assert in_thread(MainContext.get_thread_default) is None
        # A context owned here cannot be pushed in another thread.
        with pytest.raises(RuntimeError, match="it is owned by thread"):
            in_thread(ctx.push_thread_default)
    finally:
        ctx.pop_thread_default()
    assert MainContext.get_thread_default() is None
    assert not ctx.is_owner()
    # The global default pushed reads as None, as in GLib.
    MainContext.default().push_thread_default()
    try:
        assert MainContext.get_thread_default() is None
        assert MainContext.ref_thread_default() is MainContext.default()
    finally:
        MainContext.default().pop_thread_default()


def test_discard_thread_default_never_raises_on_an_unbalanced_stack(
    ctx: MainContext, caplog: pytest.LogCaptureFixture
) -> None:
    other = MainContext()
    # Balanced: as pop_thread_default(), silently.
    ctx.push_thread_default()
    with caplog.at_level(logging.WARNING, logger="iothreads.glib"):
        ctx._discard_thread_default()
    assert caplog.text == ""
    assert MainContext.get_thread_default() is None
    assert not ctx.is_owner()
    # Pushed twice, with another pushed above and never popped: every push of
    # ctx goes, the other stays, and the imbalance is logged.
    ctx.push_thread_default()
    ctx.push_thread_default()
    other.push_thread_default()
    try:
        with caplog.at_level(logging.WARNING, logger="iothreads.glib"):
            ctx._discard_thread_default()
        assert "is not the thread's top default context" in caplog.text
        assert glib_context._thread_defaults.stack == [other]
        assert not ctx.is_owner()

        def acquire_and_release() -> bool:
            if not ctx.acquire():
                return False
            ctx.release()
            return True

        assert in_thread(acquire_and_release)  # free for any thread now
    finally:
        other.pop_thread_default()
    # Popped already (once too often): nothing left to release, no error.
    ctx._discard_thread_default()


def test_acquire_is_recursive_and_per_thread(ctx: MainContext) -> None:
    assert not ctx.is_owner()
    assert ctx.acquire()
    assert ctx.acquire()
    assert ctx.is_owner()
    assert not in_thread(ctx.acquire)
    assert not in_thread(ctx.is_owner)
    with pytest.raises(RuntimeError, match="released by thread"):
        in_thread(ctx.release)
    ctx.release()
    assert ctx.is_owner()
    ctx.release()
    assert not ctx.is_owner()
    with pytest.raises(RuntimeError, match="its owner is None"):
        ctx.release()


# -- iteration semantics ---------------------------------------------------------


def test_only_the_highest_ready_priority_is_dispatched(ctx: MainContext) -> None:
    calls: list[str] = []
    for name, priority in [("low", glib.PRIORITY_LOW), ("a", 0), ("high-idle", 100), ("b", 0)]:
        glib.idle_add(calls.append, name, priority=priority, context=ctx)
    assert ctx.iteration(False)
    assert calls == ["a", "b"]
    assert ctx.iteration(False)
    assert calls == ["a", "b", "high-idle"]
    assert ctx.iteration(False)
    assert calls == ["a", "b", "high-idle", "low"]
    assert not ctx.iteration(False)


def test_an_fd_ready_at_a_higher_priority_preempts_a_ready_idle(ctx: MainContext) -> None:
    calls: list[str] = []
    r, w = os.pipe()
    try:
        glib.idle_add(calls.append, "idle", priority=glib.PRIORITY_DEFAULT, context=ctx)

        def on_fd(fd: int, condition: IOCondition) -> bool:
            calls.append("fd")
            os.read(fd, 1)
            return glib.SOURCE_REMOVE

        glib.io_add_watch(r, glib.PRIORITY_HIGH, glib.IO_IN, on_fd, context=ctx)
        os.write(w, b"x")
        assert ctx.iteration(False)
        assert calls == ["fd"]
        assert ctx.iteration(False)
        assert calls == ["fd", "idle"]
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("result", [glib.SOURCE_REMOVE, False, None, 0])
def test_a_false_result_destroys_the_source(ctx: MainContext, result: object) -> None:
    calls: list[int] = []

    def callback() -> object:
        calls.append(1)
        return result

    source_id = glib.idle_add(callback, context=ctx)
    source = ctx.find_source_by_id(source_id)
    assert source is not None
    assert ctx.iteration(False)
    assert source.is_destroyed()
    assert ctx.find_source_by_id(source_id) is None
    assert not ctx.iteration(False)
    assert calls == [1]


def test_a_true_result_keeps_the_source(ctx: MainContext) -> None:
    calls: list[int] = []
    source_id = glib.idle_add(keep_calling(calls.append, 1), context=ctx)
    for _ in range(3):
        assert ctx.iteration(False)
    assert calls == [1, 1, 1]
    assert ctx.find_source_by_id(source_id) is not None


def test_a_raising_callback_is_logged_and_destroys_its_source(
    ctx: MainContext, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> bool:
        raise ValueError("boom")

    source_id = glib.idle_add(boom, context=ctx)
    with caplog.at_level(logging.ERROR, logger="iothreads.glib"):
        assert ctx.iteration(False)
    assert "boom" in caplog.text
    assert ctx.find_source_by_id(source_id) is None


def test_a_raising_prepare_is_logged_and_destroys_its_source(
    ctx: MainContext, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Source):
        def prepare(self) -> tuple[bool, int]:
            raise OSError("broken prepare")

    source = Broken()
    source.attach(ctx)
    with caplog.at_level(logging.ERROR, logger="iothreads.glib"):
        assert not ctx.iteration(False)
    assert "broken prepare" in caplog.text
    assert source.is_destroyed()


def test_a_base_exception_from_a_callback_propagates_and_keeps_the_source(
    ctx: MainContext,
) -> None:
    def interrupt() -> bool:
        raise KeyboardInterrupt

    source_id = glib.idle_add(interrupt, context=ctx)
    with pytest.raises(KeyboardInterrupt):
        ctx.iteration(False)
    assert ctx.find_source_by_id(source_id) is not None
    assert not ctx.is_owner()  # the iteration released the context


def test_a_base_exception_out_of_main_loop_run_leaves_it_not_running(ctx: MainContext) -> None:
    loop = MainLoop(ctx)

    def interrupt() -> bool:
        raise KeyboardInterrupt

    source_id = glib.idle_add(interrupt, context=ctx)
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    assert not loop.is_running()
    assert not ctx.is_owner()
    # It runs again, afresh, until quit.
    assert glib.source_remove(source_id, ctx)
    glib.idle_add(lambda: loop.quit(), context=ctx)
    loop.run()
    assert not loop.is_running()


def test_a_base_exception_while_run_waits_for_the_context_leaves_it_not_running(
    ctx: MainContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(keep_waiting: object) -> bool:
        raise KeyboardInterrupt  # as a Ctrl-C in the wait for another thread's context

    monkeypatch.setattr(ctx, "_wait_for_ownership", interrupted)
    loop = MainLoop(ctx)
    assert in_thread(ctx.acquire)  # another thread owns it: run() must wait
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    assert not loop.is_running()


def test_a_wake_up_before_the_first_poll_is_kept_without_a_descriptor(ctx: MainContext) -> None:
    fds = _fds()
    ctx.wakeup()  # nobody polls yet: no pipe is created for it
    assert _fds() == fds
    # Nothing to dispatch and no timeout: only the kept wake-up ends the poll.
    returned = threading.Event()
    poller = threading.Thread(target=lambda: (ctx.iteration(True), returned.set()), daemon=True)
    poller.start()
    assert returned.wait(WAIT)
    poller.join(WAIT)


def test_destroyed_from_another_thread_mid_iteration_never_dispatches(ctx: MainContext) -> None:
    calls: list[str] = []
    victim = glib.Idle()
    victim.set_callback(keep_calling(calls.append, "victim"))

    def first() -> bool:
        # Runs while the iteration has already chosen `victim` to dispatch.
        calls.append("first")
        in_thread(victim.destroy)
        return glib.SOURCE_CONTINUE

    glib.idle_add(first, context=ctx)
    victim.attach(ctx)
    assert ctx.iteration(False)
    assert calls == ["first"]
    assert victim.is_destroyed()
    assert ctx.iteration(False)
    assert calls == ["first", "first"]


def test_destroyed_between_check_and_dispatch_never_dispatches(ctx: MainContext) -> None:
    calls: list[int] = []
    source = glib.Idle()
    source.set_callback(keep_calling(calls.append, 1))
    source.attach(ctx)
    assert ctx.acquire()
    try:
        ready, priority = ctx.prepare()
        assert ready
        assert priority == glib.PRIORITY_DEFAULT_IDLE
        assert ctx.query(priority) == (0, [])
        assert ctx.check(priority, [])
        in_thread(source.destroy)
        ctx.dispatch()
    finally:
        ctx.release()
    assert calls == []


@pytest.mark.parametrize("can_recurse", [False, True])
def test_no_recursive_dispatch_unless_the_source_can_recurse(
    ctx: MainContext, can_recurse: bool
) -> None:
    depth = 0
    nested: list[int] = []
    source = glib.Idle()

    def callback() -> bool:
        nonlocal depth
        depth += 1
        nested.append(depth)
        if depth == 1:
            ctx.iteration(False)  # a nested iteration from the callback
        depth -= 1
        return glib.SOURCE_CONTINUE

    source.set_callback(callback)
    source.set_can_recurse(can_recurse)
    assert source.get_can_recurse() is can_recurse
    source.attach(ctx)
    assert ctx.iteration(False)
    assert nested == ([1, 2] if can_recurse else [1])


def test_iterating_from_prepare_is_refused(ctx: MainContext) -> None:
    errors: list[BaseException] = []

    class Nested(Source):
        def prepare(self) -> tuple[bool, int]:
            try:
                ctx.iteration(False)
            except RuntimeError as exc:
                errors.append(exc)
            return False, -1

    Nested().attach(ctx)
    assert not ctx.iteration(False)
    assert "from within a source's prepare() or check()" in str(errors[0])


def test_a_main_loop_run_refused_from_prepare_is_not_left_running(ctx: MainContext) -> None:
    # g_main_loop_run refuses before it marks the loop running.
    nested = MainLoop(ctx)
    errors: list[BaseException] = []

    class Nested(Source):
        def prepare(self) -> tuple[bool, int]:
            try:
                nested.run()
            except RuntimeError as exc:
                errors.append(exc)
            return False, -1

    source = Nested()
    source.attach(ctx)
    assert not ctx.iteration(False)
    source.destroy()
    assert "from within a source's prepare() or check()" in str(errors[0])
    assert not nested.is_running()
    assert not ctx.is_owner()


def test_attach_from_another_thread_wakes_a_blocked_context(ctx: MainContext) -> None:
    probe = Probe()
    probe.attach(ctx)
    fired = threading.Event()
    # The loop's only source is the probe: after its first prepare the loop
    # blocks in poll with no timeout.
    with loop_in_thread(ctx, probe.prepared):
        glib.idle_add(fired.set, context=ctx)  # from this (another) thread
        assert fired.wait(WAIT)


def test_destroy_from_another_thread_wakes_a_blocked_context(ctx: MainContext) -> None:
    far = glib.Timeout(2**31 - 1)  # far away: the loop blocks on its deadline
    far.set_callback(lambda: True)
    far.attach(ctx)
    started = Probe()
    started.attach(ctx)
    # Only a wake-up makes the blocked loop prepare again, after the destroy.
    after_destroy = Probe(far.is_destroyed)
    after_destroy.attach(ctx)
    with loop_in_thread(ctx, started.prepared):
        far.destroy()  # from this (another) thread
        assert after_destroy.prepared.wait(WAIT)


def test_quit_from_another_thread_wakes_a_blocked_loop(ctx: MainContext) -> None:
    with loop_in_thread(ctx) as (loop, thread):
        assert loop.is_running()
        assert loop.get_context() is ctx
        loop.quit()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert not loop.is_running()


def test_timeouts_fire_in_deadline_order_and_never_early(ctx: MainContext) -> None:
    loop = MainLoop(ctx)
    intervals = [30, 10, 20, 0, 10, 5, 30]
    fired: list[tuple[int, int, int]] = []  # (index, deadline, clock at dispatch)
    start = glib.get_monotonic_time()

    def on_timeout(index: int) -> bool:
        fired.append((index, deadlines[index], glib.get_monotonic_time()))
        if len(fired) == len(intervals):
            loop.quit()
        return glib.SOURCE_REMOVE

    # Attached in reverse so attach order is not the deadline order.
    sources = [glib.Timeout(ms) for ms in intervals]
    deadlines = [source.get_ready_time() for source in sources]
    for index, source in reversed(list(enumerate(sources))):
        source.set_callback(on_timeout, index)
        source.attach(ctx)
    glib.timeout_add(WAIT_MS, loop.quit, priority=glib.PRIORITY_HIGH, context=ctx)  # watchdog
    loop.run()
    assert len(fired) == len(intervals)
    assert [d for _, d, _ in fired] == sorted(deadlines)
    for index, deadline, now in fired:
        assert now >= deadline >= start + intervals[index] * 1000


def test_a_repeating_timeout_is_never_early(ctx: MainContext) -> None:
    interval_ms = 3
    source = glib.Timeout(interval_ms)
    seen: list[tuple[int, int]] = []  # (deadline, clock at dispatch)

    def tick() -> bool:
        seen.append((source.get_ready_time(), glib.get_monotonic_time()))
        return len(seen) < 4

    source.set_callback(tick)
    source.attach(ctx)
    iterate_until(ctx, source.is_destroyed)
    assert len(seen) == 4
    for (deadline, now), (next_deadline, _) in itertools.pairwise(seen):
        assert now >= deadline
        assert next_deadline >= deadline + interval_ms * 1000
    assert seen[-1][1] >= seen[-1][0]


def test_a_fd_watch_reports_in_then_hup_on_a_closed_pipe(ctx: MainContext) -> None:
    r, w = os.pipe()
    conditions: list[IOCondition] = []
    data: list[bytes] = []

    def on_fd(fd: int, condition: IOCondition, tag: str) -> bool:
        assert tag == "tag"
        conditions.append(condition)
        if condition & glib.IO_IN:
            data.append(os.read(fd, 100))
        return not condition & glib.IO_HUP

    try:
        source_id = glib.io_add_watch(
            r, glib.PRIORITY_DEFAULT, glib.IO_IN, on_fd, "tag", context=ctx
        )
        os.write(w, b"hello")
        iterate_until(ctx, lambda: len(conditions) == 1)
        assert conditions == [glib.IO_IN]
        assert data == [b"hello"]
        os.close(w)
        iterate_until(ctx, lambda: ctx.find_source_by_id(source_id) is None)
        assert conditions[-1] & glib.IO_HUP  # reported though only IN was asked for
    finally:
        os.close(r)
        with contextlib.suppress(OSError):
            os.close(w)


def test_a_fd_watch_on_a_socket_reports_out_and_hup(ctx: MainContext) -> None:
    a, b = socket.socketpair()
    conditions: list[IOCondition] = []
    with a, b:
        glib.io_add_watch(
            a, glib.PRIORITY_DEFAULT, glib.IO_OUT, lambda s, c: conditions.append(c), context=ctx
        )
        iterate_until(ctx, lambda: bool(conditions))
        assert conditions == [glib.IO_OUT]

        def on_in(sock: socket.socket, condition: IOCondition) -> bool:
            assert sock is a  # the object given, not its fd
            conditions.append(condition)
            return glib.SOURCE_REMOVE

        glib.io_add_watch(a, glib.PRIORITY_DEFAULT, glib.IO_IN, on_in, context=ctx)
        b.close()
        iterate_until(ctx, lambda: len(conditions) == 2)
        assert conditions[1] & glib.IO_HUP
        assert conditions[1] & glib.IO_IN  # the EOF is readable


def test_a_fd_watch_on_a_closed_fd_reports_nval(ctx: MainContext) -> None:
    ctx.fileno()  # the wake-up pipe exists first, so it cannot reuse the closed number
    r, w = os.pipe()
    os.close(w)
    conditions: list[IOCondition] = []
    glib.io_add_watch(
        r, glib.PRIORITY_DEFAULT, glib.IO_IN, lambda fd, c: conditions.append(c), context=ctx
    )
    os.close(r)
    iterate_until(ctx, lambda: bool(conditions))
    assert conditions[0] == glib.IO_NVAL


# -- sources ---------------------------------------------------------------------


def test_a_subclassed_source_runs_its_hooks_and_finalizes_once(ctx: MainContext) -> None:
    events: list[str] = []

    class Counter(Source):
        def __init__(self) -> None:
            super().__init__()
            self.left = 2

        def prepare(self) -> tuple[bool, int]:
            events.append("prepare")
            return False, 0

        def check(self) -> bool:
            events.append("check")
            return True

        def dispatch(self, callback: Callable[..., Any] | None, args: tuple[Any, ...]) -> bool:
            assert callback is not None
            callback(*args)
            self.left -= 1
            return self.left > 0

        def finalize(self) -> None:
            events.append("finalize")

    source = Counter()
    source.set_callback(events.append, "dispatch")
    source.set_name("counter")
    assert source.get_name() == "counter"
    assert "counter" in repr(source)
    source.attach(ctx)
    assert ctx.iteration(False)
    assert ctx.iteration(False)
    assert events == ["prepare", "check", "dispatch"] * 2 + ["finalize"]
    source.destroy()
    assert events.count("finalize") == 1


def test_destroy_during_its_own_dispatch_finalizes_after_it(ctx: MainContext) -> None:
    events: list[str] = []

    class Selfish(Source):
        def check(self) -> bool:
            return True

        def dispatch(self, callback: Callable[..., Any] | None, args: tuple[Any, ...]) -> bool:
            self.destroy()
            events.append("dispatched")
            return glib.SOURCE_CONTINUE

        def finalize(self) -> None:
            events.append("finalize")

    Selfish().attach(ctx)
    assert ctx.iteration(False)
    assert events == ["dispatched", "finalize"]


def test_an_unattached_source_can_be_destroyed_but_not_attached_again(ctx: MainContext) -> None:
    finalized: list[bool] = []

    class Once(Source):
        def finalize(self) -> None:
            finalized.append(True)

    source = Once()
    source.destroy()
    source.destroy()
    assert source.is_destroyed()
    assert finalized == [True]
    with pytest.raises(RuntimeError, match="was destroyed and cannot be attached"):
        source.attach(ctx)


def test_attaching_twice_is_refused(ctx: MainContext) -> None:
    source = glib.Idle()
    source_id = source.attach(ctx)
    assert source.get_id() == source_id > 0
    assert ctx.find_source_by_id(source_id) is source
    with pytest.raises(RuntimeError, match="is already attached to <MainContext"):
        source.attach(MainContext())


def test_a_source_without_callback_warns_and_is_removed(ctx: MainContext) -> None:
    source = glib.Timeout(0)
    source.attach(ctx)
    with pytest.warns(RuntimeWarning, match="dispatched without a callback"):
        iterate_until(ctx, source.is_destroyed)


def test_set_ready_time_makes_a_source_ready(ctx: MainContext) -> None:
    calls: list[int] = []
    source = Source()
    source.set_callback(keep_calling(lambda: calls.append(glib.get_monotonic_time())))
    source.attach(ctx)
    assert not ctx.iteration(False)  # no ready time: never ready
    deadline = glib.get_monotonic_time() + 2000
    source.set_ready_time(deadline)
    assert source.get_ready_time() == deadline
    iterate_until(ctx, lambda: bool(calls))
    assert calls[0] >= deadline
    assert source.get_time() >= deadline
    source.set_ready_time(-1)
    assert not ctx.iteration(False)
    with pytest.raises(ValueError, match="ready_time must be >= -1, not -2"):
        source.set_ready_time(-2)
    with pytest.raises(RuntimeError, match="is not attached"):
        glib.Idle().get_time()


def test_set_ready_time_from_another_thread_wakes_a_blocked_context(ctx: MainContext) -> None:
    fired = threading.Event()
    source = Source()
    source.set_callback(lambda: fired.set())
    source.attach(ctx)
    probe = Probe()
    probe.attach(ctx)
    with loop_in_thread(ctx, probe.prepared):
        source.set_ready_time(0)  # long past
        assert fired.wait(WAIT)


def test_unix_fd_tags_can_be_modified_queried_and_removed(ctx: MainContext) -> None:
    a, b = socket.socketpair()
    with a, b:
        hits: list[IOCondition] = []
        source = Source()
        tag = source.add_unix_fd(a.fileno(), 0)
        source.set_callback(keep_calling(lambda: hits.append(source.query_unix_fd(tag))))
        source.attach(ctx)
        assert not ctx.iteration(False)  # events 0: paused
        source.modify_unix_fd(tag, glib.IO_OUT)
        assert ctx.iteration(False)
        assert hits == [glib.IO_OUT]
        source.remove_unix_fd(tag)
        assert not ctx.iteration(False)
        with pytest.raises(ValueError, match="is not a unix fd tag of"):
            source.query_unix_fd(tag)
        with pytest.raises(ValueError, match="is not a unix fd tag of"):
            source.modify_unix_fd(object(), glib.IO_IN)


def test_set_priority_reorders_an_attached_source(ctx: MainContext) -> None:
    calls: list[str] = []
    first = glib.idle_add(calls.append, "first", priority=glib.PRIORITY_DEFAULT, context=ctx)
    glib.idle_add(calls.append, "second", priority=glib.PRIORITY_DEFAULT, context=ctx)
    source = ctx.find_source_by_id(first)
    assert source is not None
    source.set_priority(glib.PRIORITY_LOW)
    assert source.get_priority() == glib.PRIORITY_LOW
    assert ctx.iteration(False)
    assert ctx.iteration(False)
    assert calls == ["second", "first"]


def _untyped(value: object) -> Any:
    """*value* as ``Any``: lets a test pass a badly typed argument on purpose."""
    return value


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: glib.timeout_add(-1, print), ValueError, "interval must be >= 0 ms, not -1"),
        (lambda: glib.timeout_add_seconds(-2, print), ValueError, "not -2"),
        (
            lambda: glib.timeout_add(_untyped(1.5), print),
            TypeError,
            "interval must be an int, not 1.5",
        ),
        (
            lambda: glib.idle_add(_untyped("nope")),
            TypeError,
            "callback must be callable, not 'nope'",
        ),
        (lambda: glib.idle_add(print, priority=True), TypeError, "priority must be an int"),
        (lambda: glib.io_add_watch(-1, 0, glib.IO_IN, print), ValueError, "not -1"),
        (lambda: glib.io_add_watch("x", 0, glib.IO_IN, print), TypeError, "not 'x'"),
        (lambda: glib.io_add_watch(0, 0, 1024, print), ValueError, "condition 1024 has bits"),
        (
            lambda: glib.source_remove(_untyped("1")),
            TypeError,
            "tag must be an int, not '1'",
        ),
    ],
)
def test_bad_arguments_are_named(call: Callable[[], object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_driving_steps_need_ownership(ctx: MainContext) -> None:
    with pytest.raises(RuntimeError, match=r"MainContext.prepare\(\) needs the context acquired"):
        ctx.prepare()
    for step in (lambda: ctx.query(0), lambda: ctx.check(0, []), ctx.dispatch):
        with pytest.raises(RuntimeError, match="needs the context acquired"):
            step()


def test_a_context_can_be_driven_externally(ctx: MainContext) -> None:
    """prepare/query/poll/check/dispatch by hand, as a foreign loop would."""
    r, w = os.pipe()
    calls: list[IOCondition] = []
    try:
        glib.io_add_watch(
            r,
            glib.PRIORITY_DEFAULT,
            glib.IO_IN,
            keep_calling(lambda fd, condition: calls.append(condition)),
            context=ctx,
        )
        glib.timeout_add(WAIT_MS, print, context=ctx)
        assert ctx.acquire()
        ready, priority = ctx.prepare()
        assert (ready, priority) == (False, 2**31 - 1)
        timeout, fds = ctx.query(priority)
        assert 0 < timeout <= WAIT_MS
        assert fds == [(r, glib.IO_IN)]
        # A wake-up makes the context's fd readable; check() drains it.
        in_thread(ctx.wakeup)
        poller = select.poll()
        poller.register(ctx.fileno(), select.POLLIN)
        assert poller.poll(0) == [(ctx.fileno(), select.POLLIN)]
        assert not ctx.check(priority, [])
        assert poller.poll(0) == []
        os.write(w, b"x")
        ctx.prepare()
        assert ctx.check(priority, [(r, select.POLLIN)])
        ctx.dispatch()
        assert calls == [glib.IO_IN]
    finally:
        if ctx.is_owner():
            ctx.release()
        os.close(r)
        os.close(w)


def test_pending_checks_without_dispatching(ctx: MainContext) -> None:
    calls: list[int] = []
    assert not ctx.pending()
    glib.idle_add(calls.append, 1, context=ctx)
    assert ctx.pending()
    assert calls == []
    assert ctx.iteration(False)
    assert calls == [1]


# -- main loops and ownership across threads ------------------------------------


def test_iteration_elsewhere_does_not_run_a_context_owned_by_another_thread(
    ctx: MainContext,
) -> None:
    calls: list[int] = []
    glib.idle_add(calls.append, 1, context=ctx)
    assert ctx.acquire()
    try:
        assert not in_thread(lambda: ctx.iteration(False))
        assert not in_thread(ctx.pending)
    finally:
        ctx.release()
    assert calls == []


def test_run_from_a_second_thread_is_refused_while_another_runs(ctx: MainContext) -> None:
    threads: set[int] = set()

    def record() -> bool:
        threads.add(threading.get_ident())
        return glib.SOURCE_CONTINUE

    with loop_in_thread(ctx) as (_, first):
        second_loop = MainLoop(ctx)
        second = threading.Thread(target=second_loop.run, name="glib-second")
        second.start()
        try:
            wait_until(second_loop.is_running)  # waiting for the context
            done = threading.Event()
            glib.idle_add(record, context=ctx)
            glib.timeout_add(1, done.set, context=ctx)
            assert done.wait(WAIT)
        finally:
            second_loop.quit()
            second.join(WAIT)
        assert not second.is_alive()
        assert threads == {first.ident}
    # Once the first loop is gone, a loop in another thread can run it.
    ran = threading.Event()
    glib.idle_add(ran.set, context=ctx)
    with loop_in_thread(ctx):
        assert ran.wait(WAIT)


def test_invoke_runs_at_once_in_the_owner(ctx: MainContext) -> None:
    calls: list[int] = []

    def thrice() -> bool:
        calls.append(len(calls))
        return len(calls) < 3  # invoke repeats it while it returns true

    assert ctx.acquire()
    try:
        ctx.invoke(thrice)
    finally:
        ctx.release()
    assert calls == [0, 1, 2]


def test_invoke_runs_at_once_for_an_acquirable_thread_default() -> None:
    calls: list[int] = []
    default = MainContext.default()
    default.invoke(calls.append, 1)  # default: the thread default here, and free
    assert calls == [1]
    assert not default.is_owner()


def test_invoke_from_another_thread_runs_in_the_owner_thread(ctx: MainContext) -> None:
    ran_in: list[int] = []
    done = threading.Event()

    def job(tag: str) -> None:
        assert tag == "job"
        ran_in.append(threading.get_ident())
        done.set()

    with loop_in_thread(ctx) as (_, thread):
        ctx.invoke(job, "job", priority=glib.PRIORITY_HIGH)
        assert done.wait(WAIT)
    assert ran_in == [thread.ident]


# -- the asyncio driver ----------------------------------------------------------


class LoopThread:
    """An asyncio loop of one kind running in a plain thread."""

    def __init__(self, factory: LoopFactory) -> None:
        self.loop = factory()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asyncio-loop")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the loop's thread and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(WAIT)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture
def driven(loop_factory: LoopFactory, ctx: MainContext) -> Iterator[tuple[LoopThread, MainContext]]:
    """*ctx* served by an _AsyncioDriver on a loop in a thread."""
    with LoopThread(loop_factory) as lt:
        driver = _AsyncioDriver(ctx, lt.loop)
        lt.call(driver.start)
        try:
            yield lt, ctx
        finally:
            lt.call(driver.close)


def test_driver_dispatches_timeouts_idles_and_fds_on_the_loop_thread(
    driven: tuple[LoopThread, MainContext],
) -> None:
    lt, ctx = driven
    ran_in: dict[str, int] = {}
    done = {name: threading.Event() for name in ("timeout", "idle", "fd")}

    def record(name: str) -> bool:
        ran_in[name] = threading.get_ident()
        done[name].set()
        return glib.SOURCE_REMOVE

    a, b = socket.socketpair()
    with a, b:
        glib.timeout_add(2, record, "timeout", context=ctx)
        glib.idle_add(record, "idle", context=ctx)
        glib.io_add_watch(
            a, glib.PRIORITY_DEFAULT, glib.IO_IN, lambda s, c: record("fd"), context=ctx
        )
        b.send(b"x")
        for event in done.values():
            assert event.wait(WAIT)
    assert set(ran_in.values()) == {lt.thread.ident}


def test_driver_reports_in_then_hup(driven: tuple[LoopThread, MainContext]) -> None:
    lt, ctx = driven
    r, w = os.pipe()
    conditions: list[IOCondition] = []
    got_in, got_hup = threading.Event(), threading.Event()

    def on_fd(fd: int, condition: IOCondition) -> bool:
        conditions.append(condition)
        if condition & glib.IO_HUP:
            got_hup.set()
            return glib.SOURCE_REMOVE
        os.read(fd, 100)
        got_in.set()
        return glib.SOURCE_CONTINUE

    try:
        glib.io_add_watch(r, glib.PRIORITY_DEFAULT, glib.IO_IN, on_fd, context=ctx)
        os.write(w, b"data")
        assert got_in.wait(WAIT)
        os.close(w)
        assert got_hup.wait(WAIT)
        lt.call(lambda: None)  # the round that removed the watch is over
        assert not lt.call(lt.loop.remove_reader, r)  # the driver unregistered it
    finally:
        with contextlib.suppress(OSError):
            os.close(w)
        os.close(r)
    assert conditions[0] == glib.IO_IN
    assert conditions[-1] & glib.IO_HUP


class CountingProbe(Source):
    """A never-ready source counting its prepares, i.e. the driver's rounds."""

    def __init__(self) -> None:
        super().__init__()
        self.prepares = 0

    def prepare(self) -> tuple[bool, int]:
        self.prepares += 1
        return False, -1


def test_driver_hup_only_watch_does_not_spin_on_unread_data(
    driven: tuple[LoopThread, MainContext],
) -> None:
    # poll(2) ignores IN for a watch that asked only for HUP, so GLib sleeps
    # while data sits unread; the driver must not run a round per loop pass.
    lt, ctx = driven
    probe = CountingProbe()
    probe.attach(ctx)
    hup = threading.Event()
    a, b = socket.socketpair()
    with a:
        glib.io_add_watch(
            a, glib.PRIORITY_DEFAULT, glib.IO_HUP, lambda s, c: hup.set(), context=ctx
        )
        for _ in range(3):  # the rounds woken by the attaches are over
            lt.call(lambda: None)
        before = lt.call(lambda: probe.prepares)
        b.send(b"unread")
        for _ in range(20):  # twenty passes of the loop
            lt.call(lambda: None)
        assert lt.call(lambda: probe.prepares) - before <= 2
        b.close()
        assert hup.wait(WAIT)


def test_driver_pri_only_watch_reports_urgent_data(
    driven: tuple[LoopThread, MainContext],
) -> None:
    _, ctx = driven
    conditions: list[IOCondition] = []
    fired = threading.Event()

    def on_pri(sock: socket.socket, condition: IOCondition) -> bool:
        conditions.append(condition)
        fired.set()
        return glib.SOURCE_REMOVE

    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            glib.io_add_watch(peer, glib.PRIORITY_DEFAULT, glib.IO_PRI, on_pri, context=ctx)
            client.send(b"!", socket.MSG_OOB)
            assert fired.wait(WAIT)
    assert conditions == [glib.IO_PRI]


def test_driver_busy_idle_does_not_starve_asyncio_callbacks(
    driven: tuple[LoopThread, MainContext],
) -> None:
    lt, ctx = driven
    idles = 0

    def busy() -> bool:
        nonlocal idles
        idles += 1
        return glib.SOURCE_CONTINUE

    glib.idle_add(busy, context=ctx)
    done = threading.Event()
    idles_during: list[int] = []

    def step(n: int) -> None:
        idles_during.append(idles)
        if n == 0:
            done.set()
        else:
            lt.loop.call_soon(step, n - 1)

    lt.loop.call_soon_threadsafe(step, 50)
    assert done.wait(WAIT)
    # The idle kept running between the callbacks: both made progress.
    assert idles_during[-1] > idles_during[0]


def test_driver_timeout_fires_under_a_flood_of_callbacks(
    driven: tuple[LoopThread, MainContext],
) -> None:
    lt, ctx = driven
    stop = threading.Event()
    fired = threading.Event()
    floods = 0

    def flood() -> None:
        nonlocal floods
        floods += 1
        if not stop.is_set():
            lt.loop.call_soon(flood)

    def start() -> None:
        for _ in range(10):  # ten callbacks always queued
            lt.loop.call_soon(flood)
        glib.timeout_add(1, fired.set, context=ctx)

    try:
        lt.call(start)
        assert fired.wait(WAIT)
        flooding = floods
    finally:
        stop.set()
    assert flooding > 0


def test_driver_wakes_for_attach_destroy_and_invoke_from_another_thread(
    driven: tuple[LoopThread, MainContext],
) -> None:
    lt, ctx = driven
    far = glib.Timeout(2**31 - 1)
    far.set_callback(lambda: True)
    attached = Probe()
    after_destroy = Probe(far.is_destroyed)
    # Each attach from this thread makes the idle driver run a round.
    far.attach(ctx)
    attached.attach(ctx)
    assert attached.prepared.wait(WAIT)
    after_destroy.attach(ctx)
    far.destroy()
    # Only a wake-up makes the idle driver prepare again after the destroy.
    assert after_destroy.prepared.wait(WAIT)
    ran_in: list[int] = []
    invoked = threading.Event()
    ctx.invoke(record_thread, ran_in, invoked)
    assert invoked.wait(WAIT)
    assert ran_in == [lt.thread.ident]


@pytest.mark.parametrize("step", ["pending", "iteration"])
def test_driver_still_wakes_after_an_iteration_run_on_its_thread(
    driven: tuple[LoopThread, MainContext], step: str
) -> None:
    # An iteration run by plain asyncio code on the loop's thread (it owns the
    # context) must not leave the driver deaf to later attaches.
    lt, ctx = driven

    def run_step() -> bool:
        return ctx.pending() if step == "pending" else ctx.iteration(False)

    assert lt.call(run_step) is False
    ran_in: list[int] = []
    from_here, from_loop = threading.Event(), threading.Event()
    glib.idle_add(record_thread, ran_in, from_here, context=ctx)
    assert from_here.wait(WAIT)
    lt.call(run_step)
    lt.call(lambda: glib.idle_add(record_thread, ran_in, from_loop, context=ctx))
    assert from_loop.wait(WAIT)
    assert ran_in == [lt.thread.ident] * 2


def assert_a_main_loop_elsewhere_waits(ctx: MainContext, owner_ident: int | None) -> None:
    """While a driver owns *ctx*, a MainLoop run in another thread dispatches
    nothing (GLib's g_main_loop_run waits for ownership) and quit() ends it."""
    assert not ctx.acquire()
    assert not ctx.iteration(False)
    other = MainLoop(ctx)
    thread = threading.Thread(target=other.run, name="glib-refused")
    thread.start()
    ran_in: list[int] = []
    done = threading.Event()
    try:
        wait_until(other.is_running)
        glib.idle_add(record_thread, ran_in, done, context=ctx)
        assert done.wait(WAIT)
    finally:
        other.quit()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert ran_in == [owner_ident]


def test_driver_owns_the_context_so_a_main_loop_elsewhere_is_refused(
    driven: tuple[LoopThread, MainContext],
) -> None:
    lt, ctx = driven
    assert_a_main_loop_elsewhere_waits(ctx, lt.thread.ident)


def test_driver_start_errors(loop_factory: LoopFactory, ctx: MainContext) -> None:
    with LoopThread(loop_factory) as lt:
        driver = _AsyncioDriver(ctx, lt.loop)
        assert ctx.acquire()
        try:
            with pytest.raises(RuntimeError, match="it is owned by thread"):
                lt.call(driver.start)
        finally:
            ctx.release()
        lt.call(driver.start)
        with pytest.raises(RuntimeError, match="is running, cannot start"):
            lt.call(driver.start)
        lt.call(driver.close)
        lt.call(driver.close)  # harmless twice
        with pytest.raises(RuntimeError, match="is closed, cannot start"):
            lt.call(driver.start)


def test_driver_close_unregisters_destroys_finalizes_and_releases(
    loop_factory: LoopFactory, ctx: MainContext
) -> None:
    finalized = threading.Event()

    class Watched(Source):
        def finalize(self) -> None:
            finalized.set()

    a, b = socket.socketpair()
    with a, b, LoopThread(loop_factory) as lt:
        driver = _AsyncioDriver(ctx, lt.loop)
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


def test_driver_survives_being_closed_from_a_callback(
    loop_factory: LoopFactory, ctx: MainContext
) -> None:
    with LoopThread(loop_factory) as lt:
        driver = _AsyncioDriver(ctx, lt.loop)
        lt.call(driver.start)
        closed = threading.Event()

        def close() -> None:
            driver.close()
            closed.set()

        glib.idle_add(close, context=ctx)
        assert closed.wait(WAIT)
        assert lt.call(ctx.acquire)
        lt.call(ctx.release)


async def test_driver_on_the_running_loop(ctx: MainContext) -> None:
    loop = asyncio.get_running_loop()
    driver = _AsyncioDriver(ctx, loop)
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


def test_driver_close_finishes_even_if_a_step_raises(loop_factory: Callable[[], Any]) -> None:
    loop = loop_factory()
    ctx = MainContext()
    finalized: list[bool] = []

    class Marked(glib.Timeout):
        def finalize(self) -> None:
            finalized.append(True)

    driver = _AsyncioDriver(ctx, loop)
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

        loop.remove_reader = flaky_remove  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="remove_reader failed"):
            driver.close()
        assert finalized == [True]
        assert not ctx.is_owner()
    finally:
        loop.close()
