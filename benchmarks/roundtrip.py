"""Cross-thread round trip: a caller loop hands work to another loop's thread
and awaits the answer.

Baseline: what plain asyncio offers, ``asyncio.run_coroutine_threadsafe`` +
``asyncio.wrap_future`` onto a loop running in a plain thread (and, for the
handle round trip, ``loop.call_soon_threadsafe`` there and back).  Ours: the
same hand-offs through an IOThread.  The caller, the baseline's loop and the
IOThread's loop are all of the group's loop kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from iothreads import IOThread
from iothreads._props import IOTHREAD_DEFAULTS

from ._harness import Case, CaseFactory, LoopFactory, Op

NAME = "roundtrip"

#: The IOThread's default window (QEMU's 32768 ns on POSIX).
DEFAULT_POLL_MAX_NS = IOTHREAD_DEFAULTS["poll-max-ns"]


async def noop() -> None:
    pass


def noop_sync() -> None:
    pass


@contextlib.contextmanager
def plain_loop_thread(loop_factory: LoopFactory) -> Iterator[asyncio.AbstractEventLoop]:
    """A loop running in a plain thread: the baselines' target."""
    loop = loop_factory()
    ready = threading.Event()
    thread = threading.Thread(
        target=lambda: (loop.call_soon(ready.set), loop.run_forever()), name="baseline-loop"
    )
    thread.start()
    ready.wait()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def handle_op(schedule: Callable[..., object]) -> Op:
    """A handle round trip: *schedule* a callback there that schedules one back."""

    async def op() -> None:
        caller = asyncio.get_running_loop()
        done = caller.create_future()
        schedule(caller.call_soon_threadsafe, done.set_result, None)
        await done

    return op


def baseline_handle(loop_factory: LoopFactory) -> CaseFactory:
    """``loop.call_soon_threadsafe`` there and back, to a plain loop thread."""

    @contextlib.asynccontextmanager
    async def case() -> AsyncIterator[Op]:
        with plain_loop_thread(loop_factory) as loop:
            yield handle_op(loop.call_soon_threadsafe)

    return case


def baseline_run(loop_factory: LoopFactory) -> CaseFactory:
    """``run_coroutine_threadsafe`` + ``wrap_future`` onto a plain loop thread."""

    @contextlib.asynccontextmanager
    async def case() -> AsyncIterator[Op]:
        with plain_loop_thread(loop_factory) as loop:

            async def op() -> None:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(noop(), loop))

            yield op

    return case


def io_case(
    loop_factory: LoopFactory,
    make_op: Callable[[IOThread], Op],
    poll_max_ns: int = DEFAULT_POLL_MAX_NS,
) -> CaseFactory:
    """An IOThread of the group's loop kind, and the op *make_op* builds on it."""

    @contextlib.asynccontextmanager
    async def case() -> AsyncIterator[Op]:
        async with IOThread("bench", loop_factory=loop_factory, poll_max_ns=poll_max_ns) as io:
            yield make_op(io)

    return case


def run_noop(io: IOThread) -> Op:
    return lambda: io.run(noop)


def run_noop_sync(io: IOThread) -> Op:
    return lambda: io.run(noop_sync)


def io_handle(io: IOThread) -> Op:
    return handle_op(io.call_soon_threadsafe)


def cases(loop_factory: LoopFactory) -> list[tuple[str, list[Case]]]:
    """Two groups: ``await``-style round trips, and handle round trips."""
    return [
        (
            "await",
            [
                Case("run_coroutine_threadsafe", baseline_run(loop_factory)),
                Case("io.run(async noop)", io_case(loop_factory, run_noop)),
                Case("io.run(sync noop)", io_case(loop_factory, run_noop_sync)),
            ],
        ),
        (
            "handle",
            [
                Case("loop.call_soon_threadsafe", baseline_handle(loop_factory)),
                Case("io.call_soon_threadsafe", io_case(loop_factory, io_handle)),
            ],
        ),
    ]
