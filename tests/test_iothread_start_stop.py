"""An IOThread that cannot start, and one written to while it stops.

A start that fails raises the error that stopped it and leaves nothing
behind: no thread, no descriptor (the leak fixture checks both), no loop
left open, no entry under /objects; the id is free again.  A stopping
IOThread stores what is written to it and raises nothing.  The ordinary
lifecycle is tests/test_iothread.py's.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import threading
from collections.abc import Callable

import pytest

import iothreads
from iothreads import IOThread

from .helpers import (
    WAIT,
    LoopFactory,
    SlowToCancel,
    loop_kind,
    refuse_thread_start,
    refusing_executors,
)

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here"
)


def assert_left_nothing(io: IOThread) -> None:
    assert not io.running
    assert io.loop is None
    assert iothreads.iothread_by_id(io.id) is None
    assert all(t.name != f"IO {io.id}" for t in threading.enumerate())


# -- a start that fails -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["start", "astart"])
async def test_a_thread_the_system_refuses_fails_the_start(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    with monkeypatch.context() as patch:
        refuse_thread_start(patch, "IO io0")
        starting = io.astart() if how == "astart" else asyncio.to_thread(io.start)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            await starting
    assert_left_nothing(io)
    io.stop()  # nothing to stop
    async with IOThread("io0", loop_factory=loop_factory) as again:  # the id is free
        assert again.running


class _Made:
    """A loop factory that keeps the loops it made, to check they were closed."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self._factory = factory
        self.loops: list[asyncio.AbstractEventLoop] = []

    def __call__(self) -> asyncio.AbstractEventLoop:
        loop = self._factory()
        self.loops.append(loop)
        return loop


def _closed_loop(loop_factory: LoopFactory) -> LoopFactory:
    def factory() -> asyncio.AbstractEventLoop:
        loop = loop_factory()
        loop.close()
        return loop

    return factory


@pytest.mark.parametrize(
    ("make_factory", "error", "message"),
    [
        (_closed_loop, RuntimeError, "Event loop is closed"),
        (refusing_executors, TypeError, "this loop keeps its own executor"),
    ],
    ids=["closed-loop", "executor-refused"],
)
def test_a_loop_that_fails_the_setup_fails_the_start(
    loop_factory: LoopFactory,
    make_factory: Callable[[LoopFactory], LoopFactory],
    error: type[Exception],
    message: str,
) -> None:
    """The loop exists, then the IOThread's setup on it fails: the wake-up
    channel, the loop and the pool's thread-pool-min workers all go."""
    made = _Made(make_factory(loop_factory))
    io = IOThread("io0", loop_factory=made, thread_pool_min=2)
    with pytest.raises(error, match=message):
        io.start()
    assert_left_nothing(io)
    assert [loop.is_closed() for loop in made.loops] == [True]


@needs_affinity
def test_a_cpu_affinity_the_kernel_refuses_fails_the_start(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid when set, refused when applied (the process's cpuset shrank
    meanwhile): the error reaches start(), and the loop is closed."""

    def refuse(pid: int, cpus: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    made = _Made(loop_factory)
    io = IOThread("io0", loop_factory=made, cpu_affinity={min(os.sched_getaffinity(0))})
    with pytest.raises(OSError, match="Invalid argument"):
        io.start()
    assert_left_nothing(io)
    assert [loop.is_closed() for loop in made.loops] == [True]


def test_without_uvloop_the_default_loop_is_the_stdlib_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IOTHREADS_LOOP", raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop fails
    with IOThread("io0") as io:
        assert io.loop is not None
        assert loop_kind(io.loop) == "asyncio"


def test_asking_for_uvloop_without_uvloop_fails_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTHREADS_LOOP", "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)
    io = IOThread("io0")
    with pytest.raises(ImportError, match="uvloop"):
        io.start()
    assert_left_nothing(io)


# -- repr -----------------------------------------------------------------------------------


def test_repr_says_whether_it_runs_and_on_which_thread(loop_factory: LoopFactory) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    assert repr(io) == "<IOThread 'io0' stopped thread_id=-1>"
    with io:
        assert repr(io) == f"<IOThread 'io0' running thread_id={io.thread_id}>"
    assert repr(io) == "<IOThread 'io0' stopped thread_id=-1>"


# -- writes while it stops ------------------------------------------------------------------


def test_writes_to_a_stopping_iothread_are_stored_and_raise_nothing(
    loop_factory: LoopFactory,
) -> None:
    """Written once its loop takes no more work (the stop is held up by a
    task's clean-up): a property and the CPU affinity are stored, and
    nothing runs to apply them."""
    io = IOThread("io0", loop_factory=loop_factory)
    io.start()
    inner = SlowToCancel()
    io.submit(inner)
    assert inner.started.wait(WAIT)
    stopper = threading.Thread(target=io.stop)
    stopper.start()
    try:
        assert inner.cancelled.wait(WAIT)  # by the stop: the inbox is closed
        io.poll_max_ns = 0
        cpus = {min(os.sched_getaffinity(0))} if hasattr(os, "sched_getaffinity") else None
        io.cpu_affinity = cpus
    finally:
        inner.release.set_result(None)
        stopper.join(WAIT)
    assert not stopper.is_alive()
    assert io.poll_max_ns == 0
    assert io.cpu_affinity == (frozenset(cpus) if cpus is not None else None)
