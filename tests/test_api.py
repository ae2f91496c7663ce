"""The public API is exactly what each public module's ``__all__`` says.

As anyio's ``tests/test_all_attributes.py``: for ``iothreads`` and each public
subpackage, every name in ``__all__`` exists, is listed once and is defined
inside the package, and every public attribute is listed.
"""

from __future__ import annotations

import importlib
import os
import types
from pathlib import Path

import pytest

import iothreads

PUBLIC_MODULES = [
    "iothreads",
    "iothreads.glib",
    "iothreads.qmp",
    "iothreads.pytest_plugin",
    # The metrics extra, which the test extra installs.
    "iothreads.metrics",
]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_lists_every_public_name_once(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert len(names) == len(set(names)), f"{module_name}.__all__ has duplicates"
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ names a missing {name!r}"
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "annotations"  # from `from __future__ import annotations`
        and not (isinstance(value, types.ModuleType) and name not in names)
    }
    assert public == set(names), f"{module_name}: public but unlisted, or listed but private"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_names_are_defined_in_the_package(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        value = getattr(module, name)
        defined_in = str(getattr(value, "__module__", None) or getattr(value, "__name__", ""))
        if isinstance(value, (type, types.FunctionType, types.ModuleType)):
            assert defined_in.startswith("iothreads"), f"{module_name}.{name}: {defined_in}"


def test_the_one_public_submodule_of_the_package_is_glib() -> None:
    modules = [n for n in iothreads.__all__ if isinstance(getattr(iothreads, n), types.ModuleType)]
    assert modules == ["glib"]


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("iothreads").joinpath("py.typed").is_file()


def test_a_type_checker_sees_every_public_name(tmp_path: Path) -> None:
    """What ``__all__`` lists, mypy can import: a computed ``__all__`` more
    than one package deep is invisible to it (python/mypy#15300)."""
    mypy_api = pytest.importorskip("mypy.api", reason="needs the typecheck extra")
    users = []
    for name in PUBLIC_MODULES:  # one file each: iothreads and glib both have a MainLoop
        user = tmp_path / f"user_of_{name.replace('.', '_')}.py"
        user.write_text(f"from {name} import {', '.join(importlib.import_module(name).__all__)}\n")
        users.append(str(user))
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", os.devnull, *users]
    )
    assert status == 0, out + err


USER_OF_THE_CALLS = """
import asyncio
import concurrent.futures
from typing import assert_type

from iothreads import IOThread


async def fetch(key: str) -> int:
    return len(key)


def count(key: str) -> bytes:
    return key.encode()


def from_a_plain_thread(io: IOThread) -> None:
    assert_type(io.submit(fetch, "a"), concurrent.futures.Future[int])
    assert_type(io.submit(fetch("a")), concurrent.futures.Future[int])
    assert_type(io.submit(count, "a"), concurrent.futures.Future[bytes])
    assert_type(io.submit(lambda: 3), concurrent.futures.Future[int])
    assert_type(io.run_sync(fetch, "a"), int)
    assert_type(io.run_sync(fetch("a"), timeout=1.0), int)
    assert_type(io.run_sync(count, "a", timeout=1.0), bytes)
    assert_type(io.run_sync(lambda: None), None)


async def from_a_loop(io: IOThread) -> None:
    assert_type(await io.run(fetch, "a"), int)
    assert_type(await io.run(fetch("a")), int)
    assert_type(await io.run(count, "a", abandon_on_cancel=True), bytes)
    assert_type(await asyncio.wrap_future(io.submit(fetch, "a")), int)
"""


def test_a_type_checker_sees_what_a_call_returns(tmp_path: Path) -> None:
    """``run``, ``submit`` and ``run_sync`` take a coroutine function or object
    as a plain function: what a caller gets back is typed as what the
    coroutine returns, not as a coroutine (a type checker run by the user
    would otherwise reject ``run_sync(fetch) + 1``)."""
    mypy_api = pytest.importorskip("mypy.api", reason="needs the typecheck extra")
    user = tmp_path / "user_of_the_calls.py"
    user.write_text(USER_OF_THE_CALLS)
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", os.devnull, str(user)]
    )
    assert status == 0, out + err
