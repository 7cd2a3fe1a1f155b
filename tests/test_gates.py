"""Pure unit tests of instrument._gates: gate strings, declarations and their validation."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrument._gates import (
    OPS,
    Baseline,
    Gate,
    Regression,
    Suite,
    declare,
    decode_number,
    direction_of,
    encode_number,
    parse_gate,
)

non_negative = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e6)
ops = st.sampled_from(sorted(OPS))
severities = st.sampled_from(["fail", "warn"])
directions = st.sampled_from(["min", "max"])
metric_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}(/[a-z0-9_]{1,5})?", fullmatch=True)


@given(metric=metric_names, op=ops, threshold=st.floats(allow_nan=False), severity=severities)
def test_a_gate_string_parses_to_the_same_gate(metric: str, op: str, threshold: float, severity: str) -> None:
    """``"<op> <threshold> <severity>"`` parses to Gate(metric, op, threshold, severity), exactly."""
    assert Gate(metric, op, threshold, severity=severity) == parse_gate(metric, f"{op} {threshold!r} {severity}")  # type: ignore[arg-type]


def test_gate_strings_accept_spacing_and_default_to_fail() -> None:
    """Spaces are optional around the op, the severity defaults to fail, and ``inf`` is a threshold."""
    assert Gate("nrmse", "<", 0.1) == parse_gate("nrmse", "<0.1")
    assert Gate("drift", "<=", 1e-3, severity="warn") == parse_gate("drift", "  <= 1e-3   warn ")
    assert Gate("x", "!=", math.inf) == parse_gate("x", "!= inf")


@pytest.mark.parametrize("text", ["0.1", "< ", "<< 0.1", "< 0.1 error", "< nan", "< abc", "=< 1", "< 0.1 warn x", ""])
def test_a_malformed_gate_string_is_a_value_error_naming_it(text: str) -> None:
    """A string that is not ``<op> <number> [warn|fail]`` raises ValueError naming the metric and the string."""
    with pytest.raises(ValueError, match=f"gate 'nrmse': {text!r} is not a gate string"):
        parse_gate("nrmse", text)


def test_a_gate_that_is_not_a_string_is_a_type_error() -> None:
    """A number where a gate string belongs raises TypeError naming the metric and the type."""
    with pytest.raises(TypeError, match=r"gate 'nrmse' must be a gate string .* got float 0\.1"):
        parse_gate("nrmse", 0.1)  # type: ignore[arg-type]


def test_gate_values_validate_their_fields() -> None:
    """Gate refuses an unknown op or severity, a NaN or non-numeric threshold, and an empty metric."""
    with pytest.raises(ValueError, match=re.escape("instrument.Gate: op must be one of")):
        Gate("m", "=<", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("instrument.Gate: severity must be one of 'fail', 'warn', got str 'error'")):
        Gate("m", "<", 1.0, severity="error")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be a number, got nan"):
        Gate("m", "<", math.nan)
    with pytest.raises(TypeError, match="threshold must be a number, got str '1'"):
        Gate("m", "<", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric must be a non-empty metric name"):
        Gate("", "<", 1.0)
    assert 0.5 == Gate("m", "<", np.float32(0.5)).threshold  # type: ignore[arg-type]


def test_regression_values_validate_their_tolerances() -> None:
    """Regression refuses negative, infinite, NaN and boolean tolerances and an unknown direction."""
    with pytest.raises(ValueError, match=re.escape("instrument.Regression: rel must be at least 0, got -0.1")):
        Regression("m", "min", rel=-0.1)
    with pytest.raises(ValueError, match=re.escape("instrument.Regression: abs must be a finite number, got inf")):
        Regression("m", "min", abs=math.inf)
    with pytest.raises(TypeError, match=re.escape("instrument.Regression: stderr_k must be a number, got bool True")):
        Regression("m", "min", stderr_k=True)
    with pytest.raises(ValueError, match="direction must be one of 'min', 'max', got str 'down'"):
        Regression("m", "down")  # type: ignore[arg-type]


def test_baselines_validate_their_arguments() -> None:
    """Baseline.best/median need n >= 1, values a mapping of finite numbers, pinned a known promote."""
    with pytest.raises(ValueError, match=re.escape("instrument.Baseline.best: n must be a whole number of runs, at least 1")):
        Baseline.best(0)
    with pytest.raises(ValueError, match=re.escape("instrument.Baseline.median: n must be")):
        Baseline.median(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="values\\['nrmse'\\] must be a finite number, got nan"):
        Baseline.values({"nrmse": math.nan})
    with pytest.raises(TypeError, match="non-empty mapping"):
        Baseline.values([0.1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="promote must be None or 'on-pass'"):
        Baseline.pinned(promote="always")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="run must be a run id or a path"):
        Baseline.from_run(3)  # type: ignore[arg-type]


def test_declare_builds_a_suite_from_strings_gates_and_regressions() -> None:
    """Strings, Gate values and one Regression become one suite with the pinned default baseline."""
    suite = declare("eval", {"nrmse": "< 0.1", "drift": Gate("drift", "<=", 1e-3, severity="warn")},
                    Regression("mse", "min", rel=0.05))
    assert Suite("eval", (Gate("nrmse", "<", 0.1), Gate("drift", "<=", 1e-3, severity="warn")),
                 (Regression("mse", "min", rel=0.05),), Baseline.pinned(), "alert") == suite
    assert suite is not None and ["nrmse", "drift", "mse"] == suite.metrics
    assert declare("eval") is None


def test_declare_names_what_is_wrong() -> None:
    """A bad string, a metric gated twice, a stray baseline or on_fail, and wrong types are named."""
    with pytest.raises(ValueError, match=r"instrument.eval_summary\(prefix='eval'\): gate 'nrmse': '<< 1'"):
        declare("eval", {"nrmse": "<< 1"})
    with pytest.raises(ValueError, match="metric 'nrmse' has more than one threshold gate"):
        declare("eval", [Gate("nrmse", "<", 1.0), Gate("nrmse", ">", 0.0)])
    with pytest.raises(ValueError, match="metric 'nrmse' has more than one regression"):
        declare("eval", regression=[Regression("nrmse", "min"), Regression("nrmse", "max")])
    with pytest.raises(ValueError, match="baseline= is only used by regression= gates"):
        declare("eval", {"nrmse": "< 1"}, baseline=Baseline.best(3))
    with pytest.raises(ValueError, match="on_fail= was given but no gates= or regression="):
        declare("eval", on_fail="raise")
    with pytest.raises(ValueError, match="on_fail must be one of 'alert', 'record', 'raise', got str 'exit'"):
        declare("eval", {"nrmse": "< 1"}, on_fail="exit")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="gates must be a mapping of metric to gate string"):
        declare("eval", "nrmse < 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("regression must hold instrument.Regression values, got str")):
        declare("eval", regression=["nrmse"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=re.escape("baseline must be an instrument.Baseline")):
        declare("eval", regression=Regression("m", "min"), baseline={"m": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gates\\['a'\\] is a Gate for metric 'b'"):
        declare("eval", {"a": Gate("b", "<", 1.0)})


suites = st.builds(
    lambda prefix, gates, regressions, baseline, on_fail: Suite(prefix, tuple(gates), tuple(regressions), baseline,
                                                               on_fail),
    metric_names,
    st.lists(st.builds(Gate, metric_names, ops, st.floats(allow_nan=False), severity=severities),
             max_size=3, unique_by=lambda g: g.metric),
    st.lists(st.builds(Regression, metric_names, directions, rel=non_negative, abs=non_negative,
                       stderr_k=st.none() | non_negative, severity=severities),
             min_size=1, max_size=3, unique_by=lambda r: r.metric),
    st.sampled_from([Baseline.pinned(), Baseline.pinned("on-pass"), Baseline.best(3), Baseline.median(5),
                     Baseline.values({"a": 1.0, "b/c": -2.5}), Baseline.from_run("abc123")]),
    st.sampled_from(["alert", "record", "raise"]),
)


@given(suite=suites)
def test_a_suite_survives_strict_json(suite: Suite) -> None:
    """A suite written as strict JSON (no NaN tokens) reads back equal, infinite thresholds included."""
    text = json.dumps(suite.to_json(), allow_nan=False)
    assert suite == Suite.from_json(suite.prefix, json.loads(text))


def test_a_malformed_declaration_is_a_value_error() -> None:
    """A declaration with a bad op or missing field reads as ValueError naming the suite."""
    with pytest.raises(ValueError, match="a malformed gate declaration for 'eval'"):
        Suite.from_json("eval", {"gates": [{"metric": "m", "op": "~", "threshold": 1}]})
    with pytest.raises(ValueError, match="a malformed gate declaration for 'eval'"):
        Suite.from_json("eval", {"regression": [{"metric": "m"}]})


@given(value=st.floats() | st.none())
def test_numbers_are_strict_json(value: float | None) -> None:
    """encode_number gives strict JSON that decode_number reads back (NaN as "nan", inf as "inf")."""
    encoded = encode_number(value)
    back = decode_number(json.loads(json.dumps(encoded, allow_nan=False)))
    assert (value is None and back is None) or (value is not None and back is not None and (
        value == back or (math.isnan(value) and math.isnan(back))))


def test_the_direction_of_a_metric() -> None:
    """A regression's direction wins; else a threshold op implies one; == and != imply none."""
    suite = declare("e", {"a": "< 1", "b": ">= 0", "c": "== 1", "d": "> 0"}, Regression("d", "min"))
    assert suite is not None
    assert ["min", "max", None, "min", None] == [direction_of(suite, m) for m in ("a", "b", "c", "d", "zz")]
