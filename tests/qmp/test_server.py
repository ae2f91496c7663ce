"""The monitor as a server: its life, its sockets, its IOThread, its clients.

The socket's mode and lifecycle, TCP, an application loop that is busy,
several clients at once, and clients that misbehave: one leaving
mid-request or never reading its replies harms no one else, nor the close.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import stat
import struct
import threading
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from iothreads.qmp import Monitor
from iothreads.qmp._server import _bind_unix

from ..helpers import WAIT, RawClient, StallWatch, add_iothread, flood, qmp_client

# -- the monitor's life and its sockets ------------------------------------------------


async def test_socket_mode_and_removal(sock_path: str, same_loop_kind: None) -> None:
    async with Monitor(sock_path) as mon:
        st = os.lstat(sock_path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert mon.path == sock_path
        assert mon.tcp_address is None
    assert not os.path.lexists(sock_path)


async def test_refuses_a_path_that_is_not_a_socket(sock_path: str) -> None:
    Path(sock_path).write_text("precious")
    with pytest.raises(FileExistsError, match="not a socket") as info:
        await Monitor(sock_path).start()
    assert info.value.filename == sock_path
    assert Path(sock_path).read_text() == "precious"
    assert "IO mon_iothread" not in {t.name for t in threading.enumerate()}


async def test_refuses_a_socket_in_use_and_replaces_a_stale_one(
    sock_path: str, same_loop_kind: None
) -> None:
    async with Monitor(sock_path):
        with pytest.raises(OSError, match="already listening") as info:
            await Monitor(sock_path).start()
        assert info.value.errno == errno.EADDRINUSE
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)  # bound, never listening: what a killed server leaves
    stale.close()
    async with Monitor(sock_path):
        client = await RawClient.connect(sock_path)
        await client.close()


async def assert_a_failed_start_left_nothing(sock_path: str) -> None:
    """No socket file, no monitor IOThread (the leak fixture checks the
    descriptors); a new monitor starts on the same path."""
    assert not os.path.lexists(sock_path)
    assert "IO mon_iothread" not in {t.name for t in threading.enumerate()}
    async with Monitor(sock_path):
        client = await RawClient.connect(sock_path)
        await client.close()


@pytest.mark.parametrize("where", ["a missing directory", "a path too long"])
async def test_a_socket_that_cannot_be_bound_fails_the_start(
    sock_path: str, same_loop_kind: None, where: str
) -> None:
    if where == "a missing directory":
        path = os.path.join(os.path.dirname(sock_path), "missing", "qmp.sock")
        expected: tuple[type[OSError], str] = (FileNotFoundError, "No such file or directory")
    else:
        path = os.path.join(os.path.dirname(sock_path), "x" * 120)  # AF_UNIX takes 108 bytes
        expected = (OSError, "AF_UNIX path too long")
    with pytest.raises(expected[0], match=expected[1]):
        await Monitor(path).start()
    assert not os.path.lexists(path)
    await assert_a_failed_start_left_nothing(sock_path)


async def test_a_socket_that_cannot_listen_fails_the_start(
    sock_path: str, same_loop_kind: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bound, then refused by listen(): the socket is closed and its file removed."""

    async def refused(*args: object, **kwargs: object) -> asyncio.Server:
        raise OSError(errno.ENOBUFS, "No buffer space available")

    with monkeypatch.context() as patch:
        patch.setattr(asyncio, "start_unix_server", refused)
        with pytest.raises(OSError, match="No buffer space available"):
            await Monitor(sock_path).start()
    await assert_a_failed_start_left_nothing(sock_path)


async def test_a_tcp_port_in_use_undoes_the_unix_listener(
    sock_path: str, same_loop_kind: None
) -> None:
    """The unix socket listens already when the TCP port turns out taken: the
    start fails with EADDRINUSE, and the unix listener and its file go too."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=r"(?i)address already in use") as info:
            await Monitor(sock_path, port=port).start()
    assert info.value.errno == errno.EADDRINUSE
    await assert_a_failed_start_left_nothing(sock_path)


async def test_tcp_on_loopback(same_loop_kind: None) -> None:
    async with Monitor(port=0) as mon:
        assert mon.path is None
        assert mon.tcp_address is not None
        host, port = mon.tcp_address
        assert host == "127.0.0.1"
        async with qmp_client((host, port)) as client:
            assert await client.execute("query-iothreads") == []


async def test_monitor_misuse(sock_path: str, same_loop_kind: None) -> None:
    with pytest.raises(ValueError, match="path, a TCP port"):
        Monitor()
    mon = Monitor(sock_path)
    await mon.aclose()  # never started: nothing to do
    async with mon:
        with pytest.raises(RuntimeError, match="only be started once"):
            await mon.start()
    await mon.aclose()  # idempotent


def test_busy_application_loop_does_not_stall_the_monitor(sock_path: str) -> None:
    async def main() -> None:
        async with Monitor(sock_path):
            answered = threading.Event()

            def client() -> None:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(WAIT)
                    s.connect(sock_path)
                    f = s.makefile("rwb")
                    f.readline()  # greeting
                    for cmd in ("qmp_capabilities", "query-iothreads"):
                        f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                        f.flush()
                        assert "return" in json.loads(f.readline())
                    f.close()
                answered.set()

            thread = threading.Thread(target=client)
            thread.start()
            # This loop is busy (blocked) the whole time the client is served.
            assert answered.wait(WAIT)
            thread.join(WAIT)

    asyncio.run(main())


async def test_monitor_iothread_is_internal(qmp: QMPClient) -> None:
    # It runs (QEMU's mon_iothread) but is no user object.
    assert "IO mon_iothread" in {t.name for t in threading.enumerate()}
    assert await qmp.execute("query-iothreads") == []
    assert await qmp.execute("qom-list", {"path": "/objects"}) == [
        {"name": "type", "type": "string"}
    ]


# -- several clients -------------------------------------------------------------------


async def test_two_clients_at_once(monitor_path: str, qmp: QMPClient) -> None:
    async with qmp_client(monitor_path) as other:
        await add_iothread(qmp, "io0")
        assert [t["id"] for t in await other.execute("query-iothreads")] == ["io0"]  # type: ignore[attr-defined]
        # Interleaved requests from both: each gets its own answers.
        answers = await asyncio.gather(
            *(
                client.execute("qom-set", {"path": "io0", "property": "poll-grow", "value": n})
                for n in range(20)
                for client in (qmp, other)
            ),
            *(other.execute("qom-get", {"path": "io0", "property": "type"}) for _ in range(20)),
        )
        assert answers == [{}] * 40 + ["iothread"] * 20
        await other.execute("object-del", {"id": "io0"})
        assert await qmp.execute("query-iothreads") == []


async def test_client_leaving_mid_request_harms_no_one(monitor_path: str, qmp: QMPClient) -> None:
    await add_iothread(qmp, "io0")
    for data in (
        b'{"execute": "query-iothreads", "id": 1}\n',  # complete: gone before the reply
        b'{"execute": "qom-set", "arguments": {"path": "io0", "prop',  # cut mid-message
    ):
        leaver = await RawClient.connect(monitor_path)
        await leaver.send(data)
        # Reset the connection rather than closing it politely.
        sock = leaver.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await leaver.close()
        assert [t["id"] for t in await qmp.execute("query-iothreads")] == ["io0"]  # type: ignore[attr-defined]
    # A client that never reads its replies only stalls itself.
    hog = await RawClient.connect(monitor_path)
    try:
        await hog.send(b'{"execute": "query-commands"}\n' * 200)
        assert await qmp.execute("qom-get", {"path": "io0", "property": "poll-grow"}) == 0
    finally:
        await hog.close()
    await qmp.execute("object-del", {"id": "io0"})


async def test_close_with_a_client_that_never_reads(sock_path: str, same_loop_kind: None) -> None:
    # Replies queued for a client that reads nothing can never be delivered:
    # closing the monitor drops them instead of waiting for that client.
    mon = Monitor(sock_path)
    await mon.start()
    closed = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hog:
            hog.settimeout(WAIT)
            hog.connect(sock_path)
            hog.recv(4096)  # the greeting
            flood(hog)
            # Until the monitor sends the hog nothing more (its session is
            # stuck on the full socket), checked by another client's round trips.
            probe = await RawClient.connect(sock_path)
            try:
                watch = StallWatch(hog)
                while not watch.stalled():
                    assert await probe.request({"execute": "query-iothreads"}) == {"return": []}
            finally:
                await probe.close()
            await asyncio.wait_for(mon.aclose(), WAIT)
            closed = True
            assert hog.recv(1 << 20)  # what had been delivered is still there
    finally:
        if not closed:
            await mon.aclose()


def test_the_socket_appears_only_once_it_listens(tmp_path: Path) -> None:
    """Bound under a temporary name, renamed to the monitor's path once it
    listens: a client that connects as soon as the path exists is never
    refused."""
    path = str(tmp_path / "qmp.sock")
    sock, temporary, identity = _bind_unix(path)
    try:
        assert not os.path.lexists(path)
        assert os.path.dirname(temporary) == str(tmp_path)
        assert stat.S_IMODE(os.lstat(temporary).st_mode) == 0o600
        sock.listen()
        os.rename(temporary, path)
        st = os.lstat(path)
        assert (st.st_dev, st.st_ino) == identity
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    finally:
        sock.close()
