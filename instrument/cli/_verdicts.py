"""Gate verdicts for the commands: a run's sidecar, the metrics' directions, verdict tables.

The sidecar is ``<root>/.instrument/runs/<run id>/gates.json`` beside wandb's folder (format
``instrument.gates/1``, written by the gates of an ``eval_summary``); numbers in it are JSON
numbers or the strings ``"nan"``, ``"inf"``, ``"-inf"``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from instrument import runfile
from instrument.cli._common import markdown_table, number, text_table
from instrument.cli._runs import instrument_dir

#: The direction a threshold gate's operator implies for its metric.
_OP_DIRECTION = {"<": "min", "<=": "min", ">": "max", ">=": "max"}


def sidecar_path(run: runfile.RunFile) -> Path:
    """Return where *run*'s gates sidecar is: ``<root>/.instrument/runs/<run id>/gates.json``."""
    return instrument_dir(run.path) / "runs" / quote(run.run_id, safe="") / "gates.json"


def read_sidecar(run: runfile.RunFile) -> dict[str, Any] | None:
    """Return *run*'s gates sidecar, or None when it has none.

    Raises:
        CommandError: The sidecar exists but is not a gates sidecar (exit status 2).
    """
    path = sidecar_path(run)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return {"error": f"{path}: unreadable: {error}", "suites": {}}
    if not isinstance(data, dict) or not isinstance(data.get("suites"), dict):
        return {"error": f"{path}: not a gates sidecar", "suites": {}}
    return data


def decode(value: Any) -> float | None:
    """Return a sidecar number as a float: ``"nan"``, ``"inf"``, ``"-inf"`` decoded, None kept."""
    if isinstance(value, str):
        return float(value)  # "nan", "inf", "-inf"
    return None if value is None else float(value)


def directions(sidecar: dict[str, Any] | None) -> dict[str, str]:
    """Return ``{"<prefix>/<metric>": "min" | "max"}`` for every gated metric of a sidecar.

    A regression's direction wins; else a threshold gate's operator gives it (``<`` and ``<=``
    mean lower is better, ``>`` and ``>=`` higher); ``==`` and ``!=`` give none.
    """
    found: dict[str, str] = {}
    for prefix, suite in (sidecar or {}).get("suites", {}).items():
        declaration = suite.get("declaration", {})
        for gate in declaration.get("gates", []):
            if gate.get("op") in _OP_DIRECTION:
                found.setdefault(f"{prefix}/{gate['metric']}", _OP_DIRECTION[gate["op"]])
        for regression in declaration.get("regression", []):
            found[f"{prefix}/{regression['metric']}"] = regression["direction"]
    return found


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


def store_dir(run: runfile.RunFile) -> Path:
    """Return the baseline store folder of *run*'s project: ``<root>/.instrument/baselines/<project>``."""
    return instrument_dir(run.path) / "baselines" / quote(run.project or "uncategorized", safe="")


def goals(run: runfile.RunFile) -> dict[str, Goal]:
    """Return the goal of every metric that *run*'s gates or its project's baseline store direct.

    Keys are summary keys (``<prefix>/<metric>``). A regression gate gives a direction and a
    tolerance; a threshold gate (``<``, ``<=``: min; ``>``, ``>=``: max) or a baseline store
    entry gives a direction alone. The run's own declaration wins over the store.
    """
    found: dict[str, Goal] = {}
    folder = store_dir(run)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            store = json.loads(path.read_text(encoding="utf-8"))
            entries = store["metrics"].items()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        prefix = store.get("prefix") or path.stem
        for metric, entry in entries:
            if isinstance(entry, dict) and entry.get("direction") in ("min", "max"):
                found[f"{prefix}/{metric}"] = Goal(entry["direction"])
    sidecar = read_sidecar(run)
    for key, direction in directions(sidecar).items():
        found[key] = Goal(direction)
    for prefix, suite in (sidecar or {}).get("suites", {}).items():
        for regression in suite.get("declaration", {}).get("regression", []):
            found[f"{prefix}/{regression['metric']}"] = Goal(
                regression["direction"], float(regression.get("rel") or 0.0), float(regression.get("abs") or 0.0)
            )
    return found
