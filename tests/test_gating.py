"""Unit tests of instrument._gating: what running a suite writes to its run and to the files; no wandb."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

import instrument
from instrument import baselines
from instrument._gates import Baseline, GateError, Regression, Suite, declare
from instrument._gating import run_gates
from instrument._problems import (
    InstrumentationError,
    InstrumentationWarning,
    Problem,
    pop_strict,
    push_strict,
)
from instrument._records import Record, SendAlert, SummaryUpdate


@attrs.define
class Target:
    """A run that keeps what it was given."""

    run_id: str = "run1"
    project: str | None = "p"
    config: Mapping[str, Any] | None = None
    keeps_files: bool = True
    written: list[Record] = attrs.field(factory=list)

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        self.written.extend(records)


def returned(prefix: str = "eval", **values: Any) -> list[Record]:
    """The records an eval with *prefix* returning *values* is routed to."""
    return [SummaryUpdate({f"{prefix}/{key}": value for key, value in values.items()})]


def gates(**options: Any) -> Suite:
    """The suite ``eval``: nrmse < 0.1 and a min regression on nrmse with rel 5 %, plus *options*."""
    suite = declare("eval", {"nrmse": "< 0.1"}, Regression("nrmse", "min", rel=0.05), **options)
    assert suite is not None
    return suite


def summary(target: Target) -> dict[str, Any]:
    """Every summary value the target got."""
    out: dict[str, Any] = {}
    for record in target.written:
        if isinstance(record, SummaryUpdate):
            out.update(record.values)
    return out


def alerts(target: Target) -> list[SendAlert]:
    """The alerts the target got."""
    return [r for r in target.written if isinstance(r, SendAlert)]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The .instrument folder of this test (WANDB_DIR is tmp_path)."""
    return tmp_path / ".instrument"


def test_a_failing_suite_writes_summary_table_alert_sidecar_and_history(root: Path) -> None:
    """Verdicts go to the run (summary, table, ERROR alert) and to the sidecar and the history."""
    target = Target(config={"lr": 0.1})
    verdict = run_gates(gates(), returned(nrmse=0.2, mse=0.04), target, "evaluate")
    assert (False, 0, "fail") == (verdict.passed, summary(target)["gates/eval/passed"], summary(target)["gates/eval/status"])
    assert ("nrmse", "<", 0.1) == summary(target)["gates/eval/table"].rows[0][:3]
    assert [("gates failed: eval", "ERROR")] == [(a.title, a.level) for a in alerts(target)]
    sidecar = json.loads((root / "runs" / "run1" / "gates.json").read_text())
    assert {"nrmse": 0.2, "mse": 0.04} == sidecar["suites"]["eval"]["metrics"]
    assert sidecar["suites"]["eval"]["config_hash"] is not None
    (line,) = (root / "history" / "p" / "eval.jsonl").read_text().splitlines()
    assert ("run1", "fail") == (json.loads(line)["run_id"], json.loads(line)["status"])


def test_on_fail_record_sends_no_alert_and_a_pass_sends_none_either(root: Path) -> None:
    """``on_fail="record"`` writes the verdicts without an alert; a passing suite never alerts."""
    recorded, passing = Target(), Target()
    run_gates(gates(on_fail="record"), returned(nrmse=0.2), recorded, "evaluate")
    run_gates(gates(), returned(nrmse=0.05), passing, "evaluate")
    assert ([], []) == (alerts(recorded), alerts(passing))
    assert (0, 1) == (summary(recorded)["gates/eval/passed"], summary(passing)["gates/eval/passed"])


def test_on_fail_raise_raises_after_everything_was_written(root: Path) -> None:
    """``on_fail="raise"`` raises GateError naming the failure, once the run and the sidecar have the verdicts."""
    target = Target()
    with pytest.raises(GateError, match=re.escape("gates of 'eval' fail: nrmse = 0.2: threshold < 0.1")) as raised:
        run_gates(gates(on_fail="raise"), returned(nrmse=0.2), target, "evaluate")
    assert isinstance(raised.value, AssertionError) and raised.value.verdict.status == "fail"
    assert 0 == summary(target)["gates/eval/passed"]
    assert (root / "runs" / "run1" / "gates.json").is_file()
    run_gates(gates(on_fail="raise"), returned(nrmse=0.05), Target(), "evaluate")  # a pass raises nothing


def test_a_recording_target_writes_no_file(root: Path) -> None:
    """A target that keeps no files (a recording) gets the verdicts and nothing is written to disk."""
    target = Target(keeps_files=False)
    run_gates(gates(baseline=Baseline.pinned(promote="on-pass")), returned(nrmse=0.05), target, "evaluate")
    assert 1 == summary(target)["gates/eval/passed"]
    assert not root.exists()


def test_promote_on_pass_promotes_only_passing_runs(root: Path) -> None:
    """With ``Baseline.pinned(promote="on-pass")`` a passing run becomes the baseline, a failing one does not."""
    suite = gates(baseline=Baseline.pinned(promote="on-pass"))
    run_gates(suite, returned(nrmse=0.08), Target(run_id="a"), "evaluate")
    run_gates(suite, returned(nrmse=0.5), Target(run_id="b"), "evaluate")
    assert ("a", 0.08) == (baselines.load("p", "eval", root)["nrmse"].run_id, baselines.load("p", "eval", root)["nrmse"].value)
    third = Target(run_id="c")
    run_gates(suite, returned(nrmse=0.095), third, "evaluate")  # worse than 0.08 by more than 5 %
    assert ("fail", 0.08) == (summary(third)["gates/eval/nrmse/status"], summary(third)["gates/eval/nrmse/baseline"])


def test_the_project_falls_back_to_wandb_project_then_uncategorized(root: Path) -> None:
    """A run without a project files its history under WANDB_PROJECT, else ``uncategorized``."""
    run_gates(gates(), returned(nrmse=0.05), Target(project=None), "evaluate", environ={"WANDB_DIR": str(root.parent),
                                                                                      "WANDB_PROJECT": "env"})
    run_gates(gates(), returned(nrmse=0.05), Target(project=None), "evaluate", environ={"WANDB_DIR": str(root.parent)})
    assert {"env", "uncategorized"} == {p.name for p in (root / "history").iterdir()}


def test_a_baseline_that_cannot_be_read_warns_or_raises_in_strict_mode(root: Path) -> None:
    """A from_run baseline of a run that does not exist is a warning (an error in strict mode); verdicts still land."""
    suite = gates(baseline=Baseline.from_run("gone"))
    target = Target()
    with pytest.warns(InstrumentationWarning, match="evaluate: the baseline of the gates 'eval' could not be read"):
        run_gates(suite, returned(nrmse=0.05), target, "evaluate")
    assert "no_baseline" == summary(target)["gates/eval/nrmse/status"]
    push_strict(True)
    try:
        strict = Target()
        with pytest.raises(InstrumentationError, match="no gate verdicts recorded for 'gone'"):
            run_gates(suite, returned(nrmse=0.05), strict, "evaluate")
        assert 1 == summary(strict)["gates/eval/passed"]
    finally:
        pop_strict()


def test_a_file_that_cannot_be_written_is_a_warning(root: Path) -> None:
    """An unwritable .instrument folder costs a warning; the verdicts still land in the run."""
    root.write_text("not a folder")
    target = Target()
    with pytest.warns(InstrumentationWarning, match="writing the gate verdicts of 'eval' for run run1 .* failed"):
        run_gates(gates(), returned(nrmse=0.05), target, "evaluate")
    assert 1 == summary(target)["gates/eval/passed"]


# -- through the decorators, under the recorder -----------------------------------------------------


def test_a_gated_eval_under_the_recorder_records_verdicts_and_writes_no_file(
    instrument_recorder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the recording the verdicts land in the run (summary, table, alert), no file is written, and the
    function's value comes back unchanged."""
    monkeypatch.chdir(tmp_path)

    @instrument.eval_summary(prefix="eval", gates={"nrmse": "< 0.1"})
    def evaluate() -> dict[str, float]:
        return {"nrmse": 0.2}

    assert {"nrmse": 0.2} == evaluate()
    run = instrument_recorder.run()
    assert (0.2, 0, "fail") == (run.summary["eval/nrmse"], run.summary["gates/eval/passed"],
                                run.summary["gates/eval/nrmse/status"])
    assert [{"title": "gates failed: eval", "level": "ERROR"}] == [
        {"title": a["title"], "level": a["level"]} for a in run.alerts]
    assert ["gates/eval/table"] == list(run.tables)
    assert [] == list(tmp_path.rglob("gates.json")) + list(tmp_path.rglob("*.jsonl"))


def test_a_generator_eval_is_gated_once_on_everything_it_yielded(instrument_recorder: Any) -> None:
    """A generator eval's gates run once, when it is exhausted, on the values of all its yields."""

    @instrument.eval_summary(prefix="eval", gates={"a": "< 1", "b": "< 1"})
    def evaluate() -> Any:
        yield {"a": 0.5}
        yield {"b": 2.0}

    assert [{"a": 0.5}, {"b": 2.0}] == list(evaluate())
    run = instrument_recorder.run()
    assert (1, 0, 1) == (run.summary["gates/eval/a/passed"], run.summary["gates/eval/b/passed"], len(run.alerts))


async def _score() -> dict[str, float]:
    return {"acc": 0.4}


def test_a_coroutine_eval_is_gated_after_it_was_awaited(instrument_recorder: Any) -> None:
    """A coroutine eval's gates run on its awaited value."""
    import asyncio

    scored = instrument.eval_summary(prefix="eval", gates={"acc": "> 0.5 warn"})(_score)
    assert {"acc": 0.4} == asyncio.run(scored())
    assert ("warn", 1) == (instrument_recorder.run().summary["gates/eval/status"],
                           instrument_recorder.run().summary["gates/eval/passed"])


def test_on_fail_raise_reaches_the_caller_and_an_eval_that_raised_is_not_gated(instrument_recorder: Any) -> None:
    """``on_fail="raise"`` raises GateError from the call; an eval that raised keeps its own exception, ungated."""

    @instrument.eval_summary(prefix="eval", gates={"x": "< 1"}, on_fail="raise")
    def failing() -> dict[str, float]:
        return {"x": 3.0}

    @instrument.eval_summary(prefix="broken", gates={"x": "< 1"})
    def broken() -> dict[str, float]:
        raise KeyError("boom")

    with pytest.raises(GateError, match=re.escape("gates of 'eval' fail: x = 3: threshold < 1")):
        failing()
    with pytest.raises(KeyError, match="boom"):
        broken()
    assert not any(key.startswith("gates/broken") for key in instrument_recorder.run().summary)


def test_verdicts_of_a_subprocess_eval_land_in_the_pipeline_run_and_gate_exit_exits_1(instrument_recorder: Any) -> None:
    """An eval in a pipeline's subprocess gates into the pipeline run, and gate_exit makes the pipeline exit 1."""

    @instrument.eval_summary(prefix="eval", gates={"x": "< 1"})
    def evaluate() -> dict[str, float]:
        return {"x": 3.0}

    with pytest.raises(SystemExit) as exited:
        with instrument.pipeline(project="demo", gate_exit=True):
            with instrument_recorder.subprocess():
                evaluate()
    assert 1 == exited.value.code
    pipeline = instrument_recorder.run(job_type="pipeline")
    assert (0, 1) == (pipeline.summary["gates/eval/passed"], pipeline.exit_code)


def test_gate_exit_leaves_a_passing_pipeline_and_a_raising_body_alone(instrument_recorder: Any) -> None:
    """gate_exit changes nothing when every fail gate passed, and a body's own exception keeps its exit code."""

    @instrument.eval_summary(prefix="eval", gates={"x": "< 1", "y": "< 1 warn"})
    def evaluate(x: float) -> dict[str, float]:
        return {"x": x, "y": 5.0}

    with instrument.pipeline(project="demo", gate_exit=True):
        evaluate(0.5)
    with pytest.raises(ValueError, match="own"):
        with instrument.pipeline(project="demo", gate_exit=True):
            evaluate(3.0)
            raise ValueError("own")
    assert [0, 1] == [run.exit_code for run in instrument_recorder.runs]


def test_gate_exit_must_be_a_bool() -> None:
    """A gate_exit that is not a bool is a TypeError naming it."""
    with pytest.raises(TypeError, match=re.escape("instrument.pipeline: gate_exit must be True or False, got str 'yes'")):
        instrument.pipeline(project="p", gate_exit="yes")  # type: ignore[call-overload]
