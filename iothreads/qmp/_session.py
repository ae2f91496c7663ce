"""One client's session with the monitor, and the bounds that keep it fair.

A session greets its client, negotiates, then answers its requests in order
(``_commands`` dispatches each); it ends when the client hangs up, sends what
cannot be read, keeps the monitor waiting past the idle timeout, or draws
error replies faster than its budget refills (docs/design.md, "The QMP
monitor").  Every session runs on the monitor's own IOThread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .._errors import IOThreadsError, IOThreadStopped
from .._iothread import IOThread
from .._runs_in import ThreadRole, runs_in
from ._commands import ClientState, dispatch, version
from ._wire import JsonStreamer, QMPError, check_id, encode, error_reply, parse

if TYPE_CHECKING:
    from ._server import Monitor

__all__ = ["MONITOR_IOTHREAD", "Counters", "Limits", "Session", "in_monitor_iothread"]

_log = logging.getLogger("iothreads.qmp")

#: Bytes read from a client at a time: asyncio's default stream buffer size.
_READ_CHUNK: Final = 64 * 1024


def in_monitor_iothread(owner: Monitor | Session) -> bool:
    io = owner._io
    return io is not None and io.thread_id == threading.get_native_id()


#: The monitor's own IOThread: its listeners, its sessions and their
#: connections live on that IOThread's loop.
MONITOR_IOTHREAD: Final = ThreadRole("the monitor's IOThread", in_monitor_iothread)


class Counters:
    """What ``Monitor.statistics()`` reports, written by the monitor's
    IOThread and read from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards every field below
        self.clients = 0
        self.accepted = 0
        self.refused = 0
        self.closed_idle = 0
        self.closed_errors = 0
        self.closed_malformed = 0


@dataclass(frozen=True)
class Limits:
    """A monitor's bounds on each client (see :class:`Monitor`)."""

    max_clients: int
    idle_timeout: float | None
    max_errors: int
    clock: Callable[[], float]


class _ErrorBudget:
    """A client's allowance of error replies: *limit* at once, refilled at
    *limit* per second of *clock* (a token bucket)."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._clock = clock
        self._tokens = float(limit)
        self._last = clock()

    def spend(self) -> bool:
        """Take one error reply; False when none is left."""
        now = self._clock()
        self._tokens = min(self._limit, self._tokens + (now - self._last) * self._limit)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class _Closed(Exception):
    """The monitor ends the session; *reason* is sent first, if it can be."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason)
        self.reason = reason


class Session:
    """One client of the monitor whose IOThread is *io*: the greeting,
    negotiation, then requests in order, within *limits*."""

    def __init__(
        self,
        io: IOThread,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: Limits,
        counters: Counters,
    ) -> None:
        self._io = io
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._counters = counters
        self._client = ClientState()
        self._errors = _ErrorBudget(limits.max_errors, limits.clock)

    @runs_in(MONITOR_IOTHREAD)
    async def run(self) -> None:
        """Serve the client until it hangs up, sends what cannot be read, or
        oversteps a limit; in the last two cases, say why before hanging up.

        Raises:
            OSError: the connection broke (the caller drops it).
        """
        try:
            await self._serve()
        except _Closed as closed:
            if closed.reason is not None:
                # Nothing waits on this write: the caller's close is bounded.
                self._writer.write(encode(error_reply("GenericError", closed.reason)))

    async def _serve(self) -> None:
        await self._send(encode({"QMP": {"version": version(), "capabilities": []}}))
        streamer = JsonStreamer()
        while True:
            data = await self._receive()
            if not data:
                return
            for text in streamer.feed(data):
                line, failed = await self._answer(text)
                if failed and not self._errors.spend():
                    self._count("closed_errors")
                    raise _Closed(
                        f"closing the connection: more than {self._limits.max_errors} "
                        "error replies in a second; send requests that are valid QMP"
                    )
                await self._send(line)
            if streamer.error is not None:
                # The stream cannot be resynchronised: answer, then hang up.
                self._count("closed_malformed")
                raise _Closed(streamer.error)

    def _count(self, counter: str) -> None:
        with self._counters.lock:
            setattr(self._counters, counter, getattr(self._counters, counter) + 1)

    async def _receive(self) -> bytes:
        """The client's next bytes (empty at its end), within the idle timeout.

        Raises:
            _Closed: nothing came within the idle timeout.
        """
        try:
            async with asyncio.timeout(self._limits.idle_timeout):
                return await self._reader.read(_READ_CHUNK)
        except TimeoutError:
            self._count("closed_idle")
            raise _Closed(
                f"closing the connection: no request for {self._limits.idle_timeout:g} s "
                "(the monitor's idle timeout); reconnect to go on"
            ) from None

    async def _send(self, line: bytes) -> None:
        """Send *line*, waiting for the client to take it at most the idle timeout.

        Raises:
            _Closed: the client took nothing for that long (no reason is sent:
                it would queue behind what the client does not read).
        """
        self._writer.write(line)
        try:
            async with asyncio.timeout(self._limits.idle_timeout):
                await self._writer.drain()
        except TimeoutError:
            self._count("closed_idle")
            raise _Closed(None) from None

    async def _answer(self, text: bytes) -> tuple[bytes, bool]:
        """The reply to one JSON text, encoded, and whether it is an error."""
        try:
            request = parse(text)
            if not isinstance(request, dict):
                raise QMPError("QMP input must be a JSON object")
            check_id(request)
        except QMPError as exc:
            return encode(error_reply(exc.qmp_class, exc.desc)), True
        try:
            reply = {"return": await dispatch(self._client, request)}
        except QMPError as exc:
            reply = error_reply(exc.qmp_class, exc.desc)
        except IOThreadsError as exc:
            reply = error_reply(exc.qmp_class, str(exc))
        except IOThreadStopped as exc:  # an object stopped under the command
            reply = error_reply("GenericError", str(exc))
        except Exception as exc:
            _log.exception("QMP command failed: %r", request)
            reply = error_reply("GenericError", f"internal error: {exc!r}")
        if "id" in request:
            reply["id"] = request["id"]
        try:
            return encode(reply), "error" in reply
        except (TypeError, ValueError) as exc:
            _log.exception("QMP reply has no JSON form: %r", reply)
            error = error_reply("GenericError", f"internal error: {exc}")
            return encode({**error, **({"id": request["id"]} if "id" in request else {})}), True
