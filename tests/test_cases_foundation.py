"""Cases C01, C02, C03, C05 and C08 of the field reports, against real wandb offline.

Each scenario runs in a subprocess and the test reads back the ``.wandb`` files wandb wrote.
Independent scenarios share a process: each gets a standalone run of its own, named after the
case, by ending the previous one with ``instrument.finish()``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers import run_script

import instrument
from instrument.runfile import RunFile, read_runs
from instrument.testing import recording

pytestmark = pytest.mark.integration

#: What wandb-core writes when it drops a backward ``step=`` (docs/wandb-behaviour.md).
DROPPED_STEP_LOG = "ignoring partial history record"
DROPPED_STEP_CONSOLE = "Steps must be monotonically increasing"


def runs_by_name(root: Path) -> dict[str, RunFile]:
    """Read every run under *root*/wandb, keyed by display name (or id when unnamed)."""
    return {run.name or run.run_id: run for run in read_runs(root / "wandb")}


def result_of(stdout: str) -> dict[str, Any]:
    """Return the JSON object a scenario script printed on its last stdout line."""
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def history_keys(run: RunFile) -> set[str]:
    """Return every key that appears in some history row of *run*."""
    return {key for row in run.history for key in row}


# One process, five standalone runs: C01, C02 and three variants of C03. Warnings raised during
# each case are collected per case and printed as JSON at the end.
STEP_CASES = """
    import json
    import warnings

    import instrument

    caught = {}

    def case(name, body):
        instrument.configure(project="cases", name=name)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            body()
        instrument.finish()
        caught[name] = [str(w.message) for w in seen]

    # C01: two stages interleaved, each with its own counter.
    @instrument.training_stage("trainer")
    def trainer(k):
        instrument.log({"loss": 1.0 / k}, step=k)

    @instrument.training_stage("inference")
    def inference(k):
        instrument.log({"reward": float(k)}, step=k)

    def c01():
        for i in range(3):
            trainer(100 + i)
            inference(i)

    # C02: the second stage restarts at 0 (one through return values, one through log(step=)).
    @instrument.training_stage("pretrain")
    def pretrain(loss):
        return {"loss": loss}

    @instrument.training_stage("finetune")
    def finetune(loss, k):
        instrument.log({"loss": loss}, step=k)

    def c02():
        for loss in (3.0, 2.0, 1.0):
            pretrain(loss)
        for k, loss in enumerate((0.5, 0.4, 0.3)):
            finetune(loss, k)

    # C03: an evaluation before more training; then a stage that writes the eval's key.
    @instrument.eval_summary(prefix="eval")
    def evaluate():
        return {"nrmse": 0.09}

    @instrument.training_stage("train")
    def train(k):
        return {"loss": 1.0 / (k + 1)}

    @instrument.training_stage("eval")
    def eval_stage(value):
        return {"nrmse": value}

    def c03_more_training():
        evaluate()
        for k in range(3):
            train(k)

    def c03_stage_after_eval():
        evaluate()
        for value in (0.5, 0.4, 0.3):
            eval_stage(value)

    def c03_stage_before_eval():
        for value in (0.5, 0.4, 0.3):
            eval_stage(value)
        evaluate()

    case("C01", c01)
    case("C02", c02)
    case("C03", c03_more_training)
    case("C03-stage-after-eval", c03_stage_after_eval)
    case("C03-stage-before-eval", c03_stage_before_eval)
    print(json.dumps(caught))
"""


class StepCases(NamedTuple):
    """What the C01-C03 batch left: its runs and its warnings, by case name, and its stderr."""

    runs: dict[str, RunFile]
    warnings: dict[str, list[str]]
    stderr: str


@pytest.fixture(scope="module")
def step_cases(tmp_path_factory: pytest.TempPathFactory) -> StepCases:
    """Run the C01-C03 batch once for the module."""
    root = tmp_path_factory.mktemp("step-cases")
    done = run_script(root, STEP_CASES)
    return StepCases(runs_by_name(root), result_of(done.stdout), done.stderr)


@pytest.mark.slow
def test_step_cases_each_wrote_one_finished_run(step_cases: StepCases) -> None:
    """The batch made exactly one run per case, each finished with exit code 0."""
    runs = step_cases.runs
    assert {
        "C01": 0, "C02": 0, "C03": 0, "C03-stage-after-eval": 0, "C03-stage-before-eval": 0
    } == {name: run.exit_code for name, run in runs.items()}


@pytest.mark.slow
def test_c01_interleaved_stages_keep_every_point_on_their_own_axes(step_cases: StepCases) -> None:
    """C01: trainer points land at trainer steps 100..102 and inference points at 0..2."""
    runs = step_cases.runs
    run = runs["C01"]
    assert [(100, 1 / 100), (101, 1 / 101), (102, 1 / 102)] == run.series("trainer/loss")
    assert [(0, 0), (1, 1), (2, 2)] == run.series("inference/reward")
    assert 6 == len(run.history)


@pytest.mark.slow
def test_c01_wandb_step_only_grows_and_nothing_was_dropped(step_cases: StepCases) -> None:
    """C01: wandb's _step strictly grows and neither the console nor wandb-core logged a dropped step."""
    runs, caught = step_cases.runs, step_cases.warnings
    steps = [row["_step"] for row in runs["C01"].history]
    assert steps == sorted(set(steps))
    internal_log = (runs["C01"].path.parent / "logs" / "debug-internal.log").read_text()
    assert DROPPED_STEP_LOG not in internal_log
    assert DROPPED_STEP_CONSOLE not in step_cases.stderr
    assert [] == caught["C01"]


@pytest.mark.slow
def test_c02_second_stage_restarting_at_zero_keeps_all_six_rows(step_cases: StepCases) -> None:
    """C02: six rows, no bare ``loss``, and each stage's last loss in the summary."""
    runs, caught = step_cases.runs, step_cases.warnings
    run = runs["C02"]
    assert 6 == len(run.history)
    assert "loss" not in history_keys(run) and "loss" not in run.summary
    assert [(0, 3), (1, 2), (2, 1)] == run.series("pretrain/loss")
    assert [(0, 0.5), (1, 0.4), (2, 0.3)] == run.series("finetune/loss")
    assert (1, 0.3) == (run.summary["pretrain/loss"], run.summary["finetune/loss"])
    assert [] == caught["C02"]


@pytest.mark.slow
def test_c03_eval_summary_survives_more_training(step_cases: StepCases) -> None:
    """C03: ``eval/nrmse`` is 0.09 in the summary at finish and in no history row."""
    runs, caught = step_cases.runs, step_cases.warnings
    run = runs["C03"]
    assert 0.09 == run.summary["eval/nrmse"]
    assert "eval/nrmse" not in history_keys(run)
    assert 3 == len(run.series("train/loss"))
    assert [] == caught["C03"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["C03-stage-after-eval", "C03-stage-before-eval"])
def test_c03_stage_writing_the_eval_key_keeps_the_eval_value_and_warns(step_cases: StepCases, case: str) -> None:
    """C03: a stage's ``eval/nrmse`` lands in history, the summary keeps 0.09, one warning names the key."""
    runs, caught = step_cases.runs, step_cases.warnings
    run = runs[case]
    assert 0.09 == run.summary["eval/nrmse"]
    assert [0.5, 0.4, 0.3] == [value for _, value in run.series("eval/nrmse")]
    assert 1 == sum("'eval/nrmse'" in message for message in caught[case]), caught[case]


@pytest.mark.parametrize("stage_first", [False, True])
def test_c03_collision_fails_loudly_in_strict_mode(stage_first: bool) -> None:
    """C03 in a strict recording: the collision raises InstrumentationError naming the key, nothing lost."""

    @instrument.eval_summary(prefix="eval")
    def evaluate() -> dict[str, float]:
        return {"nrmse": 0.09}

    @instrument.training_stage("eval")
    def eval_stage() -> dict[str, float]:
        return {"nrmse": 0.5}

    first, second = (eval_stage, evaluate) if stage_first else (evaluate, eval_stage)
    with recording() as rec:
        first()
        with pytest.raises(instrument.InstrumentationError, match="'eval/nrmse'"):
            second()
    run = rec.run()
    assert [(0, 0.5)] == run.series("eval/nrmse")
    assert 0.09 == run.summary["eval/nrmse"]


# C05: an orchestrator runs a training script as a subprocess.
C05_TRAIN = """
    import instrument

    @instrument.training_stage("operator")
    def train_step():
        return {"loss": 0.5}

    train_step()
"""

C05_ORCHESTRATE = """
    import subprocess
    import sys

    import instrument

    @instrument.pipeline(project="c05")
    def main():
        subprocess.run([sys.executable, "train.py"], check=True)

    main()
"""


@pytest.mark.slow
def test_c05_training_subprocess_gets_a_linked_run_of_its_own(wandb_root: Path) -> None:
    """C05: two runs in one group; the child is ``train`` tagged ``parent:<id>`` and alone holds ``operator/loss``."""
    (wandb_root / "train.py").write_text(textwrap.dedent(C05_TRAIN))
    run_script(wandb_root, C05_ORCHESTRATE, name="orchestrate.py")
    runs = read_runs(wandb_root / "wandb")
    assert ["pipeline", "train"] == sorted(run.job_type for run in runs)
    pipeline = next(run for run in runs if run.job_type == "pipeline")
    child = next(run for run in runs if run.job_type == "train")
    assert pipeline.group == child.group == pipeline.run_id
    assert (f"parent:{pipeline.run_id}",) == child.tags
    assert [(0, 0.5)] == child.series("operator/loss")
    assert "operator/loss" not in history_keys(pipeline) and "operator/loss" not in pipeline.summary
    assert [child.run_id] == pipeline.summary["pipeline/children"]
    assert (0, 0) == (pipeline.exit_code, child.exit_code)


@pytest.mark.slow
def test_c05_training_script_by_hand_makes_one_standalone_run(wandb_root: Path) -> None:
    """C05: the training script run with no context makes one unlinked run and raises nothing."""
    done = run_script(wandb_root, C05_TRAIN, name="train.py")
    (run,) = read_runs(wandb_root / "wandb")
    assert "Traceback" not in done.stderr
    assert [(0, 0.5)] == run.series("operator/loss")
    assert ("", (), 0) == (run.job_type, run.tags, run.exit_code)


# C08: exit state.
C08_RAISES = """
    import instrument

    boom = RuntimeError("boom")

    @instrument.training_stage("operator")
    def train_step(k):
        if k == 1:
            raise boom
        return {"loss": 0.5}

    train_step(0)
    try:
        train_step(1)
    except RuntimeError as error:
        print("same exception object:", error is boom, flush=True)
        raise
"""

C08_NO_FINISH = """
    import atexit

    from wandb.sdk import wandb_run

    # Count Run.finish calls; registered first, so this hook runs after every other one.
    calls = []
    original = wandb_run.Run.finish

    def counting_finish(self, *args, **kwargs):
        calls.append(kwargs.get("exit_code", args[0] if args else None))
        return original(self, *args, **kwargs)

    wandb_run.Run.finish = counting_finish
    atexit.register(lambda: print("finish calls:", calls, flush=True))

    import instrument

    @instrument.training_stage("operator")
    def train_step(k):
        return {"loss": 1.0 / (k + 1)}

    for k in range(100):
        train_step(k)
"""


@pytest.mark.slow
def test_c08_stage_exception_reaches_the_caller_and_marks_the_run_failed(wandb_root: Path) -> None:
    """C08a: the same RuntimeError reaches the caller, the process and the run exit non-zero, the point is kept."""
    done = run_script(wandb_root, C08_RAISES, check=False)
    (run,) = read_runs(wandb_root / "wandb")
    assert "same exception object: True" in done.stdout
    assert 1 == done.returncode
    assert "RuntimeError: boom" == done.stderr.strip().splitlines()[-1]
    assert 1 == done.stderr.count("Traceback (most recent call last)")
    assert 1 == run.exit_code
    assert [(0, 0.5)] == run.series("operator/loss")


@pytest.mark.slow
def test_c08_script_without_finish_ends_with_exit_code_0_and_every_point(wandb_root: Path) -> None:
    """C08b: 100 points and no finish call: the run holds 100 points, exit code 0, finished exactly once."""
    done = run_script(wandb_root, C08_NO_FINISH)
    (run,) = read_runs(wandb_root / "wandb")
    assert "finish calls: [0]" in done.stdout
    assert 0 == run.exit_code
    assert list(range(100)) == [step for step, _ in run.series("operator/loss")]
