"""GLib's dispatch semantics, one test body each, run on every driver of a context.

The ``driver`` fixture runs a fresh context on each of: a ``glib.MainLoop``
in a plain thread (``mainloop``), an ``AsyncioDriver`` on a loop in a thread
(``driver-asyncio``, ``driver-uvloop``), and an IOThread
(``iothread-asyncio``, ``iothread-uvloop``); see ``helpers.running_driver``.
No test asserts on timing: threads meet on Events, every wait is bounded by
WAIT, and "never early" compares the clock at dispatch with the source's
deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from iothreads import glib
from iothreads.glib import IOCondition, MainContext, MainLoop

from .helpers import (
    DRIVERS,
    WAIT,
    WAIT_MS,
    Driver,
    Finalized,
    Probe,
    Rounds,
    in_thread,
    keep_calling,
    loop_in_thread,
    record_thread,
    running_driver,
)


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    with running_driver(request.param) as driver:
        yield driver


# -- what one iteration dispatches ------------------------------------------------


def test_only_the_highest_ready_priority_is_dispatched_per_iteration(driver: Driver) -> None:
    ctx = driver.context
    rounds = Rounds()
    dispatched: list[tuple[str, int]] = []  # (name, iteration)
    done = threading.Event()

    def record(name: str) -> None:  # None: removes its source
        dispatched.append((name, rounds.count))
        if name == "low":
            done.set()

    ids: list[int] = []

    def attach_all() -> None:
        # In one call on the driving thread: all are ready in the same iteration.
        rounds.attach(ctx)
        for name, priority in [
            ("low", glib.PRIORITY_LOW),
            ("a", glib.PRIORITY_DEFAULT),
            ("high-idle", glib.PRIORITY_HIGH_IDLE),
            ("b", glib.PRIORITY_DEFAULT),
        ]:
            ids.append(glib.idle_add(record, name, priority=priority, context=ctx))

    driver.call(attach_all)
    assert done.wait(WAIT)
    assert [name for name, _ in dispatched] == ["a", "b", "high-idle", "low"]
    iteration_of = dict(dispatched)
    assert iteration_of["a"] == iteration_of["b"] < iteration_of["high-idle"] < iteration_of["low"]
    driver.flush()
    assert all(ctx.find_source_by_id(source_id) is None for source_id in ids)


def test_an_fd_ready_at_a_higher_priority_preempts_a_ready_idle(driver: Driver) -> None:
    ctx = driver.context
    rounds = Rounds()
    order: list[tuple[str, int]] = []  # (name, iteration)
    done = threading.Event()
    a, b = socket.socketpair()
    with a, b:
        b.send(b"x")  # readable before the sources exist

        def on_fd(sock: socket.socket, condition: IOCondition) -> bool:
            order.append(("fd", rounds.count))
            return glib.SOURCE_REMOVE

        def on_idle() -> bool:
            order.append(("idle", rounds.count))
            done.set()
            return glib.SOURCE_REMOVE

        def attach_all() -> None:
            rounds.attach(ctx)
            glib.idle_add(on_idle, priority=glib.PRIORITY_DEFAULT, context=ctx)
            glib.io_add_watch(a, glib.PRIORITY_HIGH, glib.IO_IN, on_fd, context=ctx)

        driver.call(attach_all)
        assert done.wait(WAIT)
    assert [name for name, _ in order] == ["fd", "idle"]
    assert order[0][1] < order[1][1]  # not in the same iteration


@pytest.mark.parametrize("result", [glib.SOURCE_REMOVE, False, None, 0])
def test_a_false_result_destroys_the_source(driver: Driver, result: object) -> None:
    ctx = driver.context
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
    driver.flush()
    assert source.is_destroyed()
    assert ctx.find_source_by_id(source_id) is None
    # Later iterations run without it.
    later = threading.Event()
    glib.idle_add(later.set, context=ctx)
    assert later.wait(WAIT)
    assert calls == [1]


def test_a_true_result_keeps_the_source(driver: Driver) -> None:
    ctx = driver.context
    calls: list[int] = []
    done = threading.Event()

    def callback() -> bool:
        calls.append(1)
        if len(calls) == 3:
            done.set()
        return glib.SOURCE_CONTINUE

    source_id = glib.idle_add(callback, context=ctx)
    assert done.wait(WAIT)
    assert calls[:3] == [1, 1, 1]
    assert ctx.find_source_by_id(source_id) is not None
    assert glib.source_remove(source_id, context=ctx)


def test_destroyed_from_another_thread_mid_iteration_never_dispatches(driver: Driver) -> None:
    ctx = driver.context
    calls: list[str] = []
    entered, gate, again = threading.Event(), threading.Event(), threading.Event()
    victim = glib.Idle()
    victim.set_callback(keep_calling(calls.append, "victim"))

    def first() -> bool:
        # The first time, the iteration has chosen both; the victim comes next.
        calls.append("first")
        if len(calls) == 1:
            entered.set()
            assert gate.wait(WAIT)
            return glib.SOURCE_CONTINUE
        again.set()
        return glib.SOURCE_REMOVE

    def attach_both() -> None:
        glib.idle_add(first, context=ctx)
        victim.attach(ctx)

    driver.call(attach_both)
    assert entered.wait(WAIT)
    victim.destroy()  # from this thread, while the driving thread is mid-iteration
    gate.set()
    assert again.wait(WAIT)  # a later iteration ran
    assert calls == ["first", "first"]
    assert victim.is_destroyed()


@pytest.mark.parametrize("can_recurse", [False, True])
def test_no_recursive_dispatch_unless_the_source_can_recurse(
    driver: Driver, can_recurse: bool
) -> None:
    ctx = driver.context
    depth = 0
    nested: list[int] = []
    done = threading.Event()
    source = glib.Idle()

    def callback() -> bool:
        nonlocal depth
        depth += 1
        nested.append(depth)
        if depth == 1:
            ctx.iteration(False)  # a nested iteration, on the driving thread
            done.set()
        depth -= 1
        return depth > 0  # the outer call removes the source

    source.set_callback(callback)
    source.set_can_recurse(can_recurse)
    assert source.get_can_recurse() is can_recurse
    source.attach(ctx)
    assert done.wait(WAIT)
    driver.flush()
    assert source.is_destroyed()
    assert nested == ([1, 2] if can_recurse else [1])


# -- changes from other threads ---------------------------------------------------


def test_attach_destroy_and_change_from_another_thread_wake_the_driver(driver: Driver) -> None:
    ctx = driver.context
    far = glib.Timeout(2**31 - 1)  # far away: the driver has nothing to do until woken
    far.set_callback(lambda: True)
    attached = Probe()
    after_destroy = Probe(far.is_destroyed)
    far.attach(ctx)
    attached.attach(ctx)  # from this thread: only a wake-up makes it prepared
    assert attached.prepared.wait(WAIT)
    after_destroy.attach(ctx)
    driver.flush()
    far.destroy()  # from this thread: only a wake-up makes the driver prepare again
    assert after_destroy.prepared.wait(WAIT)
    # A source with no ready time is never ready; setting one from this
    # thread must wake the driver.
    changed = threading.Event()
    never_ready = glib.Source()
    never_ready.set_callback(changed.set)
    never_ready.attach(ctx)
    driver.flush()
    never_ready.set_ready_time(0)  # long past
    assert changed.wait(WAIT)
    fired = threading.Event()
    in_thread(lambda: glib.timeout_add(1, fired.set, context=ctx))  # from a third thread
    assert fired.wait(WAIT)
    attached.destroy()
    after_destroy.destroy()


def test_sources_attached_from_any_thread_run_on_the_driving_thread(driver: Driver) -> None:
    ctx = driver.context
    ran_in: list[int] = []
    events = [threading.Event() for _ in range(5)]
    glib.idle_add(record_thread, ran_in, events[0], context=ctx)  # this thread
    glib.timeout_add(2, record_thread, ran_in, events[1], context=ctx)
    in_thread(lambda: glib.idle_add(record_thread, ran_in, events[2], context=ctx))
    driver.call(lambda: glib.timeout_add(1, record_thread, ran_in, events[3], context=ctx))
    a, b = socket.socketpair()
    with a, b:
        glib.io_add_watch(
            a,
            glib.PRIORITY_DEFAULT,
            glib.IO_IN,
            lambda sock, condition: record_thread(ran_in, events[4]),
            context=ctx,
        )
        b.send(b"x")
        for event in events:
            assert event.wait(WAIT)
    assert set(ran_in) == {driver.ident}


def test_destroy_from_another_thread_cancels_and_finalizes(driver: Driver) -> None:
    ctx = driver.context
    calls: list[str] = []
    never = Finalized()
    never.set_ready_time(glib.get_monotonic_time() + WAIT_MS * 1000)
    never.set_callback(keep_calling(calls.append, "never"))
    never_id = never.attach(ctx)
    removed_id = glib.timeout_add(WAIT_MS, keep_calling(calls.append, "removed"), context=ctx)
    driver.flush()  # both are known to the driver
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


def test_invoke_from_another_thread_runs_on_the_driving_thread(driver: Driver) -> None:
    ctx = driver.context
    ran_in: list[int] = []
    done = [threading.Event() for _ in range(2)]

    def job(tag: str, event: threading.Event) -> bool:
        assert tag == "job"
        return record_thread(ran_in, event)

    ctx.invoke(job, "job", done[0])
    in_thread(lambda: ctx.invoke(job, "job", done[1], priority=glib.PRIORITY_HIGH))
    for event in done:
        assert event.wait(WAIT)
    assert ran_in == [driver.ident] * 2


def test_invoke_on_the_driving_thread_runs_at_once(driver: Driver) -> None:
    def invoke_here() -> list[int]:
        calls: list[int] = []

        def thrice() -> bool:
            calls.append(len(calls))
            return len(calls) < 3  # invoke repeats it while it returns true

        driver.context.invoke(thrice)
        return calls  # filled before invoke() returned

    assert driver.call(invoke_here) == [0, 1, 2]


def test_another_thread_neither_iterates_nor_runs_a_main_loop_on_the_context(
    driver: Driver,
) -> None:
    """While the driving thread owns the context, iteration() and pending()
    elsewhere return False at once, and a MainLoop run elsewhere dispatches
    nothing (GLib's g_main_loop_run waits for ownership) until quit()."""
    ctx = driver.context
    assert not ctx.acquire()
    assert not ctx.iteration(False)
    assert not ctx.pending()
    ran_in: list[int] = []
    done = threading.Event()
    with loop_in_thread(ctx, MainLoop.is_running):  # run() waits for the context
        glib.idle_add(record_thread, ran_in, done, context=ctx)
        assert done.wait(WAIT)
    assert ran_in == [driver.ident]


# -- timeouts ---------------------------------------------------------------------


def test_timeouts_fire_in_deadline_order_and_never_early(driver: Driver) -> None:
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
            source.attach(driver.context)

    driver.call(attach_all)
    assert done.wait(WAIT)
    assert len(fired) == len(intervals)
    assert [deadline for _, deadline, _ in fired] == sorted(deadlines)
    for index, deadline, now in fired:
        assert now >= deadline >= start + intervals[index] * 1000


def test_a_repeating_timeout_is_never_early(driver: Driver) -> None:
    interval_ms = 3
    source = glib.Timeout(interval_ms)
    seen: list[tuple[int, int]] = []  # (deadline, clock at dispatch)
    done = threading.Event()

    def tick() -> bool:
        seen.append((source.get_ready_time(), glib.get_monotonic_time()))
        if len(seen) == 4:
            done.set()
        return len(seen) < 4

    source.set_callback(tick)
    source.attach(driver.context)
    assert done.wait(WAIT)
    driver.flush()
    assert source.is_destroyed()
    assert len(seen) == 4
    for (deadline, now), (next_deadline, _) in itertools.pairwise(seen):
        assert now >= deadline
        assert next_deadline >= deadline + interval_ms * 1000
    assert seen[-1][1] >= seen[-1][0]


# -- fd watches -------------------------------------------------------------------


def test_a_fd_watch_reports_in_then_hup_on_a_closed_pipe(driver: Driver) -> None:
    ctx = driver.context
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
        assert conditions == [glib.IO_IN]
        os.close(w)
        assert got_hup.wait(WAIT)
        driver.flush()
        assert ctx.find_source_by_id(source_id) is None
        if driver.loop is not None:
            # The driver stopped watching the fd with its asyncio loop.
            assert not driver.call(driver.loop.remove_reader, r)
    finally:
        os.close(r)
        with contextlib.suppress(OSError):
            os.close(w)
    assert data == [b"hello"]
    assert conditions[-1] & glib.IO_HUP  # reported though only IN was asked for


def test_a_fd_watch_on_a_socket_reports_out_then_in_and_hup(driver: Driver) -> None:
    ctx = driver.context
    a, b = socket.socketpair()
    conditions: list[IOCondition] = []
    got_out, got_hup = threading.Event(), threading.Event()

    def on_out(sock: socket.socket, condition: IOCondition) -> None:  # None: removes it
        conditions.append(condition)
        got_out.set()

    def on_in(sock: socket.socket, condition: IOCondition) -> bool:
        assert sock is a  # the object given, not its fd
        conditions.append(condition)
        got_hup.set()
        return glib.SOURCE_REMOVE

    with a, b:
        glib.io_add_watch(a, glib.PRIORITY_DEFAULT, glib.IO_OUT, on_out, context=ctx)
        assert got_out.wait(WAIT)
        driver.flush()
        assert conditions == [glib.IO_OUT]
        glib.io_add_watch(a, glib.PRIORITY_DEFAULT, glib.IO_IN, on_in, context=ctx)
        b.close()
        assert got_hup.wait(WAIT)
        driver.flush()
    assert len(conditions) == 2
    assert conditions[1] & glib.IO_HUP
    assert conditions[1] & glib.IO_IN  # the EOF is readable


def test_a_pri_only_watch_reports_urgent_data(driver: Driver) -> None:
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
            glib.io_add_watch(
                peer, glib.PRIORITY_DEFAULT, glib.IO_PRI, on_pri, context=driver.context
            )
            client.send(b"!", socket.MSG_OOB)
            assert fired.wait(WAIT)
    assert conditions == [glib.IO_PRI]


def test_the_driving_thread_owns_a_fresh_context(driver: Driver) -> None:
    assert driver.context is not MainContext.default()
    assert driver.call(threading.get_ident) == driver.ident
    assert driver.call(driver.context.is_owner)
    assert not driver.context.is_owner()
    if driver.loop is not None:  # an asyncio driver also makes it the thread default
        assert driver.call(MainContext.get_thread_default) is driver.context
