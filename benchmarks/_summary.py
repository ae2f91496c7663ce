"""The run's headline: iothreads against what a user runs today, in a few lines.

Each comparison is ours against one baseline of the same group: the same
work, the same process, the same placement, interleaved in the same rounds
(``_harness``).  A cell is ours over theirs for p50, p99 and CPU per
operation, each over all rounds pooled, exactly as the full table's ratio
columns compute them; one row per comparison and loop kind, one column per
placement.  Nothing here is a stored figure: the cells come from the
figures handed in, which ``python -m benchmarks`` takes from its samples and
``python -m benchmarks.report --summary`` from a stored run's rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._harness import with_implementation
from .bench_pool import (
    ANYIO_CASE,
    POOL_RUN_CASE,
    POOL_SUBMIT_CASE,
    SUBMIT_LOOP,
    TO_THREAD_CASE,
    TPE_CASE,
    TPE_SUBMIT_CASE,
)
from .polling import PLAIN_LOOP_THREAD, echo_name
from .roundtrip import (
    CALL_WITH_FUTURE,
    DEFAULT_POLL_MAX_NS,
    RUN_COROUTINE_THREADSAFE,
    io_run_name,
)

#: (group, case) -> a case's figures over all rounds pooled, named as
#: ``Chunk.figures`` names them (``p50_us``, ``p99_us``, ``cpu_us_per_op``).
Figures = Mapping[tuple[str, str], Mapping[str, float]]

#: The ratios each cell shows, by the figure they divide.
CELL = {"p50": "p50_us", "p99": "p99_us", "CPU": "cpu_us_per_op"}

#: How the summary names a loop kind, and placements.
LOOP_TITLES = {"stdlib": "asyncio", "uvloop": "uvloop", SUBMIT_LOOP: "no loop"}
PLACEMENT_TITLES = {"unpinned": "unpinned", "one-cpu": "one CPU", "split": "split"}


@dataclass(frozen=True)
class Comparison:
    """Ours against one baseline, both cases of the group *group* (suite/group)."""

    label: str
    group: str
    ours: str
    theirs: str
    #: ours is an IOThread case: its name ends in the inbox implementation
    iothread: bool = False
    #: the group runs without a loop (its name says SUBMIT_LOOP, not a loop kind)
    no_loop: bool = False


#: Per loop kind, in this order; then those run without a loop.
COMPARISONS = (
    Comparison(
        "io.run(coroutine) vs run_coroutine_threadsafe",
        "roundtrip/await-coroutine",
        io_run_name(),
        RUN_COROUTINE_THREADSAFE,
        iothread=True,
    ),
    Comparison(
        "io.run(function) vs call_soon_threadsafe+Future",
        "roundtrip/await-function",
        io_run_name(),
        CALL_WITH_FUTURE,
        iothread=True,
    ),
    Comparison(
        "echo to another process vs a plain loop thread",
        "polling/echo",
        echo_name(DEFAULT_POLL_MAX_NS),
        PLAIN_LOOP_THREAD,
        iothread=True,
    ),
    Comparison(
        "pool.run vs run_in_executor(ThreadPoolExecutor)", "pool/dispatch", POOL_RUN_CASE, TPE_CASE
    ),
    Comparison("pool.run vs asyncio.to_thread", "pool/dispatch", POOL_RUN_CASE, TO_THREAD_CASE),
    Comparison("pool.run vs anyio.to_thread.run_sync", "pool/dispatch", POOL_RUN_CASE, ANYIO_CASE),
    Comparison(
        "pool.submit vs ThreadPoolExecutor.submit",
        "pool/submit",
        POOL_SUBMIT_CASE,
        TPE_SUBMIT_CASE,
        no_loop=True,
    ),
)


@dataclass(frozen=True)
class Row:
    """One comparison on one loop kind: its ratios per placement (None: not measured)."""

    loop_kind: str
    comparison: Comparison
    cells: dict[str, dict[str, float] | None]


def rows(
    figures: Figures, loop_kinds: Sequence[str], placements: Sequence[str], implementation: str
) -> list[Row]:
    """Every comparison the figures hold, for each loop kind; IOThreads on *implementation*.

    A row none of whose placements was measured (a suite not run, anyio not
    installed) is left out.
    """
    out = []
    for kinds, no_loop in ((loop_kinds, False), ((SUBMIT_LOOP,), True)):
        for kind in kinds:
            for c in COMPARISONS:
                if c.no_loop != no_loop:
                    continue
                ours = with_implementation(c.ours, implementation) if c.iothread else c.ours
                cells = {
                    p: _ratios(figures, f"{c.group}/{kind}/{p}", ours, c.theirs) for p in placements
                }
                if any(cells.values()):
                    out.append(Row(kind, c, cells))
    return out


def _ratios(figures: Figures, group: str, ours: str, theirs: str) -> dict[str, float] | None:
    a, b = figures.get((group, ours)), figures.get((group, theirs))
    if a is None or b is None:
        return None
    return {name: a[key] / b[key] if b[key] else math.inf for name, key in CELL.items()}


def lines(rows_: Sequence[Row], placements: Sequence[str], implementation: str) -> list[str]:
    """The summary as text: a title, a column header, then one line per row."""
    if not rows_:
        return []
    label_width = max(len(r.comparison.label) for r in rows_)
    kind_width = max(len(LOOP_TITLES.get(r.loop_kind, r.loop_kind)) for r in rows_)
    head = "   ".join(f"{PLACEMENT_TITLES.get(p, p):^{CELL_WIDTH}}" for p in placements)
    out = [
        "Summary: iothreads over the baseline (below 1: iothreads is better); same work, "
        "same run, same placement",
        f"each cell: p50 x, p99 x, CPU per op x, all rounds pooled; IOThreads at the "
        f"default window, {implementation} inbox",
        f"{'':{kind_width}}  {'':{label_width}}   {head}".rstrip(),
    ]
    previous = None
    for row in rows_:
        kind = LOOP_TITLES.get(row.loop_kind, row.loop_kind) if row.loop_kind != previous else ""
        previous = row.loop_kind
        cells = "   ".join(f"{_cell(row.cells[p]):>{CELL_WIDTH}}" for p in placements)
        out.append(f"{kind:<{kind_width}}  {row.comparison.label:<{label_width}}   {cells}")
    return out


#: A cell's width: three ratios of up to 99.99.
CELL_WIDTH = 17


def _cell(ratios: dict[str, float] | None) -> str:
    if ratios is None:
        return "-"
    return " ".join(f"{ratios[name]:5.2f}" for name in CELL)


def summarise(
    figures: Figures, loop_kinds: Sequence[str], placements: Sequence[str], implementation: str
) -> tuple[list[Row], list[str]]:
    """The rows and their text, for the figures of a run of *loop_kinds* and *placements*."""
    found = rows(figures, loop_kinds, placements, implementation)
    return found, lines(found, placements, implementation)


__all__ = ["CELL", "COMPARISONS", "Comparison", "Figures", "Row", "lines", "rows", "summarise"]
