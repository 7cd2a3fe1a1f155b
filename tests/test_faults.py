"""Fault injection in process: user exceptions, failing backends, bounded finish (promises 1-3).

Each test pushes a :class:`faults.FaultyBackend` (over the in-memory recording backend) and
checks what landed where, what the caller got, and which warnings were given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import stat
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from faults import FaultyBackend, InjectedError, faulty

import instrument
from instrument import _linkage
from instrument._backends.wandb import ServerUnreachableError, check_server
from instrument._env import PROXY_VARIABLES, init_timeout
from instrument._replay import replay
from instrument.testing import RecordingBackend, recording


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """Collect the messages of every InstrumentationWarning given in the block (no de-duplication)."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(str(w.message) for w in caught if issubclass(w.category, instrument.InstrumentationWarning))


@instrument.training_stage("operator")
def train_step(loss: float) -> dict[str, float]:
    return {"loss": loss}


def three_points() -> str:
    for loss in (0.3, 0.2, 0.1):
        train_step(loss)
    return "ok"


def journal_folder(message: str) -> Path:
    """Return the journal folder a warning names in its replay command."""
    return Path(message.split("python -m instrument replay ", 1)[1].split("`", 1)[0])


# Promise 1: a user exception propagates unchanged ----------------------------------------------------

class BoomError(RuntimeError):
    pass


@instrument.training_stage("operator")
def failing_step(error: BaseException) -> dict[str, float]:
    raise error


@instrument.training_stage("operator")
def failing_generator(error: BaseException) -> Iterator[dict[str, float]]:
    yield {"loss": 1.0}
    raise error


@instrument.eval_summary
async def failing_eval(error: BaseException) -> dict[str, float]:
    raise error


def test_user_exception_is_the_same_object_with_its_traceback_and_the_run_exits_1() -> None:
    """A stage that logged a point then raised: the caller gets the very exception, raised where
    the user raised it, the point is kept and the run's exit code is 1 (C08a)."""
    error = BoomError("boom")
    with pytest.raises(BoomError) as raised, recording() as recorded:
        train_step(0.5)
        failing_step(error)
    assert raised.value is error
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert ("failing_step", "raise error") == (frames[-1].name, frames[-1].line)
    run = recorded.run()
    assert [(0, 0.5)] == run.series("operator/loss")
    assert 1 == run.exit_code


@pytest.mark.parametrize("kind", ["generator", "coroutine"])
def test_user_exception_from_generators_and_coroutines_is_unchanged(kind: str) -> None:
    """Generator and coroutine wrappers hand the user's exception on unchanged, values kept."""
    error = BoomError(kind)
    with recording() as recorded, pytest.raises(BoomError) as raised:
        if kind == "generator":
            list(failing_generator(error))
        else:
            asyncio.run(failing_eval(error))
    assert raised.value is error
    assert "raise error" == traceback.extract_tb(raised.value.__traceback__)[-1].line
    expected = [[(0, 1.0)]] if kind == "generator" else []
    assert expected == [run.series("operator/loss") for run in recorded.runs]


@pytest.mark.parametrize(
    ("error", "code"), [(BoomError("x"), 1), (SystemExit(3), 3), (SystemExit(None), 0), (KeyboardInterrupt(), 130)]
)
def test_pipeline_exit_code_follows_how_the_block_ended(error: BaseException, code: int) -> None:
    """A pipeline block ended by an exception re-raises it unchanged and records 1, n for
    ``SystemExit(n)``, 130 for Ctrl-C, keeping the point logged before."""
    with recording() as recorded, pytest.raises(type(error)) as raised, instrument.pipeline(project="p"):
        train_step(0.5)
        raise error
    assert raised.value is error
    run = recorded.run()
    assert (code, [(0, 0.5)]) == (run.exit_code, run.series("operator/loss"))


# Promise 2: a failing backend never raises into user code --------------------------------------------

def test_init_timeout_online_falls_back_to_offline_with_one_warning() -> None:
    """``wandb.init`` timing out online: the stage still returns, the run is started offline, and
    one warning names the failure, the folder and the ``instrument sync`` command (C07)."""
    backend = FaultyBackend().timeout("start", modes=("online",))
    with captured() as messages, faulty(backend):
        instrument.configure(mode="online")
        result = three_points()
    assert "ok" == result
    run = backend.runs[0]
    assert ("offline", [(0, 0.3), (1, 0.2), (2, 0.1)]) == (run.mode, run.series("operator/loss"))
    assert 1 == len(messages), messages
    assert "TimeoutError" in messages[0]
    assert f"instrument sync memory (recorded run {run.id})" in messages[0]


def closed_port() -> int:
    """Return a local port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_check_server_raises_for_a_refused_connection_and_passes_a_listening_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``check_server`` names the address of a server that refuses connections, lets one that
    listens pass, and checks nothing when a proxy is configured (the proxy would answer)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    refused = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ServerUnreachableError, match=re.escape(refused)):
        check_server(SimpleNamespace(base_url=refused), 5.0)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        check_server(SimpleNamespace(base_url=f"http://127.0.0.1:{server.getsockname()[1]}"), 5.0)
    check_server(SimpleNamespace(base_url=refused, https_proxy="http://proxy:3128"), 5.0)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    check_server(SimpleNamespace(base_url=refused), 5.0)


def test_an_online_init_waits_half_the_exit_timeout_unless_wandb_init_timeout_is_set() -> None:
    """``wandb.init`` online gets half of ``INSTRUMENT_EXIT_TIMEOUT`` (15 s by default); a
    ``WANDB_INIT_TIMEOUT`` of the user's is left to wandb."""
    assert (15.0, 5.0, None) == (
        init_timeout({}), init_timeout({"INSTRUMENT_EXIT_TIMEOUT": "10"}), init_timeout({"WANDB_INIT_TIMEOUT": "120"}))


def test_init_failing_offline_too_keeps_records_in_a_private_journal_that_replays() -> None:
    """``wandb.init`` failing in every mode: the values go to a journal (folder 0700, file 0600),
    one warning names it and the replay command, and the replay writes all of them into a run."""
    backend = FaultyBackend().fail("start", InjectedError("no network"))
    with captured() as messages, faulty(backend):
        assert "ok" == three_points()
    assert 1 == len(messages), messages
    assert "InjectedError: no network" in messages[0]
    folder = journal_folder(messages[0])
    assert (0o700, 0o600) == (stat.S_IMODE(folder.stat().st_mode), stat.S_IMODE((folder / "spill.jsonl").stat().st_mode))
    target = RecordingBackend()
    replayed = replay(folder, backend=target)
    run = target.runs[0]
    assert [(0, 0.3), (1, 0.2), (2, 0.1)] == run.series("operator/loss")
    assert ("operator/step", 0, replayed.run_id) == (run.metrics["operator/loss"]["step_metric"], run.exit_code, run.id)
    assert not folder.exists()


def test_log_failing_mid_run_spills_the_rest_to_a_journal_and_loses_nothing() -> None:
    """``log`` raising after the first point: the caller gets "ok", the first point is in the run,
    the others in a journal named by one warning; replayed, the steps continue where they were."""
    backend = FaultyBackend().fail("log", after=1)
    with captured() as messages, faulty(backend):
        assert "ok" == three_points()
    original = backend.runs[0]
    assert ([(0, 0.3)], 0) == (original.series("operator/loss"), original.exit_code)
    assert 1 == len(messages), messages
    assert f"memory (recorded run {original.id})" in messages[0]
    target = RecordingBackend()
    replay(journal_folder(messages[0]), backend=target)
    replayed = target.runs[0]
    assert (original.id, [(1, 0.2), (2, 0.1)]) == (replayed.id, replayed.series("operator/loss"))
    assert "operator/step" == replayed.metrics["operator/loss"]["step_metric"]


def test_every_record_kind_failing_gives_one_warning_and_the_journal_keeps_all() -> None:
    """Summary, config and log calls all raising: one warning for the run, every value in the journal."""
    backend = FaultyBackend().fail("log").fail("update_summary").fail("update_config")

    @instrument.eval_summary(prefix="eval")
    def evaluate() -> dict[str, float]:
        return {"nrmse": 0.09}

    @instrument.run_config
    def config() -> dict[str, float]:
        return {"lr": 0.1}

    with captured() as messages, faulty(backend):
        config()
        for _ in range(10):
            train_step(1.0)
        evaluate()
    assert 1 == len(messages), messages
    target = RecordingBackend()
    replay(journal_folder(messages[0]), backend=target)
    run = target.runs[0]
    assert (10, {"lr": 0.1}, 0.09) == (len(run.series("operator/loss")), run.config, run.summary["eval/nrmse"])


def test_strict_mode_never_raises_for_backend_faults() -> None:
    """Strict mode (the fixture's) raises for bad input only: a failing backend still only warns."""
    backend = FaultyBackend().fail("start").fail("log")
    with captured() as messages, faulty(backend, strict=True):
        assert "ok" == three_points()
    assert 1 == len(messages)


def test_journal_that_cannot_be_created_drops_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """If even the journal cannot be written, the records are dropped, never silently."""
    import instrument._fault_policy as fault_policy

    def broken(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(fault_policy, "CallJournal", broken)
    backend = FaultyBackend().fail("start")
    with captured() as messages, faulty(backend):
        assert "ok" == three_points()
    assert 1 == len(messages)
    assert "read-only file system" in messages[0] and "dropped" in messages[0]


def test_records_after_finish_warn_once_and_a_new_standalone_run_takes_later_ones() -> None:
    """After ``instrument.finish()`` the next point starts a new standalone run; nothing raises."""
    backend = FaultyBackend()
    with faulty(backend):
        train_step(1.0)
        instrument.finish()
        train_step(2.0)
    assert [[(0, 1.0)], [(0, 2.0)]] == [run.series("operator/loss") for run in backend.runs]
    assert [0, 0] == [run.exit_code for run in backend.runs]


# Promise 3: bounded finish ---------------------------------------------------------------------

def test_hanging_finish_gives_up_after_the_timeout_and_says_where_the_data_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``finish`` hanging: finishing returns after ``INSTRUMENT_EXIT_TIMEOUT`` with one warning
    that names the timeout and where the data is."""
    monkeypatch.setenv("INSTRUMENT_EXIT_TIMEOUT", "0.2")
    backend = FaultyBackend().hang("finish")
    done = threading.Event()

    def body() -> None:
        with faulty(backend):
            train_step(1.0)
        done.set()

    with captured() as messages:
        worker = threading.Thread(target=body, daemon=True)
        worker.start()
        worker.join(60)  # a safety net only: the test fails instead of hanging the suite
    backend.release()
    assert done.is_set()
    assert 1 == len(messages), messages
    assert "INSTRUMENT_EXIT_TIMEOUT" in messages[0] and "gave up" in messages[0]
    assert f"memory (recorded run {backend.runs[0].id})" in messages[0]


def test_finish_waits_for_a_writer_thread_at_most_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread stuck inside a backend call holding the run: finish gives up instead of hanging."""
    monkeypatch.setenv("INSTRUMENT_EXIT_TIMEOUT", "0.2")
    backend = FaultyBackend().hang("log", after=1)
    with captured() as messages, faulty(backend):
        train_step(1.0)
        stuck = threading.Thread(target=train_step, args=(2.0,), daemon=True)
        stuck.start()
        while backend.calls["log"] < 2:
            threading.Event().wait(0.01)
        session = _linkage.own_sessions()[0]
        session.finish(0)
        finished = session.finished
    backend.release()
    stuck.join(10)
    assert not finished
    assert 1 == len(messages) and "another thread kept writing" in messages[0]


def test_exit_timeout_is_read_from_the_environment() -> None:
    """``INSTRUMENT_EXIT_TIMEOUT`` sets the bound; unset or invalid it is 30 s."""
    from instrument._env import exit_timeout

    assert [30.0, 2.5, 30.0, 30.0] == [
        exit_timeout({}), exit_timeout({"INSTRUMENT_EXIT_TIMEOUT": "2.5"}),
        exit_timeout({"INSTRUMENT_EXIT_TIMEOUT": "soon"}), exit_timeout({"INSTRUMENT_EXIT_TIMEOUT": "-1"}),
    ]


def test_journal_root_is_under_wandb_dir() -> None:
    """Journals of failed runs go under ``$WANDB_DIR/wandb``, next to wandb's run folders."""
    from instrument._env import journal_root

    assert Path("/data/runs/wandb") == journal_root({"WANDB_DIR": "/data/runs"})
    assert Path(os.getcwd()) / "wandb" == journal_root({})
