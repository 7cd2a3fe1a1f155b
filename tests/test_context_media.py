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
    with recording() as recorded:
        context = instrument.current()
        context.log_table("eval/cmp", ["a", "b"], [[1, np.float32(0.5)]])
        context.log_image("eval/img", np.zeros((3, 4, 5), np.float32), caption="c")
        context.save_file("out/r.txt", policy="end")
        context.log_artifact("out/model.pt", aliases=["best"])
        context.alert("T", "body", "ERROR")
    run = recorded.run()
    assert [{"_type": "table", "columns": ["a", "b"], "rows": [[1, 0.5]]}] == run.tables["eval/cmp"]
    assert [{"_type": "image", "shape": (4, 5, 3), "caption": "c"}] == run.images["eval/img"]
    assert [{"path": str(tmp_path / "out/r.txt"), "base_path": str(tmp_path), "policy": "end"}] == run.files
    assert [{"path": str(tmp_path / "out/model.pt"), "type": "model", "name": "model", "aliases": ["best"]}] == (
        run.artifacts)
    assert [{"title": "T", "text": "body", "level": "ERROR"}] == run.alerts
    assert [] == run.history


def test_context_bad_arguments_warn_and_log_nothing() -> None:
    """A ragged table, a bad policy or level warn naming the method and key; nothing is logged."""
    with recording(strict=False) as recorded:
        context = instrument.current()
        with pytest.warns(instrument.InstrumentWarning, match=r"log_table: key 'eval/t'.*row 0"):
            context.log_table("eval/t", ["a", "b"], [[1]])
        with pytest.warns(instrument.InstrumentWarning, match=r"save_file: key 'r.txt'.*policy"):
            context.save_file("r.txt", policy="sometimes")
        with pytest.warns(instrument.InstrumentWarning, match=r"alert: key 'T'.*level"):
            context.alert("T", level="LOUD")
    assert [] == recorded.runs


def test_context_bad_arguments_raise_in_strict_mode() -> None:
    """In strict mode a ragged table raises InstrumentationError."""
    with recording(), pytest.raises(instrument.InstrumentationError, match="log_table"):
        instrument.current().log_table("eval/t", ["a", "b"], [[1]])
