"""The QMP commands and their errors, driven by the real ``qemu.qmp.QMPClient``.

The greeting, negotiation, every command, and QEMU 7.2's error classes and
texts for bad arguments, unknown objects and malformed requests.
"""

from __future__ import annotations

import dataclasses
from importlib import metadata
from typing import Any

import pytest
from qemu.qmp import QMPClient

import iothreads
import iothreads.qmp._commands
from iothreads import IOThreadStopped

from ..helpers import (
    EVENT_LOOP_BASE_PROPS,
    INT64_MAX,
    IOTHREAD_PROPS,
    RawClient,
    add_iothread,
    qmp_client,
    qmp_error,
    qom_properties,
)

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


async def test_commands_before_negotiation_are_refused(monitor_path: str) -> None:
    async with qmp_client(monitor_path, negotiate=False) as client:
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
    assert await qmp.execute("qom-list", {"path": "/objects/io0"}) == qom_properties(IOTHREAD_PROPS)
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
    assert await qmp.execute("qom-list-properties", {"typename": "iothread"}) == qom_properties(
        IOTHREAD_PROPS
    )
    assert await qmp.execute(
        "qom-list-properties", {"typename": "event-loop-base"}
    ) == qom_properties(EVENT_LOOP_BASE_PROPS)


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
    assert await qmp.execute("qom-list", {"path": "/objects/main-loop"}) == qom_properties(
        EVENT_LOOP_BASE_PROPS
    )
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
    assert await qmp.execute("qom-list-properties", {"typename": "main-loop"}) == qom_properties(
        EVENT_LOOP_BASE_PROPS
    )


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


async def test_an_object_stopped_under_a_command_is_a_generic_error(
    qmp: QMPClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IOThreadStopped is no internal error: its own text, class GenericError."""
    gone = "IOThread 'io0' is stopped; it takes no more work"

    def stopped_under_us(path: str, prop: str) -> int:
        raise IOThreadStopped(gone)

    monkeypatch.setattr(iothreads.qmp._commands, "qom_get", stopped_under_us)
    args = {"path": "/objects/io0", "property": "poll-max-ns"}
    assert await qmp_error(qmp, "qom-get", args) == ("GenericError", gone)


QOM_GET = {"execute": "qom-get", "arguments": {"path": "/objects/io0", "property": "poll-max-ns"}}


@pytest.mark.parametrize("id_", [7, None], ids=["with-id", "without-id"])
async def test_a_reply_with_no_json_form_is_an_internal_error(
    raw: RawClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    id_: int | None,
) -> None:
    """A command's value that JSON cannot carry (a bug): the client still gets
    one reply, a GenericError that names the value, with the request's id;
    the monitor logs it, and the session goes on."""
    monkeypatch.setattr(iothreads.qmp._commands, "qom_get", lambda path, prop: complex(1, 2))
    request: dict[str, Any] = QOM_GET if id_ is None else {**QOM_GET, "id": id_}
    desc = "internal error: complex (1+2j) has no JSON form"
    expected: dict[str, Any] = {"error": {"class": "GenericError", "desc": desc}}
    if id_ is not None:
        expected["id"] = id_
    assert await raw.request(request) == expected
    assert "QMP reply has no JSON form" in caplog.text
    assert await raw.request({"execute": "query-iothreads"}) == {"return": []}


async def test_a_command_failing_unexpectedly_is_an_internal_error(
    raw: RawClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception no command should raise (a bug): a GenericError that
    names it, logged with its traceback; the session goes on."""

    def broken(path: str, prop: str) -> int:
        raise RuntimeError("broken")

    monkeypatch.setattr(iothreads.qmp._commands, "qom_get", broken)
    assert await raw.request({**QOM_GET, "id": "x"}) == {
        "error": {"class": "GenericError", "desc": "internal error: RuntimeError('broken')"},
        "id": "x",
    }
    assert "QMP command failed" in caplog.text
    assert await raw.request({"execute": "query-iothreads"}) == {"return": []}
