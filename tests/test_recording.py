"""Tests of the recording backend: its runs keep wandb's rules, checked against real wandb offline."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script

import instrument
from instrument import InstrumentationError, InstrumentationWarning
from instrument._backends.base import RunSpec, ValuesDropped
from instrument._backends.recording import RecordedRun, RecordingBackend
from instrument.testing import recording

# One scenario, run twice: in memory under recording(), and in a subprocess with real wandb
# offline. It uses every kind of value a user's code sends, without any instrumentation problem.
SCENARIO = textwrap.dedent(
    """
    import pathlib

    import numpy as np

    import instrument

    instrument.configure(project="parity")

    @instrument.run_config
    def config():
        return {"lr": 0.01, "model": {"width": 64, "depth": 2}, "tags": ("a", "b")}

    @instrument.training_stage("pretrain", summary={"loss": "min"})
    def pretrain(i):
        return {"loss": 3.0 - i, "note": f"epoch {i}", "weights": instrument.Histogram([0.0, 1.0, 2.0, float(i)])}

    @instrument.training_stage("finetune", summary={"loss": "min,max,mean", "lr": "none"})
    def finetune(i):
        instrument.log({"loss": 0.5 - 0.1 * i, "lr": 0.1}, step=i)

    @instrument.eval_summary(prefix="eval")
    def evaluate():
        return {
            "nrmse": 0.09,
            "missing": float("nan"),
            "unbounded": float("inf"),
            "scores": instrument.Table(["metric", "value"], [["a", 1], ["b", 2]]),
            "model": instrument.Artifact("model.bin", type="model", aliases=("best",)),
        }

    pathlib.Path("model.bin").write_bytes(b"weights")
    pathlib.Path("notes").mkdir(exist_ok=True)
    pathlib.Path("notes/run.txt").write_text("notes")
    config()
    for i in range(3):
        pretrain(i)
    evaluate()
    for i in range(3):
        finetune(i)
    context = instrument.current()
    context.log_image("viz/sample", np.zeros((4, 6, 3), dtype=np.uint8), caption="zeros")
    context.update_config({"model": {"dropout": 0.1}})
    context.save_file("notes/run.txt", policy="end")
    context.save_file("notes/run.txt", base_path="notes")
    context.alert("done", "all stages ran", level="INFO")
    """
)

_INTERNAL = ("_runtime", "_timestamp", "_wandb")


def _plain(value: Any) -> Any:
    """Return *value* comparable between the two backends: media by type and size, NaN as a string."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        kind = value.get("_type")
        if kind in ("table", "table-file"):
            return ("table", value.get("nrows", len(value.get("rows", []))),
                    value.get("ncols", len(value.get("columns", []))))
        if kind in ("image", "image-file"):
            return ("image", value.get("width"), value.get("height"), value.get("caption"))
        if kind == "histogram":
            return ("histogram",)
        return {k: _plain(v) for k, v in value.items() if k not in _INTERNAL}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _summary(summary: dict[str, Any]) -> dict[str, Any]:
    # wandb folds its own _step/_runtime into the summary; a user's keys are what matter.
    return {k: v for k, v in _plain(summary).items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The scenario's run as real wandb wrote it offline, read back from its .wandb file."""
    from instrument.runfile import read_runs

    root = tmp_path_factory.mktemp("parity")
    run_script(root, SCENARIO)
    (run,) = read_runs(root / "wandb")
    return run


@pytest.fixture
def recorded_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordedRun:
    """The scenario's run as the recording kept it."""
    monkeypatch.chdir(tmp_path)
    with recording() as recorded, pytest.warns(InstrumentationWarning, match="'eval/missing' is NaN"):
        exec(compile(SCENARIO, "scenario.py", "exec"), {})
    return recorded.run()


@pytest.mark.integration
@pytest.mark.slow
class TestParityWithWandb:
    """The recording keeps what wandb keeps, in the same shapes."""

    def test_history(self, wandb_run: Any, recorded_run: RecordedRun) -> None:
        """History rows (keys, values, stage steps and _step) are the same."""
        assert _plain(wandb_run.history) == _plain(recorded_run.history)

    def test_summary(self, wandb_run: Any, recorded_run: RecordedRun) -> None:
        """Summary values are the same: aggregation dicts, a missing "none" key, NaN as None."""
        assert _summary(wandb_run.summary) == _summary(recorded_run.summary)
        assert {"min": 1.0} == recorded_run.summary["pretrain/loss"]
        assert "finetune/lr" not in recorded_run.summary
        assert recorded_run.summary["eval/missing"] is None

    def test_series(self, wandb_run: Any, recorded_run: RecordedRun) -> None:
        """A stage's series reads on its own step axis in both."""
        for key in ("pretrain/loss", "finetune/loss"):
            assert wandb_run.series(key) == recorded_run.series(key)
        assert [0, 1, 2] == [step for step, _ in recorded_run.series("finetune/loss")]

    def test_config(self, wandb_run: Any, recorded_run: RecordedRun) -> None:
        """Config is the same, nesting kept and merged."""
        assert wandb_run.config == recorded_run.config

    def test_files_alerts_artifacts(self, wandb_run: Any, recorded_run: RecordedRun) -> None:
        """Saved files carry wandb's names and policies; alerts and artifacts match."""
        recorded_files = [{"path": f["path"], "policy": f["policy"]} for f in recorded_run.files]
        assert [{"path": "notes/run.txt", "policy": "end"}, {"path": "run.txt", "policy": "now"}] == recorded_files
        assert all(f in wandb_run.files for f in recorded_files)
        assert wandb_run.alerts == recorded_run.alerts
        user_artifacts = [a for a in wandb_run.artifacts if a["type"] != "run_table"]
        # wandb adds "latest" to the aliases, in no fixed order.
        assert [(a["name"], a["type"], sorted(a["aliases"])) for a in user_artifacts] == [
            (a["name"], a["type"], sorted(a["aliases"])) for a in recorded_run.artifacts
        ]

    def test_linkage_and_exit(self, wandb_run: Any, recorded_run: RecordedRun) -> None:
        """Project, group, job type, tags and exit code match."""
        assert (wandb_run.project, wandb_run.group or None, wandb_run.job_type or None, wandb_run.tags,
                wandb_run.exit_code) == (recorded_run.project, recorded_run.group, recorded_run.job_type,
                                         recorded_run.tags, recorded_run.exit_code)


def _run() -> RecordedRun:
    return RecordedRun(RunSpec(id="r1", project="p"))


def test_summary_update_makes_no_history_row() -> None:
    """A summary update sets the summary and adds no history row; a log does both."""
    run = _run()
    run.update_summary({"eval/nrmse": 0.09})
    run.log({"loss": 1.0})
    assert [{"loss": 1.0, "_step": 0}] == run.history
    assert {"eval/nrmse": 0.09, "loss": 1.0} == run.summary


def test_summary_ops_shape_the_summary() -> None:
    """define_metric(summary=...) turns the summary value into wandb's dict, or drops it for none."""
    run = _run()
    run.define_metric("a", "s/step", "min,max,mean")
    run.define_metric("b", "s/step", "last")
    run.define_metric("c", "s/step", "first")
    run.define_metric("d", "s/step", "none")
    for value in (3, 1, 2):
        run.log({"a": value, "b": value, "c": value, "d": value})
    assert {"a": {"min": 1, "max": 3, "mean": 2.0}, "b": {"last": 2}, "c": {"first": 3}} == run.summary


def test_reads_are_snapshots() -> None:
    """What a test read stays as it was: later writes and edits to the result change nothing."""
    run = _run()
    row = {"loss": 1.0, "nested": {"a": [1, 2]}}
    run.log(row)
    history, summary, config = run.history, run.summary, run.config
    row["nested"]["a"].append(3)
    run.log({"loss": 2.0})
    run.update_config({"lr": 1})
    history[0]["loss"] = 99
    assert [{"loss": 1.0, "nested": {"a": [1, 2]}, "_step": 0}] == [row for row in run.history if row["_step"] == 0]
    assert ({"loss": 1.0, "nested": {"a": [1, 2]}}, {}, 1) == (summary, config, len(history))


def test_nan_in_summary_is_none_and_kept_in_history() -> None:
    """NaN set in the summary reads back as None (wandb's null); NaN logged stays NaN in history."""
    run = _run()
    run.update_summary({"x": float("nan")})
    run.log({"y": float("nan")})
    assert run.summary["x"] is None
    assert math.isnan(run.history[0]["y"])


def test_media_are_kept_by_key() -> None:
    """Tables and images are listed by key whether logged to history or to the summary."""
    pytest.importorskip("numpy")
    import numpy as np

    run = _run()
    run.log({"t": instrument.Table(["a"], [[1]])})
    run.update_summary({"t": instrument.Table(["a"], [[2]]), "img": instrument.Image(np.zeros((2, 3), np.uint8))})
    assert [[[1]], [[2]]] == [t["rows"] for t in run.tables["t"]]
    assert [{"_type": "image", "width": 3, "height": 2, "caption": None}] == run.images["img"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda run: run.save("absent.txt", None, "now"), "no file matches"),
        (lambda run: run.save(__file__, None, "sometimes"), "policy 'sometimes'"),
        (lambda run: run.save(__file__, "/nowhere/else", "now"), "not a prefix"),
        (lambda run: run.log_artifact("absent.bin", "model", "m", ()), "no such file"),
        (lambda run: run.alert("t", "x", "LOUD"), "level 'LOUD'"),
    ],
)
def test_rejects_what_wandb_rejects(call: Any, message: str) -> None:
    """A call wandb would reject (or silently drop) is a ValueError, and records nothing."""
    run = _run()
    with pytest.raises(ValueError, match=message):
        call(run)
    assert ([], [], []) == (run.files, run.artifacts, run.alerts)


def test_rejection_is_an_instrumentation_error_in_strict_mode(tmp_path: Path) -> None:
    """Under a strict recording a rejected call fails the caller with the function's name."""
    with recording(strict=True), pytest.raises(InstrumentationError, match=r"WandBContext.alert.*level 'LOUD'"):
        instrument.current().alert("t", level="LOUD")


def test_rejection_warns_once_when_lenient() -> None:
    """Under a lenient recording a rejected call warns and the code goes on."""
    with recording(strict=False) as recorded, pytest.warns(InstrumentationWarning, match="no file matches"):
        instrument.current().save_file("absent.txt")
        instrument.current().log_eval_summary({"nrmse": 0.1})
    assert ([], {"eval/nrmse": 0.1}) == (recorded.run().files, recorded.run().summary)


def test_unconvertible_image_costs_only_itself() -> None:
    """An image array wandb cannot convert is left out of its row, which lands; the error names it."""
    np = pytest.importorskip("numpy")
    run = _run()
    with pytest.raises(ValuesDropped, match=r"'img'.*shape"):
        run.log({"img": instrument.Image(np.zeros((2, 3, 5), np.uint8)), "loss": 1.0})
    assert [{"loss": 1.0, "_step": 0}] == run.history


def test_backend_lists_runs_in_creation_order() -> None:
    """The backend keeps every run it started, in order; it never adopts a foreign run."""
    backend = RecordingBackend()
    first, second = backend.start(RunSpec(id="a")), backend.start(RunSpec(id="b"))
    assert ([first, second], None, True) == (backend.runs, backend.adopt(), backend.synchronous)


def test_repr_is_readable() -> None:
    """A run's repr names its id, linkage, row count, summary keys and state."""
    run = RecordedRun(RunSpec(id="r1", project="p", group="g", job_type="train", tags=("parent:x",)))
    run.log({"loss": 1.0})
    run.finish(0)
    assert ("<RecordedRun r1 project='p' group='g' job_type='train' tags=['parent:x'] history=1 row "
            "summary=['loss'] finished, exit_code=0>") == repr(run)


def test_reprs_count_in_the_singular_and_plural() -> None:
    """One row, one run are singular; two are plural."""
    with recording() as recorded:
        instrument.log({"loss": 1.0})
    assert "history=1 row " in repr(recorded.run())
    assert repr(recorded).startswith("<Recording of 1 run\n")
    assert "<RecordingBackend 1 run>" == repr(recorded.backend)
    run = recorded.run()
    run.log({"loss": 2.0})
    assert "history=2 rows " in repr(run)


def test_series_of_a_key_never_logged_raises_listing_the_keys_that_were() -> None:
    """``series("typo")`` raises KeyError naming the key and listing the logged keys, instead of ``[]``."""
    with recording() as recorded:
        instrument.training_stage("operator")(lambda: {"loss": 1.0})()
    with pytest.raises(KeyError) as caught:
        recorded.run().series("operator/los")
    assert ("'operator/los' was never logged to the history of run "
            f"{recorded.run().id}; the keys logged are ['operator/loss', 'operator/step']") == caught.value.args[0]


def test_save_names_files_as_wandb_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths keep their folders, base_path is cut off, an absolute path keeps one folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    for name in ("a.pt", "b.pt"):
        (tmp_path / "ckpt" / name).write_text(name)
    run = _run()
    run.save("ckpt/a.pt", None, "now")
    run.save(str(tmp_path / "ckpt" / "*.pt"), str(tmp_path), "end")
    run.save(str(tmp_path / "ckpt" / "b.pt"), None, "live")
    assert [("ckpt/a.pt", "now"), ("ckpt/a.pt", "end"), ("ckpt/b.pt", "end"), ("ckpt/b.pt", "live")] == [
        (f["path"], f["policy"]) for f in run.files
    ]
    assert os.fspath(tmp_path / "ckpt" / "a.pt") == run.files[0]["source"]
