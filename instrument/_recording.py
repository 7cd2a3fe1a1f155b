"""The recording backend: runs kept in memory, the oracle for tests.

It keeps wandb's rules that matter to users (WANDB_FACTS): every ``log`` appends a history row
with an increasing ``_step`` and updates the summary with the row's values, unless a metric's
``define_metric(summary=...)`` says otherwise (then the summary value is ``{"min": v}`` and so
on, or absent for ``"none"``); summary updates never touch history; config updates merge at the
top level. Values read back are deep copies: later writes never change them.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import attrs

from instrument._backend import RunSpec
from instrument._values import Histogram, Image, Table


def _snapshot(value: Any) -> Any:
    if isinstance(value, Table):
        return {"_type": "table", "columns": list(value.columns), "rows": [list(r) for r in value.rows]}
    if isinstance(value, Histogram):
        return {"_type": "histogram", "values": list(value.values)}
    if isinstance(value, Image):
        shape = getattr(value.data, "shape", None) or getattr(value.data, "size", None)
        return {"_type": "image", "shape": tuple(shape) if shape is not None else None, "caption": value.caption}
    if type(value).__module__.split(".")[0] == "wandb":
        return {"_type": f"wandb.{type(value).__name__}"}
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_snapshot(v) for v in value]
    return copy.deepcopy(value)


def _aggregate(ops: str, old: Any, value: Any, count: int) -> dict[str, Any]:
    out: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
    for op in ops.split(","):
        previous = out.get(op)
        if op == "min":
            out[op] = value if previous is None else min(previous, value)
        elif op == "max":
            out[op] = value if previous is None else max(previous, value)
        elif op == "last":
            out[op] = value
        elif op == "first":
            out[op] = value if previous is None else previous
        elif op == "mean":
            out[op] = value if previous is None else previous + (value - previous) / count
    return out


class RecordedRun:
    """One run as the recording backend saw it; every attribute is a snapshot of plain data.

    Attributes:
        id, project, entity, name, group, job_type, tags: what the run was started with.
        config: ``run.config`` (nested dicts). summary: ``run.summary`` in wandb's shapes.
        history: the rows in log order, each with ``_step``.
        tables, images: ``{key: [value, ...]}`` for each media value logged (history or summary).
        files: saved files ``{"path", "base_path", "policy"}``. artifacts, alerts: dicts.
        finished: whether the run was finished; exit_code: its exit code, else None.
    """

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.id = spec.id
        self._lock = threading.Lock()
        self._config: dict[str, Any] = copy.deepcopy(dict(spec.config))
        self._summary: dict[str, Any] = {}
        self._history: list[dict[str, Any]] = []
        self._metrics: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, int] = {}
        self._files: list[dict[str, Any]] = []
        self._artifacts: list[dict[str, Any]] = []
        self._alerts: list[dict[str, Any]] = []
        self._media: dict[str, dict[str, list[Any]]] = {"table": {}, "image": {}}
        self.finished = False
        self.exit_code: int | None = None
        self.calls: list[tuple[str, Any]] = []

    project = property(lambda self: self.spec.project, doc="The run's project.")
    entity = property(lambda self: self.spec.entity, doc="The run's entity.")
    name = property(lambda self: self.spec.name, doc="The run's display name.")
    group = property(lambda self: self.spec.group, doc="The run's group.")
    job_type = property(lambda self: self.spec.job_type, doc="The run's job type.")
    tags = property(lambda self: tuple(self.spec.tags), doc="The run's tags.")
    mode = property(lambda self: self.spec.mode, doc="The mode the run would have had on wandb.")

    @property
    def config(self) -> dict[str, Any]:
        """``run.config``, nested, as plain data."""
        with self._lock:
            return copy.deepcopy(self._config)

    @property
    def summary(self) -> dict[str, Any]:
        """``run.summary``: last values, or ``{"min": v}`` shapes for declared aggregations."""
        with self._lock:
            return copy.deepcopy(self._summary)

    @property
    def history(self) -> list[dict[str, Any]]:
        """History rows in log order, each with its ``_step``."""
        with self._lock:
            return copy.deepcopy(self._history)

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """``define_metric`` declarations: ``{name: {"step_metric", "summary"}}``."""
        with self._lock:
            return copy.deepcopy(self._metrics)

    @property
    def tables(self) -> dict[str, list[Any]]:
        """Tables logged, by key: ``{"columns": [...], "rows": [[...]]}`` each."""
        with self._lock:
            return copy.deepcopy(self._media["table"])

    @property
    def images(self) -> dict[str, list[Any]]:
        """Images logged, by key: ``{"shape", "caption"}`` each."""
        with self._lock:
            return copy.deepcopy(self._media["image"])

    @property
    def files(self) -> list[dict[str, Any]]:
        """Files saved with the run."""
        with self._lock:
            return copy.deepcopy(self._files)

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """Artifacts logged: ``{"path", "type", "name", "aliases"}``."""
        with self._lock:
            return copy.deepcopy(self._artifacts)

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """Alerts sent: ``{"title", "text", "level"}``."""
        with self._lock:
            return copy.deepcopy(self._alerts)

    def series(self, key: str) -> list[tuple[Any, Any]]:
        """Return ``(step, value)`` for each row holding *key*, on the key's own step axis.

        The axis is the ``step_metric`` declared for *key*, else ``_step``.
        """
        with self._lock:
            axis = self._metrics.get(key, {}).get("step_metric") or "_step"
            return [(row.get(axis), copy.deepcopy(row[key])) for row in self._history if key in row]

    def _media_of(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            kind = "table" if isinstance(value, Table) else "image" if isinstance(value, Image) else None
            if kind is not None:
                self._media[kind].setdefault(key, []).append(_snapshot(value))

    # BackendRun protocol -------------------------------------------------------------------------
    def log(self, row: dict[str, Any]) -> None:
        """Append a history row and update the summary as wandb does."""
        with self._lock:
            snapshot = _snapshot(row)
            snapshot["_step"] = len(self._history)
            self._history.append(snapshot)
            self._media_of(row)
            for key, value in snapshot.items():
                if key.startswith("_"):
                    continue
                ops = self._metrics.get(key, {}).get("summary")
                self._counts[key] = self._counts.get(key, 0) + 1
                if not ops:
                    self._summary[key] = value
                elif ops != "none" and isinstance(value, int | float):
                    self._summary[key] = _aggregate(ops, self._summary.get(key), value, self._counts[key])

    def define_metric(self, name: str, step_metric: str | None, summary: str | None) -> None:
        """Record a ``define_metric`` declaration."""
        with self._lock:
            self._metrics[name] = {"step_metric": step_metric, "summary": summary}

    def update_summary(self, values: dict[str, Any]) -> None:
        """Set summary keys; no history row."""
        with self._lock:
            self._summary.update(_snapshot(values))
            self._media_of(values)

    def update_config(self, values: dict[str, Any]) -> None:
        """Set top-level config keys."""
        with self._lock:
            self._config.update(copy.deepcopy(values))

    def save(self, path: str, base_path: str | None, policy: str) -> None:
        """Record a saved file."""
        with self._lock:
            self._files.append({"path": path, "base_path": base_path, "policy": policy})

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...]) -> None:
        """Record a logged artifact."""
        with self._lock:
            self._artifacts.append({"path": path, "type": type, "name": name, "aliases": list(aliases)})

    def alert(self, title: str, text: str, level: str) -> None:
        """Record an alert."""
        with self._lock:
            self._alerts.append({"title": title, "text": text, "level": level})

    def finish(self, exit_code: int) -> None:
        """Mark the run finished with *exit_code*."""
        with self._lock:
            self.finished = True
            self.exit_code = exit_code

    def location(self) -> str:
        """Return where the run lives: in memory."""
        return f"memory (recorded run {self.id})"

    def __repr__(self) -> str:
        return (f"RecordedRun(id={self.id!r}, job_type={self.job_type!r}, group={self.group!r}, "
                f"rows={len(self._history)}, finished={self.finished})")


@attrs.define
class RecordingBackend:
    """A backend that keeps every run in memory, in creation order (:attr:`runs`).

    It is always written synchronously, on the calling thread (no dispatcher thread), so
    strict-mode errors reach the test where the call was made.
    """

    synchronous = True  # read by the session: no dispatcher thread
    name: str = "recording"
    runs: list[RecordedRun] = attrs.field(factory=list)

    def start(self, spec: RunSpec) -> RecordedRun:
        """Record a new run from *spec*."""
        run = RecordedRun(spec)
        self.runs.append(run)
        return run

    def adopt(self) -> None:
        """Return None: a recording never adopts a foreign run."""
        return None
