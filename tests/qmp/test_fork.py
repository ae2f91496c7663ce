"""A monitor in the child of a fork(): closed there, it leaves the parent's
socket in place, and the child's copy of its listener is released
(tests/test_fork.py has the IOThreads and pools)."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest
from qemu.qmp import QMPClient

from iothreads.qmp import Monitor

from ..helpers import Report, fork_and_inspect

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()"),
    # Forking with threads running is the case under test (3.12+ and the
    # free-threaded build warn about it): see tests/test_fork.py.
    pytest.mark.filterwarnings(
        r"ignore:This process \(pid=\d+\) is multi-threaded:DeprecationWarning"
    ),
]


async def test_a_forked_child_closes_the_monitor_without_touching_the_parents(
    monitor: Monitor, monitor_path: str, qmp: QMPClient
) -> None:
    listener = os.stat(monitor_path)
    servers = monitor._servers
    fds = [sock.fileno() for server in servers for sock in server.sockets]

    def inspect() -> Report:
        report: Report = {"repr": repr(monitor)}
        asyncio.run(monitor.aclose())  # a loop of the child's own
        report["socket_kept"] = os.path.exists(monitor_path)
        report["listeners_released"] = not any(stat.S_ISSOCK(os.fstat(fd).st_mode) for fd in fds)
        return report

    report = await asyncio.to_thread(fork_and_inspect, inspect)
    assert report == {
        "repr": f"<Monitor unix:{monitor_path} stopped>",
        "socket_kept": True,
        "listeners_released": True,
    }
    # The parent's monitor answers on, on the same socket.
    assert os.stat(monitor_path).st_ino == listener.st_ino
    assert await qmp.execute("query-iothreads") == []
