"""Linkage: which run each call writes to, across processes, modes, frameworks and failures.

The first tests run in-process against ``instrument.testing.recording()``; the rest run real
wandb offline in subprocesses and read back the ``.wandb`` files it wrote.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script, wandb_env

import instrument
from instrument.runfile import RunFile, read_runs
from instrument.testing import recording


@instrument.training_stage("operator")
def train_step(k: int) -> dict[str, float]:
    """One operator point."""
    return {"loss": 1.0 / (k + 1)}


@instrument.eval_summary(prefix="eval")
def evaluate() -> dict[str, Any]:
    """Final scores and the settings they were measured with."""
    return {"nrmse": 0.09, "settings": instrument.Config({"eval_samples": 64})}


def last_line(stdout: str) -> Any:
    """Return the JSON value a script printed on its last stdout line."""
    return json.loads(stdout.strip().splitlines()[-1])


def history_keys(run: RunFile) -> set[str]:
    """Return every key that appears in some history row of *run*."""
    return {key for row in run.history for key in row}


# -- in process, recorded --------------------------------------------------------------------


def test_pipeline_and_its_subprocess_record_two_linked_runs() -> None:
    """A pipeline plus a simulated subprocess give a pipeline run and a train run in its group, tagged parent:<id>."""
    with recording() as rec, instrument.pipeline(project="p") as owner, rec.subprocess():
        for k in range(3):
            train_step(k)
        evaluate()
    pipeline, child = rec.runs
    assert (owner.id, "pipeline", owner.id, ()) == (pipeline.id, pipeline.job_type, pipeline.group, pipeline.tags)
    assert ("train", owner.id, (f"parent:{owner.id}",)) == (child.job_type, child.group, child.tags)
    assert [(0, 1.0), (1, 0.5), (2, 1 / 3)] == child.series("operator/loss")
    assert [] == pipeline.history
    assert 0.09 == pipeline.summary["eval/nrmse"] and "eval/nrmse" not in child.summary
    assert {"eval": {"eval_samples": 64}} == pipeline.config
    assert [child.id] == pipeline.summary["pipeline/children"]
    assert (True, 0, True, 0) == (pipeline.finished, pipeline.exit_code, child.finished, child.exit_code)


def test_stages_inside_the_pipeline_process_write_into_the_pipeline_run() -> None:
    """Stages and evals called in the orchestrator's own process land in the pipeline run, no second run."""
    with recording() as rec, instrument.pipeline(project="p"):
        train_step(0)
        evaluate()
    run = rec.run()
    assert ("pipeline", [(0, 1.0)], 0.09) == (run.job_type, run.series("operator/loss"), run.summary["eval/nrmse"])


def test_user_exception_propagates_unchanged_and_the_run_keeps_earlier_points() -> None:
    """The very exception object a stage raises reaches the caller; the run ends with exit code 1 and its points."""

    class BatchError(Exception):
        pass

    raised = BatchError("bad batch 7")

    @instrument.training_stage("operator")
    def failing(k: int) -> dict[str, float]:
        if k == 2:
            raise raised
        return {"loss": 0.5}

    with pytest.raises(BatchError) as caught, recording() as rec:
        for k in range(3):
            failing(k)
    assert caught.value is raised
    assert ([(0, 0.5), (1, 0.5)], 1) == (rec.run().series("operator/loss"), rec.run().exit_code)


@pytest.mark.parametrize(("error", "code"), [(SystemExit(3), 3), (SystemExit(None), 0), (KeyboardInterrupt(), 130)])
def test_pipeline_records_the_exit_code_of_how_its_block_ended(error: BaseException, code: int) -> None:
    """A pipeline left by SystemExit(n), SystemExit(None) or Ctrl-C records n, 0 or 130 and re-raises."""
    with recording() as rec, pytest.raises(type(error)) as caught, instrument.pipeline(project="p"):
        train_step(0)
        raise error
    assert caught.value is error
    assert code == rec.runs[0].exit_code


def test_collision_in_a_journaled_record_warns_in_strict_mode_and_the_record_lands() -> None:
    """A child's eval key that the pipeline's series already wrote is a warning, not an error, when ingested."""

    @instrument.training_stage("eval")
    def eval_stage() -> dict[str, float]:
        return {"nrmse": 0.5}

    with recording() as rec, pytest.warns(instrument.InstrumentationWarning, match="'eval/nrmse'"):
        with instrument.pipeline(project="p"):
            eval_stage()
            with rec.subprocess():
                evaluate()
    (pipeline,) = rec.runs  # the subprocess only evaluated: no run of its own
    assert 0.09 == pipeline.summary["eval/nrmse"]
    assert [(0, 0.5)] == pipeline.series("eval/nrmse")
    assert {"eval": {"eval_samples": 64}} == pipeline.config


def test_load_wandb_context_from_env_without_the_variable_returns_none() -> None:
    """No ``WANDB_CONTEXT_FILE`` in the environment means no context, and no error."""
    assert None is instrument.load_wandb_context_from_env({})


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        (None, "cannot read the context file (No such file or directory)"),
        ("", "the file is empty"),
        ("{run_id", "not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({"run_id": "a", "journal_dir": "/j"}), "mode is missing"),
        (json.dumps({"run_id": 7, "mode": "offline", "journal_dir": "/j"}), "run_id must be a non-empty string, got int 7"),
        (json.dumps({"run_id": "a", "mode": "foo", "journal_dir": "/j"}), "mode 'foo' is not a wandb mode"),
        (json.dumps({"run_id": "a", "mode": "offline", "journal_dir": "/gone/journal"}),
         "its journal folder journal_dir='/gone/journal' does not exist"),
    ],
)
def test_bad_context_file_raises_context_file_error_naming_file_and_fault(
    tmp_path: Path, content: str | None, fault: str
) -> None:
    """A missing or corrupt context file gives ContextFileError with the file's path and what is wrong."""
    path = tmp_path / "wandb_context.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(instrument.ContextFileError) as caught:
        instrument.load_wandb_context_from_env({"WANDB_CONTEXT_FILE": str(path)})
    assert str(path) in str(caught.value)
    assert fault in str(caught.value)


@pytest.mark.integration
def test_a_leftover_context_file_whose_journal_is_gone_falls_back_to_a_standalone_run(wandb_root: Path) -> None:
    """``WANDB_CONTEXT_FILE`` naming a context whose journal folder was removed (its pipeline ended):
    one warning naming the variable and the missing folder, and the stage's points and the eval's
    summary land in a standalone run instead of being lost."""
    context = instrument.ContextFile(run_id="gone1234", project="p", entity=None, group="gone1234", mode="offline",
                                    journal_dir=str(wandb_root / "removed" / "journal"))
    path = context.save(wandb_root / "leftover.json")
    done = run_script(wandb_root, """
        import instrument

        @instrument.training_stage("operator")
        def train_step(k):
            return {"loss": float(k)}

        @instrument.eval_summary(prefix="eval")
        def evaluate():
            return {"nrmse": 0.09}

        train_step(0)
        train_step(1)
        evaluate()
    """, env=wandb_env(wandb_root, WANDB_CONTEXT_FILE=str(path)))
    (run,) = read_runs(wandb_root / "wandb")
    assert ("", [(0, 0.0), (1, 1.0)], 0.09) == (run.job_type, run.series("operator/loss"), run.summary["eval/nrmse"])
    warned = [line for line in done.stderr.splitlines() if "InstrumentationWarning" in line]
    assert 1 == len(warned), done.stderr
    assert all(word in warned[0] for word in ("WANDB_CONTEXT_FILE", "journal_dir=", "does not exist", "standalone"))


# -- real wandb, offline, in subprocesses ----------------------------------------------------


@pytest.mark.integration
def test_import_instrument_does_not_import_wandb(wandb_root: Path) -> None:
    """``import instrument`` and decorating functions leave wandb unimported (it costs about a second)."""
    done = run_script(wandb_root, """
        import sys
        import instrument

        @instrument.training_stage("operator")
        def train_step():
            return {"loss": 0.5}

        @instrument.pipeline(project="p")
        def main():
            pass

        print("wandb" in sys.modules)
    """)
    assert "False" == done.stdout.strip()


DISABLED = """
    import json
    import subprocess
    import sys

    import instrument

    @instrument.run_config
    def config():
        return {"lr": 0.1}

    @instrument.training_stage("operator")
    def train_step():
        instrument.log({"extra": 1.0})
        return {"loss": 0.5}

    @instrument.eval_summary(prefix="eval")
    def evaluate():
        return {"nrmse": 0.09}

    returned = [config(), train_step(), evaluate()]
    with instrument.pipeline(project="p"):
        child = subprocess.run([sys.executable, "-c", "import instrument; print(instrument.training_stage('s')(lambda: 7)())"],
                               capture_output=True, text=True, check=True)
        returned.append(train_step())
    returned.append(int(child.stdout))
    print(json.dumps({"returned": returned, "wandb imported": "wandb" in sys.modules}))
"""


@pytest.mark.integration
def test_disabled_mode_writes_nothing_and_functions_return_their_values(wandb_root: Path) -> None:
    """``WANDB_MODE=disabled``: every decorated function returns its value; no wandb folder or run file appears."""
    done = run_script(wandb_root, DISABLED, env=wandb_env(wandb_root, WANDB_MODE="disabled"))
    assert {
        "returned": [{"lr": 0.1}, {"loss": 0.5}, {"nrmse": 0.09}, {"loss": 0.5}, 7], "wandb imported": False
    } == last_line(done.stdout)
    assert not (wandb_root / "wandb").exists()
    assert [] == list(wandb_root.rglob("*.wandb"))


MODE_PATHS = """
    import json, re, subprocess, sys

    import instrument

    CHILD = '''
    import instrument

    @instrument.training_stage("operator")
    def train_step(k):
        return {"loss": float(k)}

    @instrument.eval_summary(prefix="eval")
    def evaluate():
        return {"nrmse": 0.09}

    train_step(0)
    train_step(1)
    evaluate()
    '''

    @instrument.training_stage("solo")
    def solo(k):
        return {"x": float(k)}

    with instrument.pipeline(project="p") as owner:
        subprocess.run([sys.executable, "-c", CHILD], check=True)
    solo(0)  # after the pipeline: this process's standalone run
    solo(1)
"""


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("value", ["Offline", "foo", "shared"])
def test_a_capitalised_or_unknown_wandb_mode_loses_nothing_on_any_path(wandb_root: Path, value: str) -> None:
    """``WANDB_MODE=Offline`` is offline; ``WANDB_MODE=foo`` warns once (naming the variable, the value
    and the accepted modes) and writes offline, and so does wandb's ``shared`` (online only; no
    credentials here), saying that instrument writes each run from one process: the pipeline run,
    its training child's run (with the child's eval in the pipeline run) and the standalone run
    after it keep every value."""
    done = run_script(wandb_root, MODE_PATHS, env=wandb_env(wandb_root, WANDB_MODE=value))
    runs = {run.job_type: run for run in read_runs(wandb_root / "wandb")}
    assert {"pipeline", "train", ""} == set(runs)  # the standalone run has no job type
    assert [(0, 0.0), (1, 1.0)] == runs["train"].series("operator/loss")
    assert 0.09 == runs["pipeline"].summary["eval/nrmse"]
    assert [(0, 0.0), (1, 1.0)] == runs[""].series("solo/x")
    warned = [line for line in done.stderr.splitlines() if "InstrumentationWarning" in line]
    if value == "Offline":
        assert [] == warned, done.stderr
    elif value == "shared":
        assert 1 == len(warned), done.stderr
        assert all(word in warned[0] for word in ("WANDB_MODE='shared' asks for wandb's shared mode", "one process",
                                                  "started as with WANDB_MODE unset: offline")), warned
    else:
        assert 1 == len(warned), done.stderr
        assert all(word in warned[0] for word in ("WANDB_MODE='foo'", "'offline'", "'disabled'", "offline")), warned


def test_explicit_mode_arguments_are_checked_at_the_call_in_any_case() -> None:
    """A ``mode=`` that is no wandb mode raises at ``pipeline(...)``, ``configure(...)`` and
    ``create_wandb_context(...)``, naming the argument; ``Offline`` is accepted as ``offline``."""
    for call, name in (
        (lambda mode: instrument.pipeline(project="p", mode=mode), "instrument.pipeline: mode"),
        (lambda mode: instrument.configure(mode=mode), "instrument.configure: mode"),
        (lambda mode: instrument.create_wandb_context(mode=mode), "instrument.create_wandb_context: mode"),
    ):
        with pytest.raises(ValueError, match=f"{name} 'foo' is not a wandb mode; expected one of .*'offline'"):
            call("foo")
        with pytest.raises(TypeError, match=f"{name} must be a string"):
            call(3)
        with pytest.raises(ValueError, match=f"{name} 'Shared' is wandb's shared mode, which instrument does not use: "
                                             "instrument writes each run from one process"):
            call("Shared")
    assert "offline" == instrument.pipeline(project="p", mode="Offline").options.mode
    try:
        instrument.configure(mode="DISABLED")
        with recording() as recorded:
            train_step(0)
        assert "disabled" == recorded.run().mode
    finally:
        instrument.configure()


def test_an_unknown_wandb_mode_raises_in_strict_mode_and_warns_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a strict recording an unknown ``WANDB_MODE`` is an error naming it; lenient, a warning and offline."""
    monkeypatch.setenv("WANDB_MODE", "foo")
    with pytest.raises(instrument.InstrumentationError, match="WANDB_MODE='foo' is not a wandb mode"), recording():
        train_step(0)
    with pytest.warns(instrument.InstrumentationWarning, match="WANDB_MODE='foo'"), recording(strict=False) as recorded:
        train_step(0)
    assert ("offline", [(0, 1.0)]) == (recorded.run().mode, recorded.run().series("operator/loss"))


def test_wandb_shared_mode_starts_runs_as_an_unset_wandb_mode_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """``WANDB_MODE=shared`` (wandb's mode for several processes writing one run, online only) is
    an error in a strict recording and a warning otherwise, saying what happens instead: runs start
    offline without credentials and online with them, as with ``WANDB_MODE`` unset."""
    monkeypatch.setenv("WANDB_MODE", "shared")
    with pytest.raises(instrument.InstrumentationError, match="WANDB_MODE='shared' asks for wandb's shared mode, in "
                       "which several processes write one run; instrument writes each run from one process"), recording():
        train_step(0)
    modes = []
    for key in (None, "0123456789abcdef0123456789abcdef01234567"):
        if key is not None:
            monkeypatch.setenv("WANDB_API_KEY", key)
        with pytest.warns(instrument.InstrumentationWarning, match="started as with WANDB_MODE unset"), recording(
                strict=False) as recorded:
            train_step(0)
        modes.append(recorded.run().mode)
    assert ["offline", "online"] == modes


@pytest.mark.integration
@pytest.mark.slow
def test_an_offline_pipeline_prints_the_sync_command_for_every_run_it_linked(wandb_root: Path) -> None:
    """With no W&B account a pipeline with two training children ends by printing one ``instrument sync``
    line naming the folder of its own run and of each child's run (each in a folder of its own)."""
    env = wandb_env(wandb_root)
    del env["WANDB_MODE"]  # no account, no mode: offline by default
    done = run_script(wandb_root, """
        import subprocess, sys
        import instrument

        CHILD = "import instrument; instrument.training_stage('operator')(lambda: {'loss': 0.5})()"
        with instrument.pipeline(project="p"):
            subprocess.run([sys.executable, "-c", CHILD], check=True)
            subprocess.run([sys.executable, "-c", CHILD], check=True)
    """, env=env)
    lines = [line for line in done.stderr.splitlines() if line.startswith("instrument:")]
    assert 2 == len(lines), done.stderr  # where the pipeline run goes (at its start), the sync command
    assert "pipeline run" in lines[-1] and "and its 2 child runs were written offline" in lines[-1], lines[-1]
    command = lines[-1].split("`")[1].split()
    assert ["instrument", "sync"] == command[:2]
    runs = read_runs(wandb_root / "wandb")
    assert ["pipeline", "train", "train"] == sorted(run.job_type for run in runs)
    folders = {run.path.parent.resolve() for run in runs}
    assert folders == {(wandb_root / folder).resolve() for folder in command[2:]}


PIPELINE_ENVIRONMENT = """
    import json
    import os
    import subprocess
    import sys

    import instrument

    CHILD = '''
    import instrument

    @instrument.training_stage("operator")
    def train_step():
        return {"loss": 0.5}

    train_step()
    '''

    seen = {}
    # The pipeline's mode is written in the context file; the child's own WANDB_MODE says otherwise.
    for mode, child_mode in (("offline", "disabled"), ("disabled", "offline")):
        with instrument.pipeline(project="p", name=f"pipeline-{mode}", mode=mode) as run:
            path = os.environ["WANDB_CONTEXT_FILE"]
            seen[mode] = {
                "id": run.id,
                "permissions": oct(os.stat(path).st_mode & 0o777),
                "text": open(path).read(),
            }
            subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, "WANDB_MODE": child_mode}, check=True)
        seen[mode]["exists after"] = os.path.exists(path)
        seen[mode]["variable after"] = os.environ.get("WANDB_CONTEXT_FILE")
    print(json.dumps(seen))
"""

SECRET = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def pipeline_environment(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[RunFile]]:
    """Run two pipelines (offline, disabled) with a contrary WANDB_MODE in each child; an API key is set."""
    root = tmp_path_factory.mktemp("pipeline-environment")
    done = run_script(root, PIPELINE_ENVIRONMENT, env=wandb_env(root, WANDB_API_KEY=SECRET))
    return last_line(done.stdout), read_runs(root / "wandb")


@pytest.mark.integration
@pytest.mark.slow
def test_context_file_is_private_secret_free_and_removed(pipeline_environment: Any) -> None:
    """The context file is mode 0600, holds no API key although one is set, and is gone after the pipeline."""
    seen, _ = pipeline_environment
    for mode in ("offline", "disabled"):
        assert "0o600" == seen[mode]["permissions"]
        assert SECRET not in seen[mode]["text"]
        assert {"run_id", "project", "entity", "group", "mode", "journal_dir", "version"} == set(
            json.loads(seen[mode]["text"])
        )
        assert (False, None) == (seen[mode]["exists after"], seen[mode]["variable after"])


@pytest.mark.integration
@pytest.mark.slow
def test_context_file_mode_wins_over_the_childs_wandb_mode(pipeline_environment: Any) -> None:
    """An offline pipeline's child writes offline despite WANDB_MODE=disabled; a disabled one's child writes nothing."""
    seen, runs = pipeline_environment
    offline_id = seen["offline"]["id"]
    assert [("pipeline", offline_id), ("train", offline_id)] == sorted((r.job_type, r.group) for r in runs)
    child = next(r for r in runs if r.job_type == "train")
    assert [(0, 0.5)] == child.series("operator/loss")


FRAMEWORK = """
    import wandb

    import instrument

    run = wandb.init(project="framework", mode="offline")  # started by a framework, not by instrument

    @instrument.training_stage("operator")
    def train_step(k):
        return {"loss": 1.0 / (k + 1)}

    @instrument.eval_summary(prefix="eval")
    def evaluate():
        return {"nrmse": 0.09}

    for k in range(3):
        train_step(k)
    evaluate()
    instrument.finish()  # finishes instrument's own runs only: there are none
    run.log({"framework/after": 1})  # the framework's run is still open
    run.finish(exit_code=5)
    print(run.id)
"""


@pytest.mark.integration
@pytest.mark.slow
def test_framework_run_is_logged_into_and_never_finished(wandb_root: Path) -> None:
    """Decorated calls write into a ``wandb.run`` a framework started; only the framework finishes it."""
    done = run_script(wandb_root, FRAMEWORK)
    (run,) = read_runs(wandb_root / "wandb")
    assert done.stdout.strip() == run.run_id
    assert [(0, 1.0), (1, 0.5), (2, 1 / 3)] == run.series("operator/loss")
    assert 0.09 == run.summary["eval/nrmse"] and "eval/nrmse" not in history_keys(run)
    assert 1 == len(run.series("framework/after"))
    assert 5 == run.exit_code


SEED_ORCHESTRATOR = """
    import os
    import subprocess
    import sys

    from instrument import create_wandb_context, save_wandb_context

    wandb_ctx = create_wandb_context({"lr": 1e-4}, project="ups", mode="offline")
    wandb_context_file = save_wandb_context(wandb_ctx, "wandb_context.json")
    eval_env = {**os.environ, "WANDB_CONTEXT_FILE": str(wandb_context_file)}
    subprocess.run([sys.executable, "evaluate.py"], env=eval_env, check=True)
    wandb_ctx.finish()
    print(wandb_ctx.run_id)
"""

SEED_EVALUATE = """
    from instrument import load_wandb_context_from_env

    wandb_ctx = load_wandb_context_from_env()
    if wandb_ctx:
        wandb_ctx.log_eval_summary({"nrmse": 0.09, "mse": 0.001}, prefix="eval")
        wandb_ctx.update_config({"eval_samples": 3072, "eval_tau": 0.5})
"""


@pytest.mark.integration
@pytest.mark.slow
def test_the_create_and_save_context_pattern_lands_subprocess_values_in_the_orchestrator_run(wandb_root: Path) -> None:
    """create/save in the orchestrator, load in the subprocess: its eval summary and config land in the one run."""
    (wandb_root / "evaluate.py").write_text(textwrap.dedent(SEED_EVALUATE))
    done = run_script(wandb_root, SEED_ORCHESTRATOR)
    (run,) = read_runs(wandb_root / "wandb")
    assert done.stdout.strip() == run.run_id
    assert (0.09, 0.001) == (run.summary["eval/nrmse"], run.summary["eval/mse"])
    assert [] == run.history
    assert {"lr": 1e-4, "eval_samples": 3072, "eval_tau": 0.5} == run.config
    assert 0 == run.exit_code


FAILING_PIPELINE = """
    import json
    import subprocess
    import sys

    import instrument

    CHILD = '''
    import instrument

    class BatchError(Exception):
        pass

    @instrument.training_stage("operator")
    def train_step(k):
        if k == 5:
            raise BatchError(f"bad batch {k}")
        return {"loss": 0.5}

    for k in range(10):
        train_step(k)
    '''

    @instrument.pipeline(project="p")
    def main():
        child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
        print(json.dumps({"rc": child.returncode, "stderr": child.stderr}), flush=True)
        raise SystemExit(3)

    main()
"""


@pytest.mark.integration
@pytest.mark.slow
def test_stage_exception_fails_its_run_and_system_exit_fails_the_pipeline(wandb_root: Path) -> None:
    """A child's stage error propagates unchanged (exit 1, its run keeps 5 points); SystemExit(3) gives the pipeline 3."""
    done = run_script(wandb_root, FAILING_PIPELINE, check=False)
    child_process = last_line(done.stdout)
    runs = {run.job_type: run for run in read_runs(wandb_root / "wandb")}
    assert 3 == done.returncode
    assert 1 == child_process["rc"]
    assert "BatchError: bad batch 5" == child_process["stderr"].strip().splitlines()[-1]
    assert 1 == child_process["stderr"].count("Traceback (most recent call last)")
    assert (1, [0, 1, 2, 3, 4]) == (runs["train"].exit_code, [s for s, _ in runs["train"].series("operator/loss")])
    assert (3, [runs["train"].run_id]) == (runs["pipeline"].exit_code, runs["pipeline"].summary["pipeline/children"])


def test_configure_after_the_first_record_says_the_run_keeps_its_settings() -> None:
    """``configure(project=...)`` after a standalone run was started: the run keeps its project,
    one warning names the run and says the settings apply to later runs (strict mode raises)."""
    with recording(strict=False) as recorded:
        instrument.log({"x": 1.0})
        with pytest.warns(instrument.InstrumentationWarning, match="was started before this call"):
            instrument.configure(project="late")
        instrument.log({"x": 2.0})
    with recording() as strict, pytest.raises(instrument.InstrumentationError, match="before the first record"):
        instrument.log({"x": 1.0})
        instrument.configure(project="late")
    assert [None] == [run.project for run in recorded.runs]
    assert 1 == len(strict.runs)
