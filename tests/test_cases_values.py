"""Cases C16, C17 and C18 on real wandb offline, each with its right value read back from the run.

C16: one bad value beside good ones costs only itself. C17: dotted and integer keys land with
their exact names. C18: settings objects, figures and wandb's charts land as wandb stores them.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from helpers import run_script

from instrument.runfile import RunFile, read_runs

pytestmark = pytest.mark.integration


def _one_run(root: pathlib.Path) -> RunFile:
    (run,) = read_runs(root / "wandb")
    return run


def _media_file(run: RunFile, media: dict[str, Any]) -> Any:
    return json.loads((run.path.parent / "files" / media["path"]).read_text())


def _warnings(root: pathlib.Path) -> list[str]:
    return list(json.loads((root / "warnings.json").read_text()))


C16 = """
import json, os, warnings
import torch, wandb
import instrument

@instrument.training_stage("operator")
def step(value):
    return value

page = wandb.Html("<b>gone</b>")
os.remove(page._path)  # a wandb object whose file went away: wandb's own log fails on it
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    step({"loss": 0.5, "preds": instrument.Table(["id", "pred"], [[0, 3], [1, "cat"]])})
    step({"loss": 0.5, "grad": torch.linspace(-1.0, 1.0, 100).to(torch.bfloat16)})
    step({"meter": object()})  # every value dropped: the call uses no step
    step({"loss": 0.25, "meter": object()})
    step({"loss": 0.125, "page": page})
    instrument.finish()
json.dump([str(w.message) for w in seen], open("warnings.json", "w"))
"""


@pytest.fixture(scope="module")
def c16(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFile, list[str]]:
    """C16 written by real wandb offline: the run and the warnings."""
    root = tmp_path_factory.mktemp("c16")
    run_script(root, C16)
    return _one_run(root), _warnings(root)


def test_c16_every_loss_lands_on_its_own_step(c16: tuple[RunFile, list[str]]) -> None:
    """The loss beside a mixed table, a bf16 tensor, a dropped object and a failing wandb value lands,
    and the call whose values were all dropped uses no step."""
    run, _ = c16
    assert [(0, 0.5), (1, 0.5), (2, 0.25), (3, 0.125)] == run.series("operator/loss")


def test_c16_the_mixed_table_lands_with_both_rows(c16: tuple[RunFile, list[str]]) -> None:
    """A table whose column mixes ints and strings lands whole, as wandb stores a mixed-type table."""
    run, _ = c16
    ((step, table),) = run.series("operator/preds")
    assert (0, "table-file", [[0, 3], [1, "cat"]]) == (step, table["_type"], _media_file(run, table)["data"])


def test_c16_the_bf16_tensor_is_a_histogram_of_its_values(c16: tuple[RunFile, list[str]]) -> None:
    """A 1-D bfloat16 tensor becomes a histogram of its float32 values (all 100 counted)."""
    run, _ = c16
    ((step, grad),) = run.series("operator/grad")
    assert (1, "histogram", 100, -1.0, 1.0) == (step, grad["_type"], sum(grad["values"]), grad["bins"][0],
                                               grad["bins"][-1])


def test_c16_each_dropped_value_is_named_with_function_key_type_and_reason(c16: tuple[RunFile, list[str]]) -> None:
    """Every dropped value gets a warning naming the function, the full key, the type and the reason."""
    run, warned = c16
    meters = [m for m in warned if "key 'operator/meter'" in m]
    pages = [m for m in warned if "key 'operator/page'" in m]
    assert (2, True, 1, True) == (
        len(meters), all(m.startswith("instrument: step: ") and "builtins.object" in m and "dropped" in m
                         for m in meters),
        len(pages), all("wandb" in m and "Html" in m and "FileNotFoundError" in m and "dropped" in m for m in pages),
    )
    assert not any("operator/meter" in row or "operator/page" in row for row in run.history)


C17 = """
import instrument

@instrument.training_stage("operator", summary={"top1.acc": "max"})
def train(value):
    return {"top1.acc": value}

@instrument.training_stage("phase1.warmup")
def warm(i):
    return {"loss": 1.0 / (i + 1)}

@instrument.eval_summary(prefix="eval")
def evaluate():
    return {"recall": {0: 1.0, 1: 0.5}}

for value in (0.5, 0.9, 0.7):
    train(value)
warm(0)
warm(1)
evaluate()
instrument.finish()
"""


@pytest.fixture(scope="module")
def c17(tmp_path_factory: pytest.TempPathFactory) -> RunFile:
    """C17 written by real wandb offline."""
    root = tmp_path_factory.mktemp("c17")
    run_script(root, C17)
    return _one_run(root)


def test_c17_a_dotted_key_keeps_its_summary_aggregation(c17: RunFile) -> None:
    """``summary={"top1.acc": "max"}`` over 0.5, 0.9, 0.7 gives ``{"max": 0.9}``, on the stage's axis."""
    assert ({"max": 0.9}, [(0, 0.5), (1, 0.9), (2, 0.7)]) == (c17.summary["operator/top1.acc"],
                                                                c17.series("operator/top1.acc"))


def test_c17_a_dotted_stage_name_adds_no_stray_key(c17: RunFile) -> None:
    """A stage named ``phase1.warmup`` keeps its points on its axis and writes no ``phase1`` key."""
    stray = [row for row in c17.history if "phase1" in row] + (["summary"] if "phase1" in c17.summary else [])
    assert ([], [(0, 1.0), (1, 0.5)]) == (stray, c17.series("phase1.warmup/loss"))


def test_c17_integer_keys_become_path_segments(c17: RunFile) -> None:
    """Per-class results keyed by int land as ``eval/recall/0`` and ``eval/recall/1``."""
    assert (1.0, 0.5) == (c17.summary["eval/recall/0"], c17.summary["eval/recall/1"])


C18 = """
import argparse, json
import matplotlib
matplotlib.use("Agg")
from matplotlib.figure import Figure
import wandb
import instrument

@instrument.run_config
def settings():
    return argparse.Namespace(bs=16, lr=0.01)

def chart():
    table = wandb.Table(columns=["x", "y"], data=[[1, 1], [2, 4], [3, 9]])
    return wandb.plot.line(table, "x", "y", title="y over x")

@instrument.eval_summary(prefix="eval")
def evaluate():
    figure = Figure(figsize=(2, 1.5), dpi=50)
    figure.add_subplot().plot([1, 2, 3])
    return {"figure": figure, "curve": chart()}

settings()
evaluate()
instrument.finish()
raw = wandb.init(project="raw", id="rawchart", mode="offline")
raw.log({"eval/curve": chart()})
raw.finish()
"""


@pytest.fixture(scope="module")
def c18(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFile, RunFile]:
    """C18 written by real wandb offline, and the same chart logged with raw ``run.log``."""
    root = tmp_path_factory.mktemp("c18")
    run_script(root, C18)
    runs = read_runs(root / "wandb")
    (raw,) = [run for run in runs if run.run_id == "rawchart"]
    (ours,) = [run for run in runs if run.run_id != "rawchart"]
    return ours, raw


def test_c18_a_namespace_config_is_its_attributes(c18: tuple[RunFile, RunFile]) -> None:
    """``@run_config`` returning ``argparse.Namespace(bs=16, lr=0.01)`` gives config ``bs == 16``."""
    ours, _ = c18
    assert (16, 0.01) == (ours.config["bs"], ours.config["lr"])


def test_c18_a_figure_is_an_image_in_the_summary(c18: tuple[RunFile, RunFile]) -> None:
    """A matplotlib figure from an eval is a PNG image (100x75 pixels) in the summary, not in history."""
    ours, _ = c18
    figure = ours.summary["eval/figure"]
    assert ("image-file", 100, 75, False) == (figure["_type"], figure["width"], figure["height"],
                                              any("eval/figure" in row for row in ours.history))


def test_c18_a_chart_lands_as_run_log_stores_it(c18: tuple[RunFile, RunFile]) -> None:
    """A ``wandb.plot.line`` chart from an eval stores its table and chart spec as ``run.log`` does."""
    ours, raw = c18
    table, raw_table = ours.summary["eval/curve_table"], raw.summary["eval/curve_table"]
    assert (raw.charts["eval/curve"], _media_file(raw, raw_table)) == (ours.charts["eval/curve"],
                                                                      _media_file(ours, table))
    assert not any("eval/curve_table" in row for row in ours.history)
