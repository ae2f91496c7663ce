"""Producers racing an IOThread's stop, landed deterministically at the racing line.

Under the GIL a stress test almost never puts a producer between its own two
looks at ``_closing`` while the loop closes its inbox; the gate of
``tests/helpers.py`` stops both threads exactly there.
"""

from __future__ import annotations

import threading

import pytest

from iothreads import IOThread, IOThreadStopped
from iothreads._aio._inbox import PyInbox

from .helpers import WAIT, Gate, LoopFactory, line_of

pytestmark = pytest.mark.interleaving

#: The loop is about to close its inbox.
CLOSING = line_of(PyInbox.close, "self._closing = True")
#: The loop takes the next handle of a pass it has counted.
TAKING = line_of(PyInbox.run, "handle = queue.popleft()")
#: A producer has appended its handle and is about to look at _closing again.
SECOND_LOOK = line_of(PyInbox.submit, "self._take_back(handle)", offset=-1)


@pytest.mark.implementations("python")  # its lines; the native core's: test_native.py
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
    ran = threading.Event()
    outcome: list[BaseException | None] = []

    def producer() -> None:
        producer_gate.install()
        try:
            # The context itself: a producer of IOThread.call_soon_threadsafe
            # that passed its running check before stop() began is here.
            aio.call_soon_threadsafe(ran.set)
        except IOThreadStopped as exc:
            outcome.append(exc)
        else:
            outcome.append(None)
        finally:
            producer_gate.uninstall()

    io.run_sync(loop_gate.install)
    stopper = threading.Thread(target=io.stop)
    producing = threading.Thread(target=producer)
    stopper.start()
    try:
        assert loop_gate.stopped.wait(WAIT)  # about to close the inbox
        producing.start()
        assert producer_gate.stopped.wait(WAIT)  # appended; about to look again
        loop_gate.go_on()
        assert loop_gate.stopped.wait(WAIT)  # closed; the drain counted the handle
        producer_gate.go_on()
        producing.join(WAIT)
        loop_gate.go_on()
    finally:
        loop_gate.resume.set()
        producer_gate.resume.set()
        if producing.ident is not None:
            producing.join(WAIT)
        stopper.join(WAIT)
    assert not stopper.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], IOThreadStopped)
    assert not ran.is_set()
    assert not io.running
