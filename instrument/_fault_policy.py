"""Fault policy: what happens to one run's records when its backend fails; never an exception.

* starting: a run that cannot start online is started offline (under a fresh id if wandb still
  holds the failed one); if that fails too, its calls go to a call journal on disk;
* a call the backend rejects for its value (:data:`REJECTIONS`) costs that record, with a warning;
* any other failing call sends that record and every later one of the run to a call journal,
  for ``python -m instrument replay``;
* finishing is bounded by ``INSTRUMENT_EXIT_TIMEOUT``; past it, a warning says where the data
  not yet synced is.

Each kind of fault is warned about once per run, naming the run, the cause and the way back.
The session (:mod:`instrument._session`) keeps the run's state and calls this module.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import attrs

from instrument import _env
from instrument._backends.base import (
    Backend,
    BackendRun,
    BufferedRun,
    Call,
    RunSpec,
    Stopped,
    ValuesDropped,
    new_run_id,
)
from instrument._backends.call_journal import CallJournal, new_call_journal_folder
from instrument._problems import InstrumentationError, Problem, describe, report
from instrument._records import Point, Record, SummaryUpdate

#: What a backend raises when it rejects one call for its value (a bad file policy, a file that
#: does not exist, an image shape wandb cannot convert, an unknown alert level): that record is
#: dropped with a warning. Anything else is a fault of the backend: the run spills to a journal.
REJECTIONS = (ValueError, TypeError, LookupError, AttributeError, FileNotFoundError)

#: Writes one record to a run (the session's backend calls for it).
Write = Callable[[Record, BackendRun], None]


class FaultPolicy:
    """The fault policy of one run: start with fallbacks, spill after a failed call, finish bounded.

    Args:
        spec: what the run is started with (replaced by the offline spec of a fallback).
        backend: the backend that starts it.
        adopted: the run is a framework's (``wandb.run``): never finished here, and a failed call
            spills to the journal without replacing it.
        on_spill: called with the call journal once records start going there, and whether it
            replaces the run (after a failed call, not for records kept at finish): the session
            declares its step axes again, and writes to the journal from then on.

    Attributes:
        spill: the call journal the rest of the run goes to after a failed call, else None.
        broken: the run whose call failed (finished at the end), else None.
    """

    def __init__(self, spec: RunSpec, backend: Backend, *, adopted: bool,
                 on_spill: Callable[[CallJournal, bool], None]) -> None:
        self.spec = spec
        self.backend = backend
        self.adopted = adopted
        self.spill: CallJournal | None = None
        self.broken: BackendRun | None = None
        self._on_spill = on_spill
        self._faults: set[str] = set()
        self.stopped = False  # the backend was stopped at exit and what it lost is kept

    def fault(self, kind: str, message: str) -> None:
        """Warn about *message* unless a fault of *kind* was already warned about for this run."""
        if kind in self._faults:
            return
        self._faults.add(kind)
        goes_on = "" if kind.startswith("finish") else "; the training goes on"
        report(Problem("backend", f"instrument: {message.rstrip('.')}{goes_on}"))

    def start(self) -> BackendRun | None:
        """Start the run, falling back to offline, then to a call journal; None if all failed (warned).

        None without a word when the backend was stopped at exit meanwhile (:meth:`keep_lost`
        kept the records already).
        """
        try:
            return self.backend.start(self.spec)
        except Exception as error:  # never raise into user code
            if self.stopped:
                return None
            failure = f"starting run {self.spec.id} ({self.spec.mode}) failed ({describe(error)})"
        if self.spec.mode in ("online", "run"):
            offline = attrs.evolve(self.spec, mode="offline")
            for spec in (offline, attrs.evolve(offline, id=new_run_id())):  # a fresh id if wandb holds the old one
                try:
                    run = self.backend.start(spec)
                except Exception:  # the next fallback follows
                    run = None
                if run is None:
                    continue
                renamed = "" if run.id == self.spec.id else (
                    f" under the new id {run.id} (wandb still held {self.spec.id})")
                self.spec = spec
                where = run.location()
                self.fault("init", f"{failure}; the run was written offline{renamed} to {where} instead; "
                           f"upload it later with `instrument sync {where}`")
                return run
        try:
            journal = self._open_journal(reason=failure)
        except OSError as error:
            self.fault("init", f"{failure}, and its journal could not be created ({error}); the run's "
                       "records are dropped")
            return None
        self.fault("init", f"{failure}; its records are kept in the journal {journal.folder}; write them "
                   f"into an offline run with `python -m instrument replay {journal.folder}`")
        return journal

    def _open_journal(self, *, reason: str, partial: str | None = None) -> CallJournal:
        folder = new_call_journal_folder(_env.journal_root(), self.spec.id)
        return CallJournal(folder, self.spec, reason=reason, partial=partial)

    def call(self, record: Record, run: BackendRun, write: Write) -> None:
        """Write *record* to *run* (or to the call journal once the run spilled) with *write*.

        Raises:
            InstrumentationError: strict mode, for a problem with the user's values (not a fault).
        """
        if self.spill is not None:  # a call failed earlier: the rest of the run goes to its journal
            run = self.spill
        try:
            write(record, run)
        except InstrumentationError:
            raise
        except ValuesDropped as error:  # the record landed without the values wandb could not write
            dropped(record, error)
        except REJECTIONS as error:  # wandb rejected this value; the run itself is fine
            kind = type(record).__name__
            self.fault(f"rejected {kind}", f"writing a {kind} record to run {self.spec.id} failed "
                       f"({describe(error)}); wandb rejected it, so it was dropped")
        except Exception as error:  # a backend fault: never raise into user code
            self._spill_from(record, run, error, write)

    def send(self, run: BackendRun) -> None:
        """Hand over what *run* holds back (a :class:`BufferedRun`), unless the run spilled already.

        If that fails, the rows it held and every later record of the run go to a call journal,
        as after any failed call.
        """
        if self.spill is not None or not isinstance(run, BufferedRun):
            return
        try:
            run.send_pending()
        except Exception as error:  # a backend fault: never raise into user code
            self._spill_from(None, run, error, None)

    def _spill_from(self, record: Record | None, run: BackendRun, error: Exception, write: Write | None) -> None:
        """Keep *record*, whose write to *run* raised *error*, and every later record in a journal;
        first the calls *run* held back and never handed over (a :class:`BufferedRun`)."""
        kind = type(record).__name__ if record is not None else "history"
        failure = f"writing a {kind} record to run {self.spec.id} failed ({describe(error)})"
        if isinstance(run, CallJournal):
            self.fault("journal", f"{failure}; the record was dropped")
            return
        try:
            journal = self._open_journal(reason=failure, partial=location(run))
        except OSError as journal_error:
            self.fault("journal", f"{failure}, and no journal could be created ({journal_error}); the "
                       "record was dropped")
            return
        self.spill, self.broken = journal, run
        self._on_spill(journal, True)
        self.fault("spill", f"{failure}; the values written before are in {location(run)}, this record and "
                   f"every later one of the run are kept in the journal {journal.folder}; once the run is "
                   f"over, write them into an offline run with `python -m instrument replay {journal.folder}`")
        if isinstance(run, BufferedRun):
            self.write_calls(run.unsent(), journal)
        if record is not None and write is not None:
            self.call(record, journal, write)

    def write_calls(self, calls: list[Call], journal: CallJournal) -> None:
        """Write backend *calls* (a method name and its arguments each) into *journal*, in order."""
        for method, args in calls:
            try:
                getattr(journal, method)(**args)
            except Exception as error:  # one call that cannot be kept must not lose the others
                self.fault("journal", f"a {method} call of run {self.spec.id} could not be kept in the journal "
                           f"{journal.folder} ({describe(error)}); it was dropped")

    def keep(self, records: list[Record], run: BackendRun | None, write: Write, *, timeout: float,
             busy: bool) -> None:
        """Write *records*, which a hung backend never took within *timeout* s, into the call journal.

        *busy* says whether a backend call was still running when time ran out (its record may
        be lost).
        """
        run = self.spill or run
        failure = (f"the backend did not take {len(records)} record(s) of run {self.spec.id} within {timeout:g} s "
                   f"({_env.INSTRUMENT_EXIT_TIMEOUT})")
        if isinstance(run, CallJournal):
            journal = run
        else:
            try:
                journal = self._open_journal(reason=failure, partial=location(run) if run is not None else None)
            except OSError as error:
                self.fault("journal", f"{failure}, and no journal could be created ({error}); they were dropped")
                return
            self.spill = journal
            self._on_spill(journal, False)
            if run is not None:
                self.broken = run
        for record in records:
            self.call(record, journal, write)
        where = location(journal)
        lost = "; the one being written when time ran out may be lost" if busy else ""
        self.fault("finish_undelivered", f"{failure}; they are kept in the journal {where}{lost}; once the run is "
                   f"over, write them into an offline run with `python -m instrument replay {where}`")

    def keep_lost(self, calls: list[Call], records: list[Record], run: BackendRun | None, write: Write, *,
                  stopped: Stopped, memory_dropped: int = 0) -> None:
        """At interpreter exit, after the backend stopped answering and was stopped: keep what it lost.

        Writes *calls* (what the backend took and never wrote durably) and then *records* (what
        it never took) into the run's call journal, finishes the journal with the program's exit
        status, and says once, accurately, what happened and where everything is.

        Args:
            calls: backend calls, in order (:meth:`BufferedRun.unwritten`).
            records: prepared records the backend never took, in order.
            run: the run they were for (its folder holds what the backend did write).
            write: the session's backend calls for one record.
            stopped: what stopping the backend did.
            memory_dropped: rows handed to the backend in its last seconds that were not kept in
                memory (over their bytes bound): they may be missing.
        """
        self.stopped = True
        stop = (f"run {self.spec.id}: wandb did not answer for {stopped.waited:g} s at exit "
                f"({_env.INSTRUMENT_EXIT_TIMEOUT})")
        if stopped.killed is not None:
            stop += f", so instrument stopped wandb-core (pid {stopped.killed}) with SIGKILL to let the process exit"
        where = location(run) if run is not None and not isinstance(run, CallJournal) else None
        written = f"what wandb wrote is in {where}" if where and os.path.isdir(where) else "wandb wrote nothing"
        dropped = (f"; {memory_dropped} row(s) handed to wandb in its last seconds were more than instrument keeps "
                   f"in memory ({_env.INSTRUMENT_QUEUE_BYTES}) and may be missing") if memory_dropped else ""
        if not calls and not records:
            upload = f"; upload it with `instrument sync {where}`" if where and os.path.isdir(where) else ""
            self.fault("finish_timeout", f"{stop}; {written}, nothing is missing from it{dropped}{upload}")
            return
        journal = self.spill
        if journal is None:
            try:
                journal = self._open_journal(reason=stop, partial=where)
            except OSError as error:
                self.fault("finish_timeout", f"{stop}; {written}; {len(calls) + len(records)} call(s) it never wrote "
                           f"could not be kept: no journal could be created ({error}){dropped}")
                return
            self.spill = journal
            self._on_spill(journal, False)
            if run is not None and not isinstance(run, CallJournal):
                self.broken = run
        self.write_calls(calls, journal)
        for record in records:
            self.call(record, journal, write)
        journal.finish(stopped.exit_code)
        rows = sum(method == "log" for method, _ in calls) + sum(isinstance(r, Point) for r in records)
        others = sum(method not in ("log", "define_metric") for method, _ in calls) + len(records) - rows
        what = f"{rows} history row(s)" + (f" and {others} other record(s)" if others else "")
        none_twice = " (none of those already in the run folder)" if where and os.path.isdir(where) else ""
        self.fault("finish_timeout", f"{stop}; {written}; the {what} it never wrote are kept in the journal "
                   f"{journal.folder}{none_twice}; write them into the run with "
                   f"`python -m instrument replay {journal.folder}`{dropped}")

    def finish(self, run: BackendRun, exit_code: int, reassert: dict[str, object], timeout: float, *,
               on_timeout: Callable[[], bool] | None = None) -> None:
        """Re-assert *reassert* in the summary and finish *run* (and its journal) within *timeout* s.

        An adopted run is left running (its backend run only writes what waits for its owner's
        rows). Past *timeout*, *on_timeout* is called (at interpreter exit the session stops the
        backend and keeps what it lost); unless it returns True, and whenever finishing fails, one
        warning says where the data not yet synced is.
        """
        spill, broken, adopted = self.spill, self.broken, self.adopted

        def close() -> None:
            target = spill or run
            if reassert:
                target.update_summary(dict(reassert))
            if spill is not None:
                spill.finish(exit_code)
            if not adopted or broken is None:  # an adopted run's finish never finishes it: it writes the
                (broken or run).finish(exit_code)  # points waiting for its owner's rows

        done, error = bounded(close, timeout, name=f"instrument-finish-{self.spec.id}")
        if not done and on_timeout is not None and on_timeout():
            return
        if not done:
            self.fault("finish_timeout", f"finishing run {self.spec.id} took more than {timeout:g} s "
                       f"({_env.INSTRUMENT_EXIT_TIMEOUT}); instrument gave up waiting. {unsynced(run)}")
        elif error is not None:
            self.fault("finish", f"finishing run {self.spec.id} failed ({describe(error)}). {unsynced(spill or run)}")


def dropped(record: Record, error: ValuesDropped) -> None:
    """Report each value a backend could not write, naming the function the record came from.

    Raises:
        InstrumentationError: in strict mode, for the first value (as routing raises for one it drops).
    """
    function = record.function if isinstance(record, Point | SummaryUpdate) and record.function else ""
    for key, kind, reason in error.dropped:
        where = f"instrument: {function}: " if function else "instrument: "
        report(Problem("unroutable", f"{where}key {key!r}: wandb could not write a {kind} ({reason})", key,
                       "it was dropped"))


def location(run: BackendRun) -> str:
    """Return where *run*'s data lives, for a message (``"(unknown)"`` if the backend cannot say)."""
    try:
        return run.location()
    except Exception:  # only for a message
        return "(unknown)"


def unsynced(run: BackendRun | None) -> str:
    """Say where the data of *run* that may not be synced is, and the command that syncs it."""
    if run is None:
        return "The run never started."
    where = location(run)
    if isinstance(run, CallJournal):
        return (f"Its data is in the journal {where}; write it into an offline run with "
                f"`python -m instrument replay {where}`.")
    if os.path.isdir(where):
        return f"Its data is in {where}; upload what is missing with `instrument sync {where}`."
    return f"Its data is in {where}."


def bounded(function: Callable[[], None], timeout: float, name: str) -> tuple[bool, BaseException | None]:
    """Run *function* in a daemon thread for at most *timeout* seconds.

    Returns ``(done, error)``: whether it returned in time, and what it raised.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            function()
        except BaseException as error:  # handed to the caller
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
