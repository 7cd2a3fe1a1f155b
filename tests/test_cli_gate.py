"""Tests of ``instrument gate check`` and ``instrument baseline`` on gated runs written by real wandb
offline (the session's ``cli_runs``: cli-a fails ``nrmse < 0.11``; no baseline is stored yet)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import CliRuns

from instrument.cli import main

pytestmark = pytest.mark.integration


def run(runs: CliRuns, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv), runs.environ)
    out, err = capsys.readouterr()
    return status, out, err


def test_gate_check_exit_codes(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """gate check exits 1 for a failed gate, 3 while a regression gate has no baseline, 0 once it
    passes against the stored baseline, 1 for a regression beyond the tolerance, 2 for no gates."""
    runs = cli_runs.copy(tmp_path / "root")
    a, b, c = (runs.ids[name] for name in ("cli-a", "cli-b", "cli-c"))
    assert 1 == run(runs, capsys, "gate", "check", a)[0]  # nrmse 0.12 is not < 0.11
    status, out, _ = run(runs, capsys, "gate", "check", b)
    assert 3 == status  # passes its threshold; the regression gate has no baseline
    store = Path(os.path.relpath(runs.root / ".instrument" / "baselines" / "cli-test" / "eval.json"))
    assert f"No baseline for eval in {store}: set one with `instrument baseline set RUN`." in out
    assert 0 == run(runs, capsys, "baseline", "set", b)[0]
    assert 0 == run(runs, capsys, "gate", "check", b)[0]  # against itself
    status, out, _ = run(runs, capsys, "gate", "check", c)
    assert 1 == status  # 0.10 against the baseline 0.08: worse by more than 5 %
    assert ["eval", "nrmse", "min", "(tolerance", "0.004)", "baseline", "0.08", "0.1", "+0.02", "+25%", "fail",
            "(regression)"] == next(line.split() for line in out.splitlines() if "(tolerance" in line)
    for argument in (runs.ids["cli-killed"], "nosuchid"):
        status, out, err = run(runs, capsys, "gate", "check", argument)
        assert (2, "") == (status, out)
        assert err.startswith("instrument gate check: ")


@pytest.mark.parametrize("kind", ["best", "median"])
def test_gate_check_hints_at_the_history_for_a_history_baseline(
    cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    """A suite declared with Baseline.best(n) or median(n) and no earlier recorded run: gate check
    exits 3 and says that the suite's history holds none yet, never to set a stored baseline
    (which such a suite does not read)."""
    runs = cli_runs.copy(tmp_path / "root")
    b = runs.ids["cli-b"]
    sidecar = runs.root / ".instrument" / "runs" / b / "gates.json"
    data = json.loads(sidecar.read_text())
    data["suites"]["eval"]["declaration"]["baseline"] = {"kind": kind, "values": None, "n": 3, "run": None,
                                                          "promote": None}
    sidecar.write_text(json.dumps(data))
    history = runs.root / ".instrument" / "history" / "cli-test" / "eval.jsonl"
    history.unlink(missing_ok=True)  # the suite has recorded no run yet
    status, out, _ = run(runs, capsys, "gate", "check", b)
    hint = (f"No baseline for eval: Baseline.{kind}(3) compares with the last 3 earlier runs of the suite, and "
            f"{os.path.relpath(history)} holds none with these metrics yet (each run of the suite records one there).")
    assert (3, hint, False) == (status, out.splitlines()[-1], "baseline set" in out)


def test_gate_check_against_a_given_baseline_prints_markdown(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    """--baseline takes another run's sidecar; --md prints a heading and a GitHub table for CI."""
    runs = cli_runs.copy(tmp_path / "root")
    sidecar = runs.root / ".instrument" / "runs" / runs.ids["cli-a"] / "gates.json"
    status, out, _ = run(runs, capsys, "gate", "check", runs.ids["cli-c"], "--baseline", str(sidecar), "--md")
    lines = out.splitlines()
    assert 0 == status  # 0.10 is better than cli-a's 0.12
    assert f"### Gates of run {runs.ids['cli-c']} (cli-c): ✅ passed" == lines[0]
    assert "| suite | metric | gate | reference | value | delta | delta % | status |" == lines[4]
    assert "| eval | nrmse | min (tolerance 0.006) | baseline 0.12 | 0.1 | -0.02 | -16.6667% | pass |" in lines


def test_baseline_promote_refuses_a_failed_run_and_show_lists_the_store(
    cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """promote writes nothing for a run whose gates failed (exit 2) and names the command that
    writes it anyway, set, which does; show lists it."""
    runs = cli_runs.copy(tmp_path / "root")
    environ = {**runs.environ}
    status, _, err = run(runs, capsys, "baseline", "promote", runs.ids["cli-a"])
    assert 2 == status and "failed" in err
    assert "instrument baseline set" in err, err
    assert not (runs.root / ".instrument" / "baselines").exists()
    assert 0 == main(["baseline", "promote", runs.ids["cli-b"]], environ)
    store = runs.root / ".instrument" / "baselines" / "cli-test" / "eval.json"
    assert {"nrmse": 0.08} == {k: v["value"] for k, v in json.loads(store.read_text())["metrics"].items()}
    capsys.readouterr()
    status, out, _ = run(runs, capsys, "baseline", "show")
    assert 0 == status
    assert ["cli-test", "eval", "nrmse", "0.08", "0.004", "min", runs.ids["cli-b"]] == out.splitlines()[1].split()[:7]
