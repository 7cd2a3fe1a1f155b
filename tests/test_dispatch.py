"""Tests of instrument._dispatch and the session's write path: records leave the calling thread,
keep their order, coalesce per step, wait (never drop) on a full queue, spill when the backend
stalls, and are all written at flush, finish and exit."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import eventually, run_script, wandb_env

import instrument
from instrument import _dispatch, _linkage, _runtime
from instrument._backends.call_journal import read_call_journal
from instrument._dispatch import Dispatcher
from instrument._journal import JournalReader
from instrument._records import Point, SummaryUpdate, record_bytes
from instrument._session import Session
from instrument.runfile import read_runs
from instrument.testing import RecordedRun, RecordingBackend, RunSpec, recording, use_backend


class FakeClock:
    """A monotonic clock that moves only when told (:meth:`advance`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock *seconds* forward."""
        self.now += seconds


class Delivering:
    """A dispatcher target that hands every record to *deliver* and holds nothing back."""

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self.deliver = deliver

    def release_idle(self) -> None:
        """Nothing is held."""

    def release_held(self) -> None:
        """Nothing is held."""

    def keep_at_exit(self) -> None:
        """Nothing to keep."""

    def batch_written(self) -> None:
        """Nothing is held back."""


# The dispatcher on its own -----------------------------------------------------------------------
def test_records_are_handed_to_the_backend_in_queue_order() -> None:
    """Five hundred records put one by one reach *deliver* in the order they were put."""
    delivered: list[Any] = []
    dispatcher = Dispatcher(Delivering(delivered.append), name="order")
    for i in range(500):
        dispatcher.put([i])
    assert dispatcher.drain(30)
    assert list(range(500)) == delivered
    dispatcher.close(30)


def test_a_full_queue_blocks_the_writer_until_the_backend_makes_room() -> None:
    """With the backend stuck, the writer waits at the bound; nothing is dropped once it moves."""
    gate = threading.Event()
    delivered: list[Any] = []

    def deliver(record: Any) -> None:
        gate.wait()
        delivered.append(record)

    dispatcher = Dispatcher(Delivering(deliver), name="full", bound=4)
    done = threading.Event()

    def writer() -> None:
        for i in range(20):
            dispatcher.put([i])
            dispatcher.wait_for_room()
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        eventually(lambda: dispatcher._busy and dispatcher._waiters == 1 and len(dispatcher._items) == 4)
        assert (False, [], 4) == (done.is_set(), delivered, len(dispatcher._items))
    finally:
        gate.set()
        thread.join(30)
    assert dispatcher.drain(30)
    assert list(range(20)) == delivered
    dispatcher.close(30)


def test_a_queue_full_in_bytes_blocks_the_writer_until_the_backend_makes_room() -> None:
    """Wide rows fill the queue's bytes before its count: the writer waits there; nothing is dropped."""
    gate = threading.Event()
    delivered: list[Any] = []

    def deliver(record: Any) -> None:
        gate.wait()
        delivered.append(record.values["k0"])

    row = {f"k{j}": float(j) for j in range(1000)}  # about 128 KB a row by the estimate
    dispatcher = Dispatcher(Delivering(deliver), name="bytes", bound=10_000, bytes_bound=3 * record_bytes(Point(row)))
    done = threading.Event()

    def writer() -> None:
        for i in range(12):
            dispatcher.put([Point({**row, "k0": float(i)})])
            dispatcher.wait_for_room()
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        eventually(lambda: dispatcher._busy and dispatcher._waiters == 1 and len(dispatcher._items) == 3)
        assert (False, [], 3) == (done.is_set(), delivered, len(dispatcher._items))
    finally:
        gate.set()
        thread.join(30)
    assert dispatcher.drain(30)
    assert [float(i) for i in range(12)] == delivered
    dispatcher.close(30)


def test_the_drain_goes_on_while_the_backend_answers_and_says_how_it_goes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drain far longer than its timeout still succeeds while records keep going, with progress
    lines on stderr; a backend that stops answering ends it after the timeout of silence."""
    monkeypatch.setattr(_dispatch, "PROGRESS_AFTER_SECONDS", 0.2)
    monkeypatch.setattr(_dispatch, "PROGRESS_EVERY_SECONDS", 0.3)
    gate = threading.Event()
    delivered: list[Any] = []

    def deliver(record: Any) -> None:
        if record == "hang":
            gate.wait()
        time.sleep(0.05)
        delivered.append(record)

    dispatcher = Dispatcher(Delivering(deliver), name="progress")
    dispatcher.put(list(range(30)))  # 1.5 s of work, ten times the timeout below
    assert dispatcher.drain(0.15, progress=True)
    assert list(range(30)) == delivered
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("instrument: run progress")]
    assert lines and all("records left" in line and "a second, about" in line for line in lines)
    dispatcher.put(["hang", 30])
    try:
        assert not dispatcher.drain(0.5)
    finally:
        gate.set()
    dispatcher.close(30)


def test_a_start_attempt_that_answers_restarts_the_drains_silence() -> None:
    """A delivery that takes longer than the drain's timeout but keeps answering (start attempts
    that fail, each followed by a fallback, calling ``answered``) is waited for to the end."""
    delivered: list[Any] = []
    dispatcher: Dispatcher

    def deliver(record: Any) -> None:
        for _ in range(15):  # 1.5 s of attempts, each an answer
            time.sleep(0.1)
            dispatcher.answered()
        delivered.append(record)

    dispatcher = Dispatcher(Delivering(deliver), name="attempts")
    dispatcher.put(["first"])
    assert dispatcher.drain(1.0)
    assert ["first"] == delivered
    dispatcher.close(30)


def test_a_stalled_backend_spills_records_to_disk_and_writes_them_when_it_moves_again(tmp_path: Path) -> None:
    """After the stall timeout the writer stops waiting; the spilled records come back in order."""
    gate = threading.Event()
    delivered: list[Any] = []

    def deliver(record: Any) -> None:
        gate.wait()
        delivered.append(record)

    clock = FakeClock()
    dispatcher = Dispatcher(Delivering(deliver), name="stall", bound=2, stall_timeout=30, spill_root=tmp_path,
                            clock=clock)
    records = [SummaryUpdate(values={"k": i}) for i in range(10)]
    dispatcher.put(records[:2])
    eventually(lambda: dispatcher.busy)
    clock.advance(30)  # the backend took nothing for the stall timeout
    with pytest.warns(instrument.InstrumentationWarning, match=r"no progress for 30 s.*kept on disk in .*instrument-queue-stall-"
                      r".*instrument replay .* --run-id stall"):
        for record in records[2:]:
            dispatcher.put([record])
            dispatcher.wait_for_room()
    folder = dispatcher.spill_path
    assert folder is not None and folder.parent == tmp_path
    on_disk = JournalReader(folder).read_new()
    assert on_disk and records[-len(on_disk):] == on_disk
    gate.set()
    assert dispatcher.drain(30)
    assert records == delivered
    assert not folder.exists()
    dispatcher.close(30)


def test_close_hands_back_the_records_a_hung_backend_never_took() -> None:
    """A hung backend at close: every record but the one being written comes back, in order."""
    gate = threading.Event()
    delivered: list[Any] = []

    def deliver(record: Any) -> None:
        delivered.append(record)
        gate.wait()

    dispatcher = Dispatcher(Delivering(deliver), name="hung")
    records = [SummaryUpdate(values={"k": i}) for i in range(5)]
    dispatcher.put(records)
    try:
        drained, left = dispatcher.close(timeout=0.5)
    finally:
        gate.set()
    assert (False, records[:1], records[1:]) == (drained, delivered, left)


# A session on a threaded backend -----------------------------------------------------------------
class CapturingRun(RecordedRun):
    """A recorded run that also keeps, per ``log`` call, the raw row and the thread that made it."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        self.raw: list[tuple[dict[str, Any], str]] = []
        self.defined: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def log(self, row: dict[str, Any]) -> None:
        self.gate.wait()
        self.raw.append((row, threading.current_thread().name))
        super().log(row)

    def define_metric(self, name: str, step_metric: str | None, summary: str | None) -> None:
        self.defined.append(name)
        super().define_metric(name, step_metric, summary)


class ThreadedBackend(RecordingBackend):
    """The recording backend, but written by a dispatcher thread like the wandb backend."""

    synchronous = False

    def start(self, spec: RunSpec) -> CapturingRun:
        run = CapturingRun(spec)
        with self._lock:
            self.runs.append(run)
        return run


@contextlib.contextmanager
def threaded() -> Iterator[ThreadedBackend]:
    """Route everything to a fresh :class:`ThreadedBackend` and finish its runs at the end."""
    with use_backend(ThreadedBackend()) as backend:
        yield backend


def test_backend_calls_leave_the_calling_thread() -> None:
    """A stage's point is logged by the run's dispatcher thread, not by the caller."""

    @instrument.training_stage("op")
    def step() -> dict[str, float]:
        return {"loss": 0.5}

    with threaded() as backend:
        step()
        assert instrument.flush(30)
        (run,) = backend.runs
        assert [({"op/loss": 0.5, "op/step": 0}, f"instrument-dispatch-{run.id}")] == run.raw


@pytest.mark.parametrize("switch", ["env", "configure"])
def test_the_synchronous_switch_logs_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch, switch: str) -> None:
    """``INSTRUMENT_SYNC=1`` or ``configure(synchronous=True)`` make the caller's thread call the backend."""
    if switch == "env":
        monkeypatch.setenv("INSTRUMENT_SYNC", "1")

    @instrument.training_stage("op")
    def step() -> dict[str, float]:
        return {"loss": 0.5}

    with threaded() as backend:
        if switch == "configure":
            instrument.configure(synchronous=True)
        step()
        (run,) = backend.runs
        assert [({"op/loss": 0.5, "op/step": 0}, threading.current_thread().name)] == run.raw


def test_the_recording_backend_is_synchronous_so_strict_errors_reach_the_caller() -> None:
    """Under ``recording()`` a series key that collides with an eval's summary raises at the call."""

    @instrument.eval_summary(prefix="op")
    def evaluate() -> dict[str, float]:
        return {"loss": 0.1}

    @instrument.training_stage("op")
    def step() -> dict[str, float]:
        return {"loss": 0.5}

    assert RecordingBackend.synchronous is True
    with pytest.raises(instrument.InstrumentationError, match="'op/loss' is both an eval's summary key and a series key"):
        with recording():
            evaluate()
            step()


def test_points_of_a_stage_keep_call_order_and_steps() -> None:
    """Two thousand points of one stage land in call order on steps 0..1999."""

    @instrument.training_stage("op")
    def step(i: int) -> dict[str, int]:
        return {"i": i}

    with threaded() as backend:
        for i in range(2000):
            step(i)
    (run,) = backend.runs
    assert [(i, i) for i in range(2000)] == run.series("op/i")


def test_metrics_logged_one_by_one_at_a_step_become_one_row() -> None:
    """Ten ``log_training_metric`` calls per step make one history row per step, keys declared once."""
    names = [f"m{j}" for j in range(10)]
    with threaded() as backend:
        ctx = instrument.current()
        for k in range(5):
            for j, name in enumerate(names):
                ctx.log_training_metric("op", name, k * 10 + j, step=k)
    (run,) = backend.runs
    expected = [{**{f"op/{n}": k * 10 + j for j, n in enumerate(names)}, "op/step": k, "_step": k} for k in range(5)]
    assert expected == run.history
    assert sorted(f"op/{n}" for n in names) == sorted(run.defined)


def test_instrument_log_inside_a_stage_coalesces_explicit_steps() -> None:
    """``instrument.log(..., step=k)`` calls of one stage at the same step make one row."""

    @instrument.training_stage("op")
    def epoch(k: int) -> None:
        instrument.log({"loss": 1.0 / (k + 1)}, step=k)
        instrument.log({"lr": 0.1}, step=k)

    with threaded() as backend:
        for k in range(3):
            epoch(k)
    (run,) = backend.runs
    assert [{"op/loss": 1.0 / (k + 1), "op/lr": 0.1, "op/step": k, "_step": k} for k in range(3)] == run.history


def test_the_same_key_twice_at_one_step_keeps_both_values() -> None:
    """A key logged twice at the same step is not overwritten: each value gets its own row."""
    with threaded() as backend:
        ctx = instrument.current()
        ctx.log_training_metric("op", "loss", 1.0, step=3)
        ctx.log_training_metric("op", "loss", 2.0, step=3)
    (run,) = backend.runs
    assert [(3, 1.0), (3, 2.0)] == run.series("op/loss")


def test_two_stages_at_explicit_steps_keep_their_own_rows() -> None:
    """Interleaved stages (C01) coalesce per stage: each row holds one stage's metrics only."""
    with threaded() as backend:
        ctx = instrument.current()
        for k in range(3):
            ctx.log_training_metric("trainer", "loss", k, step=100 + k)
            ctx.log_training_metric("inference", "reward", k, step=k)
            ctx.log_training_metric("trainer", "lr", 0.1, step=100 + k)
    (run,) = backend.runs
    assert [(100, 0), (101, 1), (102, 2)] == run.series("trainer/loss")
    assert [(100, 0.1), (101, 0.1), (102, 0.1)] == run.series("trainer/lr")
    assert [(0, 0), (1, 1), (2, 2)] == run.series("inference/reward")
    assert all(not ({"trainer/loss", "inference/reward"} <= row.keys()) for row in run.history)


def test_a_held_row_is_written_once_it_was_idle_for_a_second() -> None:
    """A row at an explicit step reaches the run after a second of quiet, with no flush or finish."""
    clock = FakeClock()
    backend = ThreadedBackend()
    session = Session(RunSpec(), backend, clock=clock)
    session.write([Point(values={"op/loss": 0.5}, axis="op", step=7)])
    try:
        clock.advance(0.9)
        session.release_idle()  # what the dispatcher thread does about every quarter second
        assert session._dispatcher.drain(30) and [] == backend.runs  # still held: no run started yet
        clock.advance(0.1)
        eventually(lambda: bool(backend.runs) and bool(backend.runs[0].raw))
        assert [{"op/loss": 0.5, "op/step": 7}] == [row for row, _ in backend.runs[0].raw]
    finally:
        session.finish(0)


def test_flush_writes_held_rows_and_waits_for_the_queue() -> None:
    """``instrument.flush()`` writes the open row and returns once the backend took every record."""
    with threaded() as backend:
        ctx = instrument.current()
        for k in range(50):
            ctx.log_training_metric("op", "loss", k, step=k)
        assert instrument.flush(30) is True
        assert [(k, k) for k in range(50)] == backend.runs[0].series("op/loss")


def test_backpressure_blocks_the_training_thread_and_drops_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stuck backend and a bound of 5, the writer waits at 5 queued rows; all 50 land in order."""
    monkeypatch.setenv("INSTRUMENT_QUEUE_SIZE", "5")

    @instrument.training_stage("op")
    def step(i: int) -> dict[str, int]:
        return {"i": i}

    with threaded() as backend:
        step(0)
        eventually(lambda: bool(backend.runs) and bool(backend.runs[0].raw))
        run = backend.runs[0]
        run.gate.clear()
        (session,) = _linkage.own_sessions()
        dispatcher = session._dispatcher
        done = threading.Event()

        def writer() -> None:
            for i in range(1, 50):
                step(i)
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            eventually(lambda: dispatcher._waiters == 1 and dispatcher._busy and len(dispatcher._items) == 5)
            assert (False, 5) == (done.is_set(), len(dispatcher._items))
        finally:
            run.gate.set()
            thread.join(30)
    assert [(i, i) for i in range(50)] == run.series("op/i")


def test_records_a_hung_backend_never_took_at_finish_go_to_the_call_journal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Finishing with a hung ``log``: the queued rows land in a replayable call journal, named in a warning."""
    monkeypatch.setenv("INSTRUMENT_EXIT_TIMEOUT", "1")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))

    @instrument.training_stage("op")
    def step(i: int) -> dict[str, int]:
        return {"i": i}

    with threaded() as backend:
        step(0)
        eventually(lambda: bool(backend.runs) and bool(backend.runs[0].raw))
        run = backend.runs[0]
        run.gate.clear()
        try:
            for i in range(1, 6):
                step(i)
            with pytest.warns(instrument.InstrumentationWarning, match=r"did not take \d record\(s\).*instrument replay"):
                instrument.finish()
        finally:
            run.gate.set()
    (folder,) = (tmp_path / "wandb").glob("instrument-journal-*")
    header, calls, exit_code = read_call_journal(folder)
    logged = [args["row"]["op/i"] for method, args in calls if method == "log"]
    assert (0, header["spec"]["id"]) == (exit_code, run.id)
    assert logged == list(range(6 - len(logged), 6)) and len(logged) >= 4


def test_two_threads_logging_at_once_lose_nothing() -> None:
    """Two threads log 100 points each into one run at once (C11): 100 of each land."""
    ctx = instrument.current()

    def log(name: str) -> None:
        for i in range(100):
            ctx.log_training_metric(name, "value", i)

    with threaded() as backend:
        threads = [threading.Thread(target=log, args=(name,)) for name in ("loss", "test_acc")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    (run,) = backend.runs
    assert [(i, i) for i in range(100)] == run.series("loss/value")
    assert [(i, i) for i in range(100)] == run.series("test_acc/value")


def test_an_image_is_copied_when_queued_so_reusing_the_array_changes_nothing() -> None:
    """An ``Image`` whose array the caller overwrites right after logging keeps the logged pixels."""
    pixels = np.zeros((4, 4), dtype=np.uint8)

    @instrument.training_stage("op")
    def step() -> dict[str, Any]:
        return {"sample": instrument.Image(pixels)}

    with threaded() as backend:
        step()
        pixels[:] = 255
        assert instrument.flush(30)
        (run,) = backend.runs
        ((row, _),) = run.raw
        assert 0 == int(row["op/sample"].data.max())


# The disabled fast path --------------------------------------------------------------------------
@pytest.fixture
def fresh_state() -> Iterator[None]:
    """A fresh production linkage state (no backend swapped in), restored afterwards."""
    token = _linkage.push_backend(None, inherit_settings=False)
    try:
        yield
    finally:
        _linkage.pop_backend(token)


def test_the_disabled_path_does_nothing_but_call_the_function(
    monkeypatch: pytest.MonkeyPatch, fresh_state: None
) -> None:
    """With mode disabled, stages, ``instrument.log`` and the imperative API neither route nor start a run."""
    monkeypatch.setenv("WANDB_MODE", "disabled")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("routed on the disabled path")

    _runtime.disabled()  # the layers below the decorators are loaded, so the patches below stay
    for module in ("instrument._runtime", "instrument._imperative"):
        monkeypatch.setattr(f"{module}.route", forbidden)
        monkeypatch.setattr(f"{module}.route_numbers", forbidden)

    @instrument.training_stage("op")
    def step(x: int) -> dict[str, int]:
        instrument.log({"inner": x}, step=x)
        return {"x": x}

    assert {"x": 3} == step(3)
    instrument.current().log_training_metric("op", "loss", 0.5, step=1)
    assert [] == _linkage.own_sessions()


def test_the_disabled_decision_follows_configure(fresh_state: None) -> None:
    """``configure(mode=...)`` resets the cached decision: disabled, then offline again."""
    instrument.configure(mode="disabled")
    assert _linkage.disabled() is True
    instrument.configure(mode="offline")
    assert _linkage.disabled() is False


# Real wandb, offline, in a subprocess ------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_nothing_logged_is_lost_when_a_script_ends_without_finish(wandb_root: Path) -> None:
    """A script logs 300 stage points and 20 coalesced steps, then just ends: every row is in the run."""
    run_script(wandb_root, """
        import instrument

        @instrument.training_stage("op")
        def step(i):
            return {f"m{j}": i + j for j in range(10)}

        for i in range(300):
            step(i)
        ctx = instrument.current()
        for k in range(20):
            for j in range(10):
                ctx.log_training_metric("tm", f"m{j}", k * 10 + j, step=k)
    """)
    (run,) = read_runs(wandb_root / "wandb")
    assert (0, False, 320) == (run.exit_code, run.truncated, len(run.history))
    assert [(i, i + 3) for i in range(300)] == run.series("op/m3")
    assert [(k, k * 10 + 7) for k in range(20)] == run.series("tm/m7")
    tm_rows = [row for row in run.history if "tm/step" in row]
    assert all({f"tm/m{j}" for j in range(10)} <= row.keys() for row in tm_rows)
    steps = [row["_step"] for row in run.history]
    assert sorted(steps) == steps == list(range(320))
    declared = sorted(m.get("name", "") for m in run.metrics if m.get("step_metric"))
    assert sorted([f"op/m{j}" for j in range(10)] + [f"tm/m{j}" for j in range(10)]) == declared


@pytest.mark.integration
@pytest.mark.slow
def test_a_script_ending_right_after_its_first_record_keeps_it_and_its_exit_code(wandb_root: Path) -> None:
    """The run starts on the dispatcher thread; ending (or raising) before it started loses nothing."""
    for name, tail, code in (("ok", "", 0), ("boom", "raise RuntimeError('boom')", 1)):
        root = wandb_root / name
        result = run_script(root, f"""
            import instrument

            @instrument.training_stage("op")
            def step():
                return {{"loss": 0.5}}

            step()
            {tail}
        """, check=False)
        assert code == result.returncode, result.stderr
        (run,) = read_runs(root / "wandb")
        assert (code, [(0, 0.5)]) == (run.exit_code, run.series("op/loss"))


@pytest.mark.integration
@pytest.mark.slow
def test_c19_wide_rows_and_a_short_exit_timeout_lose_no_row(wandb_root: Path) -> None:
    """3,000 rows of 1,000 keys and INSTRUMENT_EXIT_TIMEOUT=5: the drain at exit outlasts the
    timeout while wandb keeps taking rows, and every row is in the .wandb file."""
    result = run_script(wandb_root, """
        import instrument

        @instrument.training_stage("wide")
        def step(i):
            return {f"m{j}": i + j / 1000 for j in range(1000)}

        for i in range(3000):
            step(i)
    """, env=wandb_env(wandb_root, INSTRUMENT_EXIT_TIMEOUT="5"), timeout=600)
    assert "InstrumentationWarning" not in result.stderr, result.stderr
    (run,) = read_runs(wandb_root / "wandb")
    assert 3000 == len(run.history)
    assert [(i, i + 0.999) for i in range(3000)] == run.series("wide/m999")


@pytest.mark.integration
@pytest.mark.slow
def test_a_hung_log_at_exit_leaves_the_rest_of_the_run_in_a_replayable_journal(wandb_root: Path) -> None:
    """wandb's ``log`` hangs from the sixth row on and the script just ends: it exits within the exit
    timeout, the run holds rows 0..4, and ``python -m instrument replay`` writes the queued rest."""
    tests = Path(__file__).resolve().parent
    result = run_script(wandb_root, f"""
        import sys
        sys.path.insert(0, {str(tests)!r})
        from faults import FaultyBackend
        import instrument
        from instrument import _linkage
        from instrument._backends.wandb import WandbBackend

        backend = FaultyBackend(WandbBackend()).hang("log", after=5)
        _linkage.backend_for = lambda mode: backend

        @instrument.training_stage("op")
        def step(i):
            return {{"i": i}}

        for i in range(20):
            step(i)
        instrument.flush(timeout=0.5)
    """, env=wandb_env(wandb_root, INSTRUMENT_EXIT_TIMEOUT="3"))
    (message,) = [m for m in re.findall(r"InstrumentationWarning: (.*)", result.stderr) if "never wrote" in m]
    folder = Path(message.split("python -m instrument replay ", 1)[1].split("`", 1)[0])
    _, calls, _ = read_call_journal(folder)
    kept = [args["row"]["op/i"] for method, args in calls if method == "log"]
    (run,) = read_runs(wandb_root / "wandb")
    assert [(i, i) for i in range(5)] == run.series("op/i")
    assert kept == list(range(20 - len(kept), 20)) and len(kept) >= 14
    replayed = subprocess.run([sys.executable, "-m", "instrument", "replay", str(folder)], cwd=wandb_root,
                              env=wandb_env(wandb_root), capture_output=True, text=True, timeout=120)
    assert 0 == replayed.returncode, replayed.stderr
    runs = read_runs(wandb_root / "wandb")
    assert sorted(i for r in runs for _, i in r.series("op/i")) == [*range(5), *kept]


@pytest.mark.integration
def test_importing_and_calling_on_the_disabled_path_imports_no_wandb(wandb_root: Path) -> None:
    """``import instrument``, decorating and calling with mode disabled never import wandb."""
    result = run_script(wandb_root, """
        import sys, instrument

        @instrument.training_stage("op")
        def step(i):
            return {"loss": i}

        imported_at_decoration = "wandb" in sys.modules
        for i in range(10):
            step(i)
        instrument.current().log_training_metric("op", "acc", 1.0, step=3)
        print(imported_at_decoration, "wandb" in sys.modules)
    """, env=wandb_env(wandb_root, WANDB_MODE="disabled"))
    assert "False False" == result.stdout.strip()
    assert not (wandb_root / "wandb").exists()

