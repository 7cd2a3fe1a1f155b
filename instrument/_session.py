"""A session: one live run, its per-stage step axes, and the rules W&B needs kept.

The session turns records into backend calls:

* each stage has its own axis ``<stage>/step``; each key is declared once, by exact name, with
  ``define_metric(key, step_metric="<stage>/step")`` and ``step=`` is never passed to ``run.log``
  (a backward ``step=`` is dropped by wandb; WANDB_FACTS 1.1, 1.3b);
* summary keys an eval set are remembered and re-asserted at finish if a series overwrote them;
* config is deep-merged (wandb's ``config.update`` replaces a nested dict whole), last value wins
  with a warning;
* a backend that fails never raises into user code: one warning per kind of fault.

The run starts on the first record. Writes are serialised by a lock, so several threads can log.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

from instrument._backend import Backend, BackendRun, RunSpec
from instrument._problems import InstrumentationError, Problem, report
from instrument._records import (
    ConfigUpdate,
    LogArtifact,
    Point,
    Record,
    SaveFile,
    SendAlert,
    SummaryUpdate,
)


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def deep_merge(target: dict[str, Any], values: dict[str, Any], path: str, changed: list[str]) -> None:
    """Merge *values* into *target* in place; append to *changed* each leaf whose value changed."""
    for key, value in values.items():
        full = f"{path}/{key}" if path else key
        old = target.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            deep_merge(old, value, full, changed)
            continue
        if key in target and old != value and not (old != old and value != value):
            changed.append(f"{full} ({old!r} -> {value!r})")
        target[key] = value if not isinstance(value, dict) else {**value}


class Session:
    """One run this process writes: started lazily on the first record, finished once.

    Args:
        spec: what the run is started with.
        backend: the backend that starts it.
        owns_run: False for an adopted run (a framework's ``wandb.run``): never finished.
        on_start: called with the session after its run started (linkage registers exit hooks).
        before_finish: called before the run is finished (the owner drains journals).
    """

    def __init__(
        self,
        spec: RunSpec,
        backend: Backend,
        *,
        run: BackendRun | None = None,
        on_start: Callable[[Session], None] | None = None,
        before_finish: Callable[[Session], None] | None = None,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.journal_dir: str | None = None
        self._run = run
        self._adopted = run is not None
        self._on_start = on_start
        self._before_finish = before_finish
        self._lock = threading.RLock()
        self._next_step: dict[str, int] = {}
        self._last_step: dict[str, int] = {}
        self._defined: set[str] = set()
        self._owned_summary: dict[str, Any] = {}
        self._overwritten: set[str] = set()
        self._config: dict[str, Any] = {}
        self._faults: set[str] = set()
        self.finished = False
        self.exit_code: int | None = None

    @property
    def id(self) -> str:
        """The run id (known before the run starts: instrument chooses it)."""
        return self._run.id if self._run is not None else self.spec.id

    @property
    def started(self) -> bool:
        """Whether the run was started (or adopted)."""
        return self._run is not None

    def start(self) -> BackendRun | None:
        """Start the run now if it is not started yet; return it (None if starting failed)."""
        with self._lock:
            if self._run is None and not self.finished:
                try:
                    self._run = self.backend.start(self.spec)
                except Exception as error:  # noqa: BLE001 - never raise into user code
                    self._fault("init", f"starting the run failed ({type(error).__name__}: {error})")
                    return None
                if self._on_start is not None:
                    self._on_start(self)
            return self._run

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Report *problems*, then write *records* to the run in order."""
        for problem in problems:
            report(problem, once=problem.kind == "non_finite")
        records = list(records)
        if not records:
            return
        with self._lock:
            if self.finished:
                self._fault("finished", f"run {self.id} is already finished; records after finish were dropped")
                return
            run = self.start()
            if run is None:
                return
            for record in records:
                self._call(record, run)

    def _call(self, record: Record, run: BackendRun) -> None:
        try:
            if isinstance(record, Point):
                self._point(record, run)
            elif isinstance(record, SummaryUpdate):
                self._summary(record, run)
            elif isinstance(record, ConfigUpdate):
                self._configure(record, run)
            elif isinstance(record, SaveFile):
                run.save(record.path, record.base_path, record.policy)
            elif isinstance(record, LogArtifact):
                name = record.name or _artifact_name(record.path)
                run.log_artifact(record.path, record.type, name, record.aliases)
            elif isinstance(record, SendAlert):
                run.alert(record.title, record.text, record.level)
        except InstrumentationError:
            raise  # strict mode: a problem with the user's values, not a backend fault
        except Exception as error:  # noqa: BLE001 - never raise into user code
            kind = type(record).__name__
            self._fault(kind, f"writing a {kind} record failed ({type(error).__name__}: {error})")

    def _point(self, point: Point, run: BackendRun) -> None:
        row = dict(point.values)
        for key, value in row.items():
            if _non_finite(value):
                report(Problem("non_finite", f"instrument: key {key!r} is {value}; kept as is in history", key), once=True)
            if key in self._owned_summary and key not in self._overwritten:
                self._overwritten.add(key)
                report(Problem("collision", f"instrument: key {key!r} is an eval's summary key; the series "
                               "value lands in history and the eval's summary value is kept", key))
        if point.axis is not None:
            axis_key = f"{point.axis}/step"
            step = point.step if point.step is not None else self._next_step.get(point.axis, 0)
            last = self._last_step.get(point.axis)
            if last is not None and step < last:
                report(Problem("step_back", f"instrument: stage {point.axis!r} went back from step {last} to "
                               f"{step}; the point is kept on the {axis_key} axis", axis_key), once=True)
            self._last_step[point.axis] = step
            self._next_step[point.axis] = step + 1
            for key in row:
                if key not in self._defined:
                    self._defined.add(key)
                    run.define_metric(key, axis_key, point.summary.get(key))
            row[axis_key] = step
        run.log(row)

    def _summary(self, update: SummaryUpdate, run: BackendRun) -> None:
        for key, value in update.values.items():
            if isinstance(value, float) and math.isnan(value):
                report(Problem("non_finite", f"instrument: summary key {key!r} is NaN; wandb stores NaN in "
                               "the summary as null", key), once=True)
        if update.owned:
            self._owned_summary.update(update.values)
        run.update_summary(dict(update.values))

    def _configure(self, update: ConfigUpdate, run: BackendRun) -> None:
        values = {update.prefix: update.values} if update.prefix else update.values
        changed: list[str] = []
        deep_merge(self._config, values, "", changed)
        for change in changed:
            report(Problem("config", f"instrument: config key {change}: the last value was kept",
                           change.split(" ", 1)[0]))
        run.update_config({key: self._config[key] for key in values})

    def _fault(self, kind: str, message: str) -> None:
        if kind in self._faults:
            return
        self._faults.add(kind)
        report(Problem("backend", f"instrument: {message}; the training goes on"))

    def finish(self, exit_code: int = 0) -> None:
        """Re-assert the evals' summary values, then finish the run with *exit_code*; once."""
        with self._lock:
            if self.finished:
                return
            if self._before_finish is not None:
                self._before_finish(self)
            self.finished = True
            self.exit_code = exit_code
            run = self._run
            if run is None:
                return
            try:
                reassert = {k: self._owned_summary[k] for k in self._overwritten}
                if reassert:
                    run.update_summary(reassert)
                if not self._adopted:
                    run.finish(exit_code)
            except Exception as error:  # noqa: BLE001 - never raise into user code
                self._fault("finish", f"finishing run {self.id} failed ({type(error).__name__}: {error})")

    def location(self) -> str:
        """Where the run's data lives (for messages)."""
        return self._run.location() if self._run is not None else "(not started)"


def _artifact_name(path: str) -> str:
    import re
    from pathlib import Path

    return re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).name) or "artifact"
