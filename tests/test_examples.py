"""The programs in examples/, end to end: each started as a user starts it.

Each runs as a child process with ``-X dev`` (asyncio's debug mode and the
``@runs_in`` checks on, a leaked transport or file reported), on each loop
kind, and each wait on it is bounded.  The server (multiloop_server.py)
prints a ready line, is talked to over TCP, then stopped with a signal; the
others finish on their own with a small workload.  Every test checks what
the program printed, its exit status, and that it reported no error.  No
child process outlives its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import CHILD_WAIT, LOOP_FACTORIES, WAIT, child_process, first_line

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "multiloop_server.py"

#: What a clean run never prints on stderr.
TROUBLE = ("Traceback", "Exception", "ResourceWarning", "never retrieved")

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
    assert_no_trouble(err)


def assert_no_trouble(stderr: str) -> None:
    for trouble in TROUBLE:
        assert trouble not in stderr, stderr


def run_example(
    name: str,
    *args: str,
    loop_kind: str | None = None,
    implementation: str = "native",
    dev: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run examples/*name* to its end (bounded), on *loop_kind*'s loop if
    given, with the pure-Python inbox if *implementation* is "python"."""
    env = dict(os.environ)
    if loop_kind is not None:
        env["IOTHREADS_LOOP"] = loop_kind
    if implementation == "python":
        env["IOTHREADS_NO_EXTENSIONS"] = "1"
    return subprocess.run(
        [sys.executable, *(["-X", "dev"] if dev else []), str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_WAIT,
        env=env,
        check=False,
    )


def finished_cleanly(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines *proc* printed, once checked that it exited 0 with no error."""
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert_no_trouble(proc.stderr)
    return proc.stdout.splitlines()


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("multiloop_server.py", ["--loops", "0"], "--loops must be at least 1, not 0"),
        ("multiloop_server.py", ["--port", "70000"], "--port must be in [0, 65535], not 70000"),
        ("offload_blocking.py", ["--requests", "-1"], "--requests must be at least 0, not -1"),
        ("pinned_polling.py", ["--requests", "-1"], "--requests must be at least 0, not -1"),
        ("pinned_polling.py", ["--cpu", "one"], "--cpu must be auto, none or a CPU id, not 'one'"),
        ("pinned_polling.py", ["--poll-max-ns", "-1"], "--poll-max-ns -1: poll-max-ns value must"),
        ("glib_on_iothread.py", ["--ticks", "0"], "--ticks must be at least 1, not 0"),
        (
            "glib_on_iothread.py",
            ["--interval-ms", "-1"],
            "--interval-ms must be at least 0, not -1",
        ),
        (
            "monitor_tuning.py",
            ["--requests-per-step", "-1"],
            "--requests-per-step must be at least 0, not -1",
        ),
    ],
)
def test_examples_reject_bad_arguments(name: str, args: list[str], message: str) -> None:
    proc = run_example(name, *args, dev=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


# -- offload_blocking.py ---------------------------------------------------------------------


@pytest.mark.parametrize("loop_kind", list(LOOP_FACTORIES))
def test_offload_blocking_runs_queries_off_the_apps_loop(
    loop_kind: str, implementation: str
) -> None:
    pytest.importorskip("sqlite3", reason="this CPython was built without sqlite3")
    # 60 requests for ids 0-59: the table holds users 0-49.
    proc = run_example(
        "offload_blocking.py",
        "--requests",
        "60",
        "--loop",
        loop_kind,
        implementation=implementation,
    )
    # -X dev reports the deliberate stall ("Executing <Task...> took N seconds")
    # where the query takes longer than asyncio's threshold: not an error.
    lines = finished_cleanly(proc)
    # The report run on the app's loop blocks it: no tick can come in between.
    assert re.fullmatch(r"report on the app's loop: 0 heartbeat ticks, .*", lines[0]), lines
    assert re.fullmatch(r"report and requests offloaded: \d+ heartbeat ticks, .*", lines[1])
    assert lines[2] == "report: counted 1000000 rows over 50 users"
    assert lines[3] == "get_user: 60 requests, 50 found, 10 not found, 0 wrong"
    threads: dict[str, int] = {}
    for line in lines[4:]:
        match = re.fullmatch(r"queries on thread '(.+)': (\d+)", line)
        assert match, lines
        threads[match.group(1)] = int(match.group(2))
    # The writes (the table and its 50 users) on the IOThread's own thread;
    # the reads (60 requests and the report) on its pool; none elsewhere.
    assert threads.pop("IO db") == 51
    assert all(name.startswith("IO db worker") for name in threads), threads
    assert sum(threads.values()) == 61


# -- pinned_polling.py -----------------------------------------------------------------------

REQUESTS = 200


def polling_runs(lines: list[str]) -> dict[str, dict[str, int]]:
    """The counters of each run (polling on, polling off), from the lines after the first."""
    runs: dict[str, dict[str, int]] = {}
    for label in ("polling on", "polling off"):
        (start,) = [i for i, line in enumerate(lines) if line.startswith(label)]
        assert lines[start].endswith(f": {REQUESTS} requests answered"), lines
        assert re.fullmatch(r"  round trip p50 [\d.]+ us, p99 [\d.]+ us", lines[start + 1])
        counters = " ".join(lines[start + 2 : start + 4])
        runs[label] = {name: int(value) for name, value in re.findall(r"(\w+) (\d+)", counters)}
    return runs


@pytest.mark.parametrize("loop_kind", list(LOOP_FACTORIES))
def test_pinned_polling_prints_the_loop_statistics(loop_kind: str, implementation: str) -> None:
    proc = run_example(
        "pinned_polling.py",
        "--requests",
        str(REQUESTS),
        "--loop",
        loop_kind,
        implementation=implementation,
    )
    lines = finished_cleanly(proc)
    native = f"native {implementation == 'native'}"
    assert [line.endswith(native) for line in lines if "spin_ns" in line] == [True, True], lines
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(allowed) >= 2:
        # Pinned to the last CPU the process may use, unless the system refuses.
        pinned = f"IOThread 'rt0': pinned to CPU {allowed[-1]} of {allowed}; cpu_affinity"
        assert lines[0] in (f"{pinned} {allowed[-1]}",) or re.fullmatch(
            r"IOThread 'rt0': unpinned \(pinning refused: .+\); cpu_affinity none", lines[0]
        ), lines[0]
    elif allowed:
        assert lines[0] == (
            f"IOThread 'rt0': unpinned (this process may use CPU {allowed[0]} only);"
            " cpu_affinity none"
        )
    else:
        assert lines[0] == (
            "IOThread 'rt0': unpinned (this platform cannot pin threads); cpu_affinity none"
        )
    runs = polling_runs(lines)
    for counters in runs.values():
        # One submission per request, each either woke the loop or found it awake.
        assert counters["submitted"] == REQUESTS
        assert counters["wakeups_sent"] + counters["wakeups_suppressed"] == REQUESTS
        assert counters["poll_hits"] <= counters["polls"]
    # Switched off live, polling stops: not one polling phase in the second run.
    off = runs["polling off"]
    assert (off["polls"], off["poll_hits"], off["spin_ns"], off["poll_ns"]) == (0, 0, 0, 0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins threads on Linux only")
def test_pinned_polling_runs_unpinned_where_pinning_is_refused() -> None:
    proc = run_example("pinned_polling.py", "--requests", str(REQUESTS), "--cpu", "9999")
    lines = finished_cleanly(proc)
    assert lines[0].startswith(
        "IOThread 'rt0': unpinned (pinning refused: CPU 9999 is not allowed to this process"
    ), lines[0]
    assert lines[0].endswith("; cpu_affinity none")
    assert polling_runs(lines)["polling on"]["submitted"] == REQUESTS


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins threads on Linux only")
def test_pinned_polling_leaves_a_one_cpu_process_unpinned() -> None:
    cpu = min(os.sched_getaffinity(0))
    # The example run in a process confined to one CPU, as `taskset -c CPU` would.
    confined = (
        "import os, runpy, sys\n"
        f"os.sched_setaffinity(0, {{{cpu}}})\n"
        f"sys.argv = [{str(EXAMPLES / 'pinned_polling.py')!r}, '--requests', '{REQUESTS}']\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", confined],
        capture_output=True,
        text=True,
        timeout=CHILD_WAIT,
        check=False,
    )
    lines = finished_cleanly(proc)
    assert lines[0] == (
        f"IOThread 'rt0': unpinned (this process may use CPU {cpu} only); cpu_affinity none"
    )
    assert polling_runs(lines)["polling off"]["polls"] == 0


# -- glib_on_iothread.py ---------------------------------------------------------------------


@pytest.mark.parametrize("loop_kind", list(LOOP_FACTORIES))
def test_glib_on_iothread_runs_the_timer_and_the_watch_there(loop_kind: str) -> None:
    proc = run_example(
        "glib_on_iothread.py", "--ticks", "3", "--interval-ms", "5", loop_kind=loop_kind
    )
    lines = finished_cleanly(proc)
    # The first readings may come before or after the main thread's line.
    assert "main: the IOThread and its sources run on 'IO glib0'; main only waits" in lines
    readings = [line for line in lines if not line.startswith("main: ")]
    assert readings == [f"IO glib0: reading {i}" for i in (1, 2, 3)]
    assert lines[-1] == "main: 3 readings sent, 3 received"


# -- monitor_tuning.py -----------------------------------------------------------------------


@pytest.mark.parametrize("loop_kind", list(LOOP_FACTORIES))
def test_monitor_tuning_sets_and_queries_a_live_iothread(
    loop_kind: str, implementation: str
) -> None:
    proc = run_example(
        "monitor_tuning.py",
        "--requests-per-step",
        "20",
        loop_kind=loop_kind,
        implementation=implementation,
    )
    lines = finished_cleanly(proc)
    match = re.fullmatch(r"service: svc0 running, QMP monitor at (unix:\S+)", lines[0])
    assert match, lines
    address = match.group(1)
    header = ["ID", "THREAD-ID", "POLL-MAX-NS", "POLL-GROW", "POLL-SHRINK", "AIO-MAX-BATCH"]
    table = [line.split() for line in lines]
    first, last = [i for i, row in enumerate(table) if row == header]
    assert lines[first - 1] == f"$ iothreads query --qmp {address}"
    # Each row: id, thread-id, poll-max-ns, poll-grow, poll-shrink, aio-max-batch.
    assert table[first + 1][0] == "svc0"
    assert table[first + 1][2:] == ["32768", "0", "0", "0"]
    assert lines[first + 2 :] == [
        f"$ iothreads set --qmp {address} svc0 poll-max-ns=0 poll-shrink=2",
        "service: svc0 poll-max-ns is now 0",  # the running service saw the change
        f"$ iothreads set --qmp {address} svc0 poll-grow=-1",
        "service: refused with status 1; poll-grow still 0",
        f"$ iothreads query --qmp {address}",
        lines[last],
        lines[last + 1],
        "service: 60 of 60 requests answered",
    ]
    assert table[last + 1][0] == "svc0"
    assert table[last + 1][2:] == ["0", "0", "2", "0"]
    assert table[last + 1][1] == table[first + 1][1]  # the same thread: tuned, not restarted
    # The refused command printed the monitor's error, naming the property.
    assert "poll-grow value must be in range" in proc.stderr
