"""``python -m benchmarks [--quick] [--json FILE] [--only SUITE]``.

Runs every suite for every loop kind present (stdlib, uvloop) under every
thread placement (unpinned; all on one CPU; caller and workers on two CPUs),
prints one table with p50 / p99 / p99.9 latency, CPU per operation and the
ratios to each group's baseline, and optionally writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from . import bench_pool, polling, roundtrip
from ._harness import (
    Progress,
    Rate,
    Result,
    loop_kinds,
    placements,
    print_rates,
    print_table,
    run_group,
    write_json,
)

# Each suite module has NAME and cases(loop_factory) -> [(group, [Case, ...])],
# the first case of a group being its baseline; it may also have
# rates(kind, loop_factory, placement, quick) -> [Rate, ...],
# results(kind, loop_factory, placement, quick) -> [Result, ...] (latencies it
# measures its own way, printed in the table, first of a group = baseline), and
# report(results, quick) -> [str] (lines printed last, e.g. its verdicts).
SUITES: dict[str, ModuleType] = {m.NAME: m for m in (roundtrip, polling, bench_pool)}

# Samples per case: the full run's 20 000 leave 20 samples beyond p99.9; the
# quick run keeps everything (2 loops x 3 placements) under a minute on a
# 2-vCPU machine, at the price of a p99.9 that rests on one sample.
SAMPLES = {"quick": 800, "full": 20000}
# Rounds interleave the cases of a group, so drift hits them all alike.
ROUNDS = {"quick": 2, "full": 5}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (under 60 s)")
    parser.add_argument("--json", metavar="FILE", help="write the raw figures to FILE")
    parser.add_argument("--only", choices=sorted(SUITES), action="append", help="run a suite")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    suites = [SUITES[name] for name in (args.only or SUITES)]

    plan = [
        (f"{suite.NAME}/{group}/{kind}/{placement.name}", cases, factory, placement)
        for kind, factory in loop_kinds().items()
        for placement in placements()
        for suite in suites
        for group, cases in suite.cases(factory)
    ]
    hooks = sum(hasattr(s, "rates") + hasattr(s, "results") for s in suites)
    steps = len(loop_kinds()) * len(placements()) * hooks + sum(
        hasattr(s, "report") for s in suites
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
            for suite in suites:
                if hasattr(suite, "results"):
                    progress.step(f"{suite.NAME} results: {kind}/{placement.name}")
                    results += suite.results(kind, factory, placement, args.quick)
                if hasattr(suite, "rates"):
                    progress.step(f"{suite.NAME} rates: {kind}/{placement.name}")
                    rates += suite.rates(kind, factory, placement, args.quick)
    lines: list[str] = []
    for suite in suites:
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


if __name__ == "__main__":
    sys.exit(main())
