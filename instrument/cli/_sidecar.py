"""Gate verdicts for the commands: a run's sidecar, the metrics' goals, verdict tables.

The sidecar (``<root>/.instrument/runs/<run id>/gates.json``, beside wandb's folder) and the
baseline store are read with :mod:`instrument._gatefiles`; numbers with
:func:`instrument._gates.decode_number`.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from instrument import _gatefiles, _gates, runfile
from instrument.cli._common import markdown_table, number, text_table
from instrument.cli._runs import instrument_dir

decode = _gates.decode_number


def read_sidecar(run: runfile.RunFile) -> dict[str, Any] | None:
    """Return *run*'s gates sidecar, None when it has none, or ``{"error": ..., "suites": {}}``
    when the file is there but unreadable (``show`` and ``plot`` say so instead of failing)."""
    path = instrument_dir(run.path) / "runs" / _gatefiles.component(run.run_id) / "gates.json"
    if not path.exists():
        return None
    try:
        return _gatefiles.read_sidecar(path)
    except _gatefiles.GateFileError as error:
        return {"error": str(error).removeprefix("instrument: "), "suites": {}}


def verdict_rows(suites: dict[str, Any]) -> list[list[str]]:
    """Return one table row per verdict: suite, metric, gate, reference, value, delta, delta %, status."""
    rows = []
    for prefix, suite in sorted(suites.items()):
        for verdict in suite.get("verdicts", []):
            if verdict["kind"] == "threshold":
                gate, reference = f"{verdict['op']} {number(decode(verdict['threshold']))}", "threshold"
            else:
                tolerance = decode(verdict.get("tolerance"))
                gate = f"{verdict['direction']} (tolerance {number(tolerance)})"
                reference = f"baseline {number(decode(verdict.get('baseline')))}"
            delta, pct = decode(verdict.get("delta")), decode(verdict.get("delta_pct"))
            reason = verdict.get("reason")
            status = verdict["status"] + (f" ({reason})" if reason and reason != verdict["status"] else "")
            rows.append([
                prefix, verdict["metric"], gate, reference, number(decode(verdict.get("value"))),
                _signed(delta), "-" if pct is None else f"{_signed(pct)}%", status,
            ])
    return rows


def _signed(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return ("+" if value > 0 else "") + number(value)


HEADERS = ["suite", "metric", "gate", "reference", "value", "delta", "delta %", "status"]
RIGHT = [False, False, False, False, True, True, True, False]


def render(sidecar: dict[str, Any] | None) -> list[str]:
    """Return the ``gates:`` lines of ``instrument show`` for a sidecar (``gates: -`` for none)."""
    if sidecar is None:
        return ["  gates: -"]
    if "error" in sidecar:
        return [f"  gates: {sidecar['error']}"]
    suites = sidecar["suites"]
    lines = ["  gates: " + ", ".join(f"{p} {s.get('status', '?')}" for p, s in sorted(suites.items()))]
    lines += ["    " + line for line in text_table(HEADERS, verdict_rows(suites), RIGHT)]
    return lines


def markdown(suites: dict[str, Any]) -> list[str]:
    """Return the verdicts of *suites* as a GitHub-flavoured Markdown table."""
    return markdown_table(HEADERS, verdict_rows(suites), RIGHT)


@attrs.frozen
class Goal:
    """Which way a metric should move: *direction* (``min`` or ``max``) and the tolerance of its
    regression gate (``max(abs, rel * |reference|)``; 0 when no regression gate declares one)."""

    direction: str
    rel: float = 0.0
    abs: float = 0.0

    def worse(self, before: float, after: float) -> bool:
        """Whether *after* is worse than *before* by more than the tolerance (NaN after a number is)."""
        if math.isnan(after):
            return not math.isnan(before)
        if math.isnan(before):
            return False
        tolerance = max(self.abs, self.rel * abs(before))
        change = after - before if self.direction == "min" else before - after
        return change > tolerance


def goals(run: runfile.RunFile) -> dict[str, Goal]:
    """Return the goal of every metric that *run*'s gates or its project's baseline store direct.

    Keys are summary keys (``<prefix>/<metric>``). A regression gate gives a direction and its
    tolerance; a threshold gate (``<``, ``<=``: min; ``>``, ``>=``: max) or a baseline store
    entry gives a direction alone. The run's own declaration wins over the store; unreadable
    store files are skipped.
    """
    found: dict[str, Goal] = {}
    folder = instrument_dir(run.path) / "baselines" / _gatefiles.component(_gatefiles.project_of(run.project, {}))
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            store = _gatefiles.read_store(path)
        except _gatefiles.GateFileError:
            continue
        for metric, entry in _gatefiles.store_values(store).items():
            if entry.direction in ("min", "max"):
                found[f"{(store or {}).get('prefix', path.stem)}/{metric}"] = Goal(entry.direction)
    sidecar = read_sidecar(run)
    for prefix, entry in (sidecar or {}).get("suites", {}).items():
        try:
            suite = _gates.Suite.from_json(prefix, entry["declaration"])
        except ValueError:
            continue
        for metric in suite.metrics:
            direction = _gates.direction_of(suite, metric)
            if direction is not None:
                found[f"{prefix}/{metric}"] = Goal(direction)
        for regression in suite.regressions:
            found[f"{prefix}/{regression.metric}"] = Goal(regression.direction, regression.rel, regression.abs)
    return found
