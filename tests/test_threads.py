"""Threads (promise 6): concurrent logging loses no row and raises nothing; the stage and the
pipeline cross into a thread through ``contextvars.copy_context()``; pipelines of threads and
asyncio tasks open at once each get their own thread's or task's records."""

from __future__ import annotations

import asyncio
import contextvars
import json
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script

import instrument
from instrument.runfile import RunFile, read_runs
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


@instrument.training_stage("trial")
def trial_step(tag: float) -> dict[str, float]:
    return {"tag": tag}


@instrument.eval_summary(prefix="eval")
def trial_eval(tag: float) -> dict[str, float]:
    return {"score": tag}


def tags_by_run(recorded: instrument.testing.Recording) -> dict[float, list[float]]:
    """Return each run's config ``tag`` with the ``trial/tag`` values its history holds."""
    return {run.config["tag"]: [row["trial/tag"] for row in run.history if "trial/tag" in row]
            for run in recorded.runs}


def test_pipelines_open_at_once_in_threads_each_get_their_own_threads_records() -> None:
    """Three threads, each inside its own pipeline at once (parallel trials): each run holds only
    its own thread's points and eval, and nothing warns."""
    all_open = threading.Barrier(3)

    def trial(tag: float) -> Callable[[], None]:
        def body() -> None:
            with instrument.pipeline(project="trials", config={"tag": tag}):
                all_open.wait()
                for _ in range(20):
                    trial_step(tag)
                trial_eval(tag)
                all_open.wait()  # no pipeline closes before every thread logged
        return body

    with recording() as recorded:
        assert [] == run_together(trial(0.0), trial(1.0), trial(2.0))
    assert {tag: [tag] * 20 for tag in (0.0, 1.0, 2.0)} == tags_by_run(recorded)
    assert [0.0, 1.0, 2.0] == sorted(run.summary["eval/score"] for run in recorded.runs)
    assert {(run.config["tag"], run.summary["eval/score"]) for run in recorded.runs} == {
        (tag, tag) for tag in (0.0, 1.0, 2.0)}


def test_pipelines_of_asyncio_tasks_each_get_their_own_tasks_records() -> None:
    """Decorated coroutine pipelines run at once with ``asyncio.gather``: each task's stage
    points land in the run that task opened."""

    @instrument.pipeline(project="trials")
    async def trial(tag: float) -> None:
        instrument.current().update_config({"tag": tag})
        for _ in range(5):
            trial_step(tag)
            await asyncio.sleep(0)  # let the other tasks interleave

    async def sweep() -> None:
        await asyncio.gather(*(trial(tag) for tag in (0.0, 1.0, 2.0)))

    with recording() as recorded:
        asyncio.run(sweep())
    assert {tag: [tag] * 5 for tag in (0.0, 1.0, 2.0)} == tags_by_run(recorded)


def test_a_thread_given_the_pipelines_context_writes_to_it_while_another_threads_pipeline_is_open() -> None:
    """A thread started with ``contextvars.copy_context().run`` inside a pipeline writes to that
    pipeline, not to a newer one another thread opened meanwhile."""
    second_open = threading.Event()
    first_open = threading.Event()

    def first() -> None:
        with instrument.pipeline(project="trials", config={"tag": 0.0}):
            first_open.set()
            second_open.wait()
            helper = threading.Thread(target=contextvars.copy_context().run, args=(trial_step, 0.0))
            helper.start()
            helper.join()

    def second() -> None:
        first_open.wait()
        with instrument.pipeline(project="trials", config={"tag": 1.0}):
            second_open.set()
            trial_step(1.0)

    with recording() as recorded:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert {0.0: [0.0], 1.0: [1.0]} == tags_by_run(recorded)


def test_a_plain_thread_started_in_the_only_open_pipeline_writes_to_it_without_a_warning() -> None:
    """A plain ``threading.Thread`` carries no context, and with one pipeline open its records
    still go to that pipeline, silently."""
    with recording() as recorded, instrument.pipeline(project="p", config={"tag": 3.0}):
        helper = threading.Thread(target=trial_step, args=(3.0,))
        helper.start()
        helper.join()
    assert {3.0: [3.0]} == tags_by_run(recorded)


def test_a_plain_thread_cannot_tell_which_of_two_threads_pipelines_is_its_own_and_says_so() -> None:
    """With pipelines of two threads open, a call from a thread whose context carries neither warns
    once, naming both runs, and lands in the newest."""
    opened: list[str] = []
    first_open = threading.Event()
    both_open = threading.Barrier(3)

    def trial(tag: float) -> None:
        with instrument.pipeline(project="trials", config={"tag": tag}) as run:
            opened.append(str(run.id))
            first_open.set()
            both_open.wait()
            both_open.wait()

    with recording() as recorded, pytest.warns(instrument.InstrumentationWarning, match="carries no pipeline") as seen:
        threads = [threading.Thread(target=trial, args=(tag,)) for tag in (0.0, 1.0)]
        threads[0].start()
        first_open.wait()  # the pipeline of tag 1.0 is the newest
        threads[1].start()
        both_open.wait()
        trial_step(9.0)  # the main thread opened no pipeline
        trial_step(9.0)
        both_open.wait()
        for thread in threads:
            thread.join()
    (warning,) = [w for w in seen if "carries no pipeline" in str(w.message)]
    assert all(run_id in str(warning.message) for run_id in opened)
    assert {0.0: [], 1.0: [9.0, 9.0]} == tags_by_run(recorded)


CONCURRENT_PIPELINES = """
import asyncio, json, os, subprocess, sys, threading
import instrument

@instrument.training_stage("trial")
def step(tag):
    return {"tag": tag}

@instrument.eval_summary(prefix="eval")
def score(tag):
    return {"score": tag}

CHILD = "import instrument\\n@instrument.training_stage('trial')\\ndef step(tag):\\n    return {'tag': tag}\\nstep(10.0)\\n"
first_open, all_open, facts = threading.Event(), threading.Barrier(3), {}

def trial(tag):
    with instrument.pipeline(project="threads", config={"tag": tag}) as run:
        first_open.set()
        all_open.wait()
        for _ in range(20):
            step(tag)
        score(tag)
        if tag == 0.0:  # opened first: WANDB_CONTEXT_FILE names another thread's pipeline now
            own = str(instrument.current().context_file)
            facts.update(first=run.id, exported_is_own=os.environ["WANDB_CONTEXT_FILE"] == own)
            subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, "WANDB_CONTEXT_FILE": own}, check=True)
        all_open.wait()

threads = [threading.Thread(target=trial, args=(float(tag),)) for tag in range(3)]
threads[0].start()
first_open.wait()
for thread in threads[1:]:
    thread.start()
for thread in threads:
    thread.join()
facts["restored"] = "WANDB_CONTEXT_FILE" not in os.environ

@instrument.pipeline(project="tasks")
async def task_trial(tag):
    instrument.current().update_config({"tag": tag})
    for _ in range(5):
        step(tag)
        await asyncio.sleep(0)  # the other tasks run in between
    score(tag)

async def sweep():
    await asyncio.gather(*(task_trial(tag) for tag in (0.0, 1.0, 2.0)))

asyncio.run(sweep())

with instrument.pipeline(project="plain", config={"tag": 7.0}):
    helper = threading.Thread(target=step, args=(7.0,))  # carries no context
    helper.start()
    helper.join()
print(json.dumps(facts))
"""


@pytest.fixture(scope="module")
def concurrent_pipelines(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[RunFile], dict[str, Any], str]:
    """CONCURRENT_PIPELINES written by real wandb offline: the runs, the facts printed, stderr."""
    root = tmp_path_factory.mktemp("concurrent-pipelines")
    done = run_script(root, CONCURRENT_PIPELINES)
    return read_runs(root / "wandb"), json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def points_by_tag(runs: list[RunFile], project: str) -> dict[float, tuple[list[float], float | None]]:
    """Return, per pipeline run of *project*, its config ``tag``: its ``trial/tag`` points and eval score."""
    return {run.config["tag"]: ([value for _, value in run.series("trial/tag")], run.summary.get("eval/score"))
            for run in runs if run.project == project and run.job_type == "pipeline"}


@pytest.mark.integration
@pytest.mark.slow
def test_real_wandb_pipelines_of_three_threads_each_hold_only_their_own_threads_points(
        concurrent_pipelines: tuple[list[RunFile], dict[str, Any], str]) -> None:
    """Three threads each inside its own pipeline at once: each run on disk holds its own 20
    points and eval, and nothing warned."""
    runs, _, stderr = concurrent_pipelines
    assert {tag: ([tag] * 20, tag) for tag in (0.0, 1.0, 2.0)} == points_by_tag(runs, "threads")
    assert "InstrumentationWarning" not in stderr


@pytest.mark.integration
@pytest.mark.slow
def test_real_wandb_pipelines_of_asyncio_tasks_each_hold_only_their_own_tasks_points(
        concurrent_pipelines: tuple[list[RunFile], dict[str, Any], str]) -> None:
    """Three coroutine pipelines run with ``asyncio.gather``: each run holds its own task's points and eval."""
    runs, _, _ = concurrent_pipelines
    assert {tag: ([tag] * 5, tag) for tag in (0.0, 1.0, 2.0)} == points_by_tag(runs, "tasks")


@pytest.mark.integration
@pytest.mark.slow
def test_real_wandb_a_plain_thread_in_the_only_open_pipeline_lands_in_it(
        concurrent_pipelines: tuple[list[RunFile], dict[str, Any], str]) -> None:
    """A plain ``threading.Thread`` started inside the only open pipeline writes its point there."""
    runs, _, _ = concurrent_pipelines
    assert {7.0: ([7.0], None)} == points_by_tag(runs, "plain")


@pytest.mark.integration
@pytest.mark.slow
def test_real_wandb_context_file_links_a_subprocess_to_its_threads_pipeline(
        concurrent_pipelines: tuple[list[RunFile], dict[str, Any], str]) -> None:
    """A subprocess given ``instrument.current().context_file`` while ``WANDB_CONTEXT_FILE`` names
    another thread's pipeline makes its training run under the first thread's pipeline; once
    every pipeline ended the variable is unset again."""
    runs, facts, _ = concurrent_pipelines
    (child,) = [run for run in runs if run.job_type == "train"]
    first = next(run for run in runs if run.run_id == facts["first"])
    assert (False, True) == (facts["exported_is_own"], facts["restored"])
    assert ((f"parent:{first.run_id}",), first.group, [10.0]) == (
        child.tags, child.group, [value for _, value in child.series("trial/tag")])


def test_current_context_file_is_none_outside_any_pipeline() -> None:
    """With no pipeline open and no ``WANDB_CONTEXT_FILE``, there is no context file to hand on."""
    with recording():
        assert None is instrument.current().context_file
