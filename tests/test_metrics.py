"""``iothreads.metrics`` and ``iothreads serve --metrics-port``, scraped over loopback.

Every scrape goes through prometheus_client's own HTTP server and parser, as
Prometheus would read it.  The module is skipped where the metrics extra is
not installed (the test extra installs it).
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iothreads import IOThread, MainLoop, ThreadPool, object_add

from .helpers import (
    CHILD_WAIT,
    WAIT,
    LoopFactory,
    child_process,
    first_line,
    run_python,
    wait_until,
)

prometheus_client = pytest.importorskip("prometheus_client", reason="needs the metrics extra")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from iothreads import metrics  # noqa: E402 - only with prometheus_client, checked above

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scrape:
    """One scrape: each family's type and HELP, and each (sample, id) value."""

    types: dict[str, str]
    helps: dict[str, str]
    values: dict[tuple[str, str], float]


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        text = response.read().decode()
    types, helps, values = {}, {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name], helps[family.name] = family.type, family.documentation
        for sample in family.samples:
            if "id" in sample.labels:
                values[sample.name, sample.labels["id"]] = sample.value
    return Scrape(types, helps, values)


@pytest.fixture
def endpoint() -> Iterator[str]:
    """The URL of a registry holding only the collector, served on loopback."""
    registry = prometheus_client.CollectorRegistry()
    metrics.register(registry)
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def test_counters_and_gauges_of_an_iothread_and_its_pool(
    endpoint: str, loop_factory: LoopFactory
) -> None:
    with IOThread("io0", loop_factory=loop_factory, poll_max_ns=16384, poll_grow=4) as io:
        before = scrape(endpoint)
        for name, kind in [
            ("iothreads_submitted", "counter"),
            ("iothreads_wakeups_sent", "counter"),
            ("iothreads_spin_seconds", "counter"),
            ("iothreads_poll_window_seconds", "gauge"),
            ("iothreads_poll_max_seconds", "gauge"),
            ("iothreads_pool_requests_completed", "counter"),
            ("iothreads_pool_threads", "gauge"),
        ]:
            assert before.types[name] == kind, name
            assert before.helps[name], f"{name} has no HELP"
        assert before.values["iothreads_poll_max_seconds", "io0"] == 16384e-9
        assert before.values["iothreads_poll_grow", "io0"] == 4
        assert before.values["iothreads_native_core", "io0"] == io.aio_context.statistics().native

        for _ in range(3):
            io.run_sync(int)
        assert io.thread_pool is not None
        pool_stats = io.thread_pool.statistics
        done = pool_stats().completed + 1
        io.thread_pool.submit(int).result(WAIT)
        # The worker counts the request after handing over its result.
        wait_until(lambda: pool_stats().completed >= done, "the pool to count the request")
        io.poll_max_ns = 0

        after = scrape(endpoint)
        submitted = after.values["iothreads_submitted_total", "io0"]
        assert submitted >= before.values["iothreads_submitted_total", "io0"] + 3
        completed = after.values["iothreads_pool_requests_completed_total", "io0"]
        assert completed == before.values["iothreads_pool_requests_completed_total", "io0"] + 1
        assert after.values["iothreads_poll_max_seconds", "io0"] == 0
    # A stopped IOThread leaves /objects, and the scrape with it.
    assert not any(id == "io0" for _, id in scrape(endpoint).values)


def test_each_user_iothread_is_labelled_by_its_id(endpoint: str, loop_factory: LoopFactory) -> None:
    with (
        IOThread("io0", loop_factory=loop_factory),
        IOThread("io1", loop_factory=loop_factory, thread_pool_min=2),
    ):
        values = scrape(endpoint).values
        assert {id for _, id in values} == {"io0", "io1"}
        assert values["iothreads_pool_min_threads", "io1"] == 2
        assert values["iothreads_pool_min_threads", "io0"] == 0


async def test_the_main_loop_pool_is_labelled_main_loop(endpoint: str) -> None:
    # Under /objects, as object_add() (QMP's object-add, serve's --object) puts it.
    main_loop = object_add("main-loop", "main-loop", thread_pool_max=8)
    assert isinstance(main_loop, MainLoop)
    try:
        main_loop.install()
        # The scrape blocks: it runs on the main-loop's own pool.
        values = (await asyncio.to_thread(scrape, endpoint)).values
    finally:
        main_loop.close()
    assert values["iothreads_pool_max_threads", "main-loop"] == 8
    assert values["iothreads_pool_requests_completed_total", "main-loop"] == 0


def test_a_plain_thread_pool_is_not_a_user_object(endpoint: str) -> None:
    # Only what /objects lists is exposed, as query_thread_pools() reports.
    with ThreadPool(min_threads=1):
        assert scrape(endpoint).values == {}


def test_registering_twice_on_one_registry_is_refused() -> None:
    registry = prometheus_client.CollectorRegistry()
    collector = metrics.register(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.register(registry)
    registry.unregister(collector)
    metrics.register(registry)  # after unregistering, it can again


def test_without_prometheus_client_the_import_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    for name in ("iothreads.metrics", "iothreads.metrics._collector"):
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"pip install 'iothreads\[metrics\]'"):
        importlib.import_module("iothreads.metrics")


def test_the_runtime_works_without_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import iothreads\n"
        "with iothreads.IOThread('io0') as io: assert io.run_sync(int) == 0\n"
        "assert 'iothreads.metrics' not in sys.modules\n"
    )
    result = run_python(code)
    assert (result.returncode, result.stderr) == (0, "")


# -- iothreads serve --metrics-port ------------------------------------------------------


def metrics_url(proc: subprocess.Popen[bytes]) -> str:
    line = first_line(proc, "iothreads serve").decode().strip()
    prefix = "iothreads serve: metrics served at "
    assert line.startswith(prefix), line
    return line.removeprefix(prefix)


def serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "iothreads", "serve", *args]


def test_serve_exposes_the_metrics_and_stops_cleanly(sock_path: str) -> None:
    qmp = f"unix:{sock_path}"
    argv = serve("--object", "iothread,id=io0", "--qmp", qmp, "--metrics-port", "0")
    with child_process(argv, cwd=REPO) as proc:
        assert b"QMP monitor listening" in first_line(proc, "iothreads serve")
        url = metrics_url(proc)
        assert url.startswith("http://127.0.0.1:")
        before = scrape(url)
        assert before.values["iothreads_poll_max_seconds", "io0"] == 32768e-9
        assert before.types["process_open_fds"] == "gauge"  # the global registry's own
        setter = subprocess.run(
            [sys.executable, "-m", "iothreads", "set", "--qmp", qmp, "io0", "poll-max-ns=1000"],
            capture_output=True,
            timeout=CHILD_WAIT,
            check=False,
        )
        assert setter.returncode == 0, setter.stderr
        assert scrape(url).values["iothreads_poll_max_seconds", "io0"] == 1000e-9
        proc.terminate()
        assert proc.wait(WAIT) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == b""


def test_serve_reports_a_metrics_port_it_cannot_listen_on() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            serve("--object", "iothread,id=io0", "--metrics-port", str(port)),
            capture_output=True,
            text=True,
            timeout=CHILD_WAIT,
            check=False,
            cwd=REPO,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"iothreads serve: --metrics-port: cannot listen on 127.0.0.1:{port}: "
    )


def test_serve_without_prometheus_client_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from iothreads._cli import main\n"
        "sys.exit(main(['serve', '--metrics-port', '0']))\n"
    )
    result = run_python(code)
    assert result.returncode == 1
    assert "pip install 'iothreads[metrics]'" in result.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--metrics-port", "65536"], "expected a port number 0-65535, got '65536'"),
        (["--metrics-port", "http"], "expected a port number 0-65535, got 'http'"),
        (["--metrics-address", "0.0.0.0"], "--metrics-address needs --metrics-port"),
    ],
)
def test_serve_rejects_bad_metrics_options(args: list[str], error: str) -> None:
    result = subprocess.run(
        serve(*args), capture_output=True, text=True, timeout=CHILD_WAIT, check=False, cwd=REPO
    )
    assert result.returncode == 2
    assert error in result.stderr
