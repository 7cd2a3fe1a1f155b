"""Dispatch: records leave the calling thread at once; one thread per run calls the backend.

A :class:`Dispatcher` takes the records a session prepared on the calling thread (steps
assigned, checks done) into a bounded queue, and a daemon thread hands them to the session's
backend side (:class:`Target`) in order. The queue never drops: a full queue makes the writer
wait, and a backend that makes no progress for the stall timeout gets new records spilled to an
on-disk record journal, written back when it moves again. The thread writes in the writer's
gaps (``run.log`` holds the GIL), and every live dispatcher is drained when the main thread
ends, before wandb's exit hooks. A synchronous dispatcher (the recording and disabled backends,
``INSTRUMENT_SYNC=1``) delivers on the calling thread instead. docs/DESIGN.md, "Dispatch", says
why; nothing here imports wandb.
"""

from __future__ import annotations

import atexit
import collections
import importlib
import os
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from instrument import _env
from instrument._journal import JournalReader, JournalWriter
from instrument._problems import Problem, report, working_for
from instrument._records import LogArtifact, Record, SaveFile, record_bytes

#: The default queue bound, in records (one record is one history row, summary update, ...).
DEFAULT_BOUND = 10_000

#: The default queue bound, in bytes (:func:`~instrument._records.record_bytes` estimates them).
DEFAULT_BYTES = 64 * 1024 * 1024

#: A drain that lasts longer than this (seconds) prints a progress line on stderr, and another
#: every :data:`PROGRESS_EVERY_SECONDS`.
PROGRESS_AFTER_SECONDS = 3.0
PROGRESS_EVERY_SECONDS = 5.0

#: Records the thread takes from the queue at once (fewer lock round trips with the writer).
BATCH = 64

#: Seconds between the thread's calls of ``on_idle`` (held rows gone idle are queued).
IDLE_CHECK_SECONDS = 0.25

#: The writer counts as busy if it queued a record this recently (seconds). While it is busy the
#: thread leaves the queue alone (below the high-water mark, for at most MAX_LAG_SECONDS):
#: ``run.log`` is GIL-holding Python, so writing while the training thread runs Python slows
#: that thread down; records are written in its gaps instead (a GPU step, data loading in C).
QUIET_SECONDS = 0.002

#: The oldest queued record waits at most about this long (seconds) before the thread writes,
#: busy writer or not: live charts lag at most about a second.
MAX_LAG_SECONDS = 1.0

#: Records that name a file the caller may change right after the call: written when made.
TAKEN_AT_THE_CALL = (SaveFile, LogArtifact)

#: A clock: monotonic seconds. Injectable, so tests move time instead of waiting for it.
Clock = Callable[[], float]

_monotonic = time.monotonic


class Target(Protocol):
    """What a dispatcher writes for: the backend side of one run's session (the one interface
    between a session and its dispatcher)."""

    def deliver(self, record: Record) -> None:
        """Write one prepared record to the backend, starting the run on the first one."""

    def release_idle(self) -> None:
        """:meth:`Dispatcher.put` the rows held for coalescing that went idle; never wait for a lock
        (called on the thread about every :data:`IDLE_CHECK_SECONDS`)."""

    def release_held(self) -> None:
        """:meth:`Dispatcher.put` every row held for coalescing (a flush)."""

    def keep_at_exit(self) -> None:
        """The drain at interpreter exit ran out of time: close the dispatcher and keep its records."""

    def batch_written(self) -> None:
        """The records delivered since the last call are all there is for now: hand over anything
        the backend holds back (called after each batch, on the thread or the calling thread)."""


class Dispatcher:
    """One run's queue and the thread that writes it to the backend.

    Args:
        target: the session's backend side; :meth:`Target.deliver` is called in queue order, on
            the thread (or on the calling thread when *synchronous*). On the thread a raising
            call is reported once and that record is lost.
        name: used in the thread's name and in messages (the run id).
        bound: the most records the queue holds before :meth:`wait_for_room` blocks writers.
        bytes_bound: the most bytes of records (estimated) the queue holds before writers wait.
        stall_timeout: seconds without backend progress after which writers stop waiting and
            records spill to an on-disk journal.
        spill_root: the folder under which the spill folder is made when spilling starts
            (default ``<WANDB_DIR>/wandb``, read then).
        synchronous: deliver every record on the calling thread, in :meth:`put`; no thread.
        clock: monotonic seconds for the idle checks and the stall timeout (default
            ``time.monotonic``); a test moves it instead of waiting. The writer's gaps, the lag
            bound and drain timeouts use real time.
    """

    def __init__(
        self,
        target: Target,
        *,
        name: str,
        bound: int = DEFAULT_BOUND,
        bytes_bound: int = DEFAULT_BYTES,
        stall_timeout: float = 60.0,
        spill_root: Path | None = None,
        synchronous: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.bound = max(1, bound)
        self.high_water = max(1, self.bound // 2)
        self.bytes_bound = max(1, bytes_bound)
        self._bytes_high_water = self.bytes_bound // 2
        self.stall_timeout = stall_timeout
        self.target = target
        self._spill_root = spill_root
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._items: collections.deque[Record] = collections.deque()
        self._sizes: collections.deque[int] = collections.deque()  # record_bytes of each item
        self._bytes = 0  # their sum
        self._delivered = 0  # records handed to the backend so far
        self._answered = _monotonic()  # real time when the backend last finished a call (or began a batch)
        self._thread: threading.Thread | None = None
        self._inline = synchronous  # also when no thread could be started (interpreter shutdown)
        self._idle = False  # the thread waits on the condition
        self._busy = False  # the thread is writing a record it took
        self._waiters = 0  # writers (full queue) and drainers waiting on the condition
        self._closed = False
        self._last_put = 0.0  # when a writer last queued records
        self._oldest: float | None = None  # when the queue last went from empty to non-empty
        self._progress = clock()  # when the backend last took a record (or began one)
        self._spilling = False
        self._spill: JournalWriter | None = None  # while records spill
        self._spill_reader: JournalReader | None = None
        self.spill_path: Path | None = None
        self._batch: list[Record] = []  # the records the thread took from the queue
        self._current = 0  # the index in _batch of the record being written
        self._abandoned = False  # close() timed out: the thread must not write the batch's rest
        self.in_flight: Record | None = None  # after close() timed out: the record whose delivery never returned

    # Writers (calling threads) -------------------------------------------------------------------
    def ensure_thread(self) -> None:
        """Start the thread if it is not running yet (it also writes held rows once idle)."""
        if self._thread is None and not self._inline:
            self._start_thread()

    @property
    def synchronous(self) -> bool:
        """Whether records are delivered on the calling thread (no dispatcher thread)."""
        return self._inline

    def put(self, records: Sequence[Record]) -> None:
        """Queue *records* after everything queued before (never blocks; see :meth:`wait_for_room`).

        The session calls this under its write lock, so the queue's order is the call order.
        A saved file or an artifact is taken when the call is made (``"now"`` means now; the
        caller may change or delete the file right after), so it does not wait in the queue:
        the queue is drained first (at most the stall timeout; past it the record is queued),
        then it is delivered on this thread. Synchronous, every record is delivered here.
        """
        if self._thread is None and not self._inline:
            self._start_thread()
        if self._inline:
            for record in records:
                self.target.deliver(record)
            self.target.batch_written()
            return
        start = 0
        for index, record in enumerate(records):
            if record.__class__ in TAKEN_AT_THE_CALL:
                if index > start:
                    self._queue(records[start:index])
                start = index + 1
                if self.drain(self.stall_timeout):
                    self.target.deliver(record)
                    self.target.batch_written()
                else:
                    self._queue([record])
        if start < len(records):
            self._queue(records[start:] if start else records)

    def _queue(self, records: Sequence[Record]) -> None:
        sizes = [record_bytes(record) for record in records]  # outside the lock: the thread may want it
        with self._cond:
            if self._spilling:
                self._spill_records(records)
                return
            now = self._last_put = _monotonic()
            items = self._items
            self._sizes.extend(sizes)
            self._bytes += sum(sizes)
            if not items:
                self._oldest = now
                items.extend(records)
                if self._idle:
                    self._cond.notify_all()  # from the long idle wait to short polls
            else:
                items.extend(records)
                if self._idle and self._high():
                    self._cond.notify_all()

    def _full(self) -> bool:
        """Whether the queue holds its bound of records or of bytes (the caller may hold the condition)."""
        return len(self._items) >= self.bound or self._bytes >= self.bytes_bound

    def _high(self) -> bool:
        """Whether the queue is past its high-water mark, in records or in bytes."""
        return len(self._items) >= self.high_water or self._bytes >= self._bytes_high_water

    def wait_for_room(self) -> None:
        """Block while the queue is full (backpressure); spill once the backend stalls.

        Call it without holding any session lock: the thread may need one to start the run.
        """
        if not self._full() or threading.current_thread() is self._thread:
            return
        started_spilling = False
        with self._cond:
            while self._full() and not self._spilling and not self._closed:
                if self._clock() - self._progress >= self.stall_timeout:
                    self._spilling = started_spilling = True
                    folder = self._folder()
                    break
                self._wait(IDLE_CHECK_SECONDS)
        if started_spilling:
            report(Problem("backend", f"instrument: run {self.name}: the backend made no progress for "
                           f"{self.stall_timeout:g} s; new records are kept on disk in {folder} and written to "
                           "the run when it moves again (should this process die first: `python -m instrument "
                           f"replay {folder} --run-id {self.name}`); the training goes on"), once=True)

    def drain(self, timeout: float | None = None, *, progress: bool = False) -> bool:
        """Wait until every queued record was handed to the backend; False if it stopped answering.

        *timeout* measures the backend's silence, not the total time: the wait goes on as long
        as the backend keeps finishing calls, and gives up once it finished none for *timeout*
        seconds (None: never). Records that spilled to disk are part of the wait: they are
        written once the backend moves again. With *progress*, a wait longer than
        :data:`PROGRESS_AFTER_SECONDS` prints a line on stderr every
        :data:`PROGRESS_EVERY_SECONDS`: the records left, the rate, the time still needed.
        """
        if self._thread is None:
            return True
        started = _monotonic()
        delivered = self._delivered
        next_line = started + PROGRESS_AFTER_SECONDS
        with self._cond:
            while self._items or self._busy or self._spilling:
                if not self._thread.is_alive():
                    return False
                now = _monotonic()
                silent = now - max(self._answered, started)
                if timeout is not None and silent >= timeout:
                    return False
                if progress and now >= next_line:
                    next_line = now + PROGRESS_EVERY_SECONDS
                    self._progress_line(now - started, self._delivered - delivered, silent, timeout)
                wait = IDLE_CHECK_SECONDS if timeout is None else min(IDLE_CHECK_SECONDS, timeout - silent)
                self._wait(max(wait, 0.001))
        return True

    def _progress_line(self, elapsed: float, done: int, silent: float, timeout: float | None) -> None:
        """Print how the drain is going on stderr (the caller holds the condition)."""
        left = len(self._items) + (len(self._batch) - self._current if self._busy else 0)
        spilled = " (and those kept on disk)" if self._spilling else ""
        if silent >= 1.0 or done == 0:
            limit = f"; giving up after {timeout:g} s ({_env.INSTRUMENT_EXIT_TIMEOUT})" if timeout is not None else ""
            state = f"no answer from the backend for {silent:.0f} s{limit}"
        else:
            rate = done / elapsed
            state = f"{rate:,.0f} a second, about {left / rate:.0f} s more"
        print(f"instrument: run {self.name}: writing the queue: {left:,} records left{spilled}, {state}",
              file=sys.stderr, flush=True)

    def flush(self, timeout: float | None = None, *, progress: bool = False) -> bool:
        """Queue what the session holds back (:meth:`Target.release_held`), then :meth:`drain`."""
        self.target.release_held()
        return self.drain(timeout, progress=progress)

    def close(self, timeout: float | None = None, *, progress: bool = False) -> tuple[bool, list[Record]]:
        """Drain (see :meth:`drain`), then stop the thread.

        Returns:
            Whether everything was written in *timeout* seconds, and the records the backend
            never took (a hung backend), in order: the rest of the batch the thread holds, the
            queue, and what spilled to disk (the spill folder is removed). The caller keeps them.
            A second call hands back nothing.
        """
        if self._closed:
            return not (self._items or self._busy), []
        drained = self.drain(timeout, progress=progress)
        with self._cond:
            self._closed = True
            left: list[Record] = []
            if self._busy:
                self._abandoned = True
                self.in_flight = self._batch[self._current]
                left.extend(self._batch[self._current + 1:])
                del self._batch[self._current + 1:]
            left.extend(self._items)
            self._items.clear()
            self._sizes.clear()
            self._bytes = 0
            if self._spill is not None:
                left.extend(self._take_spilled())
            self._spilling = False
            self._cond.notify_all()
        return drained, left

    @property
    def busy(self) -> bool:
        """Whether the thread is inside a backend call (after :meth:`close`: one that never returned)."""
        return self._busy

    def _wait(self, timeout: float) -> None:
        """Wait on the condition as a writer or drainer (the caller holds it); wake the thread."""
        self._waiters += 1
        if self._idle:
            self._cond.notify_all()
        try:
            self._cond.wait(timeout)
        finally:
            self._waiters -= 1

    # The thread ----------------------------------------------------------------------------------
    def _start_thread(self) -> None:
        # If the main thread ends before the run started, the thread imports wandb and calls
        # wandb.init inside the exit drain; importing concurrent.futures.thread then would raise
        # "can't register atexit after shutdown" (wandb imports it), so it is imported now.
        importlib.import_module("concurrent.futures.thread")

        thread = self._thread = threading.Thread(target=self._run, name=f"instrument-dispatch-{self.name}", daemon=True)
        self._progress = self._clock()
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown: no new threads
            self._thread = None
            self._inline = True
            return
        _LIVE.add(self)
        _register_exit_drain()

    def _due(self, now: float) -> bool:
        """Whether the thread should write now (the caller holds the condition; items queued)."""
        return (
            self._waiters > 0
            or self._closed
            or self._high()
            or now - self._last_put >= QUIET_SECONDS
            or (self._oldest is not None and now - self._oldest >= MAX_LAG_SECONDS)
        )

    def _run(self) -> None:
        next_idle = self._clock() + IDLE_CHECK_SECONDS
        cond = self._cond
        while True:
            batch: list[Record] = []
            lagging = False
            oldest: float | None = None
            with cond:
                while True:
                    now = _monotonic()  # the writer's gaps and the lag: real time
                    ticks = self._clock()  # the idle checks: the injectable clock
                    items = self._items
                    if items:
                        if self._due(now):
                            oldest = self._oldest
                            lagging = oldest is not None and now - oldest >= MAX_LAG_SECONDS
                            count = min(len(items), BATCH)
                            batch = [items.popleft() for _ in range(count)]
                            sizes = self._sizes
                            self._bytes -= sum(sizes.popleft() for _ in range(count))
                            if not items:
                                self._oldest = None
                            break
                        timeout = QUIET_SECONDS
                    elif self._closed:
                        cond.notify_all()
                        return
                    elif self._spilling:
                        batch = self._unspill()
                        lagging = True
                        if batch:
                            break
                        continue
                    else:
                        if self._waiters:
                            cond.notify_all()  # drainers: the queue is empty
                        timeout = next_idle - ticks
                    if ticks >= next_idle:
                        break
                    self._idle = True
                    cond.wait(timeout)
                    self._idle = False
                self._busy = bool(batch)
                self._progress = ticks
                if batch:
                    self._answered = now
            if batch:
                self._write(batch, lagging, oldest)
            if self._clock() >= next_idle:
                next_idle = self._clock() + IDLE_CHECK_SECONDS
                try:
                    self.target.release_idle()
                except Exception as error:  # the thread must outlive a failing release
                    report(Problem("backend", f"instrument: run {self.name}: writing held rows failed "
                                   f"({type(error).__name__}: {error})"), once=True)

    def _write(self, batch: list[Record], lagging: bool, oldest: float | None) -> None:
        """Deliver *batch* in order; give the rest back to the queue if the writer got busy again."""
        last = len(batch) - 1
        self._batch = batch
        for index, record in enumerate(batch):
            with self._cond:
                if self._abandoned:  # close() timed out and kept the rest of the batch on disk
                    self._busy = False
                    return
                self._current = index
            working_for(getattr(record, "function", ""))  # its problems point at the function's definition
            try:
                self.target.deliver(record)
            except Exception as error:  # the thread must outlive a bad record
                report(Problem("backend", f"instrument: run {self.name}: writing a {type(record).__name__} "
                               f"record failed ({type(error).__name__}: {error})"), once=True)
            self._progress = self._clock()
            now = self._answered = _monotonic()
            self._delivered += 1
            if (
                index < last
                and not lagging
                and not self._waiters
                and not self._closed
                and now - self._last_put < QUIET_SECONDS
                and len(self._items) + last - index < self.high_water
            ):
                with self._cond:  # yield to the writer: it runs Python, so do the rest in its next gap
                    rest = batch[index + 1:]
                    sizes = [record_bytes(record) for record in rest]
                    self._items.extendleft(reversed(rest))
                    self._sizes.extendleft(reversed(sizes))
                    self._bytes += sum(sizes)
                    if oldest is not None and (self._oldest is None or oldest < self._oldest):
                        self._oldest = oldest
                break
        try:
            self.target.batch_written()
        except Exception as error:  # the thread must outlive a failing hand-over
            report(Problem("backend", f"instrument: run {self.name}: handing records to the backend failed "
                           f"({type(error).__name__}: {error})"), once=True)
        self._progress = self._clock()
        self._answered = _monotonic()
        with self._cond:
            self._busy = False
            self._batch = []
            if self._waiters:
                self._cond.notify_all()

    # Spilling ------------------------------------------------------------------------------------
    def _folder(self) -> Path:
        """The spill folder: a private one (mode 0700) made under the spill root on first use."""
        if self.spill_path is None:
            root = self._spill_root if self._spill_root is not None else _env.journal_root()
            prefix = f"instrument-queue-{self.name}-"
            try:
                root.mkdir(parents=True, exist_ok=True)
                self.spill_path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
            except OSError:
                self.spill_path = Path(tempfile.mkdtemp(prefix=prefix))
        return self.spill_path

    def _spill_records(self, records: Sequence[Record]) -> None:
        """Append *records* to the spill journal (the caller holds the condition)."""
        if self._spill is None:
            self._spill = JournalWriter(self._folder())
        for record in records:
            try:
                self._spill.append(record)
            except Exception as error:  # never raise into user code
                report(Problem("backend", f"instrument: run {self.name}: a {type(record).__name__} record could "
                               f"not be kept on disk ({type(error).__name__}: {error}); it was lost"), once=True)

    def _take_spilled(self) -> list[Record]:
        """Return every spilled record not written yet and remove the spill folder (condition held)."""
        reader = self._spill_reader or JournalReader(self._folder())
        if self._spill is not None:
            self._spill.close()
        records = [r for r in reader.read_new() if not isinstance(r, dict)]
        reader.remove()
        self._spill = self._spill_reader = None
        self.spill_path = None
        return records

    def _unspill(self) -> list[Record]:
        """Return the next spilled records to write (the caller holds the condition).

        With nothing left, spilling ends and the journal is removed: new records go to the
        queue again.
        """
        if self._spill is None:
            self._spilling = False
            return []
        if self._spill_reader is None:
            self._spill_reader = JournalReader(self._folder())
        records = [r for r in self._spill_reader.read_new() if not isinstance(r, dict)]
        if not records:
            self._spill.close()
            self._spill_reader.remove()
            self._spill = self._spill_reader = None
            self.spill_path = None
            self._spilling = False
            if self._waiters:
                self._cond.notify_all()
        return records


# Exit: drain every live dispatcher when the main thread ends, before atexit hooks ---------------
_LIVE: weakref.WeakSet[Dispatcher] = weakref.WeakSet()
_exit_registered = False
_forked = False

#: When the process must be done exiting (monotonic seconds), set once the drain at exit ended:
#: ``INSTRUMENT_EXIT_TIMEOUT`` after it for finishing the runs and wandb's teardown when every
#: queue was written, no more than a short grace when a backend stopped answering.
exit_deadline: float | None = None


def _register_exit_drain() -> None:
    global _exit_registered
    if _exit_registered:
        return
    _exit_registered = True
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(_drain_at_exit)
        else:  # pragma: no cover - other Python implementations
            atexit.register(_drain_at_exit)
    except RuntimeError:  # already shutting down: each session's finish drains its queue
        pass


def _drain_at_exit() -> None:
    global exit_deadline
    if _forked:
        return
    timeout = _env.exit_timeout()
    answered = True
    for dispatcher in list(_LIVE):
        if not dispatcher.flush(timeout, progress=True):
            answered = False
            exit_deadline = time.monotonic()  # what comes next (keeping, finishing) gets a short grace
            try:
                dispatcher.target.keep_at_exit()
            except Exception as error:  # exiting anyway
                report(Problem("backend", f"instrument: run {dispatcher.name}: keeping its queue at exit failed "
                               f"({type(error).__name__}: {error})"), once=True)
    exit_deadline = time.monotonic() + (timeout if answered else 0.0)


#: Seconds that finishing and wandb's teardown still get at exit once a backend stopped answering.
EXIT_GRACE_SECONDS = 1.0


def exit_time_left(timeout: float) -> float:
    """Return *timeout*, cut to what is left of the exit deadline once the main thread ended
    (never less than :data:`EXIT_GRACE_SECONDS`)."""
    if exit_deadline is None:
        return timeout
    return max(min(timeout, exit_deadline - time.monotonic()), min(timeout, EXIT_GRACE_SECONDS))


def _after_fork_in_child() -> None:
    # The threads do not exist in a forked child; its parent's queues are the parent's business.
    global _forked, _LIVE
    _forked = True
    _LIVE = weakref.WeakSet()


os.register_at_fork(after_in_child=_after_fork_in_child)
