"""Ranks of a distributed job (case C15): one run per job by default, never one per process.

Real two-process gloo jobs on 127.0.0.1, through ``torchrun`` and through
``torch.multiprocessing.spawn`` (``tests/dist_job.py``), and jobs whose rank comes from
``INSTRUMENT_RANK`` (no torch); each reads back what the ranks wrote and what they saw.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, run_script, wandb_env

from instrument.runfile import RunFile, read_runs

pytestmark = pytest.mark.integration

JOB = Path(__file__).resolve().parent / "dist_job.py"

#: What each rank's functions return (their own values: reduce= changes only what is written).
RETURNED = {
    rank: [{"loss": float(rank)}, {"loss": float(rank) + 1}, {"acc": 0.5 + rank},
           {"loss": float(rank), "tokens": 10 * (rank + 1), "name": f"rank{rank}"}, {"samples": 10 * (rank + 1)},
           {"a": 1.0} if rank == 0 else {"a": 1.0, "b": 2.0}]
    for rank in (0, 1)
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_job(root: Path, launcher: str, **extra: str) -> tuple[dict[int, dict[str, Any]], str]:
    """Run the two-rank job with *launcher* (``torchrun`` or ``spawn``); return what each rank
    reported (by rank) and the job's stderr."""
    pytest.importorskip("torch", reason="distributed jobs need torch (the frameworks extra)")
    (root / "tmp").mkdir()
    env = wandb_env(root, TMPDIR=str(root / "tmp"), OMP_NUM_THREADS="1", **extra)
    command = [sys.executable, str(JOB), "spawn", str(root)]
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                   "127.0.0.1", "--master-port", str(free_port()), str(JOB), "torchrun", str(root)]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert 0 == result.returncode, result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {report["rank"]: report for report in reports}, result.stderr


def only_run(folder: Path) -> RunFile:
    """Return the one run written under *folder*."""
    (run,) = read_runs(folder / "wandb")
    return run


def assert_rank_zeros_run(run: RunFile) -> None:
    """Rank 0's values, with the reduced ones reduced across both ranks."""
    assert [(0, 0.0), (1, 1.0)] == run.series("train/loss")
    assert ([(0, 0.5)], [(0, 15.0)], "rank0") == (
        run.series("synced/loss"), run.series("synced/tokens"), run.summary["synced/name"])
    assert (0.5, 30, [(0, 1.0)], 0) == (
        run.summary["eval/acc"], run.summary["synced_eval/samples"], run.series("uneven/a"), run.exit_code)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "spawn"])
def test_c15_a_two_rank_job_keeps_exactly_one_run_with_rank_zeros_values(wandb_root: Path, launcher: str) -> None:
    """Under torchrun (rank from its variables) and torch.multiprocessing.spawn (rank only from
    torch.distributed), with the default policy: one run, rank 0's values, the ``reduce=`` stage
    and eval reduced across the ranks; rank 1 never imports wandb and creates no folder; every
    decorated function returns its own value; ranks with different numbers to reduce warn."""
    reports, stderr = run_job(wandb_root, launcher)
    assert {0: RETURNED[0], 1: RETURNED[1]} == {rank: report["returned"] for rank, report in reports.items()}
    assert (False, False) == (reports[1]["wandb imported"], reports[1]["folder exists"])
    assert_rank_zeros_run(only_run(wandb_root / "rank0"))
    assert not (wandb_root / "rank1").exists()
    assert [] == list((wandb_root / "tmp").glob("instrument-*"))
    assert "uneven_step: the ranks returned different numeric keys, so reduce='sum' could not combine them" in stderr


@pytest.mark.slow
def test_per_rank_writes_one_run_per_rank_in_one_group(wandb_root: Path) -> None:
    """``INSTRUMENT_RANK_POLICY=per_rank``: each rank writes its own run with its own values (the
    reduced ones reduced), all in one group derived without communication, tagged ``rank:<k>``,
    with ``instrument/rank`` in the config."""
    reports, _ = run_job(wandb_root, "spawn", INSTRUMENT_RANK_POLICY="per_rank")
    zero, one = only_run(wandb_root / "rank0"), only_run(wandb_root / "rank1")
    assert (True, True) == (reports[0]["wandb imported"], reports[1]["wandb imported"])
    assert_rank_zeros_run(zero)
    assert ([(0, 1.0), (1, 2.0)], [(0, 0.5)], 30) == (
        one.series("train/loss"), one.series("synced/loss"), one.summary["synced_eval/samples"])
    assert zero.group == one.group and 8 == len(zero.group) and zero.run_id != one.run_id
    assert [("rank:0",), ("rank:1",)] == [zero.tags, one.tags]
    assert [{"rank": 0, "world_size": 2}, {"rank": 1, "world_size": 2}] == [
        zero.config["instrument"], one.config["instrument"]]


SILENT_RANK = """
import multiprocessing, os, subprocess, sys
import instrument

@instrument.training_stage("operator")
def train_step(k):
    return {"loss": float(k)}

@instrument.eval_summary(prefix="eval")
def evaluate():
    return {"acc": 0.5}

@instrument.run_config
def settings():
    return {"lr": 0.1}

def in_worker(k):
    return train_step(k)

if __name__ == "__main__":
    returned = [train_step(0), evaluate(), settings()]
    with instrument.pipeline(project="p") as run:
        returned.append(train_step(1))
        child = subprocess.run([sys.executable, "-c", "import instrument, sys\\n"
                                "print(instrument.training_stage('c')(lambda: {'x': 1.0})(), 'wandb' in sys.modules)"],
                               capture_output=True, text=True, check=True)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        returned.append(pool.map(in_worker, [2]))
    print(returned, run.id, child.stdout.strip(), "wandb" in sys.modules, sorted(os.listdir(".")))
"""


@pytest.mark.slow
def test_a_rank_other_than_0_writes_nothing_and_creates_no_folder(wandb_root: Path) -> None:
    """``INSTRUMENT_RANK=1`` (no torch): stages, an eval, a config, a pipeline with a subprocess and
    a spawned pool worker all return their values, and nothing imports wandb or creates a folder
    (no run folder, no pipeline folder, no inbox)."""
    (wandb_root / "tmp").mkdir()
    env = wandb_env(wandb_root, INSTRUMENT_RANK="1", WORLD_SIZE="2", TMPDIR=str(wandb_root / "tmp"))
    result = run_script(wandb_root, SILENT_RANK, env=env)
    assert ("[{'loss': 0.0}, {'acc': 0.5}, {'lr': 0.1}, {'loss': 1.0}, [{'loss': 2.0}]] None {'x': 1.0} False "
            "False ['script.py', 'tmp']") == result.stdout.strip()
    assert ([], "") == (list((wandb_root / "tmp").iterdir()), result.stderr)


@pytest.mark.slow
def test_a_pipelines_children_resolve_their_own_rank(wandb_root: Path) -> None:
    """A pipeline on rank 0 hands no rank to its children: a child started as rank 1 writes
    nothing, a child started as rank 0 writes its training run, and the pipeline run is the
    pipeline's; no run of a rank-1 process exists."""
    run_script(wandb_root, """
import os, subprocess, sys
import instrument

CHILD = "import instrument\\ninstrument.training_stage('child')(lambda: {'rank': float(__import__('os').environ['INSTRUMENT_RANK'])})()"

with instrument.pipeline(project="p"):
    for rank in ("1", "0"):
        subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, "INSTRUMENT_RANK": rank}, check=True)
""", env=wandb_env(wandb_root, INSTRUMENT_RANK="0", WORLD_SIZE="2"))
    runs = {run.job_type: run for run in read_runs(wandb_root / "wandb")}
    assert {"pipeline", "train"} == set(runs)
    assert [(0, 0.0)] == runs["train"].series("child/rank")
    assert [runs["train"].run_id] == runs["pipeline"].summary["pipeline/children"]


def test_the_job_script_is_importable_without_running_a_job() -> None:
    """``tests/dist_job.py`` imports cleanly (its functions are found again by spawned ranks)."""
    pytest.importorskip("torch", reason="the job script imports torch (the frameworks extra)")
    result = subprocess.run([sys.executable, "-c", "import dist_job; print(dist_job.synced_step.__name__)"],
                            cwd=JOB.parent, env={**wandb_env(ROOT), "PYTHONPATH": f"{ROOT}:{JOB.parent}"},
                            capture_output=True, text=True, timeout=120, check=False)
    assert "synced_step" == result.stdout.strip(), result.stderr
