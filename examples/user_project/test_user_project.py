"""The user project's unit tests: written only against the ``instrument_recorder`` fixture."""

from __future__ import annotations

import pytest

import instrument

from .evaluation import evaluate
from .training import train

DATA = [(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]


def test_each_epoch_is_one_point_on_the_fit_axis(instrument_recorder):
    """Five epochs make five history rows on the fit/step axis, the loss going down."""
    train(DATA, lr=0.05, epochs=5)
    run = instrument_recorder.run()
    losses = [loss for _, loss in run.series("fit/loss")]
    assert [0, 1, 2, 3, 4] == [step for step, _ in run.series("fit/loss")]
    assert losses == sorted(losses, reverse=True)
    assert {"lr": 0.05, "epochs": 5} == run.config
    assert {"min": losses[-1]} == run.summary["fit/loss"]


def test_evaluation_lands_in_the_summary_only(instrument_recorder):
    """The eval's numbers and table are summary values, never history."""
    evaluate(2.0, DATA)
    run = instrument_recorder.run()
    assert 0.0 == run.summary["eval/nrmse"]
    assert [] == run.history
    assert [[1.0, 2.0, 2.0], [2.0, 4.0, 4.0], [3.0, 6.0, 6.0]] == run.tables["eval/samples"][0]["rows"]


def test_training_then_evaluation_share_one_run(instrument_recorder):
    """Training and evaluation in one process write one run; finishing it records exit code 0."""
    weight = train(DATA, epochs=3)
    evaluate(weight, DATA)
    instrument.finish()
    run = instrument_recorder.run()
    assert (3, True, 0) == (len(run.history), run.finished, run.exit_code)
    assert pytest.approx(run.summary["eval/mse"]) == sum((weight * x - y) ** 2 for x, y in DATA) / 3


def test_a_pipeline_links_its_training_subprocess(instrument_recorder):
    """Under a pipeline, training in a (simulated) subprocess makes a linked run; the eval lands in the pipeline run."""
    with instrument.pipeline(project="user-project"):
        with instrument_recorder.subprocess():
            weight = train(DATA, epochs=2)
        with instrument_recorder.subprocess():
            evaluate(weight, DATA)
    pipeline = instrument_recorder.run(job_type="pipeline")
    training = instrument_recorder.run(job_type="train")
    assert (pipeline.group, [f"parent:{pipeline.id}"]) == (training.group, list(training.tags))
    assert (2, []) == (len(training.history), pipeline.history)
    assert "eval/nrmse" in pipeline.summary
