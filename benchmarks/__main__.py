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

import sys
from collections.abc import Sequence

from . import bench_pool, polling, roundtrip, scaling
from ._harness import run_suites

#: Every suite, in the order they run; ``_harness`` says what a suite provides.
SUITES = (roundtrip, polling, bench_pool, scaling)


def main(argv: Sequence[str] | None = None) -> int:
    return run_suites(SUITES, argv, prog="python -m benchmarks", description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
