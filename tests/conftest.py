"""Fixtures for every test."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from benchmark.cpu_memory import HUGE_PAGES_ENV


@pytest.fixture(autouse=True)
def _keep_huge_pages_setting() -> Iterator[None]:
    """The CLI's `main` asks for huge pages through the environment, for its child processes:
    a test that calls it in-process must not change what later tests' subprocesses get."""
    before = os.environ.get(HUGE_PAGES_ENV)
    yield
    if before is None:
        os.environ.pop(HUGE_PAGES_ENV, None)
    else:
        os.environ[HUGE_PAGES_ENV] = before
