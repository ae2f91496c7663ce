"""A GLib timer + fd-watch program, moved onto an IOThread (no PyGObject needed).

    python examples/glib_on_iothread.py [--ticks 5] [--interval-ms 20]

The program as it was written for GLib: a timeout source sends a reading
down a socket every *interval* ms (standing for a device or a peer), and an
fd watch on the other end prints what arrives, until the sender hangs up.
It ran in the main thread under ``GLib.MainLoop().run()``.

Moved onto an IOThread, three lines change (marked ``was:``): the import,
the ``context=`` given to each source, and the wait that replaces
``MainLoop.run()``.  ``io.get_g_main_context()`` gives the IOThread a
GLib-like main context (``iothreads.glib``, PyGObject's API in pure Python);
the IOThread's thread dispatches its sources beside its asyncio loop, so the
same IOThread still takes ``io.run(...)`` work meanwhile, and the main
thread is free.  Stopping the IOThread destroys the sources still attached.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from collections.abc import Sequence

from iothreads import IOThread
from iothreads import glib as GLib  # was: from gi.repository import GLib

#: How long the main thread waits for the program to finish, at most.
TIMEOUT_S = 30.0

#: Two threads print (main, and the IOThread's callbacks): print() writes a
#: line and its newline separately, so a lock keeps each line whole.
_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


class Sensor:
    """The GLib program's state and callbacks, unchanged by the move."""

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks
        self.sent = 0
        self.received: list[str] = []
        self.reader, self.writer = socket.socketpair()
        self.done = threading.Event()  # was: a GLib.MainLoop, quit() in on_data

    def on_tick(self) -> bool:
        """The timeout source: send one reading; after the last, hang up."""
        self.sent += 1
        self.writer.send(f"reading {self.sent}\n".encode())
        if self.sent < self.ticks:
            return GLib.SOURCE_CONTINUE
        self.writer.close()
        return GLib.SOURCE_REMOVE

    def on_data(self, sock: socket.socket, condition: int) -> bool:
        """The fd watch: print what arrives; stop at the end of the stream."""
        data = sock.recv(4096) if condition & GLib.IO_IN else b""
        if data:
            for line in data.decode().splitlines():
                self.received.append(line)
                # The callbacks run in the IOThread's thread ("IO glib0").
                say(f"{threading.current_thread().name}: {line}")
            return GLib.SOURCE_CONTINUE
        self.done.set()  # the end of the stream, or HUP: the sender hung up
        return GLib.SOURCE_REMOVE

    def close(self) -> None:
        self.reader.close()
        self.writer.close()  # closing twice is harmless


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ticks", type=int, default=5, help="readings to send")
    parser.add_argument("--interval-ms", type=int, default=20, help="time between readings")
    args = parser.parse_args(argv)
    if args.ticks < 1:
        parser.error(f"--ticks must be at least 1, not {args.ticks}")
    if args.interval_ms < 0:
        parser.error(f"--interval-ms must be at least 0, not {args.interval_ms}")

    sensor = Sensor(args.ticks)
    try:
        with IOThread("glib0") as io:
            ctx = io.get_g_main_context()  # created now; the IOThread serves it from here on
            GLib.timeout_add(args.interval_ms, sensor.on_tick, context=ctx)  # was: no context=
            GLib.io_add_watch(
                sensor.reader,
                GLib.PRIORITY_DEFAULT,
                GLib.IO_IN | GLib.IO_HUP,
                sensor.on_data,
                context=ctx,  # was: no context=
            )
            # The IOThread's asyncio loop is still there for other work.
            where = io.run_sync(lambda: threading.current_thread().name)
            say(f"main: the IOThread and its sources run on {where!r}; main only waits")
            finished = sensor.done.wait(TIMEOUT_S)  # was: GLib.MainLoop().run()
    finally:
        sensor.close()
    if not finished:
        print(f"main: no end of stream within {TIMEOUT_S:g} s", file=sys.stderr)
        return 1
    say(f"main: {sensor.sent} readings sent, {len(sensor.received)} received")
    return 0


if __name__ == "__main__":
    sys.exit(main())
