"""Shared test helpers: an isolated wandb environment and a runner for scripts in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Variables a test must not inherit from the machine: a real key, a parent's wandb-core, a
#: pipeline context of an outer process.
_SCRUB = ("WANDB_API_KEY", "WANDB_SERVICE", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_CONTEXT_FILE",
          "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "INSTRUMENT_STRICT")


def wandb_env(root: Path, **extra: str) -> dict[str, str]:
    """Return an environment for a subprocess that writes wandb runs offline under *root*."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(root),
        WANDB_CACHE_DIR=str(root / ".cache"),
        WANDB_DATA_DIR=str(root / ".data"),
        WANDB_CONFIG_DIR=str(root / ".config"),
        WANDB_DISABLE_GIT="true",
        WANDB_ERROR_REPORTING="false",
        HOME=str(root / ".home"),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    env.update(extra)
    return env


def run_script(
    root: Path,
    code: str,
    *,
    name: str = "script.py",
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Write *code* (dedented) to ``root/name`` and run it with Python in *root*.

    Raises:
        AssertionError: *check* is set and the script exited non-zero (stdout and stderr shown).
    """
    root.mkdir(parents=True, exist_ok=True)
    script = root / name
    script.write_text(textwrap.dedent(code))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=root,
        env=dict(env) if env is not None else wandb_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{name} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


@pytest.fixture
def wandb_root(tmp_path: Path) -> Path:
    """A folder for offline wandb runs written by subprocesses (``<it>/wandb/offline-run-*``)."""
    root = tmp_path / "runs"
    root.mkdir()
    return root


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Keep in-process tests away from the machine's wandb settings and from real runs."""
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / ".data"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config"))
    yield


@attrs.frozen
class CliRuns:
    """Runs written once per test session for the command-line tests (``tests/write_cli_runs.py``).

    ``root`` holds ``wandb/`` with three finished pipeline runs (``cli-a``, ``cli-b``, ``cli-c``:
    eval/nrmse 0.12, 0.08, 0.10) and the killed run ``cli-killed`` (no exit record);
    ``ids`` maps those names to run ids. Tests that change files copy the folder first.
    """

    root: Path
    ids: dict[str, str]

    @property
    def environ(self) -> dict[str, str]:
        """An environment in which run ids resolve to these runs (``WANDB_DIR=root``)."""
        return {**os.environ, "WANDB_DIR": str(self.root)}

    def folder(self, name: str) -> Path:
        """The run folder of the run called *name*."""
        (path,) = (self.root / "wandb").glob(f"offline-run-*-{self.ids[name]}")
        return path


@pytest.fixture(scope="session")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> CliRuns:
    """Write the command-line tests' runs with real wandb offline, once per session."""
    root = tmp_path_factory.mktemp("cli_runs")
    result = run_script(root, (ROOT / "tests" / "write_cli_runs.py").read_text(), check=False)
    assert 9 == result.returncode, result.stderr
    return CliRuns(root, json.loads(result.stdout.strip().splitlines()[-1]))
