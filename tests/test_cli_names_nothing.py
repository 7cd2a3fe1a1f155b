"""Tests that a command naming something no run holds (a misspelt key, runs with nothing to compare or
chart, a folder without runs) exits 2 with a message naming it and the closest names there are,
instead of printing an empty answer with exit status 0."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import CliRuns, run_script

from instrument.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def summary_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (id ``sumonly1``) with one summary value, ``acc``, and no history."""
    root = tmp_path_factory.mktemp("summary_only")
    run_script(root, """
        import wandb
        run = wandb.init(project="cli-test", id="sumonly1")
        run.summary["acc"] = 0.5
        run.finish()
    """)
    return root


def command(argv: list[str], environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv, environ)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(("options", "message"), [
    (["--metric", "eval/nrmes", "--direction", "min"],
     "instrument leaderboard: --metric eval/nrmes: no such summary key in the 4 runs read; closest: eval/nrmse, eval/mse, eval/nrmse_stderr\n"),
    (["--metric", "nrmse"],
     "instrument leaderboard: --metric nrmse: no such summary key in the 4 runs read; closest: eval/nrmse\n"),
    (["--metric", "eval/per_sample"],
     "instrument leaderboard: --metric eval/per_sample: no run holds a number under this summary key (it holds table-file)\n"),
    (["--metric", "eval/nrmse", "--by", "config.lrr"],
     "instrument leaderboard: --by config.lrr: no such config key in the 4 runs read; closest: config.lr\n"),
    (["--metric", "eval/nrmse", "--where", "config.optimizer.nmae=adam"],
     "instrument leaderboard: --where config.optimizer.nmae: no such config key in the 4 runs read; closest: config.optimizer.name\n"),
])
def test_leaderboard_keys_no_run_holds_exit_2_naming_the_closest(
    cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    """A --metric, --by or --where key that no run holds exits 2, prints no table, and names the closest keys."""
    assert (2, "", message) == command(["leaderboard", str(cli_runs.root), *options], cli_runs.environ, capsys)


def test_leaderboard_of_a_folder_without_runs_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder that holds no run is a usage error naming the folder, not an empty board."""
    assert (2, "", f"instrument leaderboard: no runs to rank in {tmp_path}\n") == command(
        ["leaderboard", str(tmp_path), "--metric", "eval/nrmse"], {}, capsys)


def test_compare_of_runs_sharing_no_metric_exits_2_naming_each_runs_metrics(
    cli_runs: CliRuns, summary_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs without a numeric summary metric in common: exit 2, with each run's metrics named."""
    a = next((summary_only / "wandb").glob("offline-run-*-sumonly1"))
    status, out, err = command(["compare", str(a), str(cli_runs.folder("cli-killed"))], {}, capsys)
    assert (2, "") == (status, out)
    assert ("instrument compare: A = sumonly1 and B = killed01 (cli-killed) share no numeric summary metric; "
            "A has acc; B has eval/nrmse, loss\n") == err


def test_plot_of_a_run_with_nothing_to_chart_exits_2(
    summary_only: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A run without history series or gates is not drawn: exit 2 naming the run, and no report written."""
    status, out, err = command(["plot", "sumonly1", "--out", str(tmp_path / "report.html")],
                               {"WANDB_DIR": str(summary_only)}, capsys)
    assert (2, "", []) == (status, out, list(tmp_path.iterdir()))
    assert ("instrument plot: run sumonly1 has nothing to chart: no numeric history series in it, and no gates; "
            "`instrument show sumonly1` lists what it holds\n") == err


def test_baseline_show_of_a_project_or_suite_the_store_lacks_exits_2(
    cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--project or --prefix naming none of the store's exits 2 naming the closest; a right one lists it."""
    runs = cli_runs.copy(tmp_path / "runs")
    assert 0 == main(["baseline", "set", runs.ids["cli-a"]], runs.environ)
    capsys.readouterr()
    store = os.path.relpath(runs.root / ".instrument" / "baselines")
    assert (2, "", f"instrument baseline show: --project cli-tset: no such project in {store}; closest: cli-test\n") == \
        command(["baseline", "show", "--project", "cli-tset"], runs.environ, capsys)
    assert (2, "", f"instrument baseline show: --prefix evl: no such prefix in {store}; closest: eval\n") == \
        command(["baseline", "show", "--prefix", "evl"], runs.environ, capsys)
    status, out, _ = command(["baseline", "show", "--project", "cli-test", "--prefix", "eval"], runs.environ, capsys)
    assert (0, ["cli-test", "eval", "nrmse"]) == (status, out.splitlines()[1].split()[:3])


def test_sync_of_a_folder_without_runs_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """sync given a folder that holds no run (and no journal) exits 2 naming it, uploading nothing."""
    folder = str(tmp_path)
    assert (2, "", f"instrument sync: {folder}: no runs in it (no run-<id>.wandb file below it)\n") == command(
        ["sync", "--dry-run", folder], {}, capsys)


def test_sync_without_a_dir_and_no_runs_exits_2_naming_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sync with no DIR and no runs in the wandb folder (missing, then empty) exits 2 naming that
    folder, as sync DIR does for a DIR without runs, instead of reporting 0 of 0 runs synced."""
    wandb_dir = os.path.relpath(tmp_path / "wandb")
    hint = "; name the folder holding the runs (sync DIR) or set WANDB_DIR\n"
    environ = {"WANDB_DIR": str(tmp_path)}
    missing = command(["sync"], environ, capsys)
    (tmp_path / "wandb").mkdir()
    empty = command(["sync", "--dry-run"], environ, capsys)
    assert [(2, "", f"instrument sync: {wandb_dir}: no such folder{hint}"),
            (2, "", f"instrument sync: {wandb_dir}: no runs in it (no run-<id>.wandb file below it){hint}")] == \
        [missing, empty]


def test_replay_of_a_path_that_does_not_exist_exits_2_and_says_it_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """replay of a missing path is a usage error (2); a folder without a journal fails (1); the
    command's name starts each message once."""
    missing, empty = str(tmp_path / "gone"), str(tmp_path)
    assert (2, "", f"instrument replay: {missing}: no such file or folder\n") == command(["replay", missing], {}, capsys)
    assert (1, "", f"instrument replay: {empty!r} holds no journal (spill.jsonl or journal-*.jsonl)\n") == command(
        ["replay", empty], {}, capsys)
