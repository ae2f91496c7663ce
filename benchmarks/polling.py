"""Adaptive polling and wake-up suppression, measured.

The mechanisms: (docs/design.md, "The polling window") and
(docs/design.md, "Wake-up suppression"); what these cases showed:
(docs/design.md, "Measurements").  Every IOThread case names its exact
window (poll-max-ns): the default 32768, a wide 262144, or 0 (polling off).

* echo: another *process* sends a byte over a socket and the IOThread echoes
  it (a reader callback), at each window vs a plain loop thread doing the
  same.  Here the producer holds none of our GIL, which is where a busy poll
  can pay: QEMU's case (a guest or a device writes, the iothread notices),
  and any socket peer;
* back-to-back round trips at each window vs plain asyncio: handle round
  trips, a plain function awaited (``io.run`` against
  ``call_soon_threadsafe`` + a future, the same work on both sides), and a
  coroutine awaited (``io.run`` against ``run_coroutine_threadsafe``);
* sparse traffic (200 us and 5 ms between requests), each window vs polling
  off: the window must shrink, so polling costs no CPU and no latency there;
* throughput of one producer thread pushing unbatched call_soon_threadsafe
  for a set time, against the same loop kind's own call_soon_threadsafe, in
  interleaved rounds;
* the CPU an idle IOThread burns, against an idle plain loop thread, in
  interleaved rounds;
* the window over time (``_window_timeline``, the ``recordings()`` hook): an
  IOThread at the wide window under back-to-back, then sparse, then no
  traffic, its window and poll hit rate sampled.

Every IOThread case runs once per inbox implementation (its name ends in
"native" or "python"); a sparse group is one implementation's windows
against its own polling off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._figures import Chunk, Rate, RateRound, Result
from ._harness import (
    Case,
    Group,
    Implementation,
    LoopFactory,
    Mode,
    Placement,
    implementations,
    in_turn,
    iothread,
    loop_kinds,
    with_implementation,
)
from ._window_timeline import WindowTimeline, record_window
from .roundtrip import (
    CALL_WITH_FUTURE,
    DEFAULT_POLL_MAX_NS,
    LOOP_HANDLE,
    RUN_COROUTINE_THREADSAFE,
    WORK_COROUTINE,
    WORK_FUNCTION,
    WORK_HANDLE,
    baseline_call,
    baseline_handle,
    baseline_run,
    both_sides_cases,
    io_cases,
    io_handle,
    io_handle_both_sides,
    io_handle_name,
    io_run_name,
    noop_sync,
    plain_loop_thread,
    run_noop,
    run_noop_sync,
    window,
)

NAME = "polling"

#: Gaps of the sparse-traffic cases: one a few times the default window
#: (32768 ns), one far beyond it, where the window must have shrunk to 0.
SPARSE_GAPS = {"200us": 200e-6, "5ms": 5e-3}
#: A window long enough for a Python-speed round trip on these machines,
#: 30-70 us (docs/design.md, "Measurements"): the window only grows when the
#: loop is woken within poll-max-ns, so with the default 32 us window and a
#: 35 us round trip it never engages.
WIDE_POLL_MAX_NS = 262144

#: The windows every polling group compares, polling off last.
WINDOWS = (DEFAULT_POLL_MAX_NS, WIDE_POLL_MAX_NS, 0)

#: The echo group's work and its baseline.
WORK_ECHO = "a reader callback echoing 1 byte to another process (socketpair)"
PLAIN_LOOP_THREAD = "plain loop thread"


def echo_name(poll_max_ns: int) -> str:
    """An IOThread case named by its window (the other properties at their defaults)."""
    return f"IOThread, {window(poll_max_ns)}"


def sparse_group(label: str, implementation: str) -> str:
    """The sparse group of one gap and one implementation (its own polling off as baseline)."""
    return f"sparse-{label}-{implementation}"


def cases(loop_factory: LoopFactory) -> list[Group]:
    groups = [
        Group(
            "b2b-handle",
            WORK_HANDLE,
            [
                Case(LOOP_HANDLE, baseline_handle(loop_factory)),
                *io_cases(io_handle_name, loop_factory, io_handle, WINDOWS),
                *both_sides_cases(
                    io_handle_name, loop_factory, io_handle_both_sides, WIDE_POLL_MAX_NS
                ),
            ],
        ),
        Group(
            "b2b-run-function",
            WORK_FUNCTION,
            [
                Case(CALL_WITH_FUTURE, baseline_call(loop_factory)),
                *io_cases(io_run_name, loop_factory, run_noop_sync, WINDOWS),
                *both_sides_cases(
                    io_run_name, loop_factory, lambda io, _: run_noop_sync(io), WIDE_POLL_MAX_NS
                ),
            ],
        ),
        Group(
            "b2b-run-coroutine",
            WORK_COROUTINE,
            [
                Case(RUN_COROUTINE_THREADSAFE, baseline_run(loop_factory)),
                *io_cases(io_run_name, loop_factory, run_noop, WINDOWS),
                *both_sides_cases(
                    io_run_name, loop_factory, lambda io, _: run_noop(io), WIDE_POLL_MAX_NS
                ),
            ],
        ),
    ]
    for label, gap in SPARSE_GAPS.items():
        for implementation in implementations():
            # Polling off first: the baseline every window is compared with.
            groups.append(
                Group(
                    sparse_group(label, implementation.name),
                    f"{WORK_FUNCTION}, {label} apart",
                    io_cases(
                        io_run_name,
                        loop_factory,
                        run_noop_sync,
                        tuple(sorted(WINDOWS)),
                        gap_s=gap,
                        inboxes=[implementation],
                    ),
                )
            )
    return groups


#: Echoes per case over the whole run.
ECHO_SAMPLES = {"smoke": 40, "quick": 600, "full": 10_000}


def results(kind: str, loop_factory: LoopFactory, placement: Placement, mode: Mode) -> list[Result]:
    """The echo group: latency as the far process sees it, CPU of both processes."""
    samples = ECHO_SAMPLES[mode.name]
    group = f"{NAME}/echo/{kind}/{placement.name}"

    def io_server(
        implementation: Implementation, poll_max_ns: int
    ) -> Callable[[contextlib.ExitStack], asyncio.AbstractEventLoop]:
        return lambda stack: _io_loop(stack, loop_factory, implementation, poll_max_ns)

    servers: dict[str, Callable[[contextlib.ExitStack], asyncio.AbstractEventLoop]] = {
        PLAIN_LOOP_THREAD: lambda stack: stack.enter_context(plain_loop_thread(loop_factory)),
        **{
            with_implementation(echo_name(ns), implementation.name): io_server(implementation, ns)
            for implementation in implementations()
            for ns in WINDOWS
        },
    }
    out = {name: Result(group, name, WORK_ECHO) for name in servers}
    with placement.applied():
        for turn in mode.turns():
            for name, server in in_turn(list(servers.items()), turn):
                with contextlib.ExitStack() as stack:
                    with placement.starting_workers():
                        loop = server(stack)
                    _echo_round(loop, out[name].new_round(), samples // mode.rounds)
    return list(out.values())


def _io_loop(
    stack: contextlib.ExitStack,
    loop_factory: LoopFactory,
    implementation: Implementation,
    poll_max_ns: int,
) -> asyncio.AbstractEventLoop:
    io = stack.enter_context(iothread(loop_factory, implementation, poll_max_ns=poll_max_ns))
    assert io.loop is not None
    return io.loop


def _echo_round(loop: asyncio.AbstractEventLoop, chunk: Chunk, samples: int) -> None:
    """Serve one echo client process from *loop*; add its figures to *chunk*."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)

        def echo() -> None:
            try:
                data = ours.recv(64)
            except BlockingIOError:
                return
            ours.send(data)

        _in_loop(loop, lambda: loop.add_reader(ours.fileno(), echo))
        cpu0 = time.process_time_ns()
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks._echo_client",
                str(theirs.fileno()),
                str(max(50, samples // 10)),
                str(samples),
            ],
            pass_fds=(theirs.fileno(),),
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        ours_cpu = time.process_time_ns() - cpu0
        _in_loop(loop, lambda: loop.remove_reader(ours.fileno()))
    figures = json.loads(child.stdout)
    chunk.samples_ns.extend(figures["samples_ns"])
    # Ours covers the client's warm-up and start-up too (the IOThread idles
    # then, without polling): the same small excess for every case.
    chunk.cpu_ns += ours_cpu + figures["cpu_ns"]
    chunk.ops += samples


def _in_loop(loop: asyncio.AbstractEventLoop, func: Callable[[], object]) -> None:
    """Run *func* in *loop*'s thread and wait for it."""
    done = threading.Event()

    def run() -> None:
        try:
            func()
        finally:
            done.set()

    loop.call_soon_threadsafe(run)
    done.wait()


@contextlib.contextmanager
def _cpu_and_wall() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    yield out
    out["cpu"] = time.process_time() - cpu0
    out["wall"] = time.perf_counter() - wall0


def _push(schedule: Callable[..., Any], seconds: float) -> tuple[int, dict[str, float]]:
    """Push unbatched callbacks from this (plain) thread for *seconds*; return
    how many, and the time from the first push until the last ran."""
    done = threading.Event()
    count = pushed = 0

    def bump() -> None:
        nonlocal count
        count += 1

    with _cpu_and_wall() as figures:
        deadline = time.perf_counter() + seconds
        while True:
            for _ in range(PUSH_CHUNK):
                schedule(bump)
            pushed += PUSH_CHUNK
            if time.perf_counter() >= deadline:
                break
        schedule(done.set)
        done.wait()
    assert count == pushed
    return pushed, figures


#: Throughput: how long one producer pushes in each round, the same for
#: every case.  Under the GIL producer and loop take turns of a switch
#: interval (5 ms): a round of a fixed count (200 000 pushes) lasted about
#: ten turns for the fast cases and over two hundred for the stdlib loop's
#: own, and a short round's first and last turns weigh more in its rate
#: (docs/design.md, "Measurements").
PUSH_S = {"smoke": 0.005, "quick": 0.1, "full": 0.5}
#: Pushes between two looks at the clock.
PUSH_CHUNK = 1000
#: Idle cost: seconds each case idles over the whole run; 5 s shows a steady
#: idle cost (no spin left running), quick runs are short.
IDLE_S = {"smoke": 0.1, "quick": 1.0, "full": 5.0}
LOOP_PUSH = "loop.call_soon_threadsafe"
WORK_PUSH = (
    "one plain thread pushing no-op callbacks, unbatched, for a set time, until the last ran"
)


def rates(kind: str, loop_factory: LoopFactory, placement: Placement, mode: Mode) -> list[Rate]:
    """Throughput of one producer, and the idle cost (unpinned only), in rounds."""
    seconds = PUSH_S[mode.name]

    def io_target(
        implementation: Implementation,
    ) -> Callable[[contextlib.ExitStack], Callable[..., object]]:
        return lambda stack: (
            stack.enter_context(iothread(loop_factory, implementation)).call_soon_threadsafe
        )

    targets: dict[str, Callable[[contextlib.ExitStack], Callable[..., object]]] = {
        LOOP_PUSH: lambda stack: (
            stack.enter_context(plain_loop_thread(loop_factory)).call_soon_threadsafe
        ),
        **{
            with_implementation(io_handle_name(), implementation.name): io_target(implementation)
            for implementation in implementations()
        },
    }
    group = f"{NAME}/throughput/{kind}/{placement.name}"
    out = [Rate(group, name, WORK_PUSH) for name in targets]
    with placement.applied():
        for turn in mode.turns():
            for target, rate in in_turn(list(zip(targets.values(), out, strict=True)), turn):
                with contextlib.ExitStack() as stack:
                    with placement.starting_workers():
                        schedule = target(stack)
                    n, f = _push(schedule, seconds)
                rate.rounds.append(RateRound(n / f["wall"], _pct(f)))
        if placement.caller is None:
            out += _idle_rates(kind, loop_factory, placement, mode)
    return out


def _idle_rates(
    kind: str, loop_factory: LoopFactory, placement: Placement, mode: Mode
) -> list[Rate]:
    """CPU of an idle plain loop thread and an idle IOThread, after the same traffic."""
    idle_s = IDLE_S[mode.name] / mode.rounds
    group = f"{NAME}/idle/{kind}/{placement.name}"
    work = f"none: idle {idle_s:g} s per round, after 200 sync no-ops run there"

    def plain(stack: contextlib.ExitStack) -> None:
        loop = stack.enter_context(plain_loop_thread(loop_factory))
        for _ in range(200):
            _in_loop(loop, noop_sync)

    def ours(implementation: Implementation) -> Callable[[contextlib.ExitStack], None]:
        def start(stack: contextlib.ExitStack) -> None:
            io = stack.enter_context(iothread(loop_factory, implementation))
            for _ in range(200):  # traffic first, so the window has grown
                io.run_sync(noop_sync)

        return start

    servers = {
        PLAIN_LOOP_THREAD: plain,
        **{
            with_implementation(echo_name(DEFAULT_POLL_MAX_NS), implementation.name): ours(
                implementation
            )
            for implementation in implementations()
        },
    }
    out = [Rate(group, name, work) for name in servers]
    for turn in mode.turns():
        for start, rate in in_turn(list(zip(servers.values(), out, strict=True)), turn):
            with contextlib.ExitStack() as stack:
                with placement.starting_workers():
                    start(stack)
                rate.rounds.append(RateRound(0.0, _idle_pct(idle_s)))
    return out


def _idle_pct(seconds: float) -> float:
    with _cpu_and_wall() as figures:
        time.sleep(seconds)
    return _pct(figures)


def _pct(figures: dict[str, float]) -> float:
    return 100 * figures["cpu"] / figures["wall"]


def recordings(mode: Mode) -> list[WindowTimeline]:
    """The window over time, on the first loop kind and inbox present, unpinned.

    At the wide window: with the default one a Python-speed round trip
    (30-70 us) never lets the window grow, so there would be nothing to see.
    """
    kind, factory = next(iter(loop_kinds().items()))
    return [record_window(kind, factory, implementations()[0], WIDE_POLL_MAX_NS, mode)]
