"""A session: one live run, its per-stage step axes, and the rules W&B needs kept.

The session turns records into backend calls:

* each stage has its own axis ``<stage>/step``; each key is declared once, by exact name, with
  ``define_metric(key, step_metric="<stage>/step")`` and ``step=`` is never passed to ``run.log``
  (a backward ``step=`` is dropped by wandb; WANDB_FACTS 1.1, 1.3b);
* summary keys an eval set are remembered and re-asserted at finish if a series overwrote them;
* config is deep-merged (wandb's ``config.update`` replaces a nested dict whole), last value wins
  with a warning;
* a backend that fails never raises into user code: one warning per kind of fault, and no value
  is lost: a run that cannot start online is started offline, and if that fails too (or a call
  fails mid-run) the rest of the run goes to a call journal on disk that
  ``python -m instrument replay`` writes into an offline run; a call that wandb rejects for its
  value (``ValueError``, ``TypeError``, a missing file...: see ``_REJECTIONS``) costs that
  record only, with a warning;
* finishing is bounded: past ``INSTRUMENT_EXIT_TIMEOUT`` seconds it gives up with a warning that
  says where the unsynced data is.

The run starts on the first record. Writes are serialised by a lock, so several threads can log.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from instrument import _env
from instrument._backend import Backend, BackendRun, RunSpec, new_run_id
from instrument._journal import JournalRun, new_spill_folder
from instrument._problems import InstrumentationError, Problem, report
from instrument._redact import redact_config
from instrument._records import (
    ConfigUpdate,
    LogArtifact,
    Point,
    Record,
    SaveFile,
    SendAlert,
    SummaryUpdate,
)
from instrument._routing import nan_config_problems


#: What a backend raises when it rejects one call for its value (a bad file policy, a file that
#: does not exist, an image shape wandb cannot convert, an unknown alert level): that record is
#: dropped with a warning. Anything else is a fault of the backend: the run spills to a journal.
_REJECTIONS = (ValueError, TypeError, LookupError, AttributeError, FileNotFoundError)


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _same(old: Any, new: Any) -> bool:
    """Return whether two config values are equal, NaN equal to NaN (also inside lists)."""
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new, strict=True))
    return bool(old == new) or (old != old and new != new)


def deep_merge(target: dict[str, Any], values: dict[str, Any], path: str, changed: list[str]) -> None:
    """Merge *values* into *target* in place; append to *changed* each leaf whose value changed."""
    for key, value in values.items():
        full = f"{path}/{key}" if path else key
        old = target.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            deep_merge(old, value, full, changed)
            continue
        if key in target and not _same(old, value):
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
        self._overwritten: set[str] = set()  # owned summary keys a series wrote after the eval
        self._series_keys: set[str] = set()  # every key logged to history
        self._collided: set[str] = set()  # keys already warned about as eval/series collisions
        self._config: dict[str, Any] = {}
        self._faults: set[str] = set()
        self._gave_up = False  # starting failed everywhere, even the journal: records are dropped
        self._spill: JournalRun | None = None  # where the rest of the run goes after a failed call
        self._broken: BackendRun | None = None  # the run whose call failed (finished at the end)
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
        """Start the run now if it is not started yet; return it (None if it cannot be kept).

        If the backend raises (``wandb.init`` failing or timing out), a run that was not offline
        is retried offline (a fresh id if wandb still holds the failed one), with one warning
        naming the folder and the ``wandb sync`` command; if that fails too, the run's calls go
        to a call journal, with one warning naming it and the ``python -m instrument replay``
        command. Only if even the journal cannot be created are the records dropped (warned).
        """
        with self._lock:
            if self._run is None and not self.finished and not self._gave_up:
                self._run = self._start_with_fallback()
                if self._run is None:
                    self._gave_up = True
                elif self._on_start is not None:
                    self._on_start(self)
            return self._run

    def _start_with_fallback(self) -> BackendRun | None:
        try:
            return self.backend.start(self.spec)
        except Exception as error:  # noqa: BLE001 - never raise into user code
            failure = f"starting run {self.spec.id} ({self.spec.mode}) failed ({_describe(error)})"
        if self.spec.mode in ("online", "run"):
            for spec in (attrs.evolve(self.spec, mode="offline"), attrs.evolve(self.spec, mode="offline", id=new_run_id())):
                try:
                    run = self.backend.start(spec)
                except Exception:  # noqa: BLE001, S112 - the next fallback follows
                    continue
                renamed = f" under the new id {run.id} (wandb still held {self.spec.id})" if run.id != self.spec.id else ""
                self.spec = spec
                where = run.location()
                self._fault("init", f"{failure}; the run was written offline{renamed} to {where} instead; "
                            f"upload it later with `wandb sync {where}`")
                return run
        try:
            journal = self._open_journal(reason=failure)
        except OSError as error:
            self._fault("init", f"{failure}, and its journal could not be created ({error}); the run's "
                        "records are dropped")
            return None
        self._fault("init", f"{failure}; its records are kept in the journal {journal.folder}; write them "
                    f"into an offline run with `python -m instrument replay {journal.folder}`")
        return journal

    def _open_journal(self, *, reason: str, partial: str | None = None) -> JournalRun:
        root = _env.journal_root()
        return JournalRun(new_spill_folder(root, self.spec.id), self.spec, reason=reason, partial=partial)

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Report *problems*, write *records* to the run in order, then report what writing found.

        Problems found while writing (a series key that an eval owns, a stage going back, a
        changed config value) are reported after every record was written, so strict mode's
        :class:`~instrument.InstrumentationError` never loses a record.

        Raises:
            InstrumentationError: strict mode is on and a problem is not advisory.
        """
        for problem in problems:
            report(problem, once=problem.kind == "non_finite")
        records = list(records)
        if not records:
            return
        found: list[tuple[Problem, bool]] = []
        with self._lock:
            if self.finished:
                self._fault("finished", f"run {self.id} is already finished; records after finish were dropped")
                return
            run = self.start()
            if run is None:
                return
            for record in records:
                self._call(record, run, found)
        for problem, once in found:
            report(problem, once=once)

    def _call(self, record: Record, run: BackendRun, found: list[tuple[Problem, bool]]) -> None:
        if self._spill is not None:  # a call failed earlier: the rest of the run goes to its journal
            run = self._spill
        try:
            if isinstance(record, Point):
                self._point(record, run, found)
            elif isinstance(record, SummaryUpdate):
                self._summary(record, run, found)
            elif isinstance(record, ConfigUpdate):
                self._configure(record, run, found)
            elif isinstance(record, SaveFile):
                run.save(record.path, record.base_path, record.policy)
            elif isinstance(record, LogArtifact):
                name = record.name or _artifact_name(record.path)
                run.log_artifact(record.path, record.type, name, record.aliases)
            elif isinstance(record, SendAlert):
                run.alert(record.title, record.text, record.level)
        except InstrumentationError:
            raise  # strict mode: a problem with the user's values, not a backend fault
        except _REJECTIONS as error:  # wandb rejected this value; the run itself is fine
            kind = type(record).__name__
            self._fault(f"rejected {kind}", f"writing a {kind} record to run {self.id} failed ({_describe(error)}); "
                        "wandb rejected it, so it was dropped")
        except Exception as error:  # noqa: BLE001 - a backend fault: never raise into user code
            self._spill_from(record, run, error, found)

    def _spill_from(self, record: Record, run: BackendRun, error: Exception,
                    found: list[tuple[Problem, bool]]) -> None:
        """Keep *record*, whose write to *run* raised *error*, and every later record in a journal."""
        kind = type(record).__name__
        failure = f"writing a {kind} record to run {self.id} failed ({_describe(error)})"
        if isinstance(run, JournalRun):
            self._fault("journal", f"{failure}; the record was dropped")
            return
        try:
            journal = self._open_journal(reason=failure, partial=_location(run))
        except OSError as journal_error:
            self._fault("journal", f"{failure}, and no journal could be created ({journal_error}); the "
                        "record was dropped")
            return
        self._spill, self._broken = journal, run
        if not self._adopted:
            self._run = journal
        self._defined.clear()  # the replayed run must declare its step axes again
        self._fault("spill", f"{failure}; the values written before are in {_location(run)}, this record and "
                    f"every later one of the run are kept in the journal {journal.folder}; once the run is "
                    f"over, write them into an offline run with `python -m instrument replay {journal.folder}`")
        if isinstance(record, Point) and record.axis is not None and record.step is None:
            record = attrs.evolve(record, step=self._last_step.get(record.axis))  # the step it was given
        self._call(record, journal, found)

    def _collision(self, key: str, found: list[tuple[Problem, bool]]) -> None:
        """Note that *key* is both an eval's summary key and a series key; warn once per key."""
        if key not in self._collided:
            self._collided.add(key)
            found.append((Problem("collision", f"instrument: key {key!r} is both an eval's summary key and a "
                                  "series key; the series values stay in history and the summary keeps the "
                                  "eval's value", key), False))

    def _point(self, point: Point, run: BackendRun, found: list[tuple[Problem, bool]]) -> None:
        row = dict(point.values)
        for key, value in row.items():
            if _non_finite(value):
                found.append((Problem("non_finite", f"instrument: key {key!r} is {value}; kept as is in history",
                                      key), True))
            if key in self._owned_summary:
                self._overwritten.add(key)  # wandb's summary now holds the series value
                self._collision(key, found)
        if point.axis is not None:
            axis_key = f"{point.axis}/step"
            step = point.step if point.step is not None else self._next_step.get(point.axis, 0)
            last = self._last_step.get(point.axis)
            if last is not None and step < last:
                found.append((Problem("step_back", f"instrument: stage {point.axis!r} went back from step {last} "
                                      f"to {step}; the point is kept on the {axis_key} axis", axis_key), True))
            self._last_step[point.axis] = step
            self._next_step[point.axis] = step + 1
            for key in row:
                if key not in self._defined:
                    self._defined.add(key)
                    run.define_metric(key, axis_key, point.summary.get(key))
            row[axis_key] = step
        self._series_keys.update(row)
        run.log(row)

    def _summary(self, update: SummaryUpdate, run: BackendRun, found: list[tuple[Problem, bool]]) -> None:
        for key, value in update.values.items():
            if isinstance(value, float) and math.isnan(value):
                found.append((Problem("non_finite", f"instrument: summary key {key!r} is NaN; wandb stores NaN "
                                      "in the summary as null", key), True))
            if update.owned and key in self._series_keys:
                self._collision(key, found)
        if update.owned:
            self._owned_summary.update(update.values)
        run.update_summary(dict(update.values))

    def _configure(self, update: ConfigUpdate, run: BackendRun, found: list[tuple[Problem, bool]]) -> None:
        values = {update.prefix: update.values} if update.prefix else update.values
        found.extend((problem, True) for problem in nan_config_problems(values))
        if self.spec.redact_secrets:
            values = redact_config(values)
        changed: list[str] = []
        deep_merge(self._config, values, "", changed)
        for change in changed:
            found.append((Problem("config", f"instrument: config key {change}: the last value was kept",
                                  change.split(" ", 1)[0]), False))
        run.update_config({key: self._config[key] for key in values})

    def _fault(self, kind: str, message: str) -> None:
        if kind in self._faults:
            return
        self._faults.add(kind)
        goes_on = "" if kind.startswith("finish") else "; the training goes on"
        report(Problem("backend", f"instrument: {message.rstrip('.')}{goes_on}"))

    def finish(self, exit_code: int = 0, timeout: float | None = None) -> None:
        """Re-assert the evals' summary values, then finish the run with *exit_code*; once.

        Bounded: the backend's finish runs in a daemon thread and is given *timeout* seconds
        (default ``INSTRUMENT_EXIT_TIMEOUT``, 30 s); past it, finishing gives up with one warning
        that says where the data not yet synced is. Never raises.
        """
        timeout = _env.exit_timeout() if timeout is None else timeout
        if not self._lock.acquire(timeout=timeout):
            self._fault("finish_timeout", f"finishing run {self.id}: another thread kept writing to it for more "
                        f"than {timeout:g} s ({_env.INSTRUMENT_EXIT_TIMEOUT}); instrument gave up waiting. "
                        f"{_unsynced(self._run)}")
            return
        try:
            if self.finished:
                return
            if self._before_finish is not None:
                self._before_finish(self)
            self.finished = True
            self.exit_code = exit_code
            run = self._run
            if run is None:
                return
            reassert = {k: self._owned_summary[k] for k in self._overwritten}
            spill, broken, adopted = self._spill, self._broken, self._adopted

            def close() -> None:
                target = spill or run
                if reassert:
                    target.update_summary(reassert)
                if spill is not None:
                    spill.finish(exit_code)
                if not adopted:
                    (broken or run).finish(exit_code)

            done, error = _bounded(close, timeout, name=f"instrument-finish-{self.id}")
            if not done:
                self._fault("finish_timeout", f"finishing run {self.id} took more than {timeout:g} s "
                            f"({_env.INSTRUMENT_EXIT_TIMEOUT}); instrument gave up waiting. {_unsynced(run)}")
            elif error is not None:
                self._fault("finish", f"finishing run {self.id} failed ({_describe(error)}). "
                            f"{_unsynced(spill or run)}")
        finally:
            self._lock.release()

    def location(self) -> str:
        """Where the run's data lives (for messages)."""
        return self._run.location() if self._run is not None else "(not started)"


def _describe(error: BaseException) -> str:
    """Return ``Type: first line of the message`` (wandb's messages run over several lines)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _location(run: BackendRun) -> str:
    try:
        return run.location()
    except Exception:  # noqa: BLE001 - only for a message
        return "(unknown)"


def _unsynced(run: BackendRun | None) -> str:
    """Say where the data of *run* that may not be synced is, and the command that syncs it."""
    if run is None:
        return "The run never started."
    where = _location(run)
    if isinstance(run, JournalRun):
        return f"Its data is in the journal {where}; write it into an offline run with " \
               f"`python -m instrument replay {where}`."
    if os.path.isdir(where):
        return f"Its data is in {where}; upload what is missing with `wandb sync {where}`."
    return f"Its data is in {where}."


def _bounded(function: Callable[[], None], timeout: float, name: str) -> tuple[bool, BaseException | None]:
    """Run *function* in a daemon thread for at most *timeout* seconds.

    Returns ``(done, error)``: whether it returned in time, and what it raised.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            function()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            errors.append(error)

    thread = threading.Thread(target=target, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new threads (interpreter shutting down): run it here
        target()
        return True, errors[0] if errors else None
    thread.join(timeout)
    if thread.is_alive():
        return False, None
    return True, errors[0] if errors else None


def _artifact_name(path: str) -> str:
    import re
    from pathlib import Path

    return re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).name) or "artifact"
