"""The Lightning example (examples/lightning/) run as a user runs it: Lightning's WandbLogger owns
the run, a decorated stage reports into it. Real wandb offline, read back from the .wandb file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, wandb_env

from instrument.runfile import read_runs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = ROOT / "examples" / "lightning" / "train.py"


def test_lightning_example_writes_one_run_with_lightnings_metrics_and_the_stage(tmp_path: Path) -> None:
    """One run: Lightning's train_loss and trainer/global_step for its 16 steps, the 16 health
    points on health/step 0..15 sharing Lightning's rows (wandb's step stays Lightning's), the
    hyperparameters in the config."""
    pytest.importorskip("lightning", reason="the frameworks extra is not installed")
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=wandb_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert 0 == result.returncode, result.stderr
    assert "Lightning's run holds its own metrics and instrument's stage" in result.stdout
    (run,) = read_runs(tmp_path / "wandb")
    assert "instrument-lightning" == run.project
    assert 16 == len(run.series("train_loss"))
    assert list(range(16)) == [step for step, _ in run.series("health/loss")]
    assert list(range(16)) == [step for step, _ in run.series("health/weight_norm")]
    assert 16 == len(run.history)
    assert 0.05 == run.config["lr"]
    assert 0 == run.exit_code
