"""The suite's own machinery: a test's loop kind is the one its IOThreads really run."""

from __future__ import annotations

import asyncio

import pytest

from iothreads import IOThread

from .helpers import LoopFactory, loop_kind


def test_a_sync_test_runs_its_iothread_on_the_parametrized_kind(
    loop_factory: LoopFactory, request: pytest.FixtureRequest
) -> None:
    with IOThread("io0", loop_factory=loop_factory) as io:
        assert io.loop is not None
        assert loop_kind(io.loop) == request.node.callspec.params["loop_factory"]


async def test_an_async_test_runs_its_iothread_on_its_own_kind(
    loop_factory: LoopFactory, request: pytest.FixtureRequest
) -> None:
    kind = loop_kind(asyncio.get_running_loop())
    assert kind in request.node.callspec.id.split("-")  # the id pytest shows
    async with IOThread("io0", loop_factory=loop_factory) as io:
        assert io.loop is not None
        assert loop_kind(io.loop) == kind
