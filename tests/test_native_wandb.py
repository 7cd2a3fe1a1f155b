"""instrument's runs are ``wandb.run``: native wandb calls land in them (C14), a library's
``wandb.init()`` gets them back without asking for a key, and a library that finishes one loses
nothing that instrument had queued. Real wandb offline, read back from the ``.wandb`` files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script, wandb_env

import instrument
from instrument.runfile import RunFile, read_runs
from instrument.testing import recording

pytestmark = pytest.mark.integration


def last_json(stdout: str) -> dict[str, Any]:
    """Return the JSON object a script printed on its last stdout line."""
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def history_keys(run: RunFile) -> set[str]:
    """Return every key that appears in some history row of *run*."""
    return {key for row in run.history for key in row}


# A pipeline whose body calls wandb directly, logs 200 stage points, then does what a library
# does: wandb.init() (no mode, no key: instrument resolved offline) and finish() on what it got.
PIPELINE = """
    import json
    import warnings

    import wandb

    import instrument

    @instrument.training_stage("operator")
    def step(i):
        return {"loss": 1.0 / (i + 1)}

    out = {}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with instrument.pipeline(project="native") as owner:
            context = instrument.current()
            out["same_run"] = wandb.run is not None and wandb.run.id == context.run_id == owner.id
            out["url"] = context.url
            wandb.define_metric("native/y", summary="max")
            wandb.log({"native/y": 2.0})
            wandb.config.update({"native_lr": 0.5})
            wandb.summary["native/s"] = 3.0
            wandb.log({"native/table": wandb.Table(columns=["a"], data=[[1], [2]])})
            chart = wandb.Table(columns=["x", "y"], data=[[0, 1.0], [1, 2.0]])
            wandb.log({"native/chart": wandb.plot.line(chart, "x", "y", title="native")})
            for i in range(200):
                step(i)
            run = wandb.init()  # what a library does inside the pipeline
            out["init_returned_the_pipeline_run"] = run.id == owner.id
            run.finish()  # FINISH_LINE
            out["global_after_finish"] = None if wandb.run is None else wandb.run.id
            step(200)  # after the finish: where a process with no run would send it
        out["pipeline"] = owner.id
    out["warnings"] = [str(w.message) for w in seen if issubclass(w.category, instrument.InstrumentationWarning)]
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pipeline_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """Run the pipeline script once with no WANDB_MODE (so no key and no mode) and return its
    folder, its printed result and its stderr."""
    root = tmp_path_factory.mktemp("native") / "runs"
    env = {k: v for k, v in wandb_env(root).items() if k != "WANDB_MODE"}
    done = run_script(root, PIPELINE, env=env)
    return root, last_json(done.stdout), done.stderr


def test_pipeline_run_is_wandb_run_from_the_pipeline_entry(pipeline_result: tuple[Path, dict[str, Any], str]) -> None:
    """Inside a pipeline body ``wandb.run`` is the pipeline run, ``current()`` names it, and its url is None offline."""
    _, out, _ = pipeline_result
    assert out["same_run"] is True
    assert out["url"] is None


def test_native_calls_in_a_pipeline_body_land_in_the_pipeline_run(
    pipeline_result: tuple[Path, dict[str, Any], str],
) -> None:
    """History, config, summary, define_metric, a Table and a wandb.plot chart logged natively land in the pipeline run."""
    root, out, _ = pipeline_result
    run = {r.run_id: r for r in read_runs(root / "wandb")}[out["pipeline"]]
    assert [2.0] == [row["native/y"] for row in run.history if "native/y" in row]
    assert 0.5 == run.config["native_lr"]
    assert 3.0 == run.summary["native/s"]
    assert {"max": 2.0} == run.summary["native/y"]
    assert "table-file" == run.summary["native/table"]["_type"]
    assert {"native/table", "native/chart_table"} <= history_keys(run)


def test_library_init_gets_the_pipeline_run_and_its_finish_loses_no_point(
    pipeline_result: tuple[Path, dict[str, Any], str],
) -> None:
    """A library's ``wandb.init()`` returns the pipeline run without asking for a key; after its
    ``finish()`` the run holds all 200 queued points and nothing is left in a journal."""
    root, out, stderr = pipeline_result
    assert out["init_returned_the_pipeline_run"] is True
    assert "No API key" not in stderr
    run = {r.run_id: r for r in read_runs(root / "wandb")}[out["pipeline"]]
    assert [(i, 1.0 / (i + 1)) for i in range(200)] == run.series("operator/loss")
    assert 0 == run.exit_code
    assert [] == sorted(p.name for p in (root / "wandb").glob("instrument-*"))


def test_records_after_a_foreign_finish_go_to_a_new_run_with_one_warning(
    pipeline_result: tuple[Path, dict[str, Any], str],
) -> None:
    """After a library finished the pipeline run, ``wandb.run`` is None, the next point starts a
    run of its own, and one warning names the call that finished it."""
    root, out, _ = pipeline_result
    assert out["global_after_finish"] is None
    runs = read_runs(root / "wandb")
    assert 2 == len(runs)
    (later,) = [r for r in runs if r.run_id != out["pipeline"]]
    assert [(0, 1.0 / 201)] == later.series("operator/loss")
    finished = [w for w in out["warnings"] if "was finished by" in w]
    assert 1 == len(finished), out["warnings"]
    line = next(n for n, text in enumerate(textwrap.dedent(PIPELINE).splitlines(), 1) if "FINISH_LINE" in text)
    assert f"script.py:{line}" in finished[0]
    assert out["pipeline"] in finished[0]


# A decorated stage whose first line asks for the run, then calls wandb directly.
STANDALONE = """
    import json

    import wandb

    import instrument

    same = []

    @instrument.training_stage("operator")
    def step(i):
        run = instrument.current().run  # starts the run if needed and waits for it
        wandb.log({"native/x": float(i)})
        wandb.config.update({"native_cfg": i}, allow_val_change=True)
        wandb.summary["native/last"] = i
        same.append(wandb.run is run and run.id == instrument.current().run_id)
        return {"loss": 0.5}

    for i in range(3):
        step(i)
    print(json.dumps({"same": same, "url": instrument.current().url}))
"""


def test_c14_native_calls_after_current_run_land_in_the_standalone_run(wandb_root: Path) -> None:
    """C14: after ``instrument.current().run`` in a stage's first call, wandb.log, config and
    summary land in instrument's one standalone run, which is ``wandb.run``; its ``url`` is None
    offline, without a warning from wandb."""
    env = {k: v for k, v in wandb_env(wandb_root).items() if k != "WANDB_SILENT"}  # wandb's own warnings shown
    done = run_script(wandb_root, STANDALONE, env=env)
    assert [True, True, True] == last_json(done.stdout)["same"]
    assert (None, "") == (last_json(done.stdout)["url"], "".join(x for x in done.stderr.splitlines() if "URL" in x))
    (run,) = read_runs(wandb_root / "wandb")
    assert [0.0, 1.0, 2.0] == [row["native/x"] for row in run.history if "native/x" in row]
    assert [(0, 0.5), (1, 0.5), (2, 0.5)] == run.series("operator/loss")
    assert 2 == run.config["native_cfg"]
    assert 2 == run.summary["native/last"]


# A config written by instrument, then a framework that starts wandb only if nobody did.
FRAMEWORK_AFTER_CONFIG = """
    import time

    IMPORT_EARLY

    import instrument

    instrument.configure(project="mine")

    @instrument.run_config
    def make_config():
        return {"lr": 1e-3}

    make_config()
    time.sleep(WAIT)
    import wandb  # a framework's own import (Accelerate's tracker, HF's callback): maybe the first

    if wandb.run is None:
        wandb.init(project="x")
    wandb.config.update({"a": 1}, allow_val_change=True)
"""


@pytest.mark.parametrize(("wait", "late"), [("3", False), ("0", False), ("0", True)])
def test_framework_after_a_config_call_finds_instruments_run(wandb_root: Path, wait: str, late: bool) -> None:
    """``@run_config``, then ``if wandb.run is None: wandb.init(project="x")`` and
    ``wandb.config.update``, 3 s later or at once (the run still starting), also when wandb is
    first imported after the call and no mode or key is set (Accelerate's ``init_trackers``):
    no exception, never a request for an API key, one run in instrument's project holding both
    values."""
    code = FRAMEWORK_AFTER_CONFIG.replace("WAIT", wait)
    code = code.replace("IMPORT_EARLY", "" if late else "import wandb")
    env = {k: v for k, v in wandb_env(wandb_root).items() if not (late and k == "WANDB_MODE")}
    run_script(wandb_root, code, env=env)
    (run,) = read_runs(wandb_root / "wandb")
    assert {"lr": 1e-3, "a": 1} == run.config
    assert "mine" == run.project


def test_current_names_the_recorded_run_and_has_no_wandb_run_under_the_recorder() -> None:
    """Under the recorder ``current().run_id`` is the recorded run's id, ``url`` and ``run`` are None."""
    with recording() as recorded:
        instrument.log({"x": 1.0})
        context = instrument.current()
        run_id, url, run = context.run_id, context.url, context.run
    assert recorded.run().id == run_id
    assert url is None
    assert run is None
