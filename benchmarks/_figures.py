"""The figures a run measures, kept per round, and how they are printed and stored.

A run interleaves the cases of a group in rounds (``_harness``), and every
figure here keeps its rounds apart, so that each ratio can be given both over
the whole run and round by round (a case against its baseline of the same
round), and a figure derived from two cases is computed from the samples of
one round at a time, never from totals of different measurements:

* ``Result``: latencies of one case, one ``Chunk`` of samples per round;
* ``Rate``: a throughput or an idle CPU cost, one ``RateRound`` per round;
* ``Derived``: a figure computed by a suite from the results of one group,
  one value per round (e.g. the part of a round trip above the wake-up floor).

``Spread`` is how a per-round figure is reported: the median of the rounds
and their lowest and highest values.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

# -- one figure over the rounds ------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """A figure measured once per round: the median of the rounds, and their range."""

    values: tuple[float, ...]

    @classmethod
    def of_ratios(cls, numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
        """Round by round, numerator over denominator (``inf`` over a zero)."""
        return cls(
            tuple(n / d if d else math.inf for n, d in zip(numerators, denominators, strict=True))
        )

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def low(self) -> float:
        return min(self.values, default=math.nan)

    @property
    def high(self) -> float:
        return max(self.values, default=math.nan)

    def range_text(self, digits: int = 2) -> str:
        """``low-high``, or the single value of a one-round figure."""
        if len(self.values) == 1:
            return f"{self.low:.{digits}f}"
        return f"{self.low:.{digits}f}-{self.high:.{digits}f}"

    def text(self, digits: int = 2) -> str:
        """``median (low-high)``."""
        return f"{self.median:.{digits}f} ({self.range_text(digits)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "rounds": list(self.values),
        }


# -- latencies -----------------------------------------------------------------------


def percentile_us(samples_ns: Sequence[int], q: float) -> float:
    """The q-th percentile of *samples_ns* in microseconds (nearest rank)."""
    ordered = sorted(samples_ns)
    if not ordered:
        return math.nan
    rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[rank] / 1000


#: The latency quantiles every table shows, and their names in the JSON.
QUANTILES = {"p50": 50.0, "p99": 99.0, "p999": 99.9}


@dataclass
class Chunk:
    """One case's samples of one round, and the process CPU time they took.

    The samples are an ``array``, not a list: a run holds millions, and as
    ints in lists every full collection of the cyclic garbage collector
    visits each one.  Held so, 18 M samples cut uvloop's own
    ``call_soon_threadsafe`` throughput from 2.2 M/s to 0.47 M/s later in
    the same process (a run's later cases and repeats measured that GC).
    """

    samples_ns: array[int] = field(default_factory=lambda: array("q"))
    cpu_ns: int = 0
    ops: int = 0

    def figures(self) -> dict[str, float]:
        """Quantiles (us) and CPU per operation (us) of this chunk."""
        out = {f"{name}_us": percentile_us(self.samples_ns, q) for name, q in QUANTILES.items()}
        out["cpu_us_per_op"] = self.cpu_ns / self.ops / 1000 if self.ops else math.nan
        return out


@dataclass
class Result:
    """The samples of one case in one group, one chunk per round."""

    group: str
    case: str
    #: what one operation does, the same for every case of the group
    work: str
    chunks: list[Chunk] = field(default_factory=list)

    def new_round(self) -> Chunk:
        """The chunk the next round's samples go to."""
        self.chunks.append(Chunk())
        return self.chunks[-1]

    @property
    def samples_ns(self) -> array[int]:
        return array("q", itertools.chain.from_iterable(c.samples_ns for c in self.chunks))

    def whole(self) -> Chunk:
        """Every round's samples pooled."""
        return Chunk(
            self.samples_ns,
            sum(c.cpu_ns for c in self.chunks),
            sum(c.ops for c in self.chunks),
        )

    def percentile(self, q: float) -> float:
        """The q-th percentile over all rounds, in microseconds."""
        return percentile_us(self.samples_ns, q)

    def per_round(self, figure: str) -> list[float]:
        """*figure* (a key of ``Chunk.figures``) of each round."""
        return [chunk.figures()[figure] for chunk in self.chunks]


def pool_results(results: Iterable[Result]) -> list[Result]:
    """One Result per (group, case), its rounds those of every repeat of the
    run, in the order the repeats ran; the cases in the order first met."""
    out: dict[tuple[str, str], Result] = {}
    for result in results:
        out.setdefault((result.group, result.case), Result(result.group, result.case, result.work))
        out[result.group, result.case].chunks += result.chunks
    return list(out.values())


#: Each figure of ``Chunk.figures`` and the name of its ratio.
_RATIO_NAMES = {"p50_us": "p50", "p99_us": "p99", "p999_us": "p999", "cpu_us_per_op": "cpu"}


def ratios(result: Result, base: Result) -> dict[str, Any]:
    """*result* over *base*: each figure over all rounds, and the p50 round by round."""
    ours, theirs = result.whole().figures(), base.whole().figures()
    out: dict[str, Any] = {name: ours[key] / theirs[key] for key, name in _RATIO_NAMES.items()}
    out["p50_rounds"] = Spread.of_ratios(result.per_round("p50_us"), base.per_round("p50_us"))
    return out


def baselines(items: Iterable[Any]) -> dict[str, Any]:
    """The first item of each group (anything with ``.group``): the group's baseline."""
    out: dict[str, Any] = {}
    for item in items:
        out.setdefault(item.group, item)
    return out


_Row = TypeVar("_Row", "Result", "Rate")


def _rows(items: Sequence[_Row], header: str, file: TextIO) -> Iterator[tuple[_Row, _Row]]:
    """Print *header*, then yield each item with its group's baseline, each group
    introduced by a line naming it and its work."""
    print(header, file=file)
    print("-" * len(header), file=file)
    base_of = baselines(items)
    for item in items:
        base = base_of[item.group]
        if item is base:
            print(f"{item.group}  [{item.work}]", file=file)
        yield item, base


def print_table(results: Sequence[Result], file: TextIO | None = None) -> None:
    """Results by group, each case with its ratios to the group's first case.

    The ratios are over all rounds pooled; ``p50 x by round`` is the median
    (lowest-highest) of the per-round ratios, each round's p50 over the
    baseline's p50 of the same round.
    """
    file = file or sys.stdout
    header = (
        f"  {'case':<62} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'CPU us/op':>9}"
        f"  {'p50 x':>6} {'p99 x':>6} {'p99.9 x':>7} {'CPU x':>6}  {'p50 x by round':>18}"
    )
    for r, base in _rows(results, header, file):
        f = r.whole().figures()
        if r is base:
            marks = "  (baseline)"
        else:
            x = ratios(r, base)
            marks = (
                f"  {x['p50']:6.2f} {x['p99']:6.2f} {x['p999']:7.2f} {x['cpu']:6.2f}"
                f"  {x['p50_rounds'].text():>18}"
            )
        print(
            f"  {r.case:<62} {f['p50_us']:8.1f} {f['p99_us']:8.1f} {f['p999_us']:9.1f} "
            f"{f['cpu_us_per_op']:9.1f}{marks}",
            file=file,
        )


# -- rates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RateRound:
    """One round of a rate: operations per second (0 for an idle cost), CPU."""

    ops_per_s: float
    cpu_pct: float  # of one core, all threads of the process


@dataclass
class Rate:
    """A throughput or an idle CPU cost, measured once per round."""

    group: str
    case: str
    work: str
    rounds: list[RateRound] = field(default_factory=list)

    @property
    def ops_per_s(self) -> Spread:
        return Spread(tuple(r.ops_per_s for r in self.rounds))

    @property
    def cpu_pct(self) -> Spread:
        return Spread(tuple(r.cpu_pct for r in self.rounds))


def pool_rates(rates: Iterable[Rate]) -> list[Rate]:
    """``pool_results`` for rates."""
    out: dict[tuple[str, str], Rate] = {}
    for rate in rates:
        out.setdefault((rate.group, rate.case), Rate(rate.group, rate.case, rate.work))
        out[rate.group, rate.case].rounds += rate.rounds
    return list(out.values())


def rate_ratio(rate: Rate, base: Rate) -> Spread | None:
    """Round by round, *rate*'s ops/s over *base*'s (None for idle costs)."""
    if not any(r.ops_per_s for r in base.rounds):
        return None
    return Spread.of_ratios(rate.ops_per_s.values, base.ops_per_s.values)


def print_rates(rates: Sequence[Rate], file: TextIO | None = None) -> None:
    """Rates by group: median (lowest-highest) over the rounds, ratio to the first row.

    An idle cost has no operations: its rows show the CPU only.
    """
    file = file or sys.stdout
    header = (
        f"  {'case':<62} {'ops/s median':>12} {'ops/s range':>19} {'CPU % median':>12}"
        f"  {'rate x (range)':>18}"
    )
    for r, base in _rows(rates, header, file):
        x = rate_ratio(r, base)
        mark = "(baseline)" if r is base else x.text() if x else ""
        ops = (
            f"{r.ops_per_s.median:12.0f} {r.ops_per_s.range_text(0):>19}"
            if any(rr.ops_per_s for rr in r.rounds)
            else f"{'':12} {'':19}"
        )
        print(f"  {r.case:<62} {ops} {r.cpu_pct.median:12.2f}  {mark:>18}", file=file)


# -- derived figures -----------------------------------------------------------------


@dataclass(frozen=True)
class Derived:
    """A figure a suite computes from the results of one group, round by round."""

    group: str
    name: str
    value: Spread
    #: what the figure rests on, e.g. which case was the best baseline
    detail: str = ""


def print_derived(derived: Sequence[Derived], file: TextIO | None = None) -> None:
    """Derived figures: median (lowest-highest) over the rounds, and what they rest on."""
    file = file or sys.stdout
    header = f"  {'derived figure (round by round, same group)':<74} {'median (range)':>18}"
    print(header, file=file)
    print("-" * len(header), file=file)
    group = None
    for d in derived:
        if d.group != group:
            print(d.group, file=file)
            group = d.group
        print(f"  {d.name:<74} {d.value.text():>18}  {d.detail}".rstrip(), file=file)


# -- the JSON ------------------------------------------------------------------------


def run_json(
    meta: dict[str, Any],
    results: Sequence[Result],
    rates: Sequence[Rate],
    derived: Sequence[Derived],
    lines: Sequence[str],
    *,
    samples: bool,
) -> dict[str, Any]:
    """Everything a run printed, with its provenance; every sample with *samples*."""
    base_of = baselines(results)
    result_rows = []
    for r in results:
        base = base_of[r.group]
        row: dict[str, Any] = {
            "group": r.group,
            "work": r.work,
            "case": r.case,
            "baseline": base.case,
            "ops": r.whole().ops,
            **r.whole().figures(),
            "x": None,
            "rounds": [{"ops": c.ops, **c.figures()} for c in r.chunks],
        }
        if r is not base:
            x = ratios(r, base)
            row["x"] = {**x, "p50_rounds": x["p50_rounds"].to_json()}
        if samples:
            row["samples_ns"] = r.samples_ns.tolist()
        result_rows.append(row)
    rate_base = baselines(rates)
    rate_rows = []
    for rate in rates:
        base = rate_base[rate.group]
        rate_x = rate_ratio(rate, base) if rate is not base else None
        rate_rows.append(
            {
                "group": rate.group,
                "work": rate.work,
                "case": rate.case,
                "baseline": base.case,
                "ops_per_s": rate.ops_per_s.to_json(),
                "cpu_pct": rate.cpu_pct.to_json(),
                "x": rate_x.to_json() if rate_x else None,
            }
        )
    return {
        "meta": meta,
        "results": result_rows,
        "rates": rate_rows,
        "derived": [
            {"group": d.group, "name": d.name, "detail": d.detail, "value": d.value.to_json()}
            for d in derived
        ],
        "report": list(lines),
    }


def dumps(data: dict[str, Any]) -> str:
    """*data* (from ``run_json``) as JSON, one figure (case, rate, derived) a line."""
    parts = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            rows = ",\n  ".join(json.dumps(item) for item in value)
            parts.append(f" {json.dumps(key)}: [\n  {rows}\n ]")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


__all__ = [
    "QUANTILES",
    "Chunk",
    "Derived",
    "Rate",
    "RateRound",
    "Result",
    "Spread",
    "baselines",
    "dumps",
    "percentile_us",
    "pool_rates",
    "pool_results",
    "print_derived",
    "print_rates",
    "print_table",
    "rate_ratio",
    "ratios",
    "run_json",
]
