"""Gate declarations and their evaluation: pure (no I/O, no wandb).

A suite is what one ``eval_summary(prefix=..., gates=..., regression=..., baseline=...)``
declares. :func:`evaluate` turns a suite, the numbers the eval returned and a baseline into a
:class:`SuiteVerdict`, which says what lands in the run (summary keys, a table, an alert) and in
the sidecar and history files. docs/gates.md is the reference; the file formats are in
:mod:`instrument._gatefiles`.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, cast

import attrs

from instrument._values import Table

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


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _where(instance: Any) -> str:
    return f"instrument.{type(instance).__name__}"


def _check_metric(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{_where(instance)}: {attribute.name} must be a non-empty metric name without a "
                         f"leading or trailing '/', got {_shown(value)}")


def _real(where: str, name: str, value: Any, *, minimum: float | None = None, finite: bool = True) -> float:
    """Return *value* as a float, or raise naming *where* and *name*: bools and NaN are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        number = getattr(value, "item", None)  # numpy scalars
        if not callable(number) or isinstance(value, bool):
            raise TypeError(f"{where}: {name} must be a number, got {_shown(value)}")
        value = number()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{where}: {name} must be a number, got {_shown(value)}")
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
                             f"{', '.join(repr(o) for o in self.options)}, got {_shown(value)}")

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
        raise ValueError(f"{where}: n must be a whole number of runs, at least 1, got {_shown(n)}")
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
                            f"{{'nrmse': 0.09}}, got {_shown(values)}")
        given: dict[str, float] = {}
        for metric, value in values.items():
            if not isinstance(metric, str) or not metric:
                raise TypeError(f"{where}: metric names must be non-empty strings, got {_shown(metric)}")
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
            raise ValueError(f"instrument.Baseline.pinned: promote must be None or 'on-pass', got {_shown(promote)}")
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
            raise TypeError(f"instrument.Baseline.from_run: run must be a run id or a path, got {_shown(run)}")
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
                        f"instrument.Gate, got {_shown(text)}")
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
                raise TypeError(f"{where}: gates keys must be metric names, got {_shown(metric)}")
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
                            f"{{'nrmse': '< 0.1'}}, or a list of instrument.Gate, got {_shown(gates)}")
        for gate in gates:
            if not isinstance(gate, Gate):
                raise TypeError(f"{where}: gates must hold instrument.Gate values, got {_shown(gate)}")
            declared.append(gate)
    regressions: list[Regression] = []
    if isinstance(regression, Regression):
        regressions.append(regression)
    elif regression is not None:
        if isinstance(regression, str) or not isinstance(regression, Iterable):
            raise TypeError(f"{where}: regression must be an instrument.Regression or a list of them, "
                            f"got {_shown(regression)}")
        for item in regression:
            if not isinstance(item, Regression):
                raise TypeError(f"{where}: regression must hold instrument.Regression values, got {_shown(item)}")
            regressions.append(item)
    for kind, metrics in (("threshold gate", [g.metric for g in declared]),
                          ("regression", [r.metric for r in regressions])):
        twice = sorted({m for m in metrics if metrics.count(m) > 1})
        if twice:
            raise ValueError(f"{where}: metric {twice[0]!r} has more than one {kind}; declare at most one "
                             "threshold gate and one regression per metric")
    if baseline is not None and not isinstance(baseline, Baseline):
        raise TypeError(f"{where}: baseline must be an instrument.Baseline (Baseline.pinned(), "
                        f"Baseline.values({{...}}), ...), got {_shown(baseline)}")
    if on_fail is not None and on_fail not in ON_FAIL:
        raise ValueError(f"{where}: on_fail must be one of 'alert', 'record', 'raise', got {_shown(on_fail)}")
    if not declared and not regressions:
        if baseline is not None or on_fail is not None:
            given = "baseline" if baseline is not None else "on_fail"
            raise ValueError(f"{where}: {given}= was given but no gates= or regression= to use it")
        return None
    if baseline is not None and not regressions:
        raise ValueError(f"{where}: baseline= is only used by regression= gates, and none is declared")
    return Suite(prefix, tuple(declared), tuple(regressions), baseline or Baseline.pinned(), on_fail or "alert")


@attrs.frozen(slots=True)
class BaselineValue:
    """One metric's baseline: *value* and what is known about where it came from.

    Attributes:
        value: the reference number.
        stderr: its standard error, if recorded.
        direction: ``"min"``/``"max"``, the direction it was recorded with, if any.
        run_id, git_commit, time: the run it came from, its commit, when it was evaluated (ISO 8601).
    """

    value: float
    stderr: float | None = None
    direction: Direction | None = None
    run_id: str | None = None
    git_commit: str | None = None
    time: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the store's per-metric entry."""
        return {"value": encode_number(self.value), "stderr": encode_number(self.stderr), "direction": self.direction,
                "run_id": self.run_id, "git_commit": self.git_commit, "time": self.time}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BaselineValue:
        """Return the entry a store or sidecar holds.

        Raises:
            ValueError: *data* is not a mapping with a numeric ``value``.
        """
        value = decode_number(data.get("value")) if isinstance(data, Mapping) else None
        if value is None:
            raise ValueError(f"a baseline entry must be an object with a numeric value, got {_shown(data)}")
        direction = data.get("direction")
        texts = {name: data.get(name) if isinstance(data.get(name), str) else None
                 for name in ("run_id", "git_commit", "time")}
        return cls(value, decode_number(data.get("stderr")), direction if direction in DIRECTIONS else None, **texts)


@attrs.frozen(slots=True)
class Verdict:
    """The outcome of one gate. Fields as the sidecar's verdict objects (docs/gates.md).

    *status* is ``"pass"``, ``"fail"`` (a ``fail`` gate failed), ``"warn"`` (a ``warn`` gate
    failed) or ``"no_baseline"`` (a regression gate with nothing to compare to: not a failure).
    *reason* says why it did not pass: ``threshold``, ``regression``, ``nan``, ``missing``,
    ``not_a_number``, ``no_baseline``; None when it passed.
    """

    metric: str
    kind: Literal["threshold", "regression"]
    severity: Severity
    status: Status
    reason: Reason | None
    value: float | None
    op: Op | None = None
    threshold: float | None = None
    direction: Direction | None = None
    baseline: float | None = None
    baseline_stderr: float | None = None
    tolerance: float | None = None
    stderr: float | None = None
    delta: float | None = None
    delta_pct: float | None = None

    @property
    def passed(self) -> bool:
        """True for ``pass`` and ``no_baseline``."""
        return self.status in ("pass", "no_baseline")

    @property
    def reference(self) -> float | None:
        """The threshold or the baseline the value was compared with."""
        return self.threshold if self.kind == "threshold" else self.baseline

    def to_json(self) -> dict[str, Any]:
        """Return the verdict object of the sidecar and the history."""
        numbers = ("threshold", "baseline", "baseline_stderr", "tolerance", "value", "stderr", "delta", "delta_pct")
        data: dict[str, Any] = {"metric": self.metric, "kind": self.kind, "op": self.op, "direction": self.direction}
        data.update({name: encode_number(getattr(self, name)) for name in numbers})
        data.update({"severity": self.severity, "status": self.status, "reason": self.reason, "passed": self.passed})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        """Return the verdict a sidecar or history line holds. Raises ``ValueError`` if malformed."""
        try:
            numbers = {name: decode_number(data.get(name)) for name in (
                "threshold", "baseline", "baseline_stderr", "tolerance", "value", "stderr", "delta", "delta_pct")}
            return cls(metric=data["metric"], kind=data["kind"], severity=data["severity"], status=data["status"],
                       reason=data.get("reason"), op=data.get("op"), direction=data.get("direction"), **numbers)
        except (KeyError, TypeError) as error:
            raise ValueError(f"a malformed verdict ({error})") from None

    def describe(self) -> str:
        """Return one line for an alert: the value, what it was compared with, and the delta."""
        value = "missing" if self.reason == "missing" else _fmt(self.value)
        if self.reason == "not_a_number":
            value = "not a number"
        head = f"{self.metric} = {value}"
        if self.kind == "threshold":
            against = f"threshold {self.op} {_fmt(self.threshold)}"
        elif self.baseline is None:
            against = "no baseline"
        else:
            against = f"baseline {_fmt(self.baseline)} ({self.direction}, tolerance {_fmt(self.tolerance)})"
        delta = ""
        if self.delta is not None and math.isfinite(self.delta):
            pct = f", {self.delta_pct:+.3g}%" if self.delta_pct is not None and math.isfinite(self.delta_pct) else ""
            delta = f", delta {self.delta:+.6g}{pct}"
        tag = f" [{self.severity}]" if self.severity == "warn" else ""
        return f"{head}: {against}{delta}: {self.reason or self.status}{tag}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


_STATUS_ORDER = {"fail": 0, "warn": 1, "no_baseline": 2, "pass": 3}
TABLE_COLUMNS = ("gate", "op", "threshold", "baseline", "value", "delta", "delta_pct", "status", "severity",
                 "tolerance", "reason")


@attrs.frozen(slots=True)
class SuiteVerdict:
    """The outcome of one evaluated suite: one :class:`Verdict` per gate, in declaration order."""

    prefix: str
    verdicts: tuple[Verdict, ...]

    @property
    def passed(self) -> bool:
        """Whether no ``fail``-severity gate failed (``warn`` gates and ``no_baseline`` do not count)."""
        return not any(v.status == "fail" for v in self.verdicts)

    @property
    def status(self) -> Literal["pass", "fail", "warn"]:
        """``"fail"`` if a fail gate failed, else ``"warn"`` if a warn gate did, else ``"pass"``."""
        statuses = {v.status for v in self.verdicts}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"

    @property
    def failed(self) -> tuple[Verdict, ...]:
        """The verdicts with status ``fail`` or ``warn``."""
        return tuple(v for v in self.verdicts if v.status in ("fail", "warn"))

    @property
    def no_baseline(self) -> bool:
        """Whether a regression gate found no baseline."""
        return any(v.status == "no_baseline" for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        """Return the ``verdicts``, ``passed`` and ``status`` fields of a sidecar suite entry."""
        return {"verdicts": [v.to_json() for v in self.verdicts], "passed": self.passed, "status": self.status}

    @classmethod
    def from_json(cls, prefix: str, data: Mapping[str, Any]) -> SuiteVerdict:
        """Return the suite verdict a sidecar entry or history line holds. Raises ``ValueError``."""
        verdicts = data.get("verdicts")
        if isinstance(verdicts, list):
            return cls(prefix, tuple(Verdict.from_json(v) for v in verdicts))
        raise ValueError(f"the verdicts of {prefix!r} must be a list, got {_shown(verdicts)}")

    def summary(self) -> dict[str, Any]:
        """Return the W&B summary keys of this suite.

        ``gates/<prefix>/passed`` (1 or 0) and ``gates/<prefix>/status``; per gated metric
        ``gates/<prefix>/<metric>/passed`` (1 if every gate of the metric passed or had no
        baseline), ``/status``, ``/reason`` (when not passed), ``/value``, ``/threshold``,
        ``/baseline``, ``/tolerance``, ``/delta``, ``/delta_pct`` (against the baseline when the
        metric has a regression gate with a baseline, else against the threshold). Keys without
        a value are left out, and so are non-finite numbers (wandb stores NaN in the summary as
        null); the table and the sidecar keep them.
        """
        base = f"gates/{self.prefix}"
        out: dict[str, Any] = {f"{base}/passed": int(self.passed), f"{base}/status": self.status}
        by_metric: dict[str, list[Verdict]] = {}
        for verdict in self.verdicts:
            by_metric.setdefault(verdict.metric, []).append(verdict)
        for metric, verdicts in by_metric.items():
            key = f"{base}/{metric}"
            worst = min(verdicts, key=lambda v: _STATUS_ORDER[v.status])
            values: dict[str, Any] = {"passed": int(all(v.passed for v in verdicts)), "status": worst.status,
                                      "reason": worst.reason if not worst.passed else None, "value": worst.value}
            threshold = next((v for v in verdicts if v.kind == "threshold"), None)
            regression = next((v for v in verdicts if v.kind == "regression"), None)
            against = regression if regression is not None and regression.baseline is not None else threshold
            if threshold is not None:
                values["threshold"] = threshold.threshold
            if regression is not None:
                values["baseline"] = regression.baseline
                values["tolerance"] = regression.tolerance
            if against is not None:
                values["delta"] = against.delta
                values["delta_pct"] = against.delta_pct
            for name, value in values.items():
                if value is None or (isinstance(value, float) and not math.isfinite(value)):
                    continue
                out[f"{key}/{name}"] = value
        return out

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Return the columns and rows of the ``gates/<prefix>/table`` W&B table, one row per gate.

        Columns: gate (the metric), op (``<``... or the regression's ``min``/``max``), threshold,
        baseline, value, delta, delta_pct, status, severity, tolerance, reason. Numbers that are
        missing or not finite are None (status and reason say why).
        """
        rows: list[list[Any]] = []
        for v in self.verdicts:
            cells: list[Any] = [v.metric, v.op or v.direction]
            cells += [_finite(x) for x in (v.threshold, v.baseline, v.value, v.delta, v.delta_pct)]
            cells += [v.status, v.severity, _finite(v.tolerance), v.reason]
            rows.append(cells)
        return list(TABLE_COLUMNS), rows

    def alert(self) -> tuple[str, str, str] | None:
        """Return ``(title, text, level)`` of the alert for this evaluation, or None if nothing failed.

        Level ``ERROR`` when a ``fail`` gate failed, ``WARN`` when only ``warn`` gates did. The
        title names the suite (shorter than the 64 characters W&B allows); the text has one line
        per failing gate with its value, threshold or baseline, and delta.
        """
        failed = self.failed
        if not failed:
            return None
        level = "ERROR" if not self.passed else "WARN"
        word = "failed" if not self.passed else "warned"
        title = f"gates {word}: {self.prefix}"
        if len(title) > 63:
            title = title[:60] + "..."
        lines = [f"{len(failed)} of {len(self.verdicts)} gates of {self.prefix!r} {word}:"]
        lines += [f"- {v.describe()}" for v in failed]
        return title, "\n".join(lines), level

    def describe(self) -> str:
        """Return a one-paragraph account of what failed (the message of :class:`GateError`)."""
        failed = [v for v in self.verdicts if not v.passed]
        return f"gates of {self.prefix!r} {self.status}: " + "; ".join(v.describe() for v in failed)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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


def as_metric(value: object) -> float | None:
    """Return *value* as a float if it is a number the gates can compare, else None.

    Accepts int, float, bool, numpy scalars and 0-d arrays or tensors (anything with ``.item()``
    giving a number and an empty ``shape``).
    """
    if isinstance(value, int | float):
        return float(value)
    item = getattr(value, "item", None)
    if callable(item) and tuple(getattr(value, "shape", (1,))) == ():
        try:
            got = item()
        except (TypeError, ValueError):
            return None
        return float(got) if isinstance(got, int | float) else None
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


def _value(metrics: Mapping[str, object], metric: str) -> tuple[float | None, Reason | None]:
    """Return (the metric's value, why it cannot be compared)."""
    if metric not in metrics:
        return None, "missing"
    value = as_metric(metrics[metric])
    if value is None:
        return None, "not_a_number"
    if math.isnan(value):
        return value, "nan"
    return value, None


def _pct(delta: float, reference: float) -> float | None:
    if reference == 0 or not math.isfinite(reference):
        return None
    return 100.0 * delta / math.fabs(reference)


def _failed(severity: Severity) -> Status:
    return "fail" if severity == "fail" else "warn"


def check_threshold(gate: Gate, metrics: Mapping[str, object]) -> Verdict:
    """Return the verdict of one threshold gate against the returned *metrics* (keys without prefix)."""
    value, problem = _value(metrics, gate.metric)
    common = {"metric": gate.metric, "kind": "threshold", "severity": gate.severity, "op": gate.op,
              "threshold": gate.threshold, "value": value}
    if problem is not None or value is None:
        return Verdict(status=_failed(gate.severity), reason=problem, **common)  # type: ignore[arg-type]
    delta = value - gate.threshold if math.isfinite(gate.threshold) else None
    ok = OPS[gate.op](value, gate.threshold)
    return Verdict(status="pass" if ok else _failed(gate.severity), reason=None if ok else "threshold",
                   delta=delta, delta_pct=None if delta is None else _pct(delta, gate.threshold),
                   **common)  # type: ignore[arg-type]


def check_regression(
    regression: Regression, metrics: Mapping[str, object], baseline: BaselineValue | None
) -> Verdict:
    """Return the verdict of one regression gate against *metrics* and the metric's *baseline*.

    A missing, non-numeric or NaN value fails (whatever the baseline); no baseline, or a
    baseline that is not finite, is ``no_baseline``. ``delta = value - baseline``; it is a
    regression when ``delta`` (``-delta`` for ``max``) exceeds the tolerance.
    """
    value, problem = _value(metrics, regression.metric)
    stderr = as_metric(metrics.get(regression.metric + STDERR_SUFFIX))
    if stderr is not None and not (math.isfinite(stderr) and stderr >= 0):
        stderr = None
    common = {"metric": regression.metric, "kind": "regression", "severity": regression.severity,
              "direction": regression.direction, "value": value, "stderr": stderr}
    reference = baseline.value if baseline is not None and math.isfinite(baseline.value) else None
    if reference is not None and baseline is not None:
        common["baseline"] = reference
        common["baseline_stderr"] = baseline.stderr
        common["tolerance"] = regression.tolerance(reference, stderr)
    if problem is not None or value is None:
        return Verdict(status=_failed(regression.severity), reason=problem, **common)  # type: ignore[arg-type]
    if reference is None:
        return Verdict(status="no_baseline", reason="no_baseline", **common)  # type: ignore[arg-type]
    delta = value - reference
    worse = delta if regression.direction == "min" else -delta
    ok = worse <= common["tolerance"]  # type: ignore[operator]
    return Verdict(status="pass" if ok else _failed(regression.severity), reason=None if ok else "regression",
                   delta=delta, delta_pct=_pct(delta, reference), **common)  # type: ignore[arg-type]


def evaluate(
    suite: Suite, metrics: Mapping[str, object], baseline: Mapping[str, BaselineValue] | None
) -> SuiteVerdict:
    """Evaluate every gate of *suite* against the eval's *metrics*.

    Args:
        suite: the declaration.
        metrics: what the eval returned, flattened with ``/`` and without the prefix
            (``{"nrmse": 0.09, "nrmse_stderr": 0.004}``); numbers are compared, anything else
            fails its gate with reason ``not_a_number``.
        baseline: per metric, the value the regression gates compare with; None when no
            baseline was found (each regression gate is then ``no_baseline``).

    Returns:
        One verdict per gate: threshold gates first, then regression gates, each in
        declaration order.
    """
    verdicts = [check_threshold(gate, metrics) for gate in suite.gates]
    verdicts += [check_regression(r, metrics, (baseline or {}).get(r.metric)) for r in suite.regressions]
    return SuiteVerdict(suite.prefix, tuple(verdicts))


def failed_suites(summary: Mapping[str, Any]) -> list[str]:
    """Return, sorted, the prefixes of the suites whose verdicts in a run's *summary* failed.

    A suite is known by its table (``gates/<prefix>/table``, a :class:`~instrument.Table`) and
    failed when ``gates/<prefix>/passed`` is 0 (a ``fail`` gate failed).
    """
    failed = []
    for key, value in summary.items():
        if key.startswith("gates/") and key.endswith("/table") and isinstance(value, Table):
            base = key.removesuffix("/table")
            if summary.get(f"{base}/passed") == 0:
                failed.append(base.removeprefix("gates/"))
    return sorted(failed)


#: The per-metric summary fields :meth:`SuiteVerdict.summary` writes.
SUMMARY_FIELDS = ("passed", "status", "reason", "value", "threshold", "baseline", "tolerance", "delta", "delta_pct")


def summary_report(summary: Mapping[str, Any]) -> tuple[list[str], set[str]]:
    """Describe the suites of gates a run's *summary* holds, for a person; also return the
    summary keys described.

    A suite is known by its ``gates/<prefix>/table`` and ``gates/<prefix>/passed`` keys. One
    line per suite (``eval: fail``), then one per gated metric, indented by two spaces
    (``nrmse = 0.12: fail (threshold); threshold 0.1; delta +0.02 (+20%)``). Empty when the
    summary holds no verdicts.
    """
    suites = sorted((key.removeprefix("gates/").removesuffix("/table") for key in summary
                     if key.startswith("gates/") and key.endswith("/table")
                     and key.removesuffix("/table") + "/passed" in summary), key=len, reverse=True)
    fields: dict[str, dict[str, dict[str, Any]]] = {prefix: {} for prefix in suites}
    used: set[str] = set()
    for key, value in summary.items():
        prefix = next((p for p in suites if key.startswith(f"gates/{p}/")), None)
        if prefix is None:
            continue
        rest = key.removeprefix(f"gates/{prefix}/")
        metric, _, field = rest.rpartition("/")
        if rest in ("passed", "status", "table"):
            used.add(key)
        elif metric and field in SUMMARY_FIELDS:
            fields[prefix].setdefault(metric, {})[field] = value
            used.add(key)
    lines: list[str] = []
    for prefix in sorted(suites):
        lines.append(f"{prefix}: {summary.get(f'gates/{prefix}/status', '-')}")
        lines += [f"  {_metric_line(metric, values)}" for metric, values in sorted(fields[prefix].items())]
    return lines, used


def _metric_line(metric: str, values: Mapping[str, Any]) -> str:
    def number(name: str) -> float | None:
        value = values.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    value, reason = number("value"), values.get("reason")
    shown = _fmt(value) if value is not None else (reason if reason in ("nan", "missing") else "-")
    head = f"{metric} = {shown}: {values.get('status', '-')}" + (f" ({reason})" if reason else "")
    delta, pct = number("delta"), number("delta_pct")
    moved = "" if delta is None else f", delta {delta:+.6g}" + (f" ({pct:+.3g}%)" if pct is not None else "")
    parts = []
    if number("threshold") is not None:
        parts.append(f"threshold {_fmt(number('threshold'))}" + ("" if number("baseline") is not None else moved))
    if number("baseline") is not None:
        parts.append(f"baseline {_fmt(number('baseline'))}, tolerance {_fmt(number('tolerance'))}{moved}")
    return "; ".join([head, *parts])
