"""``python -m benchmarks [--quick|--smoke] [--table] [--json FILE|DIR/] [--plot DIR] ...``.

Runs every suite for every loop kind present (stdlib, uvloop) under every
thread placement (unpinned; all on one CPU; caller and workers on two CPUs),
the cases of each group interleaved in rounds, a progress bar meanwhile, and
prints the suites' verdicts and a summary: ours over each baseline, p50, p99
and CPU per operation.  ``--table`` prints every figure before them: one
table with p50 / p99 / p99.9 latency, CPU per operation and the ratios to
each group's baseline (over the whole run, and round by round), then the
rates, the derived figures (median and range of the rounds) and the
recordings over time.  ``--json`` writes all of it with the run's provenance
(commit, date, machine, software); ``python -m benchmarks.report`` prints
README's table from that file.  ``--plot DIR`` draws it as PNGs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from iothreads._cli import _positive_int

from . import _plots, _summary, bench_pool, polling, roundtrip, scaling
from ._figures import (
    Derived,
    Rate,
    Result,
    dumps,
    pool_rates,
    pool_results,
    print_derived,
    print_rates,
    print_table,
    run_json,
)
from ._harness import (
    MODES,
    Progress,
    Recording,
    implementations,
    implementations_note,
    loop_kinds,
    placements,
    run_group,
)
from ._provenance import file_name, provenance

#: Every suite, in the order they run; ``_harness`` says what a suite provides.
SUITES = (roundtrip, polling, bench_pool, scaling)


def _json_path(target: str, meta: dict[str, object]) -> Path:
    """*target*, or a file named after the date and commit in it when it is a directory."""
    path = Path(target)
    if target.endswith(("/", os.sep)) or path.is_dir():
        path = path / file_name(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _parser(prog: str, description: str, suites: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true", help="fewer samples (about a minute)")
    length.add_argument(
        "--smoke",
        action="store_true",
        help="a few dozen samples per case, in seconds: checks that everything runs "
        "(its figures mean nothing)",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="print every figure (the full table, rates, derived figures, recordings) "
        "before the summary",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="write the figures and the run's provenance (commit, date, machine) to FILE; "
        "a directory (e.g. benchmarks/results/) gets <date>-<commit>[-quick].json",
    )
    parser.add_argument(
        "--samples", action="store_true", help="store every latency sample in the JSON too"
    )
    parser.add_argument(
        "--plot",
        metavar="DIR",
        type=Path,
        help="write PNG figures to DIR: the summary, every group's latency percentiles, "
        "the polling window and the pool's thread count over time (needs the plot extra)",
    )
    parser.add_argument("--only", choices=sorted(suites), action="append", help="run a suite")
    parser.add_argument(
        "--placement",
        choices=[p.name for p in placements()],
        action="append",
        help="run under this placement only (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="K",
        help="run everything K times and pool the rounds (every figure then rests on K "
        "times the samples and every median on K times the rounds): for figures whose "
        "rounds swing more than the bound they are judged by",
    )
    return parser


def run_suites(
    suites: Sequence[ModuleType], argv: Sequence[str] | None, *, prog: str, description: str
) -> int:
    """Parse the command line (``--help`` lists it) and run *suites*.

    Every suite runs for every loop kind present and under every placement,
    a progress bar on stderr meanwhile; then the suites' reports are printed,
    and last the summary (``_summary``).  ``--table`` prints every figure
    before them, ``--json`` stores them, ``--plot`` draws them.  Returns the
    exit status.
    """
    by_name = {suite.NAME: suite for suite in suites}
    parser = _parser(prog, description, list(by_name))
    args = parser.parse_args(argv)
    plt = None
    if args.plot is not None:
        try:
            plt = _plots.require()  # now, not after the run measured for minutes
        except _plots.PlotUnavailable as exc:
            parser.error(str(exc))
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    chosen_placements = [p for p in placements() if p.name in (args.placement or [p.name])]
    chosen = [by_name[name] for name in (args.only or by_name)]
    started = time.perf_counter()
    meta = provenance(
        {
            "command": " ".join([prog, *(argv if argv is not None else sys.argv[1:])]),
            "mode": mode.name,
            "samples": mode.samples * args.repeat,
            "rounds": mode.rounds * args.repeat,
            "repeat": args.repeat,
            "suites": [suite.NAME for suite in chosen],
            "only": args.only or [],
            "loop_kinds": list(loop_kinds()),
            "implementations": [i.name for i in implementations()],
            "placements": {
                p.name: {
                    "caller": sorted(p.caller) if p.caller is not None else None,
                    "workers": sorted(p.workers) if p.workers is not None else None,
                }
                for p in chosen_placements
            },
        }
    )
    if meta["dirty"]:
        print("warning: uncommitted changes; the figures match no commit", file=sys.stderr)
    note = implementations_note()
    if note:
        print(note, file=sys.stderr)

    plan = [
        (f"{suite.NAME}/{group.name}/{kind}/{placement.name}", group, factory, placement)
        for kind, factory in loop_kinds().items()
        for placement in chosen_placements
        for suite in chosen
        for group in suite.cases(factory)
    ]
    hooks = sum(hasattr(s, "rates") + hasattr(s, "results") for s in chosen)
    hook_steps = len(loop_kinds()) * len(chosen_placements) * hooks
    steps = sum(hasattr(s, "report") + hasattr(s, "recordings") for s in chosen)
    progress = Progress(
        (sum(len(g.cases) for _, g, _, _ in plan) * mode.rounds + hook_steps) * args.repeat + steps
    )
    results: list[Result] = []
    rates: list[Rate] = []
    for k in range(args.repeat):
        run = dataclasses.replace(mode, first_round=k * mode.rounds)
        for name, group, factory, placement in plan:
            results += run_group(
                name, group, loop_factory=factory, placement=placement, mode=run, progress=progress
            )
        for kind, factory in loop_kinds().items():
            for placement in chosen_placements:
                for suite in chosen:
                    if hasattr(suite, "results"):
                        progress.step(f"{suite.NAME} results: {kind}/{placement.name}")
                        results += suite.results(kind, factory, placement, run)
                    if hasattr(suite, "rates"):
                        progress.step(f"{suite.NAME} rates: {kind}/{placement.name}")
                        rates += suite.rates(kind, factory, placement, run)
    results, rates = pool_results(results), pool_rates(rates)
    recordings: list[Recording] = []
    for suite in chosen:
        if hasattr(suite, "recordings"):
            progress.step(f"{suite.NAME} recordings")
            recordings += suite.recordings(mode)
    derived: list[Derived] = []
    for suite in chosen:
        if hasattr(suite, "derived"):
            derived += suite.derived(results)
    lines: list[str] = []
    for suite in chosen:
        if hasattr(suite, "report"):
            progress.step(f"{suite.NAME} report")
            lines += suite.report(results, derived, rates, mode)
    progress.close()
    meta["duration_s"] = round(time.perf_counter() - started, 1)
    if note:
        lines.append(note)

    kinds, where = list(loop_kinds()), [p.name for p in chosen_placements]
    implementation = implementations()[0].name
    summary_rows, summary = _summary.summarise(
        {(r.group, r.case): r.whole().figures() for r in results}, kinds, where, implementation
    )
    if args.table:
        print_table(results)
        if rates:
            print()
            print_rates(rates)
        if derived:
            print()
            print_derived(derived)
        for recording in recordings:
            print()
            print("\n".join(recording.lines()))
        print()
    if lines:
        print("\n".join(lines))
        print()
    print("\n".join(summary))
    if args.json:
        path = _json_path(args.json, meta)
        data = run_json(meta, results, rates, derived, lines, samples=args.samples)
        data["recordings"] = [recording.to_json() for recording in recordings]
        data["summary"] = summary
        path.write_text(dumps(data))
        print(f"figures written to {path}", file=sys.stderr)
    if plt is not None:
        written = _plots.write_all(
            plt,
            args.plot,
            summary=summary_rows,
            results=results,
            recordings=recordings,
            loop_kinds=kinds,
            placements=where,
        )
        print(f"{len(written)} figures written to {args.plot}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_suites(SUITES, argv, prog="python -m benchmarks", description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
