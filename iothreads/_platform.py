"""What the operating system offers a thread: CPU affinity, cgroup cpusets, thread
names, and the file descriptors left to the process.

Linux-specific where it has to be, a clear error or a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import sys
from collections.abc import Iterable
from typing import Final

__all__ = ["check_cpu_affinity", "check_fd_headroom", "process_cpus", "set_os_thread_name"]


def check_cpu_affinity(value: Iterable[int] | None) -> frozenset[int] | None:
    """Validate a CPU affinity: None, or a non-empty set of CPUs this process may use.

    Raises:
        ValueError: the platform cannot pin threads, an empty set, or a CPU
            not allowed to this process.
        TypeError: not a set of int CPU ids, nor None.
    """
    if value is None:
        return None
    try:
        cpus = frozenset(value)
    except TypeError:
        cpus = frozenset({value})  # type: ignore[arg-type]  # reported just below
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("cpu_affinity is not supported on this platform; pass None")
    if any(isinstance(c, bool) or not isinstance(c, int) for c in cpus):
        raise TypeError(f"cpu_affinity must be a set of CPU ids or None, not {value!r}")
    if not cpus:
        raise ValueError("cpu_affinity must not be empty; pass None to leave the thread unpinned")
    allowed = process_cpus()
    for cpu in sorted(cpus):
        if cpu not in allowed:
            raise ValueError(
                f"CPU {cpu} is not allowed to this process (allowed: {sorted(allowed)})"
            )
    return cpus


@functools.cache
def process_cpus() -> frozenset[int]:
    """The CPUs any thread of this process may be pinned to.

    Not the calling thread's own mask: a thread may be pinned narrower than
    the process (benchmarks pin the caller), and pinning another thread
    elsewhere is still allowed.  The limit is the cgroup's cpuset where one is
    set (cgroup v2), else every CPU the system has.
    """
    try:
        with open("/sys/fs/cgroup/cpuset.cpus.effective") as f:
            text = f.read().strip()
    except OSError:
        text = ""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus) or frozenset(range(os.cpu_count() or 1))


def set_os_thread_name(name: str) -> None:
    """Name the calling OS thread too, where the platform allows (shows in top, gdb).

    Python < 3.14 only names the Python-level thread.  On Linux,
    prctl(PR_SET_NAME) names the calling thread; the kernel keeps 15 bytes
    plus NUL (TASK_COMM_LEN 16) and truncates the rest itself.
    """
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_NAME, name.encode(), 0, 0, 0)


_PR_SET_NAME: Final = 15  # <linux/prctl.h>


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    # The symbols the process has loaded already, libc's among them:
    # ctypes.util.find_library("c") would run ldconfig in a subprocess, which
    # fails (with a misleading "No usable temporary directory") in a process
    # out of file descriptors, and costs a fork on the first IOThread.
    return ctypes.CDLL(None)


def check_fd_headroom(count: int, purpose: str) -> None:
    """Raise unless *count* more file descriptors can be opened right now.

    It opens them (pipes) and closes them again: what the kernel grants is
    the answer, whatever the limit and the descriptors in use (a count of
    ``/proc/self/fd`` against ``RLIMIT_NOFILE`` would miss the system-wide
    limit, and is Linux's alone).  Another thread may take them in between;
    this guards the case of a process already at its limit.

    Raises:
        OSError: EMFILE (or ENFILE, the system's limit) naming *purpose* and
            what to do; any other error of ``os.pipe()`` as it is.
    """
    opened: list[int] = []
    try:
        while len(opened) < count:
            opened.extend(os.pipe())
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        raise OSError(
            exc.errno,
            f"{purpose} needs {count} free file descriptors and the process has fewer "
            f"({os.strerror(exc.errno)}): close some, or raise the limit "
            "(ulimit -n, or resource.setrlimit(resource.RLIMIT_NOFILE, ...))",
        ) from exc
    finally:
        for fd in opened:
            os.close(fd)
