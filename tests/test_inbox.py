"""The inbox, its wake-up channel and its handles, one call at a time, in one thread.

Each inbox implementation (the pure-Python one, its locked variant for
free-threaded builds, and the native core where it was built) is driven
through the interface the AioContext uses, with no loop running: the loop's
side of the protocol is called by the test itself (one test runs the
watcher's drain in a thread of its own, at a chosen point of a producer's
write).  So every test is exact and deterministic; the races between the
two sides are tests/test_wakeups.py's and tests/test_stop_races.py's.  The
inbox needs a loop only for its handles (their ``_loop``, debug mode), so
one stdlib loop serves; no callback here depends on the loop's kind.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import select
import sysconfig
import threading
import weakref
from asyncio import format_helpers
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from iothreads import IOThreadStopped
from iothreads._aio import _inbox
from iothreads._aio._handle import ThreadsafeHandle
from iothreads._aio._inbox import Inbox, LockedPyInbox, PyInbox, new_inbox
from iothreads._aio._wakeup import WakeupChannel

from .helpers import WAIT, Gate, native, stdin_closed

STOPPED = "the test's loop is stopped; it takes no more work"

KINDS: dict[str, Callable[[asyncio.AbstractEventLoop, str, list[Any]], Inbox]] = {
    "python": PyInbox,
    "locked": LockedPyInbox,
}
if _inbox.native_core is not None:
    KINDS["native"] = _inbox.native_core.Inbox


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def ready() -> list[Any]:
    """The list of poll handlers found ready that the inbox is given."""
    return []


@pytest.fixture(params=list(KINDS))
def inbox(
    request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop, ready: list[Any]
) -> Iterator[Inbox]:
    inbox = KINDS[request.param](loop, STOPPED, ready)
    yield inbox
    inbox.shutdown()


# -- the inbox ----------------------------------------------------------------------


def test_a_new_inbox_wakes_the_loop_for_its_first_submission(inbox: Inbox) -> None:
    """Until the loop has run, it counts as about to block: a submission
    before its first pass must not be left waiting for a wake-up."""
    assert (inbox.submitted, inbox.wakeups, inbox.pending()) == (0, 0, False)
    assert inbox.drain_wakeups() == 0
    inbox.submit(lambda: None)
    assert inbox.pending()
    assert inbox.drain_wakeups() == 1
    assert inbox.wakeups == 1


def test_an_awake_loop_is_not_woken(inbox: Inbox) -> None:
    inbox.woke()
    inbox.submit(lambda: None)
    inbox.submit(lambda: None)
    assert inbox.drain_wakeups() == 0


def test_a_drain_with_no_wake_up_written_reads_nothing(inbox: Inbox) -> None:
    """Work a spinning or awake loop caught wrote no wake-up: its drain makes
    no system call.  (A write behind the flag's back, which no producer
    makes, shows it: the drain leaves it unread, the channel readable.)"""
    inbox.woke()
    inbox.submit(lambda: None)
    os.eventfd_write(inbox.fileno(), 1)
    assert inbox.drain_wakeups() == 0
    assert select.select([inbox.fileno()], [], [], 0)[0] == [inbox.fileno()]
    inbox.wake()  # sets the flag: the next drain reads the channel whole
    assert inbox.drain_wakeups() == 2
    assert select.select([inbox.fileno()], [], [], 0)[0] == []
    inbox.run(0)


def test_the_last_look_before_sleeping(inbox: Inbox) -> None:
    """prepare_to_block: with nothing queued the loop may sleep, and a
    producer then wakes it; with work queued it may not, and stays awake
    (producers do not wake it)."""
    inbox.woke()
    assert inbox.prepare_to_block()
    inbox.submit(lambda: None)
    assert inbox.drain_wakeups() == 1
    assert not inbox.prepare_to_block()
    inbox.submit(lambda: None)
    assert inbox.drain_wakeups() == 0


def test_the_sleeps_kept_are_counted(inbox: Inbox) -> None:
    inbox.woke()
    assert inbox.prepare_to_block()
    inbox.woke()
    inbox.submit(lambda: None)
    assert not inbox.prepare_to_block()  # called off: not counted
    inbox.run(0)
    assert inbox.prepare_to_block()
    assert inbox.blocks == 2


def test_a_ready_poll_handler_is_work_that_keeps_the_loop_awake(
    inbox: Inbox, ready: list[Any]
) -> None:
    """The poll handlers found ready count as pending work: the loop may not
    sleep, the sleep is not counted, and producers do not wake it."""
    ready.append("a handler found ready")
    assert inbox.pending()
    assert not inbox.prepare_to_block()
    inbox.submit(lambda: None)
    assert inbox.drain_wakeups() == 0
    assert inbox.blocks == 0
    inbox.run(0)
    ready.clear()
    assert not inbox.pending()
    assert inbox.prepare_to_block()
    assert inbox.blocks == 1


def test_a_pass_runs_what_was_queued_at_its_start(inbox: Inbox) -> None:
    ran: list[str] = []
    inbox.submit(ran.append, "a")

    def b_then_late() -> None:
        ran.append("b")
        inbox.submit(ran.append, "late")

    inbox.submit(b_then_late)
    inbox.run(0)
    assert ran == ["a", "b"]
    assert inbox.submitted == 2
    assert inbox.pending()
    inbox.run(0)
    assert ran == ["a", "b", "late"]
    assert (inbox.submitted, inbox.pending()) == (3, False)


def test_a_pass_with_a_limit_runs_at_most_that_many(inbox: Inbox) -> None:
    ran: list[int] = []
    for i in range(5):
        inbox.submit(ran.append, i)
    inbox.run(2)
    assert ran == [0, 1]
    inbox.run(10)
    assert ran == [0, 1, 2, 3, 4]
    assert inbox.submitted == 5
    inbox.run(3)  # nothing queued: nothing to do
    assert inbox.submitted == 5


def test_a_cancelled_handle_is_taken_but_not_run(inbox: Inbox) -> None:
    ran: list[str] = []
    inbox.submit(ran.append, "cancelled").cancel()
    inbox.submit(ran.append, "kept")
    inbox.run(0)
    assert ran == ["kept"]
    assert inbox.submitted == 2


def test_a_handle_its_producer_kept_in_a_cycle_is_collected_after_its_run(
    inbox: Inbox,
) -> None:
    """The native core hides a queued handle from the cyclic GC; a handle
    that outlives the inbox's reference (its producer kept it) is shown to
    it again, so a cycle through it is garbage like any other once it ran.
    One whose producer dropped it dies with the inbox's reference."""
    kept: list[object] = []
    kept.append(inbox.submit(kept.append, "ran"))  # the handle -> kept -> the handle
    dropped = weakref.ref(inbox.submit(len, ()))
    handle = weakref.ref(kept[0])
    inbox.run(0)
    assert kept[1:] == ["ran"]
    assert dropped() is None
    del kept
    assert handle() is not None  # only the cycle holds it
    gc.collect()
    assert handle() is None


@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built")
def test_the_native_core_shows_a_queued_handle_to_the_collector_only_without_the_gil(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """With the GIL a queued handle and the context made for it are hidden
    from the cyclic GC, so a flood's queue is not walked at each collection.
    Free-threaded they are tracked from birth: there the collector walks
    every GC object anyway, and spaces collections by the tracked ones that
    survive (docs/design.md, "The native core")."""
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert _inbox.native_core is not None
    inbox = _inbox.native_core.Inbox(loop, STOPPED, [])
    try:
        handle = inbox.submit(len, ())
        assert gc.is_tracked(handle) is free_threaded
        assert gc.is_tracked(handle.get_context()) is free_threaded
        inbox.run(0)
        assert gc.is_tracked(handle)  # its producer kept it
        assert gc.is_tracked(handle.get_context())
    finally:
        inbox.shutdown()


def test_a_submission_whose_source_traceback_fails_raises_and_queues_nothing(
    inbox: Inbox, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In debug mode a handle captures where it was submitted from; when that
    fails, the submission raises what it raised and nothing is queued (the
    native core drops the handle and the context it made for it)."""
    loop.set_debug(True)
    inbox.run(0)  # the native core reads debug mode once per pass

    def no_stack(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no stack to capture")

    monkeypatch.setattr(format_helpers, "extract_stack", no_stack)
    with pytest.raises(RuntimeError, match="no stack to capture"):
        inbox.submit(print)
    assert not inbox.pending()


@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built")
def test_a_native_drain_between_a_producers_flag_and_its_write_leaves_the_flag_to_that_write(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The native core's producer sets the wake-up-pending flag, then writes
    (the pure-Python channel does both under one lock: its channel's own
    test models the drain in between).  A drain with the producer stopped
    between the two reads nothing and leaves the flag set, so the drain
    after the write reads it, and the channel is not left readable."""
    assert _inbox.native_core is not None
    inbox = _inbox.native_core.Inbox(loop, STOPPED, [])
    gate = Gate(native("flagged"))

    def produce() -> None:
        gate.install()
        try:
            inbox.wake()
        finally:
            gate.uninstall()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert gate.stopped.wait(WAIT)
        assert inbox.drain_wakeups() == 0
    finally:
        gate.go_on()
        producer.join(WAIT)
    try:
        assert inbox.drain_wakeups() == 1
        assert select.select([inbox.fileno()], [], [], 0)[0] == []
    finally:
        inbox.shutdown()


def test_a_closed_inbox_refuses_work(inbox: Inbox) -> None:
    inbox.woke()
    inbox.close()
    with pytest.raises(IOThreadStopped, match="the test's loop is stopped"):
        inbox.submit(lambda: None)
    assert not inbox.pending()


def test_wake_makes_the_channel_readable(inbox: Inbox) -> None:
    inbox.woke()
    inbox.wake()
    assert inbox.drain_wakeups() == 1


def test_the_callback_runs_in_the_context_given_or_the_submitters(inbox: Inbox) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    var.set("submitter's")
    inbox.submit(lambda: seen.append(var.get()))
    given = contextvars.Context()
    given.run(var.set, "given")
    inbox.submit(lambda: seen.append(var.get()), context=given)
    var.set("later")
    inbox.run(0)
    assert seen == ["submitter's", "given"]


@pytest.mark.parametrize("kind", ["python", "locked"])
def test_a_handle_taken_back_during_a_pass_ends_it(
    kind: str, loop: asyncio.AbstractEventLoop
) -> None:
    """A producer racing close() may take its handle back while the loop's
    last pass runs: the pass ends at the empty queue, and the take-back
    tells the producer its work was refused, as it was not run."""
    inbox = KINDS[kind](loop, STOPPED, [])
    assert isinstance(inbox, PyInbox)
    try:
        ran: list[str] = []
        refused: list[str] = []

        def take_back_the_next() -> None:
            ran.append("first")
            try:
                inbox._take_back(second)
            except IOThreadStopped:
                refused.append("second")

        inbox.submit(take_back_the_next)
        second = cast(ThreadsafeHandle, inbox.submit(ran.append, "second"))
        inbox.run(0)
        assert (ran, refused, inbox.submitted) == (["first"], ["second"], 1)
        # A handle the loop took already is the loop's: taking it back does nothing.
        inbox._take_back(second)
    finally:
        inbox.shutdown()


@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built")
def test_new_inbox_takes_the_native_core_where_built(loop: asyncio.AbstractEventLoop) -> None:
    inbox = new_inbox(loop, STOPPED, [])
    try:
        assert type(inbox) is KINDS["native"]
    finally:
        inbox.shutdown()


# -- the native spin's hand-over wait ------------------------------------------------


@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built")
def test_an_inbox_counts_its_loop_awake_from_a_wake_up_to_its_spin_or_sleep(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """What a native spin that caught work waits on before it takes the GIL:
    how many loops run Python (spin.c).  Counted by difference: other tests'
    inboxes may still be alive."""
    core = _inbox.native_core
    assert core is not None
    inbox = core.Inbox(loop, STOPPED, [])
    base = core._loops_awake()
    try:
        inbox.woke()
        assert core._loops_awake() == base + 1
        inbox.woke()
        assert core._loops_awake() == base + 1  # once per inbox
        assert inbox.prepare_to_block()
        assert core._loops_awake() == base  # it sleeps
        inbox.woke()
        assert inbox.spin(0, -1) == 0
        assert core._loops_awake() == base + 1  # left the spin: awake again
        inbox.submit(lambda: None)
        assert not inbox.prepare_to_block()  # work slipped in: it stays awake
        assert core._loops_awake() == base + 1
        inbox.shutdown()
        assert core._loops_awake() == base
    finally:
        inbox.shutdown()


@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built")
def test_a_spin_that_caught_work_while_another_loop_runs_python_returns_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The hand-over wait is bounded: another loop that never sleeps (counted
    awake throughout) delays the spin's return, never keeps it."""
    core = _inbox.native_core
    assert core is not None
    spinning, other = core.Inbox(loop, STOPPED, []), core.Inbox(loop, STOPPED, [])
    try:
        other.woke()
        spinning.submit(lambda: None)
        assert spinning.spin(10**12, -1) == 1
    finally:
        spinning.shutdown()
        other.shutdown()


def test_new_inbox_without_the_core_takes_the_pure_python_inbox_of_this_build(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_inbox, "native_core", None)
    inbox = new_inbox(loop, STOPPED, [])
    try:
        free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
        assert type(inbox) is (LockedPyInbox if free_threaded else PyInbox)
    finally:
        inbox.shutdown()


# -- the wake-up channel ----------------------------------------------------------------


_pipe = os.pipe


def swapped_pipe() -> tuple[int, int]:
    """A pipe whose read end has the higher number (os.pipe() usually gives
    the lower one to the read end, but nothing promises it)."""
    r, w = _pipe()
    higher = os.dup(r)
    os.close(r)
    assert w < higher
    return higher, w


@pytest.fixture(params=["eventfd", "pipe", "swapped pipe"])
def channel(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WakeupChannel]:
    """A wake-up channel of each kind: an eventfd where the platform has one,
    else a pipe (made here, on Linux too, by hiding os.eventfd)."""
    if request.param == "eventfd" and not hasattr(os, "eventfd"):
        pytest.skip("eventfd is Linux's")
    if request.param != "eventfd":
        monkeypatch.delattr(os, "eventfd", raising=False)
    if request.param == "swapped pipe":
        monkeypatch.setattr(os, "pipe", swapped_pipe)
    channel = WakeupChannel()
    yield channel
    channel.close()


def test_the_channel_is_an_eventfd_where_there_is_one() -> None:
    channel = WakeupChannel()
    try:
        assert (channel._rfd == channel._wfd) == hasattr(os, "eventfd")
    finally:
        channel.close()


def test_the_pipe_never_blocks_either_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "eventfd", raising=False)
    channel = WakeupChannel()
    try:
        assert channel._rfd != channel._wfd
        assert not os.get_blocking(channel._rfd)
        assert not os.get_blocking(channel._wfd)
    finally:
        channel.close()


def test_one_write_until_the_watcher_drains(channel: WakeupChannel) -> None:
    assert channel.fileno() >= 0
    assert channel.drain() == 0
    channel.wake()
    channel.wake()  # pending already: no second write
    assert channel.drain() == 1
    assert channel.drain() == 0
    channel.wake()  # drained: the next wake-up writes again
    assert channel.drain() == 1


def test_a_drain_between_a_producers_flag_and_its_write_leaves_the_flag_to_that_write(
    channel: WakeupChannel,
) -> None:
    """A producer sets the flag, then writes: a drain landing in between
    finds nothing to read, counts nothing and leaves the flag set, so the
    drain after the write reads it.  Cleared there, the flag would leave
    that write unread and the descriptor readable: the watcher would wake
    at every look until the next producer's write."""
    channel._pending = True  # the producer's write is still to come
    assert channel.drain() == 0
    assert channel._pending
    channel._write()  # the write lands
    assert channel.drain() == 1
    assert not channel._pending
    assert select.select([channel.fileno()], [], [], 0)[0] == []


def test_a_drain_interrupted_after_its_read_leaves_the_channel_readable(
    channel: WakeupChannel,
) -> None:
    """A KeyboardInterrupt raised between the read's system call and its
    result loses whether the read took the write.  The flag, still set,
    would keep every producer from writing again over an empty channel, and
    the watcher would sleep through their work: the drain writes once more,
    so the watcher wakes, drains and clears the flag, and the next
    producer's write wakes it again."""
    channel.wake()
    read = channel._read

    def interrupted_read() -> int:
        read()
        raise KeyboardInterrupt

    channel._read = interrupted_read  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        channel.drain()
    del channel._read
    fd = channel.fileno()
    assert select.select([fd], [], [], 0)[0] == [fd]
    assert channel.drain() == 1
    assert not channel._pending
    channel.wake()
    assert select.select([fd], [], [], 0)[0] == [fd]


class InterruptedRelease:
    """A lock whose release raises KeyboardInterrupt once it has released."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
        raise KeyboardInterrupt


def test_a_drain_interrupted_after_its_clear_writes_nothing_more(
    channel: WakeupChannel,
) -> None:
    """Interrupted once the flag is cleared, the drain knows the read took
    the write: a write then would land with the flag clear, never to be
    read, and wake the watcher at every look."""
    channel.wake()
    lock, channel._flag_lock = channel._flag_lock, InterruptedRelease()  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        channel.drain()
    channel._flag_lock = lock
    assert not channel._pending
    assert select.select([channel.fileno()], [], [], 0)[0] == []


def test_the_watcher_drains_while_the_writer_is_still_in_its_write(
    channel: WakeupChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write wakes the watcher, which on the writer's CPU may run before
    the writer has left its write: its drain must not wait for the writer.
    (It waited on the lock the writer held across the write, on one CPU
    until the writer ran again: on the free-threaded build, tens of
    microseconds a wake-up.)  The watcher's drain runs here in a thread of
    its own, while this thread is inside the write."""
    drained: list[int] = []
    watchers: list[threading.Thread] = []

    def drain_meanwhile() -> None:
        watcher = threading.Thread(target=lambda: drained.append(channel.drain()))
        watchers.append(watcher)
        watcher.start()
        watcher.join(WAIT)
        assert not watcher.is_alive(), "the watcher's drain waited for the writer"

    def writing(write: Callable[..., Any]) -> Callable[..., Any]:
        def write_then_drain(fd: int, data: Any) -> Any:
            written = write(fd, data)
            if fd == channel._wfd:
                drain_meanwhile()
            return written

        return write_then_drain

    monkeypatch.setattr(os, "write", writing(os.write))
    if hasattr(os, "eventfd_write"):
        monkeypatch.setattr(os, "eventfd_write", writing(os.eventfd_write))
    try:
        channel.wake()
        assert drained == [1]
        assert not channel._pending
        channel.wake()  # drained: the next wake-up writes again
        assert drained == [1, 1]
    finally:
        for watcher in watchers:
            watcher.join()  # this thread has left the write: a waiting drain ends


def test_a_closed_channel_does_nothing(channel: WakeupChannel) -> None:
    channel.close()
    assert channel.fileno() == -1
    channel.wake()
    channel.close()
    assert channel.fileno() == -1


def test_the_pipe_drain_counts_every_byte_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every byte in the pipe is read and counted, however many reads that
    takes (the flag allows one write, but the count must not depend on it)."""
    monkeypatch.delattr(os, "eventfd", raising=False)
    channel = WakeupChannel()
    try:
        channel.wake()
        os.write(channel._wfd, b"\0" * 9_999)
        assert channel.drain() == 10_000
        assert channel.drain() == 0
    finally:
        channel.close()


def test_a_channel_on_descriptor_zero_works_and_closes() -> None:
    with stdin_closed():
        channel = WakeupChannel()
        assert channel.fileno() == 0
        channel.wake()
        assert channel.drain() == 1
        channel.close()
        assert channel.fileno() == -1
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(0)


# -- the handle ----------------------------------------------------------------------


def test_a_threadsafe_handle_cancels_by_flag_only(loop: asyncio.AbstractEventLoop) -> None:
    """Cancelled from another thread, the callback must stay in place for a
    loop that is about to call it: the flag alone says not to."""
    ran: list[int] = []
    handle = ThreadsafeHandle(ran.append, (1,), loop, None)
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()
    assert handle._callback is not None
    assert handle.get_context() is not None


def test_a_threadsafe_handle_runs_in_its_context(loop: asyncio.AbstractEventLoop) -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    given = contextvars.Context()
    given.run(var.set, 7)
    seen: list[int] = []
    handle = ThreadsafeHandle(lambda: seen.append(var.get()), (), loop, given)
    assert handle.get_context() is given
    handle._run()
    assert seen == [7]
