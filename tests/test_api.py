"""The public API is exactly what ``__all__`` says (anyio's check)."""

from __future__ import annotations

import types

import iothreads


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    for name in iothreads.__all__:
        assert hasattr(iothreads, name), name
    public = {
        name
        for name, value in vars(iothreads).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    # `annotations` comes from `from __future__ import annotations`.
    assert public - {"annotations"} == {
        name
        for name in iothreads.__all__
        if not isinstance(getattr(iothreads, name), types.ModuleType)
    }
    # The one public submodule is the GLib-like context.
    assert [
        n for n in iothreads.__all__ if isinstance(getattr(iothreads, n), types.ModuleType)
    ] == ["glib"]


def test_all_is_sorted_and_unique() -> None:
    assert list(iothreads.__all__) == sorted(set(iothreads.__all__))


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("iothreads").joinpath("py.typed").is_file()
