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
from collections.abc import AsyncIterator

from iothreads import IOThread

from ._harness import Case, LoopFactory, Op

NAME = "roundtrip"


async def noop() -> None:
    pass


def noop_sync() -> None:
    pass


@contextlib.asynccontextmanager
async def plain_loop_thread(loop_factory: LoopFactory) -> AsyncIterator[asyncio.AbstractEventLoop]:
    """A loop running in a plain thread: the baseline's target."""
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
        await asyncio.to_thread(thread.join)
        loop.close()


def cases(loop_factory: LoopFactory) -> list[tuple[str, list[Case]]]:
    """Two groups: ``await``-style round trips, and handle round trips."""

    @contextlib.asynccontextmanager
    async def baseline_run() -> AsyncIterator[Op]:
        async with plain_loop_thread(loop_factory) as loop:

            async def op() -> None:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(noop(), loop))

            yield op

    @contextlib.asynccontextmanager
    async def iothread() -> AsyncIterator[IOThread]:
        async with IOThread("bench", loop_factory=loop_factory) as io:
            yield io

    @contextlib.asynccontextmanager
    async def io_run_async() -> AsyncIterator[Op]:
        async with iothread() as io:
            yield lambda: io.run(noop)

    @contextlib.asynccontextmanager
    async def io_run_sync() -> AsyncIterator[Op]:
        async with iothread() as io:
            yield lambda: io.run(noop_sync)

    def handle_op(schedule: object) -> Op:
        async def op() -> None:
            caller = asyncio.get_running_loop()
            done = caller.create_future()
            schedule(caller.call_soon_threadsafe, done.set_result, None)  # type: ignore[operator]
            await done

        return op

    @contextlib.asynccontextmanager
    async def baseline_handle() -> AsyncIterator[Op]:
        async with plain_loop_thread(loop_factory) as loop:
            yield handle_op(loop.call_soon_threadsafe)

    @contextlib.asynccontextmanager
    async def io_handle() -> AsyncIterator[Op]:
        async with iothread() as io:
            yield handle_op(io.call_soon_threadsafe)

    return [
        (
            "await",
            [
                Case("run_coroutine_threadsafe", baseline_run),
                Case("io.run(async noop)", io_run_async),
                Case("io.run(sync noop)", io_run_sync),
            ],
        ),
        (
            "handle",
            [
                Case("loop.call_soon_threadsafe", baseline_handle),
                Case("io.call_soon_threadsafe", io_handle),
            ],
        ),
    ]
