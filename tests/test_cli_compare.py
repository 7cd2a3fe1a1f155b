"""Tests of ``instrument compare`` on runs written by real wandb offline (the session's ``cli_runs``)."""

from __future__ import annotations

import pytest
from helpers import CliRuns

from instrument import runfile
from instrument.cli import _compare, main

pytestmark = pytest.mark.integration


def read(cli_runs: CliRuns, name: str) -> runfile.RunFile:
    (path,) = cli_runs.folder(name).glob("run-*.wandb")
    return runfile.read_run_file(path)


def test_compare_lists_every_shared_metric_with_change_and_percent(cli_runs: CliRuns) -> None:
    """Each shared numeric summary metric appears once with A, B, B - A and the change in % of |A|."""
    rows = _compare.compare(read(cli_runs, "cli-a"), read(cli_runs, "cli-b"))
    nrmse = next(r for r in rows if r["metric"] == "eval/nrmse")
    assert ["diffusion/loss", "eval/mse", "eval/nrmse", "eval/nrmse_stderr", "operator/grad_norm",
            "operator/loss", "operator/lr"] == [r["metric"] for r in rows]  # no step keys, no wandb keys
    assert (0.12, 0.08) == (nrmse["a"], nrmse["b"])
    assert pytest.approx(-0.04) == nrmse["delta"]
    assert pytest.approx(-100 / 3) == nrmse["delta_pct"]
    assert ("min", "better") == (nrmse["direction"], nrmse["verdict"])  # from the runs' gates
    assert (None, None) == (rows[1]["direction"], rows[1]["verdict"])  # eval/mse: no gate, no direction


def test_compare_fails_on_a_gated_regression(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str]) -> None:
    """--md prints a GFM table; --fail-on-regression exits 1 when a gated metric got worse beyond
    its regression tolerance (0.08 -> 0.12), and 0 the other way round."""
    b, a = cli_runs.ids["cli-b"], cli_runs.ids["cli-a"]
    status = main(["compare", b, a, "--md", "--fail-on-regression"], cli_runs.environ)
    lines = capsys.readouterr().out.splitlines()
    assert 1 == status
    assert f"| metric | A {b} | B {a} | change | change % | better | verdict |" == lines[2]
    assert "|---|---:|---:|---:|---:|---|---|" == lines[3]
    assert "| eval/nrmse | 0.08 | 0.12 | +0.04 | +50% | lower ↓ | worse |" in lines
    assert "worse in B: eval/nrmse" == lines[-1]
    assert 0 == main(["compare", a, b, "--fail-on-regression"], cli_runs.environ)
