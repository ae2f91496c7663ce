"""``python -m benchmarks``: the machinery, never the figures.

One smoke run (a few dozen samples per case, one placement, both loop kinds
present, the suites of the summary, run twice and pooled) feeds the tests of its output: the
summary it ends with, the full table on request, the JSON, and with
matplotlib installed (the ``plot`` extra) the PNGs of ``--plot``.  No test
reads a figure's value: on a shared machine they are noise.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from benchmarks import _plots, _summary, report, scaling
from benchmarks.__main__ import main as benchmarks_main
from benchmarks._figures import Rate, RateRound, Result
from benchmarks._harness import Mode, Progress, in_turn

REPO = Path(__file__).resolve().parent.parent


def _readme_run() -> Path:
    """The stored run whose table README.md prints, as its opening marker names it."""
    marker = re.search(
        r"<!-- python -m benchmarks\.report (\S+): its output", (REPO / "README.md").read_text()
    )
    assert marker is not None, "README.md has no benchmarks.report block"
    return REPO / marker[1]


STORED_RUN = _readme_run()
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
#: Bound on the smoke run (it takes seconds; a loaded machine, many more).
SMOKE_TIMEOUT_S = 240

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SmokeRun:
    def __init__(self, directory: Path, proc: subprocess.CompletedProcess[str]) -> None:
        self.directory = directory
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.returncode = proc.returncode
        self.json = directory / "run.json"
        self.plots = directory / "plots"

    def summary(self) -> list[str]:
        """The lines from the summary's title to the end of stdout."""
        lines = self.stdout.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("Summary: ")]
        assert starts, self.stdout
        return lines[starts[-1] :]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    """``python -m benchmarks --smoke`` once for the module, its output kept."""
    directory = tmp_path_factory.mktemp("smoke")
    args = [
        sys.executable,
        "-m",
        "benchmarks",
        "--smoke",
        "--table",
        "--placement",
        "unpinned",
        "--only",
        "roundtrip",
        "--only",
        "polling",
        "--only",
        "pool",
        "--repeat",
        "2",
        "--json",
        str(directory / "run.json"),
    ]
    if HAS_MATPLOTLIB:
        args += ["--plot", str(directory / "plots")]
    proc = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, check=False
    )
    return SmokeRun(directory, proc)


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_smoke_run_ends_with_a_short_summary_of_every_baseline(smoke: SmokeRun) -> None:
    assert smoke.returncode == 0, smoke.stderr
    summary = smoke.summary()
    assert len(summary) <= 16, "\n".join(summary)
    body = "\n".join(summary)
    # One row per comparison and loop kind (anyio's only where it is installed).
    present = [
        c
        for c in _summary.COMPARISONS
        if c.theirs != "anyio.to_thread.run_sync" or importlib.util.find_spec("anyio")
    ]
    for comparison in present:
        assert comparison.label in body
    for title in ("asyncio", "no loop"):
        assert any(line.startswith(title) for line in summary), body
    assert "unpinned" in summary[2]
    # Every cell holds three ratios: nothing is missing from a complete run.
    for line in summary[3:]:
        assert len(line.split()[-3:]) == 3
        assert " - " not in line


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_smoke_run_progress_is_one_line_per_step_off_a_terminal(smoke: SmokeRun) -> None:
    steps = [line for line in smoke.stderr.splitlines() if line.startswith("[")]
    total = steps[-1].split("]")[0].split("/")[1]
    assert steps[0].startswith("[1/")
    assert steps[-1].startswith(f"[{total}/{total}]")


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_table_prints_every_figure_before_the_summary(smoke: SmokeRun) -> None:
    table_at = smoke.stdout.index("p50 us")
    assert table_at < smoke.stdout.index("Summary: ")
    assert "roundtrip/await-coroutine/stdlib/unpinned" in smoke.stdout
    assert "pool/timeline: min=" in smoke.stdout
    assert "polling/window: an IOThread" in smoke.stdout


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_json_holds_the_summary_and_recordings(smoke: SmokeRun) -> None:
    data = json.loads(smoke.json.read_text())
    assert data["summary"] == smoke.summary()
    # Computed again from the stored rows, the summary is the same.
    assert report.summary(data) == data["summary"]
    names = {r["name"] for r in data["recordings"]}
    assert names == {"pool/timeline", "polling/window"}
    window = next(r for r in data["recordings"] if r["name"] == "polling/window")
    assert [p["label"] for p in window["phases"]] == [
        "back to back",
        "200 us apart",
        "5 ms apart",
        "idle",
    ]
    assert len(window["points"]) >= 2


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_repeat_pools_the_rounds_of_every_repeat(smoke: SmokeRun) -> None:
    """A smoke run has one round; run twice, every figure rests on two."""
    data = json.loads(smoke.json.read_text())
    settings = data["meta"]["settings"]
    assert (settings["repeat"], settings["rounds"]) == (2, 2)
    assert {len(row["rounds"]) for row in data["results"]} == {2}
    assert {len(row["ops_per_s"]["rounds"]) for row in data["rates"]} == {2}
    assert {len(row["value"]["rounds"]) for row in data["derived"]} == {2}
    # One row per case, as in a single run: the repeats are pooled, not listed.
    cases = [(row["group"], row["case"]) for row in data["results"]]
    assert len(cases) == len(set(cases))


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_each_round_starts_a_group_one_case_further_on(smoke: SmokeRun) -> None:
    """The smoke run's one round, repeated: the repeat goes on counting rounds,
    so its round starts at each group's second case, not at the baseline again."""
    orders: dict[tuple[str, str], list[str]] = {}
    for line in smoke.stderr.splitlines():
        step = re.fullmatch(r"\[\d+/\d+\] (\S+): (.+) \(round (\d+)\)", line)
        if step:
            orders.setdefault((step[1], step[3]), []).append(step[2])
    groups = {group for group, _ in orders}
    assert len(groups) > 1, smoke.stderr
    for group in groups:
        first, second = orders[(group, "1")], orders[(group, "2")]
        assert len(first) > 1
        assert second == [*first[1:], first[0]]


def test_in_turn_starts_each_round_at_the_next_item() -> None:
    items = ["a", "b", "c"]
    assert [in_turn(items, turn) for turn in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert in_turn([], 5) == []


def test_the_scaling_verdicts_judge_the_pooled_rates_once() -> None:
    """Under ``--repeat`` the harness pools each rate's rounds over the runs:
    the scaling report judges those, one line per group, and not each run's
    rates apart."""

    def rate(group: str, case: str, *ops_per_s: float) -> Rate:
        rounds = [RateRound(ops, 100.0) for ops in ops_per_s]
        return Rate(f"scaling/{group}/stdlib/unpinned", case, "work", rounds)

    pooled = [
        rate("iothreads", "1 IOThread", 100, 100),
        rate("iothreads", "2 IOThreads", 150, 190),
        rate("threads", "1 plain thread", 100, 100),
        rate("threads", "2 plain threads", 200, 180),
    ]
    lines = scaling.report([], [], pooled, Mode("smoke", 1, 2))
    verdicts = [line for line in lines if line.startswith("scaling/")]
    assert len(verdicts) == 2, lines
    assert "2 IOThreads / 1 IOThread = 1.70x" in verdicts[0]
    assert "2 plain threads / 1 plain thread = 1.90x" in verdicts[1]


def test_samples_are_kept_out_of_the_garbage_collectors_sight() -> None:
    """A run holds millions of samples: in lists, every full collection would
    visit each one, and slow the cases measured after (``Chunk``)."""
    result = Result("group", "case", "work")
    for samples in ([3, 1], [2]):
        result.new_round().samples_ns.extend(samples)
    pooled = result.samples_ns
    for held in [*(chunk.samples_ns for chunk in result.chunks), pooled]:
        # What a collection visits from the container: none of its samples.
        assert not any(isinstance(item, int) for item in gc.get_referents(held))
    assert list(pooled) == [3, 1, 2]
    assert list(result.whole().samples_ns) == [3, 1, 2]


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_repeat_must_be_a_whole_number_of_at_least_one(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        benchmarks_main(["--smoke", "--repeat", bad])
    assert exited.value.code == 2
    assert f"expected a whole number of at least 1, got {bad!r}" in capsys.readouterr().err


def _png_size(path: Path) -> tuple[int, int]:
    """The width and height of a PNG whose every chunk's CRC holds, ending in IEND."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    offset, chunks, size = len(PNG_SIGNATURE), [], (0, 0)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        chunks.append(kind)
        offset += 12 + length
    assert chunks[0] == b"IHDR", (path, chunks)
    assert chunks[-1] == b"IEND", (path, chunks)
    return size


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the plot extra) is not installed")
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_plot_writes_valid_pngs(smoke: SmokeRun) -> None:
    assert smoke.returncode == 0, smoke.stderr
    written = {p.name for p in smoke.plots.iterdir()}
    expected = {
        "summary.png",
        "polling-window.png",
        "pool-timeline.png",
        "latency-roundtrip-await-coroutine.png",
        "latency-pool-dispatch.png",
        "latency-polling-echo.png",
    }
    assert expected <= written, written
    for name in written:
        width, height = _png_size(smoke.plots / name)
        assert min(width, height) > 100, (name, width, height)


def test_plot_without_matplotlib_says_which_extra_before_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it fails
    with pytest.raises(SystemExit) as exit_info:
        benchmarks_main(["--smoke", "--plot", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err
    assert ".[bench,plot]" in err
    assert "[1/" not in err  # nothing ran
    with pytest.raises(_plots.PlotUnavailable, match="plot extra"):
        _plots.require()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_is_plain_lines() -> None:
    out = io.StringIO()
    progress = Progress(2, out)
    progress.step("first")
    progress.step("second")
    progress.close()
    assert out.getvalue() == "[1/2] first\n[2/2] second\n"


@pytest.mark.skipif(importlib.util.find_spec("tqdm") is None, reason="tqdm is not installed")
def test_progress_on_a_terminal_is_a_bar() -> None:
    out = _Terminal()
    progress = Progress(2, out)
    progress.step("first")
    progress.step("second")
    progress.close()
    text = out.getvalue()
    assert "second" in text
    assert "\r" in text
    assert "[1/2]" not in text


def test_progress_on_a_terminal_without_tqdm_is_plain_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = _Terminal()
    progress = Progress(1, out)
    progress.step("only")
    progress.close()
    assert out.getvalue() == "[1/1] only\n"


def test_report_check_still_matches_readme() -> None:
    assert report.main([str(STORED_RUN), "--check", str(REPO / "README.md")]) == 0


def test_summary_of_a_stored_run_is_computed_from_its_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert report.main([str(STORED_RUN), "--summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    data = json.loads(STORED_RUN.read_text())
    row = next(
        r
        for r in data["results"]
        if r["group"] == "roundtrip/await-coroutine/uvloop/split"
        and r["case"] == "io.run, poll-max-ns 32768 (default), native"
    )
    # The uvloop block's first row, last cell: the row's own stored ratios.
    uvloop = next(line for line in lines if line.startswith("uvloop"))
    assert uvloop.split()[-3:] == [f"{row['x'][k]:.2f}" for k in ("p50", "p99", "cpu")]
    assert len(lines) <= 16
