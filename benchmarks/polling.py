"""Adaptive polling and wake-up suppression, measured.

The mechanisms: (docs/design.md, "The polling window") and
(docs/design.md, "Wake-up suppression"); what these cases showed:
(docs/design.md, "Measurements").

* echo: another *process* sends a byte over a socket and the IOThread echoes
  it, polling on vs off vs a plain loop thread.  Here the producer holds none
  of our GIL, which is where a busy poll can pay: QEMU's case (a guest or a
  device writes, the iothread notices), and any socket peer;

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
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from iothreads import IOThread

from ._harness import Case, CaseFactory, LoopFactory, Op, Placement, Rate, Result
from .roundtrip import (
    DEFAULT_POLL_MAX_NS,
    baseline_handle,
    baseline_run,
    io_case,
    io_handle,
    noop_sync,
    plain_loop_thread,
    run_noop_sync,
)

NAME = "polling"

#: Gaps of the sparse-traffic cases: one a few times the default window
#: (32768 ns), one far beyond it, where the window must have shrunk to 0.
SPARSE_GAPS = {"200us": 200e-6, "5ms": 5e-3}
#: "polling on" at the IOThread's default window (DEFAULT_POLL_MAX_NS), and at a
#: window long enough for a Python-speed round trip on these machines, 30-70 us
#: (docs/design.md, "Measurements"): the window only grows when the loop is woken
#: within poll-max-ns, so with a 32 us window and a 35 us round trip it
#: never engages.
WIDE_POLL_MAX_NS = 262144


def cases(loop_factory: LoopFactory) -> list[tuple[str, list[Case]]]:
    def on(make_op: Callable[[IOThread], Op], poll_max_ns: int) -> CaseFactory:
        return io_case(loop_factory, make_op, poll_max_ns)

    groups = [
        (
            "b2b-handle",
            [
                Case("loop.call_soon_threadsafe", baseline_handle(loop_factory)),
                Case("io handle, polling on", on(io_handle, DEFAULT_POLL_MAX_NS)),
                Case("io handle, polling 262us", on(io_handle, WIDE_POLL_MAX_NS)),
                Case("io handle, polling off", on(io_handle, 0)),
            ],
        ),
        (
            "b2b-run",
            [
                Case("run_coroutine_threadsafe", baseline_run(loop_factory)),
                Case("io.run, polling on", on(run_noop_sync, DEFAULT_POLL_MAX_NS)),
                Case("io.run, polling 262us", on(run_noop_sync, WIDE_POLL_MAX_NS)),
                Case("io.run, polling off", on(run_noop_sync, 0)),
            ],
        ),
    ]
    for label, gap in SPARSE_GAPS.items():
        groups.append(
            (
                f"sparse-{label}",
                [
                    Case("io.run, polling off", on(run_noop_sync, 0), gap_s=gap),
                    Case("io.run, polling on", on(run_noop_sync, DEFAULT_POLL_MAX_NS), gap_s=gap),
                    Case("io.run, polling 262us", on(run_noop_sync, WIDE_POLL_MAX_NS), gap_s=gap),
                ],
            )
        )
    return groups


def results(
    kind: str, loop_factory: LoopFactory, placement: Placement, quick: bool
) -> list[Result]:
    """The echo group: latency as the far process sees it, CPU of both processes."""
    samples, rounds = (600, 2) if quick else (10_000, 5)
    group = f"{NAME}/echo/{kind}/{placement.name}"
    servers: dict[str, Callable[[contextlib.ExitStack], asyncio.AbstractEventLoop]] = {
        "plain loop thread": lambda stack: stack.enter_context(plain_loop_thread(loop_factory)),
        "IOThread, polling off": lambda stack: _io_loop(stack, loop_factory, 0),
        "IOThread, polling on": lambda stack: _io_loop(stack, loop_factory, DEFAULT_POLL_MAX_NS),
        "IOThread, polling 262us": lambda stack: _io_loop(stack, loop_factory, WIDE_POLL_MAX_NS),
    }
    out = {name: Result(group, name) for name in servers}
    with placement.applied():
        for _ in range(rounds):
            for name, server in servers.items():
                with contextlib.ExitStack() as stack:
                    with placement.starting_workers():
                        loop = server(stack)
                    _echo_round(loop, out[name], samples // rounds)
    return list(out.values())


def _io_loop(
    stack: contextlib.ExitStack, loop_factory: LoopFactory, poll_max_ns: int
) -> asyncio.AbstractEventLoop:
    io = stack.enter_context(IOThread("bench", loop_factory=loop_factory, poll_max_ns=poll_max_ns))
    assert io.loop is not None
    return io.loop


def _echo_round(loop: asyncio.AbstractEventLoop, result: Result, samples: int) -> None:
    """Serve one echo client process from *loop*; add its figures to *result*."""
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
    result.samples_ns += figures["samples_ns"]
    # Ours covers the client's warm-up and start-up too (the IOThread idles
    # then, without polling): the same small excess for every case.
    result.cpu_ns += ours_cpu + figures["cpu_ns"]
    result.ops += samples


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


def rates(kind: str, loop_factory: LoopFactory, placement: Placement, quick: bool) -> list[Rate]:
    """Throughput of one producer, and the idle cost (unpinned only)."""
    n = 50_000 if quick else 1_000_000
    group = f"{NAME}/throughput/{kind}/{placement.name}"
    targets: dict[str, Callable[[contextlib.ExitStack], Callable[..., object]]] = {
        "loop.call_soon_threadsafe": lambda stack: (
            stack.enter_context(plain_loop_thread(loop_factory)).call_soon_threadsafe
        ),
        "io.call_soon_threadsafe": lambda stack: (
            stack.enter_context(IOThread("bench", loop_factory=loop_factory)).call_soon_threadsafe
        ),
    }
    out = []
    with placement.applied():
        for name, target in targets.items():
            with contextlib.ExitStack() as stack:
                with placement.starting_workers():
                    schedule = target(stack)
                f = _push(schedule, n)
            out.append(Rate(group, name, n / f["wall"], _pct(f)))
        if placement.caller is None:
            # 5 s shows a steady idle cost (no spin left running); quick runs are short.
            idle_s = 1.0 if quick else 5.0
            group = f"{NAME}/idle-{idle_s:g}s/{kind}/{placement.name}"
            with plain_loop_thread(loop_factory):
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
