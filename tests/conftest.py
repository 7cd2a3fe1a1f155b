"""pytest fixtures of the project's own tests, and the order the tests run in.

Helpers that tests import live in tests/helpers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ROOT, SCRUB, CliRuns, run_script


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


@pytest.fixture(scope="session")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> CliRuns:
    """Write the command-line tests' runs with real wandb offline, once per session."""
    root = tmp_path_factory.mktemp("cli_runs")
    result = run_script(root, (ROOT / "tests" / "write_cli_runs.py").read_text(), check=False)
    assert 9 == result.returncode, result.stderr
    return CliRuns(root, json.loads(result.stdout.strip().splitlines()[-1]))


def _runs_wandb(item: pytest.Item) -> bool:
    """Whether *item* runs real wandb: marked ``integration`` or ``slow``, or it uses ``wandb_root``
    or a module-scoped fixture that makes folders (each of those runs wandb once per module)."""
    if item.get_closest_marker("integration") is not None or item.get_closest_marker("slow") is not None:
        return True
    info = getattr(item, "_fixtureinfo", None)
    for definitions in info.name2fixturedefs.values() if info is not None else ():
        for definition in definitions:
            if definition.argname == "wandb_root" or (
                definition.scope != "function" and "tmp_path_factory" in definition.argnames
            ):
                return True
    return False


@pytest.hookimpl(tryfirst=True)  # before -m selects by the markers added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs real wandb as ``integration`` and run those after the unit tests:
    one ``python -m pytest`` (the README's command, which CI runs) is the unit stage first, then
    the integration stage."""
    for item in items:
        if _runs_wandb(item):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.get_closest_marker("integration") is not None)  # stable: keeps file order
