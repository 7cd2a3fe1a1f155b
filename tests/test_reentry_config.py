"""Re-entry and config conflicts (promises 7 and 8): a pipeline called twice makes two runs;
a changed config value keeps the last one and never stops logging; an eval's summary survives a
stage value under the same key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import run_script

import instrument
from instrument.runfile import read_runs
from instrument.testing import recording


def instrument_warnings(stderr: str) -> list[str]:
    """Return the InstrumentationWarning messages a script printed."""
    return re.findall(r"InstrumentationWarning: (.*)", stderr)


@pytest.mark.integration
def test_a_pipeline_called_twice_makes_two_runs_each_with_its_own_config_and_summary(wandb_root: Path) -> None:
    """A hyperparameter loop calling a ``@pipeline`` twice: two finished runs with distinct ids,
    each with its own config and summary, nothing merged, nothing raised."""
    run_script(wandb_root, """
import instrument

@instrument.run_config
def config(lr):
    return {"lr": lr}

@instrument.eval_summary(prefix="eval")
def evaluate(lr):
    return {"score": lr * 10}

@instrument.pipeline(project="p")
def main(lr):
    config(lr)
    evaluate(lr)

for lr in (0.1, 0.2):
    main(lr)
""")
    runs = sorted(read_runs(wandb_root / "wandb"), key=lambda run: run.config["lr"])
    assert [(0.1, 1.0, 0), (0.2, 2.0, 0)] == [(r.config["lr"], r.summary["eval/score"], r.exit_code) for r in runs]
    assert runs[0].run_id != runs[1].run_id


def test_a_pipeline_used_again_after_the_first_finished_makes_a_fresh_run() -> None:
    """The same ``pipeline`` object entered twice in one process: two recorded runs, both finished."""
    flow = instrument.pipeline(project="p")

    @instrument.eval_summary(prefix="eval")
    def evaluate(score: float) -> dict[str, float]:
        return {"score": score}

    with recording() as recorded:
        for score in (1.0, 2.0):
            with flow:
                evaluate(score)
    assert [(1.0, 0), (2.0, 0)] == [(run.summary["eval/score"], run.exit_code) for run in recorded.runs]


@pytest.mark.integration
def test_c04_config_changed_later_keeps_logging_and_the_last_value(wandb_root: Path) -> None:
    """Config ``started="t0"``, a point, ``started="t1"``, a point: both points land, the config
    holds "t1", one warning names the key and the value kept. An eval's summary key that a stage
    also logs lands in history and the eval's value is the summary at finish (C03's collision)."""
    result = run_script(wandb_root, """
import instrument

@instrument.run_config
def config(started):
    return {"started": started, "lr": 0.1}

@instrument.training_stage("operator")
def train_step(loss):
    return {"loss": loss}

@instrument.eval_summary(prefix="eval")
def evaluate():
    return {"nrmse": 0.09}

@instrument.training_stage("eval")
def eval_stage():
    return {"nrmse": 0.5}

config("t0")
train_step(0.2)
config("t1")
train_step(0.1)
evaluate()
eval_stage()
""")
    (run,) = read_runs(wandb_root / "wandb")
    assert [(0, 0.2), (1, 0.1)] == run.series("operator/loss")
    assert ("t1", 0.1) == (run.config["started"], run.config["lr"])
    assert ([(0, 0.5)], 0.09) == (run.series("eval/nrmse"), run.summary["eval/nrmse"])
    messages = instrument_warnings(result.stderr)
    config_messages = [m for m in messages if "started" in m]
    assert 1 == len(config_messages), result.stderr
    assert "'t1'" in config_messages[0] and "last value" in config_messages[0]
    assert 1 == len([m for m in messages if "'eval/nrmse'" in m]), result.stderr


def test_a_config_change_in_strict_mode_raises_only_after_the_value_landed() -> None:
    """Strict mode (the fixture's) flags a changed config value, but only after writing it:
    the last value wins and logging goes on."""
    @instrument.run_config
    def config(lr: float) -> dict[str, float]:
        return {"lr": lr}

    @instrument.training_stage("operator")
    def train_step() -> dict[str, float]:
        return {"loss": 1.0}

    with recording(strict=True) as recorded:
        config(0.1)
        with pytest.raises(instrument.InstrumentationError, match="lr"):
            config(0.2)
        train_step()
    assert ({"lr": 0.2}, [(0, 1.0)]) == (recorded.run().config, recorded.run().series("operator/loss"))
