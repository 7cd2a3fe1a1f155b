"""Values from worker processes (pool and DataLoader workers, forked or spawned) reach the run their
parent writes to, through the record journal; real wandb offline in subprocesses."""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

import pool_work
import pytest
from helpers import run_script, wandb_env

import instrument
from instrument import _family, _lifecycle
from instrument._problems import Problem
from instrument._records import ConfigUpdate, Point, Record, SummaryUpdate
from instrument._workers import Inbox, WorkerJournal, role_of
from instrument.runfile import read_runs
from instrument.testing import recording

TESTS = Path(__file__).resolve().parent


def instrument_warnings(stderr: str) -> list[str]:
    """Return the InstrumentationWarning messages a script printed."""
    return re.findall(r"InstrumentationWarning: (.*)", stderr)


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


def test_hooks_registered_inside_threadings_exit_hooks_run_after_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """While threading runs its exit hooks, a block under ``late_exit_hooks`` may register hooks of
    its own (elsewhere refused): they run when the block ends, newest first, and leave threading's
    list and flag as they were."""
    called: list[str] = []
    hooks = [lambda: called.append("earlier")]
    monkeypatch.setattr(threading, "_threading_atexits", hooks)
    monkeypatch.setattr(threading, "_SHUTTING_DOWN", True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        threading._register_atexit(called.append, "refused")  # type: ignore[attr-defined]
    with _lifecycle.late_exit_hooks():
        threading._register_atexit(called.append, "first")  # type: ignore[attr-defined]
        threading._register_atexit(called.append, "second")  # type: ignore[attr-defined]
        called.append("block")
    assert (["block", "second", "first"], 1, True) == (called, len(hooks), threading._SHUTTING_DOWN)  # type: ignore[attr-defined]


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


@pytest.mark.integration
@pytest.mark.slow
def test_a_parent_that_never_logs_writes_its_workers_values_into_a_run_at_exit(wandb_root: Path) -> None:
    """A parent that logs nothing itself maps a stage and an eval over fork, spawn and forkserver
    pools and ends: the run started at exit (inside threading's exit hooks, where wandb's imports
    register hooks of their own) holds every worker's point and the eval, with exit code 0, nothing
    is printed and the inbox is gone."""
    result = run_script(wandb_root, """
import multiprocessing, sys
import instrument

@instrument.training_stage("work")
def work(i):
    return {"i": float(i)}

@instrument.eval_summary(prefix="check")
def check(i):
    return {"i": float(i)}

def task(i):
    work(i)
    check(i)
    return i

if __name__ == "__main__":
    for k, method in enumerate(("fork", "spawn", "forkserver")):
        with multiprocessing.get_context(method).Pool(2) as pool:
            pool.map(task, [10 * k, 10 * k + 1])
    assert "wandb" not in sys.modules and "instrument._linkage" not in sys.modules
""", env=wandb_env(wandb_root, TMPDIR=str(wandb_root)))
    (run,) = read_runs(wandb_root / "wandb")
    points = run.series("work/i")
    assert list(range(6)) == [step for step, _ in points]
    assert [0.0, 1.0, 10.0, 11.0, 20.0, 21.0] == sorted(value for _, value in points)
    assert (True, 0, "") == (run.summary["check/i"] in (20.0, 21.0), run.exit_code, result.stderr)
    assert [] == list(wandb_root.glob("instrument-workers-*"))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_values_reach_the_recording_whatever_mode_they_see(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``WANDB_MODE=disabled`` in the environment (as CI often sets it) a recording still gets
    what its pool's workers wrote, once the parent reads them (``instrument.flush()``): the parent
    records, so its workers write to it whatever mode they see themselves."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with recording() as recorded, multiprocessing.get_context(method).Pool(2) as pool:
        pool.map(pool_work.work, [0, 1])
        pool.map(pool_work.check, [0, 1])
        instrument.flush()
        run = recorded.run()
        assert ([0.0, 1.0], True) == (sorted(value for _, value in run.series("work/i")),
                                      run.summary["check/i"] in (0.0, 1.0))


def test_a_pool_that_outlives_a_recording_writes_into_the_next_one() -> None:
    """A pool made once (a module-scoped fixture) serves several recordings in turn: each gets
    exactly the values its own calls' workers wrote."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        for k in range(3):
            with recording() as recorded:
                pool.map(pool_work.work, [k])
                instrument.flush()
                assert [(0, float(k))] == recorded.run().series("work/i")


@pytest.mark.integration
def test_values_a_worker_journals_after_its_parent_finished_are_named_in_a_warning(wandb_root: Path) -> None:
    """A process the main thread never joined (Python waits for it only after the exit hooks
    that finish the runs) and that logs after them: one warning names it and counts its record,
    and the inbox is gone."""
    result = run_script(wandb_root, """
import multiprocessing, time
import instrument

@instrument.training_stage("worker")
def work(i):
    return {"i": float(i)}

def late(i):
    time.sleep(1.0)
    work(i)

if __name__ == "__main__":
    child = multiprocessing.get_context("fork").Process(target=late, args=(0,))
    child.start()
    print(child.pid, flush=True)
""", env=wandb_env(wandb_root, TMPDIR=str(wandb_root)))
    pid = result.stdout.strip()
    warned = (f"instrument: worker process {pid} was still running when this process's main thread ended and journaled 1 "
              "record after its runs were finished; it was not written: join worker processes before the program ends")
    assert ([warned], []) == (instrument_warnings(result.stderr), list(wandb_root.glob("instrument-workers-*")))
