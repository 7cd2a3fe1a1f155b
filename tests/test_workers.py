"""Values from worker processes (pool and DataLoader workers, forked or spawned) reach the run their
parent writes to, through the record journal; real wandb offline in subprocesses."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from helpers import run_script, wandb_env

import instrument
from instrument import _family
from instrument._problems import Problem
from instrument._records import ConfigUpdate, Point, Record, SummaryUpdate
from instrument._workers import Inbox, WorkerJournal, role_of
from instrument.runfile import read_runs

TESTS = Path(__file__).resolve().parent


class Collected:
    """A run stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        self.records.extend(records)


def test_a_workers_records_reach_its_parents_inbox_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a worker journals for a parent (here: this process) is read back in order, once, with
    its roles (points are series, the rest summary), and config redacted before it hit the disk."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    journal = WorkerJournal(os.getpid())
    records = [Point({"worker/i": 1.0}, "worker"), SummaryUpdate({"check/i": 2.0}),
               ConfigUpdate({"api_token": "abc", "lr": 0.1})]
    with pytest.warns(instrument.InstrumentationWarning, match="api_token"):
        journal.write(records)
    journal.close()
    target = Collected()
    inbox = Inbox(target)
    inbox.drain()
    inbox.drain()
    assert [records[0], records[1], ConfigUpdate({"api_token": "<redacted>", "lr": 0.1})] == target.records
    assert ["series", "summary", "summary"] == [role_of(record) for record in target.records]
    assert 0o700 == os.stat(_family.inbox_folder(os.getpid())).st_mode & 0o777
    inbox.remove()
    assert not _family.inbox_folder(os.getpid()).exists()


def test_an_inbox_someone_else_can_enter_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A folder of the inbox's name that others can enter is neither written nor read (a warning
    each); the worker's value is dropped, never raised."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    folder = _family.inbox_folder(os.getpid())
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with pytest.warns(instrument.InstrumentationWarning, match="is not a private folder of this user; values"):
        WorkerJournal(os.getpid()).write([Point({"worker/i": 1.0}, "worker")])
    target = Collected()
    with pytest.warns(instrument.InstrumentationWarning, match="were not read"):
        Inbox(target).drain()
    assert ([], []) == (target.records, list(folder.iterdir()))


@pytest.mark.integration
@pytest.mark.slow
def test_spawned_workers_of_a_training_child_write_into_its_run_and_the_pipelines(wandb_root: Path) -> None:
    """A pipeline's training child runs a stage in a spawn pool, whose worker logs
    ``instrument.log({"loss": 0.7}, step=0)`` and an eval: the point lands in the child's training
    run on the stage's axis, the eval in the pipeline run's summary, and no worker opened a run."""
    result = run_script(wandb_root, """
import subprocess, sys
import instrument

CHILD = '''
import multiprocessing
import instrument

@instrument.training_stage("worker")
def work(i):
    instrument.log({"loss": 0.7}, step=0)

@instrument.eval_summary(prefix="worker_eval")
def check(i):
    return {"score": 0.5}

def task(i):
    work(i)
    check(i)
    return i

@instrument.training_stage("operator")
def train_step(k):
    return {"loss": float(k)}

if __name__ == "__main__":
    train_step(0)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        print(pool.map(task, [0]))
    train_step(1)
'''

with open("child.py", "w") as handle:
    handle.write(CHILD)
with instrument.pipeline(project="p"):
    subprocess.run([sys.executable, "child.py"], check=True)
""", env=wandb_env(wandb_root, TMPDIR=str(wandb_root)))
    runs = {run.job_type: run for run in read_runs(wandb_root / "wandb")}
    assert {"pipeline", "train"} == set(runs)
    training, pipeline = runs["train"], runs["pipeline"]
    assert ([(0, 0.7)], [(0, 0.0), (1, 1.0)]) == (training.series("worker/loss"), training.series("operator/loss"))
    assert (0.5, "worker_eval/score") == (pipeline.summary["worker_eval/score"],
                                          next(key for key in pipeline.summary if key.startswith("worker_eval")))
    assert "worker_eval/score" not in training.summary
    assert ["instrument: pipeline run"] == [line[:len("instrument: pipeline run")] for line in result.stderr.splitlines()]


@pytest.mark.integration
@pytest.mark.slow
def test_dataloader_workers_write_into_the_parents_run(wandb_root: Path) -> None:
    """A DataLoader's forked and spawned workers fetch items through a decorated stage: every
    fetch lands in the parent's one run, and the training stage beside it keeps its own axis."""
    pytest.importorskip("torch", reason="DataLoader workers need torch (the frameworks extra)")
    env = wandb_env(wandb_root, PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]), TMPDIR=str(wandb_root))
    result = run_script(wandb_root, """
import instrument
from torch.utils.data import DataLoader
from loader_work import Numbers

@instrument.training_stage("operator")
def train_step(batch):
    return {"total": float(batch.sum())}

if __name__ == "__main__":
    for context in ("fork", "spawn"):
        for batch in DataLoader(Numbers(8), batch_size=4, num_workers=2, multiprocessing_context=context):
            train_step(batch)
""", env=env, timeout=240)
    (run,) = read_runs(wandb_root / "wandb")
    assert [(0, 6.0), (1, 22.0), (2, 6.0), (3, 22.0)] == run.series("operator/total")
    fetched = run.series("data/index")
    assert (list(range(16)), sorted([float(i) for i in range(8)] * 2)) == (
        [step for step, _ in fetched], sorted(value for _, value in fetched))
    assert ("", []) == (result.stderr, list(wandb_root.glob("instrument-workers-*")))
