"""thread-pool-min/max over QMP: a value above the bound is refused, naming
it, and a write of the bound leaves the monitor answering while the pool's
spawner is held (tests/test_pool_limits.py has the rest)."""

from __future__ import annotations

import pytest
from qemu.qmp import QMPClient

from iothreads._props import THREAD_POOL_LIMIT

from ..helpers import HUGE, above_limit, add_iothread, hold_thread_starts, qmp_error


async def test_qom_set_of_the_bound_leaves_the_monitor_answering(
    qmp: QMPClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_iothread(qmp, "io0")
    may_start = hold_thread_starts(monkeypatch, "IO io0 worker-")
    path = "/objects/io0"
    try:
        assert await qmp_error(
            qmp, "qom-set", {"path": path, "property": "thread-pool-max", "value": HUGE}
        ) == ("GenericError", above_limit("thread-pool-max", HUGE))
        for prop in ("thread-pool-max", "thread-pool-min"):
            args = {"path": path, "property": prop, "value": THREAD_POOL_LIMIT}
            assert await qmp.execute("qom-set", args) == {}
        # Held starting the first worker, the pool made only that one.
        thread_pools = await qmp.execute("x-query-thread-pools")
        pools = {p["id"]: p for p in thread_pools}  # type: ignore[attr-defined]
        assert pools["io0"]["spawned"] == 1
        listed = await qmp.execute("query-iothreads")
        assert [i["id"] for i in listed] == ["io0"]  # type: ignore[attr-defined]
        await qmp.execute("qom-set", {"path": path, "property": "thread-pool-min", "value": 0})
    finally:
        may_start.set()
    assert await qmp.execute("object-del", {"id": "io0"}) == {}
