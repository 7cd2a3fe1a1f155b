"""Tests of instrument.runfile against .wandb files written by real wandb, offline, in a subprocess."""

from __future__ import annotations

import math
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from instrument.runfile import RunFile, RunFileError, find_run_files, format_report, read_run_file, read_runs

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[1]

# One process writes every run the module needs; ids are fixed so tests can find them.
RUNS_SCRIPT = textwrap.dedent(
    """
    import wandb

    run = wandb.init(
        project="proj", id="alpha", name="first", group="g1", job_type="train", tags=["a", "b"],
        config={"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.99]}},
    )
    run.define_metric("epoch")
    run.define_metric("val/*", step_metric="epoch")
    run.define_metric("loss", summary="min")
    for i in range(50):
        if i % 10 == 0:
            run.log({"epoch": i // 10, "val/loss": 100 - i}, commit=False)
        run.log({"loss": 50 - i, "acc": i / 50})
    run.log({"val/acc": 0.5})  # no epoch: wandb's step_sync fills in the last one
    run.log({"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf")})
    run.summary["best"] = 3
    run.summary["gone"] = 5
    del run.summary["gone"]
    run.summary["nested"] = {"a": {"b": 1}}
    run.alert(title="Heads up", text="loss is low", level=wandb.AlertLevel.WARN)
    open("now.txt", "w").write("now")
    open("end.txt", "w").write("end")
    run.save("now.txt", policy="now")
    run.save("end.txt", policy="end")
    artifact = wandb.Artifact("ds", type="dataset")
    artifact.add_file("now.txt")
    run.log_artifact(artifact, aliases=["latest", "best"])
    run.finish()

    run = wandb.init(project="proj", id="beta", group="g2", config={"blob": "x" * 70000})
    run.log({"v": 1})
    run.finish(exit_code=1)

    for rid in ["gamma", "gamma2"]:
        run = wandb.init(project="proj", id=rid)
        run.log({"v": 2})
        run.finish()
    """
)


def wandb_env(tmp: pathlib.Path) -> dict[str, str]:
    """Return an environment that keeps offline wandb entirely inside *tmp*."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp)}
    for name in ("CACHE", "DATA", "CONFIG"):
        (tmp / name.lower()).mkdir(exist_ok=True)
        env[f"WANDB_{name}_DIR"] = str(tmp / name.lower())
    return env


@pytest.fixture(scope="module")
def wandb_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Write the module's runs once and return their wandb folder."""
    root = tmp_path_factory.mktemp("runs")
    done = subprocess.run(
        [sys.executable, "-c", RUNS_SCRIPT], cwd=root, env=wandb_env(root), capture_output=True, text=True, timeout=300
    )
    assert 0 == done.returncode, done.stderr
    return root / "wandb"


@pytest.fixture(scope="module")
def runs(wandb_dir: pathlib.Path) -> dict[str, RunFile]:
    """Read every run of the module, by id."""
    return {run.run_id: run for run in read_runs(wandb_dir)}


def test_run_metadata(runs: dict[str, RunFile]) -> None:
    """Run id, project, name, group, job type and tags come from the run record."""
    alpha = runs["alpha"]
    expected = ("alpha", "proj", "first", "g1", "train", ("a", "b"))
    assert expected == (alpha.run_id, alpha.project, alpha.name, alpha.group, alpha.job_type, alpha.tags)


def test_config_is_plain_and_nested(runs: dict[str, RunFile]) -> None:
    """Config keeps nested values as given and drops wandb's _wandb key."""
    assert {"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.99]}} == runs["alpha"].config


def test_multi_block_record(runs: dict[str, RunFile]) -> None:
    """A record spanning several 32 KiB blocks (FIRST/MIDDLE/LAST chunks) is reassembled."""
    assert "x" * 70000 == runs["beta"].config["blob"]


def test_history_rows(runs: dict[str, RunFile]) -> None:
    """Every logged row is a history record with its keys, including _step, _runtime and _timestamp."""
    history = runs["alpha"].history
    assert 52 == len(history)
    assert [50 - i for i in range(50)] == [row["loss"] for row in history[:50]]
    assert list(range(52)) == [row["_step"] for row in history]
    assert {"_step", "_runtime", "_timestamp", "loss", "acc"} == set(history[1])


def test_series_uses_declared_step_metric(runs: dict[str, RunFile]) -> None:
    """series() steps a metric by its define_metric step_metric (here via the val/* glob)."""
    expected = [(0, 100), (1, 90), (2, 80), (3, 70), (4, 60)]
    assert expected == runs["alpha"].series("val/loss")


def test_series_step_sync(runs: dict[str, RunFile]) -> None:
    """wandb's step_sync writes the last step metric value into rows that lack it."""
    assert [(4, 0.5)] == runs["alpha"].series("val/acc")


def test_series_default_and_explicit_step(runs: dict[str, RunFile]) -> None:
    """series() falls back to _step, and an explicit step_key wins (rows without it are skipped)."""
    alpha = runs["alpha"]
    assert [(0, 50), (1, 49), (2, 48)] == alpha.series("loss")[:3]
    assert [(0, 50), (1, 40), (2, 30), (3, 20), (4, 10)] == alpha.series("loss", step_key="epoch")


def test_step_metric_names_the_declared_step_key(runs: dict[str, RunFile]) -> None:
    """step_metric() returns the step key define_metric declared for a key (glob or exact), else ""."""
    alpha = runs["alpha"]
    assert ("epoch", "epoch", "") == (alpha.step_metric("val/loss"), alpha.step_metric("val/acc"), alpha.step_metric("loss"))


def test_host_is_the_machine_that_wrote_the_run(runs: dict[str, RunFile]) -> None:
    """host comes from the run record: the name of the machine that wrote the run."""
    assert socket.gethostname() == runs["alpha"].host


def test_metrics(runs: dict[str, RunFile]) -> None:
    """define_metric records come back as plain dicts."""
    expected = [
        {"name": "epoch", "glob_name": "", "step_metric": "", "summary": [], "step_sync": False},
        {"name": "", "glob_name": "val/*", "step_metric": "epoch", "summary": [], "step_sync": True},
        {"name": "loss", "glob_name": "", "step_metric": "", "summary": ["min"], "step_sync": False},
    ]
    assert expected == runs["alpha"].metrics


def test_summary(runs: dict[str, RunFile]) -> None:
    """The summary applies updates and removals in order, keeps summary shapes, and nests keys."""
    summary = runs["alpha"].summary
    assert {"min": 1} == summary["loss"]
    assert (3, {"a": {"b": 1}}, False) == (summary["best"], summary["nested"], "gone" in summary)
    assert (0.98, 51) == (summary["acc"], summary["_step"])


def test_nan_and_inf(runs: dict[str, RunFile]) -> None:
    """NaN and infinities written as JSON tokens decode to floats in history and summary."""
    row, summary = runs["alpha"].history[-1], runs["alpha"].summary
    assert (True, math.inf, -math.inf) == (math.isnan(row["nan"]), row["inf"], row["ninf"])
    assert (True, math.inf) == (math.isnan(summary["nan"]), summary["inf"])


def test_alert(runs: dict[str, RunFile]) -> None:
    """run.alert() is kept as an alert record."""
    assert [{"title": "Heads up", "text": "loss is low", "level": "WARN"}] == runs["alpha"].alerts


def test_files(runs: dict[str, RunFile]) -> None:
    """run.save() writes a files record with its policy."""
    files = [f for f in runs["alpha"].files if f["path"] != "requirements.txt"]
    assert [{"path": "now.txt", "policy": "now"}, {"path": "end.txt", "policy": "end"}] == files


def test_artifacts(runs: dict[str, RunFile]) -> None:
    """log_artifact() is kept with its name, type, aliases and manifest paths."""
    (artifact,) = runs["alpha"].artifacts
    actual = (artifact["name"], artifact["type"], sorted(artifact["aliases"]), artifact["manifest_entries"])
    assert ("ds", "dataset", ["best", "latest"], ["now.txt"]) == actual


def test_exit_codes(runs: dict[str, RunFile]) -> None:
    """finish() exits 0, finish(exit_code=1) exits 1, and complete files are not truncated."""
    actual = [(run.exit_code, run.truncated) for run in runs.values()]
    assert [(0, False), (1, False), (0, False), (0, False)] == actual


def test_read_runs_in_start_order(runs: dict[str, RunFile]) -> None:
    """read_runs() returns every run once, in the order they started."""
    assert ["alpha", "beta", "gamma", "gamma2"] == list(runs)


def _inside_a_chunk(data: bytes, near: int) -> int:
    """Return an offset inside the payload of the chunk that holds offset *near* (never a boundary)."""
    block = 32768
    position = 7
    while position < len(data):
        room = block - position % block
        if room < 7:
            position += room
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        end = position + 7 + length
        if end > near:
            return position + 7 + max(1, length // 2)
        position = end
    raise AssertionError("offset past the end of the file")


def test_truncated_file(runs: dict[str, RunFile], tmp_path: pathlib.Path) -> None:
    """A file cut mid-record yields its complete records, no exit code, and truncated=True."""
    full = runs["alpha"]
    cut = tmp_path / full.path.name
    data = full.path.read_bytes()
    cut.write_bytes(data[: _inside_a_chunk(data, len(data) // 2)])
    partial = read_run_file(cut)
    assert (True, None, "alpha", full.config) == (partial.truncated, partial.exit_code, partial.run_id, partial.config)
    assert 0 < len(partial.history) < len(full.history)
    assert full.history[: len(partial.history)] == partial.history


def test_truncated_inside_multi_block_record(runs: dict[str, RunFile], tmp_path: pathlib.Path) -> None:
    """A file cut in the second block, inside a multi-chunk record, drops that record."""
    cut = tmp_path / "run-beta.wandb"
    cut.write_bytes(runs["beta"].path.read_bytes()[:40000])
    partial = read_run_file(cut)
    assert ("beta", {}, [], None, True) == (
        partial.run_id,
        partial.config,
        partial.history,
        partial.exit_code,
        partial.truncated,
    )


def test_every_prefix_reads(runs: dict[str, RunFile], tmp_path: pathlib.Path) -> None:
    """Any strict prefix of a real file (its writer killed at any byte) reads, without an exit code."""
    data = runs["gamma"].path.read_bytes()
    cut = tmp_path / "run-gamma.wandb"
    rows, exits = [], set()
    for size in range(7, len(data), 5):
        cut.write_bytes(data[:size])
        partial = read_run_file(cut)
        rows.append(len(partial.history))
        exits.add(partial.exit_code)
    assert (sorted(rows), {None}, 1) == (rows, exits, rows[-1])


def test_checksum_mismatch(runs: dict[str, RunFile], tmp_path: pathlib.Path) -> None:
    """A flipped payload byte fails the CRC check with an error naming the file."""
    bad = tmp_path / "run-bad.wandb"
    data = bytearray(runs["gamma"].path.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=re.escape(f"{bad}: corrupt: checksum mismatch")):
        read_run_file(bad)


@pytest.mark.parametrize("content", [b"hello, this is not a wandb file", b"", b":W&B"])
def test_not_a_wandb_file(tmp_path: pathlib.Path, content: bytes) -> None:
    """A file without the :W&B header raises RunFileError naming the path."""
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(RunFileError, match=re.escape(f"{path}: not a wandb file")):
        read_run_file(path)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    """An unreadable path raises RunFileError naming it."""
    missing = tmp_path / "run-none.wandb"
    with pytest.raises(RunFileError, match=re.escape(f"{missing}: cannot read")):
        read_run_file(missing)


def test_find_run_files(wandb_dir: pathlib.Path) -> None:
    """find_run_files() skips the latest-run symlink, sorts by start, and filters by exact id."""
    names = [p.name for p in find_run_files(wandb_dir)]
    expected = ["run-alpha.wandb", "run-beta.wandb", "run-gamma.wandb", "run-gamma2.wandb"]
    assert (True, expected) == ((wandb_dir / "latest-run").is_symlink(), names)
    assert ["run-gamma.wandb"] == [p.name for p in find_run_files(wandb_dir, "gamma")]
    assert [] == find_run_files(wandb_dir, "delta")


def test_format_report(runs: dict[str, RunFile]) -> None:
    """The report lists metadata, flattened config keys, series counts, summary and exit code."""
    report = format_report([runs["alpha"], runs["beta"]])
    expected = [
        "run alpha (first)",
        "  group: g1",
        "  job type: train",
        "  tags: a, b",
        "  config: lr, opt/name, opt/betas",
        "    loss: 50 points",
        "    val/loss: 5 points",
        "    epoch: 6 points",  # step_sync also wrote it into the val/acc row
        "    loss/min = 1",
        "    nested/a/b = 1",
        "  exit code: 0",
        "run beta",
        "  exit code: 1",
    ]
    lines = report.splitlines()
    assert expected == [line for line in expected if line in lines]
    assert [] == [line for line in lines if line.strip().startswith(("_step:", "_runtime:", "_timestamp:"))]
    assert "no runs\n" == format_report([])


def test_import_does_not_import_wandb() -> None:
    """Importing instrument.runfile leaves wandb unimported."""
    code = "import instrument.runfile, sys; assert 'wandb' not in sys.modules"
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert (0, "") == (done.returncode, done.stderr)

