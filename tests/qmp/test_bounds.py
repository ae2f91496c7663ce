"""The monitor's bounds on its clients: how many at once, how long one may
keep it waiting, how many error replies one may draw, and the statistics
that count the connections it ended.

No test asserts on timing: the error budget runs on an injected clock, and
an idle timeout is made tiny, with a bounded wait for the close it causes.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
from typing import Any

import pytest

from iothreads.qmp import DEFAULT_MAX_ERRORS, MAX_MESSAGE_BYTES, Monitor, MonitorStatistics
from iothreads.qmp._client import Address, MonitorError, converse

from ..helpers import CHILD_WAIT, WAIT, RawClient, flood, wait_until

#: An idle timeout no client of these tests beats: the close comes at once.
TINY = 1e-3


class ManualClock:
    """A clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def error(desc: str) -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": desc}}


def stats(monitor: Monitor, **figures: int) -> dict[str, int]:
    """The figures of *monitor*'s statistics that *figures* names."""
    snapshot = monitor.statistics()
    return {name: getattr(snapshot, name) for name in figures}


# -- the bounds themselves --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"max_clients": 0}, ValueError, "max_clients must be at least 1, got 0"),
        ({"max_clients": True}, TypeError, "max_clients must be an int, got True"),
        ({"max_clients": 2.0}, TypeError, "max_clients must be an int, got 2.0"),
        ({"max_errors": -1}, ValueError, "max_errors must be at least 1, got -1"),
        ({"max_errors": "9"}, TypeError, "max_errors must be an int, got '9'"),
        ({"idle_timeout": 0}, ValueError, "positive number of seconds .* got 0"),
        ({"idle_timeout": float("inf")}, ValueError, "positive number of seconds .* got inf"),
        ({"idle_timeout": float("nan")}, ValueError, "positive number of seconds .* got nan"),
        ({"idle_timeout": "5"}, TypeError, "number of seconds or None, got '5'"),
    ],
)
def test_bad_bounds_are_refused(
    sock_path: str, kwargs: dict[str, Any], exc: type[Exception], message: str
) -> None:
    with pytest.raises(exc, match=message):
        Monitor(sock_path, **kwargs)


async def test_defaults(sock_path: str, same_loop_kind: None) -> None:
    async with Monitor(sock_path) as monitor:
        assert monitor.statistics() == MonitorStatistics(
            clients=0,
            max_clients=16,
            accepted=0,
            refused=0,
            closed_idle=0,
            closed_errors=0,
            closed_malformed=0,
        )


# -- how many clients at once --------------------------------------------------------------


async def test_a_client_beyond_max_clients_is_refused(sock_path: str, same_loop_kind: None) -> None:
    async with Monitor(sock_path, max_clients=2) as monitor:
        first = await RawClient.connect(sock_path)
        second = await RawClient.connect(sock_path, negotiate=False)
        try:
            assert stats(monitor, clients=2, accepted=2) == {"clients": 2, "accepted": 2}
            # The third gets an error in place of the greeting, then the end.
            reader, writer = await asyncio.open_unix_connection(sock_path)
            extra = RawClient(reader, writer)
            try:
                assert await extra.receive() == error(
                    "too many QMP clients: this monitor serves 2 at once; "
                    "try again once one has left"
                )
                assert await extra.at_eof()
            finally:
                await extra.close()
            # The command line's client says why.
            with pytest.raises(MonitorError, match="refused the connection: too many"):
                await converse(
                    "query",
                    Address(path=sock_path),
                    WAIT,
                    lambda execute: execute("query-iothreads", None),
                )
            assert stats(monitor, clients=2, refused=2) == {"clients": 2, "refused": 2}
            # Those served are served as before.
            assert await first.request({"execute": "query-iothreads"}) == {"return": []}
        finally:
            await second.close()
        # Once one has left, a new client takes its place.
        wait_until(lambda: monitor.statistics().clients == 1, "the monitor to see a client leave")
        third = await RawClient.connect(sock_path)
        try:
            assert await third.request({"execute": "query-iothreads"}) == {"return": []}
            assert stats(monitor, accepted=3, refused=2) == {"accepted": 3, "refused": 2}
        finally:
            await third.close()
            await first.close()


async def test_the_cap_spans_unix_and_tcp(sock_path: str, same_loop_kind: None) -> None:
    async with Monitor(sock_path, port=0, max_clients=1) as monitor:
        assert monitor.tcp_address is not None
        held = await RawClient.connect(sock_path)
        try:
            reader, writer = await asyncio.open_connection(*monitor.tcp_address)
            extra = RawClient(reader, writer)
            try:
                assert "too many QMP clients" in (await extra.receive())["error"]["desc"]
                assert await extra.at_eof()
            finally:
                await extra.close()
        finally:
            await held.close()


# -- how long a client may keep the monitor waiting -------------------------------------


async def test_a_client_that_sends_nothing_is_closed(sock_path: str, same_loop_kind: None) -> None:
    # The negotiation counts: the client connects, reads its greeting, stops.
    async with Monitor(sock_path, idle_timeout=TINY) as monitor:
        other = await RawClient.connect(sock_path, negotiate=False)
        try:
            assert await other.receive() == error(
                f"closing the connection: no request for {TINY:g} s "
                "(the monitor's idle timeout); reconnect to go on"
            )
            assert await other.at_eof()
        finally:
            await other.close()
        wait_until(lambda: monitor.statistics().clients == 0, "the session to end")
        assert stats(monitor, closed_idle=1, accepted=1) == {"closed_idle": 1, "accepted": 1}


async def test_a_client_that_takes_no_reply_is_closed(sock_path: str, same_loop_kind: None) -> None:
    # Its session waits to send, not to read: that wait is bounded too, and
    # so is the close, which drops what the client never took.
    async with Monitor(sock_path, idle_timeout=TINY) as monitor:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hog:
            hog.settimeout(WAIT)
            hog.connect(sock_path)
            flood(hog)
            # The monitor hangs up while the hog still reads nothing.  Bounded
            # by CHILD_WAIT: on the free-threaded build, a process's first
            # hang-up took 0.03 s on an idle machine, up to 0.3 s beside two
            # busy processes, 4.4-4.9 s beside four (0.03 s on the GIL build
            # beside the same four), and over WAIT once in a run of the whole
            # suite beside two.
            poll = select.poll()
            poll.register(hog, select.POLLIN)
            wait_until(
                lambda: any(events & select.POLLHUP for _, events in poll.poll(0)),
                "the monitor to hang up on the hog",
                within=CHILD_WAIT,
            )
        assert stats(monitor, closed_idle=1) == {"closed_idle": 1}
        wait_until(lambda: monitor.statistics().clients == 0, "the session to end")


# -- how many errors a client may draw -----------------------------------------------------


async def test_the_error_budget(sock_path: str, same_loop_kind: None) -> None:
    clock = ManualClock()
    async with Monitor(sock_path, max_errors=3, clock=clock) as monitor:
        client = await RawClient.connect(sock_path)
        try:
            bad = {"execute": "bogus"}
            desc = "The command bogus has not been found"
            not_found = {"error": {"class": "CommandNotFound", "desc": desc}}
            for _ in range(3):
                assert await client.request(bad) == not_found
                # Replies that are no errors cost nothing.
                assert await client.request({"execute": "query-iothreads"}) == {"return": []}
            clock.now += 1.0  # refilled: three more
            for _ in range(3):
                assert await client.request(bad) == not_found
            clock.now += 0.5  # half refilled: one more and a half
            assert await client.request(bad) == not_found
            # The error that finds the budget empty is not answered.
            assert await client.request(bad) == error(
                "closing the connection: more than 3 error replies in a second; "
                "send requests that are valid QMP"
            )
            assert await client.at_eof()
        finally:
            await client.close()
        wait_until(lambda: monitor.statistics().clients == 0, "the session to end")
        assert stats(monitor, closed_errors=1) == {"closed_errors": 1}


async def test_a_stream_of_garbage_is_cut_off(sock_path: str, same_loop_kind: None) -> None:
    # 1 MiB of stray closers would be a million error replies; the client
    # gets the default budget's worth, then the reason, then the end.
    async with Monitor(sock_path, clock=ManualClock()) as monitor:
        other = await RawClient.connect(sock_path)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as flooder:
                flooder.settimeout(WAIT)
                flooder.connect(sock_path)
                replies = flooder.makefile("rb")
                assert b"QMP" in replies.readline()
                flooder.setblocking(False)
                sent = flooder.send(b"]" * (1 << 20))  # what the socket takes at once
                assert sent > DEFAULT_MAX_ERRORS
                flooder.settimeout(WAIT)
                answers = [json.loads(replies.readline()) for _ in range(DEFAULT_MAX_ERRORS + 1)]
                assert (
                    answers[:-1]
                    == [error("JSON parse error, expecting value at line 1 column 1")]
                    * DEFAULT_MAX_ERRORS
                )
                assert "more than 100 error replies in a second" in answers[-1]["error"]["desc"]
                # The end: the monitor hung up with input unread, which
                # AF_UNIX reports as a reset once the replies are read.
                try:
                    assert replies.read() == b""
                except ConnectionResetError:
                    pass
                replies.close()
            # Everyone else is served as before.
            assert await other.request({"execute": "query-iothreads"}) == {"return": []}
        finally:
            await other.close()
        assert stats(monitor, closed_errors=1) == {"closed_errors": 1}


async def test_input_beyond_the_limits_is_counted(sock_path: str, same_loop_kind: None) -> None:
    async with Monitor(sock_path) as monitor:
        client = await RawClient.connect(sock_path)
        try:
            await client.send(b'"' + b"x" * (MAX_MESSAGE_BYTES + 1))
            assert "size limit exceeded" in (await client.receive())["error"]["desc"]
            assert await client.at_eof()
        finally:
            await client.close()
        wait_until(lambda: monitor.statistics().clients == 0, "the session to end")
        assert stats(monitor, closed_malformed=1, closed_errors=0) == {
            "closed_malformed": 1,
            "closed_errors": 0,
        }
