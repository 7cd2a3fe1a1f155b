"""Parity with the tests of the imperative WandBContext API this library grew from: each method x {data types, disabled mode, error
handling, file persistence}, against the recording backend and against real wandb offline."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script, wandb_env

import instrument
from instrument import ContextFileError, InstrumentationError, InstrumentationWarning
from instrument.testing import RecordedRun, recording

METHODS = ["log_training_metric", "log_eval_summary", "update_config", "log_table", "log_image", "save_file",
           "alert", "finish"]

#: One valid call per method; ``ctx`` is a WandBContext, ``np`` numpy, ``report.txt`` exists.
VALID = {
    "log_training_metric": 'ctx.log_training_metric("operator", "loss", 0.5, step=3)',
    "log_eval_summary": 'ctx.log_eval_summary({"nrmse": 0.09, "per_field": {"u": 0.1}}, prefix="eval")',
    "update_config": 'ctx.update_config({"eval_samples": 16, "model": {"width": 8}})',
    "log_table": 'ctx.log_table("eval/scores", ["metric", "value"], [["nrmse", 0.09]])',
    "log_image": 'ctx.log_image("viz/sample", np.zeros((4, 6, 3), dtype=np.uint8), caption="zeros")',
    "save_file": 'ctx.save_file("report.txt", policy="end")',
    "alert": 'ctx.alert("eval done", "nrmse 0.09", level="ERROR")',
    "finish": "ctx.finish(exit_code=2)",
}

#: One bad call per method and what the problem message says (the method and the key or fault).
BAD = {
    "log_training_metric": ('ctx.log_training_metric("operator", "loss", object())',
                            r"WandBContext.log_training_metric: key 'operator/loss'.*builtins.object"),
    "log_eval_summary": ('ctx.log_eval_summary({"nrmse": object()})',
                         r"WandBContext.log_eval_summary: key 'eval/nrmse'.*builtins.object"),
    "update_config": ('ctx.update_config({"lr": 1}); ctx.update_config({"lr": 2})',
                      r"WandBContext.update_config: config key lr \(1 -> 2\)"),
    "log_image": ('ctx.log_image("viz/bad", np.zeros((7, 5, 7), dtype=np.uint8))',
                  r"WandBContext.log_image: .*shape"),
    "save_file": ('ctx.save_file("missing.txt")', r"WandBContext.save_file: .*no file matches '.*missing.txt'"),
    "alert": ('ctx.alert("t", level="LOUD")', r"WandBContext.alert: .*LOUD"),
}

#: The backend call each method ends in (to make it fail).
BACKEND_CALL = {
    "log_training_metric": "log", "log_eval_summary": "update_summary", "update_config": "update_config",
    "log_table": "update_summary", "log_image": "update_summary", "save_file": "save", "alert": "alert",
    "finish": "finish",
}


def _rows(table: dict[str, Any]) -> int:
    return int(table.get("nrows", len(table.get("rows", []))))


def _in_history(run: Any, key: str) -> bool:
    return any(key in row for row in run.history)


#: Where each valid call lands, on the right W&B data type; works on a RecordedRun and a RunFile.
CHECKS: dict[str, Callable[[Any], None]] = {}


def _check(method: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    def register(function: Callable[[Any], None]) -> Callable[[Any], None]:
        CHECKS[method] = function
        return function

    return register


@_check("log_training_metric")
def _series(run: Any) -> None:
    assert [(3, 0.5)] == run.series("operator/loss")


@_check("log_eval_summary")
def _eval(run: Any) -> None:
    assert (0.09, 0.1) == (run.summary["eval/nrmse"], run.summary["eval/per_field/u"])
    assert not _in_history(run, "eval/nrmse")


@_check("update_config")
def _config(run: Any) -> None:
    assert (16, {"width": 8}) == (run.config["eval_samples"], run.config["model"])
    assert "eval_samples" not in run.summary


@_check("log_table")
def _table(run: Any) -> None:
    table = run.summary["eval/scores"]
    assert (True, 1) == (table["_type"] in ("table", "table-file"), _rows(table))
    assert not _in_history(run, "eval/scores")


@_check("log_image")
def _image(run: Any) -> None:
    image = run.summary["viz/sample"]
    assert (True, 6, 4, "zeros") == (image["_type"] in ("image", "image-file"), image["width"], image["height"],
                                     image["caption"])
    assert not _in_history(run, "viz/sample")


@_check("save_file")
def _file(run: Any) -> None:
    assert {"path": "report.txt", "policy": "end"} in [{"path": f["path"], "policy": f["policy"]} for f in run.files]


@_check("alert")
def _alert(run: Any) -> None:
    assert [{"title": "eval done", "text": "nrmse 0.09", "level": "ERROR"}] == run.alerts


@_check("finish")
def _finish(run: Any) -> None:
    assert 2 == run.exit_code


def _call(snippet: str, ctx: Any) -> None:
    import numpy as np

    exec(snippet, {"ctx": ctx, "np": np, "instrument": instrument})


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding report.txt, the file the save_file calls save."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.txt").write_text("report")
    return tmp_path


def _script(snippets: list[str]) -> str:
    return "\n".join(["import pathlib", "import numpy as np", "import instrument",
                      'pathlib.Path("report.txt").write_text("report")', "ctx = instrument.current()", *snippets])


# Data types -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_data_type_recorded(method: str, workdir: Path) -> None:
    """Each method's value lands on its W&B data type in the recording, and nowhere else."""
    with recording() as recorded:
        ctx = instrument.current()
        if method == "finish":
            _call(VALID["log_eval_summary"], ctx)
        _call(VALID[method], ctx)
    run = recorded.run()
    CHECKS[method](run)
    places = {"history": bool(run.history), "config": bool(run.config), "files": bool(run.files),
              "alerts": bool(run.alerts), "tables": bool(run.tables), "images": bool(run.images)}
    expected = {"log_training_metric": {"history"}, "update_config": {"config"}, "save_file": {"files"},
                "alert": {"alerts"}, "log_table": {"tables"}, "log_image": {"images"}}.get(method, set())
    assert expected == {place for place, used in places.items() if used}


@pytest.fixture(scope="module")
def wandb_standalone(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every valid call made on one standalone run by real wandb offline, read back."""
    from instrument.runfile import read_runs

    root = tmp_path_factory.mktemp("standalone")
    run_script(root, _script([VALID[m] for m in METHODS]))
    (run,) = read_runs(root / "wandb")
    return run


@pytest.mark.integration
@pytest.mark.parametrize("method", METHODS)
def test_data_type_in_wandb(method: str, wandb_standalone: Any) -> None:
    """Each method's value lands on its W&B data type in the .wandb file real wandb wrote."""
    CHECKS[method](wandb_standalone)


# Disabled mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_disabled_mode_recorded(method: str, workdir: Path) -> None:
    """With mode disabled the recording still records each call, on a run marked disabled."""
    with recording() as recorded:
        instrument.configure(mode="disabled")
        ctx = instrument.current()
        if method == "finish":
            _call(VALID["log_eval_summary"], ctx)
        _call(VALID[method], ctx)
    (run,) = recorded.runs
    assert "disabled" == run.mode
    CHECKS[method](run)


@pytest.fixture(scope="module")
def disabled_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What each method returned or raised in a real process with WANDB_MODE=disabled."""
    root = tmp_path_factory.mktemp("disabled")
    calls = "\n".join(
        f"try:\n    results[{m!r}] = repr({VALID[m].split(';')[0]})\nexcept Exception as error:\n"
        f"    results[{m!r}] = 'raised ' + repr(error)"
        for m in METHODS
    )
    code = _script([]) + textwrap.dedent(
        """
        import json, sys, warnings
        warnings.simplefilter("always")
        results = {}
        with warnings.catch_warnings(record=True) as caught:
        """
    ) + textwrap.indent(calls, "    ") + textwrap.dedent(
        """
        results["warnings"] = [str(w.message) for w in caught]
        results["wandb_imported"] = "wandb" in sys.modules
        print(json.dumps(results))
        """
    )
    result = run_script(root, code, env=wandb_env(root, WANDB_MODE="disabled"))
    return {"output": json.loads(result.stdout.splitlines()[-1]), "wandb_dir": (root / "wandb").exists()}


@pytest.mark.integration
@pytest.mark.parametrize("method", METHODS)
def test_disabled_mode_in_a_real_process(method: str, disabled_results: dict[str, Any]) -> None:
    """With WANDB_MODE=disabled each method returns None, warns nothing, imports no wandb, writes nothing."""
    output = disabled_results["output"]
    assert ("None", [], False, False) == (output[method], output["warnings"], output["wandb_imported"],
                                          disabled_results["wandb_dir"])


# Error handling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(BAD))
def test_bad_call_fails_a_strict_recording(method: str, workdir: Path) -> None:
    """A bad call raises InstrumentationError naming the method and the key or the fault."""
    snippet, message = BAD[method]
    with recording(strict=True), pytest.raises(InstrumentationError, match=message):
        _call(snippet, instrument.current())


@pytest.mark.parametrize("method", sorted(BAD))
def test_bad_call_warns_in_a_lenient_recording_and_logging_goes_on(method: str, workdir: Path) -> None:
    """A bad call warns with the same message and a valid call after it still lands."""
    snippet, message = BAD[method]
    with recording(strict=False) as recorded:
        ctx = instrument.current()
        with pytest.warns(InstrumentationWarning, match=message):
            _call(snippet, ctx)
        _call(VALID["log_eval_summary"], ctx)
    CHECKS["log_eval_summary"](recorded.run())


def test_log_table_with_a_short_row_raises_at_the_call() -> None:
    """log_table rejects a row shorter than the columns at once, strict or not (its documented Raises)."""
    for strict in (True, False):
        with recording(strict=strict), pytest.raises(ValueError, match="row 0 has 1 values for 2 columns"):
            instrument.current().log_table("t", ["a", "b"], [[1]])


def test_finish_is_safe_to_repeat_and_without_a_run() -> None:
    """finish with nothing logged starts no run; finishing twice keeps the first exit code."""
    with recording() as recorded:
        ctx = instrument.current()
        ctx.finish()
        assert [] == recorded.runs
        ctx.log_eval_summary({"nrmse": 0.09})
        ctx.finish(exit_code=3)
        ctx.finish(exit_code=0)
    assert (True, 3) == (recorded.run().finished, recorded.run().exit_code)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_failing_backend_never_raises(method: str, strict: bool, workdir: Path, mocker: Any) -> None:
    """When the backend call behind a method fails, the method returns and one warning names the fault."""
    mocker.patch.object(RecordedRun, BACKEND_CALL[method], side_effect=OSError("backend down"))
    with recording(strict=strict), pytest.warns(InstrumentationWarning, match=r"failed \(OSError: backend down\)"):
        ctx = instrument.current()
        if method == "finish":
            _call(VALID["log_eval_summary"], ctx)
        assert _call(VALID[method], ctx) is None
        instrument.flush()  # a metric at an explicit step is held for more of its step until a flush


@pytest.fixture(scope="module")
def wandb_with_bad_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real offline run fed every bad call (production: lenient), then a valid eval; read back."""
    from instrument.runfile import read_runs

    root = tmp_path_factory.mktemp("bad")
    calls = [snippet for snippet, _ in BAD.values()]
    code = _script([]) + textwrap.dedent(
        """
        import json, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
        """
    ) + "".join(f"    {c}\n" for c in calls) + textwrap.indent(VALID["log_eval_summary"], "    ") + "\n" + \
        textwrap.indent("ctx.finish()\nctx.finish()\n", "    ") + \
        "print(json.dumps([str(w.message) for w in caught]))\n"
    result = run_script(root, code)
    (run,) = read_runs(root / "wandb")
    return {"warnings": json.loads(result.stdout.splitlines()[-1]), "run": run}


@pytest.mark.integration
@pytest.mark.parametrize("method", sorted(BAD))
def test_bad_call_against_real_wandb_warns_and_the_run_goes_on(method: str, wandb_with_bad_calls: dict[str, Any]) -> None:
    """Against real wandb each bad call warns (naming the method) and the later eval still lands."""
    import re

    _, message = BAD[method]
    assert [w for w in wandb_with_bad_calls["warnings"] if re.search(message, w)], wandb_with_bad_calls["warnings"]
    run = wandb_with_bad_calls["run"]
    CHECKS["log_eval_summary"](run)
    assert (0, 2) == (run.exit_code, run.config["lr"])


# File persistence: the context file hands the run to a subprocess -------------------------------

#: Which run a child's call lands in: its own training run, or the pipeline run (through the journal).
CHILD_TARGET = dict.fromkeys(METHODS, "pipeline") | {"log_training_metric": "train", "finish": "train"}


@pytest.mark.parametrize("method", METHODS)
def test_context_file_hands_each_method_to_a_child_recorded(method: str, workdir: Path) -> None:
    """Through a saved and reloaded context file, each method lands in the run the child should write."""
    with recording() as recorded:
        owner = instrument.create_wandb_context({"lr": 0.1}, project="persist")
        path = instrument.save_wandb_context(owner, workdir / "context.json")
        with recorded.subprocess(path):
            child = instrument.load_wandb_context_from_env()
            if method == "finish":
                _call(VALID["log_training_metric"], child)
            _call(VALID[method], child)
        owner.finish()
    target = recorded.run(job_type=CHILD_TARGET[method])
    CHECKS[method](target)
    assert (0, {"lr": 0.1}) == (recorded.run(job_type="pipeline").exit_code,
                                {"lr": recorded.run(job_type="pipeline").config["lr"]})


@pytest.fixture(scope="module")
def wandb_pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An orchestrator saves its context; a real child process loads it and calls every method."""
    from instrument.runfile import read_runs

    root = tmp_path_factory.mktemp("persist")
    (root / "child.py").write_text(
        _script([]).replace("ctx = instrument.current()", "ctx = instrument.load_wandb_context_from_env()")
        + "\n" + "\n".join(VALID[m] for m in METHODS) + "\n"
    )
    run_script(root, """
        import os, pathlib, subprocess, sys
        import instrument
        ctx = instrument.create_wandb_context({"lr": 0.1}, project="persist")
        path = instrument.save_wandb_context(ctx, pathlib.Path("context.json"))
        subprocess.run([sys.executable, "child.py"], env=dict(os.environ, WANDB_CONTEXT_FILE=str(path)), check=True)
        ctx.finish()
        """, env=wandb_env(root, WANDB_API_KEY="secret-key-never-in-a-file"))
    runs = {run.job_type: run for run in read_runs(root / "wandb")}
    return {"runs": runs, "context": (root / "context.json"), "root": root}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_context_file_hands_each_method_to_a_real_child(method: str, wandb_pipeline: dict[str, Any]) -> None:
    """With real wandb offline, a child's call lands in its training run or in the pipeline run."""
    runs = wandb_pipeline["runs"]
    CHECKS[method](runs[CHILD_TARGET[method]])
    pipeline, training = runs["pipeline"], runs["train"]
    assert (training.group, (f"parent:{pipeline.run_id}",), 0) == (pipeline.group, training.tags, pipeline.exit_code)


@pytest.mark.integration
@pytest.mark.slow
def test_a_childs_saved_file_survives_the_pipeline(wandb_pipeline: dict[str, Any]) -> None:
    """The file a child saved is still readable in the pipeline run's files folder after the run ended."""
    (saved,) = wandb_pipeline["root"].glob("wandb/*-run-*/files/report.txt")
    assert "report" == saved.read_text()


@pytest.mark.integration
def test_context_file_is_private_and_holds_no_secret(wandb_pipeline: dict[str, Any]) -> None:
    """The context file is written with mode 0600 and never holds the API key."""
    context = wandb_pipeline["context"]
    assert (0o600, False) == (context.stat().st_mode & 0o777, "secret-key-never-in-a-file" in context.read_text())


def test_load_from_env_without_the_variable_is_none() -> None:
    """With WANDB_CONTEXT_FILE unset there is no context to load."""
    assert instrument.load_wandb_context_from_env({}) is None


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read"), ("{not json", "not a valid context file"),
                                                  ('{"run_id": "x"}', "mode is missing; journal_dir is missing")])
def test_load_from_env_with_a_bad_file_names_it(tmp_path: Path, content: str | None, message: str) -> None:
    """A missing, corrupt or incomplete context file raises ContextFileError naming the file."""
    path = tmp_path / "context.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ContextFileError, match=f"WANDB_CONTEXT_FILE='{path}'.*{message}"):
        instrument.load_wandb_context_from_env({"WANDB_CONTEXT_FILE": os.fspath(path)})
