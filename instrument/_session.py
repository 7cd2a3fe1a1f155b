"""A session: one live run and the rules W&B needs kept while writing it.

* each stage has its own axis ``<stage>/step``; each key is declared once, by exact name, with
  ``define_metric(key, step_metric="<stage>/step")``, and ``step=`` is never passed to
  ``run.log`` (wandb drops a row whose ``step=`` is below its last one, with only a warning);
* points of one stage at the same explicit step, logged by separate calls, are coalesced into one
  history row (held until the stage moves on, a flush, or :data:`COALESCE_IDLE_SECONDS` idle);
* summary keys an eval set are remembered and re-asserted at finish if a series overwrote them;
* config is deep-merged (wandb's ``config.update`` replaces a nested dict whole), the last value
  wins with a warning, and secret-looking keys are redacted;
* in a run that may be resumed, each stage's counted steps continue one past the last step the
  run recorded before (the backend's ``resumed_steps``), and an explicit step at or below it warns;
* a run start is marked for :mod:`instrument._fork_guard`, so that a fork waits for it: a child
  forked in the middle of one would inherit half of it, and its exit could undo it.

:meth:`Session.write` does this on the calling thread under a write lock (steps in call order,
strict mode raises there); its :class:`~instrument._dispatch.Dispatcher` makes the backend calls
(on its thread, or here when synchronous) through :meth:`Session.deliver`. What happens when the
backend fails is :mod:`instrument._fault_policy`'s. docs/DESIGN.md, "Dispatch", says why.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from instrument import _dispatch, _env
from instrument._backends.base import Backend, BackendRun, BufferedRun, Call, RunSpec, Stopped
from instrument._backends.call_journal import CallJournal
from instrument._config import deep_merge, nan_config_problems
from instrument._dispatch import Clock, Dispatcher
from instrument._fault_policy import FaultPolicy, unsynced
from instrument._fork_guard import Starting
from instrument._keys import metric_name
from instrument._kinds import INT64_MAX, INT64_MIN
from instrument._media import artifact_name
from instrument._problems import ONCE_PER_KEY, Problem, report
from instrument._records import (
    ConfigUpdate,
    DeclareChart,
    LogArtifact,
    Point,
    Record,
    SaveFile,
    SendAlert,
    SummaryUpdate,
)
from instrument._redact import redact_config

#: Seconds after which a row held for coalescing (an explicit step still open) is written even
#: though its stage has not moved on: live charts lag at most about this much.
COALESCE_IDLE_SECONDS = 1.0

_isfinite = math.isfinite

Found = list[tuple[Problem, bool]]  # problems found while writing, reported after it: (problem, once)


class _Held:
    """A stage's row at an explicit step, still open for more metrics of the same step."""

    __slots__ = ("axis", "function", "step", "summary", "touched", "values")

    def __init__(self, values: dict[str, Any], axis: str, step: int, summary: dict[str, str], now: float, *,
                 function: str = "") -> None:
        self.values = values
        self.axis = axis
        self.step = step
        self.summary = summary
        self.touched = now
        self.function = function

    def point(self) -> Point:
        return Point(values=self.values, axis=self.axis, step=self.step, summary=self.summary, function=self.function)


class Session:
    """One run this process writes: started lazily on the first record, finished once.

    Args:
        spec: what the run is started with.
        backend: the backend that starts it.
        run: a run some other code started (a framework's ``wandb.run``): adopted, written
            synchronously and never finished.
        on_start: called with the session after its run started (linkage registers exit hooks).
        before_finish: called before the run is finished (the owner drains journals).
        synchronous: make the backend calls on the calling thread. Always so for an adopted
            run and for a backend whose class says ``synchronous = True`` (the recording and
            disabled backends).
        environ: where ``INSTRUMENT_QUEUE_SIZE``, ``INSTRUMENT_STALL_TIMEOUT``,
            ``INSTRUMENT_EXIT_TIMEOUT`` and ``WANDB_DIR`` are read.
        clock: monotonic seconds for coalescing and the dispatcher's idle and stall timers
            (default ``time.monotonic``); tests pass one they move.
        stop_backend: at interpreter exit, stops the backend (wandb's teardown, bounded; a
            wandb-core that does not answer is killed) and says what that did; returns None when
            the interpreter is not exiting. Called when the backend stopped answering, so that
            what it never wrote can be found and kept.
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
        environ: Mapping[str, str] = os.environ,
        clock: Clock = time.monotonic,
        stop_backend: Callable[[], Stopped | None] | None = None,
    ) -> None:
        self.backend = backend
        self._stop_backend = stop_backend
        self._run = run
        self._on_start = on_start
        self._before_finish = before_finish
        self._environ = environ
        self._clock = clock
        self._policy = FaultPolicy(spec, backend, adopted=run is not None, on_spill=self._spilled)
        self._lock = threading.RLock()
        self._next_step: dict[str, int] = {}
        self._last_step: dict[str, int] = {}
        self._defined: set[str] = set()
        self._owned_summary: dict[str, Any] = {}
        self._overwritten: set[str] = set()  # owned summary keys a series wrote after the eval
        self._series_keys: set[str] = set()  # every key logged to history
        self._collided: set[str] = set()  # keys already warned about as eval/series collisions
        self._config: dict[str, Any] = {}
        # Resume: counted steps are made absolute when delivered (the base is known once the run started).
        self._resumable = spec.resume not in (None, "never")
        self._explicit_axes: set[str] = set()  # axes given an explicit step: their later steps follow it
        self._resumed: dict[str, int] | None = None  # axis -> last step recorded before the resume
        self._resume_warned: set[str] = set()
        self._gave_up = False  # starting failed everywhere, even the journal: records are dropped
        self.finished = False
        self.finished_by: str | None = None  # the code that finished the run, when other code did
        self.exit_code: int | None = None
        self._start_over: Callable[[], None] | None = None  # ends the backend's wait for our start
        # Write path: prepared on the calling thread under _write_lock, delivered by _dispatcher.
        self.synchronous = bool(synchronous or run is not None or getattr(backend, "synchronous", False))
        self._held: dict[str, _Held] = {}
        self._closing = False
        self._held_at_exit: tuple[list[Record], float] | None = None  # left by the drain at exit, with its silence
        self.lost_at_exit = False  # the backend was stopped at exit and what it lost was kept (and said)
        self._write_lock: Any = self._lock if self.synchronous else threading.Lock()
        self._dispatcher = Dispatcher(
            self,
            name=spec.id,
            bound=_env.queue_size(environ),
            bytes_bound=_env.queue_bytes(environ),
            stall_timeout=_env.stall_timeout(environ),
            spill_root=_env.journal_root(environ),
            synchronous=self.synchronous,
            clock=clock,
        )
        if run is not None:
            _watch(run, self)

    @property
    def spec(self) -> RunSpec:
        """What the run was started with (the offline spec, after a fallback from online)."""
        return self._policy.spec

    @property
    def id(self) -> str:
        """The run id (known before the run starts: instrument chooses it)."""
        return self._run.id if self._run is not None else self.spec.id

    def owned_summary(self) -> dict[str, Any]:
        """Return a copy of the summary values evals wrote to this run so far, by full key
        (their own and those journaled by subprocesses and ingested)."""
        with self._write_lock:
            return dict(self._owned_summary)

    def config(self) -> dict[str, Any]:
        """Return a deep copy of the run config as merged so far (what this process wrote)."""
        with self._write_lock:
            return copy.deepcopy(self._config)

    @property
    def started(self) -> bool:
        """Whether the run was started (or adopted)."""
        return self._run is not None

    def start(self) -> BackendRun | None:
        """Start the run now if it is not started yet; return it (None if it cannot be kept).

        If the backend raises, the fault policy falls back (offline, then a call journal) with
        one warning; only if even the journal cannot be created are the records dropped.
        """
        with self._lock:
            if self._run is None and not self.finished and not self._gave_up:
                try:
                    with Starting():
                        self._run = self._policy.start(self._dispatcher.answered)
                finally:
                    if self._start_over is not None:
                        self._start_over()
                if self._run is None:
                    self._gave_up = True
                else:
                    _watch(self._run, self)
                    if self._on_start is not None:
                        self._on_start(self)
            return self._run

    def native(self) -> Any:
        """Start the run if it has not started yet, wait for it, and return the library's own run
        object (a ``wandb.Run``); None where there is none (recorded, kept in a call journal)."""
        run = self.start()
        return getattr(run, "native", None) if run is not None else None

    def finished_elsewhere(self, call: str | None) -> None:
        """Note that other code finished this run: what is written from now on goes elsewhere (linkage).

        The backend calls this while that finish runs, after this session wrote everything it had
        queued into the run (:meth:`flush`). *call* names the code that finished a run instrument
        started (one warning); None for a run other code started (its owner finished it).
        """
        with self._write_lock:
            if self.finished:
                return
            self.finished, self.finished_by, self._closing = True, call, True
        self._dispatcher.close(1.0)
        if call is not None:
            report(Problem("shared", f"instrument: run {self.id} was finished by {call}; everything instrument had "
                           "queued for it was written into it first; what instrument writes from now on goes where it "
                           "would with no run (a new run, started on the next record, or a run that other code "
                           "started since)"))

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
            report(problem, once=problem.kind in ONCE_PER_KEY)
        if not records:
            return
        found: Found = []
        dispatcher = self._dispatcher
        with self._write_lock:
            if self.finished or self._closing:
                self._policy.fault("finished", f"run {self.id} is already finished; records after finish were dropped")
                return
            out: list[Record] = []
            for record in records:
                self._prepare(record, out, found)
            if self.synchronous and self._held:
                self._release_idle_locked(out)  # no thread checks them
            if self._run is None and self._start_over is None and not self.synchronous and (out or self._held):
                expect = getattr(self.backend, "expect", None)  # other code's wandb.init waits for this start
                self._start_over = expect(self.spec) if expect is not None else _nothing
            if out:
                dispatcher.put(out)
            elif self._held:
                dispatcher.ensure_thread()  # its idle check writes the held row
        dispatcher.wait_for_room()
        for problem, once in found:
            report(problem, once=once)

    def flush(self, timeout: float | None = None) -> bool:
        """Write the rows held for coalescing and wait until the backend took every record.

        Args:
            timeout: seconds to wait at most (None: as long as it takes).

        Returns:
            True if everything was handed to the backend in time.
        """
        return self._dispatcher.flush(timeout, progress=True)

    def _settle(self, timeout: float, waited: float | None = None) -> bool:
        """Before finishing: write the held rows, refuse new records, drain the queue (no lock held).

        The drain goes on while the backend answers and gives up once it was silent for
        *timeout* seconds. What it did not take then goes to the call journal, as after a failed
        call, so ``python -m instrument replay`` can write it; at interpreter exit the backend is
        stopped first and what it took but never wrote goes there too (:meth:`_lost_at_exit`).
        *waited* is the silence the warning names when someone else already waited (the drain at
        exit). Returns whether the backend answered.
        """
        before, self._before_finish = self._before_finish, None
        if before is not None and not self.finished:
            before(self)
        if not self._write_lock.acquire(timeout=timeout):
            return False  # a writer is stuck in a synchronous backend call: finish gives up on it below
        try:
            if not (self.finished or self._closing):
                self._release_all_locked()
                self._closing = True
        finally:
            self._write_lock.release()
        answered, left = self._dispatcher.close(timeout, progress=True)
        silence = timeout if waited is None else waited
        if self._run is None and self._dispatcher.in_flight is not None:
            left.insert(0, self._dispatcher.in_flight)  # starting the run hung: it never reached the backend
        if left:
            if self._stop_backend is not None and _dispatch.exit_deadline is not None and self._run is not None:
                self._held_at_exit = (left, silence)  # the run is finished first, then they are kept
            elif not self._lost_at_exit(left, silence):
                self._policy.keep(left, self._run, self._write_record, timeout=silence, busy=self._dispatcher.busy)
        return answered

    def keep_held_at_exit(self) -> None:
        """At interpreter exit, once every run was finished and wandb stopped: keep the records the
        drain at exit left (a backend that stopped answering), with what the backend lost."""
        held, self._held_at_exit = self._held_at_exit, None
        if held is not None:
            left, silence = held
            if not self._lost_at_exit(left, silence):
                self._policy.keep(left, self._run, self._write_record, timeout=silence, busy=self._dispatcher.busy)

    def _lost_at_exit(self, left: list[Record], silence: float) -> bool:
        """At interpreter exit, once the backend stopped answering: stop it, then keep in the call
        journal what it took and never wrote and the records *left* it never took; the run is then
        finished. Returns False, doing nothing, when the interpreter is not exiting."""
        if self._stop_backend is None:
            return False
        self._policy.stopped = True  # starting the run fails from here on because of this: no warning
        stopped = self._stop_backend()
        if stopped is None:
            self._policy.stopped = False
            return False
        held, self._held_at_exit = self._held_at_exit, None
        if held is not None:
            left = held[0] + left
        run = self._run
        calls: list[Call] = run.unwritten() if isinstance(run, BufferedRun) else []
        dropped = getattr(run, "rows_dropped_from_memory", 0)
        self.lost_at_exit = True
        self._policy.keep_lost(calls, left, run, self._write_record, stopped=stopped,
                               memory_dropped=dropped if isinstance(dropped, int) else 0)
        self.finished = True
        self.exit_code = stopped.exit_code
        return True

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
            if kind is int:
                if not INT64_MIN <= value <= INT64_MAX:
                    values[key] = float(value)
                    found.append((Problem("converted", f"instrument: key {key!r} is the int {value}, beyond the "
                                          "64-bit ints wandb keeps in history; it was stored as the float "
                                          f"{float(value)!r}, as wandb would", key), True))
            elif (kind is float or isinstance(value, float)) and not _isfinite(value):
                found.append((Problem("non_finite", f"instrument: key {key!r} is {value}; kept as is in "
                                      "history", key), True))
            if owned and key in owned:
                self._overwritten.add(key)  # wandb's summary now holds the series value
                self._collision(key, found)
        axis = point.axis
        if owned and axis is not None and f"{axis}/step" in owned:
            self._overwritten.add(f"{axis}/step")  # an eval's summary key that is this axis
            self._collision(f"{axis}/step", found)
        if axis is not None and not self._series_keys.issuperset(values):
            for key in values:
                if key not in self._series_keys and metric_name(key) is None:
                    found.append((Problem("converted", f"instrument: key {key!r} holds a '*', which wandb's "
                                          f"define_metric reads as a pattern; it is not declared on the {axis}/step "
                                          "axis, so its chart uses wandb's own step", key), True))
        self._series_keys.update(values)
        if axis is None:
            out.append(point)
            return
        explicit = point.step is not None
        if explicit and self._resumable:
            self._explicit_axes.add(axis)
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
                held.touched = self._clock()
                return
            del self._held[axis]
            out.append(held.point())
        if explicit:
            self._held[axis] = _Held(dict(values), axis, step, dict(point.summary), self._clock(),
                                     function=point.function)
        else:
            out.append(Point(values, axis, step, point.summary, point.function,
                             self._resumable and axis not in self._explicit_axes))

    def _release_idle_locked(self, out: list[Record]) -> None:
        """Move held rows idle for :data:`COALESCE_IDLE_SECONDS` into *out* (write lock held)."""
        now = self._clock()
        for axis, held in list(self._held.items()):
            if now - held.touched >= COALESCE_IDLE_SECONDS:
                del self._held[axis]
                out.append(held.point())

    # The dispatcher's side (Target): the dispatcher thread, or the calling thread -------------------
    def release_idle(self) -> None:
        """Queue the held rows that went idle (the dispatcher thread calls this).

        Never waits for the write lock: a writer holding it may be waiting for this very thread
        to drain the queue (a file record); the rows are then queued on the next round.
        """
        if not self._held or self._closing or not self._write_lock.acquire(blocking=False):
            return
        try:
            out: list[Record] = []
            self._release_idle_locked(out)
            if out:
                self._dispatcher.put(out)
        finally:
            self._write_lock.release()

    def release_held(self) -> None:
        """Write (or queue) every held row now: flush, finish, exit."""
        if self._held:
            with self._write_lock:
                self._release_all_locked()

    def _release_all_locked(self) -> None:
        out: list[Record] = [held.point() for held in self._held.values()]
        self._held.clear()
        if out:
            self._dispatcher.put(out)

    def keep_at_exit(self) -> None:
        """The drain at exit timed out: close the queue and keep its records in the call journal."""
        self._settle(0.0, waited=_env.exit_timeout(self._environ))

    def batch_written(self) -> None:
        """Hand over what the run holds back for a batch (the wandb backend's fast route)."""
        run = self._run
        if run is not None:
            self._policy.send(run)

    def deliver(self, record: Record) -> None:
        """Write one prepared record to the run, starting the run on the first one."""
        run = self._run
        if run is None:
            run = self.start()
            if run is None:
                return
        self._policy.call(record, run, self._write_record)

    def _spilled(self, journal: CallJournal, replaces_run: bool) -> None:
        """The fault policy sends records to *journal* from now on: declare the step axes again."""
        self._defined.clear()
        if replaces_run and not self._policy.adopted:
            self._run = journal

    def _write_record(self, record: Record, run: BackendRun) -> None:
        """Make the backend call(s) for one prepared record."""
        if isinstance(record, Point):
            self._point(record, run)
        elif isinstance(record, SummaryUpdate):
            run.update_summary(dict(record.values))
        elif isinstance(record, ConfigUpdate):
            run.update_config(dict(record.values))
        elif isinstance(record, SaveFile):
            run.save(record.path, record.base_path, record.policy)
        elif isinstance(record, LogArtifact):
            if record.native is not None:
                run.log_wandb_artifact(record.native, record.aliases)
            else:
                run.log_artifact(record.path, record.type, record.name or artifact_name(record.path), record.aliases,
                                 metadata=record.metadata, description=record.description)
        elif isinstance(record, SendAlert):
            run.alert(record.title, record.text, record.level)
        elif isinstance(record, DeclareChart):
            run.declare_chart(record.key, record.spec)

    def _collision(self, key: str, found: list[tuple[Problem, bool]]) -> None:
        """Note that *key* is both an eval's summary key and a series key; warn once per key."""
        if key not in self._collided:
            self._collided.add(key)
            found.append((Problem("collision", f"instrument: key {key!r} is both an eval's summary key and a "
                                  "series key; the series values stay in history and the summary keeps the "
                                  "eval's value", key), False))

    def _point(self, point: Point, run: BackendRun) -> None:
        """Declare the row's new keys on the stage's axis (once per exact key), then log it."""
        row = dict(point.values)
        behind: tuple[int, int] | None = None  # (step, last step before the resume) of an explicit step
        if point.axis is not None:
            axis_key = f"{point.axis}/step"
            for key in point.values:
                if key not in self._defined:
                    self._defined.add(key)
                    run.define_metric(key, axis_key, point.summary.get(key))
            step = point.step
            if self._resumable and step is not None:
                if self._resumed is None:
                    self._resumed = _resumed_steps(run)
                last = self._resumed.get(point.axis)
                if last is not None and point.auto:
                    step += last + 1
                elif last is not None and step <= last:
                    behind = (step, last)
            row[axis_key] = step
        run.log(row)
        if behind is not None and point.axis not in self._resume_warned:
            self._resume_warned.add(point.axis or "")
            report(Problem("resumed", f"instrument: stage {point.axis!r} of the resumed run {self.id} recorded "
                           f"steps up to {behind[1]} before; step {behind[0]} is not past it (a loop restarted "
                           f"from an older checkpoint?); the point is kept on the {point.axis}/step axis",
                           f"{point.axis}/step"), once=True)

    def finish(self, exit_code: int = 0, timeout: float | None = None) -> None:
        """Re-assert the evals' summary values, then finish the run with *exit_code*; once.

        Bounded: the backend's finish runs in a daemon thread and is given *timeout* seconds
        (default ``INSTRUMENT_EXIT_TIMEOUT``, 30 s); past it, finishing gives up with one warning
        that says where the data not yet synced is. Never raises.
        """
        timeout = _dispatch.exit_time_left(_env.exit_timeout(self._environ)) if timeout is None else timeout
        if not self._settle(timeout):  # the backend stopped answering: a short grace for its finish
            timeout = min(timeout, _dispatch.EXIT_GRACE_SECONDS)
        if self.finished:  # what the backend lost at exit was kept; the run's journal is finished
            return
        if not self._lock.acquire(timeout=timeout):
            self._policy.fault("finish_timeout", f"finishing run {self.id}: another thread kept writing to it for "
                               f"more than {timeout:g} s ({_env.INSTRUMENT_EXIT_TIMEOUT}); instrument gave up "
                               f"waiting. {unsynced(self._run)}")
            return
        try:
            if self.finished:
                return
            if self._before_finish is not None:
                self._before_finish(self)
            self.finished = True
            self.exit_code = exit_code
            if self._run is not None:
                reassert = {k: self._owned_summary[k] for k in self._overwritten}
                silence = timeout
                self._policy.finish(self._run, exit_code, reassert, timeout,
                                    on_timeout=lambda: self._lost_at_exit([], silence))
        finally:
            self._lock.release()

    def location(self) -> str:
        """Where the run's data lives (for messages)."""
        return self._run.location() if self._run is not None else "(not started)"

    def written_run(self) -> BackendRun | None:
        """Return the backend's run every record went to; None if the run never started or a
        record went to a call journal instead (the replay checks where its run really went)."""
        if self._run is None or isinstance(self._run, CallJournal) or self._policy.spill is not None:
            return None
        return self._run


def _resumed_steps(run: BackendRun) -> dict[str, int]:
    """Return each stage axis's last step that *run* recorded before it was resumed: the
    backend run's optional ``resumed_steps()`` (the wandb backend's), else none."""
    resumed = getattr(run, "resumed_steps", None)
    if resumed is None:
        return {}
    try:
        return dict(resumed())
    except Exception as error:  # a resumed run whose earlier steps cannot be read starts its axes at 0
        report(Problem("backend", f"instrument: reading the steps run {run.id} recorded before it was resumed "
                       f"failed ({type(error).__name__}: {error}); its stages count from 0 again"), once=True)
        return {}


def _nothing() -> None:
    pass


def _watch(run: BackendRun, session: Session) -> None:
    """Let *run* tell *session* when other code takes it over or finishes it (when it can tell)."""
    watch = getattr(run, "watch", None)
    if watch is not None:
        watch(session.flush, session.finished_elsewhere)
