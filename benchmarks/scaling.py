"""Scaling over CPUs: N IOThreads against one, a multi-loop server against one loop.

Free-threaded CPython (PEP 703) runs Python code in several threads at once,
so IOThreads, each running its own loop, can serve requests in parallel; under
the GIL the same code runs, and the loops take turns.  This suite runs on
either build, says which it ran on, and compares, in the same run and in
interleaved rounds, N = the number of CPUs the process may use against one:

* iothreads: a caller loop keeps DEPTH requests in flight on each of N
  IOThreads (``await io.run(handle, line)``, the example server's handler: a
  JSON parse and a pure-Python checksum) for a fixed time; requests per
  second of N IOThreads against one IOThread;
* threads: the same handler called back to back in N plain threads against
  one, no loop and no hand-off: what the machine gives N threads of this
  build in the same rounds (other processes take CPUs too), the ceiling of
  the two other ratios;
* server: ``examples/multiloop_server.py --loops N`` (one IOThread per CPU,
  each accepting on the same port with SO_REUSEPORT) against the same
  program with ``--loops 1``, loaded over TCP by another process
  (``benchmarks._load_client``: many connections, several requests in flight
  on each): requests per second in the rates, latency as the client sees it
  in the table, with the CPU of both processes per request.

All run unpinned only: the one-CPU and split placements hold every IOThread
to a single CPU, where N loops cannot run in parallel on any build.  Every
IOThread runs at its default window (poll-max-ns 32768).  The report states
the build and checks the free-threaded build's targets (N = 2 IOThreads at
least 1.6x one; the multi-loop server at least 1.5x the single loop); on the
GIL build the figures are printed and not judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from iothreads import IOThread

from ._figures import Chunk, Derived, Rate, RateRound, Result, Spread, rate_ratio
from ._harness import Group, LoopFactory, Mode, Placement, in_turn

NAME = "scaling"

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "multiloop_server.py"

#: One request, the same in every group: 16 values hashed 300 times over,
#: about 0.4 ms of Python on these machines (3.11), so that the work, not the
#: hand-off, the socket or the load generator, is what the CPUs spend their
#: time on.
REQUEST = json.dumps({"id": 1, "values": list(range(16)), "rounds": 300})
WORK = "a request: `handle()` of examples/multiloop_server.py (JSON parse, 16x300 checksum)"

#: Requests each IOThread has in flight from the caller: enough that one is
#: always queued while another runs, so an IOThread never waits for the caller.
DEPTH = 4

#: Seconds per case and round: (warm-up, measured), by mode.
IOTHREADS_S = {"smoke": (0.05, 0.1), "quick": (0.2, 1.0), "full": (0.5, 3.0)}
SERVER_S = {"smoke": (0.1, 0.2), "quick": (0.5, 1.5), "full": (1.0, 4.0)}

#: The free-threaded build's targets: N = 2 over one, for each group.
TARGETS = {"iothreads": 1.6, "server": 1.5}

#: Bound on every wait for a child process (its start, its exit).
WAIT_S = 30.0


def cpus() -> int:
    """N: the CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def build() -> str:
    """Which CPython this is, and whether threads run Python in parallel here."""
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    kind = "free-threaded build" if free_threaded else "GIL build"
    return f"CPython {sys.version.split()[0]}, {kind}, GIL {'enabled' if gil else 'disabled'}"


def parallel() -> bool:
    """True where this run's threads can run Python at once (free-threaded, GIL off)."""
    return not getattr(sys, "_is_gil_enabled", lambda: True)()


def _example() -> ModuleType:
    """The example server as a module: its handler is the work of every group."""
    spec = importlib.util.spec_from_file_location("multiloop_server", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _server_names(n: int) -> tuple[str, str]:
    return "multiloop_server --loops 1", f"multiloop_server --loops {n}"


def cases(loop_factory: LoopFactory) -> list[Group]:
    """No latency groups of the harness's kind: both groups run their own way."""
    return []


# -- the server: another process loads it over TCP -----------------------------------


@dataclass
class _ServerRun:
    """The server group's rates, measured by ``results`` and handed to ``rates``
    (the harness calls both for a loop kind and placement, in that order)."""

    rates: list[Rate] = field(default_factory=list)
    #: rounds where a loop of the N-loop server got no connection at all
    idle_loops: list[str] = field(default_factory=list)


_server_runs: dict[tuple[str, str], _ServerRun] = {}


def results(kind: str, loop_factory: LoopFactory, placement: Placement, mode: Mode) -> list[Result]:
    """The server group: latency as the load process sees it (its rates kept for ``rates``)."""
    if not _unpinned(placement):
        return []
    n = cpus()
    group = f"{NAME}/server/{kind}/{placement.name}"
    work = f"{WORK}, over TCP from another process [{build()}]"
    names = _server_names(n)
    out = {name: Result(group, name, work) for name in names}
    run = _ServerRun([Rate(group, name, work) for name in names])
    warmup_s, duration_s = SERVER_S[mode.name]
    loop_arg = "uvloop" if kind == "uvloop" else "asyncio"
    for turn in mode.turns():
        for loops, name, rate in in_turn(list(zip((1, n), names, run.rates, strict=True)), turn):
            served, rate_round = _server_round(
                out[name].new_round(), loops, loop_arg, warmup_s, duration_s
            )
            rate.rounds.append(rate_round)
            if 0 in served:
                run.idle_loops.append(f"{group}: round {turn + 1}, {name}: per loop {served}")
    _server_runs[(kind, placement.name)] = run
    return list(out.values())


def _server_round(
    chunk: Chunk, loops: int, loop_arg: str, warmup_s: float, duration_s: float
) -> tuple[list[int], RateRound]:
    """Start the example server, load it from another process, stop it; its figures."""
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0", "--loops", str(loops), "--loop", loop_arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        port = _ready_port(server)
        cpu0, wall0 = _process_cpu_ns(server.pid), time.perf_counter()
        client = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks._load_client",
                str(port),
                REQUEST,
                str(warmup_s),
                str(duration_s),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=warmup_s + duration_s + WAIT_S,
            check=False,
        )
        wall = time.perf_counter() - wall0
        server_cpu = _process_cpu_ns(server.pid) - cpu0
        if client.returncode != 0:
            raise RuntimeError(f"the load client failed: {client.stderr.strip()}")
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=WAIT_S)
        if server.returncode != 0:
            raise RuntimeError(f"the server exited with {server.returncode}: {err.strip()}")
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=WAIT_S)
    figures = json.loads(client.stdout)
    chunk.samples_ns.extend(figures["samples_ns"])
    # Both processes' CPU over the client's whole life, over every reply in it.
    cpu = server_cpu + figures["cpu_ns"]
    chunk.cpu_ns += cpu
    chunk.ops += figures["replies"]
    match = re.search(r"served per loop: ([\d, ]+)", out)
    served = [int(s) for s in match.group(1).split(",")] if match else []
    return served, RateRound(figures["requests"] / figures["duration_s"], 100 * cpu / 1e9 / wall)


def _ready_port(server: subprocess.Popen[str]) -> int:
    """The port from the server's ready line (a bounded wait)."""
    assert server.stdout is not None
    readable, _, _ = select.select([server.stdout], [], [], WAIT_S)
    line = server.stdout.readline() if readable else ""
    match = re.search(r"listening on [^\s,]+:(\d+)", line)
    if match is None:
        server.kill()
        _, err = server.communicate(timeout=WAIT_S)
        raise RuntimeError(f"the example server did not start: {line!r} {err.strip()}")
    return int(match.group(1))


def _process_cpu_ns(pid: int) -> int:
    """User + system CPU of process *pid* so far (Linux's /proc; 0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The fields after the command name, which is in parentheses and may hold spaces.
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


# -- N IOThreads against one, in this process ----------------------------------------


def rates(kind: str, loop_factory: LoopFactory, placement: Placement, mode: Mode) -> list[Rate]:
    """N IOThreads against one, N plain threads against one; then the server's rates.

    The plain threads call the handler back to back, with no loop and no
    hand-off: what the machine gives N threads of this build at the moment,
    the ceiling for the IOThreads' ratio (other processes take CPUs too).
    """
    if not _unpinned(placement):
        return []
    n = cpus()
    handle = _example().handle
    line = REQUEST.encode()
    io_group = f"{NAME}/iothreads/{kind}/{placement.name}"
    io_work = f"{WORK}, {DEPTH} in flight per IOThread from one caller loop [{build()}]"
    io_rates = [Rate(io_group, name, io_work) for name in ("1 IOThread", f"{n} IOThreads")]
    threads_group = f"{NAME}/threads/{kind}/{placement.name}"
    threads_work = f"{WORK}, called back to back, no loop [{build()}]"
    thread_rates = [
        Rate(threads_group, name, threads_work) for name in ("1 plain thread", f"{n} plain threads")
    ]
    warmup_s, duration_s = IOTHREADS_S[mode.name]
    for turn in mode.turns():
        for count, rate in in_turn(list(zip((1, n), io_rates, strict=True)), turn):
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                rate.rounds.append(
                    runner.run(
                        _iothreads_round(count, loop_factory, handle, line, warmup_s, duration_s)
                    )
                )
        for count, rate in in_turn(list(zip((1, n), thread_rates, strict=True)), turn):
            rate.rounds.append(_threads_round(count, handle, line, warmup_s, duration_s))
    out = io_rates + thread_rates
    server = _server_runs.pop((kind, placement.name), None)
    if server is not None:
        _idle_loops.extend(server.idle_loops)
        out += server.rates
    return out


def _threads_round(
    n: int, handle: Callable[[bytes], bytes], line: bytes, warmup_s: float, duration_s: float
) -> RateRound:
    """*n* plain threads calling *handle* back to back; requests/s after a warm-up."""
    start = time.perf_counter() + warmup_s
    stop_at = start + duration_s
    done = [0] * n

    def call(i: int) -> None:
        clock = time.perf_counter
        while (now := clock()) < stop_at:
            handle(line)
            if now >= start:
                done[i] += 1

    threads = [threading.Thread(target=call, args=(i,), name=f"scaling{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start - time.perf_counter()))
    cpu0, t0 = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return RateRound(sum(done) / wall, 100 * cpu / wall)


async def _iothreads_round(
    n: int,
    loop_factory: LoopFactory,
    handle: Callable[[bytes], bytes],
    line: bytes,
    warmup_s: float,
    duration_s: float,
) -> RateRound:
    """Keep DEPTH requests in flight on each of *n* IOThreads; requests/s after a warm-up."""
    async with contextlib.AsyncExitStack() as stack:
        ios = [
            await stack.enter_async_context(IOThread(f"scaling{i}", loop_factory=loop_factory))
            for i in range(n)
        ]
        clock = time.perf_counter
        measuring = False
        done = 0
        stop_at = clock() + warmup_s

        async def requester(io: IOThread) -> None:
            nonlocal done
            while clock() < stop_at:
                await io.run(handle, line)
                if measuring:
                    done += 1

        warm = [requester(io) for io in ios for _ in range(DEPTH)]
        await asyncio.gather(*warm)
        measuring = True
        cpu0, t0 = time.process_time(), clock()
        stop_at = t0 + duration_s
        await asyncio.gather(*(requester(io) for io in ios for _ in range(DEPTH)))
        wall, cpu = clock() - t0, time.process_time() - cpu0
    return RateRound(done / wall, 100 * cpu / wall)


def _unpinned(placement: Placement) -> bool:
    return placement.caller is None and placement.workers is None


# -- the report ----------------------------------------------------------------------

#: The server's rounds where a loop got no connection, gathered by ``rates``
#: for ``report``.
_idle_loops: list[str] = []


def report(
    all_results: Sequence[Result],
    all_derived: Sequence[Derived],
    all_rates: Sequence[Rate],
    mode: Mode,
) -> list[str]:
    """The build this ran on, N, and each group's ratio (against its target, if any).

    With each ratio, the work done per CPU-second (N over one: 1.0 means the
    N threads lose nothing to each other) and the CPU the process got: on a
    shared machine N threads may get less than N CPUs, and the plain
    threads' ratio shows what they got in the same rounds.
    """
    n = cpus()
    lines = [f"{NAME}: ran on {build()}; N = {n} CPUs available"]
    if n < 2:
        lines.append(f"{NAME}: one CPU only: N loops against one shows nothing here")
    # Each group's rates come in pairs, one against N (pooled over a --repeat's runs).
    measured = [r for r in all_rates if r.group.startswith(f"{NAME}/")]
    for base, rate in zip(measured[::2], measured[1::2], strict=True):
        x = rate_ratio(rate, base)
        assert x is not None
        assert base.group == rate.group
        per_cpu = Spread.of_ratios(_per_cpu(rate), _per_cpu(base))
        target = TARGETS.get(rate.group.split("/")[1])
        if target is None:
            verdict = "the machine's ceiling for this build, no target"
        elif parallel():
            verdict = f"target >= {target}x: {'met' if x.median >= target else 'NOT met'}"
        else:
            verdict = f"no target under the GIL (the free-threaded build's: >= {target}x)"
        lines.append(
            f"{rate.group}: {rate.case} / {base.case} = {x.median:.2f}x (median of the rounds; "
            f"range {x.range_text()}); {verdict}; work per CPU-second {per_cpu.text()}x; "
            f"process CPU {rate.cpu_pct.median:.0f} % against {base.cpu_pct.median:.0f} %"
        )
    lines += [f"{NAME}: a loop got no connection: {text}" for text in _idle_loops]
    _idle_loops.clear()
    return lines


def _per_cpu(rate: Rate) -> list[float]:
    """Requests per CPU-second of each round (``inf`` for a round that took no CPU)."""
    return [r.ops_per_s / (r.cpu_pct / 100) if r.cpu_pct else math.inf for r in rate.rounds]
