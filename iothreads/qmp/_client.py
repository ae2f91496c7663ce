"""Just enough of a QMP client for the command line's ``query`` and ``set``.

It talks to any QMP monitor (this package's or QEMU's): connect, read the
greeting, negotiate, execute commands one at a time, close.  One deadline
bounds the whole conversation, so a monitor that never answers cannot keep
a script waiting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ._server import LOOPBACK
from ._wire import encode

# The command line imports these from here; they are no public API.
__all__: list[str] = []

T = TypeVar("T")

#: Longest reply line the client accepts.  Replies are one line each;
#: query-iothreads takes ~150 bytes per iothread, so 16 MiB is far beyond any
#: real answer while still bounding a broken server.
_REPLY_LIMIT: Final = 16 << 20

#: Bytes of a garbled reply quoted in the error: about one terminal line.
_QUOTE: Final = 80


@dataclass(frozen=True)
class Address:
    """Where a monitor listens: ``unix:PATH`` or ``tcp:[HOST]:PORT``."""

    path: str | None = None
    host: str | None = None  # None: loopback (the monitor's default)
    port: int | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"tcp:{self.host or ''}:{self.port}"


class MonitorError(Exception):
    """Talking to the monitor failed; ``str()`` is what to print (the
    monitor's ``desc`` when it refused a command)."""


class QMPClient:
    """A QMP client: :meth:`connect`, :meth:`negotiate`, :meth:`execute`,
    :meth:`close`.

    *timeout* bounds the whole conversation: from :meth:`connect` on, every
    wait for the monitor (the connection, the greeting, each reply, the
    close) must be over within that many seconds, else the call raises
    :class:`MonitorError`.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._deadline = 0.0  # loop time; set by connect()
        self._address: Address | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_id = 0

    async def connect(self, address: Address) -> None:
        """Connect to *address* and read the monitor's greeting.

        Raises:
            OSError: the connection failed.
            MonitorError: the peer is no QMP monitor, refused the connection
                (its error's ``desc`` is quoted), or did not answer in time.
        """
        self._address = address
        self._deadline = asyncio.get_running_loop().time() + self._timeout
        if address.path is not None:
            opening = asyncio.open_unix_connection(address.path, limit=_REPLY_LIMIT)
        else:
            opening = asyncio.open_connection(
                address.host or LOOPBACK, address.port, limit=_REPLY_LIMIT
            )
        self._reader, self._writer = await self._in_time(opening)
        greeting = await self._receive()
        if "error" in greeting:  # a monitor serving as many clients as it may
            desc = greeting["error"].get("desc", greeting["error"])
            raise MonitorError(f"the monitor at {address} refused the connection: {desc}")
        if "QMP" not in greeting:
            raise MonitorError(f"{address} is not a QMP monitor (greeting {greeting!r})")

    async def negotiate(self) -> None:
        """Leave capabilities negotiation mode (no capability asked for).

        Raises:
            MonitorError, OSError: as :meth:`execute`.
        """
        await self.execute("qmp_capabilities")

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command; return its ``return`` value.

        Raises:
            MonitorError: the monitor's error reply (its ``desc``), or the
                monitor hung up, sent what is not QMP, or did not answer in time.
            OSError: the connection broke.
        """
        assert self._writer is not None, "connect() first"
        self._last_id += 1
        request: dict[str, Any] = {"execute": command, "id": self._last_id}
        if arguments:
            request["arguments"] = arguments
        self._writer.write(encode(request))
        await self._in_time(self._writer.drain())
        while True:
            reply = await self._receive()
            if reply.get("id") != self._last_id:
                continue  # an event (QMP interleaves them with replies)
            if "error" in reply:
                raise MonitorError(reply["error"].get("desc", reply["error"]))
            return reply.get("return")

    async def close(self) -> None:
        """Close the connection, if any.  Idempotent; never raises OSError."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        try:
            await self._in_time(writer.wait_closed())
        except OSError:
            pass  # broken already: closed all the same
        except MonitorError:
            writer.transport.abort()  # a peer that reads nothing: drop what is queued

    async def _receive(self) -> dict[str, Any]:
        assert self._reader is not None
        try:
            line = await self._in_time(self._reader.readline())
        except ValueError:  # asyncio's LimitOverrunError, re-raised as ValueError
            raise MonitorError(f"the monitor sent a line over {_REPLY_LIMIT} bytes") from None
        if not line:
            raise MonitorError("the monitor closed the connection")
        try:
            message = json.loads(line)
        except ValueError:
            raise MonitorError(f"the monitor sent {line[:_QUOTE]!r}, not JSON") from None
        if not isinstance(message, dict):
            raise MonitorError(f"the monitor sent {message!r}, not a JSON object")
        return message

    async def _in_time(self, step: Awaitable[T]) -> T:
        """Await *step* until the conversation's deadline.

        Raises:
            MonitorError: the deadline passed first.
        """
        try:
            async with asyncio.timeout_at(self._deadline):
                return await step
        except TimeoutError:
            raise MonitorError(
                f"the monitor at {self._address} did not answer within {self._timeout:g} s"
            ) from None
