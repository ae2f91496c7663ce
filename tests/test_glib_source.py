"""iothreads.glib: sources (subclassed, stock, polled fds) and the module functions' checks.

Each test drives a fresh context by hand (``iteration()`` in the test's
thread); the semantics every driver shares are in test_glib_dispatch.py.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iothreads import glib
from iothreads.glib import IOCondition, MainContext, Source

from .helpers import iterate_until, keep_calling, new_context


@pytest.fixture
def ctx() -> Iterator[MainContext]:
    with new_context() as context:
        yield context


# -- the hooks and the lifecycle -----------------------------------------------


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


# -- properties ----------------------------------------------------------------


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


# -- polled descriptors --------------------------------------------------------


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


# -- argument checks -----------------------------------------------------------


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
