"""The client side: how the command line's ``query`` and ``set`` talk to a monitor.

They speak QMP through ``qemu.qmp``, the QEMU project's own client library,
so they work against any QMP monitor, this package's or QEMU's.  It is the
optional ``cli`` extra: imported only when a conversation starts, so the rest
of the package works without it.  What goes wrong reaches the user as a
``MonitorError`` whose text is what to print.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, TypeVar

from ._server import LOOPBACK

__all__ = ["Address", "Execute", "MonitorError", "converse"]

_T = TypeVar("_T")

#: Longest reply line query/set accept: query-iothreads takes ~150 bytes per
#: iothread, so 16 MiB is far beyond any real answer while still bounding a
#: broken monitor (qemu.qmp's default is 10 MB).
_REPLY_LIMIT: Final = 16 << 20

#: Characters of a garbled reply quoted in an error: about one terminal line.
_QUOTE: Final = 80

#: What to install for query and set.
_CLI_EXTRA: Final = "pip install 'iothreads[cli]'"


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


def _qemu_qmp(command: str) -> ModuleType:
    """``qemu.qmp``, imported when query or set needs it.

    Raises:
        MonitorError: it is not installed; the message says which extra brings it.
    """
    try:
        return importlib.import_module("qemu.qmp")
    except ImportError:
        raise MonitorError(
            f"iothreads {command}: speaking QMP needs the qemu.qmp package: {_CLI_EXTRA}"
        ) from None


#: Runs one QMP command and returns its reply (qemu.qmp's ``execute``).
Execute = Callable[[str, "dict[str, Any] | None"], Awaitable[Any]]


async def converse(
    command: str,
    address: Address,
    timeout: float,
    conversation: Callable[[Execute], Awaitable[_T]],
) -> _T:
    """Connect to the monitor at *address* and run *conversation* with it,
    all within *timeout*.

    One deadline bounds the whole conversation (the connection, the greeting,
    the negotiation, each reply, the goodbye), so a monitor that never
    answers cannot keep a script waiting.

    Raises:
        MonitorError: qemu.qmp is not installed; the monitor's error; or the
            reason it could not be reached or did not answer, worded for the user.
    """
    qmp = _qemu_qmp(command)
    client = _client(qmp)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            await client.connect(
                address.path
                if address.path is not None
                else (address.host or LOOPBACK, address.port)
            )
            return await conversation(client.execute)
    except TimeoutError:
        raise MonitorError(
            f"the monitor at {address} did not answer within {timeout:g} s"
        ) from None
    except qmp.QMPError as exc:
        raise MonitorError(_describe(qmp, exc, command, address, client.first_message)) from None
    finally:
        await _disconnect(qmp, client, deadline)


def _client(qmp: ModuleType) -> Any:
    """A qemu.qmp client that keeps the first message it receives.

    A monitor serving as many clients as it may sends an error in place of
    its greeting, which qemu.qmp reports only as a greeting it did not
    understand; the kept message says why.
    """

    class Client(qmp.QMPClient):  # type: ignore[misc,name-defined]
        first_message: Any = None

        def _cb_inbound(self, msg: Any) -> Any:  # qemu.qmp's hook for subclasses
            if self.first_message is None:
                self.first_message = msg
            return super()._cb_inbound(msg)

    return Client("iothreads", readbuflen=_REPLY_LIMIT)


def _describe(
    qmp: ModuleType, exc: Exception, command: str, address: Address, first_message: Any
) -> str:
    """*exc*, raised by qemu.qmp, as the message the command line prints;
    *first_message* is the monitor's first, if it sent one."""
    if isinstance(exc, qmp.ExecuteError):
        return str(exc)  # the monitor's desc
    cause = exc
    # ConnectError, and GreetingError or NegotiationError in it, wrap their cause.
    while hasattr(cause, "exc") and isinstance(cause.exc, Exception):
        if isinstance(cause, qmp.ConnectError) and isinstance(cause.exc, OSError):
            return f"iothreads {command}: cannot reach the monitor at {address}: {cause.exc}"
        cause = cause.exc
    message = importlib.import_module("qemu.qmp.message")
    if isinstance(cause, EOFError | qmp.ExecInterruptedError):
        return "the monitor closed the connection"
    if isinstance(cause, message.DeserializationError):
        return f"the monitor sent {cause.raw[:_QUOTE]!r}, not JSON"
    if isinstance(cause, message.UnexpectedTypeError):
        return f"the monitor sent {cause.value!r}, not a JSON object"
    if isinstance(cause, KeyError):  # a JSON object, not a QMP greeting
        refusal = first_message.get("error") if first_message is not None else None
        if isinstance(refusal, dict):
            return f"the monitor at {address} refused the connection: {refusal.get('desc')}"
        return f"{address} is not a QMP monitor ({cause.args[0] if cause.args else cause})"
    return f"the monitor at {address} broke the protocol: {cause}"


async def _disconnect(qmp: ModuleType, client: Any, deadline: float) -> None:
    """Close the conversation, by the deadline at the latest; never raises.

    Whatever ended the conversation has been reported already: qemu.qmp
    raising it again here (its reader's error) adds nothing.
    """
    try:
        async with asyncio.timeout_at(deadline):
            await client.disconnect()
    except (TimeoutError, qmp.QMPError, OSError, EOFError):
        pass  # a peer that reads nothing: asyncio.run() drops what is left
