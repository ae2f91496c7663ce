"""What every benchmark shares: cases, placement, sampling, the table, the runner.

A *case* is an async context manager factory: entered on the caller's loop,
it sets up what it measures (an IOThread, a plain loop thread, a pool...) and
yields ``op``, a coroutine function doing one operation.  A *group* is a
baseline case followed by the cases compared with it.

Fairness rules.  Thread placement changes results about 3x, and absolute
times on a shared 2-vCPU host swing 3-10x between hours, so only ratios
from one run mean anything (docs/design.md, "Measurements"):

* every case of a group runs in the same process, under the same thread
  placement, interleaved in rounds (baseline chunk, case chunk, ... repeat),
  so drift hits all of them alike;
* each chunk starts with a warm-up that is not sampled;
* latency is sampled per operation with ``perf_counter_ns``; CPU per operation
  is the process's CPU time (all threads) over the chunk, divided by the ops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

Op = Callable[[], Awaitable[object]]
CaseFactory = Callable[[], contextlib.AbstractAsyncContextManager[Op]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@dataclass(frozen=True)
class Case:
    name: str
    factory: CaseFactory
    #: pause before each operation (sparse traffic); not part of the latency,
    #: but the CPU any thread burns meanwhile counts towards CPU per op
    gap_s: float = 0.0


@dataclass
class Result:
    """The samples of one case in one group."""

    group: str
    case: str
    samples_ns: list[int] = field(default_factory=list)
    cpu_ns: int = 0
    ops: int = 0

    def percentile(self, q: float) -> float:
        """The q-th percentile in microseconds (nearest rank)."""
        ordered = sorted(self.samples_ns)
        if not ordered:
            return float("nan")
        rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[rank] / 1000

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu_ns / self.ops / 1000 if self.ops else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "case": self.case,
            "ops": self.ops,
            "p50_us": self.percentile(50),
            "p99_us": self.percentile(99),
            "p999_us": self.percentile(99.9),
            "cpu_us_per_op": self.cpu_us_per_op,
        }


@dataclass(frozen=True)
class Placement:
    """Which CPUs the caller and the threads a case starts may run on.

    Threads inherit the affinity of the thread that starts them, so a case's
    threads are placed by pinning the caller to the worker CPUs while the case
    sets up (``starting_workers``), and back to the caller CPUs to measure.
    """

    name: str
    caller: frozenset[int] | None  # None: every CPU the process may use
    workers: frozenset[int] | None

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Pin the calling thread (and what it starts) to the caller CPUs."""
        with _pinned(self.caller):
            yield

    @contextlib.contextmanager
    def starting_workers(self) -> Iterator[None]:
        """Threads started inside run on the worker CPUs."""
        with _pinned(self.workers):
            yield


@contextlib.contextmanager
def _pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def placements() -> list[Placement]:
    """Unpinned; everything on one CPU; caller and workers on two different CPUs.

    The split placement is QEMU's deployment (an iothread on a CPU of its
    own) and the one where a wake-up costs most: a cross-CPU wake of an idle
    vCPU.  Placement changes results about 3x, so every group runs under each.
    """
    result = [Placement("unpinned", None, None)]
    if hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        result.append(Placement("one-cpu", frozenset(allowed[:1]), frozenset(allowed[:1])))
        if len(allowed) > 1:
            result.append(Placement("split", frozenset(allowed[:1]), frozenset(allowed[1:2])))
    return result


def loop_kinds() -> dict[str, LoopFactory]:
    """The loop implementations present: stdlib always, uvloop when installed."""
    kinds: dict[str, LoopFactory] = {"stdlib": asyncio.SelectorEventLoop}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        kinds["uvloop"] = uvloop.new_event_loop
    return kinds


class Progress:
    """One line on stderr, rewritten in place: what runs now, and how far along."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {label}"
        if self._tty:
            sys.stderr.write(f"\r\033[K{line}")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


async def run_chunk(op: Op, result: Result, samples: int, warmup: int, gap_s: float) -> None:
    """Warm up, then time *samples* operations one by one, *gap_s* apart."""
    for _ in range(warmup):
        await op()
    clock = time.perf_counter_ns
    out = result.samples_ns
    cpu0 = time.process_time_ns()
    for _ in range(samples):
        if gap_s:
            time.sleep(gap_s)  # the caller's loop has nothing else to do meanwhile
        t0 = clock()
        await op()
        out.append(clock() - t0)
    result.cpu_ns += time.process_time_ns() - cpu0
    result.ops += samples


async def _run_group(
    group: str,
    cases: Sequence[Case],
    placement: Placement,
    samples: int,
    rounds: int,
    progress: Progress,
) -> list[Result]:
    results = [Result(group, case.name) for case in cases]
    per_round = max(1, samples // rounds)
    for r in range(rounds):
        for case, result in zip(cases, results, strict=True):
            progress.step(f"{group}: {case.name} (round {r + 1}/{rounds})")
            # Sparse cases are slow per op: sample fewer, and warm up less.
            n = per_round if not case.gap_s else max(20, per_round // 10)
            with placement.starting_workers():
                setup = case.factory()
                op = await setup.__aenter__()
            try:
                await run_chunk(op, result, n, max(20, n // 10), case.gap_s)
            finally:
                with placement.starting_workers():
                    await setup.__aexit__(None, None, None)
    return results


def run_group(
    group: str,
    cases: Sequence[Case],
    *,
    loop_factory: LoopFactory,
    placement: Placement,
    samples: int,
    rounds: int,
    progress: Progress,
) -> list[Result]:
    """Run one group on a caller loop of *loop_factory*, under *placement*."""
    with placement.applied(), asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_run_group(group, cases, placement, samples, rounds, progress))


def print_table(results: Iterable[Result], file: Any = None) -> None:
    """Print results grouped, each case with its ratio to its group's first case."""
    file = file or sys.stdout
    header = (
        f"{'group':<34} {'case':<30} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} "
        f"{'CPU us/op':>9}  {'p50 x':>6} {'p99 x':>6} {'CPU x':>6}"
    )
    print(header, file=file)
    print("-" * len(header), file=file)
    baseline: dict[str, Result] = {}
    for r in results:
        base = baseline.setdefault(r.group, r)
        ratios = (
            r.percentile(50) / base.percentile(50),
            r.percentile(99) / base.percentile(99),
            r.cpu_us_per_op / base.cpu_us_per_op,
        )
        marks = "  (baseline)" if r is base else "".join(f" {x:6.2f}" for x in ratios)
        print(
            f"{r.group:<34} {r.case:<30} {r.percentile(50):8.1f} {r.percentile(99):8.1f} "
            f"{r.percentile(99.9):9.1f} {r.cpu_us_per_op:9.1f} {marks}",
            file=file,
        )


@dataclass(frozen=True)
class Rate:
    """A throughput or an idle-cost figure (not a per-operation latency)."""

    group: str
    case: str
    ops_per_s: float
    cpu_pct: float  # of one core, all threads of the process


def print_rates(rates: Sequence[Rate], file: Any = None) -> None:
    """Print rates grouped, each with its ratio to its group's first row."""
    file = file or sys.stdout
    header = f"{'group':<34} {'case':<30} {'ops/s':>12} {'CPU %':>7}  {'rate x':>6}"
    print(header, file=file)
    print("-" * len(header), file=file)
    baseline: dict[str, Rate] = {}
    for r in rates:
        base = baseline.setdefault(r.group, r)
        ratio = (
            "  (baseline)"
            if r is base
            else f" {r.ops_per_s / base.ops_per_s:6.2f}"
            if base.ops_per_s
            else ""
        )
        print(f"{r.group:<34} {r.case:<30} {r.ops_per_s:12.0f} {r.cpu_pct:7.2f} {ratio}", file=file)


def write_json(path: str, results: Iterable[Result], rates: Iterable[Rate] = ()) -> None:
    """Write the summaries, the raw samples and the rates to *path*."""
    data = [{**r.summary(), "samples_ns": r.samples_ns} for r in results]
    with open(path, "w") as f:
        json.dump(
            {
                "python": sys.version,
                "results": data,
                "rates": [vars(r) for r in rates],
            },
            f,
        )


# -- running suites from the command line ---------------------------------------

# A suite is a module with NAME and cases(loop_factory) -> [(group, [Case, ...])],
# the first case of a group being its baseline; it may also have
# rates(kind, loop_factory, placement, quick) -> [Rate, ...],
# results(kind, loop_factory, placement, quick) -> [Result, ...] (latencies it
# measures its own way, printed in the table, first of a group = baseline), and
# report(results, quick) -> [str] (lines printed last, e.g. its verdicts).
# The runner lives here, below every suite, so that a suite can be run alone
# (``python -m benchmarks.bench_pool``) without importing ``__main__``.

# Samples per case: the full run's 20 000 leave 20 samples beyond p99.9; the
# quick run keeps everything (2 loops x 3 placements) under a minute on a
# 2-vCPU machine, at the price of a p99.9 that rests on one sample.
SAMPLES = {"quick": 800, "full": 20000}
# Rounds interleave the cases of a group, so drift hits them all alike.
ROUNDS = {"quick": 2, "full": 5}


def run_suites(
    suites: Sequence[ModuleType], argv: Sequence[str] | None, *, prog: str, description: str
) -> int:
    """Parse ``[--quick] [--json FILE] [--only SUITE]`` and run *suites*.

    Every suite runs for every loop kind present and under every placement;
    one table of latencies is printed, then the rates, then the suites'
    reports.  Returns the exit status.
    """
    by_name = {suite.NAME: suite for suite in suites}
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="fewer samples (under 60 s)")
    parser.add_argument("--json", metavar="FILE", help="write the raw figures to FILE")
    parser.add_argument("--only", choices=sorted(by_name), action="append", help="run a suite")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    chosen = [by_name[name] for name in (args.only or by_name)]

    plan = [
        (f"{suite.NAME}/{group}/{kind}/{placement.name}", cases, factory, placement)
        for kind, factory in loop_kinds().items()
        for placement in placements()
        for suite in chosen
        for group, cases in suite.cases(factory)
    ]
    hooks = sum(hasattr(s, "rates") + hasattr(s, "results") for s in chosen)
    steps = len(loop_kinds()) * len(placements()) * hooks + sum(
        hasattr(s, "report") for s in chosen
    )
    progress = Progress(sum(len(cases) for _, cases, _, _ in plan) * ROUNDS[mode] + steps)
    results: list[Result] = []
    for name, cases, factory, placement in plan:
        results += run_group(
            name,
            cases,
            loop_factory=factory,
            placement=placement,
            samples=SAMPLES[mode],
            rounds=ROUNDS[mode],
            progress=progress,
        )
    rates: list[Rate] = []
    for kind, factory in loop_kinds().items():
        for placement in placements():
            for suite in chosen:
                if hasattr(suite, "results"):
                    progress.step(f"{suite.NAME} results: {kind}/{placement.name}")
                    results += suite.results(kind, factory, placement, args.quick)
                if hasattr(suite, "rates"):
                    progress.step(f"{suite.NAME} rates: {kind}/{placement.name}")
                    rates += suite.rates(kind, factory, placement, args.quick)
    lines: list[str] = []
    for suite in chosen:
        if hasattr(suite, "report"):
            progress.step(f"{suite.NAME} report")
            lines += suite.report(results, args.quick)
    progress.close()
    print_table(results)
    if rates:
        print()
        print_rates(rates)
    if lines:
        print()
        print("\n".join(lines))
    if args.json:
        write_json(args.json, results, rates)
    return 0


__all__ = [
    "Case",
    "Placement",
    "Progress",
    "Rate",
    "Result",
    "loop_kinds",
    "placements",
    "print_rates",
    "print_table",
    "run_chunk",
    "run_group",
    "run_suites",
    "write_json",
]
