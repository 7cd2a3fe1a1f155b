"""Tests of instrument.testing.recording(): isolation, threads, strictness, linkage and spies."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import instrument
from instrument import InstrumentationError, InstrumentationWarning
from instrument.testing import RecordedRun, Recording, RecordingBackend, recording, use_backend


@instrument.training_stage("operator", summary={"loss": "min"})
def train_step(loss: float) -> dict[str, Any]:
    return {"loss": loss}


@instrument.eval_summary(prefix="eval")
def evaluate(nrmse: float = 0.09) -> dict[str, Any]:
    return {"nrmse": nrmse}


@instrument.run_config
def make_config(lr: float = 0.01) -> dict[str, Any]:
    return {"lr": lr, "model": {"width": 64}}


def test_records_config_series_and_summary() -> None:
    """Config, a three-point stage and an eval land in one run with wandb's shapes."""
    with recording() as recorded:
        make_config()
        for loss in (0.3, 0.2, 0.1):
            train_step(loss)
        evaluate()
    run = recorded.run()
    assert {"lr": 0.01, "model": {"width": 64}} == run.config
    assert [(0, 0.3), (1, 0.2), (2, 0.1)] == run.series("operator/loss")
    assert 3 == len(run.history)
    assert {"operator/loss": {"min": 0.1}, "operator/step": 2, "eval/nrmse": 0.09} == run.summary
    assert (True, 0) == (run.finished, run.exit_code)


def test_restores_the_previous_backend_and_nests() -> None:
    """Each block has its own runs; the outer block and the backend around it come back on exit."""
    around = RecordingBackend()
    with use_backend(around):
        with recording() as outer:
            train_step(1.0)
            with recording() as inner:
                train_step(2.0)
            train_step(3.0)
        train_step(4.0)
    assert [[1.0, 3.0], [2.0]] == [[v for _, v in r.run().series("operator/loss")] for r in (outer, inner)]
    assert [[(0, 4.0)], [True]] == [[p for run in around.runs for p in run.series("operator/loss")],
                                     [run.finished for run in around.runs]]


def test_use_backend_writes_any_backend_and_finishes_its_runs_with_the_exit_code() -> None:
    """``use_backend`` routes runs to the backend it is given and finishes them with the block's exit code."""
    backend = RecordingBackend()
    with pytest.raises(SystemExit), use_backend(backend) as used:
        train_step(1.0)
        raise SystemExit(3)
    assert (backend, [(0, 1.0)], True, 3) == (used, backend.runs[0].series("operator/loss"),
                                              backend.runs[0].finished, backend.runs[0].exit_code)


def test_testing_is_reachable_from_import_instrument_alone() -> None:
    """``instrument.testing.recording()`` works after a bare ``import instrument`` (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys, instrument\n"
            "with instrument.testing.recording() as recorded:\n"
            "    instrument.training_stage('s')(lambda: {'x': 1})()\n"
            "print(recorded.run().series('s/x'), 'wandb' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert ("[(0, 1)] False", "") == (result.stdout.strip(), result.stderr)


def test_each_block_gets_a_fresh_standalone_run() -> None:
    """Two blocks in a row record two different runs, each with only its own points."""
    runs = []
    for loss in (0.5, 0.25):
        with recording() as recorded:
            train_step(loss)
        runs.append(recorded.run())
    assert runs[0].id != runs[1].id
    assert [[(0, 0.5)], [(0, 0.25)]] == [r.series("operator/loss") for r in runs]


def test_threads_started_in_the_block_write_to_it() -> None:
    """Two threads logging at once land every point in the block's run."""

    @instrument.training_stage("a")
    def loss() -> dict[str, float]:
        return {"loss": 1.0}

    @instrument.training_stage("b")
    def accuracy() -> dict[str, float]:
        return {"test_acc": 0.5}

    def repeat(function: Any) -> None:
        for _ in range(100):
            function()

    with recording() as recorded:
        threads = [threading.Thread(target=repeat, args=(f,)) for f in (loss, accuracy)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    run = recorded.run()
    assert (100, 100) == (len(run.series("a/loss")), len(run.series("b/test_acc")))
    assert list(range(100)) == [step for step, _ in run.series("a/loss")]


def test_every_callable_kind_is_recorded() -> None:
    """Generator, coroutine and async generator stages record like plain ones."""

    @instrument.training_stage("gen")
    def gen() -> Any:
        yield {"loss": 1.0}
        yield {"loss": 0.5}

    @instrument.training_stage("coro")
    async def coro() -> dict[str, float]:
        return {"loss": 0.25}

    @instrument.training_stage("agen")
    async def agen() -> Any:
        yield {"loss": 0.125}

    async def drive() -> None:
        await coro()
        async for _ in agen():
            pass

    with recording() as recorded:
        assert [{"loss": 1.0}, {"loss": 0.5}] == list(gen())
        asyncio.run(drive())
    run = recorded.run()
    assert ([1.0, 0.5], [0.25], [0.125]) == tuple(
        [v for _, v in run.series(f"{k}/loss")] for k in ("gen", "coro", "agen")
    )


@pytest.mark.parametrize(("error", "code"), [(RuntimeError("boom"), 1), (SystemExit(3), 3), (KeyboardInterrupt(), 130)])
def test_block_that_raises_finishes_the_run_with_its_exit_code(error: BaseException, code: int) -> None:
    """The user's exception propagates unchanged and the run is finished with its exit code."""
    with pytest.raises(type(error)) as caught, recording() as recorded:
        train_step(1.0)
        raise error
    assert caught.value is error
    assert (True, code, [(0, 1.0)]) == (recorded.run().finished, recorded.run().exit_code,
                                        recorded.run().series("operator/loss"))


class TestStrict:
    """Problems production only warns about fail a strict block with the function and key named."""

    def test_unroutable_value(self) -> None:
        """An object that fits no rule names the function and the key."""

        @instrument.training_stage("operator")
        def step_with_meter() -> dict[str, Any]:
            return {"loss": 1.0, "meter": object()}

        with recording(), pytest.raises(InstrumentationError, match=r"step_with_meter.*'operator/meter'.*builtins.object"):
            step_with_meter()

    def test_collision_with_an_eval_key(self) -> None:
        """A stage writing an eval's summary key names the stage function and the key."""

        @instrument.training_stage("eval")
        def shadowing() -> dict[str, float]:
            return {"nrmse": 0.5}

        with recording(), pytest.raises(InstrumentationError, match=r"shadowing: key 'eval/nrmse'"):
            evaluate()
            shadowing()

    def test_step_going_back(self) -> None:
        """A stage step that goes back fails the test, naming the function and the axis."""

        @instrument.training_stage("stage")
        def at(step: int) -> None:
            instrument.log({"loss": 1.0}, step=step)

        with recording(), pytest.raises(InstrumentationError, match=r"at: stage 'stage' went back from step 5 to 2"):
            at(5)
            at(2)

    def test_config_value_changed(self) -> None:
        """A config value changed later names the function and the key."""
        with recording(), pytest.raises(InstrumentationError, match=r"make_config: config key lr \(0.01 -> 0.02\)"):
            make_config(0.01)
            make_config(0.02)

    def test_problem_in_a_thread_fails_the_block(self) -> None:
        """A strict problem that ends a thread is raised again when the block ends, naming the thread."""

        @instrument.training_stage("worker")
        def leaky() -> dict[str, Any]:
            return {"meter": object()}

        with pytest.raises(InstrumentationError, match=r"leaky: key 'worker/meter'.*raised in thread 'loader'"):
            with recording():
                thread = threading.Thread(target=leaky, name="loader")
                thread.start()
                thread.join()

    def test_lenient_warns_and_keeps_the_data(self) -> None:
        """With strict=False the same problems warn and every valid value still lands."""

        @instrument.training_stage("stage")
        def at(step: int) -> None:
            instrument.log({"loss": float(step)}, step=step)

        with recording(strict=False) as recorded, pytest.warns(InstrumentationWarning, match="went back"):
            at(5)
            at(2)
        assert [(5, 5.0), (2, 2.0)] == recorded.run().series("stage/loss")

    def test_strictness_is_restored(self) -> None:
        """After a strict block the process's own setting (warnings) is back."""
        with pytest.raises(InstrumentationError), recording(strict=True):
            instrument.log({"bad": object()})
        with recording(strict=False), pytest.warns(InstrumentationWarning, match="'bad'"):
            instrument.log({"bad": object()})


class TestRun:
    """Recording.run() returns the only run or says clearly why it cannot."""

    def test_no_run(self) -> None:
        """With nothing logged the error says no run was started."""
        with recording() as recorded:
            pass
        with pytest.raises(LookupError, match="expected exactly one recorded run, found 0; runs: \\(no run"):
            recorded.run()

    def test_two_runs_are_listed(self) -> None:
        """With two runs the error counts and lists them."""
        with recording() as recorded, instrument.pipeline(project="p"), recorded.subprocess():
            train_step(1.0)
        with pytest.raises(LookupError, match=r"found 2; runs:\n  <RecordedRun .* job_type='pipeline'"):
            recorded.run()
        assert "train" == recorded.run(job_type="train").job_type

    def test_runs_and_repr(self) -> None:
        """runs lists the runs in creation order; the recording's repr lists them too."""
        with recording() as recorded:
            train_step(1.0)
        assert isinstance(recorded, Recording)
        assert [recorded.run()] == recorded.runs
        assert repr(recorded).startswith("<Recording of 1 run\n  <RecordedRun ")


class TestLinkage:
    """A pipeline and its simulated subprocesses are recorded as linked runs."""

    def test_training_subprocess_and_eval_subprocess(self) -> None:
        """A stage in a child makes a linked training run; a child's eval lands in the pipeline run."""
        with recording() as recorded:
            with instrument.pipeline(project="ups"):
                with recorded.subprocess():
                    train_step(0.5)
                with recorded.subprocess():
                    evaluate(0.09)
        pipeline, training = recorded.run(job_type="pipeline"), recorded.run(job_type="train")
        assert [pipeline, training] == recorded.runs
        assert ("ups", pipeline.group, (f"parent:{pipeline.id}",)) == (training.project, training.group, training.tags)
        assert ([(0, 0.5)], [], 0.09) == (training.series("operator/loss"), pipeline.history,
                                          pipeline.summary["eval/nrmse"])
        assert [training.id] == pipeline.summary["pipeline/children"]
        assert (True, True) == (training.finished, pipeline.finished)

    def test_context_file_from_save_wandb_context(self, tmp_path: Path) -> None:
        """subprocess(context_file) links to an orchestrator made with create_wandb_context."""
        with recording() as recorded:
            context = instrument.create_wandb_context({"lr": 0.1}, project="ups")
            path = instrument.save_wandb_context(context, tmp_path / "context.json")
            with recorded.subprocess(path):
                assert str(path) == os.environ["WANDB_CONTEXT_FILE"]
                child = instrument.load_wandb_context_from_env()
                assert child is not None
                child.log_training_metric("operator", "loss", 0.5)
                child.log_eval_summary({"nrmse": 0.09})
            context.finish()
        pipeline, training = recorded.run(job_type="pipeline"), recorded.run(job_type="train")
        assert ({"lr": 0.1}, 0.09, [(0, 0.5)]) == (pipeline.config, pipeline.summary["eval/nrmse"],
                                                   training.series("operator/loss"))
        assert "WANDB_CONTEXT_FILE" not in os.environ

    def test_subprocess_needs_a_pipeline(self) -> None:
        """Without a pipeline or a context file, subprocess() says what it needs."""
        with recording() as recorded, pytest.raises(RuntimeError, match=r"needs an active instrument\.pipeline"):
            with recorded.subprocess():
                pass

    def test_child_that_raises_finishes_its_run_with_1(self) -> None:
        """A simulated child that raises finishes its training run with exit code 1."""
        with recording() as recorded, instrument.pipeline(project="p"):
            with pytest.raises(ValueError), recorded.subprocess():
                train_step(1.0)
                raise ValueError("child failed")
        assert 1 == recorded.run(job_type="train").exit_code

    def test_outer_context_file_is_hidden(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A test run inside a real pipeline never writes into it: the block's run is standalone."""
        outer = str(tmp_path / "outer-context.json")
        monkeypatch.setenv("WANDB_CONTEXT_FILE", outer)
        with recording() as recorded:
            train_step(1.0)
            assert "WANDB_CONTEXT_FILE" not in os.environ
        assert (None, ()) == (recorded.run().job_type, recorded.run().tags)
        assert outer == os.environ["WANDB_CONTEXT_FILE"]


def test_configure_carries_in_and_stays_inside() -> None:
    """Settings made before the block name its runs; settings made inside end with it."""
    with recording():
        instrument.configure(project="outer")
        with recording() as carried:
            train_step(1.0)
        with recording() as inner:
            instrument.configure(project="changed")
            train_step(1.0)
        with recording() as after:
            train_step(1.0)
    assert ("outer", "changed", "outer") == (carried.run().project, inner.run().project, after.run().project)


class TestSpies:
    """pytest-mock spies on the recording's classes see every call."""

    def test_spy_on_the_classes(self, mocker: Any) -> None:
        """Spies on RecordingBackend.start and RecordedRun methods see each run and each write."""
        start = mocker.spy(RecordingBackend, "start")
        log = mocker.spy(RecordedRun, "log")
        summary = mocker.spy(RecordedRun, "update_summary")
        with recording() as recorded:
            for loss in (0.3, 0.2):
                train_step(loss)
            evaluate()
        run = recorded.run()
        assert 1 == start.call_count
        assert [mocker.call(run, {"operator/loss": 0.3, "operator/step": 0}),
                mocker.call(run, {"operator/loss": 0.2, "operator/step": 1})] == log.call_args_list
        assert [mocker.call(run, {"eval/nrmse": 0.09})] == summary.call_args_list

    def test_spy_on_the_backend_instance(self, mocker: Any) -> None:
        """A spy on the block's backend object sees the runs it starts."""
        with recording() as recorded:
            start = mocker.spy(recorded.backend, "start")
            train_step(1.0)
        assert [recorded.run()] == [start.spy_return]

    def test_failing_backend_warns_and_training_goes_on(self, mocker: Any) -> None:
        """A backend that raises never breaks the code under test: one warning, the value returned."""
        mocker.patch.object(RecordedRun, "log", side_effect=OSError("disk full"))
        with recording() as recorded, pytest.warns(InstrumentationWarning, match="disk full"):
            assert {"loss": 1.0} == train_step(1.0)
            train_step(0.5)
        assert [] == recorded.run().history
