"""The recording backend: runs kept in memory, the oracle for tests.

It keeps the rules of wandb 0.31 that users' assertions depend on (docs/wandb-behaviour.md):

* every ``log`` appends one history row with the next ``_step`` (0, 1, 2, ...) and sets the
  summary to the row's values, unless ``define_metric(summary=...)`` says otherwise: then
  the summary value is ``{"min": v}`` and so on, or absent for ``"none"``;
* a summary update never touches history, and a NaN set in the summary is stored as ``None``
  (wandb writes null), as is a NaN anywhere in the config;
* a config update replaces top-level keys (``config.update``; the session deep-merges first);
* media are described in wandb's shapes: a histogram by wandb's ``values`` (counts) and
  ``bins``, a table by its columns and rows, an image by its size and caption, any other wandb
  object by its W&B type (``{"_type": "html-file"}``); a ``wandb.plot`` chart's panel is kept in
  :attr:`RecordedRun.charts`;
* a value wandb cannot write costs only itself, as there: an image array of a shape wandb
  cannot convert, a wandb object whose file is gone;
* what wandb rejects is rejected: a file policy other than ``now``/``end``/``live`` or a
  ``base_path`` that is not a prefix of the path (ValueError in ``run.save``), an artifact path
  that does not exist, an alert level other than INFO/WARN/ERROR, an image array of a shape
  wandb cannot convert. A ``save`` whose path matches no file is rejected too: wandb saves
  nothing and says nothing, which a test should hear about. In strict mode the rejection
  is an :class:`~instrument.InstrumentationError` that reaches the test; otherwise it is the
  ``ValueError`` wandb raises, which the session turns into one warning.

Everything read back is plain data (numbers, strings, lists, dicts; media as small dicts such
as ``{"_type": "table", "columns": [...], "rows": [...]}``) and a deep copy: later writes never
change what a test already holds.
"""

from __future__ import annotations

import copy
import glob
import math
import os
import pathlib
import threading
from typing import Any

from instrument._backends.base import RunSpec, ValuesDropped
from instrument._foreign import ForeignValue, PlotlyFigure, is_wandb_object, state_of
from instrument._keys import metric_name
from instrument._kinds import is_plotly_figure, numpy, type_name
from instrument._media import pictures
from instrument._problems import InstrumentationError, strict, with_origin
from instrument._values import Histogram, Image, Table

_POLICIES = ("now", "end", "live")
_LEVELS = ("INFO", "WARN", "ERROR")


def _reject(message: str) -> Exception:
    """Return the error for a call wandb would reject: loud in strict mode, wandb's otherwise."""
    if strict():
        return InstrumentationError(with_origin(f"instrument: {message}"))
    return ValueError(message)  # the session's warning names the function around it


class _UnwritableError(ValueError):
    """A value wandb could not write (the message is the reason, as wandb would give it)."""


def _image(value: Image) -> Any:
    """Return what a test needs to know of an image: size and caption; refuse bad shapes."""
    found = []
    for picture in pictures(value):
        shape = getattr(picture, "shape", None)
        if shape is not None:
            shape = tuple(shape)
            if not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))):
                raise _UnwritableError(f"ValueError: an image of shape {shape} cannot be converted "
                                       "(expected HxW, HxWxC or CxHxW with C of 1, 3 or 4)")
            height, width = shape[0], shape[1]
        elif isinstance(picture, str):  # an image file (an image read back from a journal, a path)
            from PIL import Image as PILImage  # wandb.Image needs pillow for a file too

            with PILImage.open(picture) as opened:
                width, height = opened.size
        else:
            width, height = getattr(picture, "size", (None, None))
        found.append({"_type": "image", "width": width, "height": height, "caption": value.caption})
    return found[0] if len(found) == 1 else found


def _histogram(value: Histogram) -> dict[str, Any]:
    """Return a histogram as wandb stores it: ``values`` are the counts, ``bins`` the edges."""
    if value.counts is not None and value.bins is not None:
        return {"_type": "histogram", "values": list(value.counts), "bins": list(value.bins)}
    counts, edges = numpy().histogram(list(value.values), bins=value.num_bins)
    return {"_type": "histogram", "values": counts.tolist(), "bins": edges.tolist()}


def _foreign(value: Any) -> Any:
    """Describe a wandb object (the user's, or one read back from a journal) as wandb stores it.

    Raises:
        _UnwritableError: the object's file is gone (wandb raises FileNotFoundError when it logs it).
    """
    name, log_type, state = state_of(value)
    path = state.get("_path")
    if isinstance(path, str) and "://" not in path and not os.path.exists(path):
        raise _UnwritableError(f"FileNotFoundError: [Errno 2] No such file or directory: {path!r}")
    if name == "Table":
        return {"_type": "table", "columns": list(state.get("columns") or []),
                "rows": [[_snapshot(cell) for cell in row] for row in state.get("data") or []]}
    if name == "Image":
        return {"_type": "image", "width": state.get("_width"), "height": state.get("_height"),
                "caption": state.get("_caption")}
    if name == "Histogram":
        return {"_type": "histogram", "values": list(state.get("histogram") or []),
                "bins": list(state.get("bins") or [])}
    return {"_type": log_type or f"wandb.{name}"}


def _snapshot(value: Any) -> Any:
    """Return *value* as plain data, deep-copied; media become small dicts in wandb's shapes.

    Raises:
        _UnwritableError: the value is media wandb could not write.
    """
    if isinstance(value, Table):
        return {"_type": "table", "columns": list(value.columns),
                "rows": [[_snapshot(cell) for cell in row] for row in value.rows]}
    if isinstance(value, Histogram):
        return _histogram(value)
    if isinstance(value, Image):
        return _image(value)
    if isinstance(value, PlotlyFigure) or is_plotly_figure(value):
        return {"_type": "plotly-file"}
    if isinstance(value, ForeignValue) or is_wandb_object(value):
        return _foreign(value)
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_snapshot(v) for v in value]
    return copy.deepcopy(value)


def _snapshot_each(values: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Return the snapshot of each value wandb could write, and ``(key, type, reason)`` of the others."""
    kept: dict[str, Any] = {}
    dropped: list[tuple[str, str, str]] = []
    for key, value in values.items():
        try:
            kept[key] = _snapshot(value)
        except _UnwritableError as error:
            dropped.append((key, type_name(value), str(error)))
    return kept, dropped


def _media_kind(snapshot: Any) -> str | None:
    first = snapshot[0] if isinstance(snapshot, list) and snapshot else snapshot
    kind = first.get("_type") if isinstance(first, dict) else None
    return {"table": "tables", "image": "images"}.get(kind or "")


def _null_nan(value: Any, *, in_lists: bool = False) -> Any:
    """Return *value* with NaN floats as None, as wandb stores a summary (nested dicts too) or,
    *in_lists*, the config (in lists too; a summary list keeps its NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _null_nan(v, in_lists=in_lists) for k, v in value.items()}
    if in_lists and isinstance(value, list | tuple):
        return [_null_nan(v, in_lists=True) for v in value]
    return value


def _aggregate(ops: str, old: Any, value: Any, total: float, count: int) -> dict[str, Any]:
    """Return the summary dict of a ``define_metric(summary=ops)`` key after *value* was logged;
    *total* and *count* are the sum and number of values so far (wandb's mean is total/count)."""
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
            out[op] = total / count
    return out


class RecordedRun:
    """One run as the recording backend saw it; every attribute reads back a snapshot of plain data.

    Attributes:
        id, project, entity, name, group, job_type, tags, mode: what the run was started with
            (``wandb.init``'s arguments; *mode* is the one wandb would have used).
        config: ``run.config``, nested dicts.
        summary: ``run.summary`` in wandb's shapes (``{"min": v}`` for a ``summary="min"`` key).
        history: the rows in log order, each with its ``_step``.
        metrics: the ``define_metric`` declarations, ``{key: {"step_metric", "summary"}}``.
        tables, images: ``{key: [value, ...]}``, one entry per table or image logged under *key*
            (to history or summary), in order.
        files: saved files ``{"path", "policy", "source"}``; *path* is where wandb puts the file
            in the run (relative to its ``files/`` folder), *source* the absolute file saved.
        artifacts: ``{"name", "type", "aliases", "path", "metadata", "description"}`` (*path* is
            None for a ``wandb.Artifact`` logged as it is). alerts: ``{"title", "text", "level"}``.
        charts: the custom charts of ``wandb.plot``, ``{key: panel spec}``, as wandb keeps them in
            the config under ``_wandb.visualize`` (their tables are logged under ``<key>_table``).
        finished: whether the run was finished; exit_code: its exit code, else None.

    The methods after :meth:`series` are the backend protocol the session calls; spy on them
    with pytest-mock (``mocker.spy(RecordedRun, "log")``) to see every call.
    """

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.id = spec.id
        self._lock = threading.RLock()
        self._config: dict[str, Any] = _null_nan(copy.deepcopy(dict(spec.config)), in_lists=True)
        self._summary: dict[str, Any] = {}
        self._history: list[dict[str, Any]] = []
        self._metrics: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, int] = {}
        self._totals: dict[str, float] = {}
        self._files: list[dict[str, Any]] = []
        self._artifacts: list[dict[str, Any]] = []
        self._alerts: list[dict[str, Any]] = []
        self._charts: dict[str, dict[str, Any]] = {}
        self._media: dict[str, dict[str, list[Any]]] = {"tables": {}, "images": {}}
        self._resumed: dict[str, int] = {}
        self.finished = False
        self.exit_code: int | None = None

    @property
    def project(self) -> str | None:
        """The run's project (``wandb.init(project=...)``)."""
        return self.spec.project

    @property
    def entity(self) -> str | None:
        """The run's entity."""
        return self.spec.entity

    @property
    def name(self) -> str | None:
        """The run's display name."""
        return self.spec.name

    @property
    def group(self) -> str | None:
        """The run's group (a pipeline and its children share one)."""
        return self.spec.group

    @property
    def job_type(self) -> str | None:
        """The run's job type: ``"pipeline"``, ``"train"``, or None for a standalone run."""
        return self.spec.job_type

    @property
    def tags(self) -> tuple[str, ...]:
        """The run's tags (a child of a pipeline has ``parent:<pipeline id>``)."""
        return tuple(self.spec.tags)

    @property
    def mode(self) -> str:
        """The mode wandb would have run in (``online``, ``offline``, ``disabled``)."""
        return self.spec.mode

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
        """``define_metric`` declarations: ``{key: {"step_metric", "summary"}}``."""
        with self._lock:
            return copy.deepcopy(self._metrics)

    @property
    def tables(self) -> dict[str, list[Any]]:
        """Tables logged, by key, in order: ``{"_type": "table", "columns": [...], "rows": [[...]]}``."""
        with self._lock:
            return copy.deepcopy(self._media["tables"])

    @property
    def images(self) -> dict[str, list[Any]]:
        """Images logged, by key, in order: ``{"_type": "image", "width", "height", "caption"}``
        (a list of those for a batch)."""
        with self._lock:
            return copy.deepcopy(self._media["images"])

    @property
    def files(self) -> list[dict[str, Any]]:
        """Files saved with the run, in order: ``{"path", "policy", "source"}``."""
        with self._lock:
            return copy.deepcopy(self._files)

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """Artifacts logged, in order: ``{"name", "type", "aliases", "path", "metadata", "description"}``."""
        with self._lock:
            return copy.deepcopy(self._artifacts)

    @property
    def charts(self) -> dict[str, dict[str, Any]]:
        """Custom charts declared (a ``wandb.plot`` chart returned): ``{key: panel spec}``."""
        with self._lock:
            return copy.deepcopy(self._charts)

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """Alerts sent, in order: ``{"title", "text", "level"}``."""
        with self._lock:
            return copy.deepcopy(self._alerts)

    def series(self, key: str) -> list[tuple[Any, Any]]:
        """Return ``(step, value)`` for each history row holding *key*, in log order.

        The step is read on the key's own axis: the ``step_metric`` declared for *key* (a stage's
        ``<stage>/step``), else ``_step``.

        Raises:
            KeyError: *key* was never logged to history (a typo, or a summary key); the message
                lists the keys that were.
        """
        with self._lock:
            axis = self._metrics.get(key, {}).get("step_metric") or "_step"
            points = [(row.get(axis), copy.deepcopy(row[key])) for row in self._history if key in row]
            if not points:
                logged = sorted({k for row in self._history for k in row if not k.startswith("_")})
                raise KeyError(f"{key!r} was never logged to the history of run {self.id}; "
                               f"the keys logged are {logged}")
            return points

    def _keep_media(self, snapshot: dict[str, Any]) -> None:
        for key, value in snapshot.items():
            kind = _media_kind(value)
            if kind is not None:
                self._media[kind].setdefault(key, []).append(copy.deepcopy(value))

    # BackendRun protocol -------------------------------------------------------------------------
    def log(self, row: dict[str, Any]) -> None:
        """Append a history row with the next ``_step`` and update the summary as wandb does.

        Raises:
            ValuesDropped: after the row landed, naming the values wandb could not write.
        """
        snapshot, dropped = _snapshot_each(row)  # outside the lock
        self._log(snapshot)
        if dropped:
            raise ValuesDropped(dropped)

    def _log(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            snapshot["_step"] = len(self._history)
            self._history.append(snapshot)
            self._keep_media(snapshot)
            for key, value in snapshot.items():
                if key.startswith("_"):
                    continue
                ops = self._metrics.get(key, {}).get("summary")
                if not ops:
                    self._summary[key] = copy.deepcopy(value)
                elif ops != "none" and isinstance(value, int | float) and not isinstance(value, bool):
                    self._counts[key] = self._counts.get(key, 0) + 1
                    self._totals[key] = self._totals.get(key, 0) + value
                    self._summary[key] = _aggregate(
                        ops, self._summary.get(key), value, self._totals[key], self._counts[key]
                    )

    def resumed_steps(self) -> dict[str, int]:
        """Return each stage axis's last step that the earlier recorded runs of this id logged,
        when this run resumes them (``resume`` other than ``"never"``), as wandb's own backend
        does; {} for a fresh run."""
        return dict(self._resumed)

    def last_steps(self) -> dict[str, int]:
        """Return each step axis's largest step in this run's history (stage name -> step)."""
        with self._lock:
            axes = {metric["step_metric"] for metric in self._metrics.values() if metric["step_metric"]}
            found: dict[str, int] = {}
            for row in self._history:
                for axis in axes & row.keys():
                    if type(row[axis]) is int:
                        found[axis] = max(row[axis], found.get(axis, row[axis]))
        return {axis.removesuffix("/step"): step for axis, step in found.items()}

    def define_metric(self, name: str, step_metric: str | None, summary: str | None) -> None:
        """Record a ``define_metric`` declaration for the exact key *name* (none for a key holding
        ``*``, which wandb would read as a pattern)."""
        if metric_name(name) is None:
            return
        with self._lock:
            self._metrics[name] = {"step_metric": step_metric, "summary": summary}

    def update_summary(self, values: dict[str, Any]) -> None:
        """Set summary keys (NaN becomes None, as wandb stores it); no history row.

        Raises:
            ValuesDropped: after the rest landed, naming the values wandb could not write.
        """
        kept, dropped = _snapshot_each(values)
        snapshot = _null_nan(kept)
        with self._lock:
            self._summary.update(snapshot)
            self._keep_media(snapshot)
        if dropped:
            raise ValuesDropped(dropped)

    def update_config(self, values: dict[str, Any]) -> None:
        """Set top-level config keys (NaN, nested or in a list, becomes None, as wandb stores it)."""
        with self._lock:
            self._config.update(_null_nan(copy.deepcopy(values), in_lists=True))

    def save(self, path: str, base_path: str | None, policy: str) -> None:
        """Record the files *path* (a path or glob) matches, named as wandb names them in the run.

        Raises:
            ValueError, InstrumentationError: (the latter in strict mode) the policy is not
                ``now``/``end``/``live``, *base_path* is not a prefix of *path*, or no file matches.
        """
        if policy not in _POLICIES:
            raise _reject(f"save({path!r}): policy {policy!r} is not one of {list(_POLICIES)} "
                          "(wandb raises ValueError)")
        source = pathlib.Path(os.path.abspath(path))
        if base_path is not None:
            base = pathlib.Path(os.path.abspath(base_path))
        elif not pathlib.PurePath(path).is_absolute():
            base = pathlib.Path(os.path.abspath("."))
        else:
            base = source.parent.parent  # wandb keeps one folder level of an absolute path
        if not source.is_relative_to(base):
            raise _reject(f"save({path!r}): base_path {base_path!r} is not a prefix of the path "
                          "(wandb raises ValueError)")
        matches = sorted(p for p in glob.glob(str(source)) if os.path.isfile(p))
        if not matches:
            raise _reject(f"no file matches {path!r}; wandb would save nothing and say nothing")
        with self._lock:
            for match in matches:
                name = pathlib.Path(match).relative_to(base).as_posix()
                self._files.append({"path": name, "policy": policy, "source": match})

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...], *,
                     metadata: dict[str, Any] | None = None, description: str | None = None) -> None:
        """Record a logged artifact; ``latest`` is added to its aliases, as wandb
        adds it (in no fixed order there; last here).

        Raises:
            ValueError, InstrumentationError: (the latter in strict mode) *path* does not exist.
        """
        if not os.path.exists(path):
            raise _reject(f"log_artifact({path!r}): no such file or folder (wandb raises ValueError)")
        self._artifact(name, type, aliases, path=os.path.abspath(path), metadata=metadata, description=description)

    def _artifact(self, name: str, type: str, aliases: tuple[str, ...], *, path: str | None,
                  metadata: dict[str, Any] | None, description: str | None) -> None:
        with self._lock:
            every = list(aliases) if "latest" in aliases else [*aliases, "latest"]  # as wandb does
            self._artifacts.append({"name": name, "type": type, "aliases": every, "path": path,
                                    "metadata": copy.deepcopy(metadata or {}), "description": description})

    def log_wandb_artifact(self, artifact: Any, aliases: tuple[str, ...]) -> None:
        """Record a ``wandb.Artifact`` logged as it is (its name, type, metadata and description)."""
        self._artifact(artifact.name, artifact.type, aliases, path=None, metadata=dict(artifact.metadata),
                       description=artifact.description)

    def declare_chart(self, key: str, spec: dict[str, Any]) -> None:
        """Record the custom chart *key*'s panel spec (wandb keeps it in ``_wandb.visualize``)."""
        with self._lock:
            self._charts[key] = copy.deepcopy(spec)

    def alert(self, title: str, text: str, level: str) -> None:
        """Record an alert.

        Raises:
            ValueError, InstrumentationError: (the latter in strict mode) *level* is not INFO,
                WARN or ERROR (wandb has no such ``AlertLevel``).
        """
        if level not in _LEVELS:
            raise _reject(f"alert({title!r}): level {level!r} is not one of {list(_LEVELS)}")
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
        with self._lock:
            state = f"finished, exit_code={self.exit_code}" if self.finished else "running"
            return (f"<RecordedRun {self.id} project={self.project!r} group={self.group!r} "
                    f"job_type={self.job_type!r} tags={list(self.tags)} history={_count(len(self._history), 'row')} "
                    f"summary={sorted(self._summary)} {state}>")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class RecordingBackend:
    """A backend that keeps every run in memory, in creation order (:attr:`runs`).

    Attributes:
        synchronous: True: sessions write to it in the caller's thread, so a strict-mode
            :class:`~instrument.InstrumentationError` reaches the code under test.
        runs: the :class:`RecordedRun` objects started, in creation order.
    """

    synchronous = True

    def __init__(self) -> None:
        self.runs: list[RecordedRun] = []
        self._lock = threading.Lock()

    def start(self, spec: RunSpec) -> RecordedRun:
        """Start (record) a new run from *spec* and return it. With ``resume`` (other than
        ``"never"``) and the id of runs recorded before, it resumes them: its stage axes go on
        from their last steps (:meth:`RecordedRun.resumed_steps`)."""
        run = RecordedRun(spec)
        with self._lock:
            if spec.resume not in (None, "never"):
                for earlier in self.runs:
                    if earlier.id == spec.id:
                        for axis, step in earlier.last_steps().items():
                            run._resumed[axis] = max(step, run._resumed.get(axis, step))  # noqa: SLF001
            self.runs.append(run)
        return run

    def adopt(self) -> None:
        """Return None: a recording never adopts a run some other code started."""
        return

    def __repr__(self) -> str:
        return f"<RecordingBackend {_count(len(self.runs), 'run')}>"
