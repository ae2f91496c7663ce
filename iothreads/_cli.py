"""The ``iothreads`` command line (also ``python -m iothreads``).

* ``iothreads serve --object iothread,id=io0,poll-max-ns=32768 --qmp unix:PATH``
  hosts objects (QEMU's ``-object`` syntax) and a QMP monitor until SIGINT,
  SIGTERM or SIGHUP, then stops everything and exits 0; with
  ``--metrics-port N`` it serves ``iothreads.metrics`` to Prometheus too.
* ``iothreads query --qmp unix:PATH [--json]`` prints the iothreads.
* ``iothreads set --qmp unix:PATH io0 poll-max-ns=0`` tunes an object live.
* ``iothreads bench [ARGS]`` runs ``python -m benchmarks ARGS`` (the benchmarks
  live in the source tree, not in the wheel).

``serve`` uses the public objects API and :class:`iothreads.qmp.Monitor`;
``query`` and ``set`` are conversations of ``qmp._client``, which speaks QMP
through ``qemu.qmp`` (the optional ``cli`` extra), so they work against any
QMP monitor, this package's or QEMU's.  A monitor's error is printed as its
``desc``, and the exit status is 1.

``serve`` handles SIGINT, SIGTERM and SIGHUP on its asyncio loop, which only the
main thread can do (``loop.add_signal_handler``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import runpy
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ._errors import IOThreadsError
from ._event_loop_base import MainLoop
from ._objects import object_add, object_del, query_iothreads
from .qmp import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_ERRORS, Monitor
from .qmp._client import Address, Execute, MonitorError, converse
from .qmp._server import LOOPBACK

__all__ = ["main"]

#: Exit statuses: 1 for a refused request or an unreachable monitor; argparse
#: uses 2 for a malformed command line.
_EXIT_ERROR: Final = 1

#: The ``-qmp`` options QEMU users write out of habit; they describe what the
#: monitor does anyway (it listens, and never waits for a client).
_QMP_NOOP_OPTIONS: Final = frozenset({"server", "server=on", "wait=off", "nowait"})

#: ``query``'s columns, in QEMU's order (the keys of query-iothreads).
_COLUMNS: Final = ("id", "thread-id", "poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch")

#: TCP ports are 16 bits.
_MAX_PORT: Final = 65535

#: How long query/set wait for a monitor: a live one answers in milliseconds;
#: ten seconds covers a loaded machine without leaving a script hanging.
_DEFAULT_TIMEOUT: Final = 10.0

# -- parsing ---------------------------------------------------------------------------


def _parse_address(text: str) -> Address:
    """Parse ``unix:PATH`` or ``tcp:[HOST]:PORT`` (QEMU's ``-qmp`` forms).

    Raises:
        argparse.ArgumentTypeError: anything else; the message quotes *text*.
    """
    address, *options = text.split(",")
    for option in options:
        if option not in _QMP_NOOP_OPTIONS:
            raise argparse.ArgumentTypeError(f"unsupported option {option!r} in {text!r}")
    kind, sep, rest = address.partition(":")
    if kind == "unix" and sep and rest:
        if "\0" in rest:
            raise argparse.ArgumentTypeError(f"a socket path cannot contain NUL: {text!r}")
        return Address(path=rest)
    if kind == "tcp" and sep:
        host, sep, port = rest.rpartition(":")
        if sep and port.isdigit():
            if int(port) > _MAX_PORT:
                raise argparse.ArgumentTypeError(f"port must be 0-{_MAX_PORT}, got {text!r}")
            return Address(host=host.strip("[]") or None, port=int(port))
    raise argparse.ArgumentTypeError(f"expected unix:PATH or tcp:[HOST]:PORT, got {text!r}")


def _parse_value(text: str) -> int | str:
    """An int where the text is one (``32768``, ``0x8000``), else the text,
    for the object to reject with its own message naming the property."""
    try:
        return int(text, 0)
    except ValueError:
        return text


@dataclass(frozen=True)
class _ObjectSpec:
    """One ``--object`` argument, parsed."""

    text: str
    qom_type: str
    id: str | None
    props: dict[str, int | str]


def _parse_object(text: str) -> _ObjectSpec:
    """Parse QEMU's ``-object`` syntax: ``TYPE,id=ID,PROP=VALUE,...``
    (``qom-type=TYPE`` also works); property values are ints.

    Raises:
        argparse.ArgumentTypeError: a malformed item; the message quotes it.
    """
    fields: dict[str, str] = {}
    for i, item in enumerate(text.split(",")):
        key, sep, value = item.partition("=")
        if not sep and i == 0:
            key, value = "qom-type", item
        elif not sep:
            raise argparse.ArgumentTypeError(f"expected PROPERTY=VALUE, got {item!r} in {text!r}")
        if not key:
            raise argparse.ArgumentTypeError(f"empty property name in {text!r}")
        if key in fields:
            raise argparse.ArgumentTypeError(f"Parameter '{key}' is duplicate in {text!r}")
        fields[key] = value
    qom_type = fields.pop("qom-type", None)
    if not qom_type:
        raise argparse.ArgumentTypeError(f"Parameter 'qom-type' is missing in {text!r}")
    id = fields.pop("id", None)
    return _ObjectSpec(text, qom_type, id, {k: _parse_value(v) for k, v in fields.items()})


def _parse_assignment(text: str) -> tuple[str, int | str]:
    """``PROP=VALUE`` for ``set``.

    Raises:
        argparse.ArgumentTypeError: no ``=`` or no name; the message quotes *text*.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected PROPERTY=VALUE, got {text!r}")
    return key, _parse_value(value)


# -- the commands ------------------------------------------------------------------------


def _fail(message: object) -> int:
    print(message, file=sys.stderr)
    return _EXIT_ERROR


@dataclass(frozen=True)
class _Bounds:
    """``serve``'s bounds on each monitor's clients (see ``Monitor``)."""

    max_clients: int
    idle_timeout: float | None
    max_errors: int


async def _serve(
    objects: Sequence[_ObjectSpec],
    addresses: Sequence[Address],
    bounds: _Bounds,
    metrics_address: tuple[str, int] | None = None,
) -> int:
    """Host *objects* and a monitor per address, each held to *bounds*, until
    SIGINT, SIGTERM or SIGHUP, and the Prometheus metrics over HTTP on
    *metrics_address* (host, port)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # SIGHUP too, as QEMU does: a closed terminal stops it cleanly.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    monitors: list[Monitor] = []
    exporter: _MetricsExporter | None = None
    try:
        for spec in objects:
            try:
                obj = object_add(spec.qom_type, spec.id, **spec.props)
            except IOThreadsError as exc:
                return _fail(f"iothreads serve: --object {spec.text}: {exc}")
            if isinstance(obj, MainLoop):
                obj.install()  # this loop is the application's loop: its pool runs here
        for address in addresses:
            monitor = Monitor(
                address.path,
                host=address.host or LOOPBACK,
                port=address.port,
                max_clients=bounds.max_clients,
                idle_timeout=bounds.idle_timeout,
                max_errors=bounds.max_errors,
            )
            try:
                await monitor.start()
            except OSError as exc:
                return _fail(f"iothreads serve: cannot listen on {address}: {exc}")
            monitors.append(monitor)
            if monitor.tcp_address is not None:
                host, port = monitor.tcp_address
                address = Address(host=host, port=port)
            print(f"iothreads serve: QMP monitor listening on {address}", flush=True)
        if metrics_address is not None:
            try:
                # In a thread, as its close below: importing prometheus_client
                # can take longer than a loop should be held.
                exporter = await asyncio.to_thread(_MetricsExporter, *metrics_address)
            except (ImportError, OSError) as exc:
                return _fail(f"iothreads serve: --metrics-port: {exc}")
            print(f"iothreads serve: metrics served at {exporter.url}", flush=True)
        await stop.wait()
        return 0
    finally:
        # Scrapes end first: none reads an object tree being emptied.  In a
        # thread: the server notices the shutdown at its next poll, up to
        # half a second later.
        if exporter is not None:
            await asyncio.to_thread(exporter.close)
        for monitor in monitors:
            await monitor.aclose()
        # Every user iothread, including those added over QMP, stops cleanly.
        for info in reversed(query_iothreads()):
            object_del(info.id)
        main_loop = MainLoop.instance()
        if main_loop is not None:
            main_loop.close()
        for sig in signals:
            loop.remove_signal_handler(sig)


class _MetricsExporter:
    """``iothreads.metrics`` served over HTTP by prometheus_client's own
    server thread, from prometheus_client's global registry (which adds the
    process's own figures: CPU, memory, file descriptors)."""

    def __init__(self, host: str, port: int) -> None:
        """Register the collector and start serving.

        Raises:
            ImportError: prometheus_client is not installed; the message
                names the extra to install.
            OSError: the address cannot be listened on; nothing is left
                registered.
        """
        # Only here: the metrics extra is optional.  iothreads.metrics first,
        # out of isort's order: its ImportError names the extra to install.
        from . import metrics  # noqa: I001
        import prometheus_client

        self._registry = prometheus_client.REGISTRY
        self._collector = metrics.register(self._registry)
        try:
            self._server, self._thread = prometheus_client.start_http_server(
                port, addr=host, registry=self._registry
            )
        except OSError as exc:
            self._registry.unregister(self._collector)
            raise OSError(f"cannot listen on {host}:{port}: {exc}") from None
        bound_host, bound_port = self._server.server_address[:2]
        name = f"[{bound_host!s}]" if ":" in str(bound_host) else str(bound_host)
        self.url = f"http://{name}:{bound_port}/metrics"

    def close(self) -> None:
        """Stop serving, wait for the server's thread, unregister."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._registry.unregister(self._collector)


async def _query(address: Address, as_json: bool, timeout: float) -> int:
    try:
        iothreads = await converse(
            "query", address, timeout, lambda execute: execute("query-iothreads", None)
        )
    except MonitorError as exc:
        return _fail(exc)
    if as_json:
        print(json.dumps(iothreads, indent=2))
        return 0
    rows = [[c.upper() for c in _COLUMNS]]
    rows += [[str(t.get(c, "")) for c in _COLUMNS] for t in iothreads]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _set(
    address: Address,
    target: str,
    assignments: Sequence[tuple[str, int | str]],
    timeout: float,
) -> int:
    """Set the properties in order, all or none: QMP has no transaction for
    qom-set, so when one is refused, those set before it get back the
    values read before the first (a concurrent change to one of them in the
    meantime is overwritten)."""
    path = target if target.startswith("/") else f"/objects/{target}"

    async def set_all(execute: Execute) -> None:
        async def set_one(prop: str, value: object) -> None:
            await execute("qom-set", {"path": path, "property": prop, "value": value})

        # Unknown objects and properties are refused here, before any change.
        before = [await execute("qom-get", {"path": path, "property": p}) for p, _ in assignments]
        for done, (prop, value) in enumerate(assignments):
            try:
                await set_one(prop, value)
            except Exception:
                for undone in reversed(range(done)):
                    await set_one(assignments[undone][0], before[undone])
                raise

    try:
        await converse("set", address, timeout, set_all)
    except MonitorError as exc:
        return _fail(exc)
    return 0


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


def _port(text: str) -> int:
    """A TCP port number, 0 for any free one.

    Raises:
        argparse.ArgumentTypeError: not an integer from 0 to 65535; the
            message quotes *text*.
    """
    if not text.isdigit() or int(text) > _MAX_PORT:
        raise argparse.ArgumentTypeError(f"expected a port number 0-{_MAX_PORT}, got {text!r}")
    return int(text)


def _seconds_or_never(text: str) -> float | None:
    """A positive number of seconds, or 0 for none (no timeout).

    Raises:
        argparse.ArgumentTypeError: anything else; the message quotes *text*.
    """
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if seconds == 0:
        return None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, or 0 for none, got {text!r}"
        )
    return seconds


def _positive_int(text: str) -> int:
    """A whole number of at least 1.

    Raises:
        argparse.ArgumentTypeError: *text* is not an int of at least 1; the
            message quotes it.
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _bench(args: Sequence[str]) -> int:
    """Run ``python -m benchmarks ARGS``: the current directory first on
    ``sys.path``, as ``python -m`` has it.

    Raises:
        SystemExit: whatever the benchmarks exit with.
    """
    sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec("benchmarks.__main__") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return _fail(
            "iothreads bench: no 'benchmarks' package here; run it from the root of a "
            "checkout of the iothreads repository (the benchmarks are not in the wheel)"
        )
    sys.argv = ["python -m benchmarks", *args]
    runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iothreads", description="Host, inspect and tune iothreads over QMP."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="host objects and a QMP monitor until SIGINT/SIGTERM/SIGHUP"
    )
    serve.add_argument(
        "--object",
        action="append",
        default=[],
        type=_parse_object,
        metavar="TYPE,id=ID[,PROP=VALUE...]",
        help="create an object, as QEMU's -object (e.g. iothread,id=io0,poll-max-ns=32768)",
    )
    serve.add_argument(
        "--qmp",
        action="append",
        default=[],
        type=_parse_address,
        metavar="ADDRESS",
        help="listen for QMP clients on unix:PATH or tcp:[HOST]:PORT (loopback by default)",
    )
    serve.add_argument(
        "--max-clients",
        type=_positive_int,
        default=DEFAULT_MAX_CLIENTS,
        metavar="N",
        help="QMP clients each monitor serves at once; one more gets an error "
        f"(default {DEFAULT_MAX_CLIENTS})",
    )
    serve.add_argument(
        "--idle-timeout",
        type=_seconds_or_never,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="disconnect a QMP client that sends no request (or takes no reply) for "
        f"this long; 0 for never (default {DEFAULT_IDLE_TIMEOUT:g})",
    )
    serve.add_argument(
        "--max-errors",
        type=_positive_int,
        default=DEFAULT_MAX_ERRORS,
        metavar="N",
        help="error replies a QMP client may draw per second before it is disconnected "
        f"(default {DEFAULT_MAX_ERRORS})",
    )

    serve.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics over HTTP at /metrics on this port (0: any free port);"
        " needs the metrics extra",
    )
    serve.add_argument(
        "--metrics-address",
        metavar="HOST",
        help=f"the address the metrics are served on (default {LOOPBACK}; 0.0.0.0 for every"
        " interface)",
    )

    query = sub.add_parser("query", help="list the iothreads of a running monitor")
    query.add_argument("--qmp", required=True, type=_parse_address, metavar="ADDRESS")
    query.add_argument("--json", action="store_true", help="print query-iothreads' JSON")

    set_ = sub.add_parser("set", help="set properties of a live object, all or none")
    set_.add_argument("--qmp", required=True, type=_parse_address, metavar="ADDRESS")
    for client in (query, set_):
        client.add_argument(
            "--timeout",
            type=_positive_seconds,
            default=_DEFAULT_TIMEOUT,
            metavar="SECONDS",
            help=f"give up on a monitor that does not answer (default {_DEFAULT_TIMEOUT:g})",
        )
    set_.add_argument("id", help="the object's id (or its QOM path)")
    set_.add_argument("assignments", nargs="+", type=_parse_assignment, metavar="PROP=VALUE")

    # Listed for --help only: main() hands "bench" and all after it to the benchmarks.
    sub.add_parser("bench", help="run the benchmarks (python -m benchmarks ARGS)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse *argv* (default ``sys.argv[1:]``), run, return
    the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        return _bench(args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command == "serve":
        bounds = _Bounds(args.max_clients, args.idle_timeout, args.max_errors)
        metrics_address = None
        if args.metrics_port is not None:
            metrics_address = (args.metrics_address or LOOPBACK, args.metrics_port)
        elif args.metrics_address is not None:
            parser.error("--metrics-address needs --metrics-port")
        return asyncio.run(_serve(args.object, args.qmp, bounds, metrics_address))
    if args.command == "query":
        return asyncio.run(_query(args.qmp, args.json, args.timeout))
    return asyncio.run(_set(args.qmp, args.id, args.assignments, args.timeout))
