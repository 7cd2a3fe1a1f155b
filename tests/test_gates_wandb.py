"""Gates against real wandb offline: verdicts read back from the .wandb files and the sidecar.

Three scripts: a pipeline with ``gate_exit=True`` whose training and eval subprocesses run gated
evals (verdicts in the pipeline run, none in the training run, exit status 1); a pipeline
without it (exit 0, a WARN alert); and a standalone eval killed with SIGKILL right after it
returned (the sidecar is complete).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from helpers import run_script, wandb_env

from instrument.runfile import RunFile, find_run_files, read_run_file

pytestmark = pytest.mark.integration

EVALUATE = """
import instrument
from instrument import Baseline, Regression

@instrument.eval_summary(
    prefix="eval",
    gates={"nrmse": "< 0.1", "drift": "<= 1e-3 warn", "acc": "> 0.5"},
    regression=[Regression("nrmse", "min", rel=0.05, abs=0.002)],
    baseline=Baseline.values({"nrmse": 0.15}),
)
def evaluate():
    return {"nrmse": 0.2, "drift": 0.01, "acc": float("nan"), "mse": 0.04}

evaluate()
"""

TRAIN = """
import instrument

@instrument.training_stage("operator")
def step(i):
    return {"loss": 1.0 / (i + 1)}

@instrument.eval_summary(prefix="eval_train", gates={"loss": "< 0.5"})
def check():
    return {"loss": 0.25}

for i in range(3):
    step(i)
check()
"""

PIPELINE = """
import subprocess, sys
import instrument

@instrument.eval_summary(prefix="eval_here", gates={"x": ">= 1 warn"})
def here():
    return {"x": 0.5}

@instrument.pipeline(project="gates", gate_exit={gate_exit})
def main():
    subprocess.run([sys.executable, "train.py"], check=True)
    subprocess.run([sys.executable, "evaluate.py"], check=True)
    here()

main()
print("pipeline returned", flush=True)
"""


@attrs.frozen
class Pipeline:
    """A pipeline script's process and its runs."""

    returncode: int
    stdout: str
    stderr: str
    pipeline: RunFile
    training: RunFile
    root: Path

    def table(self, key: str) -> dict[str, Any]:
        """Return the W&B table the pipeline run's summary holds under *key* (columns and data)."""
        entry = self.pipeline.summary[key]
        files = self.pipeline.path.parent / "files"
        return json.loads((files / entry["path"]).read_text())  # type: ignore[no-any-return]


def run_pipeline(root: Path, gate_exit: bool) -> Pipeline:
    """Write the three scripts into *root* and run the pipeline; return what it wrote."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "train.py").write_text(TRAIN)
    done = run_script(root, PIPELINE.replace("{gate_exit}", str(gate_exit)), name="pipeline.py", check=False)
    runs = [read_run_file(path) for path in find_run_files(root / "wandb")]
    (pipeline,) = [run for run in runs if run.job_type == "pipeline"]
    (training,) = [run for run in runs if run.job_type == "train"]
    return Pipeline(done.returncode, done.stdout, done.stderr, pipeline, training, root)


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The pipeline with ``gate_exit=True``; its eval subprocess fails its gates."""
    return run_pipeline(tmp_path_factory.mktemp("gate_exit"), gate_exit=True)


def test_verdicts_from_an_eval_subprocess_land_in_the_pipeline_summary(failing: Pipeline) -> None:
    """The subprocess's suite verdicts are summary keys of the pipeline run, NaN left out."""
    summary = failing.pipeline.summary
    assert {
        "gates/eval/passed": 0, "gates/eval/status": "fail",
        "gates/eval/nrmse/passed": 0, "gates/eval/nrmse/status": "fail", "gates/eval/nrmse/reason": "threshold",
        "gates/eval/nrmse/value": 0.2, "gates/eval/nrmse/threshold": 0.1, "gates/eval/nrmse/baseline": 0.15,
        "gates/eval/drift/passed": 0, "gates/eval/drift/status": "warn",
        "gates/eval/acc/passed": 0, "gates/eval/acc/status": "fail", "gates/eval/acc/reason": "nan",
        "gates/eval_train/passed": 1, "gates/eval_here/passed": 1, "gates/eval_here/status": "warn",
    } == {key: summary[key] for key in (
        "gates/eval/passed", "gates/eval/status", "gates/eval/nrmse/passed", "gates/eval/nrmse/status",
        "gates/eval/nrmse/reason", "gates/eval/nrmse/value", "gates/eval/nrmse/threshold", "gates/eval/nrmse/baseline",
        "gates/eval/drift/passed", "gates/eval/drift/status", "gates/eval/acc/passed", "gates/eval/acc/status",
        "gates/eval/acc/reason", "gates/eval_train/passed", "gates/eval_here/passed", "gates/eval_here/status")}
    assert "gates/eval/acc/value" not in summary
    assert pytest.approx(0.05 / 0.15 * 100) == summary["gates/eval/nrmse/delta_pct"]


def test_the_training_run_gets_no_verdicts(failing: Pipeline) -> None:
    """An eval called in the training subprocess writes its verdicts to the pipeline run, never the training run."""
    assert [] == [key for key in failing.training.summary if key.startswith(("gates/", "eval_train/"))]
    assert 0.25 == failing.pipeline.summary["eval_train/loss"]
    assert [] == failing.training.alerts


def test_the_table_has_one_row_per_gate(failing: Pipeline) -> None:
    """``gates/eval/table`` holds the gate, op, threshold, baseline, value, delta, delta_pct, status and severity."""
    table = failing.table("gates/eval/table")
    assert ["gate", "op", "threshold", "baseline", "value", "delta", "delta_pct", "status", "severity", "tolerance",
            "reason"] == table["columns"]
    rows = {(row[0], row[1]): row for row in table["data"]}
    assert ["nrmse", "<", 0.1, None, 0.2] == rows[("nrmse", "<")][:5]
    assert ["acc", ">", 0.5, None, None, None, None, "fail", "fail", None, "nan"] == rows[("acc", ">")]
    assert ["nrmse", "min", None, 0.15, 0.2] == rows[("nrmse", "min")][:5]
    assert ("fail", "regression") == (rows[("nrmse", "min")][7], rows[("nrmse", "min")][10])


def test_one_alert_per_failing_suite_at_its_level(failing: Pipeline) -> None:
    """The failing suite sends one ERROR alert listing its failures; the warn-only suite one WARN alert."""
    by_title = {alert["title"]: alert for alert in failing.pipeline.alerts}
    assert {"gates failed: eval", "gates warned: eval_here"} == set(by_title)
    assert "ERROR" == by_title["gates failed: eval"]["level"]
    assert "WARN" == by_title["gates warned: eval_here"]["level"]
    text = by_title["gates failed: eval"]["text"]
    assert "- nrmse = 0.2: threshold < 0.1, delta +0.1, +100%: threshold" in text.splitlines()
    assert "- acc = nan: threshold > 0.5: nan" in text.splitlines()


def test_the_sidecar_holds_every_suite_of_the_pipeline_run(failing: Pipeline) -> None:
    """``.instrument/runs/<pipeline id>/gates.json`` has the three suites, NaN as "nan", and the declarations."""
    sidecar = json.loads((failing.root / ".instrument" / "runs" / failing.pipeline.run_id / "gates.json").read_text())
    assert {"eval", "eval_train", "eval_here"} == set(sidecar["suites"])
    assert ("gates", "nan") == (sidecar["project"], sidecar["suites"]["eval"]["metrics"]["acc"])
    assert [{"metric": "nrmse", "direction": "min", "rel": 0.05, "abs": 0.002, "stderr_k": None,
             "severity": "fail"}] == sidecar["suites"]["eval"]["declaration"]["regression"]
    history = (failing.root / ".instrument" / "history" / "gates" / "eval.jsonl").read_text().splitlines()
    assert [failing.pipeline.run_id] == [json.loads(line)["run_id"] for line in history]


def test_gate_exit_exits_1_after_finishing_the_run_with_exit_code_1(failing: Pipeline) -> None:
    """With gate_exit=True a failed fail gate makes the process exit 1 and the run record exit code 1."""
    assert 1 == failing.returncode
    assert 1 == failing.pipeline.exit_code
    assert 0 == failing.training.exit_code
    assert (f"instrument: pipeline run {failing.pipeline.run_id}: the gates of 'eval' failed; exiting with status 1 "
            "(gate_exit=True)") == failing.stderr.splitlines()[-1]
    assert "pipeline returned" not in failing.stdout


def test_without_gate_exit_failed_gates_never_change_the_exit_code(tmp_path: Path) -> None:
    """The same pipeline without gate_exit exits 0 and records exit code 0, verdicts and all."""
    done = run_pipeline(tmp_path, gate_exit=False)
    assert (0, 0, 0) == (done.returncode, done.pipeline.exit_code, done.pipeline.summary["gates/eval/passed"])


KILLED = """
import os, signal
import instrument

@instrument.eval_summary(prefix="eval", gates={"nrmse": "< 0.1"})
def evaluate():
    return {"nrmse": float("nan"), "mse": 0.5}

evaluate()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_sidecar_is_complete_after_a_sigkill_right_after_the_eval(tmp_path: Path) -> None:
    """A standalone eval killed with SIGKILL as soon as it returned leaves a complete sidecar."""
    done = run_script(tmp_path, KILLED, check=False, env=wandb_env(tmp_path))
    assert -9 == done.returncode
    (sidecar,) = (tmp_path / ".instrument" / "runs").glob("*/gates.json")
    data = json.loads(sidecar.read_text())
    entry = data["suites"]["eval"]
    assert ({"nrmse": "nan", "mse": 0.5}, False, "fail") == (entry["metrics"], entry["passed"], entry["status"])
    assert [("nrmse", "fail", "nan", "nan")] == [(v["metric"], v["status"], v["reason"], v["value"])
                                                 for v in entry["verdicts"]]
