"""iothreads.glib: a context and its main loop, run by hand or by a MainLoop.

The semantics every driver shares (MainLoop, AsyncioDriver, IOThread) are in
test_glib_dispatch.py; here are those of the context's own API: ownership,
thread defaults, the iteration's steps, and the MainLoop's own rules.  No test
asserts on timing: threads meet on Events, every wait is bounded by WAIT.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import types
from collections.abc import Iterator

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

from .helpers import (
    WAIT,
    WAIT_MS,
    in_thread,
    keep_calling,
    loop_in_thread,
    new_context,
    not_owner_error,
    open_fds,
    record_thread,
)


@pytest.fixture
def ctx() -> Iterator[MainContext]:
    with new_context() as context:
        yield context


@pytest.fixture(autouse=True)
def _clean_default_context() -> Iterator[None]:
    yield
    default = MainContext.default()
    default._destroy_all()
    default._close_waker()


# -- the module ----------------------------------------------------------------


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
    # Only identifiers, here and below: where pytest rewrites the package's
    # asserts (it does for the distribution of every pytest11 plugin,
    # iothreads included), its modules gain "@py_builtins" and "@pytest_ar".
    constants = {
        name
        for name, value in vars(_constants).items()
        if name.isidentifier()
        and not name.startswith("_")
        and not isinstance(value, types.ModuleType)
    } - {"annotations", "Final"}
    assert constants == set(_constants.__all__)
    exported = [name for module in modules for name in module.__all__]
    assert sorted(glib.__all__) == sorted(exported)
    public = {n for n in vars(glib) if n.isidentifier() and not n.startswith("_")} - {"annotations"}
    assert public == set(glib.__all__)
    assert all(hasattr(glib, name) for name in glib.__all__)


# -- default and thread-default contexts ---------------------------------------


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
        assert _context._thread_defaults.stack == [other]
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


def test_invoke_runs_at_once_for_an_acquirable_thread_default() -> None:
    calls: list[int] = []
    default = MainContext.default()
    default.invoke(calls.append, 1)  # default: the thread default here, and free
    assert calls == [1]
    assert not default.is_owner()


# -- ownership and the iteration's steps ---------------------------------------


def test_acquire_is_recursive_and_per_thread(ctx: MainContext) -> None:
    assert not ctx.is_owner()
    assert ctx.acquire()
    assert ctx.acquire()
    assert ctx.is_owner()
    assert not in_thread(ctx.acquire)
    assert not in_thread(ctx.is_owner)
    with pytest.raises(RuntimeError, match=not_owner_error("released by thread")):
        in_thread(ctx.release)
    ctx.release()
    assert ctx.is_owner()
    ctx.release()
    assert not ctx.is_owner()
    with pytest.raises(RuntimeError, match=not_owner_error("its owner is None")):
        ctx.release()


def test_driving_steps_need_ownership(ctx: MainContext) -> None:
    message = r"MainContext.prepare\(\) needs the context acquired"
    with pytest.raises(RuntimeError, match=not_owner_error(message)):
        ctx.prepare()
    for step in (lambda: ctx.query(0), lambda: ctx.check(0, []), ctx.dispatch):
        with pytest.raises(RuntimeError, match=not_owner_error("needs the context acquired")):
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


def test_a_wake_up_before_the_first_poll_is_kept_without_a_descriptor(ctx: MainContext) -> None:
    fds = open_fds()
    ctx.wakeup()  # nobody polls yet: no pipe is created for it
    assert open_fds() == fds
    # Nothing to dispatch and no timeout: only the kept wake-up ends the poll.
    returned = threading.Event()

    def poll() -> None:
        ctx.iteration(True)
        returned.set()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    assert returned.wait(WAIT)
    poller.join(WAIT)


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


# -- errors from sources -------------------------------------------------------


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


# -- the MainLoop --------------------------------------------------------------


def test_quit_from_another_thread_wakes_a_blocked_loop(ctx: MainContext) -> None:
    with loop_in_thread(ctx) as (loop, thread):
        assert loop.is_running()
        assert loop.get_context() is ctx
        loop.quit()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert not loop.is_running()


def test_a_main_loop_waiting_in_a_second_thread_runs_the_context_once_the_first_quits(
    ctx: MainContext,
) -> None:
    # That it dispatches nothing while the first runs is tested on every
    # driver, the MainLoop included, in test_glib_dispatch.py.
    ran_in: list[int] = []
    done = threading.Event()
    with (
        loop_in_thread(ctx) as (first, first_thread),
        loop_in_thread(ctx, MainLoop.is_running) as (_, second),  # waits for the context
    ):
        first.quit()
        first_thread.join(WAIT)  # the first released the context: the second owns it
        glib.idle_add(record_thread, ran_in, done, context=ctx)
        assert done.wait(WAIT)
    assert ran_in == [second.ident]


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
