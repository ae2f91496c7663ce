"""The run as figures: PNGs written by ``python -m benchmarks --plot DIR``.

* ``summary.png``: the summary's ratios (p50, p99, CPU per op), one bar per
  comparison, loop kind and placement, on a log scale centred on 1;
* ``latency-<suite>-<group>.png``: for each group, every case's latency
  percentiles (p50 to p99.9) against its baseline's, one panel per loop kind
  and placement;
* ``polling-window.png``: an IOThread's polling window and poll hit rate over
  time as traffic changes (``_window_timeline``);
* ``pool-timeline.png``: the pool's thread count over a burst, then
  idleness (``_timeline``).

matplotlib is the optional ``plot`` extra: ``require()`` says how to get it
before a run starts rather than after it has measured for a minute.
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ._figures import Result, percentile_us
from ._summary import CELL, LOOP_TITLES, PLACEMENT_TITLES, Row
from ._timeline import Timeline
from ._window_timeline import WindowTimeline

#: The percentiles each latency panel draws, on a "nines" axis.
PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9)

PLOT_EXTRA = "pip install -e '.[bench,plot]'"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (the ``plot`` extra)."""


def require() -> ModuleType:
    """matplotlib's pyplot, drawing to files only.

    Raises:
        PlotUnavailable: matplotlib is not installed; the message says how to install it.
    """
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise PlotUnavailable(
            f"--plot needs matplotlib, the plot extra: {PLOT_EXTRA} (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg")  # files, no display
    return importlib.import_module("matplotlib.pyplot")


def _nines(q: float) -> float:
    """Where percentile *q* sits on an axis where 90, 99 and 99.9 are evenly spaced."""
    return -math.log10(1 - q / 100)


def _plain_numbers(axis: Any, base: int) -> None:
    """Ticks of a log *axis* labelled as plain numbers (0.5, 2, 50), not as powers."""
    ticker = importlib.import_module("matplotlib.ticker")
    if base == 10:  # 10, 20, 50, 100...: a label every third of a decade
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:  # a few powers of two, however wide the range
        axis.set_major_locator(ticker.LogLocator(base=base, numticks=6))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:.3g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _save(plt: ModuleType, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_png(
    plt: ModuleType, rows: Sequence[Row], placements: Sequence[str], path: Path
) -> Path:
    """The summary's ratios as horizontal bars, one panel per ratio."""
    labels = [f"{LOOP_TITLES.get(r.loop_kind, r.loop_kind)}: {r.comparison.label}" for r in rows]
    fig, axes = plt.subplots(
        1, len(CELL), figsize=(6 + 3 * len(CELL), 1.2 + 0.45 * len(rows)), sharey=True
    )
    height = 0.8 / max(1, len(placements))
    for ax, name in zip(axes, CELL, strict=True):
        for i, placement in enumerate(placements):
            values = [(r.cells[placement] or {}).get(name, math.nan) for r in rows]
            ax.barh(
                [y + i * height for y in range(len(rows))],
                values,
                height=height,
                label=PLACEMENT_TITLES.get(placement, placement),
            )
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log", base=2)
        _plain_numbers(ax.xaxis, 2)
        ax.set_title(f"{name} ratio")
    axes[0].set_yticks([y + height * (len(placements) - 1) / 2 for y in range(len(rows))])
    axes[0].set_yticklabels(labels)
    axes[0].invert_yaxis()
    handles, titles = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        titles,
        title="placement",
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=len(placements),
    )
    fig.suptitle("iothreads over the baseline, same run: below 1 (left of the line) is better")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def latency_pngs(
    plt: ModuleType,
    results: Sequence[Result],
    loop_kinds: Sequence[str],
    placements: Sequence[str],
    directory: Path,
) -> list[Path]:
    """One PNG per group (suite/group), a panel per loop kind and placement it ran under.

    A group's name ends in the loop kind and placement, and its baseline is
    its first case (``_harness``): each panel draws the baseline first.
    """
    by_group: dict[str, dict[tuple[str, str], list[Result]]] = {}
    for r in results:
        suite, group, kind, placement = r.group.split("/")
        by_group.setdefault(f"{suite}/{group}", {}).setdefault((kind, placement), []).append(r)
    paths = []
    for name, panels in by_group.items():
        # Loop kinds in the run's order; a group run without a loop has its own.
        kinds = list(dict.fromkeys([*loop_kinds, *(k for k, _ in panels)]))
        kinds = [k for k in kinds if any((k, p) in panels for p in placements)]
        columns = [p for p in placements if any((k, p) in panels for k in kinds)]
        fig, axes = plt.subplots(
            len(kinds),
            len(columns),
            figsize=(4.5 * len(columns), 3.2 * len(kinds) + 1.0),
            squeeze=False,
        )
        handles: dict[str, Any] = {}
        for i, kind in enumerate(kinds):
            for j, placement in enumerate(columns):
                ax = axes[i][j]
                for k, r in enumerate(panels.get((kind, placement), [])):
                    handles.setdefault(r.case, _percentile_line(ax, r, baseline=k == 0))
                ax.set_title(
                    f"{LOOP_TITLES.get(kind, kind)}, {PLACEMENT_TITLES.get(placement, placement)}",
                    fontsize=9,
                )
                ax.set_yscale("log")
                _plain_numbers(ax.yaxis, 10)
                ax.set_xticks([_nines(q) for q in PERCENTILES])
                ax.set_xticklabels([f"p{q:g}" for q in PERCENTILES], fontsize=7)
                if j == 0:
                    ax.set_ylabel("latency (us)")
        base = next(iter(panels.values()))[0]
        fig.suptitle(f"{name}: {base.work}", fontsize=10)
        fig.legend(
            list(handles.values()),
            [f"{case} (baseline)" if case == base.case else case for case in handles],
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=2,
            fontsize=8,
        )
        fig.tight_layout()
        path = directory / f"latency-{name.replace('/', '-')}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def _percentile_line(ax: Any, result: Result, *, baseline: bool) -> Any:
    """*result*'s latency percentiles as a line; the baseline's black and dashed."""
    samples = result.samples_ns
    xs = [_nines(q) for q in PERCENTILES]
    ys = [percentile_us(samples, q) for q in PERCENTILES]
    style: dict[str, Any] = {"marker": "o", "markersize": 3}
    if baseline:
        style.update(color="black", linestyle="--", linewidth=2)
    (line,) = ax.plot(xs, ys, **style)
    return line


def window_png(plt: ModuleType, record: WindowTimeline, path: Path) -> Path:
    """The polling window over time, and the share of polls that hit per sample interval."""
    points = record.points
    t = [p.t for p in points]
    fig, (window, hits) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    window.step(t, [p.poll_ns / 1000 for p in points], where="post", label="window")
    window.axhline(record.poll_max_ns / 1000, linestyle="--", color="grey", label="poll-max-ns")
    window.set_ylabel("polling window (us)")
    window.legend(loc="upper right")
    rate_t, rate = [], []
    for a, b in itertools.pairwise(points):
        polls = b.polls - a.polls
        if polls:
            rate_t.append(b.t)
            rate.append(100 * (b.poll_hits - a.poll_hits) / polls)
    hits.plot(rate_t, rate, ".", markersize=3)
    hits.set_ylim(-5, 105)
    hits.set_ylabel("polls that caught work (%)")
    hits.set_xlabel("seconds since the first call")
    for ax in (window, hits):
        for _, start in record.phases:
            ax.axvline(start, color="grey", linewidth=0.8)
    for label, start in record.phases:
        window.annotate(
            label,
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
        )
    kind = LOOP_TITLES.get(record.loop_kind, record.loop_kind)
    window.set_title(
        f"IOThread at poll-max-ns {record.poll_max_ns} ({kind}, {record.implementation} "
        "inbox): io.run_sync calls from one thread, phase by phase"
    )
    return _save(plt, fig, path)


def pool_timeline_png(plt: ModuleType, timeline: Timeline, path: Path) -> Path:
    """The pool's thread count, active and queued requests over the burst and after."""
    t = [p[0] for p in timeline.points]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.step(t, [p[1].threads for p in timeline.points], where="post", label="threads")
    ax.step(t, [p[1].active for p in timeline.points], where="post", label="active")
    ax.step(t, [p[1].queued for p in timeline.points], where="post", label="queued")
    ax.axhline(timeline.min, linestyle=":", color="grey", label="min")
    ax.axhline(timeline.max, linestyle="--", color="grey", label="max")
    ax.set_xlabel("seconds since the pool was created")
    ax.set_ylabel("count")
    ax.set_title(
        f"ThreadPool(min={timeline.min}, max={timeline.max}, "
        f"idle_timeout={timeline.idle_timeout:g}s): a burst, then idleness"
    )
    ax.legend(loc="upper right")
    return _save(plt, fig, path)


def write_all(
    plt: ModuleType,
    directory: Path,
    *,
    summary: Sequence[Row],
    results: Sequence[Result],
    recordings: Sequence[object],
    loop_kinds: Sequence[str],
    placements: Sequence[str],
) -> list[Path]:
    """Every figure the run has into *directory* (created if need be); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    if summary:
        paths.append(summary_png(plt, summary, placements, directory / "summary.png"))
    paths += latency_pngs(plt, results, loop_kinds, placements, directory)
    for record in recordings:
        if isinstance(record, WindowTimeline):
            paths.append(window_png(plt, record, directory / "polling-window.png"))
        elif isinstance(record, Timeline):
            paths.append(pool_timeline_png(plt, record, directory / "pool-timeline.png"))
    return paths


__all__ = [
    "PERCENTILES",
    "PlotUnavailable",
    "latency_pngs",
    "pool_timeline_png",
    "require",
    "summary_png",
    "window_png",
    "write_all",
]
