"""The thread markers check their thread in asyncio's debug mode, and cost nothing outside it."""

from __future__ import annotations

import os

from iothreads import _runs_in
from iothreads._aio import AioContext
from iothreads._aio._inbox import PyInbox

from .helpers import run_python

# Runs in a child interpreter: the debug switch is read once, at import.
_CALL_FROM_THE_WRONG_THREAD = """
import iothreads
with iothreads.IOThread("io0") as io:
    # start() returns as the loop is about to run; until it runs, its owner
    # may still be setting it up, which the check allows (as asyncio's own).
    io.run_sync(lambda: None)
    try:
        io.aio_context.set_params(io.properties())  # belongs to the IOThread
    except RuntimeError as exc:
        print(exc)
    io.run_sync(io.aio_context.set_params, io.properties())  # the right thread
    print("handed over")
"""


def _run(debug: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    if debug:
        env["PYTHONASYNCIODEBUG"] = "1"
    done = run_python(_CALL_FROM_THE_WRONG_THREAD, env=env)
    done.check_returncode()
    return done.stdout


def test_debug_mode_refuses_a_call_from_the_wrong_thread() -> None:
    assert _run(debug=True).splitlines() == [
        "AioContext.set_params() must run in the thread running self.loop; "
        "hand it over with call_soon_threadsafe()",
        "handed over",
    ]


def test_outside_debug_mode_the_marker_is_only_a_label() -> None:
    assert _run(debug=False).splitlines() == ["handed over"]
    if not _runs_in.DEBUG:
        # Not wrapped: the hot path calls the function itself.
        assert PyInbox.submit.__runs_in__ is _runs_in.ANY  # type: ignore[attr-defined]
        assert not hasattr(AioContext.set_params, "__wrapped__")
