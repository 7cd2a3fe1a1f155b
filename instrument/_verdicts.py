"""Evaluating gates: a suite, the numbers an eval returned and a baseline make verdicts.

Pure (no I/O, no wandb). :func:`evaluate` returns a :class:`SuiteVerdict`, which says what lands
in the run (summary keys, a table, an alert) and in the sidecar and history files
(:mod:`instrument._gatefiles`); :func:`summary_report` and :func:`failed_suites` read the
verdicts back from a run's summary. docs/gates.md is the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from instrument._gates import (
    DIRECTIONS,
    OPS,
    STDERR_SUFFIX,
    Direction,
    Gate,
    Op,
    Reason,
    Regression,
    Severity,
    Status,
    Suite,
    decode_number,
    encode_number,
    shown,
)
from instrument._values import Table


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
            raise ValueError(f"a baseline entry must be an object with a numeric value, got {shown(data)}")
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
        raise ValueError(f"the verdicts of {prefix!r} must be a list, got {shown(verdicts)}")

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
