"""Fixtures of the ThreadPool's tests: ``pools``, which creates pools and
gates and, even when a test fails, opens every gate it handed out and shuts
every pool down.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..helpers import Pools


@pytest.fixture
def pools() -> Iterator[Pools]:
    kit = Pools()
    yield kit
    kit.close()
