"""tools/soak.py, run briefly: every call accounted for, nothing leaked.

The script itself rotates over both loops and both inbox implementations, and
checks what it reports; the test runs it as a child process, bounded.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

from .helpers import CHILD_WAIT, WAIT

SOAK = pathlib.Path(__file__).parent.parent / "tools" / "soak.py"


def test_a_short_soak_loses_doubles_and_leaks_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "2", "--no-fork"],
        capture_output=True,
        text=True,
        timeout=CHILD_WAIT + 6 * WAIT,  # the child, plus each wait of its last cycle
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "OK"
    loops = {line.split("/")[0] for line in lines if " cycles=" in line}
    assert loops == {"asyncio", "uvloop"}
    assert all(" lost=0 doubled=0" in line for line in lines if " cycles=" in line)


def test_a_soak_of_no_time_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "0"],
        capture_output=True,
        text=True,
        timeout=CHILD_WAIT,
        check=False,
    )
    assert proc.returncode == 2
    assert "--seconds: must be a positive number, not '0'" in proc.stderr
