"""A pipeline entered inside another (the same thread or task) is the outer's linked child: the
outer's group, tag ``parent:<outer id>``, listed in the outer's ``pipeline/children``; records
inside it go to it, and back to the outer once it closes."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_script

import instrument
from instrument.runfile import read_runs
from instrument.testing import recording


@instrument.training_stage("op")
def step(value: float) -> dict[str, float]:
    return {"loss": value}


@instrument.eval_summary(prefix="ev")
def evaluate(value: float) -> dict[str, float]:
    return {"v": value}


def test_a_nested_pipeline_is_a_child_of_the_outer_and_records_go_back_to_the_outer_after_it() -> None:
    """Inner records land in the inner run, the outer's before and after it in the outer run; the
    inner run is in the outer's group and project, tagged ``parent:<outer id>``, listed as its child."""
    with recording() as recorded:
        with instrument.pipeline(project="nest", config={"a": 1}) as outer:
            step(0.0)
            with instrument.pipeline() as inner:
                step(10.0)
                evaluate(2.0)
                assert outer.id == inner.parent
            step(1.0)
            evaluate(3.0)
        outer_run, inner_run = recorded.runs
    assert ([(0, 0.0), (1, 1.0)], 3.0, [inner.id]) == (
        outer_run.series("op/loss"), outer_run.summary["ev/v"], outer_run.summary["pipeline/children"])
    assert ([(0, 10.0)], 2.0) == (inner_run.series("op/loss"), inner_run.summary["ev/v"])
    assert ("nest", outer_run.group, (f"parent:{outer.id}",), "pipeline") == (
        inner_run.project, inner_run.group, inner_run.tags, inner_run.job_type)


def test_a_nested_pipelines_own_options_win_over_the_outers() -> None:
    """The inner pipeline's own project, group and tags are kept; the parent tag is added."""
    with recording() as recorded:
        with instrument.pipeline(project="nest") as outer, instrument.pipeline(project="other", group="g", tags=["t"]):
            step(0.0)
        _, inner_run = recorded.runs
    assert ("other", "g", ("t", f"parent:{outer.id}")) == (inner_run.project, inner_run.group, inner_run.tags)


def test_pipelines_one_after_the_other_are_not_linked() -> None:
    """A pipeline entered after another closed is a top-level run again: no parent tag, its own group."""
    with recording() as recorded:
        with instrument.pipeline(project="nest"):
            step(0.0)
        with instrument.pipeline(project="nest") as second:
            step(1.0)
        _, second_run = recorded.runs
    assert ((), second.id, None) == (second_run.tags, second_run.group, second.parent)


NESTED = """
import instrument

@instrument.training_stage("op")
def step(value):
    return {"loss": value}

@instrument.eval_summary(prefix="ev")
def evaluate(value):
    return {"v": value}

@instrument.pipeline(config={"which": "inner"})
def inner():
    step(10.0)
    evaluate(2.0)

@instrument.pipeline(config={"which": "plain"})
def plain_inner():
    step(20.0)

@instrument.pipeline(project="nest", config={"which": "outer"})
def outer():
    step(0.0)
    evaluate(1.0)
    inner()
    plain_inner()
    step(1.0)
    evaluate(3.0)

outer()
"""


@pytest.mark.integration
@pytest.mark.slow
def test_real_wandb_a_nested_pipeline_is_a_linked_child_run_of_the_outer(wandb_root: Path) -> None:
    """Two pipelines called inside a third, on real wandb offline: each inner run holds its own
    points in the outer's group and project, tagged ``parent:<outer id>``, ``job_type="pipeline"``; the outer holds its points before and after them and lists both as children; one
    sync line names all three runs."""
    done = run_script(wandb_root, NESTED)
    runs = {run.config["which"]: run for run in read_runs(wandb_root / "wandb")}
    outer, inner, plain = runs["outer"], runs["inner"], runs["plain"]
    assert ([(0, 0.0), (1, 1.0)], 3.0, sorted([inner.run_id, plain.run_id])) == (
        outer.series("op/loss"), outer.summary["ev/v"], outer.summary["pipeline/children"])
    assert ([(0, 10.0)], 2.0, [(0, 20.0)]) == (inner.series("op/loss"), inner.summary["ev/v"], plain.series("op/loss"))
    parent = (f"parent:{outer.run_id}",)
    assert [("nest", outer.group, parent, "pipeline")] * 2 == [
        (run.project, run.group, run.tags, run.job_type) for run in (inner, plain)]
    (sync,) = [line for line in done.stderr.splitlines() if "written offline" in line]
    assert all(run.run_id in sync for run in (outer, inner, plain)), sync
