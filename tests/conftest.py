"""Shared fixtures: every async test runs on both loops; nothing may leak.

``pytest_asyncio_loop_factories`` makes pytest-asyncio run each async test once
on the stdlib loop and once on uvloop (uvloop's "one test, both loops").  The
IOThreads a test creates use the same kind of loop as the test itself
(``loop_factory`` fixture), so both sides of a hand-off are covered.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from typing import cast

import pytest
from hypothesis import HealthCheck, settings

from iothreads import IOThread, MainLoop
from iothreads._aio import _context, _inbox
from iothreads._registry import USER_OBJECTS

from .helpers import LOOP_FACTORIES, LoopFactory, open_fds

# The property-based tests' profile: bounded in examples rather than in time
# (a loaded two-core machine makes any deadline flaky), no example database
# written into the tree, and the function-scoped fixtures a test shares across
# its examples (one monitor serving every example) allowed.  Each test sets its
# own max_examples, to keep the suite's time in hand.
settings.register_profile(
    "iothreads",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("iothreads")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    return LOOP_FACTORIES


#: The implementations of the inbox a test can run on: the pure-Python one
#: always, the native core where it was built.
IMPLEMENTATIONS = ["python", *(["native"] if _inbox.native_core is not None else [])]


@pytest.fixture
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The inbox implementation the test's IOThreads get (a parameter)."""
    name: str = request.param
    if name == "python":
        monkeypatch.setattr(_inbox, "native_core", None)
    return name


@pytest.fixture
def loop_factory(request: pytest.FixtureRequest, implementation: str) -> LoopFactory:
    """The factory of the test's loop kind, for the IOThreads it creates.

    An async test runs once per kind through the hook above, and its
    IOThreads take the same kind as the test's own loop.  This fixture is
    set up before that loop runs, so it reads the kind from the test's
    parametrization (pytest-asyncio's ``_asyncio_loop_factory`` parameter;
    ``test_conftest.py`` fails if that ever stops holding).  A sync test
    that asks for it is parametrised over both kinds through
    ``pytest_generate_tests`` below.
    """
    if hasattr(request, "param"):
        return LOOP_FACTORIES[request.param]
    callspec = getattr(request.node, "callspec", None)
    factory = callspec.params.get("_asyncio_loop_factory") if callspec else None
    if factory is None:
        raise RuntimeError(f"{request.node.nodeid}: no loop kind to take the factory from")
    return cast(LoopFactory, factory)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test whose IOThreads take the test's loop kind runs on every
    # implementation of the inbox too.
    # (A test marked ``implementations(name, ...)`` runs on those alone.)
    if "implementation" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("implementations")
        names = [n for n in IMPLEMENTATIONS if marker is None or n in marker.args]
        metafunc.parametrize("implementation", names, indirect=True)
    # A sync test that asks for ``loop_factory`` runs once per loop kind; an
    # async test already does, through the hook above.
    is_async = asyncio.iscoroutinefunction(metafunc.function)
    if "loop_factory" in metafunc.fixturenames and not is_async:
        metafunc.parametrize("loop_factory", list(LOOP_FACTORIES), indirect=True)


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A unix socket path well under AF_UNIX's 108 bytes (tmp_path can be longer)."""
    directory = tempfile.mkdtemp(prefix="iothreads-", dir="/tmp")
    try:
        yield os.path.join(directory, "qmp.sock")
    finally:
        shutil.rmtree(directory)


@pytest.fixture(scope="session", autouse=True)
def _warm_up_loops() -> None:
    # The first uvloop in a process opens process-wide descriptors that live
    # until exit; open them before the leak check starts counting.
    for factory in LOOP_FACTORIES.values():
        factory().close()


@pytest.fixture(autouse=True)
def no_leaks(_warm_up_loops: None) -> Iterator[None]:
    """Fail a test that leaves a thread or a file descriptor behind.

    A test that fails half-way may leave IOThreads running under ids the
    next tests use: they are stopped (and a main-loop closed) first, so one
    failure stays one failure, and the test is told what it left.
    """
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    objects_before = set(USER_OBJECTS.snapshot())
    contexts_before = dict(_context._SERVING)
    core = _inbox.native_core
    awake_before = core._loops_awake() if core is not None else 0
    yield
    left = [obj for obj in USER_OBJECTS.snapshot() if obj not in objects_before]
    for obj in left:
        if isinstance(obj, IOThread):
            obj.stop()
        elif isinstance(obj, MainLoop):
            obj.close()
    main_loop = MainLoop.instance()
    if main_loop is not None and main_loop not in objects_before:
        main_loop.close()
        left.append(main_loop)
    assert not left, f"test left objects behind (now stopped): {left}"
    # Every AioContext a test made is closed: none serves a loop, and none
    # counts its loop awake for the native spin's hand-over wait.
    assert contexts_before == _context._SERVING, "test left an AioContext attached"
    if core is not None:
        assert core._loops_awake() == awake_before, "test left an inbox counted awake"
    # Threads that were told to exit may still be unwinding: wait, bounded,
    # for them to finish rather than sleeping a fixed time.
    deadline = time.monotonic() + 10.0
    leaked: list[threading.Thread] = []
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread)
    assert not leaked, f"test leaked threads: {leaked}"
    # The fd listing itself opens one fd, which is closed again: compare sets.
    leaked_fds = open_fds() - fds_before
    assert not leaked_fds, f"test leaked file descriptors: {sorted(leaked_fds)}"
