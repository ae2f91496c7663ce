"""The monitor: its listeners, and a ``Session`` (``_session``) per client.

The monitor runs on an internal IOThread of its own (``iothread_create``, as
QEMU's ``mon_iothread``), so a busy application loop never stalls it and it
never appears in ``query-iothreads``.  Each client is served by one task on
that IOThread's loop; its requests are answered in order.  Commands that can
block on another IOThread (``object-add``, ``object-del`` start and join
threads) run in a worker thread, so one slow command does not hold up the
other clients.

Three bounds keep one client from taking the monitor over: how many clients
are served at once, counted here; how long a client may keep the monitor
waiting on it, and how many error replies a client may draw per second, both
kept by its session (docs/design.md, "The QMP monitor").
"""

from __future__ import annotations

import asyncio
import enum
import errno
import itertools
import logging
import math
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Self

from .._fork import FORK_CHILD, track
from .._iothread import IOThread
from .._objects import iothread_create
from .._runs_in import ANY, ThreadRole, runs_in
from ._session import MONITOR_IOTHREAD, Counters, Limits, Session, in_monitor_iothread
from ._wire import encode, error_reply

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_ERRORS",
    "Monitor",
    "MonitorStatistics",
]

_log = logging.getLogger("iothreads.qmp")

#: Unix socket mode: only the owner may connect (the monitor can reconfigure
#: and delete every object, so it is as privileged as the process).
_SOCKET_MODE: Final = 0o600

#: The internal IOThread's id, as QEMU names its monitor iothread.
_MONITOR_IOTHREAD_ID: Final = "mon_iothread"

#: The default TCP host: loopback, unless the embedder names another.
LOOPBACK: Final = "127.0.0.1"

#: Clients served at once (docs/design.md, "The QMP monitor"): management
#: tools hold one connection each, a person at qmp-shell one more; each
#: connection may make the monitor buffer up to a 1 MiB message, so 16 also
#: bounds that memory to 16 MiB.  (QEMU serves one client per socket.)
DEFAULT_MAX_CLIENTS: Final = 16

#: Seconds a client may keep the monitor waiting on it, for a request or for
#: taking its replies, before it is disconnected.  The monitor sends no
#: events, so a connected client has nothing to wait for: scripts talk for
#: milliseconds, a person at qmp-shell types within minutes.
DEFAULT_IDLE_TIMEOUT: Final = 300.0

#: Error replies a client may draw in a burst, refilled at as many per
#: second.  A client that reads its replies makes a few mistakes; a stream of
#: garbage (1 MiB of ``]`` is a million stray closers) is cut off after this
#: many replies instead of a million.
DEFAULT_MAX_ERRORS: Final = 100


#: The loop that awaits Monitor.start() and aclose(): any but the monitor's
#: own, which those calls create and stop.
_CALLER: Final = ThreadRole(
    "the caller's loop, not the monitor's IOThread",
    lambda monitor: not in_monitor_iothread(monitor),
)


@dataclass(frozen=True)
class MonitorStatistics:
    """A snapshot of a :class:`Monitor`'s connections.

    ``clients`` are being served now, at most ``max_clients``; ``accepted``
    counts the clients served since the start.  The others count the
    connections the monitor ended itself: ``refused`` when ``max_clients``
    were being served already, ``closed_idle`` after the client kept the
    monitor waiting ``idle_timeout`` seconds, ``closed_errors`` when the
    client ran out of error replies, ``closed_malformed`` after input beyond
    the size or nesting limit.
    """

    clients: int
    max_clients: int
    accepted: int
    refused: int
    closed_idle: int
    closed_errors: int
    closed_malformed: int


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


#: The longest path an AF_UNIX address holds (``sun_path``: 108 bytes on
#: Linux, 104 on the BSDs and macOS).
_SUN_PATH_SIZE: Final = 108 if sys.platform.startswith("linux") else 104

#: Numbers the temporary names of the sockets this process binds.
_TEMPORARY_NAMES = itertools.count()


def _bind_unix(path: str) -> tuple[socket.socket, str, tuple[int, int]]:
    """A unix socket with mode 0600, not yet listening, bound under a
    temporary name beside *path*; that name, and the (device, inode) that
    identify the file it created.

    The caller renames it to *path* once it listens: a client that connects
    as soon as *path* appears is never refused.  A stale socket left by a
    dead server is replaced.

    Raises:
        FileExistsError: *path* exists and is not a socket.
        OSError: a server is listening on *path* (EADDRINUSE), or bind failed
            (a path too long for AF_UNIX, a missing directory...).
    """
    if len(os.fsencode(path)) > _SUN_PATH_SIZE:
        # Refused now, as bind() would refuse it: the socket is bound under
        # a shorter name and only renamed to *path*.
        raise OSError(errno.ENAMETOOLONG, "AF_UNIX path too long", path)
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
    temporary = os.path.join(os.path.dirname(path), f".qmp-{os.getpid()}-{next(_TEMPORARY_NAMES)}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(temporary)
        try:
            os.chmod(temporary, _SOCKET_MODE)
            st = os.lstat(temporary)
        except BaseException:
            os.unlink(temporary)
            raise
    except BaseException:
        sock.close()
        raise
    return sock, temporary, (st.st_dev, st.st_ino)


def _check_count(name: str, value: object) -> None:
    """Refuse a bound that is not a positive int.

    Raises:
        TypeError: *value* is not an int (a bool is not).
        ValueError: *value* is below 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")


class _State(enum.Enum):
    """Where a Monitor is in its one life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSED = "closed"  # closed, or its start failed


class Monitor:
    """A QMP monitor on a unix socket (and/or a TCP port), on its own IOThread.

    ``Monitor(path)`` listens on the unix socket *path* (created with mode
    0600, removed on close).  ``Monitor(port=4444)`` listens on TCP, bound to
    loopback unless *host* says otherwise; ``port=0`` picks a free port (see
    :attr:`tcp_address`).  Both may be given.  Nothing happens until
    :meth:`start` (or ``async with``); a monitor is started once.

    Each client is held to three bounds, shared by all listeners:

    * *max_clients* are served at once; a client beyond them gets a QMP
      error in place of the greeting and is disconnected;
    * a client that keeps the monitor waiting *idle_timeout* seconds, for a
      request (from the moment it connects: the negotiation counts) or to
      take its replies, is disconnected, with an error saying why when it
      can be sent; ``None`` waits for ever;
    * a client may draw *max_errors* error replies in a burst, refilled at
      *max_errors* per second of *clock*; the error that finds none left is
      not answered: the client gets an error saying why and is disconnected.

    Raises:
        ValueError: neither *path* nor *port* is given, or a bound is out of
            range (the message names it).
        TypeError: a bound is not a number of the right kind.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_errors: int = DEFAULT_MAX_ERRORS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if path is None and port is None:
            raise ValueError("Monitor needs a unix socket path, a TCP port, or both")
        _check_count("max_clients", max_clients)
        _check_count("max_errors", max_errors)
        if idle_timeout is not None:
            if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, int | float):
                raise TypeError(
                    f"idle_timeout must be a number of seconds or None, got {idle_timeout!r}"
                )
            if not (idle_timeout > 0 and math.isfinite(idle_timeout)):
                raise ValueError(
                    f"idle_timeout must be a positive number of seconds (or None for no "
                    f"timeout), got {idle_timeout!r}"
                )
        self._path = os.fspath(path) if path is not None else None
        self._host = host
        self._port = port
        self._limits = Limits(max_clients, idle_timeout, max_errors, clock)
        self._counters = Counters()
        self._state = _State.NEW
        # The monitor's IOThread, from start() on (kept once stopped).
        self._io: IOThread | None = None
        # Owned by the monitor's IOThread once started:
        self._servers: list[asyncio.Server] = []
        self._clients: set[asyncio.Task[None]] = set()  # served and refused alike
        self._closing = False
        self._socket_id: tuple[int, int] | None = None
        self._tcp_address: tuple[str, int] | None = None
        track(self)

    @runs_in(FORK_CHILD)
    def _after_fork_in_child(self) -> None:
        """In a forked child: closed, and the parent's socket left alone.

        Its IOThread is stopped here (``IOThread._after_fork_in_child``), and
        closing it must not unlink the parent's socket.  The child's copies
        of the listening sockets would go on accepting connections into a
        backlog nobody serves once the parent closed its own (and keep a TCP
        port bound): they are pointed at /dev/null, which releases them and
        leaves the numbers valid for the loop kept, unused, here.
        """
        if self._state is _State.NEW:
            return  # nothing of the parent's: the child may start it
        self._state = _State.CLOSED
        self._socket_id = None
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for server in self._servers:
                for sock in server.sockets:
                    os.dup2(null, sock.fileno(), inheritable=False)
        finally:
            os.close(null)

    def __repr__(self) -> str:
        where = [f"unix:{self._path}"] if self._path is not None else []
        if self._port is not None:
            where.append(f"tcp:{self._host}:{self._port}")
        state = "running" if self._state is _State.RUNNING else "stopped"
        return f"<Monitor {' '.join(where)} {state}>"

    @property
    def path(self) -> str | None:
        """The unix socket path, if any."""
        return self._path

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """The (host, port) the TCP listener is bound to, once started."""
        return self._tcp_address

    @runs_in(ANY)
    def statistics(self) -> MonitorStatistics:
        """A snapshot of the connections (each counter is exact)."""
        counters = self._counters
        with counters.lock:
            return MonitorStatistics(
                clients=counters.clients,
                max_clients=self._limits.max_clients,
                accepted=counters.accepted,
                refused=counters.refused,
                closed_idle=counters.closed_idle,
                closed_errors=counters.closed_errors,
                closed_malformed=counters.closed_malformed,
            )

    @runs_in(_CALLER)
    async def start(self) -> None:
        """Create the monitor's IOThread and start listening.

        Raises:
            RuntimeError: the monitor was started before.
            FileExistsError: the unix path exists and is not a socket.
            OSError: a server already listens there, or binding failed; the
                monitor's IOThread is stopped again.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"{self!r} can only be started once; create a new Monitor")
        self._state = _State.STARTING
        self._io = io = iothread_create(_MONITOR_IOTHREAD_ID)
        try:
            await io.run(self._listen)
        except BaseException:
            self._state = _State.CLOSED
            await self._stop(io)
            raise
        self._state = _State.RUNNING

    @runs_in(_CALLER)
    async def aclose(self) -> None:
        """Disconnect every client, stop listening, remove the socket, stop
        the IOThread.  Idempotent; nothing to do before :meth:`start` has
        succeeded."""
        if self._state is not _State.RUNNING:
            return
        self._state = _State.CLOSED
        assert self._io is not None
        await self._stop(self._io)

    async def _stop(self, io: IOThread) -> None:
        """Close the listeners and the connections on *io*, stop it, then
        remove the socket."""
        try:
            await io.run(self._shut_down)
        finally:
            await io.aclose()
            self._remove_socket()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @runs_in(MONITOR_IOTHREAD)
    async def _listen(self) -> None:
        if self._path is not None:
            sock, temporary, self._socket_id = _bind_unix(self._path)
            try:
                server = await asyncio.start_unix_server(self._serve_client, sock=sock)
            except BaseException:
                sock.close()
                os.unlink(temporary)
                raise
            self._servers.append(server)
            try:
                os.rename(temporary, self._path)  # listening: now it may be found
            except BaseException:
                os.unlink(temporary)
                raise
        if self._port is not None:
            server = await asyncio.start_server(self._serve_client, self._host, self._port)
            self._servers.append(server)
            host, port = server.sockets[0].getsockname()[:2]
            self._tcp_address = (host, port)

    @runs_in(MONITOR_IOTHREAD)
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

    @runs_in(MONITOR_IOTHREAD)
    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one client, as a task of its own, until it leaves or the
        monitor closes."""
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if not self._closing:
                await self._serve_or_refuse(reader, writer)
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

    async def _serve_or_refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve the client if fewer than max_clients are served, else tell it
        why it is not (in place of the greeting: QEMU would leave it waiting
        in the listen backlog, where a client sees nothing at all).

        Raises:
            OSError: the connection broke.
        """
        assert self._io is not None  # set by start() before it listens
        counters = self._counters
        with counters.lock:
            refused = counters.clients >= self._limits.max_clients
            if refused:
                counters.refused += 1
            else:
                counters.clients += 1
                counters.accepted += 1
        if refused:
            writer.write(
                encode(
                    error_reply(
                        "GenericError",
                        f"too many QMP clients: this monitor serves {self._limits.max_clients}"
                        " at once; try again once one has left",
                    )
                )
            )
            return
        try:
            await Session(self._io, reader, writer, self._limits, counters).run()
        finally:
            with counters.lock:
                counters.clients -= 1

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close a client's connection once what is queued for it is sent,
        waiting for the client to take it at most the idle timeout."""
        writer.close()
        try:
            async with asyncio.timeout(self._limits.idle_timeout):
                await writer.wait_closed()
        except TimeoutError:  # before OSError, which it is a subclass of
            # A client that reads nothing: drop what it never took.
            writer.transport.abort()
        except OSError:
            pass  # already broken: closed all the same
        except asyncio.CancelledError:
            # The monitor is closing while a client that reads nothing still
            # has replies queued: drop them.
            writer.transport.abort()

    def _remove_socket(self) -> None:
        """Unlink the socket if it is still the one this monitor created (once
        the IOThread has stopped: no listener is left to use it)."""
        if self._path is None or self._socket_id is None:
            return
        try:
            st = os.lstat(self._path)
            if (st.st_dev, st.st_ino) == self._socket_id:
                os.unlink(self._path)
        except FileNotFoundError:
            pass  # removed already (by asyncio's own cleanup, or by someone else)
        self._socket_id = None
