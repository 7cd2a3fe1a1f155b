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
  says where the unsynced data is;
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
from typing import Any

import attrs

from instrument import _dispatch, _env
from instrument._backends.base import Backend, BackendRun, RunSpec, new_run_id
from instrument._dispatch import Dispatcher
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

#: Seconds after which a row held for coalescing (an explicit step still open) is written even
#: though its stage has not moved on: live charts lag at most about this much.
COALESCE_IDLE_SECONDS = 1.0

_monotonic = time.monotonic
_isfinite = math.isfinite

#: Records that name a file the caller may change right after the call: written when made.
_FILE_RECORDS = (SaveFile, LogArtifact)

Found = list[tuple[Problem, bool]]  # problems found while writing, reported after it: (problem, once)


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


#: What a backend raises when it rejects one call for its value (a bad file policy, a file that
#: does not exist, an image shape wandb cannot convert, an unknown alert level): that record is
#: dropped with a warning. Anything else is a fault of the backend: the run spills to a journal.
_REJECTIONS = (ValueError, TypeError, LookupError, AttributeError, FileNotFoundError)


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
                on_exit_timeout=lambda: self._settle(0.0, waited=_env.exit_timeout(environ)),
                spill_root=lambda: _env.journal_root(environ),
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

        On the calling thread: values are checked, steps assigned and rows coalesced; the
        backend calls happen on the dispatcher thread (or here, for a synchronous session).
        Problems found while writing (a series key that an eval owns, a stage going back, a
        changed config value) are reported after every record was handed on, so strict mode's
        :class:`~instrument.InstrumentationError` never loses a record. Blocks only while the
        queue is full (backpressure).

        Raises:
            InstrumentationError: strict mode is on and a problem is not advisory.
        """
        for problem in problems:
            report(problem, once=problem.kind == "non_finite")
        if not records:
            return
        found: Found = []
        dispatcher = self._dispatcher
        with self._write_lock:
            if self.finished or self._closing:
                self._fault("finished", f"run {self.id} is already finished; records after finish were dropped")
                return
            out: list[Record] = []
            for record in records:
                self._prepare(record, out, found)
            if dispatcher is None:
                if self._held:
                    self._release_idle_locked(out)
                if out:
                    run = self.start()
                    if run is not None:
                        for record in out:
                            self._call(record, run, found)
            elif any(record.__class__ in _FILE_RECORDS for record in out):
                self._put_files(dispatcher, out, found)
            elif out:
                dispatcher.put(out)
            elif self._held:
                dispatcher.ensure_thread()  # its idle check writes the held row
        if dispatcher is not None:
            dispatcher.wait_for_room()
        for problem, once in found:
            report(problem, once=once)

    def _put_files(self, dispatcher: Dispatcher, out: list[Record], found: Found) -> None:
        """Queue *out*, but write each file record here, once everything before it was written.

        A saved file or an artifact is taken when the call is made (``"now"`` means now; the
        caller may change or delete the file right after), so it cannot wait in the queue: the
        queue is drained first (at most the stall timeout; past it the record is queued), then
        the backend call is made on this thread, under the write lock, while the dispatcher
        thread has nothing to do.
        """
        batch: list[Record] = []
        for record in out:
            if record.__class__ not in _FILE_RECORDS:
                batch.append(record)
                continue
            if batch:
                dispatcher.put(batch)
                batch = []
            if dispatcher.drain(dispatcher.stall_timeout):
                run = self._run if self._run is not None else self.start()
                if run is not None:
                    self._call(record, run, found)
            else:
                dispatcher.put([record])
        if batch:
            dispatcher.put(batch)

    def flush(self, timeout: float | None = None) -> bool:
        """Write the rows held for coalescing and wait until the backend took every record.

        Args:
            timeout: seconds to wait at most (None: as long as it takes).

        Returns:
            True if everything was handed to the backend in time.
        """
        self._release_all()
        return self._dispatcher.drain(timeout) if self._dispatcher is not None else True

    def _settle(self, timeout: float, waited: float | None = None) -> None:
        """Before finishing: write the held rows, refuse new records, drain the queue (no lock held).

        What the backend did not take within *timeout* seconds (it hangs) goes to a call journal,
        as after a failed call, so ``python -m instrument replay`` can write it. *waited* is the
        time the warning names when someone else already waited (the drain at exit).
        """
        before, self._before_finish = self._before_finish, None
        if before is not None and not self.finished:
            before(self)
        if not self._write_lock.acquire(timeout=timeout):
            return  # a writer is stuck in a synchronous backend call: finish gives up on it below
        try:
            if not (self.finished or self._closing):
                self._release_all_locked()
                self._closing = True
        finally:
            self._write_lock.release()
        if self._dispatcher is not None:
            drained, left = self._dispatcher.close(timeout)
            if left:
                self._keep_undelivered(left, timeout if waited is None else waited)

    def _keep_undelivered(self, records: list[Record], timeout: float) -> None:
        """Write *records*, which a hung backend never took, into the run's call journal."""
        run = self._spill or self._run
        failure = f"the backend did not take {len(records)} record(s) of run {self.id} within {timeout:g} s " \
                  f"({_env.INSTRUMENT_EXIT_TIMEOUT})"
        if isinstance(run, JournalRun):
            journal = run
        else:
            try:
                journal = self._open_journal(reason=failure, partial=_location(run) if run is not None else None)
            except OSError as error:
                self._fault("journal", f"{failure}, and no journal could be created ({error}); they were dropped")
                return
            self._spill, self._defined = journal, set()  # the replayed run declares its axes again
            if run is not None:
                self._broken = run
        found: Found = []
        for record in records:
            self._call(record, journal, found)
        where = _location(journal)
        lost = "; the one being written when time ran out may be lost" if self._dispatcher and self._dispatcher.busy else ""
        self._fault("finish_undelivered", f"{failure}; they are kept in the journal {where}{lost}; once the run is over, "
                    f"write them into an offline run with `python -m instrument replay {where}`")

    # Calling thread: checks, steps, coalescing ------------------------------------------------------
    def _prepare(self, record: Record, out: list[Record], found: Found) -> None:
        """Check *record*, assign its step, and append what is ready to *out* (under the write lock)."""
        if isinstance(record, Point):
            self._prepare_point(record, out, found)
        elif isinstance(record, SummaryUpdate):
            for key, value in record.values.items():
                if isinstance(value, float) and math.isnan(value):
                    found.append((Problem("non_finite", f"instrument: summary key {key!r} is NaN; wandb stores "
                                          "NaN in the summary as null", key), True))
                if record.owned and key in self._series_keys:
                    self._collision(key, found)
            if record.owned:
                self._owned_summary.update(record.values)
            out.append(record)
        elif isinstance(record, ConfigUpdate):
            values = {record.prefix: record.values} if record.prefix else record.values
            found.extend((problem, True) for problem in nan_config_problems(values))
            if self.spec.redact_secrets:
                values = redact_config(values)
            changed: list[str] = []
            deep_merge(self._config, values, "", changed)
            for change in changed:
                found.append((Problem("config", f"instrument: config key {change}: the last value was kept",
                                      change.split(" ", 1)[0]), False))
            merged = {key: self._config[key] for key in values}
            out.append(ConfigUpdate(values=merged if self.synchronous else copy.deepcopy(merged)))
        else:
            out.append(record)

    def _prepare_point(self, point: Point, out: list[Record], found: Found) -> None:
        values = point.values  # routing made this dict (and copied arrays): the caller cannot change it
        owned = self._owned_summary
        for key, value in values.items():
            kind = value.__class__
            if (kind is float or (kind is not int and isinstance(value, float))) and not _isfinite(value):
                found.append((Problem("non_finite", f"instrument: key {key!r} is {value}; kept as is in "
                                      "history", key), True))
            if owned and key in owned:
                self._overwritten.add(key)  # wandb's summary now holds the series value
                self._collision(key, found)
        self._series_keys.update(values)
        axis = point.axis
        if axis is None:
            out.append(point)
            return
        explicit = point.step is not None
        step: int = point.step if explicit else self._next_step.get(axis, 0)  # type: ignore[assignment]
        last = self._last_step.get(axis)
        if last is None:
            self._series_keys.add(f"{axis}/step")
        elif step < last:
            found.append((Problem("step_back", f"instrument: stage {axis!r} went back from step {last} to {step}; "
                                  f"the point is kept on the {axis}/step axis", f"{axis}/step"), True))
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
        """Queue the held rows that went idle (the dispatcher thread calls this).

        Never waits for the write lock: a writer holding it may be waiting for this very thread
        to drain the queue (a file record); the rows are then queued on the next round.
        """
        if not self._held or self._closing or not self._write_lock.acquire(blocking=False):
            return
        try:
            out: list[Record] = []
            self._release_idle_locked(out)
            if out and self._dispatcher is not None:
                self._dispatcher.put(out)
        finally:
            self._write_lock.release()

    def _release_all(self) -> None:
        """Write (or queue) every held row now: flush, finish, exit."""
        if self._held:
            found: Found = []
            with self._write_lock:
                self._release_all_locked(found)
            for problem, once in found:
                report(problem, once=once)

    def _release_all_locked(self, found: Found | None = None) -> None:
        out: list[Record] = [held.point() for held in self._held.values()]
        self._held.clear()
        if out:
            if self._dispatcher is not None:
                self._dispatcher.put(out)
                return
            run = self.start()
            if run is not None:
                for record in out:
                    self._call(record, run, found if found is not None else [])

    # Backend side: the dispatcher thread (or the calling thread, synchronous) ---------------------
    def _deliver(self, record: Record) -> None:
        """Write one prepared record to the run, starting the run on the first one."""
        run = self._run
        if run is None:
            run = self.start()
            if run is None:
                return
        found: Found = []
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

    def _point(self, point: Point, run: BackendRun, found: Found) -> None:
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

    def _summary(self, update: SummaryUpdate, run: BackendRun, found: Found) -> None:
        run.update_summary(dict(update.values))

    def _configure(self, update: ConfigUpdate, run: BackendRun, found: Found) -> None:
        run.update_config(dict(update.values))

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
        timeout = _dispatch.exit_time_left(_env.exit_timeout()) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._settle(timeout)  # drain the queue first: the rest of the time is for the backend's finish
        timeout = max(deadline - time.monotonic(), min(timeout, 1.0))
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
