"""Cross-thread round trip: a caller loop hands work to another loop's thread
and awaits the answer.

Baseline: what plain asyncio offers onto a loop running in a plain thread,
for the same work as ours in each group: a coroutine through
``asyncio.run_coroutine_threadsafe`` + ``asyncio.wrap_future``; a plain
function through ``loop.call_soon_threadsafe`` setting a
``concurrent.futures.Future`` + ``asyncio.wrap_future``; a handle round trip
with ``loop.call_soon_threadsafe`` there and back.  Ours: the same hand-offs
through an IOThread at its default settings, which each case's name states,
once per inbox implementation (native core, pure Python).
The caller, the baseline's loop and the IOThread's loop are all of the
group's loop kind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from iothreads import IOThread, MainLoop

from ._harness import (
    Case,
    CaseFactory,
    Group,
    Implementation,
    LoopFactory,
    Op,
    implementations,
    iothread,
    polling_main_loop,
    with_implementation,
)

NAME = "roundtrip"

#: The IOThread's default window (QEMU's 32768 ns on POSIX).
DEFAULT_POLL_MAX_NS = IOThread.property_defaults["poll-max-ns"]

#: What one operation does in each kind of group, the same on both sides.
WORK_COROUTINE = "`async def noop()` run as a coroutine on the other loop, awaited here"
WORK_FUNCTION = "`def noop()` called on the other loop, its result awaited here"
WORK_HANDLE = "a plain callback scheduled there, which schedules a plain callback back"

#: The baselines' case names.
RUN_COROUTINE_THREADSAFE = "run_coroutine_threadsafe + wrap_future"
CALL_WITH_FUTURE = "call_soon_threadsafe + Future + wrap_future"
LOOP_HANDLE = "loop.call_soon_threadsafe both ways"


def window(poll_max_ns: int) -> str:
    """An IOThread's polling window as case names state it: the exact setting."""
    if poll_max_ns == 0:
        return "poll-max-ns 0 (polling off)"
    if poll_max_ns == DEFAULT_POLL_MAX_NS:
        return f"poll-max-ns {poll_max_ns} (default)"
    return f"poll-max-ns {poll_max_ns}"


def io_run_name(poll_max_ns: int = DEFAULT_POLL_MAX_NS) -> str:
    return f"io.run, {window(poll_max_ns)}"


def io_handle_name(poll_max_ns: int = DEFAULT_POLL_MAX_NS) -> str:
    return f"io.call_soon_threadsafe, {window(poll_max_ns)}"


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


def handle_op(schedule: Callable[..., object], reply: Callable[..., object] | None = None) -> Op:
    """A handle round trip: *schedule* a callback there that schedules one back
    through *reply* (default: the caller's loop's own ``call_soon_threadsafe``)."""

    async def op() -> None:
        caller = asyncio.get_running_loop()
        done = caller.create_future()
        schedule(reply or caller.call_soon_threadsafe, done.set_result, None)
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
    """A coroutine: ``run_coroutine_threadsafe`` + ``wrap_future`` onto a plain loop thread."""

    @contextlib.asynccontextmanager
    async def case() -> AsyncIterator[Op]:
        with plain_loop_thread(loop_factory) as loop:

            async def op() -> None:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(noop(), loop))

            yield op

    return case


def baseline_call(loop_factory: LoopFactory) -> CaseFactory:
    """A plain function: ``call_soon_threadsafe`` onto a plain loop thread, the result
    through a ``concurrent.futures.Future`` and ``wrap_future``."""

    @contextlib.asynccontextmanager
    async def case() -> AsyncIterator[Op]:
        with plain_loop_thread(loop_factory) as loop:

            async def op() -> None:
                future: concurrent.futures.Future[None] = concurrent.futures.Future()

                def call() -> None:
                    noop_sync()
                    future.set_result(None)

                loop.call_soon_threadsafe(call)
                await asyncio.wrap_future(future)

            yield op

    return case


def io_case(
    loop_factory: LoopFactory,
    make_op: Callable[[IOThread], Op],
    implementation: Implementation,
    poll_max_ns: int = DEFAULT_POLL_MAX_NS,
) -> CaseFactory:
    """An IOThread of the group's loop kind and *implementation*'s inbox, and
    the op *make_op* builds on it."""

    @contextlib.asynccontextmanager
    async def case() -> AsyncIterator[Op]:
        # Started and stopped blocking the caller's loop, which runs nothing
        # else meanwhile; neither is timed.
        with iothread(loop_factory, implementation, poll_max_ns=poll_max_ns) as io:
            yield make_op(io)

    return case


def io_cases(
    name: Callable[[int], str],
    loop_factory: LoopFactory,
    make_op: Callable[[IOThread], Op],
    windows: tuple[int, ...] = (DEFAULT_POLL_MAX_NS,),
    *,
    gap_s: float = 0.0,
    inboxes: Sequence[Implementation] | None = None,
) -> list[Case]:
    """*make_op* on an IOThread at each of *windows*, for each implementation
    (of *inboxes*, else every one present), named ``name(window)`` and the
    implementation."""
    return [
        Case(
            with_implementation(name(ns), implementation.name),
            io_case(loop_factory, make_op, implementation, ns),
            gap_s=gap_s,
        )
        for implementation in (implementations() if inboxes is None else inboxes)
        for ns in windows
    ]


def both_sides_name(name: Callable[[int], str], poll_max_ns: int) -> str:
    """A case whose caller's loop polls too, with the IOThread's window."""
    return f"{name(poll_max_ns)}, main-loop poll-max-ns {poll_max_ns}"


def both_sides_cases(
    name: Callable[[int], str],
    loop_factory: LoopFactory,
    make_op: Callable[[IOThread, MainLoop], Op],
    poll_max_ns: int,
) -> list[Case]:
    """*make_op* on an IOThread at the window *poll_max_ns*, awaited on a
    caller's loop that polls with the same window (a main-loop installed on
    it), for each implementation (both sides' inboxes)."""

    def factory(implementation: Implementation) -> CaseFactory:
        @contextlib.asynccontextmanager
        async def case() -> AsyncIterator[Op]:
            with (
                iothread(loop_factory, implementation, poll_max_ns=poll_max_ns) as io,
                polling_main_loop(implementation, poll_max_ns) as main_loop,
            ):
                yield make_op(io, main_loop)

        return case

    return [
        Case(
            with_implementation(both_sides_name(name, poll_max_ns), implementation.name),
            factory(implementation),
        )
        for implementation in implementations()
    ]


def run_noop(io: IOThread) -> Op:
    return lambda: io.run(noop)


def run_noop_sync(io: IOThread) -> Op:
    return lambda: io.run(noop_sync)


def io_handle(io: IOThread) -> Op:
    return handle_op(io.call_soon_threadsafe)


def io_handle_both_sides(io: IOThread, main_loop: MainLoop) -> Op:
    """The handle round trip, back through the main-loop's inbox."""
    aio = main_loop.aio_context
    assert aio is not None, "installed with a window"
    return handle_op(io.call_soon_threadsafe, aio.call_soon_threadsafe)


def cases(loop_factory: LoopFactory) -> list[Group]:
    """``await``-style round trips of a coroutine and of a function; handle round trips."""
    return [
        Group(
            "await-coroutine",
            WORK_COROUTINE,
            [
                Case(RUN_COROUTINE_THREADSAFE, baseline_run(loop_factory)),
                *io_cases(io_run_name, loop_factory, run_noop),
            ],
        ),
        Group(
            "await-function",
            WORK_FUNCTION,
            [
                Case(CALL_WITH_FUTURE, baseline_call(loop_factory)),
                *io_cases(io_run_name, loop_factory, run_noop_sync),
            ],
        ),
        Group(
            "handle",
            WORK_HANDLE,
            [
                Case(LOOP_HANDLE, baseline_handle(loop_factory)),
                *io_cases(io_handle_name, loop_factory, io_handle),
            ],
        ),
    ]
