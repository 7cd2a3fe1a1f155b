"""The media example (examples/media/) run as a user runs it, with real wandb offline and no account."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, wandb_env

from instrument.runfile import read_runs

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "examples" / "media" / "train_and_evaluate.py"


@pytest.mark.slow
def test_media_example_prints_each_value_in_its_place(tmp_path: Path) -> None:
    """The example's report shows series, summary, both tables, the image, the file, the artifact and the config."""
    environment = {k: v for k, v in wandb_env(tmp_path).items() if k not in ("WANDB_MODE", "WANDB_DIR")}
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert 0 == result.returncode, result.stderr
    out = result.stdout
    for line in (
        "history   operator/loss: 30 points on operator/step 0..29, summary {'min': ",
        "summary   eval/nrmse = ",
        "(in history: False)",
        "table     eval/metrics: 2 rows x 2 columns",
        "table     eval/comparison: 2 rows x 3 columns",
        "['metric', 'baseline', 'candidate']",
        "image     eval/predictions: 33x16 png",
        "file      reports/report.md (policy now)",
        "artifact  operator (type model, aliases best, latest): operator.npy",
        "config    eval = {'grid': 16, 'baseline': 'mean'}",
    ):
        assert line in out
    (run,) = read_runs(tmp_path / "wandb")
    files = run.path.parent / "files"
    assert (files / "reports/report.md").read_text().startswith("# Evaluation")
    assert (files / run.summary["eval/predictions"]["path"]).is_file()
    assert 30 == len(run.series("operator/weights"))
