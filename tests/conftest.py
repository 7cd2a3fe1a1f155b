"""pytest fixtures of the project's own tests, and the order the tests run in.

Helpers that tests import live in tests/helpers.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SCRUB


@pytest.fixture
def wandb_root(tmp_path: Path) -> Path:
    """A folder for offline wandb runs written by subprocesses (``<it>/wandb/offline-run-*``)."""
    root = tmp_path / "runs"
    root.mkdir()
    return root


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep in-process tests away from the machine's wandb settings and from real runs."""
    for name in SCRUB:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / ".data"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config"))
