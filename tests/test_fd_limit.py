"""An IOThread started in a process out of file descriptors raises OSError
(EMFILE) saying what to do; on uvloop libuv would abort the process instead.

Each case runs in a subprocess of its own: libuv aborts only in its one-time
global initialisation, so only a process that never made a uvloop loop can
show it (this one made some already), and an abort must not take the test
run with it.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest

from .helpers import CHILD_WAIT, LOOP_FACTORIES

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="fills the descriptor table; Linux's limits"
)

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys
    import iothreads
    try:
        import uvloop  # imported before the table fills, as in any application
    except ImportError:
        pass

    kind, free = sys.argv[1], int(sys.argv[2])
    # A low limit, then every descriptor below it taken but *free*.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))
    taken = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    for _ in range(free):
        os.close(taken.pop())
    factory = uvloop.new_event_loop if kind == "uvloop" else None
    os.environ["IOTHREADS_LOOP"] = kind
    io = iothreads.IOThread("io0", loop_factory=factory)
    try:
        io.start()
    except OSError as exc:
        outcome = {"errno": exc.errno, "message": str(exc)}
    else:
        io.stop()
        outcome = {"errno": None, "message": "started"}
    for fd in taken:
        os.close(fd)
    print(json.dumps(outcome))
    """
)


@pytest.mark.parametrize("kind", list(LOOP_FACTORIES))
@pytest.mark.parametrize("free", [1, 3, 7])
def test_an_iothread_without_descriptors_raises_instead_of_aborting(kind: str, free: int) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(free)],
        capture_output=True,
        timeout=CHILD_WAIT,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()  # -6: SIGABRT
    outcome = json.loads(child.stdout)
    assert outcome["errno"] == errno.EMFILE
    if "uvloop" in LOOP_FACTORIES:  # imported: checked first, whatever the loop
        assert outcome["message"].startswith(
            "[Errno 24] the event loop of IOThread 'io0' needs 8 free file descriptors"
        )
        assert "RLIMIT_NOFILE" in outcome["message"]
