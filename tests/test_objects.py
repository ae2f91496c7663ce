"""The object tree: /objects/<id>, QOM access, query_iothreads.

As QEMU 7.2 answers (docs/design.md, "The object tree").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import iothreads
from iothreads import (
    DeviceNotFound,
    IOThread,
    IOThreadInfo,
    ObjectNotFound,
    ObjectPropertyInfo,
    PropertyNotFound,
)

from .helpers import WAIT, LoopFactory


@pytest.fixture
def io0(loop_factory: LoopFactory) -> Iterator[IOThread]:
    with IOThread("io0", loop_factory=loop_factory) as io:
        yield io


def test_user_iothreads_are_registered_from_start_to_stop(loop_factory: LoopFactory) -> None:
    io = IOThread("io0", loop_factory=loop_factory)
    assert iothreads.iothread_by_id("io0") is None  # not before start
    io.start()
    try:
        assert iothreads.iothread_by_id("io0") is io
        (info,) = iothreads.query_iothreads()
        assert info == IOThreadInfo("io0", io.thread_id, 32768, 0, 0, 0)
    finally:
        io.stop()
    assert iothreads.iothread_by_id("io0") is None
    assert iothreads.query_iothreads() == []


def test_query_iothreads_wire_form(io0: IOThread) -> None:
    io0.poll_max_ns = 1000
    io0.aio_max_batch = 7
    assert [i.to_qmp() for i in iothreads.query_iothreads()] == [
        {
            "id": "io0",
            "thread-id": io0.thread_id,
            "poll-max-ns": 1000,
            "poll-grow": 0,
            "poll-shrink": 0,
            "aio-max-batch": 7,
        }
    ]


def test_duplicate_id_is_rejected_and_the_second_never_starts(
    io0: IOThread, loop_factory: LoopFactory
) -> None:
    twin = IOThread("io0", loop_factory=loop_factory)
    with pytest.raises(
        ValueError,
        match=r"^attempt to add duplicate property 'io0' to object \(type 'container'\)$",
    ):
        twin.start()
    assert not twin.running
    assert iothreads.iothread_by_id("io0") is io0


def test_internal_iothreads_are_invisible() -> None:
    io = iothreads.iothread_create("internal0")
    try:
        assert io.running
        assert iothreads.iothread_by_id("internal0") is None
        assert iothreads.query_iothreads() == []
        with pytest.raises(DeviceNotFound):
            iothreads.qom_get("/objects/internal0", "poll-max-ns")
        # An internal iothread does not reserve its id among user objects.
        with IOThread("internal0"):
            assert iothreads.iothread_by_id("internal0") is not io
    finally:
        iothreads.iothread_destroy(io)
    assert not io.running


def test_query_lists_in_creation_order(loop_factory: LoopFactory) -> None:
    with IOThread("b", loop_factory=loop_factory), IOThread("a", loop_factory=loop_factory):
        assert [i.id for i in iothreads.query_iothreads()] == ["b", "a"]


def test_object_add_and_del() -> None:
    io = iothreads.object_add("iothread", "io1", **{"poll-max-ns": 0}, poll_grow=3)
    try:
        assert isinstance(io, IOThread)
        assert io.running
        assert (io.poll_max_ns, io.poll_grow) == (0, 3)
        assert iothreads.iothread_by_id("io1") is io
    finally:
        iothreads.object_del("io1")
    assert not io.running
    assert iothreads.iothread_by_id("io1") is None


@pytest.mark.parametrize(
    ("args", "props", "exc", "message"),
    [
        (("iothread", None), {}, ValueError, "Parameter 'id' is missing"),
        (("iothread", "1bad"), {}, ValueError, "Parameter 'id' expects an identifier"),
        (("iothread", "io1"), {"bogus": 1}, ValueError, "Parameter 'bogus' is unexpected"),
        (
            ("iothread", "io1"),
            {"poll-max-ns": -1},
            ValueError,
            "poll-max-ns value must be in range [0, 9223372036854775807]",
        ),
        (
            ("iothread", "io1"),
            {"poll-max-ns": "1"},
            TypeError,
            "Invalid parameter type for 'poll-max-ns', expected: integer",
        ),
        (
            ("iothread", "io1"),
            {"thread-pool-min": 10, "thread-pool-max": 2},
            ValueError,
            "bad thread-pool-min/thread-pool-max values",
        ),
        (("bogus", "io1"), {}, ValueError, "Parameter 'qom-type' does not accept value 'bogus'"),
    ],
)
def test_object_add_errors_leave_nothing(
    args: tuple[str, str | None], props: dict[str, Any], exc: type[Exception], message: str
) -> None:
    with pytest.raises(exc) as info:
        iothreads.object_add(*args, **props)
    assert str(info.value) == message
    assert isinstance(info.value, iothreads.IOThreadsError)
    assert info.value.qmp_class == "GenericError"
    assert iothreads.query_iothreads() == []


def test_object_del_unknown() -> None:
    with pytest.raises(ObjectNotFound, match=r"^object 'nope' not found$") as info:
        iothreads.object_del("nope")
    assert info.value.qmp_class == "GenericError"


def test_qom_get_and_set(io0: IOThread) -> None:
    assert iothreads.qom_get("/objects/io0", "type") == "iothread"
    assert iothreads.qom_get("/objects/io0", "poll-max-ns") == 32768
    iothreads.qom_set("/objects/io0", "poll-max-ns", 0)
    assert io0.poll_max_ns == 0
    assert iothreads.qom_get("io0", "poll-max-ns") == 0  # partial paths resolve, as in QEMU


def test_qom_errors(io0: IOThread) -> None:
    with pytest.raises(DeviceNotFound, match=r"^Device '/objects/X' not found$") as info:
        iothreads.qom_get("/objects/X", "poll-max-ns")
    assert info.value.qmp_class == "DeviceNotFound"
    with pytest.raises(DeviceNotFound, match=r"^Device '/objects/X' not found$"):
        iothreads.qom_set("/objects/X", "poll-max-ns", 1)
    with pytest.raises(PropertyNotFound, match=r"^Property 'iothread.X' not found$") as info2:
        iothreads.qom_get("/objects/io0", "X")
    assert info2.value.qmp_class == "GenericError"
    with pytest.raises(PropertyNotFound, match=r"^Property 'iothread.X' not found$"):
        iothreads.qom_set("/objects/io0", "X", 1)
    with pytest.raises(iothreads.IOThreadsError, match="Insufficient permission"):
        iothreads.qom_set("/objects/io0", "type", "x")


def test_qom_set_rejected_value_changes_nothing(io0: IOThread) -> None:
    io0.thread_pool_min = 2
    before = io0.properties()
    with pytest.raises(ValueError, match=r"^bad thread-pool-min/thread-pool-max values$"):
        iothreads.qom_set("/objects/io0", "thread-pool-max", 1)
    with pytest.raises(TypeError, match=r"^Invalid parameter type for 'poll-grow'"):
        iothreads.qom_set("/objects/io0", "poll-grow", True)
    assert io0.properties() == before


def test_qom_list(io0: IOThread) -> None:
    assert iothreads.qom_list("/objects/io0") == [
        ObjectPropertyInfo("type", "string"),
        *(
            ObjectPropertyInfo(name, "int")
            for name in [
                "poll-max-ns",
                "poll-grow",
                "poll-shrink",
                "aio-max-batch",
                "thread-pool-min",
                "thread-pool-max",
            ]
        ),
    ]
    assert [p.to_qmp() for p in iothreads.qom_list("/objects")] == [
        {"name": "type", "type": "string"},
        {"name": "io0", "type": "child<iothread>"},
    ]
    with pytest.raises(DeviceNotFound):
        iothreads.qom_list("/objects/nope")


def test_qom_list_types() -> None:
    names = [t.name for t in iothreads.qom_list_types()]
    assert names == ["container", "iothread", "main-loop"]
    assert [t.to_qmp() for t in iothreads.qom_list_types("event-loop-base", abstract=True)] == [
        {"name": "event-loop-base", "abstract": True, "parent": "object"},
        {"name": "iothread", "parent": "event-loop-base"},
        {"name": "main-loop", "parent": "event-loop-base"},
    ]
    assert [t.name for t in iothreads.qom_list_types("iothread")] == ["iothread"]
    assert iothreads.qom_list_types("nothing") == []


def test_qom_list_properties() -> None:
    assert [p.name for p in iothreads.qom_list_properties("main-loop")] == [
        "type",
        "aio-max-batch",
        "thread-pool-min",
        "thread-pool-max",
    ]
    assert len(iothreads.qom_list_properties("iothread")) == 7
    with pytest.raises(DeviceNotFound, match=r"^Class 'nope' not found$"):
        iothreads.qom_list_properties("nope")


def test_statistics_queries(io0: IOThread) -> None:
    io0.run_sync(lambda: None)
    ((id, stats),) = iothreads.query_iothread_stats()
    assert id == "io0"
    assert stats.submitted >= 1
    ((pool_id, pool_stats),) = iothreads.query_thread_pools()
    assert pool_id == "io0"
    assert pool_stats.max == 64


def test_paths_skip_empty_parts_and_the_container_has_a_type(io0: IOThread) -> None:
    assert iothreads.qom_get("/objects/io0/", "poll-max-ns") == 32768
    assert iothreads.qom_get("/objects//io0", "type") == "iothread"
    assert iothreads.qom_get("/objects", "type") == "container"
    assert iothreads.qom_get("/objects/", "type") == "container"
    with pytest.raises(PropertyNotFound, match=r"^Property 'container.poll-max-ns' not found$"):
        iothreads.qom_get("/objects", "poll-max-ns")
    with pytest.raises(PropertyNotFound, match=r"^Property 'container.x' not found$"):
        iothreads.qom_set("/objects", "x", 1)
    with pytest.raises(iothreads.IOThreadsError, match="Insufficient permission"):
        iothreads.qom_set("/objects", "type", "x")
    with pytest.raises(DeviceNotFound):
        iothreads.qom_get("/objects/io0/extra", "type")


def test_thread_pool_limits_above_the_bound_are_rejected() -> None:
    # QEMU takes anything up to INT_MAX; ours stop at THREAD_POOL_LIMIT.
    with pytest.raises(ValueError, match=r"^thread-pool-max value 2147483648 is above 32768"):
        IOThread("io0", thread_pool_max=2**31)
    with pytest.raises(ValueError, match=r"^thread-pool-max value 32769 is above 32768"):
        IOThread("io0", thread_pool_min=2**31, thread_pool_max=32769)
    assert IOThread("io0", thread_pool_max=32768).thread_pool_max == 32768


def test_a_duplicate_id_is_reported_before_bad_pool_limits(io0: IOThread) -> None:
    duplicate = r"^attempt to add duplicate property 'io0' to object \(type 'container'\)$"
    with pytest.raises(ValueError, match=duplicate):
        iothreads.object_add("iothread", "io0", **{"thread-pool-min": 9, "thread-pool-max": 1})
    # ...but after each property's own type and range, as in QEMU.
    with pytest.raises(TypeError, match="Invalid parameter type for 'poll-grow'"):
        iothreads.object_add("iothread", "io0", **{"poll-grow": "x"})


def test_concurrent_deletes_of_one_id_exactly_one_succeeds() -> None:
    """QEMU's second object_del of an id says the object is not found; here
    the deletes race, released together."""
    iothreads.object_add("iothread", "io1")
    callers = 4
    barrier = threading.Barrier(callers)
    outcomes: list[str] = []

    def delete() -> None:
        barrier.wait(WAIT)
        try:
            iothreads.object_del("io1")
        except ObjectNotFound:
            outcomes.append("not found")
        else:
            outcomes.append("deleted")

    threads = [threading.Thread(target=delete) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(outcomes) == ["deleted"] + ["not found"] * (callers - 1)
    assert iothreads.iothread_by_id("io1") is None


def test_object_del_from_the_iothreads_own_thread_changes_nothing() -> None:
    io = iothreads.object_add("iothread", "io1")
    try:
        assert isinstance(io, IOThread)
        with pytest.raises(RuntimeError, match="cannot be stopped from its own thread"):
            io.run_sync(lambda: iothreads.object_del("io1"), timeout=WAIT)
        assert iothreads.iothread_by_id("io1") is io
        assert io.running
    finally:
        iothreads.object_del("io1")


def test_a_delete_that_lost_the_race_after_its_lookup_changes_nothing() -> None:
    """The losing side of the race above, landed deterministically: two
    deletes both found the IOThread, and the second to take it out of
    /objects is told it is gone, which object_del reports as not found."""
    iothreads.object_add("iothread", "io1")
    io = iothreads.iothread_by_id("io1")
    assert io is not None
    assert io._delete() is True
    assert io._delete() is False
    assert iothreads.iothread_by_id("io1") is None
    assert not io.running
