"""Fault injection against real wandb, offline, in subprocesses: what ends up on disk (promises 1-3).

Each script runs with ``helpers.wandb_env`` (offline, isolated folders); the faulty backend of
``tests/faults.py`` wraps the real wandb backend where a fault must be injected.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_script, wandb_env

from instrument._env import PROXY_VARIABLES
from instrument.runfile import read_runs

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parent

STAGE = """
import instrument

@instrument.training_stage("operator")
def train_step(loss):
    return {"loss": loss}
"""

FAULTY = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from faults import FaultyBackend
from instrument import _linkage
from instrument._backends.wandb import WandbBackend
"""


def instrument_warnings(stderr: str) -> list[str]:
    """Return the InstrumentationWarning messages a script printed."""
    return re.findall(r"InstrumentationWarning: (.*)", stderr)


def replay_command(message: str) -> str:
    """Return the journal folder named by a warning's replay command."""
    return message.split("python -m instrument replay ", 1)[1].split("`", 1)[0]


def online_env(root: Path, base_url: str) -> dict[str, str]:
    """Return an online environment with a fake key and *base_url*, no proxy, no ``WANDB_INIT_TIMEOUT``."""
    env = wandb_env(root, WANDB_MODE="online", WANDB_API_KEY="x" * 40, WANDB_BASE_URL=base_url)
    for name in (*PROXY_VARIABLES, "WANDB_INIT_TIMEOUT"):
        env.pop(name, None)
    return env


def run_folders(root: Path) -> list[str]:
    """Return the names of the run folders and journals under ``root/wandb``, sorted."""
    return sorted(p.name for p in (root / "wandb").iterdir() if "run-" in p.name or "journal" in p.name)


@pytest.mark.slow
def test_c07_unreachable_server_falls_back_to_an_offline_run(wandb_root: Path) -> None:
    """An online run whose server refuses connections: the script exits 0, one warning names the
    failure, the offline folder and ``instrument sync``; every point is in one offline run under
    the run's own id (so ``instrument sync`` uploads it as that run), and nothing else is left."""
    env = online_env(wandb_root, "http://127.0.0.1:9")
    env["INSTRUMENT_EXIT_TIMEOUT"] = "20"  # no waiting on it here: the server is found unreachable at once
    result = run_script(wandb_root, STAGE + """
def main():
    for loss in (0.3, 0.2, 0.1):
        train_step(loss)
    return "ok"

print(main())
""", env=env)
    assert "ok" == result.stdout.strip()
    messages = instrument_warnings(result.stderr)
    assert 1 == len(messages), result.stderr
    folder = re.search(r"`instrument sync (\S+)`", messages[0])
    failed = re.search(r"starting run (\S+) \(online\) failed", messages[0])
    assert folder is not None and failed is not None and "ServerUnreachableError" in messages[0], messages[0]
    (run,) = read_runs(wandb_root / "wandb")
    assert ([(0, 0.3), (1, 0.2), (2, 0.1)], 0, Path(folder.group(1)), failed.group(1)) == (
        run.series("operator/loss"), run.exit_code, run.path.parent, run.run_id)
    assert [Path(folder.group(1)).name] == run_folders(wandb_root)


SILENT_SERVER = """
import os, socket, threading
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
accepted = []  # connections are accepted and never answered
threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in iter(int, 1)], daemon=True).start()
os.environ["WANDB_BASE_URL"] = f"http://127.0.0.1:{server.getsockname()[1]}"
"""


@pytest.mark.slow
def test_c07_a_server_that_never_answers_costs_half_the_exit_timeout_then_the_run_is_offline(wandb_root: Path) -> None:
    """An online run whose server accepts connections and never answers: ``wandb.init`` gives up
    after half of ``INSTRUMENT_EXIT_TIMEOUT`` (not wandb's 90 s), the points land in one offline
    run (a fresh id, named in the warning, since wandb-core still holds the first), the script
    exits 0, and the failed attempt leaves no run folder behind."""
    env = online_env(wandb_root, "http://127.0.0.1:9")
    env["INSTRUMENT_EXIT_TIMEOUT"] = "6"
    result = run_script(wandb_root, SILENT_SERVER + STAGE + """
for loss in (0.3, 0.2, 0.1):
    train_step(loss)
instrument.flush()
print("ok")
""", env=env, timeout=80)  # wandb's own init timeout alone is 90 s
    assert "ok" == result.stdout.strip()
    (message,) = [m for m in instrument_warnings(result.stderr) if "starting run" in m]
    folder = re.search(r"`instrument sync (\S+)`", message)
    renamed = re.search(r"under the new id (\S+) \(wandb still held (\S+)\)", message)
    assert folder is not None and renamed is not None, message
    (run,) = read_runs(wandb_root / "wandb")
    assert ([(0, 0.3), (1, 0.2), (2, 0.1)], 0, Path(folder.group(1)), renamed.group(1)) == (
        run.series("operator/loss"), run.exit_code, run.path.parent, run.run_id)
    assert [Path(folder.group(1)).name] == run_folders(wandb_root)


@pytest.mark.slow
def test_c07_log_failing_mid_run_is_replayed_into_the_same_run_id(wandb_root: Path) -> None:
    """``log`` raising after the first point: "ok" returned; one warning names the journal; the
    journal holds no secret; ``python -m instrument replay`` writes the rest into an offline run
    with the same id (resume allowed) and removes the journal; no point is lost."""
    result = run_script(wandb_root, FAULTY + STAGE + """
backend = FaultyBackend(WandbBackend()).fail("log", after=1)
_linkage.backend_for = lambda mode: backend

@instrument.run_config
def config():
    return {"lr": 0.1, "hf_token": "hf_secret_value"}

config()
print([train_step(loss) for loss in (0.3, 0.2, 0.1)] and "ok")
""")
    assert "ok" == result.stdout.strip()
    messages = [m for m in instrument_warnings(result.stderr) if "redacted" not in m]
    assert 1 == len(messages), result.stderr
    journal = Path(replay_command(messages[0]))
    assert "hf_secret_value" not in (journal / "spill.jsonl").read_text()
    replayed = subprocess.run([sys.executable, "-m", "instrument", "replay", str(journal)], cwd=wandb_root,
                              env=wandb_env(wandb_root), capture_output=True, text=True, timeout=120)
    assert 0 == replayed.returncode, replayed.stderr
    assert "instrument sync" in replayed.stdout
    assert not journal.exists()
    runs = sorted(read_runs(wandb_root / "wandb"), key=lambda run: run.start_time or 0)
    assert 2 == len(runs) and runs[0].run_id == runs[1].run_id
    assert [(0, 0.3)] == runs[0].series("operator/loss")
    assert [(1, 0.2), (2, 0.1)] == runs[1].series("operator/loss")
    assert [0, 0] == [run.exit_code for run in runs]


def test_c08a_uncaught_exception_after_a_point_keeps_it_and_records_exit_code_1(wandb_root: Path) -> None:
    """A script whose stage logged a point and then raised ``RuntimeError("boom")``: the process
    fails with the user's traceback, printed once; the run has the point and exit code 1."""
    result = run_script(wandb_root, STAGE + """
train_step(0.5)

@instrument.training_stage("operator")
def failing():
    raise RuntimeError("boom")

failing()
""", check=False)
    assert 1 == result.returncode
    assert 1 == result.stderr.count("RuntimeError: boom"), result.stderr
    (run,) = read_runs(wandb_root / "wandb")
    assert ([(0, 0.5)], 1) == (run.series("operator/loss"), run.exit_code)


def test_c08b_a_script_that_never_finishes_has_all_points_exit_0_and_one_finish(wandb_root: Path) -> None:
    """100 points and no finish call: the exit hook finishes the run once, with exit code 0."""
    result = run_script(wandb_root, """
import atexit
from instrument._backends import wandb as _wandb_backend
calls = []
original = _wandb_backend.WandbRun.finish
def counting(self, exit_code):
    calls.append(exit_code)
    original(self, exit_code)
_wandb_backend.WandbRun.finish = counting
atexit.register(lambda: print("finish calls:", calls))  # registered first, so it runs last
""" + STAGE + """
for i in range(100):
    train_step(float(i))
""")
    assert "finish calls: [0]" == result.stdout.strip()
    (run,) = read_runs(wandb_root / "wandb")
    assert ([(i, float(i)) for i in range(100)], 0) == (run.series("operator/loss"), run.exit_code)


@pytest.mark.slow
def test_hanging_wandb_finish_cannot_hang_the_exit(wandb_root: Path) -> None:
    """wandb's ``Run.finish`` hanging: the process still exits after ``INSTRUMENT_EXIT_TIMEOUT``,
    one warning names the run folder and ``instrument sync``, and the points are on disk."""
    env = wandb_env(wandb_root, INSTRUMENT_EXIT_TIMEOUT="2")
    result = run_script(wandb_root, """
import time
from wandb.sdk import wandb_run
wandb_run.Run.finish = lambda self, *args, **kwargs: time.sleep(3600)
""" + STAGE + """
for loss in (0.3, 0.2, 0.1):
    train_step(loss)
""", env=env, timeout=90)
    messages = instrument_warnings(result.stderr)
    assert 1 == len(messages), result.stderr
    (run,) = read_runs(wandb_root / "wandb")
    assert f"`instrument sync {run.path.parent}`" in messages[0]
    assert "INSTRUMENT_EXIT_TIMEOUT" in messages[0]
    assert [(0, 0.3), (1, 0.2), (2, 0.1)] == run.series("operator/loss")
