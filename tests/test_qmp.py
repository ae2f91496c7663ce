"""The QMP monitor, driven by the real ``qemu.qmp.QMPClient`` and by raw sockets.

Every command and every error text issue 6 lists (QEMU 7.2's), negotiation,
several clients at once, the socket's mode and lifecycle, TCP, and bad input:
malformed JSON keeps the connection, oversized or deeply nested input closes
it, a client leaving mid-request harms no one.  Async tests run once per loop
kind; the monitor's IOThread (and the iothreads it creates) use the same kind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import fcntl
import json
import os
import socket
import stat
import struct
import termios
import threading
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

import iothreads
from iothreads.qmp import MAX_MESSAGE_BYTES, MAX_NESTING, Monitor

from .conftest import WAIT, loop_kind

INT64_MAX = 2**63 - 1

IOTHREAD_PROPS = [
    "poll-max-ns",
    "poll-grow",
    "poll-shrink",
    "aio-max-batch",
    "thread-pool-min",
    "thread-pool-max",
]

# -- fixtures -------------------------------------------------------------------------


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
async def qmp(monitor: Monitor) -> AsyncIterator[QMPClient]:
    client = QMPClient("test")
    await client.connect(monitor.path)
    try:
        yield client
    finally:
        await client.disconnect()


async def qmp_error(
    client: QMPClient, cmd: str, args: dict[str, Any] | None = None
) -> tuple[str, str]:
    """(class, desc) of the error *cmd* must answer."""
    with pytest.raises(ExecuteError) as info:
        await client.execute(cmd, args)
    error = info.value.error.error
    return error.class_, error.desc


class RawClient:
    """A plain socket client, for what QMPClient would never send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: str, *, negotiate: bool = True) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(path)
        client = cls(reader, writer)
        assert "QMP" in await client.receive()
        if negotiate:
            assert await client.request({"execute": "qmp_capabilities"}) == {"return": {}}
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> Any:
        line = await asyncio.wait_for(self.reader.readline(), WAIT)
        assert line, "the monitor hung up"
        return json.loads(line)

    async def request(self, message: Any) -> Any:
        await self.send(json.dumps(message).encode() + b"\n")
        return await self.receive()

    async def at_eof(self) -> bool:
        """True if the monitor closed the connection (after any pending data)."""
        return await asyncio.wait_for(self.reader.read(), WAIT) == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass  # the monitor closed first: closed all the same


@pytest.fixture
async def raw(monitor: Monitor) -> AsyncIterator[RawClient]:
    assert monitor.path is not None
    client = await RawClient.connect(monitor.path)
    try:
        yield client
    finally:
        await client.close()


async def add_iothread(client: QMPClient, id: str = "io0", **props: int) -> None:
    args = {"qom-type": "iothread", "id": id, **{k.replace("_", "-"): v for k, v in props.items()}}
    assert await client.execute("object-add", args) == {}


# -- greeting and negotiation ---------------------------------------------------------


def expected_version() -> dict[str, Any]:
    version = metadata.version("iothreads")
    major, minor, micro = (int(x) for x in [*version.split("."), "0", "0"][:3])
    return {
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": f"iothreads {version}",
    }


async def test_greeting_in_qemu_shape(qmp: QMPClient) -> None:
    assert qmp.greeting is not None
    greeting = qmp.greeting._asdict()
    assert greeting == {"QMP": {"version": expected_version(), "capabilities": []}}


async def test_commands_before_negotiation_are_refused(monitor: Monitor) -> None:
    client = QMPClient("early")
    client.negotiate = False
    await client.connect(monitor.path)
    try:
        expected = ("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
        assert await qmp_error(client, "query-iothreads") == expected
        assert await qmp_error(client, "no-such-command") == expected
        assert await qmp_error(client, "qmp_capabilities", {"enable": ["oob"]}) == (
            "GenericError",
            "Capability oob not available",
        )
        assert await qmp_error(client, "qmp_capabilities", {"enable": ["oob", "oob"]}) == (
            "GenericError",
            "Capability oob, oob not available",
        )
        assert await qmp_error(client, "qmp_capabilities", {"enable": ["fast"]}) == (
            "GenericError",
            "Parameter 'enable[0]' does not accept value 'fast'",
        )
        assert await client.execute("qmp_capabilities") == {}
        assert await client.execute("query-iothreads") == []
        complete = (
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored",
        )
        assert await qmp_error(client, "qmp_capabilities") == complete
        # As QEMU: once negotiated, a capability is not even looked at...
        assert await qmp_error(client, "qmp_capabilities", {"enable": ["oob"]}) == complete
        # ...but the arguments are still checked first.
        assert await qmp_error(client, "qmp_capabilities", {"enable": ["fast"]}) == (
            "GenericError",
            "Parameter 'enable[0]' does not accept value 'fast'",
        )
    finally:
        await client.disconnect()


# -- the commands ---------------------------------------------------------------------


async def test_query_version(qmp: QMPClient) -> None:
    assert await qmp.execute("query-version") == expected_version()


async def test_query_commands(qmp: QMPClient) -> None:
    names = [c["name"] for c in await qmp.execute("query-commands")]  # type: ignore[attr-defined]
    assert sorted(names) == sorted(
        [
            "qmp_capabilities",
            "query-version",
            "query-commands",
            "query-iothreads",
            "object-add",
            "object-del",
            "qom-get",
            "qom-set",
            "qom-list",
            "qom-list-types",
            "qom-list-properties",
            "x-query-iothread-stats",
            "x-query-thread-pools",
        ]
    )


async def test_monitor_iothread_is_internal(qmp: QMPClient) -> None:
    # It runs (QEMU's mon_iothread) but is no user object.
    assert "IO mon_iothread" in {t.name for t in threading.enumerate()}
    assert await qmp.execute("query-iothreads") == []
    assert await qmp.execute("qom-list", {"path": "/objects"}) == [
        {"name": "type", "type": "string"}
    ]


async def test_object_lifecycle(qmp: QMPClient) -> None:
    await add_iothread(qmp, "io0", poll_max_ns=1000, thread_pool_max=8)
    io = iothreads.iothread_by_id("io0")
    assert io is not None
    assert io.running
    assert await qmp.execute("query-iothreads") == [
        {
            "id": "io0",
            "thread-id": io.thread_id,
            "poll-max-ns": 1000,
            "poll-grow": 0,
            "poll-shrink": 0,
            "aio-max-batch": 0,
        }
    ]
    assert await qmp.execute("qom-get", {"path": "/objects/io0", "property": "poll-max-ns"}) == 1000
    assert await qmp.execute("qom-get", {"path": "/objects/io0", "property": "type"}) == "iothread"
    assert (
        await qmp.execute(
            "qom-set", {"path": "/objects/io0", "property": "poll-max-ns", "value": 0}
        )
        == {}
    )
    assert io.poll_max_ns == 0
    # QEMU resolves a partial path too.
    assert await qmp.execute("qom-get", {"path": "io0", "property": "thread-pool-max"}) == 8
    assert await qmp.execute("qom-list", {"path": "/objects"}) == [
        {"name": "type", "type": "string"},
        {"name": "io0", "type": "child<iothread>"},
    ]
    assert await qmp.execute("object-del", {"id": "io0"}) == {}
    assert not io.running
    assert await qmp.execute("query-iothreads") == []


async def test_qom_list_of_an_iothread(qmp: QMPClient) -> None:
    await add_iothread(qmp)
    assert await qmp.execute("qom-list", {"path": "/objects/io0"}) == [
        {"name": "type", "type": "string"},
        *({"name": name, "type": "int"} for name in IOTHREAD_PROPS),
    ]
    await qmp.execute("object-del", {"id": "io0"})


async def test_qom_list_types(qmp: QMPClient) -> None:
    concrete = await qmp.execute("qom-list-types")
    assert {"name": "iothread", "parent": "event-loop-base"} in concrete  # type: ignore[operator]
    assert all("abstract" not in t for t in concrete)  # type: ignore[attr-defined]
    assert await qmp.execute(
        "qom-list-types", {"implements": "event-loop-base", "abstract": True}
    ) == [
        {"name": "event-loop-base", "abstract": True, "parent": "object"},
        {"name": "iothread", "parent": "event-loop-base"},
        {"name": "main-loop", "parent": "event-loop-base"},
    ]
    assert await qmp.execute("qom-list-types", {"implements": "no-such-type"}) == []


async def test_qom_list_properties(qmp: QMPClient) -> None:
    assert await qmp.execute("qom-list-properties", {"typename": "iothread"}) == [
        {"name": "type", "type": "string"},
        *({"name": name, "type": "int"} for name in IOTHREAD_PROPS),
    ]
    assert await qmp.execute("qom-list-properties", {"typename": "event-loop-base"}) == [
        {"name": "type", "type": "string"},
        *({"name": name, "type": "int"} for name in IOTHREAD_PROPS[3:]),
    ]


async def test_x_query_iothread_stats(qmp: QMPClient) -> None:
    await add_iothread(qmp, "io0")
    await add_iothread(qmp, "io1")
    io0 = iothreads.iothread_by_id("io0")
    assert io0 is not None
    await io0.run(lambda: None)  # one submission through io0's inbox
    stats = await qmp.execute("x-query-iothread-stats")
    assert [s["id"] for s in stats] == ["io0", "io1"]  # type: ignore[attr-defined]
    fields = [f.name.replace("_", "-") for f in dataclasses.fields(iothreads.AioContextStatistics)]
    assert all(list(s) == ["id", *fields] for s in stats)  # type: ignore[attr-defined]
    assert stats[0]["submitted"] >= 1  # type: ignore[index]
    for id in ("io0", "io1"):
        await qmp.execute("object-del", {"id": id})


async def test_main_loop(qmp: QMPClient) -> None:
    args = {"qom-type": "main-loop", "id": "main-loop", "thread-pool-max": 8}
    assert await qmp.execute("object-add", args) == {}
    assert await qmp_error(qmp, "object-add", {**args, "id": "other"}) == (
        "GenericError",
        "only one main-loop instance allowed",
    )
    assert await qmp.execute("qom-list", {"path": "/objects/main-loop"}) == [
        {"name": "type", "type": "string"},
        *({"name": name, "type": "int"} for name in IOTHREAD_PROPS[3:]),
    ]
    path = "/objects/main-loop"
    assert await qmp.execute("qom-get", {"path": path, "property": "type"}) == "main-loop"
    assert await qmp.execute("qom-get", {"path": path, "property": "thread-pool-max"}) == 8
    await qmp.execute("qom-set", {"path": path, "property": "thread-pool-min", "value": 2})
    assert await qmp_error(
        qmp, "qom-set", {"path": path, "property": "thread-pool-max", "value": 1}
    ) == ("GenericError", "bad thread-pool-min/thread-pool-max values")
    assert await qmp_error(
        qmp, "qom-set", {"path": path, "property": "poll-max-ns", "value": 0}
    ) == ("GenericError", "Property 'main-loop.poll-max-ns' not found")
    main_loop = iothreads.MainLoop.instance()
    assert main_loop is not None
    assert (main_loop.thread_pool_min, main_loop.thread_pool_max) == (2, 8)
    assert await qmp_error(qmp, "object-del", {"id": "main-loop"}) == (
        "GenericError",
        "object 'main-loop' is in use, can not be deleted",
    )
    assert await qmp.execute("query-iothreads") == []  # it is no iothread
    assert await qmp.execute("qom-list-properties", {"typename": "main-loop"}) == [
        {"name": "type", "type": "string"},
        *({"name": name, "type": "int"} for name in IOTHREAD_PROPS[3:]),
    ]


async def test_main_loop_rejects_iothread_properties(qmp: QMPClient) -> None:
    args = {"qom-type": "main-loop", "id": "main-loop", "poll-max-ns": 0}
    assert await qmp_error(qmp, "object-add", args) == (
        "GenericError",
        "Parameter 'poll-max-ns' is unexpected",
    )
    assert iothreads.MainLoop.instance() is None


async def test_x_query_thread_pools(qmp: QMPClient) -> None:
    fields = [f.name.replace("_", "-") for f in dataclasses.fields(iothreads.ThreadPoolStatistics)]
    await add_iothread(qmp, "io0", thread_pool_min=2, thread_pool_max=4)
    await qmp.execute("object-add", {"qom-type": "main-loop", "id": "main-loop"})
    pools = await qmp.execute("x-query-thread-pools")
    assert [p["id"] for p in pools] == ["io0"]  # type: ignore[attr-defined]
    assert list(pools[0]) == ["id", *fields]  # type: ignore[index]
    assert (pools[0]["min"], pools[0]["max"]) == (2, 4)  # type: ignore[index]
    # Live: the pool follows qom-set.
    await qmp.execute("qom-set", {"path": "io0", "property": "thread-pool-max", "value": 3})
    pools = await qmp.execute("x-query-thread-pools")
    assert pools[0]["max"] == 3  # type: ignore[index]
    # A main-loop has a pool once installed on the application's loop.
    main_loop = iothreads.MainLoop.instance()
    assert main_loop is not None
    main_loop.install()
    pools = await qmp.execute("x-query-thread-pools")
    assert [p["id"] for p in pools] == ["io0", "main-loop"]  # type: ignore[attr-defined]
    assert pools[1]["max"] == 64  # type: ignore[index]


# -- QEMU 7.2's errors ----------------------------------------------------------------

OBJECT_ADD_ERRORS = [
    ({"poll-max-ns": -1}, f"poll-max-ns value must be in range [0, {INT64_MAX}]"),
    ({"poll-max-ns": "abc"}, "Invalid parameter type for 'poll-max-ns', expected: integer"),
    ({"poll-max-ns": INT64_MAX + 1}, "Invalid parameter type for 'poll-max-ns', expected: integer"),
    ({"poll-max-ns": 1.5}, "Invalid parameter type for 'poll-max-ns', expected: integer"),
    ({"poll-grow": True}, "Invalid parameter type for 'poll-grow', expected: integer"),
    ({"thread-pool-min": 10, "thread-pool-max": 2}, "bad thread-pool-min/thread-pool-max values"),
    ({"thread-pool-max": 0}, "bad thread-pool-min/thread-pool-max values"),
    ({"id": "1bad"}, "Parameter 'id' expects an identifier"),
    ({"id": None}, "Parameter 'id' is missing"),
    ({"bogus": 1}, "Parameter 'bogus' is unexpected"),
    ({"poll_max_ns": 1}, "Parameter 'poll_max_ns' is unexpected"),
    ({"qom-type": "nope"}, "Parameter 'qom-type' does not accept value 'nope'"),
    ({"qom-type": None}, "Parameter 'qom-type' is missing"),
    ({"qom-type": 5}, "Invalid parameter type for 'qom-type', expected: string"),
    ({"id": 5}, "Invalid parameter type for 'id', expected: string"),
    # Several errors: QEMU's order.  The argument visitor comes first (qom-type,
    # id, the type's members, base type's first, then anything unexpected); the
    # id's form and the values' ranges are checked when the object is made.
    ({"qom-type": "nope", "id": None}, "Parameter 'qom-type' does not accept value 'nope'"),
    ({"qom-type": "nope", "id": 5}, "Parameter 'qom-type' does not accept value 'nope'"),
    (
        {"qom-type": "event-loop-base"},
        "Parameter 'qom-type' does not accept value 'event-loop-base'",
    ),
    (
        {"id": "1bad", "poll-max-ns": "x"},
        "Invalid parameter type for 'poll-max-ns', expected: integer",
    ),
    ({"id": "1bad", "bogus": 1}, "Parameter 'bogus' is unexpected"),
    ({"id": "1bad", "type": "iothread"}, "Parameter 'type' is unexpected"),
    (
        {"poll-max-ns": -1, "poll-grow": "x"},
        "Invalid parameter type for 'poll-grow', expected: integer",
    ),
    (
        {"poll-max-ns": "x", "thread-pool-max": "y"},
        "Invalid parameter type for 'thread-pool-max', expected: integer",
    ),
    ({"poll-max-ns": -1, "bogus": 1}, "Parameter 'bogus' is unexpected"),
    (
        {"qom-type": "main-loop", "id": "1bad", "poll-max-ns": 0},
        "Parameter 'poll-max-ns' is unexpected",
    ),
]


@pytest.mark.parametrize(("change", "desc"), OBJECT_ADD_ERRORS)
async def test_object_add_errors(qmp: QMPClient, change: dict[str, Any], desc: str) -> None:
    args = {"qom-type": "iothread", "id": "io0", **change}
    args = {k: v for k, v in args.items() if v is not None}
    assert await qmp_error(qmp, "object-add", args) == ("GenericError", desc)
    assert await qmp.execute("query-iothreads") == []  # nothing half-made


async def test_object_add_duplicate_id(qmp: QMPClient) -> None:
    await add_iothread(qmp, "io0")
    assert await qmp_error(qmp, "object-add", {"qom-type": "iothread", "id": "io0"}) == (
        "GenericError",
        "attempt to add duplicate property 'io0' to object (type 'container')",
    )
    await qmp.execute("object-del", {"id": "io0"})


QOM_SET_ERRORS = [
    ("poll-max-ns", -1, "GenericError", f"poll-max-ns value must be in range [0, {INT64_MAX}]"),
    (
        "poll-max-ns",
        "0",
        "GenericError",
        "Invalid parameter type for 'poll-max-ns', expected: integer",
    ),
    (
        "poll-max-ns",
        INT64_MAX + 1,
        "GenericError",
        "Invalid parameter type for 'poll-max-ns', expected: integer",
    ),
    # QEMU's JSON parser reads an integer outside int64 and uint64 as a float.
    (
        "poll-max-ns",
        -(2**63) - 1,
        "GenericError",
        "Invalid parameter type for 'poll-max-ns', expected: integer",
    ),
    (
        "poll-max-ns",
        -(2**63),
        "GenericError",
        f"poll-max-ns value must be in range [0, {INT64_MAX}]",
    ),
    ("thread-pool-min", 100, "GenericError", "bad thread-pool-min/thread-pool-max values"),
    ("thread-pool-max", 0, "GenericError", "bad thread-pool-min/thread-pool-max values"),
    ("bogus", 1, "GenericError", "Property 'iothread.bogus' not found"),
]


@pytest.mark.parametrize(("prop", "value", "cls", "desc"), QOM_SET_ERRORS)
async def test_qom_set_errors_leave_the_object_as_it_was(
    qmp: QMPClient, prop: str, value: object, cls: str, desc: str
) -> None:
    await add_iothread(qmp, "io0", poll_max_ns=1000)
    path = "/objects/io0"
    before = [await qmp.execute("qom-get", {"path": path, "property": p}) for p in IOTHREAD_PROPS]
    args = {"path": path, "property": prop, "value": value}
    assert await qmp_error(qmp, "qom-set", args) == (cls, desc)
    after = [await qmp.execute("qom-get", {"path": path, "property": p}) for p in IOTHREAD_PROPS]
    assert after == before
    await qmp.execute("object-del", {"id": "io0"})


LOOKUP_ERRORS = [
    ("object-del", {"id": "X"}, "GenericError", "object 'X' not found"),
    (
        "qom-get",
        {"path": "/objects/X", "property": "poll-max-ns"},
        "DeviceNotFound",
        "Device '/objects/X' not found",
    ),
    (
        "qom-set",
        {"path": "/objects/X", "property": "poll-max-ns", "value": 0},
        "DeviceNotFound",
        "Device '/objects/X' not found",
    ),
    ("qom-list", {"path": "/objects/X"}, "DeviceNotFound", "Device '/objects/X' not found"),
    ("qom-list-properties", {"typename": "X"}, "DeviceNotFound", "Class 'X' not found"),
    ("X", None, "CommandNotFound", "The command X has not been found"),
    ("qom-get", {"path": "/objects/X"}, "GenericError", "Parameter 'property' is missing"),
    ("object-del", {"id": 5}, "GenericError", "Invalid parameter type for 'id', expected: string"),
    (
        "qom-list-types",
        {"abstract": "yes"},
        "GenericError",
        "Invalid parameter type for 'abstract', expected: boolean",
    ),
    ("query-iothreads", {"verbose": True}, "GenericError", "Parameter 'verbose' is unexpected"),
]


@pytest.mark.parametrize(("cmd", "args", "cls", "desc"), LOOKUP_ERRORS)
async def test_lookup_and_argument_errors(
    qmp: QMPClient, cmd: str, args: dict[str, Any] | None, cls: str, desc: str
) -> None:
    assert await qmp_error(qmp, cmd, args) == (cls, desc)


# -- several clients -------------------------------------------------------------------


async def test_two_clients_at_once(monitor: Monitor, qmp: QMPClient) -> None:
    other = QMPClient("other")
    await other.connect(monitor.path)
    try:
        await add_iothread(qmp, "io0")
        assert [t["id"] for t in await other.execute("query-iothreads")] == ["io0"]  # type: ignore[attr-defined]
        # Interleaved requests from both: each gets its own answers.
        answers = await asyncio.gather(
            *(
                client.execute("qom-set", {"path": "io0", "property": "poll-grow", "value": n})
                for n in range(20)
                for client in (qmp, other)
            ),
            *(other.execute("qom-get", {"path": "io0", "property": "type"}) for _ in range(20)),
        )
        assert answers == [{}] * 40 + ["iothread"] * 20
        await other.execute("object-del", {"id": "io0"})
        assert await qmp.execute("query-iothreads") == []
    finally:
        await other.disconnect()


# -- transport -------------------------------------------------------------------------


async def test_socket_mode_and_removal(sock_path: str, same_loop_kind: None) -> None:
    async with Monitor(sock_path) as mon:
        st = os.lstat(sock_path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert mon.path == sock_path
        assert mon.tcp_address is None
    assert not os.path.lexists(sock_path)


async def test_refuses_a_path_that_is_not_a_socket(sock_path: str) -> None:
    Path(sock_path).write_text("precious")
    with pytest.raises(FileExistsError, match="not a socket") as info:
        await Monitor(sock_path).start()
    assert info.value.filename == sock_path
    assert Path(sock_path).read_text() == "precious"
    assert "IO mon_iothread" not in {t.name for t in threading.enumerate()}


async def test_refuses_a_socket_in_use_and_replaces_a_stale_one(
    sock_path: str, same_loop_kind: None
) -> None:
    async with Monitor(sock_path):
        with pytest.raises(OSError, match="already listening") as info:
            await Monitor(sock_path).start()
        assert info.value.errno == errno.EADDRINUSE
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)  # bound, never listening: what a killed server leaves
    stale.close()
    async with Monitor(sock_path):
        client = await RawClient.connect(sock_path)
        await client.close()


async def test_tcp_on_loopback(same_loop_kind: None) -> None:
    async with Monitor(port=0) as mon:
        assert mon.path is None
        assert mon.tcp_address is not None
        host, port = mon.tcp_address
        assert host == "127.0.0.1"
        client = QMPClient("tcp")
        await client.connect((host, port))
        try:
            assert await client.execute("query-iothreads") == []
        finally:
            await client.disconnect()


async def test_monitor_misuse(sock_path: str, same_loop_kind: None) -> None:
    with pytest.raises(ValueError, match="path, a TCP port"):
        Monitor()
    mon = Monitor(sock_path)
    await mon.aclose()  # never started: nothing to do
    async with mon:
        with pytest.raises(RuntimeError, match="only be started once"):
            await mon.start()
    await mon.aclose()  # idempotent


def test_busy_application_loop_does_not_stall_the_monitor(sock_path: str) -> None:
    async def main() -> None:
        async with Monitor(sock_path):
            answered = threading.Event()

            def client() -> None:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(WAIT)
                    s.connect(sock_path)
                    f = s.makefile("rwb")
                    f.readline()  # greeting
                    for cmd in ("qmp_capabilities", "query-iothreads"):
                        f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                        f.flush()
                        assert "return" in json.loads(f.readline())
                    f.close()
                answered.set()

            thread = threading.Thread(target=client)
            thread.start()
            # This loop is busy (blocked) the whole time the client is served.
            assert answered.wait(WAIT)
            thread.join(WAIT)

    asyncio.run(main())


# -- bad input -------------------------------------------------------------------------


async def test_malformed_json_keeps_the_connection(raw: RawClient) -> None:
    await raw.send(b'{"execute": query-iothreads}\n')
    reply = await raw.receive()
    assert reply["error"]["class"] == "GenericError"
    assert reply["error"]["desc"].startswith("JSON parse error, ")
    await raw.send(b'{"execute": "\xff\xfe"}\n')
    assert (await raw.receive())["error"]["desc"].startswith("JSON parse error, invalid UTF-8")
    await raw.send(b'{"execute": "query-iothreads", "execute": "x"}\n')
    assert (await raw.receive())["error"]["desc"] == "JSON parse error, duplicate key 'execute'"
    await raw.send(b'{"execute": "qom-set", "arguments": {"value": NaN}}\n')
    assert (await raw.receive())["error"]["desc"] == "JSON parse error, invalid keyword 'NaN'"
    assert await raw.request({"execute": "query-iothreads", "id": 1}) == {"return": [], "id": 1}


async def test_integers_beyond_64_bits_are_floats(raw: RawClient) -> None:
    # As QEMU's JSON parser: an integer neither int64 nor uint64 is a float,
    # however many digits it has (no parse error), so a type error here.
    assert await raw.request(
        {"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "io0"}}
    ) == {"return": {}}
    type_error = {
        "error": {
            "class": "GenericError",
            "desc": "Invalid parameter type for 'poll-max-ns', expected: integer",
        }
    }
    for literal in (b"9" * 5000, b"-" + b"9" * 5000, b"1" + b"0" * 400):
        await raw.send(
            b'{"execute": "qom-set", "arguments": {"path": "io0", "property": "poll-max-ns",'
            b' "value": ' + literal + b"}}\n"
        )
        assert await raw.receive() == type_error
    get = {"execute": "qom-get", "arguments": {"path": "io0", "property": "poll-max-ns"}}
    assert await raw.request(get) == {"return": 32768}


REQUEST_ERRORS = [
    ([1, 2], "QMP input must be a JSON object"),
    ("text", "QMP input must be a JSON object"),
    ({"execute": 5, "id": "a"}, "QMP input member 'execute' must be a string"),
    (
        {"execute": "query-iothreads", "arguments": [], "id": "a"},
        "QMP input member 'arguments' must be an object",
    ),
    (
        {"execute": "query-iothreads", "exec-oob": "x", "id": "a"},
        "QMP input member 'exec-oob' is unexpected",
    ),
    ({"arguments": {}, "id": "a"}, "QMP input lacks member 'execute'"),
]


@pytest.mark.parametrize(("request_", "desc"), REQUEST_ERRORS)
async def test_bad_requests_echo_the_id(raw: RawClient, request_: Any, desc: str) -> None:
    expected: dict[str, Any] = {"error": {"class": "GenericError", "desc": desc}}
    if isinstance(request_, dict):
        expected["id"] = request_["id"]
    assert await raw.request(request_) == expected
    assert await raw.request({"execute": "query-iothreads"}) == {"return": []}


async def test_stream_framing(raw: RawClient) -> None:
    # Several requests on one line, one request over many writes, any id.
    await raw.send(
        b'{"execute": "query-iothreads", "id": 1}{"execute": "query-commands", "id": [2]}'
        b' {"execute": "bogus", "id": {"n": 3}}\n'
    )
    assert (await raw.receive()) == {"return": [], "id": 1}
    assert (await raw.receive())["id"] == [2]
    assert (await raw.receive())["id"] == {"n": 3}
    # Top-level scalars are texts of their own, wherever they end.
    await raw.send(b'"a"{"execute": "query-iothreads"}1[2]3 \n')
    not_an_object = {"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
    assert await raw.receive() == not_an_object
    assert await raw.receive() == {"return": []}
    for _ in range(3):
        assert await raw.receive() == not_an_object
    text = (
        b'{"execute":\n "qom-list",\r\n "arguments": {"path": "/obj\\u0065cts\\\\"}, "id": "}"}\n'
    )
    for i in range(len(text)):
        await raw.send(text[i : i + 1])
    reply = await raw.receive()
    assert reply == {
        "error": {"class": "DeviceNotFound", "desc": "Device '/objects\\' not found"},
        "id": "}",
    }


async def test_oversized_message_closes_the_connection(monitor: Monitor, raw: RawClient) -> None:
    other = await RawClient.connect(monitor.path)  # type: ignore[arg-type]
    try:
        filler = b"x" * (MAX_MESSAGE_BYTES + 1)
        await raw.send(b'{"execute": "qom-get", "arguments": {"path": "' + filler + b'"}}\n')
        reply = await raw.receive()
        assert reply == {
            "error": {
                "class": "GenericError",
                "desc": f"JSON message size limit exceeded (more than {MAX_MESSAGE_BYTES} bytes)",
            }
        }
        assert await raw.at_eof()
        assert await other.request({"execute": "query-iothreads"}) == {"return": []}
    finally:
        await other.close()


async def test_deep_nesting_closes_the_connection(monitor: Monitor, raw: RawClient) -> None:
    other = await RawClient.connect(monitor.path)  # type: ignore[arg-type]
    try:
        # A valid request first, in the same write: it is answered.
        await raw.send(b'{"execute": "query-iothreads"}' + b"[" * (MAX_NESTING + 1))
        assert await raw.receive() == {"return": []}
        assert await raw.receive() == {
            "error": {
                "class": "GenericError",
                "desc": f"JSON nesting depth limit exceeded (more than {MAX_NESTING})",
            }
        }
        assert await raw.at_eof()
        # Nesting up to the limit is fine (the request is then merely wrong).
        deep = b"[" * MAX_NESTING + b"]" * MAX_NESTING
        assert await other.request(json.loads(deep)) == {
            "error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}
        }
    finally:
        await other.close()


async def test_client_leaving_mid_request_harms_no_one(monitor: Monitor, qmp: QMPClient) -> None:
    assert monitor.path is not None
    await add_iothread(qmp, "io0")
    for data in (
        b'{"execute": "query-iothreads", "id": 1}\n',  # complete: gone before the reply
        b'{"execute": "qom-set", "arguments": {"path": "io0", "prop',  # cut mid-message
    ):
        leaver = await RawClient.connect(monitor.path)
        await leaver.send(data)
        # Reset the connection rather than closing it politely.
        sock = leaver.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await leaver.close()
        assert [t["id"] for t in await qmp.execute("query-iothreads")] == ["io0"]  # type: ignore[attr-defined]
    # A client that never reads its replies only stalls itself.
    hog = await RawClient.connect(monitor.path)
    try:
        await hog.send(b'{"execute": "query-commands"}\n' * 200)
        assert await qmp.execute("qom-get", {"path": "io0", "property": "poll-grow"}) == 0
    finally:
        await hog.close()
    await qmp.execute("object-del", {"id": "io0"})


async def test_close_with_a_client_that_never_reads(sock_path: str, same_loop_kind: None) -> None:
    # Replies queued for a client that reads nothing can never be delivered:
    # closing the monitor drops them instead of waiting for that client.
    mon = Monitor(sock_path)
    await mon.start()
    closed = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hog:
            hog.settimeout(WAIT)
            hog.connect(sock_path)
            hog.recv(4096)  # the greeting
            hog.setblocking(False)
            request = b'{"execute": "query-commands"}'
            try:  # what the socket takes at once; the replies are ~15x larger
                hog.send(b'{"execute": "qmp_capabilities"}' + request * 4000)
            except BlockingIOError:
                pass
            # Until the monitor sends the hog nothing more (its session is
            # stuck on the full socket), checked by another client's round trips.
            probe = await RawClient.connect(sock_path)
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT
                pending, same = -1, 0
                while same < 3:
                    assert loop.time() < deadline, "the hog's session never filled its socket"
                    assert await probe.request({"execute": "query-iothreads"}) == {"return": []}
                    now = struct.unpack("i", fcntl.ioctl(hog, termios.FIONREAD, b"\0" * 4))[0]
                    same = same + 1 if now == pending and now > 0 else 0
                    pending = now
            finally:
                await probe.close()
            await asyncio.wait_for(mon.aclose(), WAIT)
            closed = True
            assert hog.recv(1 << 20)  # what had been delivered is still there
    finally:
        if not closed:
            await mon.aclose()
