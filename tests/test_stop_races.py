"""Producers racing an IOThread's stop, landed deterministically at the racing line.

Under the GIL a stress test almost never puts a producer between its own two
looks at ``_closing`` while the loop closes its inbox; the gate of
``tests/helpers.py`` stops both threads exactly there.
"""

from __future__ import annotations

import contextlib
import sysconfig
import threading
from collections.abc import Iterator

import pytest

from iothreads import IOThread, IOThreadStopped
from iothreads._aio import AioContext, _inbox
from iothreads._aio._inbox import PyInbox

from .helpers import WAIT, Gate, LoopFactory, line_of, native

pytestmark = pytest.mark.interleaving

#: The loop is about to close its inbox.
CLOSING = line_of(PyInbox.close, "self._closing = True")
#: The loop takes the next handle of a pass it has counted.
TAKING = line_of(PyInbox.run, "handle = queue.popleft()")
#: A producer has looked at _closing once and is about to append its handle.
APPENDING = line_of(PyInbox.submit, "self._queue.append(handle)")
#: The loop has closed and drained its inbox and shuts the channel down.
SHUTTING_DOWN = line_of(PyInbox.shutdown, "self._wakeup.close()")
#: A producer has appended its handle and is about to look at _closing again.
SECOND_LOOK = line_of(PyInbox.submit, "self._take_back(handle)", offset=-1)

#: The races below are PyInbox's.  A free-threaded build's pure-Python inbox
#: is LockedPyInbox, whose producer appends and looks at _closing in one
#: critical section: it has no second look to land a producer at.
PY_INBOX_ONLY = pytest.mark.skipif(
    bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    reason="free-threaded: the pure-Python inbox is the locked one, without a second look",
)


class Producer:
    """A thread that hands *aio* one callback through the context itself
    (where a producer of IOThread.call_soon_threadsafe that passed its
    running check before stop() began is), traced by *gate*."""

    def __init__(self, aio: AioContext, gate: Gate) -> None:
        self.runs = 0  # of the callback
        self.ran = threading.Event()
        self.outcome: list[BaseException | None] = []
        self.gate = gate
        self.thread = threading.Thread(target=self._produce)
        self._aio = aio

    def _produce(self) -> None:
        self.gate.install()
        try:
            self._aio.call_soon_threadsafe(self._callback)
        except IOThreadStopped as exc:
            self.outcome.append(exc)
        else:
            self.outcome.append(None)
        finally:
            self.gate.uninstall()

    def _callback(self) -> None:
        self.runs += 1
        self.ran.set()


@contextlib.contextmanager
def stopping(io: IOThread, loop_gate: Gate, producer: Producer) -> Iterator[threading.Thread]:
    """``io.stop()`` in a thread of its own (yielded), *loop_gate* installed
    on the loop first.  On the way out, whatever the test saw, both gates let
    their threads go and every thread is joined, so that a failing race stays
    one failure; then the stop must have finished."""
    io.run_sync(loop_gate.install, timeout=WAIT)
    stopper = threading.Thread(target=io.stop)
    stopper.start()
    try:
        yield stopper
    finally:
        loop_gate.resume.set()
        producer.gate.resume.set()
        if producer.thread.ident is not None:
            producer.thread.join(WAIT)
        stopper.join(WAIT)
    assert not stopper.is_alive()


@pytest.mark.implementations("python")  # its lines; the native core's: the next test
@PY_INBOX_ONLY
def test_a_producer_overtaken_by_the_stop_takes_its_handle_back(
    loop_factory: LoopFactory,
) -> None:
    """The producer appends before the inbox closes and looks again after it
    closed, while the loop's last drain has counted the handle but not taken
    it: the producer takes it back and is told, and the drain skips it.  The
    callback never runs, and no call is left without an outcome."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    aio = io.aio_context
    loop_gate, producer_gate = Gate(CLOSING, TAKING), Gate(SECOND_LOOK)
    producer = Producer(aio, producer_gate)
    with stopping(io, loop_gate, producer):
        assert loop_gate.stopped.wait(WAIT)  # about to close the inbox
        producer.thread.start()
        assert producer_gate.stopped.wait(WAIT)  # appended; about to look again
        loop_gate.go_on()
        assert loop_gate.stopped.wait(WAIT)  # closed; the drain counted the handle
        producer_gate.go_on()
        producer.thread.join(WAIT)
        loop_gate.go_on()
    assert len(producer.outcome) == 1
    assert isinstance(producer.outcome[0], IOThreadStopped)
    assert producer.runs == 0
    assert not io.running


@pytest.mark.implementations("native")
@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built")
def test_a_producer_overtaken_by_the_stop_takes_its_handle_back_from_the_native_core(
    loop_factory: LoopFactory,
) -> None:
    """The same race in the C inbox, cut at its test points: the producer
    pushed before the inbox closed and looks at ``closing`` after it, while
    the last drain has spliced the handle into its FIFO but not yet taken it.
    The producer's compare-and-swap wins: it is told, and the drain skips
    the handle."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    aio = io.aio_context
    before_close = line_of(AioContext.close_inbox, "self._inbox.close()")
    loop_gate = Gate(before_close, native("taking"))
    producer_gate = Gate(native("looked"))
    producer = Producer(aio, producer_gate)
    with stopping(io, loop_gate, producer):
        assert loop_gate.stopped.wait(WAIT)  # about to close the inbox
        producer.thread.start()
        assert producer_gate.stopped.wait(WAIT)  # pushed; about to look at closing
        loop_gate.go_on()
        assert loop_gate.stopped.wait(WAIT)  # closed; the drain holds the handle
        producer_gate.go_on()
        producer.thread.join(WAIT)
        loop_gate.go_on()
    assert len(producer.outcome) == 1
    assert isinstance(producer.outcome[0], IOThreadStopped)
    assert producer.runs == 0


@pytest.mark.implementations("native")
@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built")
def test_a_producer_whose_handle_ran_before_the_stop_is_told_nothing_by_the_native_core(
    loop_factory: LoopFactory,
) -> None:
    """The producer pushes and stops before its look at ``closing``; the
    loop, its inbox still open, takes the handle in an ordinary pass and
    runs it; then the IOThread stops.  The producer's look finds ``closing``
    set, and its compare-and-swap must find the handle taken: it returns
    the handle and raises nothing.  The callback ran exactly once."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    producer = Producer(io.aio_context, Gate(native("looked")))
    producer.thread.start()
    try:
        assert producer.gate.stopped.wait(WAIT)  # pushed; about to look at closing
        assert producer.ran.wait(WAIT)  # an ordinary pass ran it
    finally:
        io.stop()  # before the producer looks, whatever the test saw
        producer.gate.resume.set()
        producer.thread.join(WAIT)
    assert producer.outcome == [None]
    assert producer.runs == 1


@pytest.mark.implementations("python")
@PY_INBOX_ONLY
def test_a_producer_whose_handle_the_last_drain_took_is_told_nothing(
    loop_factory: LoopFactory,
) -> None:
    """The producer appends before the inbox closes and looks again only once
    the loop's last drain has run its handle: it finds _closing set, but the
    handle is gone from the inbox, so it was run; the producer returns the
    handle as usual and raises nothing.  The callback ran exactly once."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    loop_gate, producer_gate = Gate(CLOSING), Gate(SECOND_LOOK)
    producer = Producer(io.aio_context, producer_gate)
    with stopping(io, loop_gate, producer):
        assert loop_gate.stopped.wait(WAIT)  # about to close the inbox
        producer.thread.start()
        assert producer_gate.stopped.wait(WAIT)  # appended; about to look again
        loop_gate.go_on()
        assert producer.ran.wait(WAIT)  # the last drain took the handle and ran it
        producer_gate.go_on()
        producer.thread.join(WAIT)
    assert producer.outcome == [None]
    assert producer.runs == 1
    assert not io.running


@pytest.mark.implementations("python")
@PY_INBOX_ONLY
def test_a_producer_appending_after_the_last_drain_is_told(
    loop_factory: LoopFactory,
) -> None:
    """The producer passes its first look before the inbox closes, and
    appends only after the loop's last drain found the inbox empty; it looks
    again once the loop has shut its inbox down.  Its handle must still be
    there for it to take back: it is told, and the callback never runs."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    loop_gate, producer_gate = Gate(CLOSING, SHUTTING_DOWN), Gate(APPENDING, SECOND_LOOK)
    producer = Producer(io.aio_context, producer_gate)
    with stopping(io, loop_gate, producer) as stopper:
        assert loop_gate.stopped.wait(WAIT)  # about to close the inbox
        producer.thread.start()
        assert producer_gate.stopped.wait(WAIT)  # looked once; about to append
        loop_gate.go_on()
        assert loop_gate.stopped.wait(WAIT)  # closed, drained empty, shutting down
        producer_gate.go_on()
        assert producer_gate.stopped.wait(WAIT)  # appended; about to look again
        loop_gate.go_on()
        stopper.join(WAIT)  # the IOThread is gone
        producer_gate.go_on()
        producer.thread.join(WAIT)
    assert len(producer.outcome) == 1
    assert isinstance(producer.outcome[0], IOThreadStopped)
    assert producer.runs == 0
