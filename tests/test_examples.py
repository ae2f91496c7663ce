"""examples/multiloop_server.py, end to end: started as a user starts it.

Each test runs the example as a child process on a free port (with ``-X
dev``, so asyncio's debug mode and the ``@runs_in`` checks are on, and a
leaked transport would be reported), waits (bounded) for its ready line,
talks to it over TCP, then stops it with a signal and checks that it closed
the connections, exited with status 0 and reported no error.  No child
process outlives its test.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import LOOP_FACTORIES, WAIT, child_process, first_line

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "multiloop_server.py"

#: Two loops: connections spread over two listening sockets on one port.
LOOPS = 2
#: Connections opened per test: the kernel puts each on one of the loops.
CONNECTIONS = 4

#: checksum([1, 2], 2) worked out by hand: ((1*31 + 2)*31 + 1)*31 + 2.
VALID = b'{"id": "a", "values": [1, 2], "rounds": 2}\n'
VALID_REPLY = {"id": "a", "result": 31746}


def example(*args: str) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """The example server as a child process, killed if still running at the end."""
    return child_process([sys.executable, "-X", "dev", str(EXAMPLE), *args])


def ready_port(proc: subprocess.Popen[bytes]) -> int:
    """The port from the example's ready line (bounded wait)."""
    line = first_line(proc, "the example")
    match = re.search(rb"listening on 127\.0\.0\.1:(\d+), 2 loop\(s\)", line)
    assert match, line
    return int(match.group(1))


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    """*count* lines from *sock* (each read bounded by the socket's timeout)."""
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    lines = data.split(b"\n")
    assert lines[count:] == [b""], data
    return lines[:count]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("loop_kind", list(LOOP_FACTORIES))
def test_multiloop_server_answers_and_stops_cleanly(loop_kind: str, sig: signal.Signals) -> None:
    with example("--port", "0", "--loops", str(LOOPS), "--loop", loop_kind) as proc:
        port = ready_port(proc)
        with contextlib.ExitStack() as stack:
            conns = [
                stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
                for _ in range(CONNECTIONS)
            ]
            for conn in conns:
                # Pipelined: a request, two the server cannot serve, a request.
                conn.sendall(VALID + b'{"id": 2, "values": [1, true]}\n' + b"nope\n" + VALID)
            for conn in conns:
                good, bad, not_json, again = (json.loads(line) for line in read_lines(conn, 4))
                assert good == VALID_REPLY
                assert bad == {"id": 2, "error": "'values' must hold integers only, not true"}
                assert not_json["id"] is None
                assert not_json["error"].startswith("not JSON")
                assert again == VALID_REPLY
            # A line past the limit cannot be resynchronised: answered, then closed.
            long_line = stack.enter_context(
                socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            )
            long_line.sendall(b"1" * (65 * 1024) + b"\n")
            assert json.loads(read_lines(long_line, 1)[0])["error"] == "request line too long"
            assert long_line.recv(1) == b""

            # Stopped with connections still open: each is closed, none is left hanging.
            proc.send_signal(sig)
            for conn in conns:
                assert conn.recv(1) == b""
        assert proc.wait(WAIT) == 0
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    match = re.search(r"requests served per loop: (\d+), (\d+)\n$", out)
    assert match, out
    assert sum(map(int, match.groups())) == 4 * CONNECTIONS  # every line answered
    for trouble in ("Traceback", "Exception", "ResourceWarning", "never retrieved"):
        assert trouble not in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loops", "0"], "--loops must be at least 1, not 0"),
        (["--port", "70000"], "--port must be in [0, 65535], not 70000"),
    ],
)
def test_multiloop_server_rejects_bad_arguments(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
