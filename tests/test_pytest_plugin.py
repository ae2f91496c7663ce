"""``iothreads.pytest_plugin``: small suites run by pytest's ``pytester``.

Each suite runs in a pytest of its own (a subprocess), which loads the
plugin through its ``pytest11`` entry point as any suite does where iothreads
is installed.
"""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

from iothreads import pytest_plugin
from iothreads.pytest_plugin import _fixtures

from .helpers import CHILD_WAIT

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, suite: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_suite=textwrap.dedent(suite))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=CHILD_WAIT)


def test_the_entry_point_loads_the_plugin(request: pytest.FixtureRequest) -> None:
    entries = importlib.metadata.entry_points(group="pytest11")
    (entry,) = [e for e in entries if e.name == "iothreads"]
    assert entry.value == "iothreads.pytest_plugin._fixtures"
    assert request.config.pluginmanager.get_plugin("iothreads") is _fixtures


def test_a_suite_using_the_fixtures(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import asyncio
        import threading

        import pytest

        import iothreads
        from iothreads.pytest_plugin import LOOP_KINDS

        def test_iothread(iothread):
            assert iothread.run_sync(threading.current_thread).name == f"IO {iothread.id}"
            assert iothreads.iothread_by_id(iothread.id) is iothread

        @pytest.mark.parametrize("iothread_loop", LOOP_KINDS)
        def test_on_each_loop(iothread, iothread_loop):
            assert type(iothread.loop).__module__.split(".")[0] == iothread_loop

        @pytest.fixture
        def uvloop_policy():
            # An application's uvloop.install(): the stdlib kind stays the stdlib's.
            uvloop = pytest.importorskip("uvloop")
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            yield
            asyncio.set_event_loop_policy(None)

        @pytest.mark.parametrize("iothread_loop", ["asyncio"])
        def test_the_stdlib_kind_under_a_uvloop_policy(uvloop_policy, iothread):
            assert isinstance(iothread.loop, asyncio.SelectorEventLoop)

        def test_factory(iothread_factory):
            io = iothread_factory("mine", poll_max_ns=0)
            assert (io.id, io.poll_max_ns, io.running) == ("mine", 0, True)
            assert iothread_factory().id != iothread_factory().id

        @pytest.mark.asyncio
        async def test_async(iothread, thread_pool):
            assert await iothread.run(asyncio.sleep, 0, "slept") == "slept"
            assert await thread_pool.run(sum, [1, 2]) == 3

        def test_failing(iothread):
            pytest.fail("on purpose")

        def test_the_failing_test_was_cleaned_up():
            assert iothreads.query_iothreads() == []
            assert [t.name for t in threading.enumerate()] == ["MainThread"]

        @pytest.mark.parametrize("iothread_loop", ["trio"])
        def test_unknown_loop(iothread):
            pass
        """,
    )
    loops = len(pytest_plugin.LOOP_KINDS)
    result.assert_outcomes(passed=5 + loops, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*ValueError: iothread_loop must be one of [[]'asyncio', *None], not 'trio'"]
    )


def test_without_uvloop_a_test_asking_for_it_is_skipped(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        from iothreads.pytest_plugin import _fixtures

        @pytest.fixture(autouse=True)
        def no_uvloop(monkeypatch):
            monkeypatch.setattr(_fixtures, "_LOOP_FACTORIES", {})
        """
    )
    result = run(
        pytester,
        """
        import pytest

        @pytest.mark.parametrize("iothread_loop", ["uvloop"])
        def test_on_uvloop(iothread):
            pass
        """,
        "-rs",
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*uvloop is not installed*"])


def test_a_suite_not_using_the_fixtures_is_unaffected(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import os
        import threading

        def test_leaves_a_thread_and_a_descriptor():
            threading.Thread(target=threading.Event().wait, daemon=True).start()
            os.pipe()
        """,
        "--setup-show",
    )
    # The plugin is loaded, yet nothing checked the test, and no fixture of
    # the plugin was set up.
    result.stdout.fnmatch_lines(["plugins: *iothreads-*"])
    result.assert_outcomes(passed=1)
    setup = [line for line in result.outlines if "SETUP" in line or "fixtures used" in line]
    assert setup
    assert not [line for line in setup if "iothread" in line]
    # No hook can change such a suite, and no fixture runs on its own.
    assert not [name for name in vars(_fixtures) if name.startswith("pytest_")]


def test_leaks_are_reported(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def iothreads_leak_timeout():
            return 0.1  # the leaked thread below never finishes: do not wait long
        """
    )
    result = run(
        pytester,
        """
        import os
        import threading

        def test_leaks_a_thread(iothread):
            threading.Thread(target=threading.Event().wait, name="leaker", daemon=True).start()

        def test_leaks_a_descriptor(thread_pool):
            os.pipe()
        """,
    )
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*the test leaked threads, still running: 'leaker'",
            "*the test leaked file descriptors: [[]*, *[]]",
        ]
    )
