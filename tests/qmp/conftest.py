"""Fixtures of the QMP monitor's tests: a monitor on a unix socket, and a
``qemu.qmp`` client or a raw socket client connected to it.

Async tests run once per loop kind; the monitor's IOThread (and the
iothreads it creates) use the same kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from qemu.qmp import QMPClient

import iothreads
from iothreads.qmp import Monitor

from ..helpers import RawClient, loop_kind, qmp_client


@pytest.fixture
async def same_loop_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """IOThreads started from now on use the running test's loop kind."""
    monkeypatch.setenv("IOTHREADS_LOOP", loop_kind(asyncio.get_running_loop()))


@pytest.fixture
async def monitor(sock_path: str, same_loop_kind: None) -> AsyncIterator[Monitor]:
    async with Monitor(sock_path) as mon:
        try:
            yield mon
        finally:
            # What a test (or a failed one) left behind.
            for info in iothreads.query_iothreads():
                iothreads.object_del(info.id)
            main_loop = iothreads.MainLoop.instance()
            if main_loop is not None:
                main_loop.close()


@pytest.fixture
def monitor_path(monitor: Monitor) -> str:
    """The unix socket *monitor* listens on."""
    assert monitor.path is not None
    return monitor.path


@pytest.fixture
async def qmp(monitor_path: str) -> AsyncIterator[QMPClient]:
    async with qmp_client(monitor_path) as client:
        yield client


@pytest.fixture
async def raw(monitor_path: str) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(monitor_path)
    try:
        yield client
    finally:
        await client.close()
