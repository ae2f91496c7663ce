"""Where a run's figures come from: the code, the date, the machine, the software.

Stored at the top of every JSON a run writes (``python -m benchmarks --json``),
so that a figure quoted anywhere can be traced to the commit that produced it
and the machine it ran on, and ``benchmarks.report`` can print that with it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from iothreads import IOThread

#: The checkout the benchmarks run from.
REPO = Path(__file__).resolve().parent.parent

#: Packages whose versions a figure depends on.
PACKAGES = ("iothreads", "uvloop", "anyio")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _idle_settings() -> dict[str, Any]:
    """How an idle CPU waits: what decides the cost of waking a thread on it.

    The kernel command line's idle and haltpoll settings only (not the whole
    line), the cpuidle driver and governor, and the haltpoll module's
    parameters when it is loaded.
    """
    cmdline = (_read("/proc/cmdline") or "").split()
    params_dir = Path("/sys/module/haltpoll/parameters")
    params = (
        {p.name: _read(str(p)) for p in sorted(params_dir.iterdir())} if params_dir.is_dir() else {}
    )
    return {
        "cmdline": [
            arg
            for arg in cmdline
            if "haltpoll" in arg or arg.startswith(("idle=", "cpuidle", "processor.max_cstate"))
        ],
        "cpuidle_driver": _read("/sys/devices/system/cpu/cpuidle/current_driver"),
        "cpuidle_governor": _read("/sys/devices/system/cpu/cpuidle/current_governor_ro")
        or _read("/sys/devices/system/cpu/cpuidle/current_governor"),
        "haltpoll_parameters": params,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(settings: dict[str, Any]) -> dict[str, Any]:
    """The run's metadata; *settings* says how it was run (mode, samples, suites)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    gil = getattr(sys, "_is_gil_enabled", None)
    return {
        "commit": commit,
        "commit_short": commit[:7] if commit else None,
        # Figures from a tree with uncommitted changes cannot be traced to a commit.
        "dirty": bool(status) if status is not None else None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": settings,
        "machine": {
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpus_allowed": sorted(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "system": platform.system(),
            "kernel": platform.release(),
            "idle": _idle_settings(),
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "build": sys.version,
            # A free-threaded build (PEP 703) may still run with the GIL
            # (PYTHON_GIL=1, or an extension that asked for it): both are recorded.
            "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
            "gil_enabled": gil() if gil else True,
        },
        "packages": {name: _version(name) for name in PACKAGES},
        "iothread_defaults": dict(IOThread.property_defaults),
    }


def file_name(meta: dict[str, Any]) -> str:
    """``<date>-<shortcommit>[-ft][-quick][-<suites>][-x<repeat>].json``: the name
    ``--json DIR/`` gives.

    ``-ft``: a free-threaded build, so that its run and the GIL build's of the
    same commit sit side by side.
    """
    settings = meta["settings"]
    parts = [meta["date"][:10], meta["commit_short"] or "nogit"]
    if meta["python"].get("free_threaded_build"):
        parts.append("ft")
    if settings["mode"] != "full":
        parts.append(settings["mode"])
    if settings["only"]:
        parts += settings["only"]
    if settings.get("repeat", 1) > 1:
        parts.append(f"x{settings['repeat']}")
    return "-".join(parts) + ".json"


__all__ = ["file_name", "provenance"]
