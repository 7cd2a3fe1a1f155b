"""Threads (promise 6): concurrent logging loses no row and raises nothing; the stage crosses into
a thread through ``contextvars.copy_context()``."""

from __future__ import annotations

import contextvars
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_script

import instrument
from instrument.runfile import read_runs
from instrument.testing import recording


@instrument.training_stage("train")
def train_step(i: int) -> dict[str, float]:
    return {"loss": float(i)}


@instrument.training_stage("test")
def eval_step(i: int) -> dict[str, float]:
    return {"test_acc": float(i)}


def run_together(*bodies: Callable[[], None]) -> list[BaseException]:
    """Run *bodies* in threads released at once; return what they raised."""
    barrier = threading.Barrier(len(bodies))
    errors: list[BaseException] = []

    def wrap(body: Callable[[], None]) -> None:
        try:
            barrier.wait()
            body()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=wrap, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_c11_two_threads_two_stages_lose_nothing_over_20_repeats() -> None:
    """One thread logs ``loss``, another ``test_acc``, 100 points each at once: 100 of each with
    steps 0..99, nothing raised, the same counts in each of 20 repeats."""
    counts = []
    for _ in range(20):
        with recording() as recorded:
            errors = run_together(lambda: [train_step(i) for i in range(100)],
                                  lambda: [eval_step(i) for i in range(100)])
        run = recorded.run()
        assert [] == errors
        assert [(i, float(i)) for i in range(100)] == run.series("train/loss")
        assert [(i, float(i)) for i in range(100)] == run.series("test/test_acc")
        counts.append((len(run.series("train/loss")), len(run.series("test/test_acc")), len(run.history)))
    assert [(100, 100, 200)] * 20 == counts


def test_threads_logging_into_the_same_stage_get_distinct_steps() -> None:
    """Four threads logging 50 points each into one stage: 200 points on steps 0..199."""
    with recording() as recorded:
        errors = run_together(*[lambda: [train_step(1) for _ in range(50)]] * 4)
    assert [] == errors
    assert list(range(200)) == [step for step, _ in recorded.run().series("train/loss")]


def test_the_stage_crosses_into_a_thread_through_copy_context() -> None:
    """``instrument.log`` in a thread started with ``copy_context().run`` adds a point to the
    running stage; without it the thread sees no stage and logs a plain row."""

    @instrument.training_stage("operator")
    def train() -> None:
        context = contextvars.copy_context()
        inside = threading.Thread(target=context.run, args=(instrument.log, {"grad_norm": 2.0}))
        outside = threading.Thread(target=instrument.log, args=({"plain": 1.0},))
        for thread in (inside, outside):
            thread.start()
            thread.join()

    with recording() as recorded:
        train()
    run = recorded.run()
    assert ([(0, 2.0)], "operator/step") == (run.series("operator/grad_norm"), run.metrics["operator/grad_norm"]["step_metric"])
    assert [1.0] == [row["plain"] for row in run.history if "plain" in row]


@pytest.mark.integration
@pytest.mark.slow
def test_c11_two_threads_with_real_wandb(wandb_root: Path) -> None:
    """Two threads logging 100 points each into real wandb, in three pipelines one after the
    other: every run on disk holds 100 of each."""
    run_script(wandb_root, """
import threading
import instrument

@instrument.training_stage("train")
def train_step(i):
    return {"loss": float(i)}

@instrument.training_stage("test")
def test_step(i):
    return {"test_acc": float(i)}

for _ in range(3):
    with instrument.pipeline(project="p"):
        barrier = threading.Barrier(2)
        def body(step):
            barrier.wait()
            for i in range(100):
                step(i)
        threads = [threading.Thread(target=body, args=(step,)) for step in (train_step, test_step)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
""")
    runs = read_runs(wandb_root / "wandb")
    assert [(100, 100, 0)] * 3 == [
        (len(run.series("train/loss")), len(run.series("test/test_acc")), run.exit_code) for run in runs
    ]


def test_the_documented_thread_example_works_as_written() -> None:
    """The copy_context example of docs/guarantees.md puts a thread's ``instrument.log`` on the stage's axis."""
    guarantees = (Path(__file__).resolve().parents[1] / "docs" / "guarantees.md").read_text()
    section = guarantees.split("# What instrument promises", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {
        "instrument": instrument, "monitor_gradients": lambda: instrument.log({"grad_norm": 3.0}),
    }
    before = set(threading.enumerate())
    with recording() as recorded:
        exec(textwrap.dedent(code), namespace)
        namespace["train_epoch"](None)  # type: ignore[operator]
        for thread in set(threading.enumerate()) - before:
            thread.join()
    assert [(0, 3.0)] == recorded.run().series("operator/grad_norm")


def test_a_pipeline_opened_while_another_threads_pipeline_is_open_warns() -> None:
    """Two threads each inside a pipeline at once: one warning names both runs and says that the
    process writes to the newest (a process has one pipeline run at a time)."""
    both_open = threading.Barrier(2)

    def trial() -> None:
        with instrument.pipeline(project="trials"):
            both_open.wait()
            both_open.wait()  # neither closes before both were opened

    with recording(), pytest.warns(instrument.InstrumentationWarning, match="of another thread is open") as seen:
        assert [] == run_together(trial, trial)
    assert 1 == len([w for w in seen if "another thread" in str(w.message)])
