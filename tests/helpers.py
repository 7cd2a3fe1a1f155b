"""Shared test helpers: an isolated wandb environment, a runner for scripts in subprocesses, and
waiting for a state to be reached. Tests import them from here; fixtures live in conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent

#: Variables a test must not inherit from the machine: a real key, a parent's wandb-core, a
#: pipeline context of an outer process, a launcher's rank.
SCRUB = ("WANDB_API_KEY", "WANDB_SERVICE", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_CONTEXT_FILE",
         "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "INSTRUMENT_STRICT",
         # a launcher's variables (a test suite run under srun or torchrun is not a rank of a job)
         "INSTRUMENT_RANK", "INSTRUMENT_RANK_POLICY", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
         "NODE_RANK", "GROUP_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "SLURM_NTASKS",
         "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")


def wandb_env(root: Path, **extra: str) -> dict[str, str]:
    """Return an environment for a subprocess that writes wandb runs offline under *root*."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
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


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until *condition()* holds (a state to reach, not a timing to assert).

    Raises:
        AssertionError: the condition did not hold within *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition was not reached within the timeout")
        time.sleep(0.005)


@attrs.frozen
class CliRuns:
    """Runs written once per test session for the command-line tests (``tests/write_cli_runs.py``).

    ``root`` holds ``wandb/`` with three finished pipeline runs (``cli-a``, ``cli-b``, ``cli-c``:
    eval/nrmse 0.12, 0.08, 0.10, gated ``< 0.11`` and by a 5 % regression gate with no baseline
    yet, so cli-a fails) and the killed run ``cli-killed`` (no exit record), and ``.instrument/``
    with the pipelines' gates sidecars; ``ids`` maps those names to run ids. Tests that change
    files copy the folder first (:meth:`copy`).
    """

    root: Path
    ids: dict[str, str]

    @property
    def environ(self) -> dict[str, str]:
        """An environment in which run ids resolve to these runs (``WANDB_DIR=root``)."""
        return {**os.environ, "WANDB_DIR": str(self.root)}

    def copy(self, target: Path) -> CliRuns:
        """Copy the runs and their ``.instrument`` folder into *target*; return the copy."""
        shutil.copytree(self.root, target, symlinks=True)
        return CliRuns(target, self.ids)

    def folder(self, name: str) -> Path:
        """The run folder of the run called *name*."""
        (path,) = (self.root / "wandb").glob(f"offline-run-*-{self.ids[name]}")
        return path
