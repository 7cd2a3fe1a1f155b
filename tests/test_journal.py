"""Journals on disk: a child's records reach the owner whole, bad or torn lines cost only
themselves, call journals replay every call, and ``python -m instrument replay`` behaves."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import instrument
from instrument._backends.base import RunSpec
from instrument._backends.call_journal import CallJournal
from instrument._backends.recording import RecordingBackend
from instrument._journal import JournalReader, JournalWriter
from instrument._records import LogArtifact, SaveFile, SummaryUpdate
from instrument._replay import ReplayError, replay
from instrument._values import Histogram, Image, Table
from instrument.testing import recording


def test_a_childs_files_artifacts_and_media_reach_the_owner_through_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eval subprocess's saved file, artifact, table and image land in the pipeline run, read
    from the copies in the journal folder."""
    monkeypatch.chdir(tmp_path)
    Path("report.txt").write_text("report")
    Path("model.pt").write_text("weights")

    @instrument.eval_summary(prefix="eval")
    def evaluate() -> dict[str, object]:
        return {"nrmse": 0.09, "table": Table(["a"], [[1]]), "sample": np.zeros((4, 4), dtype=np.uint8),
                "report": instrument.File("report.txt"), "model": instrument.Artifact("model.pt", aliases=("best",))}

    with recording() as recorded, instrument.pipeline(project="p") as owner, recorded.subprocess():
        evaluate()
    run = recorded.runs[0]
    assert owner.id == run.id
    assert (0.09, 1, 1) == (run.summary["eval/nrmse"], len(run.tables["eval/table"]), len(run.images["eval/sample"]))
    assert [("model", ["best", "latest"])] == [(a["type"], sorted(a["aliases"])) for a in run.artifacts]
    assert "report.txt" in [Path(f["path"]).name for f in run.files]  # beside wandb's requirements.txt


def test_bad_lines_are_skipped_with_a_warning_and_the_rest_is_read(tmp_path: Path) -> None:
    """A line that is not JSON or not a valid record costs only itself, with a warning naming the file."""
    journal = tmp_path / "journal-7-1.jsonl"
    journal.write_text("\n".join([
        "not json",
        json.dumps({"record": "SummaryUpdate", "values": {"a": 1}, "owned": True, "surprise": 1}),
        json.dumps({"record": "SummaryUpdate", "values": {"b": 2}, "owned": True}),
        "[1, 2]",
    ]) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = JournalReader(tmp_path).read_new()
    assert [SummaryUpdate(values={"b": 2}, owned=True)] == records
    assert 3 == len(caught) and all(str(journal) in str(w.message) for w in caught)


def test_a_torn_last_line_waits_until_it_is_complete(tmp_path: Path) -> None:
    """A line still being written is left for a later read and reported by ``torn()`` meanwhile."""
    writer = JournalWriter(tmp_path)
    writer.append(SummaryUpdate(values={"a": 1}))
    with writer.path.open("ab") as handle:
        handle.write(b'{"record": "SummaryUpdate", "values": {"b"')
    reader = JournalReader(tmp_path)
    assert ([SummaryUpdate(values={"a": 1})], [writer.path]) == (reader.read_new(), reader.torn())
    with writer.path.open("ab") as handle:
        handle.write(b': 2}, "owned": true}\n')
    assert ([SummaryUpdate(values={"b": 2})], []) == (reader.read_new(), reader.torn())


def test_a_call_journal_replays_every_call_with_media_and_frozen_file_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every backend call of a call journal is replayed in order: rows with media, metric
    declarations, summary, config, files (as they were when saved), artifacts, alerts, exit code."""
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("as saved")
    folder = tmp_path / "spill"
    folder.mkdir()
    journal = CallJournal(folder, RunSpec(id="r1", project="p", group="g", tags=("a",), config={"lr": 0.1}), reason="t")
    journal.define_metric("op/loss", "op/step", "min")
    journal.log({"op/loss": float("nan"), "op/step": 0, "op/img": Image(np.ones((2, 2, 3), dtype=np.uint8)),
                 "op/hist": Histogram([1.0, 2.0])})
    journal.update_summary({"eval/table": Table(["x"], [[1], [2]])})
    journal.update_config({"batch": 32})
    journal.save(str(Path("notes.txt").resolve()), None, "now")
    journal.log_artifact(str(Path("notes.txt").resolve()), "dataset", "notes", ("v1",))
    journal.alert("T", "text", "WARN")
    journal.finish(3)
    Path("notes.txt").write_text("changed later")
    target = RecordingBackend()
    replayed = replay(folder, backend=target, keep=True)
    run = target.runs[0]
    assert ("r1", "p", "g", ("a",), {"lr": 0.1, "batch": 32}, 3) == (
        run.id, run.project, run.group, run.tags, run.config, run.exit_code)
    assert ({"step_metric": "op/step", "summary": "min"}, [(2, 2)]) == (
        run.metrics["op/loss"], [(image["width"], image["height"]) for image in run.images["op/img"]])
    assert np.isnan(run.history[0]["op/loss"]) and [[1], [2]] == run.tables["eval/table"][0]["rows"]
    assert [("T", "text", "WARN")] == [(a["title"], a["text"], a["level"]) for a in run.alerts]
    assert [("dataset", "notes", ["latest", "v1"])] == [(a["type"], a["name"], sorted(a["aliases"])) for a in run.artifacts]
    assert 7 == replayed.count
    assert [("notes.txt", "as saved")] == [(f["path"], Path(f["source"]).read_text()) for f in run.files]


def test_replay_refuses_a_journal_whose_writer_is_still_running(tmp_path: Path) -> None:
    """A call journal without an exit line whose writer process is alive is not replayed (unless forced)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "spill"
        folder.mkdir()
        CallJournal(folder, RunSpec(id="r2"), reason="t").log({"a": 1})
        header, *rest = (folder / "spill.jsonl").read_text().splitlines()
        fields = {**json.loads(header), "pid": sleeper.pid, "host": socket.gethostname()}
        (folder / "spill.jsonl").write_text("\n".join([json.dumps(fields), *rest]) + "\n")
        with pytest.raises(ReplayError, match="still running"):
            replay(folder, backend=RecordingBackend())
        target = RecordingBackend()
        replay(folder, backend=target, force=True, keep=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert ([{"a": 1}], 1, True) == ([{"a": row["a"]} for row in target.runs[0].history], target.runs[0].exit_code,
                                     folder.exists())


def test_record_journals_without_a_context_need_a_run_id(tmp_path: Path) -> None:
    """Loose record journals replay only into a run id given explicitly."""
    JournalWriter(tmp_path).append(SummaryUpdate(values={"eval/x": 1.0}))
    with pytest.raises(ReplayError, match="--run-id"):
        replay(tmp_path, backend=RecordingBackend())
    target = RecordingBackend()
    replay(tmp_path, backend=target, run_id="given")
    assert ("given", 1.0) == (target.runs[0].id, target.runs[0].summary["eval/x"])


def test_the_command_line_reports_errors_with_status_1(tmp_path: Path) -> None:
    """``python -m instrument replay`` on something that is no journal prints why and exits 1."""
    result = subprocess.run([sys.executable, "-m", "instrument", "replay", str(tmp_path)], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert (1, "holds no journal") == (result.returncode, "holds no journal" if "holds no journal" in result.stderr
                                       else result.stderr)


def test_the_command_line_help_is_plain_text() -> None:
    """``python -m instrument --help`` shows no reStructuredText markup (no double backquotes)."""
    from instrument.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as shown:
        status = main(["--help"])
    assert (0, False) == (status, "``" in shown.getvalue())
    assert "replay" in shown.getvalue()


def test_journal_files_are_private(tmp_path: Path) -> None:
    """A record journal and its files folder are created 0600 and 0700."""
    Path(tmp_path / "saved.txt").write_text("x")
    writer = JournalWriter(tmp_path / "j")
    (tmp_path / "j").mkdir(mode=0o700)
    writer.append(SaveFile(path=str(tmp_path / "saved.txt")))
    writer.append(LogArtifact(path=str(tmp_path / "saved.txt")))
    assert (0o600, 0o700) == (writer.path.stat().st_mode & 0o777, writer.files.stat().st_mode & 0o777)


@pytest.mark.integration
def test_a_file_a_child_saved_survives_the_removal_of_the_drained_journal(wandb_root: Path) -> None:
    """An eval subprocess saves a file into the pipeline run: once the journal folder is removed
    the run's ``files/`` holds a real copy (not a link into the removed journal), listed in the run."""
    from helpers import run_script

    from instrument.runfile import read_runs

    run_script(wandb_root, """
import subprocess, sys
import instrument

EVAL = '''
import instrument
open("report.txt", "w").write("the report")
@instrument.eval_summary(prefix="eval")
def evaluate():
    return {"nrmse": 0.09, "report": instrument.File("report.txt")}
evaluate()
'''
with instrument.pipeline(project="p"):
    subprocess.run([sys.executable, "-c", EVAL], check=True)
""")
    (run,) = read_runs(wandb_root / "wandb")
    saved = run.path.parent / "files" / "report.txt"
    assert (False, "the report", 0.09) == (saved.is_symlink(), saved.read_text(), run.summary["eval/nrmse"])
    assert "report.txt" in [Path(f["path"]).name for f in run.files]  # beside wandb's requirements.txt
