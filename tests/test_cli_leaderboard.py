"""Tests of ``instrument leaderboard`` on runs written by real wandb offline (the session's ``cli_runs``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import CliRuns

from instrument.cli import main

pytestmark = pytest.mark.integration


def board(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["leaderboard", str(cli_runs.root), "--metric", "eval/nrmse", *argv], cli_runs.environ)
    out, err = capsys.readouterr()
    return status, out, err


def test_leaderboard_ranks_finished_runs_lowest_first(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """min ranks cli-b (0.08), cli-c (0.10), cli-a (0.12); the killed run is left out, and stderr says so."""
    status, out, err = board(cli_runs, capsys, "--direction", "min", "--format", "json")
    rows = json.loads(out)["rows"]
    assert 0 == status
    assert [(1, "cli-b", 0.08, 0.004), (2, "cli-c", 0.1, 0.005), (3, "cli-a", 0.12, 0.006)] == [
        (r["rank"], r["name"], r["value"], r["stderr"]) for r in rows
    ]
    assert "instrument leaderboard: left out 1 run: no exit record (pass --include-incomplete to rank them)" in err


def test_leaderboard_options_filter_add_columns_and_cut(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """--include-incomplete ranks the killed run; --where filters on config; --by adds columns; --top cuts."""
    _, out, _ = board(cli_runs, capsys, "--direction", "min", "--format", "json", "--include-incomplete")
    assert ["cli-killed", "cli-b", "cli-c", "cli-a"] == [r["name"] for r in json.loads(out)["rows"]]
    _, out, _ = board(cli_runs, capsys, "--direction", "max", "--format", "json", "--where", "config.optimizer.name=adam",
                      "--by", "config.lr", "--top", "1")
    assert [("cli-a", {"config.lr": 0.001})] == [(r["name"], r["by"]) for r in json.loads(out)["rows"]]


def test_leaderboard_markdown_has_the_direction_arrow(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """The markdown header carries ↓ for min, and each row shows the value ± its stderr."""
    _, out, _ = board(cli_runs, capsys, "--direction", "min", "--by", "config.optimizer.name")
    lines = out.splitlines()
    assert "| rank | run | name | config.optimizer.name | eval/nrmse ↓ |" == lines[0]
    assert f"| 1 | {cli_runs.ids['cli-b']} | cli-b | adam | 0.08 ± 0.004 |" == lines[2]


def test_leaderboard_csv_is_byte_identical_on_reruns(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Two runs of the same csv leaderboard write the same bytes, holding the exact values."""
    outputs = []
    for attempt in range(2):
        out = tmp_path / f"board{attempt}.csv"
        status, _, _ = board(cli_runs, capsys, "--direction", "min", "--format", "csv", "--by", "config.lr",
                             "--out", str(out))
        assert 0 == status
        outputs.append(out.read_bytes())
    lines = outputs[0].decode().splitlines()
    assert outputs[0] == outputs[1]
    assert "rank,run_id,name,project,group,job_type,state,config.lr,eval/nrmse,eval/nrmse_stderr" == lines[0]
    b = cli_runs.ids["cli-b"]
    assert f"1,{b},cli-b,cli-test,{b},pipeline,finished,0.0003,0.08,0.004" == lines[1]


def test_leaderboard_html_is_self_contained(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """The html page has inline CSS, a row per run, and no script or remote resource at all."""
    _, out, _ = board(cli_runs, capsys, "--direction", "min", "--format", "html")
    assert "<style>" in out and out.count("<tr><td") == 3
    assert not re.search(r"<script|\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", out, re.IGNORECASE)


def test_leaderboard_takes_the_direction_from_the_gates(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --direction a gated metric ranks in its gates' direction; an ungated one is a usage error."""
    _, out, _ = board(cli_runs, capsys, "--format", "json")
    assert ("min", ["cli-b", "cli-c", "cli-a"]) == (json.loads(out)["direction"], [r["name"] for r in json.loads(out)["rows"]])
    status = main(["leaderboard", str(cli_runs.root), "--metric", "eval/mse"], cli_runs.environ)
    out, err = capsys.readouterr()
    assert (2, "") == (status, out)
    assert "--direction min|max is needed: no gate or baseline of these runs gives one for eval/mse" in err


def test_a_where_no_run_matches_leaves_an_empty_board_not_a_direction_error(
    cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gated metric with a --where that no run matches: exit 0, no rows, and stderr counts the
    runs --where left out (the direction still comes from the gates of the runs left out)."""
    status, out, err = board(cli_runs, capsys, "--format", "json", "--where", "config.lr=1")
    assert (0, "min", []) == (status, json.loads(out)["direction"], json.loads(out)["rows"]), err
    assert "--where" in err, err
