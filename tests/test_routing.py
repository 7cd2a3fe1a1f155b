"""Pure unit tests of instrument._routing: every row of docs/values.md."""

from __future__ import annotations

import dataclasses
import decimal
import fractions
import math
import os
import pathlib
import subprocess
import sys
from typing import Any

import attrs
import numpy as np
import pytest
from stand_ins import FakeTensor

import instrument
from instrument._config import plain_config
from instrument._kinds import as_number, as_step
from instrument._records import ConfigUpdate, DeclareChart, LogArtifact, Point, SaveFile, SendAlert, SummaryUpdate
from instrument._routing import Routed, route


def stage(value: Any, **kwargs: Any) -> Routed:
    """Route *value* as a training stage ``operator`` returned it."""
    return route(value, role="series", prefix="operator", function="train", **kwargs)


def evaluation(value: Any) -> Routed:
    """Route *value* as an eval with prefix ``eval`` returned it."""
    return route(value, role="summary", prefix="eval", function="evaluate")


def only(routed: Routed, kind: type) -> Any:
    """Return the one record of *kind*, asserting there is exactly one."""
    found = [r for r in routed.records if isinstance(r, kind)]
    assert 1 == len(found), routed
    return found[0]


def kinds(routed: Routed) -> list[str]:
    """Return the record class names in order."""
    return [type(r).__name__ for r in routed.records]


# -- numbers, strings, mappings -------------------------------------------------------------


def test_stage_numbers_are_one_point_on_the_stage_axis() -> None:
    """int, float, bool, numpy scalars, a 0-d array and a 0-d tensor from a stage are one point."""
    routed = stage({"i": 3, "f": 0.5, "b": True, "n32": np.float32(0.25), "n64": np.int64(7),
                    "zero_d": np.array(1.5), "t": FakeTensor(2.5)})
    point = only(routed, Point)
    assert {"operator/i": 3, "operator/f": 0.5, "operator/b": True, "operator/n32": 0.25, "operator/n64": 7,
            "operator/zero_d": 1.5, "operator/t": 2.5} == point.values
    assert ("operator", None) == (point.axis, point.step)
    assert [type(v) for v in point.values.values()] == [int, float, bool, float, int, float, float]
    assert () == routed.problems


def test_eval_numbers_are_owned_summary_keys() -> None:
    """Numbers from an eval become summary keys the eval owns; no point."""
    routed = evaluation({"nrmse": 0.09, "count": np.int64(4)})
    assert ["SummaryUpdate"] == kinds(routed)
    assert SummaryUpdate(values={"eval/nrmse": 0.09, "eval/count": 4}, owned=True) == routed.records[0]


def test_strings_go_to_the_summary_from_a_stage_too() -> None:
    """A string from a stage lands in the summary, never in the point (W&B does not chart strings)."""
    routed = stage({"loss": 0.1, "phase": "warmup"})
    assert {"operator/loss": 0.1} == only(routed, Point).values
    assert {"operator/phase": "warmup"} == only(routed, SummaryUpdate).values


def test_nested_mappings_flatten_with_slashes() -> None:
    """A nested mapping becomes keys ``prefix/a/b/c``."""
    routed = evaluation({"a": {"b": {"c": 1}, "d": 2}})
    assert {"eval/a/b/c": 1, "eval/a/d": 2} == only(routed, SummaryUpdate).values


def test_a_bare_number_is_prefix_value() -> None:
    """A bare returned number lands as ``<prefix>/value``."""
    assert {"operator/value": 0.5} == only(stage(0.5), Point).values


def test_step_key_of_a_stage_mapping_is_the_point_step() -> None:
    """A ``step`` key sets the point's step and is not a metric."""
    point = only(stage({"step": np.int64(10), "loss": 1.0}), Point)
    assert (10, {"operator/loss": 1.0}) == (point.step, point.values)


def test_summary_aggregation_is_carried_with_full_keys() -> None:
    """A stage's summary ops travel with the point under the prefixed key."""
    point = only(stage({"loss": 1.0}, summary={"loss": "min"}), Point)
    assert {"operator/loss": "min"} == point.summary


# -- tables ---------------------------------------------------------------------------------


def test_table_from_a_stage_is_on_the_stage_axis_and_from_an_eval_in_the_summary() -> None:
    """An instrument.Table lands under prefix/key: in the stage's point, or in the eval's summary."""
    table = instrument.Table(["metric", "value"], [["nrmse", np.float32(0.5)]])
    from_stage = only(stage({"t": table}), Point).values["operator/t"]
    from_eval = only(evaluation({"t": table}), SummaryUpdate).values["eval/t"]
    assert from_stage == from_eval == instrument.Table(["metric", "value"], [["nrmse", 0.5]])
    assert float is type(from_eval.rows[0][1])


def test_pandas_dataframe_is_a_table() -> None:
    """A pandas DataFrame becomes a Table with its columns and rows (plain numbers)."""
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"model": ["baseline", "candidate"], "nrmse": [0.78, 0.09]})
    table = only(evaluation({"cmp": frame}), SummaryUpdate).values["eval/cmp"]
    assert instrument.Table(["model", "nrmse"], [["baseline", 0.78], ["candidate", 0.09]]) == table


def test_wandb_table_passes_through_as_a_table() -> None:
    """A wandb.Table is kept as it is, under prefix/key."""
    import wandb

    table = wandb.Table(columns=["a"], data=[[1]])
    assert table is only(evaluation({"t": table}), SummaryUpdate).values["eval/t"]


def test_table_cells_of_no_known_type_are_stored_as_text_with_a_warning() -> None:
    """A cell of an unknown type is kept as its str() and the problem names column and type."""
    routed = evaluation({"t": instrument.Table(["when"], [[pathlib.PurePosixPath("/x")]])})
    assert instrument.Table(["when"], [["/x"]]) == only(routed, SummaryUpdate).values["eval/t"]
    assert 1 == len(routed.problems)
    assert "'when'" in routed.problems[0].message and "PurePosixPath" in routed.problems[0].message


def test_table_with_a_ragged_row_is_refused_at_construction() -> None:
    """A row whose length differs from the columns raises ValueError naming the row."""
    with pytest.raises(ValueError, match="row 1 has 1 values for 2 columns"):
        instrument.Table(["a", "b"], [[1, 2], [3]])


# -- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "shape"),
    [
        (np.zeros((4, 5), np.uint8), (4, 5)),
        (np.zeros((4, 5, 1), np.uint8), (4, 5)),
        (np.zeros((4, 5, 3), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 4), np.uint8), (4, 5, 4)),
        (np.zeros((3, 4, 5), np.float32), (4, 5, 3)),
        (np.zeros((2, 4, 5, 3), np.uint8), (2, 4, 5, 3)),
        (np.zeros((2, 1, 4, 5), np.float64), (2, 4, 5, 1)),
        (FakeTensor(np.zeros((3, 4, 5), np.float32)), (4, 5, 3)),
    ],
    ids=["HxW", "HxWx1", "HxWx3", "HxWx4", "CHW-float", "batch-NHWC", "batch-NCHW", "tensor-CHW"],
)
def test_image_shapes_become_uint8_hwc(data: Any, shape: tuple[int, ...]) -> None:
    """Every accepted image layout becomes a uint8 array HxW, HxWxC or a batch NxHxWxC."""
    image = only(evaluation({"img": instrument.Image(data, caption="c")}), SummaryUpdate).values["eval/img"]
    assert (shape, np.uint8, "c") == (image.data.shape, image.data.dtype, image.caption)


def test_float_image_0_to_1_scales_to_0_to_255_and_is_a_copy() -> None:
    """A float image in 0..1 becomes uint8 0..255, copied: later changes to the array do not show."""
    array = np.array([[0.0, 0.5], [1.0, 0.25]])
    image = only(stage({"img": instrument.Image(array)}), Point).values["operator/img"]
    array[0, 0] = 1.0
    assert [[0, 128], [255, 64]] == image.data.tolist()


def test_float_image_outside_known_ranges_is_stretched_with_a_warning() -> None:
    """Float pixels outside 0..1, -1..1 and whole numbers in 0..255 are stretched to 0..255; an advisory
    problem names the key and the range seen."""
    routed = evaluation({"img": instrument.Image(np.array([[-1.0, 0.5, 2.0]]))})
    assert [[0, 128, 255]] == only(routed, SummaryUpdate).values["eval/img"].data.tolist()
    assert [("converted", "eval/img", True)] == [(p.kind, p.key, "[-1, 2]" in p.message) for p in routed.problems]


@pytest.mark.parametrize(("pixels", "expected", "note"), [
    ([[-1.0, 0.0, 1.0]], [[0, 128, 255]], "[-1, 1] were mapped"),
    ([[0.0, 127.0, 200.0]], [[0, 127, 200]], "whole numbers in [0, 255], were taken as the 8-bit values"),
    ([[0.0, 0.6, 1.2]], [[0, 128, 255]], "range over [0, 1.2]"),
    ([[2.5, 2.5]], [[2, 2]], "all equal 2.5"),
    ([[0.0, 0.5, 1.0]], [[0, 128, 255]], None),
])
def test_float_images_keep_their_pixels_or_say_what_was_done(pixels: Any, expected: Any, note: str | None) -> None:
    """-1..1 (a generative model's output) is mapped, whole numbers in 0..255 taken as the bytes they
    equal, a 0..1 image that overshoots stretched (not read as near-black bytes), a single value out of
    range clipped, 0..1 scaled; each but 0..1 is said (advisory)."""
    routed = evaluation({"img": instrument.Image(np.array(pixels))})
    notes = [p.message for p in routed.problems]
    assert (expected, [note] if note else []) == (only(routed, SummaryUpdate).values["eval/img"].data.tolist(),
                                                  [note for m in notes if note and note in m])


def test_integer_images_outside_bytes_are_stretched_or_clipped() -> None:
    """An int16 image over [0, 300] is stretched to 0..255; one holding 300 alone is clipped to 255."""
    stretched, clipped = (only(evaluation({"img": instrument.Image(np.array(pixels, np.int16))}), SummaryUpdate)
                          .values["eval/img"].data.tolist() for pixels in ([[0, 150, 300]], [[300, 300]]))
    assert ([[0, 128, 255]], [[255, 255]]) == (stretched, clipped)


def test_unmarked_uint8_image_arrays_are_images() -> None:
    """An unmarked uint8 array HxW or HxWx1/3/4 becomes an image."""
    values = only(evaluation({"a": np.zeros((4, 4), np.uint8), "b": np.zeros((4, 4, 3), np.uint8)}),
                  SummaryUpdate).values
    assert [instrument.Image, instrument.Image] == [type(values["eval/a"]), type(values["eval/b"])]


def test_pil_image_is_an_image() -> None:
    """A PIL image (unmarked or in Image) becomes an Image holding a copy."""
    from PIL import Image as PILImage

    picture = PILImage.new("RGB", (3, 2))
    image = only(evaluation({"p": picture}), SummaryUpdate).values["eval/p"]
    assert ((3, 2), False) == (image.data.size, image.data is picture)


def test_image_of_a_bad_shape_is_reported_with_shape_and_dtype() -> None:
    """An Image of shape 5x5x2 (neither HWC nor CHW) is dropped, naming key, shape and dtype; the rest lands."""
    routed = evaluation({"img": instrument.Image(np.zeros((5, 5, 2), np.uint8)), "ok": 1})
    assert {"eval/ok": 1} == only(routed, SummaryUpdate).values
    (problem,) = routed.problems
    assert ("unroutable", "eval/img") == (problem.kind, problem.key)
    assert "(5, 5, 2)" in problem.message and "uint8" in problem.message


# -- files, artifacts, config, alerts, markers ----------------------------------------------


def test_path_is_a_saved_file_relative_to_the_working_directory(tmp_path: pathlib.Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A pathlib.Path is saved now, its base the working directory so its relative path is kept."""
    monkeypatch.chdir(tmp_path)
    record = only(evaluation({"report": pathlib.Path("out/report.txt")}), SaveFile)
    assert SaveFile(path=str(tmp_path / "out/report.txt"), base_path=str(tmp_path), policy="now") == record


def test_file_keeps_its_path_under_base_path(tmp_path: pathlib.Path) -> None:
    """instrument.File with base_path keeps the path below it, with its policy."""
    record = only(stage({"f": instrument.File(tmp_path / "ck/sub/a.txt", policy="end", base_path=tmp_path / "ck")}),
                  SaveFile)
    assert SaveFile(path=str(tmp_path / "ck/sub/a.txt"), base_path=str(tmp_path / "ck"), policy="end") == record


def test_file_outside_the_working_directory_keeps_its_name(tmp_path: pathlib.Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A file outside the working directory (no base_path) is saved under its name alone."""
    monkeypatch.chdir(tmp_path)
    record = only(evaluation({"f": instrument.File("/elsewhere/x/r.txt")}), SaveFile)
    assert ("/elsewhere/x/r.txt", "/elsewhere/x") == (record.path, record.base_path)


def test_file_not_under_its_base_path_is_reported() -> None:
    """A File not below its base_path is saved under its name and the problem names the key."""
    routed = evaluation({"f": instrument.File("/a/b.txt", base_path="/c")})
    assert "/a" == only(routed, SaveFile).base_path
    assert ["eval/f"] == [p.key for p in routed.problems]


def test_file_policy_is_validated() -> None:
    """A policy other than now/end/live raises ValueError when the marker is made."""
    with pytest.raises(ValueError, match="policy"):
        instrument.File("a.txt", policy="sometimes")  # type: ignore[arg-type]


def test_artifact_is_logged_with_an_absolute_path_and_a_default_name(tmp_path: pathlib.Path) -> None:
    """An Artifact becomes LogArtifact: absolute path, name from the stem, aliases kept."""
    record = only(evaluation({"ckpt": instrument.Artifact(tmp_path / "model v1.pt", aliases="best")}), LogArtifact)
    assert LogArtifact(path=str(tmp_path / "model v1.pt"), type="model", name="model-v1", aliases=("best",)) == record


def test_config_marker_is_merged_under_the_prefix_with_plain_values() -> None:
    """A Config marker from an eval is a config update under the prefix, never summary or history."""
    routed = evaluation({"nrmse": 0.1, "config": instrument.Config({"samples": 8, "dirs": (pathlib.Path("a"),)})})
    assert ConfigUpdate(values={"samples": 8, "dirs": ["a"]}, prefix="eval") == only(routed, ConfigUpdate)
    assert {"eval/nrmse": 0.1} == only(routed, SummaryUpdate).values


def test_bare_config_marker_from_a_stage_goes_under_the_stage_name() -> None:
    """A Config returned alone from a stage is merged under the stage name and makes no point."""
    routed = stage(instrument.Config({"lr": 0.1}))
    assert [ConfigUpdate(values={"lr": 0.1}, prefix="operator")] == list(routed.records)


def test_summary_marker_from_a_stage_goes_to_the_summary_with_the_prefix() -> None:
    """Summary inside a stage's mapping is a summary update (not owned), keys prefixed and nested."""
    routed = stage({"loss": 0.5, "final": instrument.Summary({"best": 0.1})})
    assert {"operator/loss": 0.5} == only(routed, Point).values
    assert SummaryUpdate(values={"operator/final/best": 0.1}, owned=False) == only(routed, SummaryUpdate)


def test_series_marker_from_an_eval_is_a_point_on_the_eval_axis() -> None:
    """Series from an eval is a point on the axis ``<prefix>/step``."""
    point = only(evaluation(instrument.Series({"curve": 0.5})), Point)
    assert ({"eval/curve": 0.5}, "eval") == (point.values, point.axis)


def test_alert_marker_is_an_alert() -> None:
    """An Alert is sent as it is, and a bad level is refused at construction."""
    assert SendAlert("T", "body", "ERROR") == only(evaluation({"a": instrument.Alert("T", "body", "ERROR")}), SendAlert)
    with pytest.raises(ValueError):
        instrument.Alert("T", level="LOUD")  # type: ignore[arg-type]


# -- arrays ---------------------------------------------------------------------------------


def test_one_d_array_or_tensor_is_a_histogram() -> None:
    """An unmarked 1-D array or tensor of more than one element is a histogram of its values, binned
    when it is routed as ``wandb.Histogram(values)`` bins them (64 bins of ``numpy.histogram``)."""
    values = only(stage({"w": np.arange(4.0), "t": FakeTensor([1, 2, 3])}), Point).values
    assert instrument.Histogram(np.histogram([0.0, 1.0, 2.0, 3.0], bins=64)) == values["operator/w"]
    assert instrument.Histogram(np.histogram([1.0, 2.0, 3.0], bins=64)) == values["operator/t"]


def test_histogram_leaves_out_non_finite_values_with_a_warning() -> None:
    """NaN and inf are left out of a histogram and an advisory problem says how many."""
    routed = stage({"w": np.array([1.0, np.nan, np.inf, 2.0])})
    histogram = only(routed, Point).values["operator/w"]
    assert (2, 1.0, 2.0) == (sum(histogram.counts), histogram.bins[0], histogram.bins[-1])
    assert [("non_finite", "2 non-finite values were left out")] == [
        (p.kind, p.message.split("histogram: ")[1]) for p in routed.problems]


def test_a_marked_histogram_of_an_array_or_tensor_takes_its_values_at_once() -> None:
    """``Histogram(array)`` and ``Histogram(tensor)`` hold the values as floats (bools too, 2-D
    flattened); non-finite ones are left out when routed, with a warning."""
    import torch

    assert ((0.0, 1.0, 2.0, 3.0), (1.0, 0.0), (0.5, 1.5)) == (
        instrument.Histogram(np.arange(4).reshape(2, 2)).values, instrument.Histogram(np.array([True, False])).values,
        instrument.Histogram(torch.tensor([0.5, 1.5], dtype=torch.bfloat16)).values)
    routed = stage({"h": instrument.Histogram(np.array([1.0, np.nan]))})
    assert ((1.0,), ["non_finite"]) == (only(routed, Point).values["operator/h"].values,
                                         [p.kind for p in routed.problems])


def test_one_element_array_is_a_number() -> None:
    """A one-element array is its number."""
    assert {"operator/x": 3.0} == only(stage({"x": np.array([3.0])}), Point).values


@pytest.mark.parametrize("array", [np.zeros((4, 4)), np.zeros((32, 3, 32), np.float32), np.zeros((2, 2), np.int64)])
def test_other_arrays_are_not_guessed(array: Any) -> None:
    """A float 2-D array or 32x3x32 is dropped with a problem naming key, shape, dtype, Image and Table."""
    routed = stage({"a": array, "ok": 1.0})
    assert {"operator/ok": 1.0} == only(routed, Point).values
    (problem,) = routed.problems
    assert ("unroutable", "operator/a") == (problem.kind, problem.key)
    for word in (str(tuple(array.shape)), str(array.dtype), "instrument.Image", "instrument.Table", "train"):
        assert word in problem.message


# -- what fits no rule ----------------------------------------------------------------------


def test_value_that_fits_no_rule_is_reported_and_the_rest_lands() -> None:
    """An object is dropped with a problem naming the function, the key and the type."""
    routed = evaluation({"meter": object(), "acc": 0.5})
    assert {"eval/acc": 0.5} == only(routed, SummaryUpdate).values
    (problem,) = routed.problems
    assert "unroutable" == problem.kind
    assert "evaluate" in problem.message and "'eval/meter'" in problem.message and "object" in problem.message


def test_non_string_keys_become_their_text() -> None:
    """An int key (a per-class result) becomes a path segment; a None key is dropped with a bad_key problem."""
    routed = stage({1: 2.0, "ok": 1.0, None: 3.0})
    assert {"operator/1": 2.0, "operator/ok": 1.0} == only(routed, Point).values
    assert ["bad_key"] == [p.kind for p in routed.problems]


def test_keys_that_become_one_are_named_both() -> None:
    """Two keys that become the same W&B key (an int and its text) warn naming both; the first lands."""
    routed = evaluation({"recall": {0: 1.0, "0": 2.0}})
    ((kind, message),) = [(p.kind, p.message) for p in routed.problems]
    assert ({"eval/recall/0": 1.0}, "collision", True) == (
        only(routed, SummaryUpdate).values, kind, "'recall' / 0 and 'recall' / '0' both become" in message)


# -- cases from the field -------------------------------------------------------------------


def test_c09_tensor_and_numpy_scalars_are_plain_numbers() -> None:
    """C09: a 0-d tensor, np.float32 and np.int64 become plain 0.25, 0.5 and 3; nothing skipped."""
    routed = stage({"loss": FakeTensor(0.25), "acc": np.float32(0.5), "n": np.int64(3)})
    values = only(routed, Point).values
    assert {"operator/loss": 0.25, "operator/acc": 0.5, "operator/n": 3} == values
    assert [float, float, int] == [type(v) for v in values.values()]
    assert () == routed.problems


def test_c10_nan_inf_and_objects() -> None:
    """C10: NaN and inf are kept as they are, a custom object is dropped naming key and type, ok lands."""

    class Meter:
        pass

    routed = stage({"loss": math.nan, "gnorm": math.inf, "meter": Meter(), "ok": 1.0})
    values = only(routed, Point).values
    assert ["operator/loss", "operator/gnorm", "operator/ok"] == list(values)
    assert math.isnan(values["operator/loss"]) and math.inf == values["operator/gnorm"] and 1.0 == values["operator/ok"]
    (problem,) = routed.problems
    assert ("unroutable", "operator/meter") == (problem.kind, problem.key)
    assert "Meter" in problem.message


# -- helpers --------------------------------------------------------------------------------


def test_as_number_and_as_step() -> None:
    """as_number takes scalars of every kind, decimals and fractions as floats; as_step only whole
    numbers within 64 bits."""
    assert [1, 2.5, True, 3, 0.5, 1.5, 0.25] == [
        as_number(x) for x in (1, 2.5, True, np.int64(3), FakeTensor(0.5), decimal.Decimal("1.5"),
                               fractions.Fraction(1, 4))]
    assert [None, None, None, None] == [as_number(x) for x in ("1", np.zeros(2), 1j, decimal.Decimal("sNaN"))]
    assert [10, 10, 10, 2**63 - 1, None, None, None, None] == [
        as_step(x) for x in (10, 10.0, decimal.Decimal(10), 2**63 - 1, 2**63, 10.5, True, math.nan)]


def test_decimals_and_fractions_are_numbers() -> None:
    """A ``Decimal`` and a ``Fraction`` from a stage are history values (floats), with no warning."""
    routed = stage({"dec": decimal.Decimal("1.5"), "frac": fractions.Fraction(1, 3)})
    assert ({"operator/dec": 1.5, "operator/frac": 1 / 3}, ()) == (only(routed, Point).values, routed.problems)


def test_plain_config_keeps_nesting_of_dataclasses_attrs_and_omegaconf() -> None:
    """plain_config turns dataclass, attrs and OmegaConf values into nested dicts; paths -> str, tuples -> list."""
    omegaconf = pytest.importorskip("omegaconf")

    @dataclasses.dataclass
    class Inner:
        path: pathlib.Path
        sizes: tuple[int, ...]

    @attrs.define
    class Outer:
        inner: Inner
        lr: Any

    expected = {"inner": {"path": "data/x", "sizes": [1, 2]}, "lr": 0.5}
    assert expected == plain_config(Outer(Inner(pathlib.Path("data/x"), (1, 2)), np.float32(0.5)))
    assert {"a": {"b": [1, 2]}} == plain_config(omegaconf.OmegaConf.create({"a": {"b": [1, 2]}}))


def test_routing_imports_no_wandb_and_no_optional_library() -> None:
    """Importing instrument and routing plain values imports neither wandb nor numpy/pandas/torch/PIL/omegaconf."""
    code = (
        "import sys, instrument\n"
        "from instrument._routing import route\n"
        "route({'a': 1, 'b': {'c': 'x'}, 't': instrument.Table(['a'], [[1]])}, role='series', prefix='s', "
        "function='f')\n"
        "print(sorted(m for m in ('wandb', 'numpy', 'pandas', 'torch', 'PIL', 'omegaconf') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "[]" == result.stdout.strip()


# -- issue 10: one value at a time, the forms users keep values in ---------------------------


def test_a_value_whose_conversion_raises_is_dropped_alone() -> None:
    """A value whose conversion raises (an object whose shape breaks) is dropped with the reason; the rest lands."""

    class Broken:
        __module__ = "torch"  # looks like a tensor to routing
        shape = (3,)

        def detach(self) -> Any:
            raise RuntimeError("the storage is gone")

    routed = stage({"loss": 0.5, "grad": Broken()})
    ((kind, message, outcome),) = [(p.kind, p.message, p.outcome) for p in routed.problems]
    assert ({"operator/loss": 0.5}, "unroutable", True, "it was dropped") == (
        only(routed, Point).values, kind, "RuntimeError: the storage is gone" in message, outcome)


def test_a_bfloat16_tensor_is_a_histogram_and_its_scalar_a_number() -> None:
    """A 1-D bfloat16 tensor is a histogram of its float32 values; a 0-d one is a number."""
    torch = pytest.importorskip("torch")
    values = only(stage({"grad": torch.linspace(-1, 1, 5).to(torch.bfloat16),
                         "lr": torch.tensor(0.5, dtype=torch.bfloat16)}), Point).values
    assert (instrument.Histogram(np.histogram([-1.0, -0.5, 0.0, 0.5, 1.0], bins=64)), 0.5) == (
        values["operator/grad"], values["operator/lr"])


def test_a_histogram_pair_keeps_its_bins_and_an_unmarked_pair_says_how_to_mark_it() -> None:
    """``Histogram(np.histogram(x))`` keeps the counts and edges; the bare pair is not guessed, and the
    warning suggests ``Histogram(pair)``."""
    pair = np.histogram([1.0, 2.0, 2.0, 9.0], bins=[0.0, 2.0, 4.0, 10.0])
    marked = only(evaluation({"h": instrument.Histogram(pair)}), SummaryUpdate).values["eval/h"]
    bare = evaluation({"h": pair})
    assert ((1, 2, 1), (0.0, 2.0, 4.0, 10.0)) == (marked.counts, marked.bins)
    assert [True] == ["instrument.Histogram(pair)" in p.message for p in bare.problems]


def test_a_string_over_wandbs_line_limit_is_dropped_alone() -> None:
    """A string longer than wandb uploads in one line is dropped (it would cost its whole row); the rest lands."""
    routed = evaluation({"log": "x" * (11 << 20), "acc": 0.5})
    assert ({"eval/acc": 0.5}, ["limit"]) == (only(routed, SummaryUpdate).values, [p.kind for p in routed.problems])


def test_a_figure_is_an_image_of_its_size() -> None:
    """A matplotlib figure (no pyplot needed) becomes a PNG image of its size in pixels."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 1.5), dpi=50)
    figure.add_subplot().plot([1, 2])
    image = only(evaluation({"fig": figure}), SummaryUpdate).values["eval/fig"]
    assert (100, 75) == image.data.size


def test_a_config_marker_takes_a_settings_object() -> None:
    """``instrument.Config`` takes a settings object (here an ``argparse.Namespace``), nested and JSON-safe."""
    import argparse

    routed = evaluation({"c": instrument.Config(argparse.Namespace(bs=16, path=pathlib.Path("/d"), sizes=(1, 2)))})
    assert {"bs": 16, "path": "/d", "sizes": [1, 2]} == only(routed, ConfigUpdate).values


def test_a_wandb_chart_becomes_its_table_and_a_chart_declaration() -> None:
    """``wandb.plot.line`` from an eval: its table under ``<key>_table`` and its panel as a DeclareChart."""
    import wandb

    chart = wandb.plot.line(wandb.Table(columns=["x", "y"], data=[[1, 2]]), "x", "y", title="t")
    routed = evaluation({"curve": chart})
    declared = only(routed, DeclareChart)
    assert (["eval/curve_table"], "eval/curve", "wandb/line/v0") == (
        list(only(routed, SummaryUpdate).values), declared.key, declared.spec["panel_config"]["panelDefId"])


def test_a_long_media_key_is_shortened_and_said() -> None:
    """An image under a key too long for a file name lands under a shortened key, with a note naming it."""
    routed = evaluation({"x" * 300: instrument.Image(np.zeros((2, 2), np.uint8))})
    (key,) = only(routed, SummaryUpdate).values
    assert (True, ["converted"]) == (len(key.encode()) < 255, [p.kind for p in routed.problems])
