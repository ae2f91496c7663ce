"""Tuning a running service from outside: the QMP monitor and the command line.

    python examples/monitor_tuning.py [--requests-per-step 200]

A service runs its work on an IOThread, ``svc0``, created with
``object_add`` so that it is listed under ``/objects`` as QEMU lists its
iothreads, and embeds a QMP monitor on a unix socket.  An operator then
lists and tunes it from another shell, with no restart:

    iothreads query --qmp unix:PATH               # a table; --json for the raw list
    iothreads set --qmp unix:PATH svc0 poll-max-ns=0 poll-shrink=2

or with QEMU's own shell (``pip install qemu.qmp``), which works unchanged:

    qmp-shell PATH
    (QEMU) query-iothreads
    (QEMU) qom-set path=/objects/svc0 property=poll-max-ns value=0
    (QEMU) qom-get path=/objects/svc0 property=poll-max-ns

This program plays both parts: it starts the service and the monitor, runs
those commands (as ``python -m iothreads``, which is what the ``iothreads``
script runs) and prints what they print, then shows that the service saw
the change live, that a rejected value changed nothing, and that the
service answered its requests throughout.  It exits on its own.

To keep a service up and poke at it by hand instead, the command line hosts
one: ``iothreads serve --object iothread,id=svc0 --qmp unix:/tmp/qmp.sock``
runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence

import iothreads
from iothreads import IOThread
from iothreads.qmp import Monitor


async def iothreads_cli(*args: str) -> int:
    """Run ``iothreads ARGS`` as an operator would, echoing it and its output."""
    print(f"$ iothreads {' '.join(args)}", flush=True)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "iothreads", *args)
    return await proc.wait()  # its output goes straight to ours


def handle(request: int) -> int:
    """The service's work, on svc0's thread."""
    return request + 1


async def serve_requests(io: IOThread, count: int) -> int:
    """Send *count* requests to the service; returns how many were answered right."""
    answered = 0
    for i in range(count):
        answered += await io.run(handle, i) == i + 1
    return answered


async def demo(requests_per_step: int) -> int:
    # A user object, as QEMU's -object iothread,id=svc0: started, and listed
    # under /objects (an IOThread made with IOThread(...) is not).
    io = iothreads.object_add("iothread", "svc0", poll_max_ns=32768)
    assert isinstance(io, IOThread)
    answered = 0
    try:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "qmp.sock")
            # The monitor runs on an internal IOThread of its own (not listed).
            async with Monitor(path):
                address = f"unix:{path}"
                print(f"service: svc0 running, QMP monitor at {address}", flush=True)
                answered += await serve_requests(io, requests_per_step)

                status = await iothreads_cli("query", "--qmp", address)
                status |= await iothreads_cli(
                    "set", "--qmp", address, "svc0", "poll-max-ns=0", "poll-shrink=2"
                )
                # The service reads its own properties: the change is live.
                print(f"service: svc0 poll-max-ns is now {io.poll_max_ns}", flush=True)
                answered += await serve_requests(io, requests_per_step)

                # A bad value is refused with the monitor's error (printed by
                # the command, which exits with status 1) and changes nothing.
                refused = await iothreads_cli("set", "--qmp", address, "svc0", "poll-grow=-1")
                print(
                    f"service: refused with status {refused}; poll-grow still {io.poll_grow}",
                    flush=True,
                )
                status |= await iothreads_cli("query", "--qmp", address)
                answered += await serve_requests(io, requests_per_step)
    finally:
        iothreads.object_del("svc0")  # stops it
    print(f"service: {answered} of {3 * requests_per_step} requests answered", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--requests-per-step",
        type=int,
        default=200,
        help="requests the service answers between two steps of the demo",
    )
    args = parser.parse_args(argv)
    if args.requests_per_step < 0:
        parser.error(f"--requests-per-step must be at least 0, not {args.requests_per_step}")
    return asyncio.run(demo(args.requests_per_step))


if __name__ == "__main__":
    sys.exit(main())
