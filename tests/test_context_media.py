"""The imperative WandBContext media methods use the decorators' routing, recorded in memory."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import instrument
from instrument.testing import recording


def test_context_media_methods_land_like_an_eval(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables, images, files, artifacts and alerts from WandBContext land where an eval's would."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out/r.txt").write_text("r")
    (tmp_path / "out/model.pt").write_bytes(b"m")
    with recording() as recorded:
        context = instrument.current()
        context.log_table("eval/cmp", ["a", "b"], [[1, np.float32(0.5)]])
        context.log_image("eval/img", np.zeros((3, 4, 5), np.float32), caption="c")
        context.save_file("out/r.txt", policy="end")
        context.log_artifact("out/model.pt", aliases=["best"])
        context.alert("T", "body", "ERROR")
    run = recorded.run()
    assert [{"_type": "table", "columns": ["a", "b"], "rows": [[1, 0.5]]}] == run.tables["eval/cmp"]
    assert [{"_type": "image", "width": 5, "height": 4, "caption": "c"}] == run.images["eval/img"]
    assert ["out/r.txt", "end"] == [run.files[0]["path"], run.files[0]["policy"]]
    assert ["model", "model", ["best", "latest"]] == [
        run.artifacts[0]["type"], run.artifacts[0]["name"], sorted(run.artifacts[0]["aliases"])]
    assert [{"title": "T", "text": "body", "level": "ERROR"}] == run.alerts
    assert [] == run.history


def test_context_bad_arguments_warn_and_log_nothing() -> None:
    """A bad policy or level warns naming the method and the value; nothing is logged."""
    with recording(strict=False) as recorded:
        context = instrument.current()
        with pytest.warns(instrument.InstrumentationWarning, match=r"save_file: policy 'sometimes'.*'r.txt'"):
            context.save_file("r.txt", policy="sometimes")
        with pytest.warns(instrument.InstrumentationWarning, match=r"alert: level 'LOUD'.*'T'"):
            context.alert("T", level="LOUD")
    assert [] == recorded.runs


def test_context_bad_arguments_raise_in_strict_mode() -> None:
    """In strict mode a bad policy raises InstrumentationError naming the method."""
    with recording(), pytest.raises(instrument.InstrumentationError, match="save_file: policy"):
        instrument.current().save_file("r.txt", policy="sometimes")
