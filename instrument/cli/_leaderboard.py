"""``instrument leaderboard``: rank the runs in wandb folders by one summary metric."""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from instrument import runfile
from instrument.cli import _runs, _sidecar
from instrument.cli._common import (
    OK,
    WANDB_KEYS,
    CommandError,
    as_number,
    at_least,
    dumps,
    flatten,
    is_number,
    markdown_table,
    number,
    relative,
    unknown_key,
)

ARROWS = {"min": "↓", "max": "↑"}
_METADATA = ("run_id", "name", "project", "group", "job_type", "state")


def add_parser(commands: Any) -> None:
    """Add the ``leaderboard`` command to the top-level parser's *commands*."""
    parser = commands.add_parser(
        "leaderboard",
        help="rank runs by a summary metric (md, csv, json or html)",
        description="Rank the runs in the given folders (default ./wandb, or $WANDB_DIR/wandb) by one summary "
        "metric: one row per run with its id, name, the --by columns, the metric and its standard error "
        "(<metric>_stderr) when the run has one. Runs without the metric, and unfinished runs unless "
        "--include-incomplete, are left out (counted on stderr). Exit status 0; 2 for bad arguments.",
    )
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="wandb folders, their parent folders, or run folders")
    parser.add_argument("--metric", required=True, help="the summary key to rank by, e.g. eval/nrmse")
    parser.add_argument(
        "--direction", choices=("min", "max"),
        help="min: lower is better, max: higher is better (default: from the runs' gates or baselines)",
    )
    parser.add_argument("--by", action="append", default=[], metavar="config.KEY",
                        help="add a column with this config value (repeatable; nested keys with dots)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="keep runs where KEY (config.X, summary.X, project, group, job_type, name, run_id, "
                        "state, tag) equals VALUE (repeatable; all must hold)")
    parser.add_argument("--top", type=at_least(1), metavar="N", help="keep the first N rows")
    parser.add_argument("--include-incomplete", action="store_true",
                        help="also rank runs with no exit record (killed or still running)")
    parser.add_argument("--format", choices=("md", "csv", "json", "html"), default="md",
                        help="output format (default md)")
    parser.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    parser.set_defaults(handler=run_leaderboard)



def run_leaderboard(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Rank the runs, write the table in the chosen format; return the exit status (0)."""
    for column in arguments.by:
        if not column.startswith("config."):
            raise CommandError(f"--by {column}: must name a config key, as config.KEY")
    filters = [_parse_where(text) for text in arguments.where]
    runs, unreadable = _runs.read_folders(_runs.find_folders(arguments.dirs, environ))
    if not runs:
        where = ", ".join(arguments.dirs) or relative(_runs.default_wandb_dir(environ))
        files = f"{len(unreadable)} file{'s' * (len(unreadable) != 1)}"
        raise CommandError(f"no runs to rank in {where}" + (f" ({files} not readable)" if unreadable else ""))
    board = rank(runs, arguments.metric, direction=arguments.direction, by=arguments.by, where=filters,
                 include_incomplete=arguments.include_incomplete, top=arguments.top)
    left_out = board["left_out"] | ({"unreadable": len(unreadable)} if unreadable else {})
    for reason, count in left_out.items():
        print(f"instrument leaderboard: left out {count} run{'s' * (count != 1)}: {_REASONS[reason]}", file=sys.stderr)
    text = {"md": to_markdown, "csv": to_csv, "json": to_json, "html": to_html}[arguments.format](board)
    if arguments.out:
        Path(arguments.out).write_text(text, encoding="utf-8", newline="")
        print(f"instrument leaderboard: wrote {arguments.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return OK


_REASONS = {
    "no_metric": "no numeric value for the metric",
    "incomplete": "no exit record (pass --include-incomplete to rank them)",
    "where": "did not match --where",
    "unreadable": "file not readable",
}


def rank(
    runs: Sequence[runfile.RunFile],
    metric: str,
    *,
    direction: str | None = None,
    by: Sequence[str] = (),
    where: Sequence[tuple[str, str]] = (),
    include_incomplete: bool = False,
    top: int | None = None,
) -> dict[str, Any]:
    """Rank *runs* by the summary value *metric*.

    Args:
        runs: Runs as read; several files of one run id (a resumed run) count once, by the last.
        metric: A summary key (flattened with ``/``).
        direction: ``min`` or ``max``; None takes it from the runs' gates or baseline store.
        by: ``config.KEY`` columns to add.
        where: ``(key, text)`` filters that must all hold (see :func:`matches`).
        include_incomplete: Also rank runs with no exit record.
        top: Keep the first *top* rows.

    Returns:
        ``{"metric", "direction", "by", "rows", "left_out"}``: rows ranked best first (NaN
        last, ties by run id), each with ``rank``, the run's metadata, ``by`` values,
        ``value`` and ``stderr`` (None without ``<metric>_stderr``); ``left_out`` counts the
        runs left out by reason.

    Raises:
        CommandError: No run holds *metric*, or a number under it; no run holds a ``config.X`` or
            ``summary.X`` key of *by* or *where* (each names the closest keys there are); no
            *direction* given and no gate or baseline gives one.
    """
    latest: dict[str, runfile.RunFile] = {}
    for run in runs:
        latest[run.run_id] = run
    check_keys(list(latest.values()), metric, by=by, where=where)
    left_out: dict[str, int] = {}
    kept: list[tuple[runfile.RunFile, float, float | None]] = []
    for run in latest.values():
        flat = flatten(run.summary)
        value = as_number(flat.get(metric))
        reason = _left_out(run, value, where, include_incomplete)
        if value is None or reason:
            left_out[reason] = left_out.get(reason, 0) + 1
            continue
        kept.append((run, value, as_number(flat.get(f"{metric}_stderr"))))
    if direction is None:  # with no run kept, the runs left out may still give it (a --where matching none)
        direction = _direction(metric, [run for run, _, _ in kept] or list(latest.values()))
    sign = 1 if direction == "min" else -1
    kept.sort(key=lambda item: (math.isnan(item[1]), sign * item[1] if not math.isnan(item[1]) else 0, item[0].run_id))
    rows = []
    for position, (run, value, stderr) in enumerate(kept[:top] if top else kept, 1):
        rows.append({
            "rank": position, "run_id": run.run_id, "name": run.name, "project": run.project, "group": run.group,
            "job_type": run.job_type, "state": _state(run),
            "by": {column: lookup(run.config, column.removeprefix("config.")) for column in by},
            "value": value, "stderr": stderr,
        })
    return {"metric": metric, "direction": direction, "by": list(by), "rows": rows, "left_out": left_out}


def check_keys(runs: Sequence[runfile.RunFile], metric: str, *, by: Sequence[str] = (),
               where: Sequence[tuple[str, str]] = ()) -> None:
    """Check that some run holds each key the command names, so that a misspelt key is an error
    instead of an empty board.

    Args:
        runs: The runs read.
        metric: The ``--metric`` summary key (flattened with ``/``).
        by: ``config.KEY`` columns.
        where: ``(key, text)`` filters; their ``config.X`` and ``summary.X`` keys are checked.

    Raises:
        CommandError: No run holds one of the keys (the message names the closest keys that
            exist), or no run holds a number under *metric*.
    """
    counted = f"{len(runs)} run{'s' * (len(runs) != 1)} read"
    summaries = [flatten(run.summary) for run in runs]
    found = [flat[metric] for flat in summaries if metric in flat]
    if not found:
        numeric = {key for flat in summaries for key, value in flat.items()
                   if is_number(value) and key.split("/")[0] not in WANDB_KEYS}
        raise unknown_key("--metric", metric, numeric, f"summary key in the {counted}")
    if not any(is_number(value) for value in found):
        kinds = sorted({value.get("_type", "dict") if isinstance(value, dict) else type(value).__name__
                        for value in found})
        raise CommandError(f"--metric {metric}: no run holds a number under this summary key "
                           f"(it holds {', '.join(kinds)})")
    named = [("--by", column) for column in by] + [("--where", key) for key, _ in where]
    for option, key in named:
        section, _, name = key.partition(".")
        if section not in ("config", "summary"):
            continue  # a run's metadata: every run has it
        trees = [run.config if section == "config" else run.summary for run in runs]
        if not any(find(tree, name) is not _MISSING for tree in trees):
            known = {f"{section}.{path}" for tree in trees for path in key_paths(tree)
                     if path.split(".")[0] not in WANDB_KEYS}
            raise unknown_key(option, key, known, f"{section} key in the {counted}")


def _left_out(run: runfile.RunFile, value: float | None, where: Sequence[tuple[str, str]],
              include_incomplete: bool) -> str:
    """Return why *run* is left out of the ranking (a key of ``_REASONS``), or ``""``."""
    if value is None:
        return "no_metric"
    if run.exit_code is None and not include_incomplete:
        return "incomplete"
    if not all(matches(run, key, text) for key, text in where):
        return "where"
    return ""


def _direction(metric: str, runs: Sequence[runfile.RunFile]) -> str:
    for run in runs:
        goal = _sidecar.goals(run).get(metric)
        if goal is not None:
            return goal.direction
    raise CommandError(f"--direction min|max is needed: no gate or baseline of these runs gives one for {metric}")


def _state(run: runfile.RunFile) -> str:
    if run.exit_code is None:
        return "incomplete"
    return "finished" if run.exit_code == 0 else "failed"


_MISSING = object()


def lookup(tree: Mapping[str, Any], key: str) -> Any:
    """Return the value at *key* in a config or summary: the literal key, the ``/``-flattened key,
    or nested dicts along the dots (``optimizer.name``); None when there is none."""
    value = find(tree, key)
    return None if value is _MISSING else value


def find(tree: Mapping[str, Any], key: str) -> Any:
    """Return the value at *key* as :func:`lookup` finds it, or the module's ``_MISSING`` marker
    when there is none (a key holding None is there)."""
    if key in tree:
        return tree[key]
    flat = flatten(dict(tree))
    if key in flat:
        return flat[key]
    node: Any = tree
    for part in key.split("."):
        node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
        if node is _MISSING:
            break
    return node


def key_paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Return every key of a config or summary as :func:`lookup` takes it: nested dicts joined
    with dots (``optimizer.name``), W&B value dicts (``_type``) and other values as leaves."""
    paths = []
    for key, value in tree.items():
        if isinstance(value, Mapping) and value and "_type" not in value:
            paths += key_paths(value, f"{prefix}{key}.")
        else:
            paths.append(f"{prefix}{key}")
    return paths


def _parse_where(text: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise CommandError(f"--where {text}: expected KEY=VALUE")
    if not (key.startswith(("config.", "summary.")) or key in (*_METADATA, "tag")):
        raise CommandError(
            f"--where {text}: KEY must be config.X, summary.X, {', '.join(_METADATA)} or tag, not {key!r}"
        )
    return key, raw


def matches(run: runfile.RunFile, key: str, text: str) -> bool:
    """Whether *run*'s *key* (``config.X``, ``summary.X``, a metadata name, or ``tag``) equals *text*.

    The value matches when it equals *text* read as JSON (``1e-3`` matches 0.001, ``true``
    matches True, never 1) or when its own text is *text* (``adam``, or a seed stored as ``"0"``).
    """
    if key == "tag":
        return text in run.tags
    if key.startswith("config."):
        actual = lookup(run.config, key.removeprefix("config."))
    elif key.startswith("summary."):
        actual = lookup(run.summary, key.removeprefix("summary."))
    else:
        actual = _state(run) if key == "state" else getattr(run, key)
    try:
        expected = json.loads(text)
    except ValueError:
        expected = text
    if actual == expected and isinstance(actual, bool) == isinstance(expected, bool):
        return True
    return actual is not None and str(actual) == text


# -- formats ----------------------------------------------------------------------------------


def _headers(board: dict[str, Any]) -> list[str]:
    arrow = ARROWS[board["direction"]]
    return ["rank", "run", "name", *board["by"], f"{board['metric']} {arrow}"]


def _cells(board: dict[str, Any]) -> list[list[str]]:
    cells = []
    for row in board["rows"]:
        value = number(row["value"]) + ("" if row["stderr"] is None else f" ± {number(row['stderr'])}")
        name = (row["name"] or "-") + (" (incomplete)" if row["state"] == "incomplete" else "")
        cells.append([str(row["rank"]), row["run_id"], name, *(number(row["by"][c]) for c in board["by"]), value])
    return cells


def to_markdown(board: dict[str, Any]) -> str:
    """Return the leaderboard as a GitHub-flavoured Markdown table (the arrow says which way is better)."""
    right = [True, False, False, *([False] * len(board["by"])), True]
    return "\n".join(markdown_table(_headers(board), _cells(board), right)) + "\n"


def to_csv(board: dict[str, Any]) -> str:
    """Return the leaderboard as CSV: the same bytes for the same runs, run after run.

    Columns: rank, run_id, name, project, group, job_type, state, the ``--by`` columns, the
    metric, ``<metric>_stderr``; numbers as Python writes them (``repr``: exact and stable).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    metric = board["metric"]
    writer.writerow(["rank", *_METADATA, *board["by"], metric, f"{metric}_stderr"])
    for row in board["rows"]:
        writer.writerow([row["rank"], *(row[k] for k in _METADATA), *(_csv(row["by"][c]) for c in board["by"]),
                         _csv(row["value"]), _csv(row["stderr"])])
    return buffer.getvalue()


def _csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float | int) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value, sort_keys=True)


def to_json(board: dict[str, Any]) -> str:
    """Return the leaderboard as JSON: ``metric``, ``direction``, ``by``, ``rows``, ``left_out``."""
    return dumps(board) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1f2328; }
h1 { font-size: 1.3rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.35rem 0.8rem; border-bottom: 1px solid #d0d7de; text-align: left; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:first-child td { font-weight: 600; }
p.note { color: #57606a; font-size: 0.85rem; }
"""


def to_html(board: dict[str, Any]) -> str:
    """Return the leaderboard as one self-contained HTML page: inline CSS, no script, no remote file."""
    headers = _headers(board)
    numeric = {0, len(headers) - 1}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{html.escape(c)}</td>' if i in numeric else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(cells)
        ) + "</tr>\n"
        for cells in _cells(board)
    )
    better = "lower" if board["direction"] == "min" else "higher"
    title = f"Leaderboard: {board['metric']}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class=\"note\">{len(board['rows'])} runs, {better} is better.</p>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n</body>\n</html>\n"
    )
