"""``instrument show RUN [--json]``: what one run holds, read from its ``.wandb`` file."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from instrument import runfile
from instrument.cli import _runs, _sidecar
from instrument.cli._common import OK, RUN_HELP, WANDB_KEYS, dumps, flatten, number, relative, text_table


def add_parser(commands: Any) -> None:
    """Add the ``show`` command to the top-level parser's *commands*."""
    parser = commands.add_parser(
        "show",
        help="what a run holds: config, summary, series, tables, alerts, gates, state, sync",
        description="Describe one run from its .wandb file: config, summary by prefix, each history series "
        "with its step range and point count, tables, alerts, gate verdicts, whether it finished and whether "
        "its upload is confirmed (an online run without wandb sync's marker is not). Exit status 0, or 2 when RUN "
        "is not a run.",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_HELP)
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    parser.set_defaults(handler=run_show)


def run_show(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Print the description of ``arguments.run``; return the exit status (0)."""
    run = _runs.resolve_run(arguments.run, environ)
    description = describe(run, _runs.open_files())
    print(dumps(description) if arguments.json else render(description), end="" if not arguments.json else "\n")
    return OK


def state(run: runfile.RunFile, live: bool) -> str:
    """Name the run's state: ``finished`` (exit code 0), ``failed`` (another exit code),
    ``running`` (no exit record, still being written) or ``incomplete`` (no exit record: the
    process was killed, or wandb never wrote the record)."""
    if run.exit_code is None:
        return "running" if live else "incomplete"
    return "finished" if run.exit_code == 0 else "failed"


def describe(run: runfile.RunFile, opened: frozenset[str] | None) -> dict[str, Any]:
    """Return everything ``show`` prints about *run*, as plain JSON-ready data.

    Args:
        run: The run, as read from its file.
        opened: The files processes of this machine hold open (:func:`_runs.open_files`), to
            tell a running run from a killed one.

    Returns:
        A dict with the run's metadata, ``state``, ``exit_code``, ``complete`` (an exit record
        is there), ``synced`` (wandb's marker is there), ``upload`` (what the folder tells of the
        upload: :attr:`_runs.RunFolder.upload`), ``config``, ``summary`` (without
        wandb's own keys), ``series`` (key, step key, first and last step, points, last value),
        ``tables``, ``media``, ``alerts``, ``gates`` (the sidecar's verdicts, or None) and
        ``segments`` (every folder of this run id beside it, oldest first: more than one for a
        resumed run).
    """
    folder = _runs.RunFolder(run.path.parent, run.path)
    live = _runs.is_live(run, opened)
    segments = [os.path.realpath(p) for p in runfile.find_run_files(run.path.parent.parent, run.run_id)]
    summary = {k: v for k, v in run.summary.items() if k not in WANDB_KEYS}
    return {
        "run_id": run.run_id,
        "name": run.name,
        "project": run.project,
        "entity": run.entity,
        "group": run.group,
        "job_type": run.job_type,
        "tags": list(run.tags),
        "path": str(run.path),
        "segments": segments,
        "state": state(run, live),
        "exit_code": run.exit_code,
        "complete": run.exit_code is not None,
        "truncated": run.truncated,
        "offline": folder.offline,
        "synced": folder.synced,
        "upload": folder.upload,
        "config": run.config,
        "summary": summary,
        "series": series(run),
        "tables": [item for item in _values(run, summary) if item["type"] == "table-file"],
        "media": [item for item in _values(run, summary) if item["type"] != "table-file"],
        "alerts": run.alerts,
        "gates": _sidecar.read_sidecar(run),
    }


def series(run: runfile.RunFile) -> list[dict[str, Any]]:
    """Describe each history series of *run*: its step key, first and last step, points, last value.

    wandb's own keys, the stages' step keys (``<stage>/step``) and media are left out.
    """
    step_keys = {m["step_metric"] for m in run.metrics if m["step_metric"]}
    keys: dict[str, None] = {}
    for row in run.history:
        for key, value in row.items():
            if key not in WANDB_KEYS and key not in step_keys and not _is_media(value):
                keys.setdefault(key)
    described = []
    for key in sorted(keys):
        step_key = run.step_metric(key) or "_step"
        points = run.series(key, step_key)
        if not points:
            continue
        steps = [step for step, _ in points]
        described.append(
            {"key": key, "step_key": step_key, "first_step": min(steps), "last_step": max(steps),
             "points": len(points), "last": points[-1][1]}
        )
    return described


def _is_media(value: Any) -> bool:
    return isinstance(value, dict) and "_type" in value


def _values(run: runfile.RunFile, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Tables and media (W&B value dicts) in the summary and history: key, type, where, count."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in flatten(summary).items():
        if _is_media(value):
            found[("summary", key)] = _value_item(key, value, "summary")
    for row in run.history:
        for key, value in row.items():
            if _is_media(value):
                item = found.setdefault(("history", key), _value_item(key, value, "history") | {"count": 0})
                item["count"] += 1
                item.update({k: v for k, v in _value_item(key, value, "history").items() if k in ("rows", "columns")})
    return sorted(found.values(), key=lambda item: (item["key"], item["where"]))


def _value_item(key: str, value: dict[str, Any], where: str) -> dict[str, Any]:
    item: dict[str, Any] = {"key": key, "type": value["_type"], "where": where}
    if value["_type"] == "table-file":
        item |= {"rows": value.get("nrows"), "columns": value.get("ncols"), "file": value.get("path")}
    return item


def render(description: dict[str, Any]) -> str:
    """Return the terminal text for a :func:`describe` result, ending with a newline."""
    d = description
    lines = [f"run {d['run_id']}" + (f" ({d['name']})" if d["name"] else "")]
    lines.append(f"  file: {relative(d['path'])}")
    if len(d["segments"]) > 1:
        where = os.path.realpath(d["path"])
        position = d["segments"].index(where) + 1 if where in d["segments"] else "?"
        lines.append(f"  resumed: this file is {position} of {len(d['segments'])} for this run id "
                     "(each is synced on its own)")
    lines.append(
        f"  project: {d['project'] or '-'}  group: {d['group'] or '-'}  job type: {d['job_type'] or '-'}"
        f"  tags: {', '.join(d['tags']) or '-'}"
    )
    lines.append(f"  state: {_state_text(d)}")
    lines.append(f"  synced: {_sync_text(d)}")
    config = flatten(d["config"])
    lines.append("  config:" + ("" if config else " -"))
    lines += [f"    {key} = {number(value)}" for key, value in sorted(config.items())]
    lines += _summary_lines(d["summary"], gated=d["gates"] is not None)
    lines.append("  series:" + ("" if d["series"] else " -"))
    if d["series"]:
        rows = [
            [s["key"], f"{s['first_step']}..{s['last_step']}", s["step_key"], str(s["points"]), number(s["last"])]
            for s in d["series"]
        ]
        lines += ["    " + line for line in text_table(["key", "steps", "step key", "points", "last"], rows,
                                                          [False, True, False, True, True])]
    lines.append("  tables:" + ("" if d["tables"] else " -"))
    lines += [
        f"    {t['key']}: {number(t['rows'])} rows x {number(t['columns'])} columns ({t['where']})" for t in d["tables"]
    ]
    if d["media"]:
        lines.append("  media:")
        lines += [f"    {m['key']}: {m['type']} ({m['where']})" for m in d["media"]]
    lines.append("  alerts:" + ("" if d["alerts"] else " -"))
    for alert in d["alerts"]:
        first, *rest = f"[{alert['level'] or 'INFO'}] {alert['title']}: {alert['text']}".splitlines() or [""]
        lines += [f"    {first}", *(f"      {line}" for line in rest)]
    lines += _sidecar.render(d["gates"])
    return "\n".join(lines) + "\n"


def _state_text(d: dict[str, Any]) -> str:
    if d["state"] == "running":
        return "running (no exit record yet; a process is still writing it)"
    if d["state"] == "incomplete":
        cut = ", file ends mid-record" if d["truncated"] else ""
        return f"INCOMPLETE: no exit record (the process was killed before wandb finished the run{cut})"
    return f"{d['state']}, exit code {d['exit_code']}"


def _sync_text(d: dict[str, Any]) -> str:
    folder = relative(os.path.dirname(os.path.realpath(d["path"])))  # the run's own folder, not latest-run
    if d["upload"] == _runs.SYNCED:
        return "yes (wandb sync wrote its marker)"
    if d["upload"] == _runs.OFFLINE:
        return f"no: instrument sync {folder}"
    if d["upload"] == _runs.NEVER_REACHED:
        return ("NO: an online run that never reached the server (wandb.init got no answer, logs/debug.log); "
                f"upload it: instrument sync --include-online {folder}")
    return ("not confirmed uploaded: an online run; the server took its start, but nothing in its folder records "
            f"what reached the server after that (to upload it from here: instrument sync --include-online {folder})")


def _summary_lines(summary: dict[str, Any], gated: bool) -> list[str]:
    """Summary keys grouped by their first path segment (``eval/nrmse`` under ``eval``); when the run
    has a gates sidecar, the gates' own keys (``gates/...``) are counted here and shown as verdicts."""
    flat = {k: v for k, v in flatten(summary).items() if not _is_media(v)}
    verdict_keys = [k for k in flat if k.startswith("gates/")] if gated else []
    for key in verdict_keys:
        del flat[key]
    if not flat:
        return ["  summary: -"]
    groups: dict[str, list[tuple[str, Any]]] = {}
    for key, value in sorted(flat.items()):
        prefix, _, rest = key.partition("/")
        groups.setdefault(prefix if rest else "", []).append((rest or key, value))
    lines = ["  summary:"]
    for prefix, items in sorted(groups.items()):
        indent = "    "
        if prefix:
            lines.append(f"    {prefix}/")
            indent = "      "
        lines += [indent + line for line in text_table(["", ""], [[k, number(v)] for k, v in items])[1:]]
    if verdict_keys:
        lines.append(f"    gates/  ({len(verdict_keys)} key{'s' * (len(verdict_keys) != 1)}: the verdicts below)")
    return lines

