"""Blocking calls off the event loop: sqlite3 queries from asyncio handlers.

    python examples/offload_blocking.py [--requests 200] [--loop asyncio|uvloop]

An asyncio application (here a few web-style handlers, called as a server
would call them) keeps its data in SQLite.  ``sqlite3`` blocks: a query run
on the event loop stalls every other request until it returns.  So the
handlers hand their queries to an IOThread dedicated to the database:

* reads go to the IOThread's worker pool (``io.thread_pool.run``): several
  run at once, each worker with its own connection (a ``sqlite3`` connection
  belongs to the thread that opened it), WAL mode letting readers overlap;
* writes go to the IOThread's own thread (``io.run`` of a plain function),
  which owns the one writing connection: SQLite allows one writer at a time,
  and queueing the writes there means no "database is locked" errors.

Meanwhile a heartbeat task on the application's loop counts its ticks: the
loop keeps running while the queries block other threads.  At the end the
program prints what each handler answered (in summary), which threads ran
the queries, and the heartbeat, then exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from iothreads import IOThread

#: Users in the demo table; request i asks for user i % USERS.
USERS = 50


class Database:
    """A SQLite file served by one IOThread: writes on its thread, reads on its pool."""

    def __init__(
        self, path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
    ) -> None:
        self.path = path
        # Four readers at most: enough to overlap queries, few enough to keep
        # SQLite's per-connection memory small.
        self.io = IOThread("db", thread_pool_max=4, loop_factory=loop_factory)
        self._local = threading.local()  # one connection per thread that queries
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        #: which threads ran queries: the proof that none ran on the app's loop
        self.threads: Counter[str] = Counter()

    def _connection(self) -> sqlite3.Connection:
        # Runs in whichever thread queries: the IOThread's, or one of its workers.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so that close() can close it from
            # the main thread at the end; every query still uses its own thread's.
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        with self._connections_lock:
            self.threads[threading.current_thread().name] += 1
        return conn

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        conn = self._connection()
        with conn:  # one transaction: committed, or rolled back on error
            return conn.execute(sql, params).rowcount

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, params).fetchall()

    async def write(self, sql: str, *params: Any) -> int:
        """Run a write on the IOThread's thread; returns the rows changed."""
        return await self.io.run(self._write, sql, params)

    async def read(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run a read on one of the IOThread's pool workers.

        Raises:
            RuntimeError: the database is not open (the IOThread has no pool).
        """
        pool = self.io.thread_pool
        if pool is None:
            raise RuntimeError("the database is not open: use it inside 'async with Database()'")
        return await pool.run(self._read, sql, params)

    async def __aenter__(self) -> Database:
        await self.io.astart()
        await self.write("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT)")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.io.aclose()  # waits for the queries still running
        for conn in self._connections:
            conn.close()


# -- the handlers: what a web framework would route requests to ---------------------------


async def create_user(db: Database, user_id: int) -> dict[str, Any]:
    await db.write("INSERT INTO users (id, name) VALUES (?, ?)", user_id, f"user-{user_id}")
    return {"status": 201, "id": user_id}


async def get_user(db: Database, user_id: int) -> dict[str, Any]:
    rows = await db.read("SELECT id, name FROM users WHERE id = ?", user_id)
    if not rows:
        return {"status": 404, "id": user_id}
    return {"status": 200, "id": rows[0][0], "name": rows[0][1]}


#: A deliberately slow query (a million-row recursive count) standing for a
#: report: on the loop it would stall every other request while it runs.
REPORT = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)"
    " SELECT count(*), (SELECT count(*) FROM users) FROM n"
)


async def report(db: Database) -> dict[str, Any]:
    rows = await db.read(REPORT)
    return {"status": 200, "counted": rows[0][0], "users": rows[0][1]}


# -- the application ------------------------------------------------------------------------


class Heartbeat:
    """Counts the ticks of the application's loop while it is in use (``async with``)."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest_gap = 0.0
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    def _tick(self) -> None:
        now = time.monotonic()
        self.longest_gap = max(self.longest_gap, now - self._last)
        self._last = now

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.ticks += 1
            self._tick()

    async def __aenter__(self) -> Heartbeat:
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)  # the task takes its first step, then beats
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._tick()  # the time since the last tick counts too
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def __str__(self) -> str:
        return f"{self.ticks} heartbeat ticks, longest gap {self.longest_gap * 1000:.0f} ms"


async def serve(requests: int, loop_kind: str | None) -> int:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "app.db"
        async with Database(path, _loop_factory(loop_kind)) as db:
            for user_id in range(USERS):
                await create_user(db, user_id)

            # First the mistake, for comparison: the report's query called on
            # the application's loop itself.  Nothing else runs meanwhile
            # (under ``python -X dev`` asyncio says so: "Executing <Task...>
            # took 0.3 seconds").
            async with Heartbeat() as on_loop:
                with contextlib.closing(sqlite3.connect(path)) as conn:
                    conn.execute(REPORT).fetchall()
            print(f"report on the app's loop: {on_loop}")

            # Then the right way: the report and the requests offloaded, all at
            # once as from many clients.  Ids past USERS do not exist: 404.
            async with Heartbeat() as offloaded:
                summary, *users = await asyncio.gather(
                    report(db), *(get_user(db, i % (USERS + 10)) for i in range(requests))
                )
            print(f"report and requests offloaded: {offloaded}")

        statuses = Counter(answer["status"] for answer in users)
        wrong = [a for a in users if a["status"] == 200 and a["name"] != f"user-{a['id']}"]
        print(f"report: counted {summary['counted']} rows over {summary['users']} users")
        print(
            f"get_user: {len(users)} requests, {statuses[200]} found,"
            f" {statuses[404]} not found, {len(wrong)} wrong"
        )
        for name, count in sorted(db.threads.items()):
            print(f"queries on thread {name!r}: {count}")
    return 1 if wrong else 0


def _loop_factory(kind: str | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The IOThread's loop: uvloop, the stdlib's, or None for iothreads' default choice."""
    if kind == "uvloop":
        import uvloop  # an optional dependency: pip install uvloop

        return uvloop.new_event_loop
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="get_user requests to serve")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        help="the IOThread's event loop (default: uvloop where installed)",
    )
    args = parser.parse_args(argv)
    if args.requests < 0:
        parser.error(f"--requests must be at least 0, not {args.requests}")
    return asyncio.run(serve(args.requests, args.loop))


if __name__ == "__main__":
    sys.exit(main())
