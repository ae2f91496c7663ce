"""A QMP-compatible monitor: QEMU's machine protocol over a unix (or TCP) socket.

``Monitor`` speaks QMP as QEMU 7.2 does, so ``qemu.qmp`` and ``qmp-shell``
work against it unchanged: the greeting, capabilities negotiation, requests
``{"execute": ..., "arguments": ..., "id": ...}`` and ``{"return": ...}`` /
``{"error": {"class": ..., "desc": ...}}`` replies with the ``id`` echoed.
The commands manage the object tree through the public objects API only
(``object_add``, ``qom_set``, ``query_iothreads``...); this module is the only
one that knows JSON.

The monitor runs on an internal IOThread of its own (``iothread_create``, as
QEMU's ``mon_iothread``), so a busy application loop never stalls it and it
never appears in ``query-iothreads``.  Each client is served by one task on
that IOThread's loop; its requests are answered in order.  Commands that can
block on another IOThread (``object-add``, ``object-del`` start and join
threads) run in a worker thread, so one slow command does not hold up the
other clients.

Threads: every ``_Session`` method, ``_Command`` handler and the ``Monitor``
methods marked so run in the monitor's IOThread; ``Monitor.start`` and
``Monitor.aclose`` run on the caller's loop and hop to the IOThread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Any, Final, Self

from ._errors import IOThreadsError, IOThreadStopped
from ._iothread import IOThread
from ._objects import (
    iothread_create,
    object_add,
    object_del,
    qom_get,
    qom_list,
    qom_list_properties,
    qom_list_types,
    qom_set,
    query_iothread_stats,
    query_iothreads,
    query_thread_pools,
)

__all__ = ["MAX_MESSAGE_BYTES", "MAX_NESTING", "Monitor"]

_log = logging.getLogger(__name__)

#: Largest request accepted, in bytes.  The largest real request here is an
#: ``object-add`` of a few hundred bytes; 1 MiB leaves any client ample room
#: while bounding what one connection can make the monitor buffer.  (QEMU's
#: json-streamer allows 64 MiB; issue 6 asks for 1 MiB.)
MAX_MESSAGE_BYTES: Final = 1 << 20

#: Deepest nesting of ``{}``/``[]`` accepted.  Requests here nest 3 deep at
#: most.  QEMU's json-streamer allows 1024 (MAX_NESTING), but Python's json
#: decoder recurses once per level and the default recursion limit is 1000, so
#: a limit of that order would turn deep input into a RecursionError; 64 is far
#: above any real request and far below the interpreter's limit.
MAX_NESTING: Final = 64

#: Bytes read from a client at a time: asyncio's default stream buffer size.
_READ_CHUNK: Final = 64 * 1024

#: Unix socket mode: only the owner may connect (the monitor can reconfigure
#: and delete every object, so it is as privileged as the process).
_SOCKET_MODE: Final = 0o600

#: The internal IOThread's id, as QEMU names its monitor iothread.
_MONITOR_IOTHREAD_ID: Final = "mon_iothread"

#: The default TCP host: loopback, unless the embedder names another.
_LOOPBACK: Final = "127.0.0.1"


# -- errors on the wire ---------------------------------------------------------


class _QMPError(Exception):
    """A request the monitor refuses, with its QMP error class and text."""

    def __init__(self, desc: str, qmp_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.qmp_class = qmp_class
        self.desc = desc


def _error_reply(qmp_class: str, desc: str) -> dict[str, Any]:
    return {"error": {"class": qmp_class, "desc": desc}}


def _json_default(value: object) -> object:
    """JSON for what statistics hold besides JSON types: sets (CPU affinity)."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form")


def _encode(message: Mapping[str, Any]) -> bytes:
    """One message on the wire: JSON, one line, as QEMU sends it.

    Raises:
        TypeError: a value has no JSON form.
    """
    return json.dumps(message, default=_json_default).encode() + b"\n"


# -- splitting the byte stream into JSON texts ------------------------------------

# Outside strings, the bytes that matter: brackets, a quote, whitespace (which
# ends a top-level scalar).  Inside strings: an escape pair or the closing quote.
_OUTSIDE: Final = re.compile(rb'[{}\[\]"]|[ \t\r\n]')
_INSIDE: Final = re.compile(rb'\\.|"', re.DOTALL)


class _JsonStreamer:
    """Cuts a byte stream into complete JSON texts, as QEMU's json-streamer.

    A text ends when its brackets balance (or, for a top-level scalar, at the
    next whitespace), so several requests may share a line and one request
    may span lines.  Only brackets, quotes and escapes are looked at; the
    texts themselves are parsed later.  Once a limit is exceeded, ``error``
    says which and the streamer takes no more input.

    Owned by one session (the monitor's IOThread).
    """

    def __init__(self) -> None:
        self._buf = bytearray()  # the text being assembled
        self._pos = 0  # how far into _buf has been scanned
        self._depth = 0
        self._in_string = False
        self.error: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add *data*; return the texts it completed (maybe none)."""
        if self.error is not None:
            return []
        texts: list[bytes] = []
        buf = self._buf
        buf += data
        pos = self._pos
        while pos < len(buf):
            if self._in_string:
                m = _INSIDE.search(buf, pos)
                if m is None:
                    # Only an escape cut in two can be pending: rescan it.
                    pos = len(buf) - 1 if buf.endswith(b"\\") else len(buf)
                    break
                pos = m.end()
                if m.group() == b'"':
                    self._in_string = False
                    if self._depth == 0:  # a top-level string is a whole text
                        texts.append(bytes(buf[:pos]))
                        del buf[:pos]
                        pos = 0
                continue
            m = _OUTSIDE.search(buf, pos)
            if m is None:
                pos = len(buf)
                break
            char, pos = m.group(), m.end()
            if self._depth == 0 and char in b'"{[' and buf[: pos - 1].strip():
                # A top-level scalar ends where the next text starts.
                texts.append(bytes(buf[: pos - 1]))
                del buf[: pos - 1]
                pos = 1
            if char == b'"':
                self._in_string = True
            elif char in b"{[":
                self._depth += 1
                if self._depth > MAX_NESTING:
                    self.error = f"JSON nesting depth limit exceeded (more than {MAX_NESTING})"
                    return texts
            elif char in b"}]":
                self._depth -= 1
                if self._depth <= 0:  # balanced (or a stray closer: a parse error)
                    texts.append(bytes(buf[:pos]))
                    del buf[:pos]
                    pos, self._depth = 0, 0
            elif self._depth == 0:  # whitespace at top level
                if buf[: pos - 1].strip():
                    texts.append(bytes(buf[: pos - 1]))
                del buf[:pos]
                pos = 0
        self._pos = pos
        if any(len(t) > MAX_MESSAGE_BYTES for t in texts) or len(buf) > MAX_MESSAGE_BYTES:
            self.error = f"JSON message size limit exceeded (more than {MAX_MESSAGE_BYTES} bytes)"
            return [t for t in texts if len(t) <= MAX_MESSAGE_BYTES]
        return texts


#: The integers QEMU's JSON parser keeps as integers: int64, else uint64
#: (qobject/json-parser.c, parse_literal); any other is read as a double.
_JSON_INT_MIN: Final = -(1 << 63)
_JSON_INT_MAX: Final = (1 << 64) - 1
#: Characters of the longest of those ("-9223372036854775808" is 20): longer
#: texts go straight to float, so int()'s digit limit is never reached.
_JSON_INT_CHARS: Final = 20


def _parse_int(text: str) -> int | float:
    """A JSON integer as QEMU reads it: an int in int64 or uint64 range, else
    a float (so a property answers with its type error, not a parse error)."""
    if len(text) <= _JSON_INT_CHARS:
        value = int(text)
        if _JSON_INT_MIN <= value <= _JSON_INT_MAX:
            return value
    return float(text)


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid keyword '{name}'")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key '{key}'")
        obj[key] = value
    return obj


def _parse(text: bytes) -> object:
    """Parse one JSON text strictly (no NaN/Infinity, no duplicate keys).

    Raises:
        _QMPError: the text is not valid JSON; the message says where.
    """
    try:
        return json.loads(
            text.decode("utf-8"),
            parse_int=_parse_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_object_pairs,
        )
    except UnicodeDecodeError as exc:
        raise _QMPError(f"JSON parse error, invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise _QMPError(
            f"JSON parse error, {exc.msg.lower()} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # from the hooks above
        raise _QMPError(f"JSON parse error, {exc}") from None


# -- arguments, QAPI style ------------------------------------------------------------

_JSON_TYPES: Final[Mapping[str, Callable[[object], bool]]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "any": lambda v: True,
}


@dataclass(frozen=True)
class _Param:
    name: str
    type: str  # a key of _JSON_TYPES
    required: bool = True


def _check_args(
    params: tuple[_Param, ...], args: Mapping[str, Any], *, extra: bool = False
) -> None:
    """Check *args* as QEMU's input visitor does: declared members in order
    (missing, then wrong type), then anything undeclared; with *extra*,
    undeclared ones are left for the command to judge.

    Raises:
        _QMPError: ``Parameter 'x' is missing``, ``Invalid parameter type for
            'x', expected: string``, ``Parameter 'x' is unexpected``.
    """
    for p in params:
        if p.name not in args:
            if p.required:
                raise _QMPError(f"Parameter '{p.name}' is missing")
        elif not _JSON_TYPES[p.type](args[p.name]):
            raise _QMPError(f"Invalid parameter type for '{p.name}', expected: {p.type}")
    if not extra:
        declared = {p.name for p in params}
        for name in args:
            if name not in declared:
                raise _QMPError(f"Parameter '{name}' is unexpected")


# -- the QOM types, as qom-list-types and qom-list-properties see them ---------------


# -- the commands ----------------------------------------------------------------------


@functools.cache
def _version() -> dict[str, Any]:
    """query-version in QEMU's shape, with this package's version."""
    try:
        package = metadata.version("iothreads")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        package = "0.0.0"
    m = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", package)
    major, minor, micro = (int(g or 0) for g in m.groups()) if m else (0, 0, 0)
    return {
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": f"iothreads {package}",
    }


def _hyphenated(stats: Any) -> dict[str, Any]:
    """A statistics dataclass as a QMP dict: ``poll_ns`` -> ``poll-ns``."""
    return {k.replace("_", "-"): v for k, v in dataclasses.asdict(stats).items()}


# Each handler runs in the monitor's IOThread (or, if ``blocking``, in a
# worker thread of its loop) and returns the ``return`` value.
_Handler = Callable[["_Session", dict[str, Any]], object]


@dataclass(frozen=True)
class _Command:
    handler: _Handler
    params: tuple[_Param, ...] = ()
    #: takes undeclared arguments too (object-add: the type's properties)
    extra: bool = False
    #: may block on other threads: run it off the monitor's loop
    blocking: bool = False


def _cmd_qmp_capabilities(session: _Session, args: dict[str, Any]) -> object:
    enable = args.get("enable", [])
    for i, cap in enumerate(enable):
        if not isinstance(cap, str):
            raise _QMPError(f"Invalid parameter type for 'enable[{i}]', expected: string")
        if cap != "oob":  # the only capability QMP defines
            raise _QMPError(f"Parameter 'enable[{i}]' does not accept value '{cap}'")
    # QEMU's qmp_qmp_capabilities: once negotiated, nothing else is looked at.
    if session.negotiated:
        raise _QMPError(
            "Capabilities negotiation is already complete, command ignored", "CommandNotFound"
        )
    if enable:
        # The greeting offers no capability (no out-of-band execution here);
        # QEMU names every one asked for, repeats included.
        raise _QMPError(f"Capability {', '.join(enable)} not available")
    session.negotiated = True
    return {}


def _cmd_query_version(session: _Session, args: dict[str, Any]) -> object:
    return _version()


def _cmd_query_commands(session: _Session, args: dict[str, Any]) -> object:
    return [{"name": name} for name in _COMMANDS]


def _cmd_query_iothreads(session: _Session, args: dict[str, Any]) -> object:
    return [info.to_qmp() for info in query_iothreads()]


#: The QOM type whose members QAPI visits first for every object-add type
#: (QEMU's EventLoopBaseProperties is the base of IothreadProperties and
#: MainLoopProperties), and the types object-add creates are its descendants.
_OBJECT_BASE: Final = "event-loop-base"


def _is_int64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < 1 << 63


def _cmd_object_add(session: _Session, args: dict[str, Any]) -> object:
    # QEMU's object-add argument visitor (ObjectOptions) before anything is
    # made: qom-type (an enum), id, the type's members in schema order (its
    # base type's first), then anything undeclared.  The id's form, the
    # values' ranges and the pool limits are checked by object_add() next.
    _check_args((_Param("qom-type", "string"),), args, extra=True)
    qom_type = args["qom-type"]
    if qom_type not in {t.name for t in qom_list_types(_OBJECT_BASE)}:
        raise _QMPError(f"Parameter 'qom-type' does not accept value '{qom_type}'")
    _check_args((_Param("id", "string"),), args, extra=True)
    members = [p.name for p in qom_list_properties(_OBJECT_BASE) if p.name != "type"]
    members += [
        p.name for p in qom_list_properties(qom_type) if p.name != "type" and p.name not in members
    ]
    for name in members:
        if name in args and not _is_int64(args[name]):
            raise _QMPError(f"Invalid parameter type for '{name}', expected: integer")
    props = {k: v for k, v in args.items() if k not in ("qom-type", "id")}
    for name in props:
        # Wire names only: object_add() would also take attribute spellings.
        if name not in members:
            raise _QMPError(f"Parameter '{name}' is unexpected")
    object_add(qom_type, args["id"], **props)
    return {}


def _cmd_object_del(session: _Session, args: dict[str, Any]) -> object:
    object_del(args["id"])
    return {}


def _cmd_qom_get(session: _Session, args: dict[str, Any]) -> object:
    return qom_get(args["path"], args["property"])


def _cmd_qom_set(session: _Session, args: dict[str, Any]) -> object:
    qom_set(args["path"], args["property"], args["value"])
    return {}


def _cmd_qom_list(session: _Session, args: dict[str, Any]) -> object:
    return [p.to_qmp() for p in qom_list(args["path"])]


def _cmd_qom_list_types(session: _Session, args: dict[str, Any]) -> object:
    types = qom_list_types(args.get("implements"), args.get("abstract", False))
    return [t.to_qmp() for t in types]


def _cmd_qom_list_properties(session: _Session, args: dict[str, Any]) -> object:
    return [p.to_qmp() for p in qom_list_properties(args["typename"])]


def _cmd_x_query_iothread_stats(session: _Session, args: dict[str, Any]) -> object:
    return [{"id": id, **_hyphenated(stats)} for id, stats in query_iothread_stats()]


def _cmd_x_query_thread_pools(session: _Session, args: dict[str, Any]) -> object:
    return [{"id": id, **_hyphenated(stats)} for id, stats in query_thread_pools()]


_PATH = _Param("path", "string")
_COMMANDS: Final[Mapping[str, _Command]] = {
    "qmp_capabilities": _Command(
        _cmd_qmp_capabilities, (_Param("enable", "array", required=False),)
    ),
    "query-version": _Command(_cmd_query_version),
    "query-commands": _Command(_cmd_query_commands),
    "query-iothreads": _Command(_cmd_query_iothreads),
    # Its handler checks its arguments itself: which are declared depends on qom-type.
    "object-add": _Command(_cmd_object_add, extra=True, blocking=True),
    "object-del": _Command(_cmd_object_del, (_Param("id", "string"),), blocking=True),
    "qom-get": _Command(_cmd_qom_get, (_PATH, _Param("property", "string"))),
    "qom-set": _Command(
        _cmd_qom_set, (_PATH, _Param("property", "string"), _Param("value", "any"))
    ),
    "qom-list": _Command(_cmd_qom_list, (_PATH,)),
    "qom-list-types": _Command(
        _cmd_qom_list_types,
        (_Param("implements", "string", required=False), _Param("abstract", "boolean", False)),
    ),
    "qom-list-properties": _Command(_cmd_qom_list_properties, (_Param("typename", "string"),)),
    "x-query-iothread-stats": _Command(_cmd_x_query_iothread_stats),
    "x-query-thread-pools": _Command(_cmd_x_query_thread_pools),
}


# -- one client connection ------------------------------------------------------------


class _Session:
    """One client: the greeting, negotiation, then requests in order.

    Runs in the monitor's IOThread.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.negotiated = False

    async def run(self) -> None:
        """Serve the client until it hangs up or sends what cannot be read.

        Raises:
            OSError: the connection broke (the caller drops it).
        """
        await self._send(_encode({"QMP": {"version": _version(), "capabilities": []}}))
        streamer = _JsonStreamer()
        while True:
            data = await self._reader.read(_READ_CHUNK)
            if not data:
                return
            for text in streamer.feed(data):
                await self._send(await self._answer(text))
            if streamer.error is not None:
                # The stream cannot be resynchronised: answer, then hang up.
                await self._send(_encode(_error_reply("GenericError", streamer.error)))
                return

    async def _send(self, line: bytes) -> None:
        self._writer.write(line)
        await self._writer.drain()

    async def _answer(self, text: bytes) -> bytes:
        """The reply to one JSON text (QEMU's qmp_dispatch), encoded."""
        try:
            request = _parse(text)
            if not isinstance(request, dict):
                raise _QMPError("QMP input must be a JSON object")
        except _QMPError as exc:
            return _encode(_error_reply(exc.qmp_class, exc.desc))
        try:
            reply = {"return": await self._execute(request)}
        except _QMPError as exc:
            reply = _error_reply(exc.qmp_class, exc.desc)
        except IOThreadsError as exc:
            reply = _error_reply(exc.qmp_class, str(exc))
        except IOThreadStopped as exc:  # an object stopped under the command
            reply = _error_reply("GenericError", str(exc))
        except Exception as exc:
            _log.exception("QMP command failed: %r", request)
            reply = _error_reply("GenericError", f"internal error: {exc!r}")
        if "id" in request:
            reply["id"] = request["id"]
        try:
            return _encode(reply)
        except TypeError as exc:
            _log.exception("QMP reply has no JSON form: %r", reply)
            error = _error_reply("GenericError", f"internal error: {exc}")
            return _encode({**error, **({"id": request["id"]} if "id" in request else {})})

    async def _execute(self, request: dict[str, Any]) -> object:
        """Check the request's members, find the command, run it.

        Raises:
            _QMPError, IOThreadsError, IOThreadStopped: the command's error.
        """
        for key, value in request.items():
            if key == "execute":
                if not isinstance(value, str):
                    raise _QMPError("QMP input member 'execute' must be a string")
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise _QMPError("QMP input member 'arguments' must be an object")
            elif key != "id":
                raise _QMPError(f"QMP input member '{key}' is unexpected")
        if "execute" not in request:
            raise _QMPError("QMP input lacks member 'execute'")
        name: str = request["execute"]
        command = _COMMANDS.get(name)
        if not self.negotiated and name != "qmp_capabilities":
            raise _QMPError(
                "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound"
            )
        if command is None:
            raise _QMPError(f"The command {name} has not been found", "CommandNotFound")
        args: dict[str, Any] = request.get("arguments", {})
        _check_args(command.params, args, extra=command.extra)
        if command.blocking:
            return await asyncio.to_thread(command.handler, self, args)
        return command.handler(self, args)


# -- the monitor ------------------------------------------------------------------------


def _socket_is_live(path: str) -> bool:
    """True if a server accepts connections on the unix socket *path*."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        # EAGAIN: a live listener whose backlog is full.
        return probe.connect_ex(path) in (0, errno.EAGAIN)
    finally:
        probe.close()


def _bind_unix(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """A unix socket bound at *path* with mode 0600, not yet listening, and
    the (device, inode) that identify the file it created.

    A stale socket left by a dead server is replaced.

    Raises:
        FileExistsError: *path* exists and is not a socket.
        OSError: a server is listening on *path* (EADDRINUSE), or bind failed
            (a path too long for AF_UNIX, a missing directory...).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(
                errno.EEXIST, "refusing to replace a path that is not a socket", path
            )
        if _socket_is_live(path):
            raise OSError(errno.EADDRINUSE, "a server is already listening on this socket", path)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # Before listen(): nobody can connect while the mode is still the umask's.
        os.chmod(path, _SOCKET_MODE)
        st = os.lstat(path)
    except BaseException:
        sock.close()
        raise
    return sock, (st.st_dev, st.st_ino)


class Monitor:
    """A QMP monitor on a unix socket (and/or a TCP port), on its own IOThread.

    ``Monitor(path)`` listens on the unix socket *path* (created with mode
    0600, removed on close).  ``Monitor(port=4444)`` listens on TCP, bound to
    loopback unless *host* says otherwise; ``port=0`` picks a free port (see
    :attr:`tcp_address`).  Both may be given.  Nothing happens until
    :meth:`start` (or ``async with``); a monitor is started once.

    Raises:
        ValueError: neither *path* nor *port* is given.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        host: str = _LOOPBACK,
    ) -> None:
        if path is None and port is None:
            raise ValueError("Monitor needs a unix socket path, a TCP port, or both")
        self._path = os.fspath(path) if path is not None else None
        self._host = host
        self._port = port
        self._io: IOThread | None = None
        self._started = False
        # Owned by the monitor's IOThread once started:
        self._servers: list[asyncio.Server] = []
        self._clients: set[asyncio.Task[None]] = set()
        self._closing = False
        self._socket_id: tuple[int, int] | None = None
        self._tcp_address: tuple[str, int] | None = None

    def __repr__(self) -> str:
        where = [f"unix:{self._path}"] if self._path is not None else []
        if self._port is not None:
            where.append(f"tcp:{self._host}:{self._port}")
        state = "running" if self._io is not None else "stopped"
        return f"<Monitor {' '.join(where)} {state}>"

    @property
    def path(self) -> str | None:
        """The unix socket path, if any."""
        return self._path

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """The (host, port) the TCP listener is bound to, once started."""
        return self._tcp_address

    # runs on the caller's loop
    async def start(self) -> None:
        """Create the monitor's IOThread and start listening.

        Raises:
            RuntimeError: the monitor was started before.
            FileExistsError: the unix path exists and is not a socket.
            OSError: a server already listens there, or binding failed; the
                monitor's IOThread is stopped again.
        """
        if self._started:
            raise RuntimeError(f"{self!r} can only be started once; create a new Monitor")
        self._started = True
        io = iothread_create(_MONITOR_IOTHREAD_ID)
        try:
            await io.run(self._listen)
        except BaseException:
            await io.run(self._shut_down)
            await io.aclose()
            self._remove_socket()
            raise
        self._io = io

    # runs on the caller's loop
    async def aclose(self) -> None:
        """Disconnect every client, stop listening, remove the socket, stop
        the IOThread.  Idempotent."""
        io, self._io = self._io, None
        if io is None:
            return
        try:
            await io.run(self._shut_down)
        finally:
            await io.aclose()
            self._remove_socket()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # runs in the monitor's IOThread
    async def _listen(self) -> None:
        if self._path is not None:
            sock, self._socket_id = _bind_unix(self._path)
            try:
                server = await asyncio.start_unix_server(self._serve_client, sock=sock)
            except BaseException:
                sock.close()
                raise
            self._servers.append(server)
        if self._port is not None:
            server = await asyncio.start_server(self._serve_client, self._host, self._port)
            self._servers.append(server)
            host, port = server.sockets[0].getsockname()[:2]
            self._tcp_address = (host, port)

    # runs in the monitor's IOThread
    async def _shut_down(self) -> None:
        self._closing = True  # connections accepted from now on are dropped
        for server in self._servers:
            server.close()
        for task in self._clients:
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # runs in the monitor's IOThread, one task per client
    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if not self._closing:
                await _Session(reader, writer).run()
        except OSError:
            pass  # the client went away mid-request: only its own session ends
        except asyncio.CancelledError:
            # The monitor is closing.  Replies not sent yet are dropped: a
            # client that reads nothing would otherwise hold up the close
            # forever.  End like a finished session: on 3.11, asyncio.streams
            # reports a cancelled client task as an error.
            writer.transport.abort()
        finally:
            # The task stays listed until the connection is closed, so that
            # closing the monitor cancels this wait too.
            try:
                await self._close(writer)
            finally:
                self._clients.discard(task)

    # runs in the monitor's IOThread
    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        """Close a client's connection once what is queued for it is sent."""
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # already broken: closed all the same
        except asyncio.CancelledError:
            # The monitor is closing while a client that reads nothing still
            # has replies queued: drop them.
            writer.transport.abort()

    # runs on the caller's loop, after the IOThread has stopped
    def _remove_socket(self) -> None:
        """Unlink the socket if it is still the one this monitor created."""
        if self._path is None or self._socket_id is None:
            return
        try:
            st = os.lstat(self._path)
            if (st.st_dev, st.st_ino) == self._socket_id:
                os.unlink(self._path)
        except FileNotFoundError:
            pass  # removed already (by asyncio's own cleanup, or by someone else)
        self._socket_id = None
