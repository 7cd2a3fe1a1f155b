"""Bad values (promise 4): NaN/inf kept, unroutable objects dropped with a warning, steps exact,
bad keys named; and properties of routing on arbitrary nested values (hypothesis)."""

from __future__ import annotations

import inspect
import json
import math
import re
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import instrument
from instrument import _problems
from instrument._keys import key_text
from instrument._kinds import as_step
from instrument._routing import join, route
from instrument.runfile import read_runs
from instrument.testing import recording


def instrument_warnings(stderr: str) -> list[str]:
    """Return the InstrumentationWarning messages a script printed."""
    return re.findall(r"InstrumentationWarning: (.*)", stderr)


@pytest.mark.integration
@pytest.mark.slow
def test_c10_nan_inf_and_objects_with_real_wandb(wandb_root: Path) -> None:
    """NaN and inf stay NaN and inf in history (one warning per key over two calls), an unknown
    object is dropped with a warning naming function, key and type while the rest of the row
    lands, a NaN summary warns that wandb stores null; steps past 2**31 stay exact, a float or
    numpy step becomes an int and 10.5 is named in a warning (C10)."""
    result = run_script(wandb_root, """
import numpy as np
import instrument

class Meter:
    pass

@instrument.training_stage("operator")
def train_step():
    return {"loss": float("nan"), "gnorm": float("inf"), "meter": Meter(), "ok": 1.0}

@instrument.eval_summary(prefix="eval")
def evaluate():
    return {"nrmse": float("nan")}

@instrument.training_stage("big")
def big():
    instrument.log({"x": 1.0}, step=2**31 + 7)
    instrument.log({"x": 2.0}, step=2**40 + 3)
    instrument.log({"x": 3.0}, step=np.int64(2**40 + 4))
    instrument.log({"x": 4.0}, step=float(2**40 + 5))
    instrument.log({"x": 5.0}, step=10.5)

train_step()
train_step()
evaluate()
big()
""")
    (run,) = read_runs(wandb_root / "wandb")
    rows = [row for row in run.history if "operator/step" in row]
    assert 2 == len(rows)
    for row in rows:
        assert math.isnan(row["operator/loss"]) and math.inf == row["operator/gnorm"] and 1.0 == row["operator/ok"]
        assert "operator/meter" not in row
    assert None is run.summary["eval/nrmse"]
    steps = [2**31 + 7, 2**40 + 3, 2**40 + 4, 2**40 + 5, 2**40 + 6]
    assert list(zip(steps, [1.0, 2.0, 3.0, 4.0, 5.0], strict=True)) == run.series("big/x")
    messages = instrument_warnings(result.stderr)
    assert 1 == len([m for m in messages if "'operator/loss' is nan" in m]), result.stderr
    assert 1 == len([m for m in messages if "'operator/gnorm' is inf" in m]), result.stderr
    assert any("train_step" in m and "'operator/meter'" in m and "Meter" in m for m in messages)
    assert any("'eval/nrmse'" in m and "null" in m for m in messages)
    assert any("10.5" in m for m in messages)


NAN_CONFIG = """
import instrument

@instrument.run_config
def settings():
    return {"lr": float("nan"), "nested": {"x": float("nan")}, "betas": [0.9, float("nan")], "ok": 1}

@instrument.eval_summary(prefix="eval")
def evaluate():
    return {"nrmse": 0.1, "settings": instrument.Config({"c": float("nan")})}

with instrument.pipeline(project="p", config={"p": float("nan")}):
    settings()
    settings()
    evaluate()
"""


@pytest.mark.integration
def test_nan_in_the_config_warns_once_per_key_that_wandb_stores_null(wandb_root: Path) -> None:
    """NaN in a pipeline's config, from ``run_config`` (nested, in a list) and in a ``Config`` marker
    is stored by wandb as null, with one warning per key saying so, however often it is written."""
    result = run_script(wandb_root, NAN_CONFIG)
    (run,) = read_runs(wandb_root / "wandb")
    expected = {"p": None, "lr": None, "nested": {"x": None}, "betas": [0.9, None], "ok": 1, "eval": {"c": None}}
    assert expected == run.config
    messages = [m for m in instrument_warnings(result.stderr) if "wandb stores NaN in the config as null" in m]
    assert ["betas", "eval/c", "lr", "nested/x", "p"] == sorted(re.findall(r"config key '([^']+)'", " ".join(messages)))


def test_the_recording_stores_nan_in_the_config_as_wandb_does() -> None:
    """The recording reads a NaN config value back as None (nested, in lists), like wandb."""
    with pytest.warns(instrument.InstrumentationWarning, match="config as null"), recording() as recorded:
        exec(compile(NAN_CONFIG, "nan_config", "exec"), {})
    assert {"p": None, "lr": None, "nested": {"x": None}, "betas": [0.9, None], "ok": 1, "eval": {"c": None}} == (
        recorded.run().config)


@instrument.training_stage("operator")
def returns(value: Any) -> Any:
    return value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"": 1.0, "ok": 1.0}, ["''", "non-empty"]),
        ({None: 1.0, "ok": 1.0}, ["None", "non-empty"]),
        ({"a/b": 1.0, "a": {"b": 2.0}, "ok": 1.0}, ["'operator/a/b'", "'a/b' and 'a' / 'b' both become"]),
    ],
)
def test_bad_keys_warn_with_a_clear_message_and_the_rest_lands(value: dict[Any, Any], words: list[str]) -> None:
    """An empty key, a None key, or two keys that flatten to the same name: a warning naming the
    function and the key (both keys, for two); the other values of the row land."""
    with recording(strict=False) as recorded, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returns(value)
    messages = [str(w.message) for w in caught]
    assert 1 == len(messages)
    assert all(word in messages[0] for word in ["returns", *words])
    assert 1.0 == recorded.run().history[0]["operator/ok"]


@pytest.mark.parametrize("value", [{"": 1.0}, {None: 1.0}, {"a/b": 1.0, "a": {"b": 2.0}}, {"meter": object()}])
def test_bad_input_raises_in_strict_mode(value: dict[Any, Any]) -> None:
    """``INSTRUMENT_STRICT``/the fixture turn each bad-input warning into an InstrumentationError."""
    with recording(strict=True), pytest.raises(instrument.InstrumentationError, match="returns"):
        returns(value)


def test_a_fractional_step_is_an_error_naming_the_value_in_strict_mode() -> None:
    """``step=10.5`` raises in strict mode, naming 10.5; whole floats and numpy ints are ints."""
    import numpy as np

    assert [10, 10, 2**40] == [as_step(10.0), as_step(np.int64(10)), as_step(float(2**40))]
    with recording(strict=True), pytest.raises(instrument.InstrumentationError, match=r"10\.5"):
        instrument.log({"x": 1.0}, step=10.5)


# Properties --------------------------------------------------------------------------------------

class Opaque:
    """An object that fits no routing rule."""


keys = st.one_of(st.text(max_size=4), st.integers(-3, 3), st.none(), st.sampled_from(["step", "a/b", "a"]))
leaves = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.booleans(),
    st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2), st.builds(Opaque),
)
values = st.recursive(leaves, lambda children: st.dictionaries(keys, children, max_size=4), max_leaves=12)


def expected_keys(value: Any, prefix: str | None, role: str) -> list[str]:
    """Return the final key of every non-None leaf of *value* (bad keys give their problem key)."""
    if not isinstance(value, Mapping):
        return [] if value is None else [join(prefix, "value")]
    out: list[str] = []

    def walk(mapping: Mapping[Any, Any], path: str | None, top: bool) -> None:
        for key, leaf in mapping.items():
            if top and role == "series" and prefix is not None and key == "step":
                continue  # a stage point's step, not a value (a bad one is a problem on "<prefix>/step")
            text = key_text(key)
            if text is None:
                out.append(join(path, repr(key)))
            elif isinstance(leaf, Mapping):
                walk(leaf, join(path, text), False)
            elif leaf is not None:
                out.append(join(path, text))

    walk(value, prefix, True)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values, role=st.sampled_from(["series", "summary"]), prefix=st.sampled_from([None, "operator"]))
def test_routing_never_raises_and_loses_nothing_without_a_problem(value: Any, role: str, prefix: str | None) -> None:
    """Any nested value: routing raises nothing, and every non-None leaf lands under its key or
    is named by a problem."""
    routed = route(value, role=role, prefix=prefix, function="f")  # type: ignore[arg-type]
    landed = {key for record in routed.records for key in getattr(record, "values", {})}
    named = {problem.key for problem in routed.problems}
    lost = [key for key in expected_keys(value, prefix, role) if key not in landed and key not in named]
    assert [] == lost


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_a_stage_returning_anything_never_raises_in_production_and_returns_the_value(value: Any) -> None:
    """Any nested value returned by a stage: no exception escapes in production, the caller gets
    the very value back; in strict mode only an InstrumentationError can escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with recording(strict=False):
            assert returns(value) is value
        try:
            with recording(strict=True):
                returns(value)
        except instrument.InstrumentationError:
            pass


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: instrument.File("r.txt", policy="sometimes"), (ValueError, (
            "instrument.File: policy must be one of 'now', 'end', 'live', got str 'sometimes'"))),
        (lambda: instrument.Alert("T", level="CRITICAL"), (ValueError, (
            "instrument.Alert: level must be one of 'INFO', 'WARN', 'ERROR', got str 'CRITICAL'"))),
        (lambda: instrument.File(3), (TypeError, (
            "instrument.File: path must be a path (a string or a pathlib.Path), got int 3"))),
        (lambda: instrument.Artifact(None), (TypeError, (
            "instrument.Artifact: path must be a path (a string or a pathlib.Path), got NoneType None"))),
        (lambda: instrument.Summary("x"), (TypeError, (
            "instrument.Summary: values must be a mapping, such as {'loss': 0.1}, got str 'x'"))),
        (lambda: instrument.Config([1]), (TypeError, (
            "instrument.Config: values must be a mapping, such as {'loss': 0.1}, got list [1]"))),
        (lambda: instrument.Table(3), (TypeError, "instrument.Table: columns must be a list of column names, got int 3")),
        (lambda: instrument.Table(["a"], [1]), (TypeError, "instrument.Table: row 0 must be a list of cells, got int 1")),
        (lambda: instrument.Histogram([1, "a"]), (TypeError, "instrument.Histogram: values must be numbers, got str 'a' among them")),
    ],
)
def test_wrong_marker_arguments_raise_naming_the_marker_field_and_value(
    call: Any, expected: tuple[type[Exception], str]
) -> None:
    """A marker or media value built with a wrong argument raises an error that reads as a sentence
    naming the class, the field and the value (not attrs' raw tuple)."""
    with pytest.raises(Exception) as caught:
        call()
    assert expected == (type(caught.value), str(caught.value))


def test_warnings_point_at_the_users_line() -> None:
    """A warning from a stage call, from ``instrument.log`` inside it, from a ``WandBContext``
    method and from entering a pipeline points at the line of user code that led to it."""
    here = __file__
    lines = []

    @instrument.training_stage("stage")
    def stage() -> dict[str, Any]:
        lines.append(inspect.currentframe().f_lineno + 1)  # type: ignore[union-attr]
        instrument.log({"inner": object()})
        return {"outer": object()}

    with warnings.catch_warnings(record=True) as caught, recording(strict=False):
        warnings.simplefilter("always")
        lines.append(inspect.currentframe().f_lineno + 1)  # type: ignore[union-attr]
        stage()
        lines.append(inspect.currentframe().f_lineno + 1)  # type: ignore[union-attr]
        instrument.current().log_training_metric("stage", "x", object())
        lines.append(inspect.currentframe().f_lineno + 1)  # type: ignore[union-attr]
        with instrument.pipeline(project="p", config={"lr": float("nan")}):
            pass
    found = [(w.filename, w.lineno) for w in caught if issubclass(w.category, instrument.InstrumentationWarning)]
    assert sorted((here, line) for line in lines) == sorted(found), [str(w.message) for w in caught]


@pytest.mark.integration
def test_a_value_wandb_refuses_on_the_writer_thread_warns_at_the_users_function(wandb_root: Path) -> None:
    """A value that only wandb refuses (an image file that is gone), found on the run's writer
    thread, warns at the decorated function's definition in the user's script, not in threading.py."""
    result = run_script(wandb_root, """
        import json, pathlib, warnings
        import instrument

        seen = []
        warnings.showwarning = lambda message, category, filename, lineno, *rest: seen.append([filename, lineno])

        @instrument.training_stage("op")
        def step():
            return {"loss": 1.0, "img": instrument.Image(pathlib.Path("gone.png"))}

        @instrument.eval_summary(prefix="eval")
        def evaluate():
            return {"img": instrument.Image(pathlib.Path("gone.png"))}

        step()
        evaluate()
        instrument.flush()
        print(json.dumps(seen))
    """)
    script = wandb_root / "script.py"
    decorators = [n for n, line in enumerate(script.read_text().splitlines(), 1) if line.startswith("@instrument.")]
    assert [[str(script), line] for line in decorators] == json.loads(result.stdout.strip().splitlines()[-1]), \
        result.stderr


def test_a_warning_from_a_thread_without_user_code_points_at_the_last_decorated_function() -> None:
    """A problem reported where no frame is the user's (a thread of instrument's own) points at the
    decorated function seen last, not at threading.py or a line inside instrument."""

    @instrument.training_stage("stage")
    def stage() -> None:
        return None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread = threading.Thread(target=_problems.report, args=(_problems.Problem("backend", "instrument: late"),))
        thread.start()
        thread.join()
    assert [(__file__, stage.__wrapped__.__code__.co_firstlineno)] == [(w.filename, w.lineno) for w in caught]


def test_a_strict_error_does_not_say_what_production_does_instead() -> None:
    """In strict mode the error names the problem only (nothing was written); the warning in
    production also says what became of the value."""
    with pytest.raises(instrument.InstrumentationError) as caught, recording():
        returns({"x": object()})
    with pytest.warns(instrument.InstrumentationWarning) as warned, recording(strict=False):
        returns({"x": object()})
    assert "dropped" not in str(caught.value)
    assert str(warned[0].message) == f"{caught.value}; it was dropped"


def test_a_plain_list_gets_a_hint_to_use_histogram_or_table() -> None:
    """``{"x": [1, 2, 3]}`` is not guessed: the problem suggests instrument.Histogram or instrument.Table."""
    routed = route({"x": [1, 2, 3]}, role="series", prefix="s", function="f")
    assert ((), 1) == (routed.records, len(routed.problems))
    assert ("instrument: f: key 's/x': a list of 3 values is not guessed: wrap it in instrument.Histogram(values) "
            "for a distribution, or instrument.Table(columns, rows) for rows") == routed.problems[0].message


def test_one_non_finite_value_is_singular() -> None:
    """A histogram with one NaN says "1 non-finite value was left out"; with two, "values were"."""
    one = route({"h": instrument.Histogram([1.0, math.nan])}, role="summary", prefix=None, function="f")
    two = route({"h": instrument.Histogram([math.inf, math.nan])}, role="summary", prefix=None, function="f")
    assert ["histogram: 1 non-finite value was left out", "histogram: 2 non-finite values were left out"] == [
        routed.problems[0].message.split(": ", 3)[-1] for routed in (one, two)]


def test_an_int_past_64_bits_is_a_float_in_history_and_exact_in_the_summary() -> None:
    """wandb keeps 64-bit ints in history and turns larger ones into floats: the recorder stores the
    float too, said once per key (advisory, so not raised in strict mode); a summary keeps the exact int."""

    @instrument.training_stage("big")
    def train_step() -> dict[str, int]:
        return {"huge": 2**70 + 1, "edge": 2**63 - 1}

    @instrument.eval_summary(prefix="eval")
    def evaluate() -> dict[str, int]:
        return {"huge": 2**70 + 1}

    with warnings.catch_warnings(record=True) as caught, recording() as recorded:
        warnings.simplefilter("always")
        train_step()
        train_step()
        evaluate()
    run = recorded.run()
    said = [str(w.message) for w in caught if "'big/huge'" in str(w.message)]
    assert ([(0, float(2**70)), (1, float(2**70))], [(0, 2**63 - 1), (1, 2**63 - 1)], 2**70 + 1, 1) == (
        run.series("big/huge"), run.series("big/edge"), run.summary["eval/huge"], len(said))
    assert float is type(run.series("big/huge")[0][1])
