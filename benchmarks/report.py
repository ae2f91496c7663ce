"""README's benchmark table, printed from one stored run.

``python -m benchmarks.report FILE.json`` prints, as markdown, the table of
README's "Benchmarks" section from a JSON written by ``python -m benchmarks
--json FILE``: the run's provenance (commit, date, machine, software), then
one row per figure, labelled with the exact settings that produce it (the
work, the IOThread's window), one column per loop kind and placement.  Every
cell is a figure the run itself printed and stored (a ratio of the same
group, a median of rounds, a derived figure); nothing is computed here
beyond picking and formatting.

``python -m benchmarks.report FILE.json --check README.md`` compares the
block README holds between the markers this prints with a fresh print, and
exits 1 when they differ (or README has none): the README's figures are
then not this file's.

``python -m benchmarks.report FILE.json --summary`` prints the summary the
run ended with (``_summary``), computed again from the file's figures.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _summary, bench_pool, polling
from ._harness import with_implementation
from .bench_pool import ABOVE_FLOOR, BURST_KINDS, FLOOR_OVER_BEST, OURS_OVER_BEST
from .polling import WIDE_POLL_MAX_NS, echo_name, sparse_group
from .roundtrip import DEFAULT_POLL_MAX_NS, both_sides_name, io_handle_name, io_run_name, window

BEGIN = "<!-- python -m benchmarks.report {source}: its output down to the end marker -->"
END = "<!-- end of python -m benchmarks.report output -->"
#: A figure the file does not hold (a partial run, or a loop kind not installed).
MISSING = "n/a"
PLACEMENT_TITLES = {"unpinned": "unpinned", "one-cpu": "one CPU", "split": "split"}
#: How a row names the inbox implementation its IOThread cases ran.
IMPLEMENTATION_TITLES = {"native": "native core", "python": "pure-Python inbox"}


class Run:
    """A stored run's figures, looked up by group (without loop and placement) and name."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.meta: dict[str, Any] = data["meta"]
        self.results = {(r["group"], r["case"]): r for r in data["results"]}
        self.rates = {(r["group"], r["case"]): r for r in data["rates"]}
        self.derived = {(d["group"], d["name"]): d for d in data["derived"]}
        self.missing: list[str] = []

    def get(self, table: dict[tuple[str, str], Any], group: str, name: str) -> Any:
        found = table.get((group, name))
        if found is None:
            self.missing.append(f"{group}: {name}")
        return found


#: A cell: the run, the group's full name ("suite/group/loop/placement"), a name in it.
Cell = Callable[[Run, str, str], str]


def _spread(spread: dict[str, float]) -> str:
    """A stored Spread as ``median (low-high)``, as the run printed it."""
    if spread["min"] == spread["max"]:
        return f"{spread['median']:.2f}"
    return f"{spread['median']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"


def p50(run: Run, group: str, case: str) -> str:
    """The per-round p50 ratios: median (range)."""
    r = run.get(run.results, group, case)
    return MISSING if r is None or r["x"] is None else _spread(r["x"]["p50_rounds"])


def p50_p999(run: Run, group: str, case: str) -> str:
    """The p50 and p99.9 ratios over all rounds pooled (a round holds too few for p99.9)."""
    r = run.get(run.results, group, case)
    if r is None or r["x"] is None:
        return MISSING
    return f"{r['x']['p50']:.2f} / {r['x']['p999']:.2f}"


def cpu(run: Run, group: str, case: str) -> str:
    """The ratio of CPU per operation over all rounds pooled."""
    r = run.get(run.results, group, case)
    return MISSING if r is None or r["x"] is None else f"{r['x']['cpu']:.2f}"


def rate(run: Run, group: str, case: str) -> str:
    """The per-round ratio of operations per second: median (range)."""
    r = run.get(run.rates, group, case)
    return MISSING if r is None or r["x"] is None else _spread(r["x"])


def derived(run: Run, group: str, name: str) -> str:
    """A derived figure: median (range) of the rounds."""
    d = run.get(run.derived, group, name)
    return MISSING if d is None else _spread(d["value"])


@dataclass(frozen=True)
class Row:
    label: str
    #: suite/group, without loop kind and placement
    group: str
    name: str
    cell: Cell


def _io_rows(implementation: str) -> list[Row]:
    """The rows of IOThread cases, for the inbox *implementation*."""
    inbox = IMPLEMENTATION_TITLES.get(implementation, implementation)

    def io(label: str, group: str, name: str, cell: Cell) -> Row:
        return Row(
            label.format(inbox=inbox), group, with_implementation(name, implementation), cell
        )

    windows = (DEFAULT_POLL_MAX_NS, WIDE_POLL_MAX_NS, 0)
    rows = [
        io(
            "`await io.run(noop)`, `noop` a coroutine, vs `run_coroutine_threadsafe` + "
            f"`wrap_future`; IOThread {window(DEFAULT_POLL_MAX_NS)}, {{inbox}}; p50",
            "roundtrip/await-coroutine",
            io_run_name(),
            p50,
        ),
        io(
            "`await io.run(noop)`, `noop` a plain function, vs `call_soon_threadsafe` + a "
            f"`Future` + `wrap_future`; IOThread {window(DEFAULT_POLL_MAX_NS)}, {{inbox}}; p50",
            "roundtrip/await-function",
            io_run_name(),
            p50,
        ),
    ]
    rows.append(
        io(
            "`await io.run(noop)` back to back, `noop` a coroutine, vs "
            f"`run_coroutine_threadsafe` + `wrap_future`; IOThread {window(WIDE_POLL_MAX_NS)}, "
            "{inbox}; p50",
            "polling/b2b-run-coroutine",
            io_run_name(WIDE_POLL_MAX_NS),
            p50,
        )
    )
    rows.append(
        io(
            "`await io.run(noop)` back to back, `noop` a coroutine, vs "
            f"`run_coroutine_threadsafe` + `wrap_future`; IOThread {window(WIDE_POLL_MAX_NS)} "
            "and the caller's loop polling too (a main-loop installed with the same window), "
            "{inbox} on both; p50",
            "polling/b2b-run-coroutine",
            both_sides_name(io_run_name, WIDE_POLL_MAX_NS),
            p50,
        )
    )
    rows += [
        io(
            "handle round trip (a callback there, which schedules one back) vs the loop's own "
            f"`call_soon_threadsafe` both ways; IOThread {window(ns)}, {{inbox}}; p50",
            "polling/b2b-handle",
            io_handle_name(ns),
            p50,
        )
        for ns in windows
    ]
    rows.append(
        io(
            "handle round trip vs the loop's own `call_soon_threadsafe` both ways; IOThread "
            f"{window(WIDE_POLL_MAX_NS)} and the caller's loop polling too (a main-loop "
            "installed with the same window; the callback back through its inbox), "
            "{inbox} on both; p50",
            "polling/b2b-handle",
            both_sides_name(io_handle_name, WIDE_POLL_MAX_NS),
            p50,
        )
    )
    rows += [
        io(
            "echo: a reader callback answering another process over a socketpair, vs a plain "
            f"loop thread; IOThread {window(ns)}, {{inbox}}; p50 as the other process sees it",
            "polling/echo",
            echo_name(ns),
            p50,
        )
        for ns in windows
    ]
    rows += [
        io(
            f"sparse traffic (`io.run` of a function, {gap} apart), CPU per request; "
            f"IOThread {window(ns)} vs {window(0)}, both {{inbox}}; all rounds pooled",
            f"polling/{sparse_group(gap, implementation)}",
            io_run_name(ns),
            cpu,
        )
        for gap in polling.SPARSE_GAPS
        for ns in windows[:2]
    ]
    rows.append(
        io(
            "one plain thread's unbatched `io.call_soon_threadsafe` throughput vs the loop's "
            f"own; IOThread {window(DEFAULT_POLL_MAX_NS)}, {{inbox}}; operations per second",
            "polling/throughput",
            io_handle_name(),
            rate,
        )
    )
    return rows


def rows(implementations: Sequence[str]) -> list[Row]:
    """The README table's rows, in order: IOThread rows for each of *implementations*."""
    dispatch = "`await pool.run(noop)` ({what}) vs the best of `run_in_executor` (TPE), "
    dispatch += "`asyncio.to_thread`, anyio (the one with the lowest p50 over the run), p50"
    return [
        *(row for implementation in implementations for row in _io_rows(implementation)),
        Row(dispatch.format(what="whole round trip"), "pool/dispatch", OURS_OVER_BEST, derived),
        Row(
            "two bare wake-ups (a `threading.Lock` handed to a thread and back) vs the same "
            "best baseline, p50",
            "pool/dispatch",
            FLOOR_OVER_BEST,
            derived,
        ),
        Row(
            dispatch.format(what="only the time above those two wake-ups"),
            "pool/dispatch",
            ABOVE_FLOOR,
            derived,
        ),
        *(
            Row(
                f"a burst of {bench_pool.BURST} on a {kind.new} vs on a {kind.warm} "
                "(same surroundings), p50 / p99.9, all rounds pooled",
                f"pool/{kind.key}",
                kind.new,
                p50_p999,
            )
            for kind in BURST_KINDS
        ),
    ]


def _columns(meta: dict[str, Any]) -> list[tuple[str, str]]:
    settings = meta["settings"]
    return [(kind, p) for kind in settings["loop_kinds"] for p in settings["placements"]]


def _cpus(cpus: list[int] | None) -> str:
    return "any CPU" if cpus is None else "CPU " + ",".join(map(str, cpus))


def _build(meta: dict[str, Any]) -> str:
    """What the provenance line adds for a free-threaded build; nothing for a GIL build."""
    python = meta["python"]
    if not python.get("free_threaded_build"):
        return ""
    return f", free-threaded build, GIL {'enabled' if python['gil_enabled'] else 'disabled'}"


def _provenance_lines(meta: dict[str, Any], source: str) -> list[str]:
    settings, machine = meta["settings"], meta["machine"]
    idle = machine["idle"]
    kernel = " ".join(idle["cmdline"]) or "no idle settings"
    packages = ", ".join(f"{name} {v}" for name, v in meta["packages"].items() if v)
    commit = f"`{meta['commit_short']}`" + (" with uncommitted changes" if meta["dirty"] else "")
    placements = "; ".join(
        f"{PLACEMENT_TITLES.get(name, name)}: caller on {_cpus(p['caller'])}, "
        f"workers on {_cpus(p['workers'])}"
        for name, p in settings["placements"].items()
    )
    defaults = ", ".join(f"{k} {v}" for k, v in meta["iothread_defaults"].items())
    seconds = meta.get("duration_s", 0)
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return [
        f"Figures from `{source}`: commit {commit}, {meta['date']}, "
        f"`{settings['command']}` ({settings['mode']} run: {settings['samples']} samples per "
        f"case in {settings['rounds']} interleaved rounds; {took}).",
        f"Machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs, kernel "
        f"{machine['kernel']} (`{kernel}`, cpuidle {idle['cpuidle_driver']}); "
        f"{meta['python']['implementation']} {meta['python']['version']}{_build(meta)}, "
        f"{packages}.",
        f"Placements: {placements}. Every event loop of a column is of its loop kind.",
        f"IOThreads at their default properties ({defaults}) except the window "
        "(poll-max-ns) each row states.",
        "Cells: ours over the baseline of the same group, same run, same placement, "
        "interleaved in rounds (below 1 is better). `0.76 (0.71-0.80)`: the median "
        "(lowest-highest) of the per-round ratios, each round's figure over the baseline's "
        'of the same round; rows saying "all rounds pooled" compare the whole run\'s figures.',
    ]


def _submit_line(run: Run, meta: dict[str, Any]) -> str:
    cells = []
    for placement in meta["settings"]["placements"]:
        group = f"pool/submit/{bench_pool.SUBMIT_LOOP}/{placement}"
        r = run.get(run.results, group, bench_pool.POOL_SUBMIT_CASE)
        figure = MISSING if r is None else f"{r['x']['p50']:.2f} / {r['x']['p99']:.2f}"
        cells.append(f"{PLACEMENT_TITLES.get(placement, placement)} {figure}")
    return (
        "`pool.submit()` while every worker is busy (each brings a new thread) vs "
        "`ThreadPoolExecutor.submit()`, called with no loop running, p50 / p99: "
        + "; ".join(cells)
        + "."
    )


def _idle_line(run: Run, meta: dict[str, Any]) -> str:
    cells = []
    for kind in meta["settings"]["loop_kinds"]:
        group = f"polling/idle/{kind}/unpinned"
        plain = run.get(run.rates, group, polling.PLAIN_LOOP_THREAD)
        ours = []
        for implementation in meta["settings"]["implementations"]:
            name = with_implementation(echo_name(DEFAULT_POLL_MAX_NS), implementation)
            idle = run.get(run.rates, group, name)
            figure = MISSING if idle is None else f"{idle['cpu_pct']['median']:.2f} %"
            ours.append(f"{IMPLEMENTATION_TITLES.get(implementation, implementation)} {figure}")
        base = MISSING if plain is None else f"{plain['cpu_pct']['median']:.2f} %"
        cells.append(f"{kind} " + ", ".join(ours) + f" (a plain loop thread: {base})")
    return (
        f"Idle, unpinned, after 200 calls: an IOThread at {window(DEFAULT_POLL_MAX_NS)} used, "
        "of one core, median of the rounds: " + "; ".join(cells) + "."
    )


def render(data: dict[str, Any], source: str) -> tuple[str, list[str]]:
    """README's block for the run *data* stored at *source*; and the figures it lacks."""
    run = Run(data)
    meta = run.meta
    columns = _columns(meta)
    lines = [BEGIN.format(source=source), *_provenance_lines(meta, source), ""]
    titles = [f"{kind} {PLACEMENT_TITLES.get(p, p)}" for kind, p in columns]
    lines.append("| what (the work; the settings) | " + " | ".join(titles) + " |")
    lines.append("| --- " * (len(columns) + 1) + "|")
    for row in rows(meta["settings"]["implementations"]):
        cells = [row.cell(run, f"{row.group}/{kind}/{p}", row.name) for kind, p in columns]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines += ["", _submit_line(run, meta), "", _idle_line(run, meta), END]
    return "\n".join(lines) + "\n", run.missing


def readme_block(readme: str) -> str | None:
    """The block of *readme* between the markers ``render`` prints, markers included."""
    prefix = BEGIN.split("{source}")[0]
    lines = readme.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            for j in range(i, len(lines)):
                if lines[j].rstrip("\n") == END:
                    return "".join(lines[i : j + 1])
    return None


def _source_name(path: Path) -> str:
    """*path* relative to the checkout when inside it: how README cites it."""
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


def summary(data: dict[str, Any]) -> list[str]:
    """The summary of the run *data*, from the pooled figures of its rows."""
    settings = data["meta"]["settings"]
    figures = {(r["group"], r["case"]): r for r in data["results"]}
    _, lines = _summary.summarise(
        figures,
        settings["loop_kinds"],
        list(settings["placements"]),
        settings["implementations"][0],
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Print README's benchmark table (markdown) from a stored run's JSON.",
    )
    parser.add_argument("json", type=Path, help="a file written by python -m benchmarks --json")
    parser.add_argument(
        "--check", metavar="README", type=Path, help="fail unless README holds this very output"
    )
    parser.add_argument(
        "--summary", action="store_true", help="print the run's summary instead of the table"
    )
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    if args.summary:
        print("\n".join(summary(data)))
        return 0
    text, missing = render(data, _source_name(args.json))
    if missing:
        print(f"{len(missing)} figures missing from {args.json}, e.g.:", file=sys.stderr)
        print("\n".join(f"  {m}" for m in missing[:5]), file=sys.stderr)
    if args.check is None:
        sys.stdout.write(text)
        return 0
    block = readme_block(args.check.read_text())
    if block is None:
        print(f"{args.check} holds no benchmarks.report output", file=sys.stderr)
        return 1
    if block != text:
        sys.stdout.writelines(
            difflib.unified_diff(
                block.splitlines(keepends=True),
                text.splitlines(keepends=True),
                str(args.check),
                f"python -m benchmarks.report {args.json}",
            )
        )
        return 1
    print(f"{args.check}: the table is {args.json}'s", file=sys.stderr)
    return 0


__all__ = ["main", "readme_block", "render", "rows", "summary"]


if __name__ == "__main__":
    sys.exit(main())
