"""Pure unit tests of instrument._verdicts: ops, directions, tolerance arithmetic, verdicts, summary, table, alert."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from instrument._gates import OPS, Gate, Regression, Suite, declare
from instrument._values import Table
from instrument._verdicts import (
    BaselineValue,
    SuiteVerdict,
    Verdict,
    check_regression,
    check_threshold,
    evaluate,
    failed_suites,
    summary_report,
)

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
non_negative = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e6)
ops = st.sampled_from(sorted(OPS))
severities = st.sampled_from(["fail", "warn"])
directions = st.sampled_from(["min", "max"])


def regression_verdict(direction: str, value: float, baseline: float, **tolerances: Any) -> Verdict:
    """Return the verdict of ``Regression("m", direction, **tolerances)`` for *value* against *baseline*."""
    return check_regression(Regression("m", direction, **tolerances), {"m": value}, BaselineValue(baseline))  # type: ignore[arg-type]


@given(op=ops, value=st.floats(allow_nan=False), threshold=st.floats(allow_nan=False), severity=severities)
def test_a_threshold_gate_passes_exactly_when_its_op_holds(op: str, value: float, threshold: float, severity: str) -> None:
    """The verdict is Python's own comparison; a failure is ``fail`` or ``warn`` by severity."""
    verdict = check_threshold(Gate("m", op, threshold, severity=severity), {"m": value})  # type: ignore[arg-type]
    holds = OPS[op](value, threshold)
    assert ("pass" if holds else severity) == verdict.status
    assert (None if holds else "threshold") == verdict.reason
    assert holds == verdict.passed


@given(value=finite, threshold=finite)
def test_a_threshold_delta_is_the_distance_to_the_threshold(value: float, threshold: float) -> None:
    """delta is value - threshold; delta_pct is it in percent of |threshold|, None for a zero threshold."""
    verdict = check_threshold(Gate("m", "<", threshold), {"m": value})
    assert value - threshold == verdict.delta
    expected = None if threshold == 0 else 100 * (value - threshold) / abs(threshold)
    assert expected == verdict.delta_pct


@given(op=ops, threshold=st.floats(allow_nan=False), severity=severities)
def test_a_nan_value_fails_every_gate(op: str, threshold: float, severity: str) -> None:
    """NaN fails with reason ``nan`` whatever the op, ``!=`` included (NaN != x is True in Python)."""
    verdict = check_threshold(Gate("m", op, threshold, severity=severity), {"m": math.nan})  # type: ignore[arg-type]
    assert (severity, "nan") == (verdict.status, verdict.reason)
    assert verdict.value is not None and math.isnan(verdict.value)


def test_a_missing_or_non_numeric_value_fails() -> None:
    """A metric the eval did not return fails with ``missing``; a string with ``not_a_number``."""
    missing = check_threshold(Gate("m", "<", 1.0), {"other": 0.5})
    text = check_threshold(Gate("m", "<", 1.0, severity="warn"), {"m": "low"})
    assert ("fail", "missing", None) == (missing.status, missing.reason, missing.value)
    assert ("warn", "not_a_number") == (text.status, text.reason)


def test_numpy_and_bool_values_are_numbers() -> None:
    """numpy scalars, 0-d arrays and bools are compared as numbers."""
    metrics = {"a": np.float32(0.25), "b": np.array(3), "c": True}
    verdicts = [check_threshold(Gate(m, "<", 0.5 if m == "a" else 5.0), metrics) for m in ("a", "b", "c")]
    assert [0.25, 3.0, 1.0] == [v.value for v in verdicts]
    assert all(v.passed for v in verdicts)


@given(direction=directions, baseline=finite, rel=non_negative, abs_=non_negative)
def test_the_baseline_value_itself_always_passes(direction: str, baseline: float, rel: float, abs_: float) -> None:
    """A value equal to its baseline is never a regression, whatever the tolerance."""
    assert "pass" == regression_verdict(direction, baseline, baseline, rel=rel, abs=abs_).status


@given(baseline=finite, rel=non_negative, abs_=non_negative, stderr=st.none() | non_negative,
       k=st.none() | non_negative)
def test_the_tolerance_is_the_larger_of_abs_and_rel_plus_k_stderr(
    baseline: float, rel: float, abs_: float, stderr: float | None, k: float | None
) -> None:
    """tolerance == max(abs, rel * |baseline|) + k * stderr (k * stderr only when both are given)."""
    metrics: dict[str, Any] = {"m": baseline} | ({} if stderr is None else {"m_stderr": stderr})
    verdict = check_regression(Regression("m", "min", rel=rel, abs=abs_, stderr_k=k), metrics, BaselineValue(baseline))
    widening = k * stderr if k and stderr is not None else 0.0
    assert max(abs_, rel * abs(baseline)) + widening == verdict.tolerance
    assert stderr == verdict.stderr


@given(direction=directions, value=finite, baseline=finite, rel=non_negative, abs_=non_negative)
def test_min_and_max_mirror_each_other(direction: str, value: float, baseline: float, rel: float, abs_: float) -> None:
    """``max`` on (v, b) gives the same status as ``min`` on (-v, -b): the directions are mirrors."""
    other = "max" if direction == "min" else "min"
    here = regression_verdict(direction, value, baseline, rel=rel, abs=abs_)
    mirrored = regression_verdict(other, -value, -baseline, rel=rel, abs=abs_)
    assert here.status == mirrored.status
    assert here.tolerance == mirrored.tolerance


@given(direction=directions, value=finite, better=non_negative, baseline=finite,
       tolerances=st.tuples(non_negative, non_negative))
def test_a_better_value_never_fails_where_a_worse_one_passes(
    direction: str, value: float, better: float, baseline: float, tolerances: tuple[float, float]
) -> None:
    """Moving the value in the good direction (down for min, up for max) never turns pass into fail."""
    rel, abs_ = tolerances
    improved = value - better if direction == "min" else value + better
    if regression_verdict(direction, value, baseline, rel=rel, abs=abs_).passed:
        assert regression_verdict(direction, improved, baseline, rel=rel, abs=abs_).passed


@given(baseline=st.integers(-10**6, 10**6), tolerance=st.integers(0, 1000), direction=directions)
def test_a_value_at_the_tolerance_passes_and_one_past_it_fails(baseline: int, tolerance: int, direction: str) -> None:
    """On exact numbers: worse by the tolerance passes, worse by one more fails (with reason regression)."""
    sign = 1 if direction == "min" else -1
    edge = regression_verdict(direction, baseline + sign * tolerance, baseline, abs=tolerance)
    past = regression_verdict(direction, baseline + sign * (tolerance + 1), baseline, abs=tolerance)
    assert ("pass", None) == (edge.status, edge.reason)
    assert ("fail", "regression") == (past.status, past.reason)


@given(value=finite, rel=non_negative, abs_=non_negative, direction=directions)
def test_a_zero_baseline_uses_abs_only_and_gives_no_percentage(value: float, rel: float, abs_: float, direction: str) -> None:
    """With baseline 0 the tolerance is abs alone, delta_pct is None, and no number is inf or NaN."""
    verdict = regression_verdict(direction, value, 0.0, rel=rel, abs=abs_)
    assert abs_ == verdict.tolerance
    assert verdict.delta_pct is None
    worse = value if direction == "min" else -value
    assert (worse <= abs_) == verdict.passed
    assert all(math.isfinite(x) for x in (verdict.delta, verdict.tolerance) if x is not None)


@given(baseline=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=-1e-3),
       rel=st.floats(0.01, 0.5))
def test_a_negative_baseline_uses_its_magnitude(baseline: float, rel: float) -> None:
    """A negative baseline (a log-likelihood) gets tolerance rel*|b|, and delta_pct is over |b|."""
    worse = baseline + 2 * rel * abs(baseline)  # min: higher is worse, by twice the tolerance
    verdict = regression_verdict("min", worse, baseline, rel=rel)
    assert rel * abs(baseline) == verdict.tolerance
    assert "fail" == verdict.status
    assert verdict.delta_pct is not None and verdict.delta_pct > 0
    assert math.isclose(100 * (worse - baseline) / abs(baseline), verdict.delta_pct)


@given(value=finite, baseline=finite, stderr=non_negative, k=non_negative)
def test_a_stderr_only_widens_the_tolerance(value: float, baseline: float, stderr: float, k: float) -> None:
    """Whatever passes without ``<metric>_stderr`` also passes with it."""
    plain = check_regression(Regression("m", "min", stderr_k=k), {"m": value}, BaselineValue(baseline))
    widened = check_regression(Regression("m", "min", stderr_k=k), {"m": value, "m_stderr": stderr},
                               BaselineValue(baseline))
    assert not plain.passed or widened.passed


def test_a_regression_without_baseline_is_no_baseline_not_a_failure() -> None:
    """No baseline (or a NaN one) gives ``no_baseline``; the suite still passes."""
    suite = declare("eval", regression=Regression("m", "min"))
    assert suite is not None
    verdict = evaluate(suite, {"m": 1.0}, None)
    nan_baseline = check_regression(Regression("m", "min"), {"m": 1.0}, BaselineValue(math.nan))
    assert ("no_baseline", "no_baseline", True) == (verdict.verdicts[0].status, verdict.verdicts[0].reason,
                                                    verdict.passed)
    assert "no_baseline" == nan_baseline.status
    assert verdict.no_baseline


def test_a_nan_or_missing_value_fails_a_regression_even_without_baseline() -> None:
    """The value is checked before the baseline: NaN and missing fail on the first run too."""
    regression = Regression("m", "max", abs=1.0)
    assert ("fail", "nan") == _status(check_regression(regression, {"m": math.nan}, None))
    assert ("fail", "missing") == _status(check_regression(regression, {}, BaselineValue(1.0)))


def _status(verdict: Verdict) -> tuple[str, str | None]:
    return verdict.status, verdict.reason


def example() -> SuiteVerdict:
    """nrmse fails its threshold and passes its regression; drift warns; acc has no baseline."""
    suite = declare("eval", {"nrmse": "< 0.1", "drift": "<= 1e-3 warn"},
                    [Regression("nrmse", "min", rel=0.05, abs=0.002), Regression("acc", "max")])
    assert suite is not None
    return evaluate(suite, {"nrmse": 0.12, "drift": 0.002, "acc": 0.9}, {"nrmse": BaselineValue(0.115)})


def test_a_suite_fails_only_on_fail_gates() -> None:
    """A failed fail gate fails the suite; warn gates and no_baseline never do."""
    verdict = example()
    assert (False, "fail") == (verdict.passed, verdict.status)
    assert ["nrmse", "drift"] == [v.metric for v in verdict.failed]
    warn_only = evaluate(Suite("eval", (Gate("drift", "<=", 1e-3, severity="warn"),)), {"drift": 1.0}, None)
    assert (True, "warn") == (warn_only.passed, warn_only.status)


def test_the_summary_keys_of_a_suite() -> None:
    """Per metric: passed, status, reason, value, threshold/baseline, tolerance, delta; per suite: passed, status."""
    summary = example().summary()
    assert {
        "gates/eval/passed": 0, "gates/eval/status": "fail",
        "gates/eval/nrmse/passed": 0, "gates/eval/nrmse/status": "fail", "gates/eval/nrmse/reason": "threshold",
        "gates/eval/nrmse/value": 0.12, "gates/eval/nrmse/threshold": 0.1, "gates/eval/nrmse/baseline": 0.115,
        "gates/eval/nrmse/tolerance": pytest.approx(0.00575),
        "gates/eval/nrmse/delta": pytest.approx(0.005), "gates/eval/nrmse/delta_pct": pytest.approx(100 * 0.005 / 0.115),
        "gates/eval/drift/passed": 0, "gates/eval/drift/status": "warn", "gates/eval/drift/reason": "threshold",
        "gates/eval/drift/value": 0.002, "gates/eval/drift/threshold": 0.001,
        "gates/eval/drift/delta": pytest.approx(0.001), "gates/eval/drift/delta_pct": pytest.approx(100.0),
        "gates/eval/acc/passed": 1, "gates/eval/acc/status": "no_baseline", "gates/eval/acc/value": 0.9,
    } == summary


def test_the_summary_leaves_out_nan_and_the_table_keeps_the_row() -> None:
    """A NaN value has no summary value key (wandb would store null) but keeps its table row."""
    verdict = evaluate(Suite("eval", (Gate("m", "<", 1.0),)), {"m": math.nan}, None)
    assert {"gates/eval/passed": 0, "gates/eval/status": "fail", "gates/eval/m/passed": 0,
            "gates/eval/m/status": "fail", "gates/eval/m/reason": "nan", "gates/eval/m/threshold": 1.0} == verdict.summary()
    assert [["m", "<", 1.0, None, None, None, None, "fail", "fail", None, "nan"]] == verdict.table()[1]


def test_the_table_has_one_row_per_gate() -> None:
    """Columns gate, op, threshold, baseline, value, delta, delta_pct, status, severity, tolerance, reason."""
    columns, rows = example().table()
    assert ["gate", "op", "threshold", "baseline", "value", "delta", "delta_pct", "status", "severity",
            "tolerance", "reason"] == columns
    assert ["nrmse", "<", 0.1, None, 0.12] == rows[0][:5]
    assert ["fail", "fail", None, "threshold"] == rows[0][7:]
    assert ["drift", "<=", "warn", "warn"] == [rows[1][0], rows[1][1], rows[1][7], rows[1][8]]
    assert ["nrmse", "min", None, 0.115, 0.12, "pass"] == [*rows[2][:5], rows[2][7]]
    assert ["acc", "max", "no_baseline", "fail", "no_baseline"] == [rows[3][0], rows[3][1], rows[3][7], rows[3][8],
                                                                     rows[3][10]]


def test_the_alert_lists_each_failing_metric_at_the_right_level() -> None:
    """ERROR when a fail gate failed, WARN when only warn gates did, None when nothing failed."""
    alert = example().alert()
    assert alert is not None
    title, text, level = alert
    assert ("gates failed: eval", "ERROR") == (title, level)
    assert text.splitlines() == [
        "2 of 4 gates of 'eval' failed:",
        "- nrmse = 0.12: threshold < 0.1, delta +0.02, +20%: threshold",
        "- drift = 0.002: threshold <= 0.001, delta +0.001, +100%: threshold [warn]",
    ]
    warn = evaluate(Suite("eval", (Gate("d", "<", 0.0, severity="warn"),)), {"d": 1.0}, None).alert()
    assert warn is not None and ("gates warned: eval", "WARN") == (warn[0], warn[2])
    assert evaluate(Suite("eval", (Gate("d", "<", 2.0),)), {"d": 1.0}, None).alert() is None


def test_an_alert_title_stays_under_wandbs_limit() -> None:
    """A long prefix is cut so the title has fewer than 64 characters."""
    verdict = evaluate(Suite("e" * 100, (Gate("d", "<", 0.0),)), {"d": 1.0}, None)
    alert = verdict.alert()
    assert alert is not None and 63 == len(alert[0])


def test_a_verdict_survives_json_with_nan_and_inf() -> None:
    """A verdict with a NaN value and an infinite threshold reads back equal (NaN compared as NaN)."""
    verdict = check_threshold(Gate("m", "<", math.inf), {"m": math.nan})
    back = Verdict.from_json(json.loads(json.dumps(verdict.to_json(), allow_nan=False)))
    assert verdict.to_json() == back.to_json()
    assert SuiteVerdict("e", (verdict,)).to_json() == SuiteVerdict.from_json("e", SuiteVerdict("e", (verdict,)).to_json()).to_json()


@given(value=finite, baseline=finite)
def test_delta_is_value_minus_baseline(value: float, baseline: float) -> None:
    """delta = value - baseline for regression gates; delta_pct over |baseline|, None at zero."""
    assume(baseline != 0)
    verdict = regression_verdict("max", value, baseline)
    assert value - baseline == verdict.delta
    assert 100 * (value - baseline) / abs(baseline) == verdict.delta_pct


def test_failed_suites_are_read_from_a_runs_summary() -> None:
    """A suite failed when its table is there and its passed key is 0; warn-only suites and stray keys do not count."""
    failing, warning = example(), evaluate(Suite("w", (Gate("d", "<", 0.0, severity="warn"),)), {"d": 1.0}, None)
    summary = {**failing.summary(), **warning.summary(), "gates/stray/passed": 0,
               "gates/eval/table": Table(["a"], []), "gates/w/table": Table(["a"], [])}
    assert ["eval"] == failed_suites(summary)
    assert [] == failed_suites({"gates/eval/passed": 0})  # no table: not a suite's verdicts


def test_the_summary_report_describes_each_suite_and_metric() -> None:
    """One line per suite and per gated metric, with the delta next to what it is measured against."""
    summary = {**example().summary(), "gates/eval/table": {"_type": "table-file"}, "eval/nrmse": 0.12}
    lines, used = summary_report(summary)
    assert [
        "eval: fail",
        "  acc = 0.9: no_baseline",
        "  drift = 0.002: warn (threshold); threshold 0.001, delta +0.001 (+100%)",
        "  nrmse = 0.12: fail (threshold); threshold 0.1; baseline 0.115, tolerance 0.00575, delta +0.005 (+4.35%)",
    ] == lines
    assert set(summary) - {"eval/nrmse"} == used
    assert ([], set()) == summary_report({"eval/nrmse": 0.1})


def test_a_gate_error_pickles_with_its_verdict() -> None:
    """GateError survives pickling (a process pool hands it back) with its verdict and message."""
    import pickle

    from instrument import GateError

    error = GateError(example())
    back = pickle.loads(pickle.dumps(error))
    assert (str(error), error.verdict) == (str(back), back.verdict)


metric_pool = st.sampled_from(["a", "b", "c", "d/e"])
metric_values = st.one_of(st.floats(), st.integers(-10, 10), st.just("text"))


@given(
    gates=st.lists(st.builds(Gate, metric_pool, ops, st.floats(allow_nan=False), severity=severities),
                   max_size=4, unique_by=lambda g: g.metric),
    regressions=st.lists(st.builds(Regression, metric_pool, directions, rel=non_negative, abs=non_negative,
                                   stderr_k=st.none() | non_negative, severity=severities),
                         max_size=4, unique_by=lambda r: r.metric),
    metrics=st.dictionaries(st.sampled_from(["a", "b", "c", "d/e", "a_stderr", "c_stderr"]), metric_values),
    baseline=st.none() | st.dictionaries(metric_pool, st.builds(BaselineValue, st.floats())),
)
def test_every_suite_verdict_keeps_its_invariants(
    gates: list[Gate], regressions: list[Regression], metrics: dict[str, Any], baseline: dict[str, BaselineValue] | None
) -> None:
    """For any gates, returned values (NaN, inf, strings, missing) and baseline: one verdict per gate, a failure
    takes its gate's severity, only fail gates fail the suite, the summary, table and alert agree, and the
    verdicts are strict JSON."""
    suite = Suite("eval", tuple(gates), tuple(regressions))
    verdict = evaluate(suite, metrics, baseline)
    assert len(gates) + len(regressions) == len(verdict.verdicts)
    for one in verdict.verdicts:
        assert one.status in ("pass", "no_baseline", one.severity)
        assert (one.reason is None) == (one.status == "pass")
    assert (not any(v.status == "fail" for v in verdict.verdicts)) == verdict.passed
    if all(g.severity == "warn" for g in gates) and all(r.severity == "warn" for r in regressions):
        assert verdict.passed
    assert int(verdict.passed) == verdict.summary()["gates/eval/passed"]
    rows = verdict.table()[1]
    assert len(verdict.verdicts) == len(rows)
    assert all(math.isfinite(cell) for row in rows for cell in row if isinstance(cell, float))
    assert (verdict.alert() is None) == (not verdict.failed)
    text = json.dumps(verdict.to_json(), allow_nan=False)
    assert verdict.to_json() == SuiteVerdict.from_json("eval", json.loads(text)).to_json()
