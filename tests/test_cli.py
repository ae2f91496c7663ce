"""The ``iothreads`` command line, end to end against ``iothreads serve``.

Each end-to-end test starts ``python -m iothreads serve`` itself, waits
(bounded) for its ready line, drives it with ``query`` / ``set`` subprocesses
and with ``qemu.qmp``, then stops it with a signal and checks the exit status.
No child process outlives its test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from iothreads._cli import (
    _parse_address,
    _parse_object,
    _positive_int,
    _seconds_or_never,
    main,
)
from iothreads.qmp._client import Address

from .helpers import (
    CHILD_WAIT,
    INT64_MAX,
    WAIT,
    StallWatch,
    child_process,
    first_line,
    flood,
    qmp_client,
    run_python,
)

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | str = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iothreads", *args],
        capture_output=True,
        text=True,
        timeout=CHILD_WAIT,
        cwd=cwd,
        check=False,
    )


def serve(*args: str) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``iothreads serve ARGS`` as a child process, killed if still running at the end."""
    return child_process([sys.executable, "-m", "iothreads", "serve", *args], cwd=REPO)


def ready_line(proc: subprocess.Popen[bytes]) -> str:
    """The line serve prints once its monitor listens (bounded wait)."""
    text = first_line(proc, "iothreads serve").decode()
    assert "QMP monitor listening on" in text, stderr_of(proc)
    return text.strip()


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stderr is not None
    return proc.stderr.read().decode()


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(WAIT)


def query_json(address: str) -> list[dict[str, Any]]:
    result = cli("query", "--qmp", address, "--json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


async def qmp_execute(path: str, cmd: str, args: dict[str, Any] | None = None) -> Any:
    async with qmp_client(path) as client:
        return await client.execute(cmd, args)


# -- end to end ------------------------------------------------------------------------


def test_serve_query_set(sock_path: str) -> None:
    address = f"unix:{sock_path}"
    with serve(
        "--object", "iothread,id=io0,poll-max-ns=32768",
        "--object", "iothread,id=io1,thread-pool-max=8,poll-grow=0x2",
        "--object", "main-loop,id=main-loop,thread-pool-max=8",
        "--qmp", address,
    ) as proc:  # fmt: skip
        assert ready_line(proc) == f"iothreads serve: QMP monitor listening on {address}"
        assert stat.S_IMODE(os.lstat(sock_path).st_mode) == 0o600

        table = cli("query", "--qmp", address)
        assert table.returncode == 0, table.stderr
        rows = [line.split() for line in table.stdout.splitlines()]
        assert rows[0] == [
            "ID",
            "THREAD-ID",
            "POLL-MAX-NS",
            "POLL-GROW",
            "POLL-SHRINK",
            "AIO-MAX-BATCH",
        ]
        assert [(r[0], r[2], r[3]) for r in rows[1:]] == [
            ("io0", "32768", "0"),
            ("io1", "32768", "2"),
        ]

        infos = query_json(address)
        assert [i["id"] for i in infos] == ["io0", "io1"]
        assert all(i["thread-id"] > 0 for i in infos)

        result = cli("set", "--qmp", address, "io0", "poll-max-ns=0", "poll-shrink=2")
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        io0 = query_json(address)[0]
        assert (io0["poll-max-ns"], io0["poll-shrink"]) == (0, 2)

        assert cli("set", "--qmp", address, "main-loop", "thread-pool-min=2").returncode == 0
        pools = asyncio.run(qmp_execute(sock_path, "x-query-thread-pools"))
        assert [(p["id"], p["max"]) for p in pools] == [("io0", 64), ("io1", 8), ("main-loop", 8)]
        assert pools[2]["min"] == 2

        assert stop(proc) == 0
        assert stderr_of(proc) == ""
    assert not os.path.lexists(sock_path)


def test_sigterm_with_a_client_that_never_reads(sock_path: str) -> None:
    # A client that sends requests and reads none of the replies cannot keep
    # serve from shutting down.
    with serve("--qmp", f"unix:{sock_path}") as proc:
        ready_line(proc)
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hog,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
        ):
            for s in (hog, probe):
                s.settimeout(WAIT)
                s.connect(sock_path)
                s.recv(4096)  # the greeting
            flood(hog)
            # Until the monitor sends the hog nothing more, checked by round trips.
            probe_file = probe.makefile("rwb")
            watch = StallWatch(hog)
            while not watch.stalled():
                probe_file.write(b'{"execute": "qmp_capabilities"}\n')
                probe_file.flush()
                assert probe_file.readline()
            probe_file.close()
            assert stop(proc) == 0
        assert stderr_of(proc) == ""
    assert not os.path.lexists(sock_path)


def test_serve_bounds_its_clients(sock_path: str) -> None:
    address = f"unix:{sock_path}"
    with serve("--qmp", address, "--max-clients", "1", "--max-errors", "2") as proc:
        ready_line(proc)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as held:
            held.settimeout(WAIT)
            held.connect(sock_path)
            replies = held.makefile("rwb")
            assert b"QMP" in replies.readline()
            # The one client it serves is held: the next one is refused.
            result = cli("query", "--qmp", address)
            assert (result.returncode, result.stdout) == (1, "")
            assert result.stderr == (
                f"the monitor at {address} refused the connection: too many QMP clients: "
                "this monitor serves 1 at once; try again once one has left\n"
            )
            # Two error replies, then the reason it is disconnected.
            replies.write(b"[] [] []")
            replies.flush()
            answers = [json.loads(replies.readline()) for _ in range(3)]
            assert [a["error"]["desc"] for a in answers] == [
                "QMP input must be a JSON object",
                "QMP input must be a JSON object",
                "closing the connection: more than 2 error replies in a second; "
                "send requests that are valid QMP",
            ]
            assert replies.readline() == b""
            replies.close()
        assert query_json(address) == []  # its place is free again
        assert stop(proc) == 0
        assert stderr_of(proc) == ""
    with serve("--qmp", address, "--idle-timeout", "0.001") as proc:
        ready_line(proc)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.settimeout(WAIT)
            idle.connect(sock_path)
            idle_replies = idle.makefile("rb")
            assert b"QMP" in idle_replies.readline()
            assert b"no request for 0.001 s" in idle_replies.readline()
            assert idle_replies.readline() == b""
            idle_replies.close()
        assert stop(proc) == 0
        assert stderr_of(proc) == ""


SET_ERRORS = [
    ("io0", "poll-max-ns=-1", f"poll-max-ns value must be in range [0, {INT64_MAX}]"),
    ("io0", "poll-max-ns=abc", "Invalid parameter type for 'poll-max-ns', expected: integer"),
    (
        "io0",
        f"poll-max-ns={INT64_MAX + 1}",
        "Invalid parameter type for 'poll-max-ns', expected: integer",
    ),
    ("io0", "thread-pool-max=0", "bad thread-pool-min/thread-pool-max values"),
    ("io0", "bogus=1", "Property 'iothread.bogus' not found"),
    ("nope", "poll-max-ns=0", "Device '/objects/nope' not found"),
    ("/objects/nope", "poll-max-ns=0", "Device '/objects/nope' not found"),
]


def test_set_prints_the_monitor_error(sock_path: str) -> None:
    address = f"unix:{sock_path}"
    with serve("--object", "iothread,id=io0,poll-max-ns=100", "--qmp", address) as proc:
        ready_line(proc)
        for target, assignment, desc in SET_ERRORS:
            result = cli("set", "--qmp", address, target, assignment)
            assert (result.returncode, result.stdout, result.stderr) == (1, "", desc + "\n")
        assert query_json(address)[0]["poll-max-ns"] == 100  # untouched
        assert stop(proc, signal.SIGINT) == 0


@pytest.mark.parametrize(
    ("assignments", "desc"),
    [
        (
            ("poll-grow=3", "poll-max-ns=5", "thread-pool-max=0"),
            "bad thread-pool-min/thread-pool-max values",
        ),
        (("poll-grow=3", "poll-max-ns=5", "bogus=1"), "Property 'iothread.bogus' not found"),
    ],
    ids=["refused-value", "unknown-property"],
)
def test_set_is_all_or_nothing(sock_path: str, assignments: tuple[str, ...], desc: str) -> None:
    """One refused assignment leaves every property as it was: those set
    before it are set back."""
    address = f"unix:{sock_path}"
    with serve("--object", "iothread,id=io0,poll-max-ns=100", "--qmp", address) as proc:
        ready_line(proc)
        before = query_json(address)
        result = cli("set", "--qmp", address, "io0", *assignments)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", desc + "\n")
        assert query_json(address) == before
        result = cli("set", "--qmp", address, "io0", *assignments[:2])
        assert result.returncode == 0, result.stderr
        assert [query_json(address)[0][p] for p in ("poll-grow", "poll-max-ns")] == [3, 5]
        assert stop(proc, signal.SIGINT) == 0


def test_serve_on_tcp_and_objects_added_over_qmp_are_stopped(sock_path: str) -> None:
    with serve("--qmp", "tcp:127.0.0.1:0", "--qmp", f"unix:{sock_path},server=on,wait=off") as proc:
        tcp = ready_line(proc).rsplit(" ", 1)[1]
        assert tcp.startswith("tcp:127.0.0.1:")
        assert ready_line(proc) == f"iothreads serve: QMP monitor listening on unix:{sock_path}"
        assert query_json(tcp) == []
        args = {"qom-type": "iothread", "id": "late"}
        assert asyncio.run(qmp_execute(sock_path, "object-add", args)) == {}
        assert [i["id"] for i in query_json(tcp)] == ["late"]
        assert stop(proc) == 0
        assert stderr_of(proc) == ""


def test_serve_errors(sock_path: str) -> None:
    result = cli("serve", "--object", "iothread,id=1bad", "--qmp", f"unix:{sock_path}")
    assert result.returncode == 1
    assert result.stderr == (
        "iothreads serve: --object iothread,id=1bad: Parameter 'id' expects an identifier\n"
    )
    result = cli("serve", "--object", "iothread,id=io0,poll-max-ns=fast")
    assert result.returncode == 1
    assert "'poll-max-ns', expected: integer" in result.stderr
    assert "poll-max-ns=fast" in result.stderr
    result = cli("serve", "--object", "main-loop,id=a", "--object", "main-loop,id=b")
    assert result.returncode == 1
    assert result.stderr.endswith("only one main-loop instance allowed\n")

    Path(sock_path).write_text("precious")
    result = cli("serve", "--object", "iothread,id=io0", "--qmp", f"unix:{sock_path}")
    assert result.returncode == 1
    assert f"cannot listen on unix:{sock_path}" in result.stderr
    assert "not a socket" in result.stderr
    assert Path(sock_path).read_text() == "precious"


def test_query_without_a_monitor(sock_path: str) -> None:
    result = cli("query", "--qmp", f"unix:{sock_path}")
    assert result.returncode == 1
    assert f"cannot reach the monitor at unix:{sock_path}" in result.stderr


@pytest.mark.parametrize(
    ("greeting", "error"),
    [
        (b"hello\n", "not JSON"),
        (b"[1]\n", "not a JSON object"),
        (b'{"hello": 1}\n', "is not a QMP monitor"),
        (b"", "closed"),
    ],
)
def test_query_against_something_else(sock_path: str, greeting: bytes, error: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        # accept() is bounded too, by what the child's start may take: on the
        # free-threaded build beside busy processes it took more than WAIT.
        server.settimeout(CHILD_WAIT)
        server.bind(sock_path)
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(greeting)

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            result = cli("query", "--qmp", f"unix:{sock_path}")
        finally:
            thread.join(WAIT)
    assert result.returncode == 1
    assert error in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["query"], ["set", "io0", "poll-max-ns=0"]])
def test_a_silent_monitor_times_out(sock_path: str, command: list[str]) -> None:
    # A peer that accepts the connection (the kernel does, from the backlog)
    # and never says a word: the client gives up after --timeout.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(sock_path)
        server.listen()
        result = cli(command[0], "--qmp", f"unix:{sock_path}", "--timeout", "0.2", *command[1:])
    assert result.returncode == 1
    assert f"the monitor at unix:{sock_path} did not answer within 0.2 s" in result.stderr


def test_usage_errors() -> None:
    for argv in (
        [],
        ["query", "--qmp", "unix:/x", "--timeout", "0"],
        ["query", "--qmp", "unix:/x", "--timeout", "soon"],
        ["query"],
        ["query", "--qmp", "ftp:x"],
        ["set", "--qmp", "unix:/x", "io0"],
        ["set", "--qmp", "unix:/x", "io0", "poll-max-ns"],
        ["serve", "--object", "iothread,id=a,oops"],
        ["serve", "--max-clients", "0"],
        ["serve", "--max-clients", "many"],
        ["serve", "--max-errors", "-1"],
        ["serve", "--idle-timeout", "-1"],
        ["serve", "--idle-timeout", "inf"],
        ["serve", "--idle-timeout", "nan"],
        ["serve", "--idle-timeout", "soon"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv


def test_console_script() -> None:
    script = Path(sys.executable).parent / "iothreads"
    if not script.exists():
        pytest.skip("the package is not installed with its console script here")
    result = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=CHILD_WAIT, check=False
    )
    assert result.returncode == 0
    for command in ("serve", "query", "set", "bench"):
        assert command in result.stdout


# -- bench -------------------------------------------------------------------------------


def test_bench_runs_the_benchmarks_module() -> None:
    result = cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m benchmarks" in result.stdout


def test_bench_without_the_benchmarks(tmp_path: Path) -> None:
    # Only the package, no source tree, no site-packages (no editable install).
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "iothreads").symlink_to(REPO / "iothreads")
    (tmp_path / "cwd").mkdir()
    result = subprocess.run(
        [sys.executable, "-S", "-m", "iothreads", "bench"],
        capture_output=True,
        text=True,
        timeout=CHILD_WAIT,
        cwd=tmp_path / "cwd",
        env={**os.environ, "PYTHONPATH": str(tmp_path / "lib")},
        check=False,
    )
    assert result.returncode == 1
    assert "no 'benchmarks' package here" in result.stderr


# -- parsing -------------------------------------------------------------------------------


def test_parse_object() -> None:
    spec = _parse_object("iothread,id=io0,poll-max-ns=32768,poll-grow=0x10,aio-max-batch=-1")
    assert (spec.qom_type, spec.id) == ("iothread", "io0")
    assert spec.props == {"poll-max-ns": 32768, "poll-grow": 16, "aio-max-batch": -1}
    spec = _parse_object("qom-type=main-loop,id=ml,thread-pool-max=eight")
    assert (spec.qom_type, spec.id, spec.props) == ("main-loop", "ml", {"thread-pool-max": "eight"})
    assert _parse_object("iothread").id is None
    for bad, message in (
        ("iothread,id=a,id=b", "Parameter 'id' is duplicate"),
        ("iothread,poll", "expected PROPERTY=VALUE, got 'poll'"),
        ("iothread,=1", "empty property name"),
        ("id=io0", "Parameter 'qom-type' is missing"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            _parse_object(bad)


def test_parse_bounds() -> None:
    assert _seconds_or_never("0") is None  # no idle timeout
    assert _seconds_or_never("2.5") == 2.5
    assert _positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1, got '0'"):
        _positive_int("0")
    with pytest.raises(argparse.ArgumentTypeError, match="or 0 for none, got '-1'"):
        _seconds_or_never("-1")


def test_parse_address() -> None:
    assert _parse_address("unix:/run/q.sock") == Address(path="/run/q.sock")
    assert _parse_address("unix:/q,server,nowait") == Address(path="/q")
    assert _parse_address("tcp:localhost:4444") == Address(host="localhost", port=4444)
    assert _parse_address("tcp::4444") == Address(port=4444)
    assert _parse_address("tcp:[::1]:4444") == Address(host="::1", port=4444)
    assert str(_parse_address("tcp::4444")) == "tcp::4444"
    for bad in (
        "unix:",
        "tcp:host",
        "tcp:host:port",
        "/path",
        "unix:/q,reconnect=1",
        "tcp::99999",
        "unix:/q\0x",
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(bad))):
            _parse_address(bad)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_serve_stops_cleanly_on_each_signal(sock_path: str, sig: signal.Signals) -> None:
    """SIGHUP as well: QEMU treats it like SIGTERM."""
    address = f"unix:{sock_path}"
    with serve("--object", "iothread,id=io0", "--qmp", address) as proc:
        ready_line(proc)
        assert stop(proc, sig) == 0
        assert stderr_of(proc) == ""
    assert not os.path.lexists(sock_path)


# -- qemu.qmp, the cli extra ---------------------------------------------------------------


def test_query_and_set_without_qemu_qmp_name_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "qemu.qmp", None)  # an import of it fails
    for argv in (["query", "--qmp", "unix:/x"], ["set", "--qmp", "tcp::1", "io0", "poll-max-ns=0"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"iothreads {argv[0]}: speaking QMP needs the qemu.qmp package" in err
        assert "pip install 'iothreads[cli]'" in err


def test_the_runtime_and_the_command_line_import_without_qemu_qmp() -> None:
    code = (
        "import sys; sys.modules['qemu'] = None; "
        "import iothreads, iothreads.qmp, iothreads._cli; "
        "assert iothreads._cli.main(['serve', '--help']) == 0"
    )
    result = run_python(code, cwd=REPO)
    # argparse's --help exits 0 through SystemExit, after the imports succeeded.
    assert result.returncode == 0, result.stderr
    assert "usage: iothreads serve" in result.stdout
