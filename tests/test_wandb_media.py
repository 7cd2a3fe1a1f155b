"""Every row of docs/values.md, against real wandb offline, read back from the .wandb file.

One subprocess writes a standalone run with a value of every kind (decorators and the imperative
``WandBContext``); the tests read its ``.wandb`` file and its files folder.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import pytest
from helpers import run_script

from instrument.runfile import RunFile, read_runs

pytestmark = pytest.mark.integration

SCRIPT = """
import json, math, pathlib, warnings

import numpy as np
import pandas as pd
import wandb
from PIL import Image as PILImage

import instrument

warnings.simplefilter("always")
caught = warnings.catch_warnings(record=True)
seen = caught.__enter__()


class FakeTensor:  # a stand-in for a torch tensor (routing duck-types on the module name)
    def __init__(self, data):
        self._array = np.asarray(data)
        self.shape = tuple(self._array.shape)
    def item(self):
        return self._array.item()
    def detach(self):
        return self
    def cpu(self):
        return self
    def numpy(self):
        return self._array


FakeTensor.__module__ = "torch"


class Meter:
    pass


out = pathlib.Path("out")
(out / "sub").mkdir(parents=True)
(out / "sub" / "report.txt").write_text("now v1")
(out / "final.txt").write_text("end v1")
(out / "model.pt").write_bytes(b"weights v1")
(out / "imperative.txt").write_text("imperative")
(out / "live.log").write_text("live v1")
(out / "ckpt").mkdir()
(out / "ckpt" / "w.bin").write_bytes(b"w")


@instrument.run_config
def make_config():
    return {"model": {"width": 64, "root": pathlib.Path("data/x")}, "sizes": (1, 2)}


@instrument.training_stage("operator", summary={"loss": "min"})
def train():
    for i in range(3):
        yield {
            "loss": 1.0 / (i + 1),
            "acc": np.float32(0.5),
            "n": np.int64(3),
            "t": FakeTensor(0.25),
            "flag": True,
            "phase": "warmup",
            "grad": {"norm": {"l2": 2.0}},
            "weights": np.arange(10.0) + i,
            "tensor_hist": FakeTensor(np.arange(4.0)),
            "sample": np.full((4, 4, 3), 10 * i, np.uint8),
            "rows": instrument.Table(["i"], [[i]]),
            "final": instrument.Summary({"best": 0.1}),
            "bad": np.zeros((4, 4)),
        }


@instrument.training_stage("c10")
def c10():
    return {"loss": math.nan, "gnorm": math.inf, "meter": Meter(), "ok": 1.0}


@instrument.eval_summary(prefix="eval")
def evaluate():
    return {
        "nrmse": 0.09,
        "note": "fine",
        "metrics": instrument.Table(["metric", "value"], [["nrmse", 0.09], ["mse", 0.001]]),
        "compare": pd.DataFrame({"model": ["baseline", "candidate"], "nrmse": [0.78, 0.09]}),
        "native": wandb.Table(columns=["k"], data=[["v"]]),
        "pred": instrument.Image(np.linspace(0, 1, 3 * 8 * 9).reshape(3, 8, 9), caption="pred"),
        "batch": instrument.Image(np.stack([np.full((5, 5, 3), v, np.uint8) for v in (0, 99)])),
        "pil": PILImage.new("RGB", (6, 7), (255, 0, 0)),
        "wimg": wandb.Image(np.full((3, 3), 7, np.uint8), caption="native"),
        "grey": np.zeros((6, 5), np.uint8),
        "hist": np.arange(100.0),
        "report": pathlib.Path("out/sub/report.txt"),
        "final": instrument.File("out/final.txt", policy="end", base_path="out"),
        "live": instrument.File("out/live.log", policy="live"),
        "ckpt": instrument.Artifact("out/model.pt", aliases=("best",)),
        "config": instrument.Config({"samples": 8, "tau": 0.5}),
        "curve": instrument.Series({"point": 0.5}),
        "alert": instrument.Alert("Eval done", "nrmse 0.09", "INFO"),
    }


@instrument.eval_summary(prefix="eval_b")
def evaluate_b():
    return {"nrmse": 0.2, "config": instrument.Config({"samples": 16})}


make_config()
list(train())
c10()
evaluate()
evaluate_b()
context = instrument.current()
context.update_config({"top": 1})
context.log_table("ctx/table", ["a", "b"], [[1, 2]])
context.log_image("ctx/image", np.zeros((2, 3), np.float32), caption="ctx")
context.save_file("out/imperative.txt")
context.log_artifact("out/ckpt", type="checkpoint", name="ckpt-dir")
context.alert("Ctx alert", "body", "ERROR")
context.log_eval_summary({"nrmse": 0.5}, prefix="ctx")
(out / "sub" / "report.txt").write_text("now v2")
(out / "final.txt").write_text("end v2")
(out / "live.log").write_text("live v2")
caught.__exit__(None, None, None)
print(json.dumps([str(w.message) for w in seen]))
"""


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFile, pathlib.Path, list[str]]:
    """Run the script once: return the run, its files folder and the warnings it printed."""
    root = tmp_path_factory.mktemp("media")
    result = run_script(root, SCRIPT)
    (run,) = read_runs(root / "wandb")
    return run, run.path.parent / "files", json.loads(result.stdout.strip().splitlines()[-1])


def rows_with(run: RunFile, key: str) -> list[dict[str, Any]]:
    """History rows holding *key*."""
    return [row for row in run.history if key in row]


@pytest.mark.slow
def test_stage_numbers_are_series_points_on_the_stage_axis(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """Stage numbers (numpy, tensor, bool too; C09) are history points on operator/step; strings are summary."""
    run, _, _ = written
    assert [(0, 1.0), (1, 0.5), (2, 1 / 3)] == run.series("operator/loss")
    assert [0.5, 3, 0.25, True, 2.0] == [run.history[0][k] for k in
                                          ("operator/acc", "operator/n", "operator/t", "operator/flag",
                                           "operator/grad/norm/l2")]
    assert "operator/step" == next(m["step_metric"] for m in run.metrics if m["name"] == "operator/loss")
    assert [] == rows_with(run, "operator/phase")
    assert "warmup" == run.summary["operator/phase"]


@pytest.mark.slow
def test_summary_aggregation_is_declared_by_define_metric(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """training_stage(summary={"loss": "min"}) makes the summary value {"min": ...}."""
    run, _, _ = written
    assert {"min": 1 / 3} == run.summary["operator/loss"]
    assert ["min"] == next(m["summary"] for m in run.metrics if m["name"] == "operator/loss")


@pytest.mark.slow
def test_stage_media_are_logged_on_the_stage_axis(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """A stage's histogram, image and table are history values on operator/step, files in media/."""
    run, files, _ = written
    rows = rows_with(run, "operator/sample")
    assert [0, 1, 2] == [row["operator/step"] for row in rows]
    assert ["histogram", "histogram", "image-file", "table-file"] == [rows[0][k]["_type"] for k in (
        "operator/weights", "operator/tensor_hist", "operator/sample", "operator/rows")]
    assert (files / rows[2]["operator/sample"]["path"]).is_file()
    assert (files / rows[2]["operator/rows"]["path"]).is_file()
    assert 0.1 == run.summary["operator/final/best"] and [] == rows_with(run, "operator/final/best")


@pytest.mark.slow
def test_c10_nan_inf_kept_and_objects_reported(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """C10: NaN and inf land as they are, the object is dropped with a warning naming key and type, ok lands."""
    run, _, warned = written
    (row,) = rows_with(run, "c10/ok")
    assert math.isnan(row["c10/loss"]) and math.inf == row["c10/gnorm"] and 1.0 == row["c10/ok"]
    assert "c10/meter" not in row
    assert 1 == sum("'c10/meter'" in w and "Meter" in w and "c10" in w for w in warned)
    assert 1 == sum("'c10/loss'" in w for w in warned) and 1 == sum("'c10/gnorm'" in w for w in warned)


@pytest.mark.slow
def test_eval_scalars_strings_and_media_are_summary_only(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """An eval's numbers, string, tables, images and histogram land in the summary and never in history."""
    run, files, _ = written
    summary = run.summary
    assert (0.09, "fine", 0.2) == (summary["eval/nrmse"], summary["eval/note"], summary["eval_b/nrmse"])
    for key in ("eval/nrmse", "eval/metrics", "eval/pred", "eval/hist"):
        assert [] == rows_with(run, key)
    media = {key: summary[f"eval/{key}"]["_type"] for key in
             ("metrics", "compare", "native", "pred", "batch", "pil", "wimg", "grey", "hist")}
    assert {"metrics": "table-file", "compare": "table-file", "native": "table-file", "pred": "image-file",
            "batch": "images/separated", "pil": "image-file", "wimg": "image-file", "grey": "image-file",
            "hist": "histogram"} == media
    assert (9, 8, "pred") == (summary["eval/pred"]["width"], summary["eval/pred"]["height"],
                              summary["eval/pred"]["caption"])
    assert 2 == summary["eval/batch"]["count"]
    for name in summary["eval/batch"]["filenames"]:
        assert (files / name).is_file()


@pytest.mark.slow
def test_tables_hold_their_rows(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """The metrics table and the DataFrame comparison are stored with their columns and rows."""
    run, files, _ = written
    metrics = json.loads((files / run.summary["eval/metrics"]["path"]).read_text())
    compare = json.loads((files / run.summary["eval/compare"]["path"]).read_text())
    assert (["metric", "value"], [["nrmse", 0.09], ["mse", 0.001]]) == (metrics["columns"], metrics["data"])
    assert (["model", "nrmse"], [["baseline", 0.78], ["candidate", 0.09]]) == (compare["columns"], compare["data"])
    assert {"run_table"} == {a["type"] for a in run.artifacts if a["name"].startswith("run-")}


@pytest.mark.slow
def test_saved_files_are_copies_under_their_relative_paths(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """A Path is saved now as a copy (later changes do not show), an end file holds its final contents, a live
    file stays wandb's symlink that follows the file."""
    run, files, _ = written
    saved = {f["path"]: f["policy"] for f in run.files if not f["path"].startswith("media/")}
    assert {"out/sub/report.txt": "now", "final.txt": "end", "out/imperative.txt": "now",
            "out/live.log": "live"}.items() <= saved.items()
    assert (False, False, True) == tuple((files / name).is_symlink() for name in
                                         ("out/sub/report.txt", "final.txt", "out/live.log"))
    assert ("now v1", "end v2", "live v2") == tuple((files / name).read_text() for name in
                                                    ("out/sub/report.txt", "final.txt", "out/live.log"))


@pytest.mark.slow
def test_artifacts_are_logged(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """Artifact markers and WandBContext.log_artifact log artifacts with type, name, aliases and content."""
    run, _, _ = written
    logged = {a["name"]: a for a in run.artifacts if not a["name"].startswith("run-")}
    assert ("model", ["best", "latest"], ["model.pt"]) == (
        logged["model"]["type"], sorted(logged["model"]["aliases"]), logged["model"]["manifest_entries"])
    assert ("checkpoint", ["w.bin"]) == (logged["ckpt-dir"]["type"], logged["ckpt-dir"]["manifest_entries"])


@pytest.mark.slow
def test_config_keeps_nesting_and_evals_never_collide(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """run_config and update_config write at the top level; each eval's Config nests under its prefix."""
    run, _, _ = written
    assert {"model": {"width": 64, "root": "data/x"}, "sizes": [1, 2], "top": 1,
            "eval": {"samples": 8, "tau": 0.5}, "eval_b": {"samples": 16}} == run.config
    assert not any(k.startswith(("eval/samples", "samples")) for k in run.summary)


@pytest.mark.slow
def test_eval_series_is_a_point_on_the_eval_axis(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """An eval's Series marker is a history point on eval/step."""
    run, _, _ = written
    assert [(0, 0.5)] == run.series("eval/curve/point")
    assert "eval/step" == next(m["step_metric"] for m in run.metrics if m["name"] == "eval/curve/point")


@pytest.mark.slow
def test_alerts_are_sent(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """Alert markers and WandBContext.alert write alert records."""
    run, _, _ = written
    assert [{"title": "Eval done", "text": "nrmse 0.09", "level": "INFO"},
            {"title": "Ctx alert", "text": "body", "level": "ERROR"}] == run.alerts


@pytest.mark.slow
def test_wandb_context_uses_the_same_rules(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """WandBContext's table, image and eval summary land in the summary like the decorators' values."""
    run, _, _ = written
    assert ("table-file", "image-file", "ctx", 0.5) == (
        run.summary["ctx/table"]["_type"], run.summary["ctx/image"]["_type"], run.summary["ctx/image"]["caption"],
        run.summary["ctx/nrmse"])
    assert [] == rows_with(run, "ctx/table")


@pytest.mark.slow
def test_unguessed_array_warns_with_key_shape_and_dtype(written: tuple[RunFile, pathlib.Path, list[str]]) -> None:
    """The float 2-D array was not logged; the warning names function, key, shape, dtype and suggests Image/Table."""
    run, _, warned = written
    assert [] == rows_with(run, "operator/bad")
    (message,) = {w for w in warned if "'operator/bad'" in w}
    for word in ("train", "(4, 4)", "float64", "instrument.Image", "instrument.Table"):
        assert word in message
