"""Preemption and resume: a run id from the environment or the API, stage axes that go on where
the earlier segment stopped (case C21), and what ``wandb sync`` is handed. In-process tests use
the recording backend (which resumes as wandb does); the rest run real wandb offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_script, wandb_env

import instrument
from instrument import _linkage
from instrument._backends.wandb import steps_in_summary
from instrument.runfile import find_run_files, read_runs
from instrument.testing import recording


@instrument.training_stage("operator")
def train_step(k: int) -> dict[str, float]:
    """One operator point."""
    return {"loss": float(k)}


@instrument.training_stage("checkpointed")
def checkpointed_step(step: int) -> None:
    """One point at an explicit step (a loop that counts its own steps)."""
    instrument.log({"loss": float(step)}, step=step)


def test_wandb_run_id_and_resume_start_the_standalone_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``WANDB_RUN_ID`` and ``WANDB_RESUME`` are what a standalone run is started with."""
    monkeypatch.setenv("WANDB_RUN_ID", "resume0001")
    monkeypatch.setenv("WANDB_RESUME", "allow")
    with recording() as recorded:
        train_step(0)
    run = recorded.run()
    assert ("resume0001", "allow") == (run.id, run.spec.resume)


def test_configure_and_pipeline_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``configure(run_id=, resume=)`` and ``pipeline(run_id=, resume=)`` beat the variables; a
    pipeline's training child never takes the variables (it inherits them from its parent)."""
    monkeypatch.setenv("WANDB_RUN_ID", "fromenv1")
    monkeypatch.setenv("WANDB_RESUME", "must")
    with recording() as recorded:
        instrument.configure(run_id="solo0001", resume="allow")
        train_step(0)
        instrument.finish()
        with instrument.pipeline(project="p", run_id="pipe0001", resume="never"):
            with recorded.subprocess():
                train_step(0)
    solo, pipeline, child = recorded.runs
    assert [("solo0001", "allow"), ("pipe0001", "never")] == [(run.id, run.spec.resume) for run in (solo, pipeline)]
    assert child.id not in ("fromenv1", "solo0001", "pipe0001")
    assert (None, "train") == (child.spec.resume, child.job_type)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("WANDB_RUN_ID", "bad/id", "WANDB_RUN_ID 'bad/id' holds '/', which wandb refuses in a run id; it is ignored"),
    ("WANDB_RESUME", "sometimes", "WANDB_RESUME 'sometimes' is not a wandb resume mode"),
])
def test_a_variable_wandb_would_refuse_is_named_and_ignored(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                             message: str) -> None:
    """A run id with a character wandb refuses, or an unknown resume mode, warns naming the
    variable and the run starts anyway (with a fresh id, or without resuming)."""
    monkeypatch.setenv(name, value)
    with recording(strict=False) as recorded, pytest.warns(instrument.InstrumentationWarning, match=message):
        train_step(0)
    run = recorded.run()
    assert (True, None) == (run.id != value, run.spec.resume)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"run_id": "a:b"}, "instrument.configure: run_id 'a:b' holds ':', which wandb refuses in a run id"),
    ({"resume": "yes"}, "instrument.configure: resume 'yes' is not a wandb resume mode"),
])
def test_bad_arguments_raise_at_the_call(arguments: dict[str, str], message: str) -> None:
    """``configure`` checks its run id and resume mode when it is called."""
    with pytest.raises(ValueError) as raised:
        instrument.configure(**arguments)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


def test_a_resumed_run_goes_on_one_past_each_stages_last_step() -> None:
    """Resuming a run id that recorded steps 0..2 of a stage and explicit steps up to 5 of
    another: counted steps go on at 3, an explicit step at or below 5 warns once naming the
    stage and is kept (a warning in strict mode too: nothing is lost); a stage the earlier segment
    never logged starts at 0."""
    with recording() as recorded:
        instrument.configure(run_id="requeue1", resume="allow")
        for k in range(3):
            train_step(k)
        for step in range(6):
            checkpointed_step(step)
        instrument.finish()
        with pytest.warns(instrument.InstrumentationWarning, match=(
                r"stage 'checkpointed' of the resumed run requeue1 recorded steps up to 5 before; step 4 is not "
                r"past it")) as warned:
            for k in range(3, 6):
                train_step(k)
            for step in (4, 5, 6):
                checkpointed_step(step)
            instrument.log({"fresh": 1.0})
        first, second = recorded.runs
    assert 1 == len([w for w in warned if "resumed run" in str(w.message)])
    assert [(3, 3.0), (4, 4.0), (5, 5.0)] == second.series("operator/loss")
    assert [(4, 4.0), (5, 5.0), (6, 6.0)] == second.series("checkpointed/loss")
    assert ("requeue1", [(0, 0.0), (1, 1.0), (2, 2.0)]) == (first.id, first.series("operator/loss"))


def test_a_run_that_resumes_nothing_counts_from_0() -> None:
    """The same run id with ``resume="never"`` (or no resume mode) is a fresh run: its axes
    start at 0."""
    with recording() as recorded:
        instrument.configure(run_id="again001", resume="never")
        train_step(0)
        instrument.finish()
        train_step(1)
    assert [[(0, 0.0)], [(0, 1.0)]] == [run.series("operator/loss") for run in recorded.runs]


def test_online_the_last_steps_come_from_the_resumed_runs_summary() -> None:
    """A run wandb resumed online has the stages' last ``<stage>/step`` values in its summary;
    other summary keys and steps that are not whole numbers are left out."""
    summary = {"operator/step": 9, "eval/step": 2, "operator/loss": 0.1, "odd/step": 1.5, "_step": 30}
    assert {"operator": 9, "eval": 2} == steps_in_summary(summary)


REQUEUED = """
import sys
import instrument

@instrument.training_stage("operator")
def train_step(k):
    return {"loss": float(k)}

@instrument.training_stage("checkpointed")
def checkpointed_step(step):
    instrument.log({"loss": float(step)}, step=step)

segment = int(sys.argv[1])
for k in range(10):
    train_step(10 * segment + k)
for step in ((0, 1, 2, 3, 4, 5) if segment == 0 else (4, 5, 6)):
    checkpointed_step(step)
print("run", instrument.current().run_id)
"""


@pytest.mark.slow
def test_c21_a_requeued_job_continues_its_run(wandb_root: Path) -> None:
    """Twice with ``WANDB_RUN_ID=resume0001 WANDB_RESUME=allow``, 10 stage points each: two folders
    of the one run id, the stage's steps 0..19; an explicit step below the last warns naming the
    stage; ``instrument.current().run_id`` is the resumed id; both folders carry wandb's resume
    mark, and ``wandb sync`` of the two folders would upload both."""
    env = wandb_env(wandb_root, WANDB_RUN_ID="resume0001", WANDB_RESUME="allow")
    first = run_script(wandb_root, REQUEUED.replace("sys.argv[1]", "'0'"), env=env)
    second = run_script(wandb_root, REQUEUED.replace("sys.argv[1]", "'1'"), env=env)
    files = find_run_files(wandb_root / "wandb", "resume0001")
    assert 2 == len(files) == len(read_runs(wandb_root / "wandb"))
    earlier, later = (read_runs(wandb_root / "wandb"))
    assert [(k, float(k)) for k in range(20)] == earlier.series("operator/loss") + later.series("operator/loss")
    assert [(4, 4.0), (5, 5.0), (6, 6.0)] == later.series("checkpointed/loss")
    assert ("", ["run resume0001"] * 2) == (first.stderr, [first.stdout.strip(), second.stdout.strip()])
    assert ["stage 'checkpointed' of the resumed run resume0001 recorded steps up to 5 before; step 4 is not past it"] \
        == [line.split("instrument: ", 1)[1].split(" (a loop")[0] for line in second.stderr.splitlines()
            if "resumed run" in line]
    folders = [str(file.parent.relative_to(wandb_root)) for file in files]  # as instrument's sync hint names them
    dry_run = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", *folders],
                             cwd=wandb_root, env=env, capture_output=True, text=True, timeout=120, check=True)
    listed = dry_run.stdout + dry_run.stderr
    assert "Would sync 2 run(s)" in listed, listed
    assert all(f"{file.parent.name}/run-resume0001.wandb" in listed for file in files), listed
    assert [True, True] == [_resume_marked(file) for file in files]  # sync: the first creates the run, the second resumes it


def _resume_marked(path: Path) -> bool:
    """Return whether the run record of *path* carries wandb's resume mark (``resume`` set): what
    ``wandb sync`` reads to resume the run the earlier folder created on the server."""
    from instrument import runfile

    payloads, _ = runfile._split_records(path.read_bytes(), path)
    record_class = runfile._proto().Record
    for payload in payloads:
        record = record_class.FromString(payload)
        if record.WhichOneof("record_type") == "run":
            return bool(record.run.resume)
    return False


RESUMABLE = """
import subprocess, sys
import instrument

@instrument.training_stage("solo")
def solo(k):
    return {"x": float(k)}

@instrument.training_stage("orchestrated")
def orchestrated(k):
    return {"x": float(k)}

CHILD = '''
import instrument
@instrument.training_stage("child")
def child(k):
    return {"x": float(k)}
child(0)
child(1)
'''

instrument.configure(run_id="solo0001", resume="allow")
solo(0)
solo(1)
with instrument.pipeline(project="p", run_id="pipe0001", resume="allow"):
    orchestrated(0)
    orchestrated(1)
    subprocess.run([sys.executable, "-c", CHILD], check=True)
"""


@pytest.mark.slow
def test_configure_and_pipeline_run_ids_resume_and_children_get_their_own(wandb_root: Path) -> None:
    """Run twice: the standalone run of ``configure(run_id=, resume=)`` and the pipeline run of
    ``pipeline(run_id=, resume=)`` each continue their axes (0..3), while ``WANDB_RUN_ID`` (set,
    but given less weight) is taken by no run and each training child gets a fresh id whose axis
    starts at 0 (and is not marked as resuming: wandb never saw the inherited ``WANDB_RESUME``)."""
    env = wandb_env(wandb_root, WANDB_RUN_ID="fromenv1", WANDB_RESUME="allow")
    for _ in range(2):
        run_script(wandb_root, RESUMABLE, env=env)
    runs = read_runs(wandb_root / "wandb")
    by_id: dict[str, list[object]] = {}
    for run in runs:
        by_id.setdefault(run.run_id, []).append(run)
    children = [run for run in runs if run.job_type == "train"]
    assert {"solo0001", "pipe0001"} == {run_id for run_id, found in by_id.items() if len(found) == 2}
    assert "fromenv1" not in by_id
    assert [(k, float(k % 2)) for k in range(4)] == [
        point for run in runs if run.run_id == "solo0001" for point in run.series("solo/x")]
    assert [(k, float(k % 2)) for k in range(4)] == [
        point for run in runs if run.run_id == "pipe0001" for point in run.series("orchestrated/x")]
    assert [[(0, 0.0), (1, 1.0)]] * 2 == [run.series("child/x") for run in children]
    assert 2 == len({run.run_id for run in children})
    assert [False, False] == [_resume_marked(run.path) for run in children]  # WANDB_RESUME hidden from their start


def test_the_identity_goes_to_the_first_run_of_the_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the run that took ``WANDB_RUN_ID`` finished, the next run gets a fresh id (a second
    pipeline in a hyperparameter loop is not the same run)."""
    monkeypatch.setenv("WANDB_RUN_ID", "onlyonce")
    with recording() as recorded:
        train_step(0)
        instrument.finish()
        train_step(1)
    assert ["onlyonce", False] == [recorded.runs[0].id, recorded.runs[1].id == "onlyonce"]
    assert _linkage.settings().run_id is None
