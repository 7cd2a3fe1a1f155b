"""Tests of ``instrument show`` on runs written by real wandb offline (the session's ``cli_runs``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import CliRuns

from instrument.cli import main

pytestmark = pytest.mark.integration


def show(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["show", *argv], cli_runs.environ)
    out, err = capsys.readouterr()
    return status, out, err


def test_show_json_describes_series_summary_tables_alerts_and_state(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """--json holds each series' step key, step range and point count, the summary, tables, alerts and state."""
    status, out, _ = show(cli_runs, capsys, cli_runs.ids["cli-b"], "--json")
    described = json.loads(out)
    assert 0 == status
    assert [
        {"key": "diffusion/loss", "step_key": "diffusion/step", "first_step": 0, "last_step": 19, "points": 20},
        {"key": "operator/grad_norm", "step_key": "operator/step", "first_step": 0, "last_step": 39, "points": 40},
        {"key": "operator/loss", "step_key": "operator/step", "first_step": 0, "last_step": 39, "points": 40},
        {"key": "operator/lr", "step_key": "operator/step", "first_step": 0, "last_step": 39, "points": 40},
    ] == [{k: v for k, v in s.items() if k != "last"} for s in described["series"]]
    assert ("cli-b", "cli-test", "pipeline") == (described["name"], described["project"], described["job_type"])
    assert {"lr": 3e-4, "optimizer": {"name": "adam"}} == described["config"]
    assert (0.08, 0.004) == (described["summary"]["eval/nrmse"], described["summary"]["eval/nrmse_stderr"])
    assert [{"key": "eval/per_sample", "type": "table-file", "where": "summary", "rows": 2, "columns": 2},
            {"key": "gates/eval/table", "type": "table-file", "where": "summary", "rows": 2, "columns": 11}] == [
        {k: v for k, v in t.items() if k != "file"} for t in described["tables"]
    ]
    assert [{"title": "nrmse checked", "text": "nrmse = 0.08", "level": "INFO"}] == described["alerts"]
    assert ("finished", 0, True, False) == (
        described["state"], described["exit_code"], described["complete"], described["synced"]
    )
    assert ("pass", ["pass", "no_baseline"]) == (
        described["gates"]["suites"]["eval"]["status"],
        [v["status"] for v in described["gates"]["suites"]["eval"]["verdicts"]],
    )


def test_show_text_groups_the_summary_by_prefix_and_lists_series(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """The text form names the run, groups summary keys under their prefix and lists each series' steps."""
    status, out, _ = show(cli_runs, capsys, str(cli_runs.folder("cli-a")))
    lines = out.splitlines()
    assert 0 == status
    assert f"run {cli_runs.ids['cli-a']} (cli-a)" == lines[0]
    assert "  state: finished, exit code 0" in lines
    assert "    eval/" in lines and "      nrmse         0.12" in lines
    assert ["operator/loss", "0..39", "operator/step", "40"] == next(
        line.split()[:4] for line in lines if line.strip().startswith("operator/loss")
    )
    assert "    eval/per_sample: 2 rows x 2 columns (summary)" in lines
    assert "    [INFO] nrmse checked: nrmse = 0.12" in lines
    assert "  gates: eval fail" in lines
    assert ["eval", "nrmse", "<", "0.11", "threshold", "0.12", "+0.01", "+9.09091%", "fail", "(threshold)"] == next(
        line.split() for line in lines if "threshold" in line and line.strip().startswith("eval")
    )


def test_show_flags_a_run_without_exit_record(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose process was killed has no exit record: show says INCOMPLETE, --json complete=false."""
    _, text, _ = show(cli_runs, capsys, cli_runs.ids["cli-killed"])
    status, out, _ = show(cli_runs, capsys, cli_runs.ids["cli-killed"], "--json")
    described = json.loads(out)
    assert 0 == status
    assert ("incomplete", None, False) == (described["state"], described["exit_code"], described["complete"])
    assert any(line.startswith("  state: INCOMPLETE: no exit record") for line in text.splitlines())


def test_show_exits_2_for_what_is_not_a_run(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An unknown id, an empty folder and a file that is not a .wandb log each exit 2, naming the argument."""
    garbage = tmp_path / "run-x.wandb"
    garbage.write_bytes(b"not a wandb file")
    for argument in ("nosuchid", str(tmp_path), str(garbage)):
        status, out, err = show(cli_runs, capsys, argument)
        assert (2, "") == (status, out)
        assert err.startswith(f"instrument show: {argument}: not a ")


def test_show_finds_a_run_folder_named_as_wandb_lists_it(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder's name alone (as ``ls wandb`` prints it) names the run in ./wandb."""
    folder = cli_runs.folder("cli-a")
    status, out, err = show(cli_runs, capsys, folder.name)
    assert (0, f"run {cli_runs.ids['cli-a']} (cli-a)") == (status, out.splitlines()[0]), err
