"""A session: one live run, its per-stage step axes, and the rules W&B needs kept.

The session turns records into backend calls:

* each stage has its own axis ``<stage>/step``; each key is declared once, by exact name, with
  ``define_metric(key, step_metric="<stage>/step")`` and ``step=`` is never passed to ``run.log``
  (a backward ``step=`` is dropped by wandb; WANDB_FACTS 1.1, 1.3b);
* summary keys an eval set are remembered and re-asserted at finish if a series overwrote them;
* config is deep-merged (wandb's ``config.update`` replaces a nested dict whole), last value wins
  with a warning;
* a backend that fails never raises into user code: one warning per kind of fault;
* points of one stage at the same explicit step, logged by separate calls, are coalesced into
  one history row (ten ``log_training_metric`` calls per step cost one ``run.log``).

Records leave the calling thread at once. :meth:`Session.write` does the cheap part there, under
a write lock, so steps are assigned in call order per stage and problems reach the caller
(strict mode raises there): it checks values, assigns steps and coalesces rows. A
:class:`~instrument._dispatch.Dispatcher` thread then makes the backend calls, in the same order,
and starts the run on the first record (``import wandb`` and ``wandb.init`` cost about 1.6 s,
off the training thread). A synchronous session (the recording and disabled backends,
``INSTRUMENT_SYNC=1``, ``configure(synchronous=True)``, a framework's adopted run) makes the
backend calls on the calling thread instead, under the session lock.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from instrument import _env
from instrument._backend import Backend, BackendRun, RunSpec
from instrument._dispatch import Dispatcher
from instrument._problems import Problem, report
from instrument._records import (
    ConfigUpdate,
    LogArtifact,
    Point,
    Record,
    SaveFile,
    SendAlert,
    SummaryUpdate,
)
from instrument._values import Image

#: Seconds after which a row held for coalescing (an explicit step still open) is written even
#: though its stage has not moved on: live charts lag at most about this much.
COALESCE_IDLE_SECONDS = 1.0

_monotonic = time.monotonic
_isfinite = math.isfinite


class _Held:
    """A stage's row at an explicit step, still open for more metrics of the same step."""

    __slots__ = ("values", "axis", "step", "summary", "touched")

    def __init__(self, values: dict[str, Any], axis: str, step: int, summary: dict[str, str], now: float) -> None:
        self.values = values
        self.axis = axis
        self.step = step
        self.summary = summary
        self.touched = now

    def point(self) -> Point:
        return Point(values=self.values, axis=self.axis, step=self.step, summary=self.summary)


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
        synchronous: make the backend calls on the calling thread. Always so for an adopted
            run and for a backend whose class says ``synchronous = True`` (the recording and
            disabled backends).
        environ: where ``INSTRUMENT_QUEUE_SIZE`` and ``INSTRUMENT_STALL_TIMEOUT`` are read.
    """

    def __init__(
        self,
        spec: RunSpec,
        backend: Backend,
        *,
        run: BackendRun | None = None,
        on_start: Callable[[Session], None] | None = None,
        before_finish: Callable[[Session], None] | None = None,
        synchronous: bool = False,
        environ: Any = os.environ,
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
        # Write path: prepared on the calling thread under _write_lock; delivered by _dispatcher.
        self.synchronous = bool(synchronous or run is not None or getattr(backend, "synchronous", False))
        self._held: dict[str, _Held] = {}
        self._closing = False
        self._dispatcher: Dispatcher | None = None
        if self.synchronous:
            self._write_lock: Any = self._lock
        else:
            self._write_lock = threading.Lock()
            self._dispatcher = Dispatcher(
                self._deliver,
                name=spec.id,
                bound=_env.queue_size(environ),
                stall_timeout=_env.stall_timeout(environ),
                on_idle=self._release_idle,
                on_flush=self._release_all,
                spill_folder=self._spill_folder,
            )

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
        """Report *problems*, then write *records* to the run in order.

        On the calling thread: values are checked (warnings, or errors in strict mode), steps
        assigned and rows coalesced; the backend calls happen on the dispatcher thread (or here,
        for a synchronous session). Blocks only while the queue is full (backpressure).
        """
        for problem in problems:
            report(problem, once=problem.kind == "non_finite")
        if not records:
            return
        dispatcher = self._dispatcher
        with self._write_lock:
            if self.finished or self._closing:
                self._fault("finished", f"run {self.id} is already finished; records after finish were dropped")
                return
            out: list[Record] = []
            for record in records:
                self._prepare(record, out)
            if dispatcher is None:
                if self._held:
                    self._release_idle_locked(out)
                if out:
                    run = self.start()
                    if run is None:
                        return
                    for record in out:
                        self._call(record, run)
                return
            if out:
                dispatcher.put(out)
            elif self._held:
                dispatcher.ensure_thread()  # its idle check writes the held row
        dispatcher.wait_for_room()

    def flush(self, timeout: float | None = None) -> bool:
        """Write the rows held for coalescing and wait until the backend took every record.

        Args:
            timeout: seconds to wait at most (None: as long as it takes).

        Returns:
            True if everything was handed to the backend in time.
        """
        self._release_all()
        return self._dispatcher.drain(timeout) if self._dispatcher is not None else True

    def _settle(self) -> None:
        """Before finishing: write the held rows, refuse new records, drain the queue (no lock held)."""
        before, self._before_finish = self._before_finish, None
        if before is not None and not self.finished:
            before(self)
        with self._write_lock:
            if not (self.finished or self._closing):
                self._release_all_locked()
                self._closing = True
        if self._dispatcher is not None:
            self._dispatcher.close(_env.exit_timeout())

    # Calling thread: checks, steps, coalescing ------------------------------------------------------
    def _prepare(self, record: Record, out: list[Record]) -> None:
        """Check *record*, assign its step, and append what is ready to *out* (under the write lock)."""
        if isinstance(record, Point):
            self._prepare_point(record, out)
        elif isinstance(record, SummaryUpdate):
            for key, value in record.values.items():
                if isinstance(value, float) and math.isnan(value):
                    report(Problem("non_finite", f"instrument: summary key {key!r} is NaN; wandb stores NaN "
                                   "in the summary as null", key), once=True)
            if record.owned:
                self._owned_summary.update(record.values)
            out.append(record if self.synchronous else SummaryUpdate(_detached(record.values), record.owned))
        elif isinstance(record, ConfigUpdate):
            values = {record.prefix: record.values} if record.prefix else record.values
            changed: list[str] = []
            deep_merge(self._config, values, "", changed)
            for change in changed:
                report(Problem("config", f"instrument: config key {change}: the last value was kept",
                               change.split(" ", 1)[0]))
            merged = {key: self._config[key] for key in values}
            out.append(ConfigUpdate(values=merged if self.synchronous else copy.deepcopy(merged)))
        else:
            out.append(record)

    def _prepare_point(self, point: Point, out: list[Record]) -> None:
        values = point.values
        owned = self._owned_summary
        image = False
        for key, value in values.items():
            kind = value.__class__
            if kind is float or (kind is not int and isinstance(value, float)):
                if not _isfinite(value):
                    report(Problem("non_finite", f"instrument: key {key!r} is {value}; kept as is in history", key),
                           once=True)
            elif kind is Image:
                image = True
            if owned and key in owned and key not in self._overwritten:
                self._overwritten.add(key)
                report(Problem("collision", f"instrument: key {key!r} is an eval's summary key; the series "
                               "value lands in history and the eval's summary value is kept", key))
        if image and not self.synchronous:
            values = _detached(values)
        axis = point.axis
        if axis is None:
            out.append(point if values is point.values else Point(values, None, point.step, point.summary))
            return
        explicit = point.step is not None
        step: int = point.step if explicit else self._next_step.get(axis, 0)  # type: ignore[assignment]
        last = self._last_step.get(axis)
        if last is not None and step < last:
            report(Problem("step_back", f"instrument: stage {axis!r} went back from step {last} to {step}; "
                           f"the point is kept on the {axis}/step axis", f"{axis}/step"), once=True)
        self._last_step[axis] = step
        self._next_step[axis] = step + 1
        held = self._held.get(axis)
        if held is not None:
            if explicit and held.step == step and held.values.keys().isdisjoint(values):
                held.values.update(values)
                if point.summary:
                    held.summary.update(point.summary)
                held.touched = _monotonic()
                return
            del self._held[axis]
            out.append(held.point())
        if explicit:
            self._held[axis] = _Held(dict(values), axis, step, dict(point.summary), _monotonic())
        else:
            out.append(Point(values, axis, step, point.summary))

    def _release_idle_locked(self, out: list[Record]) -> None:
        """Move held rows idle for :data:`COALESCE_IDLE_SECONDS` into *out* (write lock held)."""
        now = _monotonic()
        for axis, held in list(self._held.items()):
            if now - held.touched >= COALESCE_IDLE_SECONDS:
                del self._held[axis]
                out.append(held.point())

    def _release_idle(self) -> None:
        """Queue the held rows that went idle (the dispatcher thread calls this)."""
        if not self._held or self._closing:
            return
        with self._write_lock:
            out: list[Record] = []
            self._release_idle_locked(out)
            if out and self._dispatcher is not None:
                self._dispatcher.put(out)

    def _release_all(self) -> None:
        """Write (or queue) every held row now: flush, finish, exit."""
        if self._held:
            with self._write_lock:
                self._release_all_locked()

    def _release_all_locked(self) -> None:
        out: list[Record] = [held.point() for held in self._held.values()]
        self._held.clear()
        if out:
            if self._dispatcher is not None:
                self._dispatcher.put(out)
                return
            run = self.start()
            if run is not None:
                for record in out:
                    self._call(record, run)

    def _spill_folder(self) -> Path:
        where = self._run.location() if self._run is not None else ""
        base = Path(where) if where and Path(where).is_dir() else Path(os.environ.get(_env.WANDB_DIR) or Path.cwd()) / "wandb"
        return base / f"instrument-spill-{self.id}-{os.getpid()}"

    # Backend side: the dispatcher thread (or the calling thread, synchronous) ---------------------
    def _deliver(self, record: Record) -> None:
        """Write one prepared record to the run, starting the run on the first one."""
        run = self._run
        if run is None:
            run = self.start()
            if run is None:
                return
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
        except Exception as error:  # noqa: BLE001 - never raise into user code
            kind = type(record).__name__
            self._fault(kind, f"writing a {kind} record failed ({type(error).__name__}: {error})")

    def _point(self, point: Point, run: BackendRun) -> None:
        """Declare the row's new keys on the stage's axis (once per exact key), then log it."""
        row = dict(point.values)
        if point.axis is not None:
            axis_key = f"{point.axis}/step"
            for key in point.values:
                if key not in self._defined:
                    self._defined.add(key)
                    run.define_metric(key, axis_key, point.summary.get(key))
            row[axis_key] = point.step
        run.log(row)

    def _summary(self, update: SummaryUpdate, run: BackendRun) -> None:
        run.update_summary(dict(update.values))

    def _configure(self, update: ConfigUpdate, run: BackendRun) -> None:
        run.update_config(dict(update.values))

    def _fault(self, kind: str, message: str) -> None:
        if kind in self._faults:
            return
        self._faults.add(kind)
        report(Problem("backend", f"instrument: {message}; the training goes on"))

    def finish(self, exit_code: int = 0) -> None:
        """Re-assert the evals' summary values, then finish the run with *exit_code*; once."""
        self._settle()
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


def _detached(values: dict[str, Any]) -> dict[str, Any]:
    """Return *values* safe to write later: an image's array is copied (the caller may reuse it)."""
    for value in values.values():
        if value.__class__ is Image:
            return {k: (_copied_image(v) if v.__class__ is Image else v) for k, v in values.items()}
    return values


def _copied_image(image: Image) -> Image:
    data = image.data
    copier = getattr(data, "copy", None)
    return Image(copier(), caption=image.caption) if callable(copier) else image


def _artifact_name(path: str) -> str:
    import re
    from pathlib import Path

    return re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).name) or "artifact"
