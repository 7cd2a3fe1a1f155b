"""Unit tests of the gates' files (sidecar, history, baseline store) and instrument.baselines; no wandb."""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from instrument import _gatefiles, baselines
from instrument._gatefiles import (
    Evaluation,
    GateFileError,
    append_history,
    find_sidecar,
    instrument_root,
    read_history,
    read_sidecar,
    recheck,
    resolve_baseline,
    write_sidecar,
)
from instrument._gates import Baseline, Regression, Suite, declare
from instrument._verdicts import BaselineValue, evaluate


def suite(prefix: str = "eval", baseline: Baseline | None = None, **gates: str) -> Suite:
    """Return a suite with threshold *gates* and a ``min`` regression on nrmse (rel 5 %)."""
    declared = declare(prefix, gates or None, Regression("nrmse", "min", rel=0.05), baseline)
    assert declared is not None
    return declared


def evaluation(root: Path, run_id: str, metrics: dict[str, float], declared: Suite | None = None, *,
               project: str = "p", time: str = "2026-12-01T10:00:00Z") -> Evaluation:
    """Evaluate *declared* (default :func:`suite`) on *metrics* for *run_id* as the runtime would."""
    declared = declared or suite()
    resolved = resolve_baseline(declared, project=project, run_id=run_id, root=root)
    verdict = evaluate(declared, metrics, resolved.values if resolved else None)
    return Evaluation(run_id, project, declared, metrics, resolved, verdict, "evaluate", time, "abc1234", None)


def record(root: Path, run_id: str, metrics: dict[str, float], declared: Suite | None = None) -> Evaluation:
    """Evaluate and write the sidecar and the history line, as an eval call does."""
    done = evaluation(root, run_id, metrics, declared)
    write_sidecar(done, root)
    append_history(done, root)
    return done


def strict_json(path: Path) -> Any:
    """Read *path* as strict JSON: a NaN or Infinity token fails the test."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds the non-JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_the_root_is_under_wandb_dir_else_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``.instrument`` sits in WANDB_DIR when it is set and not empty, else in the working directory."""
    monkeypatch.chdir(tmp_path)
    assert tmp_path / "w" / ".instrument" == instrument_root({"WANDB_DIR": str(tmp_path / "w")})
    assert tmp_path / ".instrument" == instrument_root({"WANDB_DIR": ""})
    assert tmp_path / ".instrument" == instrument_root({})


def test_names_become_single_path_components(tmp_path: Path) -> None:
    """A prefix with '/' stays one file name and '..' cannot climb out of the store."""
    assert tmp_path / "baselines" / "p" / "eval%2Fsmall.json" == _gatefiles.store_path("p", "eval/small", tmp_path)
    assert tmp_path / "runs" / "%2E%2E" / "gates.json" == _gatefiles.sidecar_path("..", tmp_path)


def test_the_sidecar_holds_declaration_numbers_baseline_and_verdicts(tmp_path: Path) -> None:
    """A written sidecar is strict JSON with the run, the suite's declaration, metrics (NaN as "nan") and verdicts."""
    done = record(tmp_path, "run1", {"nrmse": math.nan, "mse": 0.5}, suite(acc="> 0.5"))
    data = strict_json(tmp_path / "runs" / "run1" / "gates.json")
    entry = data["suites"]["eval"]
    assert ("instrument.gates/1", "run1", "p") == (data["format"], data["run_id"], data["project"])
    assert {"nrmse": "nan", "mse": 0.5} == entry["metrics"]
    assert done.suite.to_json() == entry["declaration"]
    assert {"source": "pinned", "path": str(tmp_path / "baselines" / "p" / "eval.json"), "values": {}} == entry["baseline"]
    assert [("acc", "fail", "missing"), ("nrmse", "fail", "nan")] == [
        (v["metric"], v["status"], v["reason"]) for v in entry["verdicts"]]
    assert (False, "fail", "abc1234", "evaluate") == (entry["passed"], entry["status"], entry["git_commit"],
                                                      entry["function"])


def test_suites_of_one_run_merge_and_a_repeated_suite_is_replaced(tmp_path: Path) -> None:
    """Two prefixes written into one run are both kept; the same prefix again replaces its entry."""
    record(tmp_path, "run1", {"nrmse": 0.1}, suite("eval_small"))
    record(tmp_path, "run1", {"nrmse": 0.2}, suite("eval_full"))
    record(tmp_path, "run1", {"nrmse": 0.3}, suite("eval_small"))
    suites = read_sidecar(tmp_path / "runs" / "run1" / "gates.json")["suites"]
    assert {"eval_small": {"nrmse": 0.3}, "eval_full": {"nrmse": 0.2}} == {p: s["metrics"] for p, s in suites.items()}


def _write_many(root: str, prefix: str) -> None:
    for i in range(20):
        record(Path(root), "shared", {"nrmse": float(i)}, suite(prefix))


def test_processes_writing_one_sidecar_keep_each_others_suites(tmp_path: Path) -> None:
    """Two processes writing different suites into one run's sidecar at once lose neither suite."""
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(str(tmp_path), p)) for p in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [0, 0] == [w.exitcode for w in workers]
    suites = read_sidecar(tmp_path / "runs" / "shared" / "gates.json")["suites"]
    assert {"a": {"nrmse": 19.0}, "b": {"nrmse": 19.0}} == {p: s["metrics"] for p, s in suites.items()}
    assert 40 == len(read_history("p", "a", tmp_path)) + len(read_history("p", "b", tmp_path))


def test_history_has_one_line_per_evaluation(tmp_path: Path) -> None:
    """Each evaluation appends one strict-JSON line with the run, metrics and verdicts; bad lines are skipped."""
    record(tmp_path, "r1", {"nrmse": 0.1})
    path = _gatefiles.history_path("p", "eval", tmp_path)
    with path.open("a") as handle:
        handle.write("{torn line\n")
    record(tmp_path, "r2", {"nrmse": 0.2})
    lines = read_history("p", "eval", tmp_path)
    assert [("r1", {"nrmse": 0.1}), ("r2", {"nrmse": 0.2})] == [(line["run_id"], line["metrics"]) for line in lines]
    assert {"format", "run_id", "project", "prefix", "time", "git_commit", "config_hash", "metrics", "verdicts",
            "passed", "status"} == set(lines[0])
    assert 3 == len(path.read_text().splitlines())


def test_best_and_median_read_the_last_n_runs_each_once_without_this_run(tmp_path: Path) -> None:
    """best/median look at the last n distinct runs (their last line), leaving the evaluated run out."""
    for run_id, value in [("r1", 0.5), ("r2", 0.1), ("r3", 0.4), ("r2", 0.3), ("r4", 0.2), ("now", 0.01)]:
        record(tmp_path, run_id, {"nrmse": value})
    best = resolve_baseline(suite(baseline=Baseline.best(3)), project="p", run_id="now", root=tmp_path)
    median = resolve_baseline(suite(baseline=Baseline.median(3)), project="p", run_id="now", root=tmp_path)
    assert best is not None and median is not None
    # the last three runs other than "now": r3 (0.4), r2 (0.3, its last line), r4 (0.2)
    assert BaselineValue(0.2, None, "min", "r4", "abc1234", "2026-12-01T10:00:00Z") == best.values["nrmse"]  # type: ignore[index]
    assert BaselineValue(0.3, None, "min") == median.values["nrmse"]  # type: ignore[index]
    assert ("best", str(_gatefiles.history_path("p", "eval", tmp_path))) == (best.source, best.path)


def test_no_history_means_no_baseline(tmp_path: Path) -> None:
    """Without earlier runs a best baseline resolves to nothing and the regression is no_baseline."""
    done = evaluation(tmp_path, "first", {"nrmse": 0.1}, suite(baseline=Baseline.median(5)))
    assert done.baseline is not None and done.baseline.values is None
    assert ("no_baseline", True) == (done.verdict.verdicts[0].status, done.verdict.passed)


def test_promote_writes_a_diffable_store_and_pinned_gates_read_it(tmp_path: Path) -> None:
    """promote(run) stores each gated metric with stderr, direction, run, commit and time; the next run compares."""
    record(tmp_path, "good", {"nrmse": 0.1, "nrmse_stderr": 0.01, "acc": 0.9}, suite(acc="> 0.5"))
    written = baselines.promote("good", root=tmp_path)
    path = tmp_path / "baselines" / "p" / "eval.json"
    assert [path] == written
    text = path.read_text()
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert {"format": "instrument.baseline/1", "project": "p", "prefix": "eval", "metrics": {
        "acc": {"value": 0.9, "stderr": None, "direction": "max", "run_id": "good", "git_commit": "abc1234",
                "time": "2026-12-01T10:00:00Z"},
        "nrmse": {"value": 0.1, "stderr": 0.01, "direction": "min", "run_id": "good", "git_commit": "abc1234",
                  "time": "2026-12-01T10:00:00Z"},
    }} == strict_json(path)
    worse = evaluation(tmp_path, "next", {"nrmse": 0.2, "acc": 0.9}, suite(acc="> 0.5"))
    assert [("acc", "pass"), ("nrmse", "fail")] == [(v.metric, v.status) for v in worse.verdict.verdicts]
    assert BaselineValue(0.1, 0.01, "min", "good", "abc1234", "2026-12-01T10:00:00Z") == baselines.load(
        "p", "eval", tmp_path)["nrmse"]


def test_promote_refuses_a_failed_suite_unless_forced_and_keeps_other_metrics(tmp_path: Path) -> None:
    """A failed suite is not promoted without force=True; promoting merges per metric."""
    _gatefiles.merge_store("p", "eval", {"old": BaselineValue(1.0)}, tmp_path)
    record(tmp_path, "bad", {"nrmse": 0.1}, suite(acc="> 0.5"))  # acc missing: the suite failed
    with pytest.raises(ValueError, match="the gates of 'eval' failed in run bad; promote it anyway with force=True"):
        baselines.promote("bad", root=tmp_path)
    assert {"old"} == set(baselines.load("p", "eval", tmp_path))
    baselines.promote("bad", force=True, root=tmp_path)
    assert {"old", "nrmse"} == set(baselines.load("p", "eval", tmp_path))
    with pytest.raises(ValueError, match="run bad has no suite 'nope'"):
        baselines.promote("bad", prefixes=["nope"], root=tmp_path)


def test_a_malformed_store_is_named_and_not_overwritten(tmp_path: Path) -> None:
    """A store that is not JSON of the format raises GateFileError naming it; resolution reports it as a problem."""
    path = tmp_path / "baselines" / "p" / "eval.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"metrics": 1}')
    with pytest.raises(GateFileError, match="is not a baseline store"):
        baselines.load("p", "eval", tmp_path)
    resolved = resolve_baseline(suite(), project="p", run_id="x", root=tmp_path)
    assert resolved is not None and resolved.values is None and "is not a baseline store" in (resolved.problem or "")
    with pytest.raises(GateFileError):
        _gatefiles.merge_store("p", "eval", {"m": BaselineValue(1.0)}, tmp_path)
    assert '{"metrics": 1}' == path.read_text()


def test_find_sidecar_from_an_id_a_file_or_a_wandb_run_folder(tmp_path: Path) -> None:
    """A run id, the gates.json, its folder, the wandb run folder and its .wandb file all find the sidecar."""
    root = tmp_path / ".instrument"
    record(root, "abc123", {"nrmse": 0.1})
    sidecar = root / "runs" / "abc123" / "gates.json"
    run_folder = tmp_path / "wandb" / "offline-run-20261201_100000-abc123"
    run_folder.mkdir(parents=True)
    (run_folder / "run-abc123.wandb").write_bytes(b"")
    found = [find_sidecar(x, root) for x in ("abc123", sidecar, sidecar.parent, run_folder,
                                             run_folder / "run-abc123.wandb")]
    assert [sidecar] * 5 == found
    with pytest.raises(GateFileError, match="no gate verdicts recorded for 'other'"):
        find_sidecar("other", root)


def test_from_run_compares_with_another_runs_recorded_numbers(tmp_path: Path) -> None:
    """Baseline.from_run reads the other run's sidecar for the same prefix; a missing run is a problem."""
    record(tmp_path, "ref", {"nrmse": 0.1, "nrmse_stderr": 0.02})
    done = evaluation(tmp_path, "new", {"nrmse": 0.2}, suite(baseline=Baseline.from_run("ref")))
    assert done.baseline is not None and ("from_run", 0.1, 0.02) == (
        done.baseline.source, done.baseline.values["nrmse"].value, done.baseline.values["nrmse"].stderr)  # type: ignore[index]
    assert "fail" == done.verdict.status
    missing = resolve_baseline(suite(baseline=Baseline.from_run("gone")), project="p", run_id="x", root=tmp_path)
    assert missing is not None and missing.values is None and "no gate verdicts recorded for 'gone'" in (
        missing.problem or "")


def test_recheck_evaluates_a_recorded_run_against_the_baseline_as_it_is_now(tmp_path: Path) -> None:
    """recheck re-evaluates the stored declaration and numbers: no baseline first, then a fail after a promote."""
    record(tmp_path, "cand", {"nrmse": 0.2})
    assert ["no_baseline"] == [v.status for s in recheck("cand", root=tmp_path) for v in s.verdicts]
    record(tmp_path, "ref", {"nrmse": 0.1})
    baselines.promote("ref", root=tmp_path)
    rechecked = recheck("cand", root=tmp_path)
    assert [("eval", False, "regression")] == [(s.prefix, s.passed, s.verdicts[0].reason) for s in rechecked]
    given = recheck("cand", baseline=tmp_path / "runs" / "cand" / "gates.json", root=tmp_path)
    assert [True] == [s.passed for s in given]
    other = tmp_path / "other.json"
    other.write_text('{"format": "something else"}')
    with pytest.raises(GateFileError, match="neither a baseline store"):
        recheck("cand", baseline=other, root=tmp_path)


def test_read_sidecar_names_a_file_that_is_not_one(tmp_path: Path) -> None:
    """A JSON file of another format, or one that is not JSON, raises GateFileError naming it."""
    path = tmp_path / "gates.json"
    path.write_text('{"format": "other"}')
    with pytest.raises(GateFileError, match="is not a gates sidecar \\(format 'other'"):
        read_sidecar(path)
    path.write_text("{")
    with pytest.raises(GateFileError, match="is not JSON"):
        read_sidecar(path)
