"""Tests of ``instrument plot`` on runs written by real wandb offline (the session's ``cli_runs``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import CliRuns

from instrument.cli import main

pytestmark = pytest.mark.integration


def test_plot_writes_a_self_contained_report_and_its_vega_lite_spec(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The report has one inline SVG per stage and one of the gates, the eval summary and no script or
    remote file; the Vega-Lite file beside it holds every point of each series on its stage's own
    step axis, and a bar per gate coloured by its verdict."""
    out = tmp_path / "report.html"
    status = main(["plot", cli_runs.ids["cli-a"], "--out", str(out)], cli_runs.environ)
    page = out.read_text()
    spec = json.loads((tmp_path / "report.vl.json").read_text())
    stages = {chart["title"]: chart["hconcat"] for chart in spec["vconcat"] if "hconcat" in chart}
    (gates,) = [chart for chart in spec["vconcat"] if "layer" in chart]
    assert 0 == status
    assert 3 == page.count("<svg")
    assert ["<h2>stage operator</h2>", "<h2>stage diffusion</h2>", "<h2>eval summary</h2>", "<h2>gates</h2>"] == \
        re.findall(r"<h2>[^<]*</h2>", page)
    assert '<td>eval/nrmse</td><td class="num">0.12</td>' in page
    assert not re.search(r"<script|\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)
    assert ["stage operator (x: operator/step)", "stage diffusion (x: diffusion/step)"] == list(stages)
    operator = {chart["encoding"]["y"]["title"]: chart for chart in stages["stage operator (x: operator/step)"]}
    assert ["operator/grad_norm", "operator/loss", "operator/lr"] == sorted(operator)
    assert list(range(40)) == [point["step"] for point in operator["operator/loss"]["data"]["values"]]
    assert "operator/step" == operator["operator/loss"]["encoding"]["x"]["title"]
    assert 0.12 * 10 == operator["operator/loss"]["data"]["values"][0]["value"]
    assert [("eval/nrmse < 0.11", "fail"), ("eval/nrmse min vs baseline", "no_baseline")] == [
        (bar["gate"], bar["status"]) for bar in gates["data"]["values"]
    ]
    assert '<td class="fail">fail (threshold)</td>' in page


def test_plot_exits_2_for_what_is_not_a_run(cli_runs: CliRuns, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An unknown run id exits 2 and writes nothing."""
    status = main(["plot", "nosuchid", "--out", str(tmp_path / "r.html")], cli_runs.environ)
    assert (2, []) == (status, list(tmp_path.iterdir()))
