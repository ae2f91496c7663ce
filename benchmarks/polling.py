"""Adaptive polling and wake-up suppression (DESIGN.md §3, §4).

* back-to-back round trips, polling on vs polling off vs plain asyncio;
* sparse traffic (200 us and 5 ms between requests), polling on vs off: the
  window must shrink, so polling costs no CPU and no latency there;
* throughput of one producer thread pushing unbatched call_soon_threadsafe,
  against the same loop kind's own call_soon_threadsafe;
* the CPU an idle IOThread burns.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from iothreads import IOThread

from ._harness import Case, LoopFactory, Op, Placement, Rate
from .roundtrip import noop_sync, plain_loop_thread

NAME = "polling"

#: Gaps of the sparse-traffic cases: one a few times the default window
#: (32768 ns), one far beyond it (issue 3's 200 us and 5 ms).
SPARSE_GAPS = {"200us": 200e-6, "5ms": 5e-3}
#: "polling on" means the IOThread's defaults.
DEFAULT_POLL_MAX_NS = IOThread("defaults").poll_max_ns


def cases(loop_factory: LoopFactory) -> list[tuple[str, list[Case]]]:
    @contextlib.asynccontextmanager
    async def iothread(poll_max_ns: int) -> AsyncIterator[IOThread]:
        async with IOThread("bench", loop_factory=loop_factory, poll_max_ns=poll_max_ns) as io:
            yield io

    def handle_op(schedule: Callable[..., object]) -> Op:
        async def op() -> None:
            caller = asyncio.get_running_loop()
            done = caller.create_future()
            schedule(caller.call_soon_threadsafe, done.set_result, None)
            await done

        return op

    @contextlib.asynccontextmanager
    async def baseline_handle() -> AsyncIterator[Op]:
        async with plain_loop_thread(loop_factory) as loop:
            yield handle_op(loop.call_soon_threadsafe)

    @contextlib.asynccontextmanager
    async def baseline_run() -> AsyncIterator[Op]:
        async with plain_loop_thread(loop_factory) as loop:

            async def noop() -> None:
                pass

            async def op() -> None:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(noop(), loop))

            yield op

    def io_handle(poll_max_ns: int) -> Callable[[], contextlib.AbstractAsyncContextManager[Op]]:
        @contextlib.asynccontextmanager
        async def case() -> AsyncIterator[Op]:
            async with iothread(poll_max_ns) as io:
                yield handle_op(io.call_soon_threadsafe)

        return case

    def io_run(poll_max_ns: int) -> Callable[[], contextlib.AbstractAsyncContextManager[Op]]:
        @contextlib.asynccontextmanager
        async def case() -> AsyncIterator[Op]:
            async with iothread(poll_max_ns) as io:
                yield lambda: io.run(noop_sync)

        return case

    groups = [
        (
            "b2b-handle",
            [
                Case("loop.call_soon_threadsafe", baseline_handle),
                Case("io handle, polling on", io_handle(DEFAULT_POLL_MAX_NS)),
                Case("io handle, polling off", io_handle(poll_max_ns=0)),
            ],
        ),
        (
            "b2b-run",
            [
                Case("run_coroutine_threadsafe", baseline_run),
                Case("io.run, polling on", io_run(DEFAULT_POLL_MAX_NS)),
                Case("io.run, polling off", io_run(poll_max_ns=0)),
            ],
        ),
    ]
    for label, gap in SPARSE_GAPS.items():
        groups.append(
            (
                f"sparse-{label}",
                [
                    Case("io.run, polling off", io_run(poll_max_ns=0), gap_s=gap),
                    Case("io.run, polling on", io_run(DEFAULT_POLL_MAX_NS), gap_s=gap),
                ],
            )
        )
    return groups


@contextlib.contextmanager
def _cpu_and_wall() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    yield out
    out["cpu"] = time.process_time() - cpu0
    out["wall"] = time.perf_counter() - wall0


def _push(schedule: Callable[..., Any], n: int) -> dict[str, float]:
    """Push *n* unbatched callbacks from this (plain) thread; time until the last ran."""
    done = threading.Event()
    count = 0

    def bump() -> None:
        nonlocal count
        count += 1

    with _cpu_and_wall() as figures:
        for _ in range(n):
            schedule(bump)
        schedule(done.set)
        done.wait()
    assert count == n
    return figures


@contextlib.contextmanager
def _plain_loop(loop_factory: LoopFactory) -> Iterator[asyncio.AbstractEventLoop]:
    loop = loop_factory()
    ready = threading.Event()
    thread = threading.Thread(target=lambda: (loop.call_soon(ready.set), loop.run_forever()))
    thread.start()
    ready.wait()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def rates(kind: str, loop_factory: LoopFactory, placement: Placement, quick: bool) -> list[Rate]:
    """Throughput of one producer, and the idle cost (unpinned only)."""
    n = 100_000 if quick else 1_000_000
    group = f"{NAME}/throughput/{kind}/{placement.name}"
    out = []
    with placement.applied():
        with placement.starting_workers():
            plain = _plain_loop(loop_factory)
            loop = plain.__enter__()
        try:
            f = _push(loop.call_soon_threadsafe, n)
            out.append(Rate(group, "loop.call_soon_threadsafe", n / f["wall"], _pct(f)))
        finally:
            plain.__exit__(None, None, None)
        with placement.starting_workers():
            io = IOThread("bench", loop_factory=loop_factory)
            io.start()
        try:
            f = _push(io.call_soon_threadsafe, n)
            out.append(Rate(group, "io.call_soon_threadsafe", n / f["wall"], _pct(f)))
        finally:
            io.stop()
        if placement.caller is None:
            idle_s = 5.0
            group = f"{NAME}/idle-{idle_s:g}s/{kind}/{placement.name}"
            with _plain_loop(loop_factory) as loop:
                out.append(Rate(group, "plain loop thread", 0.0, _idle_pct(idle_s)))
            with IOThread("bench", loop_factory=loop_factory) as io:
                for _ in range(200):  # traffic first, so the window has grown
                    io.run_sync(noop_sync)
                out.append(Rate(group, "IOThread, defaults", 0.0, _idle_pct(idle_s)))
    return out


def _idle_pct(seconds: float) -> float:
    with _cpu_and_wall() as figures:
        time.sleep(seconds)
    return _pct(figures)


def _pct(figures: dict[str, float]) -> float:
    return 100 * figures["cpu"] / figures["wall"]
