"""The main example (examples/pipeline/) run as the README runs it, with real wandb offline.

The orchestrator runs once for the whole module, with no W&B account, no ``WANDB_MODE`` and no
``WANDB_DIR`` (so its runs go to ``./wandb``); the tests read back the ``.wandb`` files it wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from helpers import ROOT, wandb_env

from instrument.runfile import RunFile, find_run_files, read_runs

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "pipeline"


@attrs.frozen
class ExampleRun:
    """One run of an example script: the process, and the runs found in its ``wandb`` folder."""

    process: subprocess.CompletedProcess[str]
    runs: list[RunFile]
    root: Path

    def only(self, job_type: str) -> RunFile:
        """Return the one run of *job_type*."""
        (found,) = [run for run in self.runs if run.job_type == job_type]
        return found


def run_example(root: Path, script: str, **env: str) -> ExampleRun:
    """Run ``examples/pipeline/<script>`` in *root* as a user would, with no account and *env* added."""
    environment = {k: v for k, v in wandb_env(root).items() if k not in ("WANDB_MODE", "WANDB_DIR")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / script)], cwd=root, env={**environment, **env},
        capture_output=True, text=True, timeout=300,
    )
    assert 0 == done.returncode, f"{script} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    runs = read_runs(root / "wandb") if (root / "wandb").exists() else []
    return ExampleRun(done, runs, root)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> ExampleRun:
    """The orchestrator, run once: ``python examples/pipeline/orchestrate.py``."""
    return run_example(tmp_path_factory.mktemp("example"), "orchestrate.py")


@pytest.mark.slow
def test_example_writes_exactly_two_runs_and_reports_them(example: ExampleRun) -> None:
    """The example writes a pipeline run and a train run to ./wandb, and its report shows exactly those two."""
    assert ["pipeline", "train"] == sorted(run.job_type for run in example.runs)
    assert 2 == len(find_run_files(example.root / "wandb"))
    reported = [line.split()[1] for line in example.process.stdout.splitlines() if line.startswith("run ")]
    assert [example.only("pipeline").run_id, example.only("train").run_id] == reported
    assert "The pipeline wrote 2 runs to" in example.process.stdout


@pytest.mark.slow
def test_example_ends_with_the_instrument_commands(example: ExampleRun) -> None:
    """The report's last lines suggest ``instrument show <pipeline id>`` and ``instrument sync``, not raw wandb."""
    last = example.process.stdout.splitlines()[-2:]
    assert last[0].startswith(f"More on a run: instrument show {example.only('pipeline').run_id} ")
    assert last[1].startswith("Upload them:   instrument sync ")


@pytest.mark.slow
def test_example_says_where_the_offline_runs_went(example: ExampleRun) -> None:
    """With no account the pipeline run is written offline and one line says where and how to sync it."""
    pipeline_id = example.only("pipeline").run_id
    assert f"so run {pipeline_id} was written offline to {example.root / 'wandb'}" in example.process.stderr
    assert "instrument sync" in example.process.stderr


@pytest.mark.slow
def test_example_child_is_linked_to_the_pipeline(example: ExampleRun) -> None:
    """The train run sits in the pipeline's group, tagged ``parent:<pipeline id>``, and is listed in pipeline/children."""
    pipeline, child = example.only("pipeline"), example.only("train")
    assert (pipeline.run_id, "pipeline") == (pipeline.group, pipeline.job_type)
    assert (pipeline.run_id, (f"parent:{pipeline.run_id}",)) == (child.group, child.tags)
    assert [child.run_id] == pipeline.summary["pipeline/children"]
    assert (0, 0) == (pipeline.exit_code, child.exit_code)


@pytest.mark.slow
def test_example_stages_keep_every_point_on_their_own_axes(example: ExampleRun) -> None:
    """operator has 200 points at operator/step 0..199 and diffusion 100 at 0..99, nothing dropped."""
    child = example.only("train")
    assert list(range(200)) == [step for step, _ in child.series("operator/loss")]
    assert list(range(200)) == [step for step, _ in child.series("operator/grad_norm")]
    assert list(range(100)) == [step for step, _ in child.series("diffusion/loss")]
    assert 300 == len(child.history)
    assert [] == example.only("pipeline").history


@pytest.mark.slow
def test_example_evaluations_land_in_the_pipeline_summary_only(example: ExampleRun) -> None:
    """eval_small/* and eval_full/* are in the pipeline run's summary and in no history row of either run."""
    pipeline = example.only("pipeline")
    evals = {f"eval_{split}/{metric}" for split in ("small", "full") for metric in ("nrmse", "mse")}
    assert evals <= set(pipeline.summary)
    assert pytest.approx(0.09 + 1 / 64) == pipeline.summary["eval_small/nrmse"]
    in_history = {key for run in example.runs for row in run.history for key in row}
    assert set() == evals & in_history


@pytest.mark.slow
def test_example_gate_verdicts_land_in_the_pipeline_run_and_the_report(example: ExampleRun) -> None:
    """evaluate.py's gates: eval_small fails nrmse < 0.1 (an ERROR alert), eval_full passes; the report shows both
    suites, the sidecar holds them, and the exit code stays 0 (no gate_exit)."""
    pipeline = example.only("pipeline")
    assert (0, "fail", 1, "pass") == (pipeline.summary["gates/eval_small/passed"], pipeline.summary[
        "gates/eval_small/status"], pipeline.summary["gates/eval_full/passed"], pipeline.summary["gates/eval_full/status"])
    assert "no_baseline" == pipeline.summary["gates/eval_full/nrmse/status"]  # Baseline.best(5): no earlier run
    assert [("gates failed: eval_small", "ERROR")] == [(a["title"], a["level"]) for a in pipeline.alerts]
    report = example.process.stdout.splitlines()
    start = report.index("  gates:")
    assert [
        "  gates:",
        "    eval_full: pass",
        "      mse = 0.00827673: pass; threshold 0.01, delta -0.00172327 (-17.2%)",
        "      nrmse = 0.0909766: no_baseline; threshold 0.1, delta -0.00902344 (-9.02%)",
        "    eval_small: fail",
        "      mse = 0.0111566: warn (threshold); threshold 0.01, delta +0.00115664 (+11.6%)",
        "      nrmse = 0.105625: fail (threshold); threshold 0.1, delta +0.005625 (+5.62%)",
        "  exit code: 0",
    ] == report[start:start + 8]
    assert not any(line.startswith("    gates/") for line in report)  # folded into the gates block
    sidecar = json.loads((example.root / ".instrument" / "runs" / pipeline.run_id / "gates.json").read_text())
    assert ["eval_full", "eval_small"] == sorted(sidecar["suites"])


@pytest.mark.slow
def test_example_eval_config_is_merged_under_each_prefix(example: ExampleRun) -> None:
    """Each evaluation's settings land in the pipeline config under its own prefix, beside the pipeline's config."""
    assert {
        "dataset": "toy",
        "seed": 0,
        "eval_small": {"eval_samples": 64, "eval_tau": 0.5},
        "eval_full": {"eval_samples": 1024, "eval_tau": 0.5},
    } == example.only("pipeline").config


@pytest.mark.slow
def test_training_script_by_hand_makes_one_standalone_run(tmp_path: Path) -> None:
    """``python examples/pipeline/train.py`` with no context writes one unlinked run with every point, exit code 0."""
    done = run_example(tmp_path, "train.py")
    (run,) = done.runs
    assert ("", ()) == (run.job_type, run.tags)
    assert (200, 100) == (len(run.series("operator/loss")), len(run.series("diffusion/loss")))
    assert 0 == run.exit_code


def test_example_with_wandb_disabled_writes_nothing(tmp_path: Path) -> None:
    """``WANDB_MODE=disabled``: the whole pipeline runs, every script prints its results, no wandb folder appears."""
    done = run_example(tmp_path, "orchestrate.py", WANDB_MODE="disabled")
    assert "train.py: 200 operator steps, 100 diffusion steps" in done.process.stdout
    assert "evaluate.py full: nrmse=0.0910" in done.process.stdout
    assert "No run files for" in done.process.stdout
    assert not (tmp_path / "wandb").exists()


def test_the_readmes_five_line_snippet_runs_as_it_is(tmp_path: Path) -> None:
    """The README's snippet, saved and run as written with no account, writes one offline pipeline
    run holding the stage's 100 points and the eval's summary, and prints the sync command."""
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## In five lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "quickstart.py").write_text(snippet)
    environment = {k: v for k, v in wandb_env(tmp_path).items() if k not in ("WANDB_MODE", "WANDB_DIR")}
    process = subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, env=environment, capture_output=True,
                             text=True, timeout=300, check=True)
    (run,) = read_runs(tmp_path / "wandb")
    assert ("quickstart", "pipeline", 0, 100, 0.09, 0.001) == (
        run.project, run.job_type, run.exit_code, len(run.series("operator/loss")), run.summary["eval/nrmse"],
        run.summary["eval/mse"])
    assert [(0, 1.0), (99, 0.01)] == run.series("operator/loss")[::99]
    assert "instrument sync" in process.stderr


def test_the_readmes_five_line_snippet_uses_only_names_it_imports_or_defines() -> None:
    """The snippet under "In five lines" imports everything it uses (``subprocess``, ``sys``)."""
    import ast
    import builtins

    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## In five lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    tree = ast.parse(snippet)
    bound = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
             for alias in node.names}
    bound |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    bound |= {arg.arg for node in ast.walk(tree) if isinstance(node, ast.arguments) for arg in node.args}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    assert set() == used - bound - set(dir(builtins))
