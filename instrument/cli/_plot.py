"""``instrument plot RUN --out report.html``: a self-contained report of one run, charts as inline SVG.

The charts are Vega-Lite specifications rendered to SVG on this machine by ``vl-convert-python``
(the ``plot`` extra; no browser, no network). The same specifications are written beside the
report as one Vega-Lite JSON file (``report.vl.json``) for any Vega-Lite viewer.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from instrument import runfile
from instrument.cli import _runs, _show, _sidecar
from instrument.cli._common import OK, RUN_HELP, WANDB_KEYS, CommandError, flatten, is_number, number

#: The Vega-Lite version the specifications are written for and rendered with.
VEGA_LITE = "5.21"
SCHEMA = f"https://vega.github.io/schema/vega-lite/v{VEGA_LITE}.json"
#: Points per series drawn at most; longer series are thinned to every k-th point (the last kept).
MAX_POINTS = 2000
_STATUS_COLORS = {"pass": "#2da44e", "fail": "#cf222e", "warn": "#d4a72c", "no_baseline": "#8c959f"}


def add_parser(commands: Any) -> None:
    """Add the ``plot`` command to the top-level parser's *commands*."""
    parser = commands.add_parser(
        "plot",
        help="a self-contained html report of a run: series per stage, eval summary, gates",
        description="Write a self-contained HTML report of one run: each stage's series on the stage's own step "
        "axis, the eval summary, and a bar per gate (its value's distance to the threshold or baseline, "
        "coloured by verdict). Charts are inline SVG rendered offline (no script, no CDN); their Vega-Lite "
        "specification goes beside the report (FILE with .vl.json). Needs the plot extra "
        "(pip install 'instrument[plot]'). Exit status 0; 2 when RUN is not a run, or holds nothing to chart "
        "(no history series, in it or in the runs it lists, and no gates).",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_HELP)
    parser.add_argument("--out", required=True, metavar="FILE", help="the report to write, e.g. report.html")
    parser.set_defaults(handler=run_plot)


def run_plot(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Write the report of ``arguments.run`` and its Vega-Lite file; return the exit status (0)."""
    try:
        import vl_convert
    except ImportError as error:
        raise CommandError("needs vl-convert-python to draw charts: pip install 'instrument[plot]'") from error
    run = _runs.resolve_run(arguments.run, environ)
    out = Path(arguments.out)
    charts = specs(run)
    children = _runs.children(run)
    missing = _runs.missing_children(run, children)
    if missing:
        print(f"instrument plot: run {run.run_id} lists runs not found beside it, left out of the report: "
              f"{', '.join(missing)}", file=sys.stderr)
    if not charts:
        also = " or in the runs it lists" if children else ""
        raise CommandError(f"run {run.run_id} has nothing to chart: no numeric history series in it{also}, and no "
                           f"gates; `instrument show {run.run_id}` lists what it holds")
    if list(charts) == ["gates"]:
        print(f"instrument plot: run {run.run_id} has no numeric history series; the report shows its gates and "
              "summary", file=sys.stderr)
    svgs = {title: vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE, allowed_base_urls=[])
            for title, spec in charts.items()}
    spec_path = out.with_suffix(".vl.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(run, svgs, spec_path.name), encoding="utf-8")
    combined = {"$schema": SCHEMA, "title": f"run {run.run_id}", "vconcat": [_inner(s) for s in charts.values()]}
    spec_path.write_text(json.dumps(combined, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(f"instrument plot: wrote {out} and {spec_path}", file=sys.stderr)
    return OK


def stages(run: runfile.RunFile) -> dict[str, list[str]]:
    """Group *run*'s numeric history series by step key, stages in the order they were first logged.

    Returns:
        ``{"operator/step": ["operator/grad_norm", "operator/loss"], "_step": [...]}``.
    """
    first: dict[str, int] = {}
    for index, row in enumerate(run.history):
        for key in row:
            first.setdefault(key, index)
    grouped: dict[str, list[str]] = {}
    for item in sorted(_show.series(run), key=lambda item: (first[item["step_key"]], item["key"])):
        if any(is_number(v) for _, v in run.series(item["key"], item["step_key"])):
            grouped.setdefault(item["step_key"], []).append(item["key"])
    return grouped


def specs(run: runfile.RunFile) -> dict[str, dict[str, Any]]:
    """Return the report's Vega-Lite specifications by section title.

    One per stage of *run*, then one per stage of each run a pipeline run lists in its summary
    (``pipeline/children``: its training subprocesses' runs, found beside it), then ``gates``.
    """
    charts: dict[str, dict[str, Any]] = {}
    for source in (run, *_runs.children(run)):
        label = "" if source is run else f"run {source.run_id} · "
        for step_key, keys in stages(source).items():
            spec = _stage_spec(source, step_key, keys, label)
            charts[spec["title"].split(" (")[0]] = spec
    sidecar = _sidecar.read_sidecar(run)
    verdicts = [
        (prefix, v) for prefix, suite in sorted((sidecar or {}).get("suites", {}).items())
        for v in suite.get("verdicts", [])
    ]
    if verdicts:
        charts["gates"] = _gates_spec(verdicts)
    return charts


def _stage_spec(run: runfile.RunFile, step_key: str, keys: list[str], label: str) -> dict[str, Any]:
    """One line chart per series of a stage, side by side, each on the stage's step axis."""
    charts = []
    for key in keys:
        points = [(s, float(v)) for s, v in run.series(key, step_key) if is_number(v) and math.isfinite(v)]
        stride = max(1, math.ceil(len(points) / MAX_POINTS))
        shown = points[::stride] + ([points[-1]] if points and (len(points) - 1) % stride else [])
        charts.append({
            "title": key.split("/", 1)[-1] if "/" in key else key,
            "width": 260, "height": 160,
            "data": {"values": [{"step": s, "value": v} for s, v in shown]},
            "mark": {"type": "line", "interpolate": "linear"},
            "encoding": {
                "x": {"field": "step", "type": "quantitative", "title": step_key},
                "y": {"field": "value", "type": "quantitative", "title": key, "scale": {"zero": False}},
            },
        })
    stage = step_key.removesuffix("/step") if step_key != "_step" else "history"
    return {"$schema": SCHEMA, "title": f"{label}stage {stage} (x: {step_key})", "hconcat": charts}


def _gates_spec(verdicts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A bar per gate: its change in percent from the threshold or baseline, coloured by status."""
    values = []
    for prefix, verdict in verdicts:
        pct = _sidecar.decode(verdict.get("delta_pct"))
        values.append({
            "gate": f"{prefix}/{verdict['metric']} " + (
                f"{verdict['op']} {number(_sidecar.decode(verdict['threshold']))}" if verdict["kind"] == "threshold"
                else f"{verdict['direction']} vs baseline"),
            "delta_pct": pct if pct is not None and math.isfinite(pct) else 0.0,
            "status": verdict["status"],
            "label": f"{number(_sidecar.decode(verdict.get('value')))} ({verdict['status']})",
        })
    statuses = sorted({v["status"] for v in values})
    return {
        "$schema": SCHEMA,
        "width": 420,
        "data": {"values": values},
        "encoding": {"y": {"field": "gate", "type": "nominal", "title": None, "sort": None}},
        "layer": [
            {"mark": "bar", "encoding": {
                "x": {"field": "delta_pct", "type": "quantitative", "title": "change from threshold or baseline (%)"},
                "color": {"field": "status", "type": "nominal", "title": "verdict",
                          "scale": {"domain": statuses, "range": [_STATUS_COLORS.get(s, "#8c959f") for s in statuses]}},
            }},
            {"mark": {"type": "rule", "color": "#57606a"}, "encoding": {"x": {"datum": 0}}},
            {"mark": {"type": "text", "align": "left", "dx": 4}, "encoding": {
                "x": {"datum": 0}, "text": {"field": "label"}}},
        ],
    }


def _inner(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "$schema"}


def eval_summary(run: runfile.RunFile) -> dict[str, Any]:
    """Return the run's summary values that are not a series' last point: evals, final numbers.

    wandb's own keys, the gates' summary keys (shown as gates), step keys and media are left out.
    """
    history_keys = {key for row in run.history for key in row}
    return {
        key: value for key, value in flatten(run.summary).items()
        if key not in history_keys and key.split("/")[0] not in WANDB_KEYS and not key.startswith("gates/")
        and not (isinstance(value, dict) and "_type" in value)
    }


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1f2328; max-width: 70rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #d0d7de; text-align: left; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #57606a; } .chart { overflow-x: auto; }
.pass { color: #1a7f37; } .fail { color: #cf222e; } .warn { color: #9a6700; }
"""


def report(run: runfile.RunFile, svgs: dict[str, str], spec_name: str) -> str:
    """Return the report page: metadata, a section per chart (inline SVG), the eval summary and gates."""
    e = html.escape
    title = f"run {run.run_id}" + (f" ({run.name})" if run.name else "")
    state = _show.state(run, _runs.is_live(run, _runs.open_files()))
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<h1>{e(title)}</h1>\n",
        f"<p class=\"meta\">project {e(run.project or '-')} · group {e(run.group or '-')} · job type "
        f"{e(run.job_type or '-')} · {e(state)}"
        + (f", exit code {run.exit_code}" if run.exit_code is not None else "")
        + f" · charts as Vega-Lite: {e(spec_name)}</p>\n",
    ]
    for section, svg in svgs.items():
        if section != "gates":
            parts.append(f'<h2>{e(section)}</h2>\n<div class="chart">{svg}</div>\n')
    summary = eval_summary(run)
    parts.append("<h2>eval summary</h2>\n")
    if summary:
        rows = "".join(f'<tr><td>{e(k)}</td><td class="num">{e(number(v))}</td></tr>\n'
                       for k, v in sorted(summary.items()))
        parts.append(f"<table>\n<thead><tr><th>key</th><th>value</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n")
    else:
        parts.append('<p class="meta">no summary values</p>\n')
    parts.append("<h2>gates</h2>\n")
    sidecar = _sidecar.read_sidecar(run)
    if sidecar and sidecar.get("suites"):
        parts.append(f"<div class=\"chart\">{svgs['gates']}</div>\n")
        head = "".join(f"<th>{e(h)}</th>" for h in _sidecar.HEADERS)
        body = "".join(
            "<tr>" + "".join(f"<td class=\"{e(c.split(' ')[0])}\">{e(c)}</td>" if i == len(row) - 1
                             else f"<td>{e(c)}</td>" for i, c in enumerate(row)) + "</tr>\n"
            for row in _sidecar.verdict_rows(sidecar["suites"])
        )
        parts.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n")
    else:
        parts.append(f"<p class=\"meta\">{e(sidecar['error']) if sidecar else 'no gates'}</p>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)
