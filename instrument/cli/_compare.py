"""``instrument compare A B [--md] [--fail-on-regression]``: two runs' shared summary metrics side by side."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from typing import Any

from instrument import runfile
from instrument.cli import _runs, _sidecar
from instrument.cli._common import (
    FAILED,
    OK,
    WANDB_KEYS,
    CommandError,
    flatten,
    is_number,
    markdown_table,
    number,
    text_table,
)

#: Arrows for a metric's direction in table headers and cells: lower is better, higher is better.
ARROWS = {"min": "↓", "max": "↑"}


def add_parser(commands: Any) -> None:
    """Add the ``compare`` command to the top-level parser's *commands*."""
    parser = commands.add_parser(
        "compare",
        help="two runs' shared summary metrics: A, B, change, change %%",
        description="Compare every summary metric that runs A and B both hold: A, B, B - A and the change in "
        "percent of |A|, with the direction (lower or higher is better) where the runs' gates or the project's "
        "baseline store give one. Exit status 0; 1 with --fail-on-regression when a gated metric got worse "
        "(beyond its regression gate's tolerance); 2 when A or B is not a run, or when the two share no numeric "
        "summary metric (nothing to compare: each run's metrics are named).",
    )
    parser.add_argument("a", metavar="A", help="the reference run: a run folder, .wandb file or run id")
    parser.add_argument("b", metavar="B", help="the run to compare with it")
    parser.add_argument("--md", action="store_true", help="print a GitHub-flavoured Markdown table")
    parser.add_argument(
        "--fail-on-regression", action="store_true", help="exit 1 if a metric with a direction got worse from A to B"
    )
    parser.set_defaults(handler=run_compare)


def run_compare(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Print the comparison of ``arguments.a`` and ``arguments.b``; return the exit status."""
    a, b = _runs.resolve_run(arguments.a, environ), _runs.resolve_run(arguments.b, environ)
    rows = compare(a, b)
    if not rows:
        raise CommandError(f"A = {_label(a)} and B = {_label(b)} share no numeric summary metric; "
                           f"A has {_listed(metrics(a))}; B has {_listed(metrics(b))}")
    headers = ["metric", f"A {a.run_id}", f"B {b.run_id}", "change", "change %", "better", "verdict"]
    right = [False, True, True, True, True, False, False]
    cells = [
        [r["metric"], number(r["a"]), number(r["b"]), _signed(r["delta"]),
         "-" if r["delta_pct"] is None else _signed(r["delta_pct"]) + "%",
         {"min": "lower ↓", "max": "higher ↑"}.get(r["direction"] or "", "-"), r["verdict"] or "-"]
        for r in rows
    ]
    title = f"A = {_label(a)}, B = {_label(b)}: {len(rows)} shared summary metric{'s' * (len(rows) != 1)}"
    if arguments.md:
        lines = [f"**{title}**", "", *markdown_table(headers, cells, right)]
    else:
        lines = [title, *text_table(headers, cells, right)]
    only_a, only_b = _only(a, b), _only(b, a)
    if only_a:
        lines.append(f"only in A: {', '.join(only_a)}")
    if only_b:
        lines.append(f"only in B: {', '.join(only_b)}")
    worse = [r["metric"] for r in rows if r["verdict"] == "worse"]
    if worse:
        lines.append(f"worse in B: {', '.join(worse)}")
    print("\n".join(lines))
    return FAILED if arguments.fail_on_regression and worse else OK


def metrics(run: runfile.RunFile) -> dict[str, float]:
    """Return *run*'s numeric summary metrics, flattened, without wandb's keys, the stages' step
    keys (``operator/step``) and the gates' verdict keys (``gates/...``)."""
    steps = {m["step_metric"] for m in run.metrics}
    return {
        key: float(value)
        for key, value in flatten(run.summary).items()
        if is_number(value) and key not in steps and key.split("/")[0] not in (*WANDB_KEYS, "gates")
    }


def compare(a: runfile.RunFile, b: runfile.RunFile) -> list[dict[str, Any]]:
    """Compare the numeric summary metrics that *a* and *b* share.

    Returns:
        One dict per metric, sorted by name: ``metric``, ``a``, ``b``, ``delta`` (b - a),
        ``delta_pct`` (100 * delta / |a|, None when a is 0 or either is not finite),
        ``direction`` (``min``, ``max`` or None: from B's gates, else A's, else the baseline
        store) and ``verdict``: None without a direction, else ``worse`` (beyond the
        regression gate's tolerance, or NaN after a number), ``within tolerance`` (worse by no
        more than it), ``same`` or ``better``.
    """
    left, right = metrics(a), metrics(b)
    goals = _sidecar.goals(a) | _sidecar.goals(b)
    rows = []
    for key in sorted(left.keys() & right.keys()):
        before, after = left[key], right[key]
        delta = after - before
        finite = math.isfinite(before) and math.isfinite(after)
        goal = goals.get(key)
        verdict = None if goal is None else _verdict(goal, before, after)
        rows.append({
            "metric": key, "a": before, "b": after, "delta": delta,
            "delta_pct": 100 * delta / abs(before) if finite and before != 0 else None,
            "direction": goal.direction if goal else None, "verdict": verdict,
        })
    return rows


def _verdict(goal: _sidecar.Goal, before: float, after: float) -> str:
    """``worse`` beyond the tolerance, ``better`` in the goal's direction, ``within tolerance`` or ``same``."""
    if goal.worse(before, after):
        return "worse"
    if goal.worse(after, before) or (after < before if goal.direction == "min" else after > before):
        return "better"
    return "same" if after == before else "within tolerance"


def _only(run: runfile.RunFile, other: runfile.RunFile) -> list[str]:
    return sorted(metrics(run).keys() - metrics(other).keys())


def _listed(keys: Mapping[str, float]) -> str:
    names = sorted(keys)
    if not names:
        return "none"
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _label(run: runfile.RunFile) -> str:
    return run.run_id + (f" ({run.name})" if run.name else "")


def _signed(value: float) -> str:
    return "nan" if math.isnan(value) else ("+" if value > 0 else "") + number(value)
