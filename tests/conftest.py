"""Fixtures for every test."""

from __future__ import annotations

import os

import pytest

from benchmark.cpu_memory import HUGE_PAGES_ENV


@pytest.fixture(autouse=True)
def _keep_huge_pages_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's `main` asks for huge pages through the environment, for its child processes:
    a test that calls it in-process must not change what later tests' subprocesses get."""
    if HUGE_PAGES_ENV in os.environ:
        monkeypatch.setenv(HUGE_PAGES_ENV, os.environ[HUGE_PAGES_ENV])
    else:
        monkeypatch.delenv(HUGE_PAGES_ENV, raising=False)
