"""Every validation message, worded as QEMU 7.2 words it.

See docs/design.md, "Properties and validation".
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import iothreads
from iothreads import IOThread, MainLoop
from iothreads._event_loop_base import Int64Property

INT64_MAX = 2**63 - 1
PROPS = ["poll_max_ns", "poll_grow", "poll_shrink", "aio_max_batch", "thread_pool_min"]


@pytest.mark.parametrize("attr", PROPS)
def test_negative_value_is_a_range_error(attr: str) -> None:
    wire = attr.replace("_", "-")
    props: dict[str, Any] = {attr: -1}
    with pytest.raises(ValueError, match=rf"^{wire} value must be in range \[0, {INT64_MAX}\]$"):
        IOThread("io0", **props)


@pytest.mark.parametrize("bad", [True, False, 1.0, "1", None, INT64_MAX + 1])
@pytest.mark.parametrize("attr", PROPS)
def test_non_integer_is_a_type_error(attr: str, bad: object) -> None:
    wire = attr.replace("_", "-")
    props: dict[str, Any] = {attr: bad}
    with pytest.raises(
        TypeError, match=rf"^Invalid parameter type for '{wire}', expected: integer$"
    ):
        IOThread("io0", **props)


def test_int64_max_is_accepted() -> None:
    assert IOThread("io0", poll_max_ns=INT64_MAX).poll_max_ns == INT64_MAX


@pytest.mark.parametrize(("lo", "hi"), [(10, 2), (0, 0), (1, 0)])
def test_bad_thread_pool_limits(lo: int, hi: int) -> None:
    with pytest.raises(ValueError, match=r"^bad thread-pool-min/thread-pool-max values$"):
        IOThread("io0", thread_pool_min=lo, thread_pool_max=hi)


@pytest.mark.parametrize("bad", ["1bad", "", "-x", "a b", "é", "a/b", 7, None])
def test_bad_id(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^Parameter 'id' expects an identifier$"):
        IOThread(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["a", "io0", "A-b.c_d", "x1.2-3"])
def test_good_ids(good: str) -> None:
    assert IOThread(good).id == good


def test_errors_are_the_documented_classes() -> None:
    with pytest.raises(iothreads.InvalidParameterValue):
        IOThread("io0", poll_grow=-1)
    with pytest.raises(iothreads.InvalidParameterType):
        IOThread("io0", poll_grow="2")  # type: ignore[arg-type]


def test_defaults() -> None:
    io = IOThread("io0")
    assert io.properties() == {
        "poll-max-ns": 32768,
        "poll-grow": 0,
        "poll-shrink": 0,
        "aio-max-batch": 0,
        "thread-pool-min": 0,
        "thread-pool-max": 64,
    }
    assert (io.thread_id, io.loop, io.running) == (-1, None, False)


def test_attribute_and_wire_access_agree() -> None:
    io = IOThread("io0")
    io.poll_max_ns = 100
    assert io.get_property("poll-max-ns") == 100
    io.set_property("poll-grow", 3)
    assert io.poll_grow == 3


def test_read_on_the_class_a_property_is_its_descriptor() -> None:
    """So introspection (inspect, help(), documentation tools) can list the
    properties of the types without an instance."""
    members = dict(inspect.getmembers(IOThread))
    for attr in PROPS:
        assert isinstance(members[attr], Int64Property)
    assert isinstance(MainLoop.thread_pool_max, Int64Property)


def test_rejected_write_changes_nothing() -> None:
    io = IOThread("io0", thread_pool_min=2, thread_pool_max=8)
    before = io.properties()
    with pytest.raises(ValueError, match="bad thread-pool-min/thread-pool-max values"):
        io.thread_pool_max = 1
    with pytest.raises(ValueError, match="bad thread-pool-min/thread-pool-max values"):
        io.update_params({"thread-pool-min": 9})
    with pytest.raises(TypeError):
        io.update_params({"poll-grow": 2, "poll-shrink": "x"})  # first one valid: not applied
    with pytest.raises(ValueError, match=r"^Parameter 'bogus' is unexpected$"):
        io.update_params({"poll-grow": 2, "bogus": 1})
    assert io.properties() == before


def test_update_params_is_validated_as_a_whole() -> None:
    io = IOThread("io0", thread_pool_min=2, thread_pool_max=8)
    # Each alone would be rejected (16 > 8 max; 1 < 2 min); together they fit.
    io.update_params({"thread-pool-min": 16, "thread-pool-max": 32})
    assert (io.thread_pool_min, io.thread_pool_max) == (16, 32)


def test_unknown_property_name() -> None:
    io = IOThread("io0")
    with pytest.raises(LookupError, match=r"^Property 'iothread.bogus' not found$"):
        io.get_property("bogus")
    with pytest.raises(
        iothreads.PropertyNotFound, match=r"^Property 'iothread.poll_max_ns' not found$"
    ):
        io.set_property("poll_max_ns", 1)  # wire names use hyphens


def test_loop_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match="loop_factory must be callable or None, not 3"):
        IOThread("io0", loop_factory=3)  # type: ignore[arg-type]
