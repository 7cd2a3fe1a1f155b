"""A stage's steps: the ``step`` key, ``instrument.log`` inside a call, a ``Series`` marker's step,
a generator's ``return``; recorded, and on real wandb offline (one subprocess)."""

from __future__ import annotations

import contextvars
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script

import instrument
from instrument.runfile import read_runs
from instrument.testing import recording


def messages(caught: list[warnings.WarningMessage]) -> list[str]:
    """Return the InstrumentationWarning messages among *caught*."""
    return [str(w.message) for w in caught if issubclass(w.category, instrument.InstrumentationWarning)]


# The step key --------------------------------------------------------------------------------


def test_a_stage_step_key_is_the_points_step_and_not_a_value() -> None:
    """``{"loss": l, "step": 100 * i}`` puts each point at step 100 * i on ``k/step``, with no warning;
    the axis' summary is the last step."""

    @instrument.training_stage("k")
    def train_step(i: int) -> dict[str, Any]:
        return {"loss": 1.0 / (i + 1), "step": 100 * i}

    with warnings.catch_warnings(record=True) as caught, recording() as recorded:
        warnings.simplefilter("always")
        for i in range(3):
            train_step(i)
    run = recorded.run()
    assert ([(0, 1.0), (100, 0.5), (200, 1 / 3)], [{"k/loss", "k/step", "_step"}] * 3, 200, []) == (
        run.series("k/loss"), [set(row) for row in run.history], run.summary["k/step"], messages(caught))


@pytest.mark.parametrize("step", [0.5, "10", 2**70])
def test_a_step_key_that_is_no_whole_64_bit_number_warns_and_the_point_takes_the_next_step(step: Any) -> None:
    """A fractional, text or too large step key is named in a warning (an error in strict mode); the
    point lands at the next automatic step and the rest of the value lands."""

    @instrument.training_stage("k")
    def train_step() -> dict[str, Any]:
        return {"loss": 1.0, "step": step}

    with pytest.warns(instrument.InstrumentationWarning, match=r"'k/step'.*whole number.*next automatic step"), \
            recording(strict=False) as recorded:
        train_step()
    with recording(), pytest.raises(instrument.InstrumentationError, match="'k/step'"):
        train_step()
    assert [(0, 1.0)] == recorded.run().series("k/loss")


def test_step_argument_wins_over_a_different_step_key_with_a_warning() -> None:
    """``instrument.log({"x": 1.0, "step": 3}, step=5)`` in a stage puts the point at 5 and names both."""

    @instrument.training_stage("k")
    def train_step() -> None:
        instrument.log({"x": 1.0, "step": 3}, step=5)

    with pytest.warns(instrument.InstrumentationWarning, match=r"step=5 and the step key 3 differ; step=5 was used"), \
            recording(strict=False) as recorded:
        train_step()
    assert [(5, 1.0)] == recorded.run().series("k/x")


def test_a_series_step_key_is_the_step_of_the_evals_point() -> None:
    """An eval returning ``Series({"step": 7, "point": 1.0})`` makes a point at step 7 of ``eval/step``."""

    @instrument.eval_summary(prefix="eval")
    def evaluate(step: int) -> Any:
        return instrument.Series({"step": step, "point": 1.0})

    with recording() as recorded:
        evaluate(7)
        evaluate(9)
    assert [(7, 1.0), (9, 1.0)] == recorded.run().series("eval/point")


def test_a_stage_summary_under_its_axis_key_is_dropped_with_a_warning() -> None:
    """``Summary({"step": 3})`` from stage ``k`` would be ``k/step``, whose summary is the axis' last
    step: it is dropped with a warning naming the key, and the summary keeps the last step."""

    @instrument.training_stage("k")
    def train_step(i: int) -> Any:
        return {"loss": 1.0} if i == 0 else instrument.Summary({"step": 3, "best": 0.5})

    with pytest.warns(instrument.InstrumentationWarning, match=r"'k/step'.*step axis of stage 'k'.*dropped"), \
            recording(strict=False) as recorded:
        train_step(0)
        train_step(1)
    assert (0, 0.5) == (recorded.run().summary["k/step"], recorded.run().summary["k/best"])


def test_a_point_holding_only_its_step_warns_that_nothing_was_written() -> None:
    """A stage returning ``{"step": 3}`` writes nothing and says so."""

    @instrument.training_stage("k")
    def train_step() -> dict[str, Any]:
        return {"step": 3}

    with pytest.warns(instrument.InstrumentationWarning, match="only its step; nothing was written"), \
            recording(strict=False) as recorded:
        train_step()
    assert [] == recorded.runs


def test_an_evals_summary_step_keeps_its_value_beside_its_series_axis() -> None:
    """An eval's summary key ``eval/step`` and a later ``Series`` point on the axis ``eval/step``
    collide: one warning names the key, and the summary holds the eval's value at finish."""

    @instrument.eval_summary(prefix="eval")
    def evaluate(i: int) -> Any:
        return {"step": 100, "acc": 0.5} if i == 0 else instrument.Series({"point": 1.0})

    with pytest.warns(instrument.InstrumentationWarning, match="'eval/step' is both an eval's summary key"), \
            recording(strict=False) as recorded:
        evaluate(0)
        evaluate(1)
    assert (100, [(0, 1.0)]) == (recorded.run().summary["eval/step"], recorded.run().series("eval/point"))


def test_outside_a_stage_a_step_key_is_a_value_and_a_step_argument_is_not_used() -> None:
    """Outside any call ``instrument.log({"step": 5})`` logs ``step`` as a value (as ``wandb.log``
    does), and ``step=5`` has no axis: a warning (an error in strict mode), the row still lands."""
    with pytest.warns(instrument.InstrumentationWarning, match="step=5 has no axis to go on: outside a stage"), \
            recording(strict=False) as recorded:
        instrument.log({"x": 1.0, "step": 5})
        instrument.log({"x": 2.0}, step=5)
    with recording(), pytest.raises(instrument.InstrumentationError, match="has no axis"):
        instrument.log({"x": 2.0}, step=5)
    assert [{"x": 1.0, "step": 5}, {"x": 2.0}] == [
        {k: v for k, v in row.items() if k != "_step"} for row in recorded.run().history]


def test_a_bare_value_lands_under_the_prefix_value_key() -> None:
    """A stage or eval returning a bare number (not a mapping) lands as ``<prefix>/value``."""

    @instrument.training_stage("k")
    def train_step() -> float:
        return 0.5

    @instrument.eval_summary(prefix="eval")
    def evaluate() -> float:
        return 0.25

    with recording() as recorded:
        train_step()
        evaluate()
    assert ([(0, 0.5)], 0.25) == (recorded.run().series("k/value"), recorded.run().summary["eval/value"])


# instrument.log inside a call ------------------------------------------------------------------


def test_log_inside_a_stage_call_joins_the_calls_point() -> None:
    """A stage that logs ``lr`` and returns ``loss`` makes one point per call: both at steps 0, 1, 2, one row each."""

    @instrument.training_stage("operator")
    def train_step(i: int) -> dict[str, float]:
        instrument.log({"lr": 0.1})
        return {"loss": 1.0 / (i + 1)}

    with recording() as recorded:
        for i in range(3):
            train_step(i)
    run = recorded.run()
    assert ([(0, 0.1), (1, 0.1), (2, 0.1)], [0, 1, 2], 3) == (
        run.series("operator/lr"), [step for step, _ in run.series("operator/loss")], len(run.history))


def test_a_key_logged_again_in_a_call_starts_the_next_point_and_the_return_joins_the_last() -> None:
    """An epoch stage logging ``batch_loss`` per batch makes a point per batch; the returned
    ``epoch_loss`` joins the epoch's last batch point, and the next epoch goes on from there."""

    @instrument.training_stage("train")
    def epoch() -> dict[str, float]:
        for batch in range(3):
            instrument.log({"batch_loss": float(batch)})
        return {"epoch_loss": 9.0}

    with recording() as recorded:
        epoch()
        epoch()
    run = recorded.run()
    assert ([(0, 0.0), (1, 1.0), (2, 2.0), (3, 0.0), (4, 1.0), (5, 2.0)], [(2, 9.0), (5, 9.0)]) == (
        run.series("train/batch_loss"), run.series("train/epoch_loss"))


def test_a_logged_step_is_a_point_of_its_own_after_what_the_call_logged_before() -> None:
    """``log(a)``, ``log(b, step=10)``, ``return c`` in one call: ``a`` at step 0 first, ``b`` at 10, ``c`` at 11."""

    @instrument.training_stage("k")
    def train_step() -> dict[str, float]:
        instrument.log({"a": 1.0})
        instrument.log({"b": 2.0}, step=10)
        return {"c": 3.0}

    with recording() as recorded:
        train_step()
    run = recorded.run()
    assert ([(0, 1.0)], [(10, 2.0)], [(11, 3.0)]) == (run.series("k/a"), run.series("k/b"), run.series("k/c"))


def test_what_a_call_logged_lands_when_its_body_raises() -> None:
    """A stage that logs and then raises: the user's exception propagates unchanged and the logged point lands."""

    @instrument.training_stage("k")
    def train_step() -> None:
        instrument.log({"a": 1.0})
        raise ValueError("boom")

    with recording() as recorded, pytest.raises(ValueError, match=r"^boom$"):
        train_step()
    assert [(0, 1.0)] == recorded.run().series("k/a")


def test_a_generator_stage_joins_logs_to_each_yield_and_logs_its_return_value() -> None:
    """A generator stage: what it logs before a yield joins that yield's point, what it logs after the
    last yield is a point at the end, and its ``return {...}`` is its last point."""

    @instrument.training_stage("gen")
    def steps() -> Any:
        for i in range(2):
            instrument.log({"lr": 0.1 * (i + 1)})
            yield {"loss": float(i)}
        instrument.log({"lr": 9.0})
        return {"final": 2.0}

    with recording() as recorded:
        assert [{"loss": 0.0}, {"loss": 1.0}] == list(steps())
    run = recorded.run()
    assert ([(0, 0.1), (1, 0.2), (2, 9.0)], [(0, 0.0), (1, 1.0)], [(2, 2.0)]) == (
        run.series("gen/lr"), run.series("gen/loss"), run.series("gen/final"))


def test_a_generator_evals_return_value_lands_in_the_summary() -> None:
    """A generator eval's ``return {...}`` lands in the summary after what it yielded; the caller's
    ``yield from`` still gets the returned value."""

    @instrument.eval_summary(prefix="eval")
    def evaluate() -> Any:
        yield {"partial": 1.0}
        return {"final": 2.0}

    def outer() -> Any:
        return (yield from evaluate())

    with recording() as recorded:
        gen = outer()
        assert {"partial": 1.0} == next(gen)
        with pytest.raises(StopIteration) as stop:
            next(gen)
    assert ({"final": 2.0}, 1.0, 2.0) == (stop.value.value, recorded.run().summary["eval/partial"],
                                          recorded.run().summary["eval/final"])


def test_a_thread_handed_the_calls_context_joins_its_point() -> None:
    """A thread started with the call's context (``contextvars.copy_context().run``) and joined within
    the call logs into the call's point."""

    @instrument.training_stage("operator")
    def train_step() -> dict[str, float]:
        thread = threading.Thread(target=contextvars.copy_context().run,
                                  args=(instrument.log, {"grad_norm": 3.0}))
        thread.start()
        thread.join()
        return {"loss": 0.5}

    with recording() as recorded:
        train_step()
        train_step()
    run = recorded.run()
    assert ([(0, 3.0), (1, 3.0)], [(0, 0.5), (1, 0.5)], 2) == (
        run.series("operator/grad_norm"), run.series("operator/loss"), len(run.history))


def test_log_inside_an_eval_adds_summary_keys_its_gates_see() -> None:
    """Inside an eval ``instrument.log`` values are the eval's summary keys, and its gates judge them;
    a ``step=`` there has no axis (a warning)."""

    @instrument.eval_summary(prefix="eval", gates={"acc": ">= 0.5"})
    def evaluate() -> dict[str, float]:
        instrument.log({"acc": 0.9})
        return {"loss": 0.1}

    @instrument.eval_summary(prefix="other")
    def with_step() -> None:
        instrument.log({"x": 1.0}, step=3)

    with recording(strict=False) as recorded:
        evaluate()
        with pytest.warns(instrument.InstrumentationWarning, match="step=3 has no axis to go on: an eval's values"):
            with_step()
    summary = recorded.run().summary
    assert (0.9, 0.1, 1, 1.0) == (summary["eval/acc"], summary["eval/loss"], summary["gates/eval/passed"],
                                  summary["other/x"])


# On real wandb -----------------------------------------------------------------------------------

STEPS = """
import instrument

@instrument.training_stage("k")
def stepped(i):
    return {"loss": 1.0 / (i + 1), "step": 100 * i}

@instrument.training_stage("operator")
def train_step(i):
    instrument.log({"lr": 0.1})
    return {"loss": 1.0 / (i + 1)}

@instrument.training_stage("gen")
def steps():
    instrument.log({"lr": 0.5})
    yield {"loss": 1.0}
    return {"final": 2.0}

@instrument.eval_summary(prefix="eval")
def evaluate(step):
    return instrument.Series({"step": step, "point": 1.0})

for i in range(3):
    stepped(i)
    train_step(i)
list(steps())
evaluate(7)
evaluate(9)
"""


def _facts(run: Any) -> dict[str, Any]:
    """What the STEPS script left in *run*: each series on its axis, the rows of each stage, the axis summary."""
    series = {key: run.series(key) for key in ("k/loss", "operator/lr", "operator/loss", "gen/lr", "gen/loss",
                                               "gen/final", "eval/point")}
    rows = {axis: sum(1 for row in run.history if f"{axis}/step" in row) for axis in ("k", "operator", "gen", "eval")}
    keys = sorted({key for row in run.history for key in row if not key.startswith("_")})
    return {"series": series, "rows": rows, "keys": keys, "k/step": run.summary["k/step"]}


@pytest.mark.integration
def test_steps_land_on_real_wandb_as_recorded(wandb_root: Path) -> None:
    """On real wandb offline: a step key is the point's step, ``instrument.log`` joins the call's
    point, a generator's return is its last point, a ``Series`` step key is the eval point's step;
    and the recorder holds exactly the same."""
    run_script(wandb_root, STEPS)
    (written,) = read_runs(wandb_root / "wandb")
    with recording() as recorded:
        exec(compile(STEPS, "steps", "exec"), {})
    expected_series = {
        "k/loss": [(0, 1.0), (100, 0.5), (200, 1 / 3)],
        "operator/lr": [(0, 0.1), (1, 0.1), (2, 0.1)],
        "operator/loss": [(0, 1.0), (1, 0.5), (2, 1 / 3)],
        "gen/lr": [(0, 0.5)], "gen/loss": [(0, 1.0)], "gen/final": [(1, 2.0)],
        "eval/point": [(7, 1.0), (9, 1.0)],
    }
    assert expected_series == _facts(written)["series"]
    assert {"k": 3, "operator": 3, "gen": 2, "eval": 2} == _facts(written)["rows"]
    assert _facts(written) == _facts(recorded.run())
