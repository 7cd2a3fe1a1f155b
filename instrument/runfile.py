"""Read the ``.wandb`` transaction log of an offline run back into plain Python data.

wandb 0.31 ships no Python reader for ``<root>/wandb/offline-run-*/run-<id>.wandb``, so this
module decodes the file itself: :mod:`instrument._transaction_log` splits it into records (each
a serialized ``wandb.proto.wandb_internal_pb2.Record``), checking every chunk's checksum.

A file that ends mid-chunk or mid-record (its writer was killed) is read up to its last
complete record and reported with ``truncated=True``. wandb itself is imported lazily, only
when a file is parsed.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from instrument._transaction_log import RunFileError, split_records
from instrument._verdicts import summary_report

__all__ = [
    "RunFile", "RunFileError", "find_run_files", "format_report", "last_steps", "read_run_file", "read_runs",
]

_split_records = split_records  # its name before the framing moved to instrument._transaction_log

_STAMP = re.compile(r"run-(\d{8}_\d{6})-[^/\\]*$")
_INTERNAL_SERIES = frozenset({"_step", "_runtime", "_timestamp"})


@attrs.frozen
class RunFile:
    """Everything one ``.wandb`` file holds, as plain Python data.

    Metadata comes from the last run record (wandb rewrites the whole run record when the name
    or tags change). ``config``, ``history`` rows and ``summary`` are rebuilt from wandb's
    ``nested_key`` paths, so logged dicts and media (``{"_type": "image-file", ...}``) come back
    as nested dicts; ``metrics`` name the keys they declare (wandb's escaped ``\\.`` read as a dot).
    wandb 0.31 writes config values unwrapped (no ``{"value": ...}``), so
    config holds the values exactly as given; the internal ``_wandb`` key is dropped, but the
    custom charts wandb keeps there (``_wandb.visualize``: the panel of each ``wandb.plot``
    chart logged, by key) are ``charts``. ``artifacts`` are ``{"name", "type", "aliases",
    "manifest_entries", "metadata", "description"}``. ``start_time`` (the run record's start,
    seconds since the epoch) orders runs whose dirs carry the same timestamp second. ``host`` is
    the name of the machine that wrote the run (empty if wandb recorded none).
    """

    path: pathlib.Path
    run_id: str
    project: str
    entity: str
    group: str
    job_type: str
    tags: tuple[str, ...]
    name: str
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    files: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    exit_code: int | None
    truncated: bool
    start_time: float | None = None
    host: str = ""
    charts: dict[str, Any] = attrs.field(factory=dict)

    def series(self, key: str, step_key: str | None = None) -> list[tuple[int | float, Any]]:
        """Return ``(step, value)`` for each history row that has *key* (and the step key).

        Args:
            key: A top-level history key, as logged.
            step_key: History key to use as the step; by default the ``step_metric`` that
                ``define_metric`` declared for *key* (an exact name wins over globs, the last
                definition over earlier ones), else ``"_step"``.

        Returns:
            The points in file order; rows without the step key are skipped.
        """
        step = step_key or self.step_metric(key) or "_step"
        return [(row[step], row[key]) for row in self.history if key in row and step in row]

    def step_metric(self, key: str) -> str:
        """Return the step key that ``define_metric`` declared for history key *key*, or ``""``.

        An exact name wins over globs, the last definition over earlier ones.
        """
        exact = [m for m in self.metrics if m["name"] == key]
        globs = [m for m in self.metrics if m["glob_name"] and _glob_match(m["glob_name"], key)]
        chosen = (exact or globs or [{"step_metric": ""}])[-1]
        return str(chosen["step_metric"])


def read_run_file(path: str | os.PathLike[str]) -> RunFile:
    """Read one ``.wandb`` transaction log.

    Args:
        path: The ``run-<id>.wandb`` file.

    Returns:
        Its contents; ``truncated`` is True if the file ends inside a record.

    Raises:
        RunFileError: The file cannot be read, is not a wandb file (bad header), or is corrupt
            (checksum mismatch, impossible chunk sequence, undecodable record).
    """
    path = pathlib.Path(path)
    records, truncated = _records(path)
    return _fold(path, list(records), truncated)


def _records(path: pathlib.Path) -> tuple[Iterator[Any], bool]:
    """Return the file's records, decoded one at a time as they are taken, and whether the file
    ends inside a record; raises :class:`RunFileError` as :func:`read_run_file` says."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunFileError(f"{path}: cannot read: {exc}") from exc
    payloads, truncated = split_records(data, path)
    record_class = _proto().Record

    def decoded() -> Iterator[Any]:
        for number, payload in enumerate(payloads, 1):
            try:
                yield record_class.FromString(payload)
            except Exception as exc:  # protobuf's DecodeError, without importing it eagerly
                raise RunFileError(f"{path}: record {number} is not a wandb Record: {exc}") from exc

    return decoded(), truncated


def last_steps(path: str | os.PathLike[str]) -> dict[str, int]:
    """Return the last step of each step axis one ``.wandb`` file recorded.

    An axis is a key that ``define_metric`` named as a ``step_metric`` (instrument's
    ``<stage>/step``); its last step is the largest whole number it took in the history. The
    result maps the axis without its ``/step`` suffix (the stage) to that step; an axis with no
    ``/step`` suffix keeps its name. Reads the file record by record, without keeping the history.

    Raises:
        RunFileError: as :func:`read_run_file`.
    """
    records, _ = _records(pathlib.Path(path))
    axes: set[str] = set()
    largest: dict[str, int] = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "metric" and record.metric.step_metric:
            axes.add(record.metric.step_metric)
        elif kind == "history":
            for item in record.history.item:
                key = "/".join(_path(item))
                if key.endswith("/step") or key in axes:
                    value = _decode(item)
                    if type(value) is int:
                        largest[key] = max(value, largest.get(key, value))
    return {key.removesuffix("/step"): value for key, value in largest.items() if key in axes}


def find_run_files(wandb_dir: str | os.PathLike[str], run_id: str | None = None) -> list[pathlib.Path]:
    """Find the ``run-<id>.wandb`` files under a wandb folder.

    Args:
        wandb_dir: The folder holding the ``offline-run-*`` dirs (``<root>/wandb``).
        run_id: Only files of this run id.

    Returns:
        One path per file (the ``latest-run`` symlink is ignored), sorted by the timestamp in
        the run dir's name, then by path; empty if there are none.
    """
    rid = glob.escape(run_id) if run_id is not None else "*"
    pattern = os.path.join(glob.escape(os.fspath(wandb_dir)), f"*run-*-{rid}", f"run-{rid}.wandb")
    unique: dict[str, pathlib.Path] = {}
    for name in glob.glob(pattern):
        if not os.path.islink(os.path.dirname(name)):
            unique.setdefault(os.path.realpath(name), pathlib.Path(name))
    return sorted(unique.values(), key=lambda p: (_dir_stamp(p), str(p)))


def read_runs(wandb_dir: str | os.PathLike[str]) -> list[RunFile]:
    """Read every run in a wandb folder.

    Args:
        wandb_dir: The folder holding the ``offline-run-*`` dirs (``<root>/wandb``).

    Returns:
        The runs in start order (dir timestamp, then the run record's start time).

    Raises:
        RunFileError: One of the files is unreadable or not a wandb file.
    """
    runs = [read_run_file(p) for p in find_run_files(wandb_dir)]
    return sorted(runs, key=lambda r: (_dir_stamp(r.path), r.start_time or 0.0))


def format_report(runs: Iterable[RunFile]) -> str:
    """Describe runs for a human: metadata, config keys, series point counts, summary, the
    verdicts of gates (``gates/...`` summary keys, one line per suite and per gated metric), exit.

    Args:
        runs: The runs to describe, in the order given.

    Returns:
        A multi-line report ending with a newline (``"no runs\\n"`` if *runs* is empty).
    """
    lines: list[str] = []
    for run in runs:
        lines.append(f"run {run.run_id}" + (f" ({run.name})" if run.name else ""))
        lines.append(f"  project: {run.project or '-'}")
        lines.append(f"  group: {run.group or '-'}")
        lines.append(f"  job type: {run.job_type or '-'}")
        lines.append(f"  tags: {', '.join(run.tags) or '-'}")
        lines.append(f"  config: {', '.join(_flatten(run.config)) or '-'}")
        counts: dict[str, int] = {}
        for row in run.history:
            for key in row:
                if key not in _INTERNAL_SERIES and not key.endswith("/step"):
                    counts[key] = counts.get(key, 0) + 1
        lines.append(f"  series ({len(run.history)} history rows):" + ("" if counts else " -"))
        lines += [f"    {key}: {n} point{'s' * (n != 1)}" for key, n in sorted(counts.items())]
        gates, described = summary_report(run.summary)
        flat = _flatten({key: value for key, value in run.summary.items() if key not in described})
        lines.append("  summary:" + ("" if flat else " -"))
        lines += [f"    {key} = {_short(value)}" for key, value in sorted(flat.items())]
        if gates:
            lines.append("  gates:")
            lines += [f"    {line}" for line in gates]
        exit_text = "none (run did not finish)" if run.exit_code is None else str(run.exit_code)
        lines.append(f"  exit code: {exit_text}" + (" (file truncated)" if run.truncated else ""))
    return "\n".join(lines or ["no runs"]) + "\n"


# -- framing ----------------------------------------------------------------------------------


# -- folding records into a RunFile -----------------------------------------------------------


def _fold(path: pathlib.Path, records: list[Any], truncated: bool) -> RunFile:
    """Apply the records in file order and build the RunFile."""
    run: Any = _proto().RunRecord()  # the last run record wins: wandb rewrites it whole on changes
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    exit_code: int | None = None
    for record in records:
        kind = record.WhichOneof("record_type")
        body: Any = getattr(record, kind) if kind else None
        if kind == "run":
            run = body
            _apply(config, body.config)
            _apply(summary, body.summary)
        elif kind == "config":
            _apply(config, body)
        elif kind == "summary":
            _apply(summary, body)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in body.item:
                _set(row, _path(item), _decode(item))
            if "_step" not in row and body.HasField("step"):
                row["_step"] = body.step.num
            history.append(row)
        elif kind == "metric":
            metrics.append(
                {
                    "name": _unescaped(body.name),
                    "glob_name": body.glob_name,
                    "step_metric": _unescaped(body.step_metric),
                    "summary": [field.name for field, on in body.summary.ListFields() if on],
                    "step_sync": body.options.step_sync,
                }
            )
        elif kind == "files":
            files.extend({"path": item.path, "policy": type(item).PolicyType.Name(item.policy).lower()}
                         for item in body.files)
        elif kind == "artifact":
            entries = [entry.path for entry in body.manifest.contents]
            artifacts.append(
                {"name": body.name, "type": body.type, "aliases": list(body.aliases), "manifest_entries": entries,
                 "metadata": json.loads(body.metadata) if body.metadata else {},
                 "description": body.description or None}
            )
        elif kind == "alert":
            alerts.append({"title": body.title, "text": body.text, "level": body.level})
        elif kind == "exit":
            exit_code = body.exit_code
    internal = config.pop("_wandb", None)
    charts = internal.get("visualize", {}) if isinstance(internal, dict) else {}
    return RunFile(
        path=path,
        run_id=run.run_id or path.name.removeprefix("run-").removesuffix(".wandb"),
        project=run.project,
        entity=run.entity,
        group=run.run_group,
        job_type=run.job_type,
        tags=tuple(run.tags),
        name=run.display_name,
        config=config,
        history=history,
        summary=summary,
        metrics=metrics,
        files=files,
        artifacts=artifacts,
        alerts=alerts,
        exit_code=exit_code,
        truncated=truncated,
        start_time=run.start_time.ToNanoseconds() / 1e9 if run.HasField("start_time") else None,
        host=run.host,
        charts=charts if isinstance(charts, dict) else {},
    )


def _apply(target: dict[str, Any], record: Any) -> None:
    """Apply a config or summary record's updates, then its removals, to *target*."""
    for item in record.update:
        _set(target, _path(item), _decode(item))
    for item in record.remove:
        *parents, last = _path(item)
        node: Any = target
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)


def _path(item: Any) -> list[str]:
    return list(item.nested_key) or [item.key]


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    *parents, last = path
    for key in parents:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[last] = value


def _decode(item: Any) -> Any:
    """Return an item's value: its ``value_json``, else a typed history value (newer writers)."""
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if kind == "json":
        return json.loads(item.json)
    return None if kind in (None, "none") else getattr(item, kind)


# -- small helpers ----------------------------------------------------------------------------


def _proto() -> Any:
    """Return wandb's protobuf module, imported only now: importing wandb is slow and heavy."""
    return importlib.import_module("wandb.proto.wandb_internal_pb2")


def _unescaped(name: str) -> str:
    """Return a ``define_metric`` name as the key it declares: wandb reads ``\\.`` as a literal dot."""
    return name.replace("\\.", ".")


def _glob_match(pattern: str, key: str) -> bool:
    """Match a define_metric glob, where only ``*`` is special."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), key, re.DOTALL) is not None


def _dir_stamp(path: pathlib.Path) -> str:
    match = _STAMP.search(path.parent.name)
    return match.group(1) if match else ""


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into ``'/'``-joined keys (an empty dict stays a leaf)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}/")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
