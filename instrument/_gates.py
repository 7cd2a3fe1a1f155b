"""Gate declarations: what ``eval_summary(gates=..., regression=..., baseline=...)`` declares.

Pure (no I/O, no wandb), validated on construction, so a malformed gate fails when the decorator
is applied. :func:`declare` turns the options into a :class:`Suite`; evaluating one is
:mod:`instrument._verdicts`'s. docs/gates.md is the reference.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

import attrs

if TYPE_CHECKING:
    from instrument._verdicts import SuiteVerdict

Op = Literal["<", "<=", ">", ">=", "==", "!="]
Severity = Literal["fail", "warn"]
Direction = Literal["min", "max"]
OnFail = Literal["alert", "record", "raise"]
Status = Literal["pass", "fail", "warn", "no_baseline"]
Reason = Literal["threshold", "regression", "nan", "missing", "not_a_number", "no_baseline"]
BaselineKind = Literal["pinned", "values", "best", "median", "from_run"]

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
SEVERITIES = ("fail", "warn")
DIRECTIONS = ("min", "max")
ON_FAIL = ("alert", "record", "raise")
_IMPLIED: dict[str, Direction | None] = {"<": "min", "<=": "min", ">": "max", ">=": "max", "==": None, "!=": None}

#: The suffix of the key holding a metric's standard error (``nrmse_stderr``), used by ``stderr_k``.
STDERR_SUFFIX = "_stderr"


class GateError(AssertionError):
    """Raised by a gated eval with ``on_fail="raise"`` when a ``fail`` gate failed.

    Raised after everything was written (summary, table, alert, sidecar, history). *verdict* is
    the :class:`SuiteVerdict`. An ``AssertionError``, so pytest reports it as a failed test.
    """

    def __init__(self, verdict: SuiteVerdict) -> None:
        super().__init__(verdict.describe())
        self.verdict = verdict

    def __reduce__(self) -> tuple[type[GateError], tuple[SuiteVerdict]]:
        return GateError, (self.verdict,)  # pickles with its verdict (a process pool hands it back)


def shown(value: object) -> str:
    """Return ``<type> <repr>`` of *value* for a message, the repr cut at 60 characters."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _where(instance: Any) -> str:
    return f"instrument.{type(instance).__name__}"


def _check_metric(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{_where(instance)}: {attribute.name} must be a non-empty metric name without a "
                         f"leading or trailing '/', got {shown(value)}")


def _real(where: str, name: str, value: Any, *, minimum: float | None = None, finite: bool = True) -> float:
    """Return *value* as a float, or raise naming *where* and *name*: bools and NaN are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        number = getattr(value, "item", None)  # numpy scalars
        if not callable(number) or isinstance(value, bool):
            raise TypeError(f"{where}: {name} must be a number, got {shown(value)}")
        value = number()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{where}: {name} must be a number, got {shown(value)}")
    result = float(value)
    if math.isnan(result) or (finite and math.isinf(result)):
        raise ValueError(f"{where}: {name} must be a {'finite ' if finite else ''}number, got {value!r}")
    if minimum is not None and result < minimum:
        raise ValueError(f"{where}: {name} must be at least {minimum:g}, got {value!r}")
    return result


class _OneOf:
    """Check that a field holds one of *options*, naming the class, the field and the value."""

    def __init__(self, *options: str) -> None:
        self.options = options

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in self.options:
            raise ValueError(f"{_where(instance)}: {attribute.name} must be one of "
                             f"{', '.join(repr(o) for o in self.options)}, got {shown(value)}")

    def __repr__(self) -> str:
        return f"<one_of validator for {self.options!r}>"


@attrs.frozen(slots=True)
class Gate:
    """A threshold gate: the eval's *metric* must satisfy ``value <op> threshold``.

    ``Gate("nrmse", "<", 0.1)`` is what the gate string ``"< 0.1"`` under key ``nrmse`` declares.

    Args:
        metric: the key the eval returns (without the eval's prefix; nested keys joined with
            ``/``: ``"recall/top1"``).
        op: one of ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``.
        threshold: a number (infinities allowed, NaN refused).
        severity: ``"fail"`` (the default: the suite fails) or ``"warn"`` (reported, the suite
            still passes).

    Raises:
        ValueError: *metric* is empty, *op* or *severity* is not one of the above, *threshold*
            is NaN.
        TypeError: *threshold* is not a number.
    """

    metric: str = attrs.field(validator=_check_metric)
    op: Op = attrs.field(validator=_OneOf(*OPS))
    threshold: float = attrs.field()
    severity: Severity = attrs.field(default="fail", validator=_OneOf(*SEVERITIES))

    @threshold.validator
    def _check_threshold(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        _real(_where(self), "threshold", value, finite=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def text(self) -> str:
        """The gate as a gate string: ``"< 0.1"``, ``"<= 0.001 warn"``."""
        return f"{self.op} {self.threshold:g}" + (" warn" if self.severity == "warn" else "")


@attrs.frozen(slots=True)
class Regression:
    """A regression gate: *metric* must not get worse than the baseline by more than a tolerance.

    Worse means higher for ``direction="min"`` (lower is better: a loss, an error) and lower for
    ``"max"`` (an accuracy). The tolerance is ``max(abs, rel * |baseline|)``, plus ``stderr_k``
    times ``<metric>_stderr`` when the eval returns that key; with a zero baseline only *abs*
    counts. A value exactly at the tolerance passes.

    Args:
        metric: the key the eval returns (without the prefix).
        direction: ``"min"`` or ``"max"``.
        rel: the relative tolerance, a fraction of ``|baseline|`` (0.05 is 5 %); at least 0.
        abs: the absolute tolerance, in the metric's unit; at least 0.
        stderr_k: widen the tolerance by this many standard errors of the metric; None for none.
        severity: ``"fail"`` or ``"warn"``.

    Raises:
        ValueError: a tolerance is negative or not finite; *direction* or *severity* unknown.
        TypeError: a tolerance is not a number.
    """

    metric: str = attrs.field(validator=_check_metric)
    direction: Direction = attrs.field(validator=_OneOf(*DIRECTIONS))
    rel: float = attrs.field(default=0.0, kw_only=True)
    abs: float = attrs.field(default=0.0, kw_only=True)
    stderr_k: float | None = attrs.field(default=None, kw_only=True)
    severity: Severity = attrs.field(default="fail", kw_only=True, validator=_OneOf(*SEVERITIES))

    def __attrs_post_init__(self) -> None:
        where = _where(self)
        object.__setattr__(self, "rel", _real(where, "rel", self.rel, minimum=0.0))
        object.__setattr__(self, "abs", _real(where, "abs", self.abs, minimum=0.0))
        if self.stderr_k is not None:
            object.__setattr__(self, "stderr_k", _real(where, "stderr_k", self.stderr_k, minimum=0.0))

    def tolerance(self, baseline: float, stderr: float | None) -> float:
        """Return the allowed worsening against *baseline*: ``max(abs, rel*|baseline|) + stderr_k*stderr``."""
        allowed = max(self.abs, self.rel * math.fabs(baseline))
        if self.stderr_k and stderr is not None:
            allowed += self.stderr_k * stderr
        return allowed


def _check_n(where: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{where}: n must be a whole number of runs, at least 1, got {shown(n)}")
    return n


@attrs.frozen(slots=True)
class Baseline:
    """Where a suite's regression gates find the value to compare against.

    Build one with a class method: :meth:`values`, :meth:`pinned` (the default), :meth:`best`,
    :meth:`median`, :meth:`from_run`. Only ``regression=`` gates use it.

    Attributes:
        kind: ``"pinned"``, ``"values"``, ``"best"``, ``"median"`` or ``"from_run"``.
        given: the numbers of :meth:`values`, by metric.
        n: how many recorded runs :meth:`best` and :meth:`median` look at.
        run: the run id or path of :meth:`from_run`.
        promote: ``"on-pass"`` when :meth:`pinned` promotes a passing run, else None.
    """

    kind: BaselineKind = attrs.field(validator=_OneOf("pinned", "values", "best", "median", "from_run"))
    given: dict[str, float] | None = None
    n: int | None = None
    run: str | None = None
    promote: Literal["on-pass"] | None = None

    @classmethod
    def values(cls, values: Mapping[str, Any]) -> Baseline:
        """Compare against explicit numbers: ``Baseline.values({"nrmse": 0.09})``.

        Raises:
            TypeError: *values* is not a mapping of metric names to numbers.
            ValueError: a value is NaN or infinite, or the mapping is empty.
        """
        where = "instrument.Baseline.values"
        if not isinstance(values, Mapping) or not values:
            raise TypeError(f"{where}: expected a non-empty mapping of metric name to number, such as "
                            f"{{'nrmse': 0.09}}, got {shown(values)}")
        given: dict[str, float] = {}
        for metric, value in values.items():
            if not isinstance(metric, str) or not metric:
                raise TypeError(f"{where}: metric names must be non-empty strings, got {shown(metric)}")
            given[metric] = _real(where, f"values[{metric!r}]", value)
        return cls("values", given=given)

    @classmethod
    def pinned(cls, promote: Literal["on-pass"] | None = None) -> Baseline:
        """Compare against the baseline store ``.instrument/baselines/<project>/<prefix>.json``.

        The store changes only when a run is promoted (``instrument.baselines.promote(run)``, or
        the command line); with ``promote="on-pass"`` a run whose suite passed is promoted
        right after its evaluation.

        Raises:
            ValueError: *promote* is neither None nor ``"on-pass"``.
        """
        if promote not in (None, "on-pass"):
            raise ValueError(f"instrument.Baseline.pinned: promote must be None or 'on-pass', got {shown(promote)}")
        return cls("pinned", promote=promote)

    @classmethod
    def best(cls, n: int) -> Baseline:
        """Compare against the best value (by the gate's direction) of the last *n* recorded runs
        of this suite (``.instrument/history/<project>/<prefix>.jsonl``), this run left out.

        Raises:
            ValueError: *n* is not a whole number of at least 1.
        """
        return cls("best", n=_check_n("instrument.Baseline.best", n))

    @classmethod
    def median(cls, n: int) -> Baseline:
        """Compare against the median of the last *n* recorded runs of this suite, this run left out.

        Raises:
            ValueError: *n* is not a whole number of at least 1.
        """
        return cls("median", n=_check_n("instrument.Baseline.median", n))

    @classmethod
    def from_run(cls, run: str | os.PathLike[str]) -> Baseline:
        """Compare against the values another run recorded for this suite (its sidecar).

        *run* is a run id, or the path of a run's ``gates.json``, of its
        ``.instrument/runs/<id>`` folder, of its wandb run folder or of its ``.wandb`` file.

        Raises:
            TypeError: *run* is not a string or a path.
        """
        if not isinstance(run, str | os.PathLike) or not os.fspath(run):
            raise TypeError(f"instrument.Baseline.from_run: run must be a run id or a path, got {shown(run)}")
        return cls("from_run", run=os.fspath(run))

    def to_json(self) -> dict[str, Any]:
        """Return the declaration as the sidecar stores it."""
        return {"kind": self.kind, "values": dict(self.given) if self.given else None, "n": self.n,
                "run": self.run, "promote": self.promote}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Baseline:
        """Return the baseline a sidecar stored. Raises ``ValueError`` or ``TypeError`` if malformed."""
        kind = data.get("kind")
        if kind == "pinned":
            return cls.pinned(data.get("promote"))
        if kind == "values":
            return cls.values(data.get("values") or {})
        if kind == "best":
            return cls.best(data.get("n"))  # type: ignore[arg-type]
        if kind == "median":
            return cls.median(data.get("n"))  # type: ignore[arg-type]
        if kind == "from_run":
            return cls.from_run(data.get("run"))  # type: ignore[arg-type]
        raise ValueError(f"instrument: unknown baseline kind {kind!r}")


_GATE_TEXT = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*(?:\s(fail|warn))?\s*$")


def parse_gate(metric: str, text: str) -> Gate:
    """Parse a gate string ``"<op> <threshold> [warn|fail]"`` for *metric*.

    ``parse_gate("nrmse", "< 0.1")`` is ``Gate("nrmse", "<", 0.1)``; ``"<= 1e-3 warn"`` has
    severity ``warn``. The threshold is anything ``float()`` reads except NaN (``inf`` is fine).

    Raises:
        ValueError: the string is not of that form; the message names *metric* and the string.
        TypeError: *text* is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"instrument: gate {metric!r} must be a gate string such as '< 0.1' or an "
                        f"instrument.Gate, got {shown(text)}")
    match = _GATE_TEXT.match(text)
    threshold: float | None = None
    if match is not None:
        try:
            threshold = float(match.group(2))
        except ValueError:
            threshold = None
    if match is None or threshold is None or math.isnan(threshold):
        raise ValueError(f"instrument: gate {metric!r}: {text!r} is not a gate string; write '<op> <threshold> "
                         "[warn]' with op one of < <= > >= == != and a number, such as '< 0.1' or '<= 1e-3 warn'")
    return Gate(metric, cast("Op", match.group(1)), threshold, severity=cast("Severity", match.group(3) or "fail"))


@attrs.frozen(slots=True)
class Suite:
    """The gates one ``eval_summary`` declares: validated, immutable, plain data.

    Attributes:
        prefix: the eval's prefix (``"eval"``): the suite's name.
        gates: threshold gates, at most one per metric.
        regressions: regression gates, at most one per metric.
        baseline: where the regression gates find their baseline.
        on_fail: ``"alert"`` (a W&B alert per failing evaluation), ``"record"`` (no alert) or
            ``"raise"`` (also raise :class:`GateError` after writing, when a ``fail`` gate failed).
    """

    prefix: str
    gates: tuple[Gate, ...] = ()
    regressions: tuple[Regression, ...] = ()
    baseline: Baseline = attrs.field(factory=Baseline.pinned)
    on_fail: OnFail = "alert"

    @property
    def metrics(self) -> list[str]:
        """Every gated metric, in declaration order, each once."""
        return list(dict.fromkeys([g.metric for g in self.gates] + [r.metric for r in self.regressions]))

    def to_json(self) -> dict[str, Any]:
        """Return the declaration as the sidecar stores it (``declaration``)."""
        return {
            "gates": [{"metric": g.metric, "op": g.op, "threshold": encode_number(g.threshold),
                       "severity": g.severity} for g in self.gates],
            "regression": [{"metric": r.metric, "direction": r.direction, "rel": r.rel, "abs": r.abs,
                            "stderr_k": r.stderr_k, "severity": r.severity} for r in self.regressions],
            "baseline": self.baseline.to_json(),
            "on_fail": self.on_fail,
        }

    @classmethod
    def from_json(cls, prefix: str, data: Mapping[str, Any]) -> Suite:
        """Return the suite a sidecar's ``declaration`` describes.

        Raises:
            ValueError: the declaration is malformed (the message says what is wrong).
        """
        try:
            gates = [Gate(g["metric"], g["op"], _stored(g["threshold"]), severity=g.get("severity", "fail"))
                     for g in data.get("gates") or ()]
            regressions = [Regression(r["metric"], r["direction"], rel=r.get("rel", 0.0), abs=r.get("abs", 0.0),
                                      stderr_k=r.get("stderr_k"), severity=r.get("severity", "fail"))
                           for r in data.get("regression") or ()]
            baseline = Baseline.from_json(data.get("baseline") or {"kind": "pinned"})
            suite = declare(prefix, gates, regressions, baseline, data.get("on_fail", "alert"))
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"instrument: a malformed gate declaration for {prefix!r}: {error}") from None
        if suite is None:
            raise ValueError(f"instrument: the gate declaration for {prefix!r} declares no gate")
        return suite


def _stored(value: Any) -> Any:
    """Return a stored number as a float (``"inf"`` too); anything else unchanged, for the validator to name."""
    number = decode_number(value)
    return value if number is None else number


def declare(
    prefix: str,
    gates: Mapping[str, str | Gate] | Iterable[Gate] | None = None,
    regression: Regression | Iterable[Regression] | None = None,
    baseline: Baseline | None = None,
    on_fail: OnFail | None = None,
    *,
    where: str = "instrument.eval_summary",
) -> Suite | None:
    """Validate an ``eval_summary``'s gate options; return its :class:`Suite`, or None without gates.

    Args:
        prefix: the eval's prefix.
        gates: ``{"nrmse": "< 0.1", "drift": "<= 1e-3 warn"}`` (a value may be a :class:`Gate`
            for the same metric), or a list of :class:`Gate`.
        regression: a :class:`Regression` or a list of them.
        baseline: a :class:`Baseline`; default :meth:`Baseline.pinned`.
        on_fail: ``"alert"`` (default), ``"record"`` or ``"raise"``.
        where: what to name in errors.

    Raises:
        ValueError: a malformed gate string, a metric gated twice the same way, an unknown
            *on_fail*, or *baseline*/*on_fail* given with no gate to use them.
        TypeError: an option has the wrong type.
    """
    where = f"{where}(prefix={prefix!r})"
    declared: list[Gate] = []
    if isinstance(gates, Mapping):
        for metric, gate in gates.items():
            if not isinstance(metric, str) or not metric:
                raise TypeError(f"{where}: gates keys must be metric names, got {shown(metric)}")
            if isinstance(gate, Gate):
                if gate.metric != metric:
                    raise ValueError(f"{where}: gates[{metric!r}] is a Gate for metric {gate.metric!r}")
                declared.append(gate)
                continue
            try:
                declared.append(parse_gate(metric, gate))
            except (ValueError, TypeError) as error:
                raise type(error)(f"{where}: {str(error).removeprefix('instrument: ')}") from None
    elif gates is not None:
        if isinstance(gates, str) or not isinstance(gates, Iterable):
            raise TypeError(f"{where}: gates must be a mapping of metric to gate string, such as "
                            f"{{'nrmse': '< 0.1'}}, or a list of instrument.Gate, got {shown(gates)}")
        for gate in gates:
            if not isinstance(gate, Gate):
                raise TypeError(f"{where}: gates must hold instrument.Gate values, got {shown(gate)}")
            declared.append(gate)
    regressions: list[Regression] = []
    if isinstance(regression, Regression):
        regressions.append(regression)
    elif regression is not None:
        if isinstance(regression, str) or not isinstance(regression, Iterable):
            raise TypeError(f"{where}: regression must be an instrument.Regression or a list of them, "
                            f"got {shown(regression)}")
        for item in regression:
            if not isinstance(item, Regression):
                raise TypeError(f"{where}: regression must hold instrument.Regression values, got {shown(item)}")
            regressions.append(item)
    for kind, metrics in (("threshold gate", [g.metric for g in declared]),
                          ("regression", [r.metric for r in regressions])):
        twice = sorted({m for m in metrics if metrics.count(m) > 1})
        if twice:
            raise ValueError(f"{where}: metric {twice[0]!r} has more than one {kind}; declare at most one "
                             "threshold gate and one regression per metric")
    if baseline is not None and not isinstance(baseline, Baseline):
        raise TypeError(f"{where}: baseline must be an instrument.Baseline (Baseline.pinned(), "
                        f"Baseline.values({{...}}), ...), got {shown(baseline)}")
    if on_fail is not None and on_fail not in ON_FAIL:
        raise ValueError(f"{where}: on_fail must be one of 'alert', 'record', 'raise', got {shown(on_fail)}")
    if not declared and not regressions:
        if baseline is not None or on_fail is not None:
            given = "baseline" if baseline is not None else "on_fail"
            raise ValueError(f"{where}: {given}= was given but no gates= or regression= to use it")
        return None
    if baseline is not None and not regressions:
        raise ValueError(f"{where}: baseline= is only used by regression= gates, and none is declared")
    return Suite(prefix, tuple(declared), tuple(regressions), baseline or Baseline.pinned(), on_fail or "alert")


def encode_number(value: float | None) -> float | str | None:
    """Return *value* for strict JSON: a number, ``"nan"``, ``"inf"``, ``"-inf"``, or None."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def decode_number(value: Any) -> float | None:
    """Return the float a file holds (a number or ``"nan"``/``"inf"``/``"-inf"``); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return None


def direction_of(suite: Suite, metric: str) -> Direction | None:
    """Return the direction in which *metric* is better: its regression's, else its threshold
    gate's (``<``/``<=``: min, ``>``/``>=``: max), else None."""
    for regression in suite.regressions:
        if regression.metric == metric:
            return regression.direction
    for gate in suite.gates:
        if gate.metric == metric:
            return _IMPLIED[gate.op]
    return None
