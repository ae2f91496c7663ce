"""Check the coverage of the concurrency core, module group by module group.

Usage: python .ci/coverage_check.py COVERAGE_JSON PATTERN...

Reads a ``coverage json`` report and groups its files: a file of a package
below ``iothreads/`` (``iothreads/_aio/...``) counts towards its package, any
other file is a group of its own.  Each PATTERN (as given to coverage's
``--include``) must match a measured file, so that a renamed module cannot
drop out of the check unseen.  Lines and branches are checked separately
(coverage's own ``fail_under`` takes one figure that mixes the two); exits 1
if a group is under either floor.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from dataclasses import dataclass

LINES_FLOOR = 97.0
BRANCHES_FLOOR = 95.0


@dataclass
class Totals:
    statements: int = 0
    covered_lines: int = 0
    branches: int = 0
    covered_branches: int = 0

    def add(self, summary: dict[str, int]) -> None:
        self.statements += summary["num_statements"]
        self.covered_lines += summary["covered_lines"]
        self.branches += summary["num_branches"]
        self.covered_branches += summary["covered_branches"]

    @property
    def lines_percent(self) -> float:
        return 100.0 * self.covered_lines / self.statements if self.statements else 100.0

    @property
    def branches_percent(self) -> float:
        return 100.0 * self.covered_branches / self.branches if self.branches else 100.0


def group_of(path: str) -> str:
    directory = os.path.dirname(path)
    return directory + "/" if directory != "iothreads" else path


def main(report_path: str, patterns: list[str]) -> int:
    with open(report_path) as report:
        files: dict[str, dict[str, dict[str, int]]] = json.load(report)["files"]
    if not files or "num_branches" not in next(iter(files.values()))["summary"]:
        print("coverage check: no branch data (is [tool.coverage.run] branch on?)")
        return 1
    unmatched = [p for p in patterns if not any(fnmatch.fnmatch(f, p) for f in files)]
    if unmatched:
        print(f"coverage check: no measured file matches {', '.join(unmatched)}")
        return 1
    groups: dict[str, Totals] = {}
    for path, data in sorted(files.items()):
        groups.setdefault(group_of(path), Totals()).add(data["summary"])
    failed = False
    print(f"\n{'group':32} {'lines':>16} {'branches':>16}")
    for name, totals in groups.items():
        short = totals.lines_percent < LINES_FLOOR or totals.branches_percent < BRANCHES_FLOOR
        failed |= short
        print(
            f"{name:32}"
            f" {totals.covered_lines:>5}/{totals.statements:<5} {totals.lines_percent:5.1f}%"
            f" {totals.covered_branches:>5}/{totals.branches:<5} {totals.branches_percent:5.1f}%"
            + ("  UNDER THE FLOOR" if short else "")
        )
    print(f"floors: {LINES_FLOOR}% of lines and {BRANCHES_FLOOR}% of branches in each group")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
