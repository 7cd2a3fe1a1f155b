"""Media and files crossing the journal: a subprocess hands over copies, the owner uploads only those."""

from __future__ import annotations

import json
import pathlib
import tempfile
from typing import Any

import numpy as np
import pytest
from helpers import run_script

import instrument
from instrument._journal import JournalReader, JournalWriter
from instrument._records import LogArtifact, Point, SaveFile, SummaryUpdate
from instrument.runfile import read_runs


def round_trip(folder: pathlib.Path, *records: Any) -> list[Any]:
    """Write *records* to a journal in *folder* (made as the owner makes it) and read them back."""
    folder.mkdir(mode=0o700)
    writer = JournalWriter(folder)
    for record in records:
        writer.append(record)
    writer.close()
    return JournalReader(folder).read_new()


def test_media_values_cross_the_journal_exactly(tmp_path: pathlib.Path) -> None:
    """Images (array, PIL, file), a table with an image cell and a histogram come back equal."""
    from PIL import Image as PILImage

    picture = tmp_path / "p.png"
    PILImage.new("RGB", (2, 3), (1, 2, 3)).save(picture)
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    values = {
        "eval/a": instrument.Image(pixels, caption="c"),
        "eval/pil": instrument.Image(PILImage.new("L", (3, 2), 9)),
        "eval/file": instrument.Image(str(picture)),
        "eval/t": instrument.Table(["n", "img"], [[1, instrument.Image(pixels[:, :, 0])]]),
        "eval/h": instrument.Histogram([1.0, 2.0], num_bins=8),
        "eval/x": 0.5,
    }
    (back,) = round_trip(tmp_path / "journal", SummaryUpdate(values=values))
    got = back.values
    assert (pixels.tolist(), "c") == (got["eval/a"].data.tolist(), got["eval/a"].caption)
    assert [[9, 9, 9], [9, 9, 9]] == np.asarray(PILImage.open(got["eval/pil"].data)).tolist()
    assert picture.read_bytes() == pathlib.Path(got["eval/file"].data).read_bytes()
    assert pixels[:, :, 0].tolist() == got["eval/t"].rows[0][1].data.tolist()
    assert (instrument.Histogram([1.0, 2.0], num_bins=8), 0.5) == (got["eval/h"], got["eval/x"])


def test_wandb_objects_cross_as_their_state(tmp_path: pathlib.Path) -> None:
    """A wandb.Table, wandb.Image and wandb.Html from a subprocess reach the owner as their class and
    attributes (rebuilt by the wandb backend), their files copied byte for byte."""
    import wandb

    native = wandb.Image(np.full((3, 3), 7, np.uint8), caption="w")
    page = wandb.Html("<b>x</b>")
    (back,) = round_trip(tmp_path / "j", Point(values={"s/t": wandb.Table(columns=["k"], data=[["v"]]),
                                                      "s/i": native, "s/h": page}, axis="s"))
    table, image, html = (back.values[key] for key in ("s/t", "s/i", "s/h"))
    assert (["k"], [["v"]], "w", pathlib.Path(native._path).read_bytes(), page.html) == (
        table.state["columns"], table.state["data"], image.state["_caption"],
        pathlib.Path(image.state["_path"]).read_bytes(), html.state["html"])


def test_a_wandb_value_that_cannot_cross_is_reported_and_the_rest_crosses(tmp_path: pathlib.Path) -> None:
    """A wandb object holding something no journal can carry is dropped with a warning naming the key
    and the type; the other values cross."""
    import wandb

    table = wandb.Table(["a"], [[object()]], allow_mixed_types=True)
    with pytest.warns(instrument.InstrumentationWarning, match=r"'eval/t'.*wandb\.sdk.*Table.*builtins\.object"):
        (back,) = round_trip(tmp_path / "j", SummaryUpdate(values={"eval/t": table, "eval/n": 1}))
    assert {"eval/n": 1} == back.values


def test_files_cross_as_copies_keeping_their_relative_paths(tmp_path: pathlib.Path) -> None:
    """A saved file and an artifact folder are copied into the journal; deleting the originals loses nothing."""
    (tmp_path / "out/sub").mkdir(parents=True)
    (tmp_path / "out/sub/r.txt").write_text("report")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/w.bin").write_bytes(b"w")
    folder = tmp_path / "journal"
    folder.mkdir(mode=0o700)
    writer = JournalWriter(folder)
    writer.append(SaveFile(path=str(tmp_path / "out/sub/r.txt"), base_path=str(tmp_path / "out"), policy="live"))
    writer.append(LogArtifact(path=str(tmp_path / "ckpt"), type="model", name="ckpt", aliases=("best",)))
    writer.close()
    (tmp_path / "out/sub/r.txt").unlink()
    (tmp_path / "ckpt/w.bin").unlink()
    saved, artifact = JournalReader(folder).read_new()
    assert ("sub/r.txt", "now", "report") == (
        str(pathlib.Path(saved.path).relative_to(saved.base_path)), saved.policy, pathlib.Path(saved.path).read_text())
    assert ("model", "ckpt", ("best",), b"w") == (
        artifact.type, artifact.name, artifact.aliases, (pathlib.Path(artifact.path) / "w.bin").read_bytes())


def test_a_record_naming_a_file_outside_the_journal_is_refused(tmp_path: pathlib.Path) -> None:
    """A journal line pointing outside the journal folder is skipped with a warning naming it;
    the line after it is still read."""
    folder = tmp_path / "journal"
    folder.mkdir()
    line = {"record": "SaveFile", "path": "/etc/passwd", "base_path": "/etc", "policy": "now"}
    after = {"record": "SummaryUpdate", "values": {"eval/ok": 1}, "owned": True}
    (folder / "journal-1-1.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(after) + "\n")
    with pytest.warns(instrument.InstrumentationWarning, match="'/etc/passwd', outside the journal folder"):
        records = JournalReader(folder).read_new()
    assert [SummaryUpdate(values={"eval/ok": 1}, owned=True)] == records


PARENT = """
import subprocess, sys
import instrument

@instrument.pipeline(project="p")
def main():
    subprocess.run([sys.executable, "child.py"], check=True)

main()
"""

CHILD = """
import pathlib, shutil
import numpy as np
import wandb
from PIL import Image as PILImage
import instrument

out = pathlib.Path("out")
(out / "sub").mkdir(parents=True)
(out / "sub" / "report.txt").write_text("child report")
(out / "ckpt").mkdir()
(out / "ckpt" / "w.bin").write_bytes(b"weights")
PILImage.new("RGB", (4, 3), (0, 255, 0)).save(out / "plot.png")


@instrument.training_stage("operator")
def train():
    for i in range(2):
        yield {"loss": 1.0 - i, "sample": instrument.Image(np.full((4, 4), i, np.uint8)),
               "rows": instrument.Table(["i"], [[i]])}


@instrument.eval_summary(prefix="eval_small")
def evaluate():
    return {
        "nrmse": 0.09,
        "table": instrument.Table(["name", "img"], [["a", instrument.Image(np.full((4, 4), 200, np.uint8))]]),
        "native": wandb.Table(columns=["k"], data=[["v"]]),
        "wimg": wandb.Image(np.full((5, 5, 3), 9, np.uint8), caption="w"),
        "pred": instrument.Image(np.random.rand(2, 8, 8, 3), caption="pred"),
        "plot": instrument.Image(out / "plot.png"),
        "pil": PILImage.new("RGB", (6, 6)),
        "hist": np.arange(5.0),
        "report": instrument.File("out/sub/report.txt", base_path="out", policy="live"),
        "ckpt": instrument.Artifact("out/ckpt", aliases=("best",)),
        "config": instrument.Config({"samples": 8}),
        "curve": instrument.Series({"point": 0.5}),
        "alert": instrument.Alert("child", "done", "INFO"),
    }


list(train())
evaluate()
shutil.rmtree(out)  # the owner must not need the child's files any more
"""


@pytest.mark.slow
@pytest.mark.integration
def test_media_files_and_artifacts_from_a_subprocess_land_in_the_pipeline_run(tmp_path: pathlib.Path) -> None:
    """An eval subprocess's media, files, artifact, config, series and alert land in the pipeline run, from copies."""
    root = tmp_path / "runs"
    (root).mkdir()
    (root / "child.py").write_text(CHILD)
    run_script(root, PARENT, name="parent.py")
    runs = {run.job_type: run for run in read_runs(root / "wandb")}
    assert {"pipeline", "train"} == set(runs)
    pipeline, training = runs["pipeline"], runs["train"]
    files = pipeline.path.parent / "files"
    summary = pipeline.summary
    types = {k: summary[f"eval_small/{k}"]["_type"] for k in ("table", "native", "wimg", "pred", "plot", "pil", "hist")}
    assert {"table": "table-file", "native": "table-file", "wimg": "image-file", "pred": "images/separated",
            "plot": "image-file", "pil": "image-file", "hist": "histogram"} == types
    assert (0.09, "w") == (summary["eval_small/nrmse"], summary["eval_small/wimg"]["caption"])
    for name in summary["eval_small/pred"]["filenames"] + [summary["eval_small/plot"]["path"]]:
        assert (files / name).is_file()
    assert "child report" == (files / "sub/report.txt").read_text()
    assert {"path": "sub/report.txt", "policy": "now"} in pipeline.files
    (artifact,) = [a for a in pipeline.artifacts if a["type"] == "model"]
    assert ("ckpt", ["best", "latest"], ["w.bin"]) == (artifact["name"], sorted(artifact["aliases"]),
                                                       artifact["manifest_entries"])
    assert {"eval_small": {"samples": 8}} == pipeline.config
    assert [(0, 0.5)] == pipeline.series("eval_small/curve/point")
    assert [{"title": "child", "text": "done", "level": "INFO"}] == pipeline.alerts
    assert [(0, 1.0), (1, 0.0)] == training.series("operator/loss")
    assert ["image-file", "image-file"] == [v["_type"] for _, v in training.series("operator/sample")]
    assert ["table-file", "table-file"] == [v["_type"] for _, v in training.series("operator/rows")]
    assert not any("operator" in k for k in summary)
    assert [] == list(pathlib.Path(tempfile.gettempdir()).glob(f"instrument-{pipeline.run_id}-*"))
