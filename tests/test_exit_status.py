"""Process hygiene: an uncaught exception prints its traceback once and fails the run; under
``python -i`` only the interpreter's real exit status counts. Real wandb offline."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_script, wandb_env

from instrument.runfile import read_runs

pytestmark = pytest.mark.integration

RAISES = """
    import instrument

    @instrument.training_stage("operator")
    def step():
        return {"loss": 0.5}

    step()
    instrument.flush()  # the run has started and taken the point
    raise KeyError("boom")
"""


def test_uncaught_exception_prints_one_traceback_and_fails_the_run(wandb_root: Path) -> None:
    """A script whose run has started and then raises: one traceback on stderr, process exit code
    1, run exit code 1, the point kept."""
    done = run_script(wandb_root, RAISES, check=False)
    assert 1 == done.returncode
    assert 1 == done.stderr.count("Traceback (most recent call last)"), done.stderr
    assert 1 == done.stderr.count("KeyError: 'boom'")
    (run,) = read_runs(wandb_root / "wandb")
    assert 1 == run.exit_code
    assert [(0, 0.5)] == run.series("operator/loss")


def interactive(root: Path, typed: str) -> subprocess.CompletedProcess[str]:
    """Run the RAISES-free session script under ``python -i`` with *typed* at its prompt."""
    root.mkdir(parents=True, exist_ok=True)
    script = root / "session.py"
    script.write_text(textwrap.dedent(RAISES).replace('raise KeyError("boom")', ""))
    return subprocess.run([sys.executable, "-i", str(script)], cwd=root, env=wandb_env(root), input=typed,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("typed", "code"), [("1/0\nprint('still here')\n", 0), ("import sys\nsys.exit(4)\n", 4)])
def test_interactive_session_records_the_interpreters_exit_status(wandb_root: Path, typed: str, code: int) -> None:
    """Under ``python -i`` an exception at the prompt does not fail the run (the session ends with
    status 0); ``sys.exit(4)`` at the prompt ends it, and the run, with 4."""
    done = interactive(wandb_root, typed)
    assert code == done.returncode, done.stderr
    (run,) = read_runs(wandb_root / "wandb")
    assert code == run.exit_code


SIGTERM_MID_LOOP = """
    import os
    import signal

    import instrument

    @instrument.training_stage("operator")
    def step(k):
        return {"loss": float(k)}

    step(0)
    instrument.flush()  # the run has started
    os.kill(os.getpid(), signal.SIGTERM)  # preempted: the run is finished while the loop goes on
    for k in range(1, 10**7):
        step(k)
"""


def test_sigterm_mid_loop_leaves_one_run_and_starts_none(wandb_root: Path) -> None:
    """SIGTERM to a training loop that keeps logging while its run is being finished: the process
    dies of SIGTERM, its run ends with exit code 143 and its first point, and no second run (a
    folder the dying process would leave half written) is started."""
    done = run_script(wandb_root, SIGTERM_MID_LOOP, check=False)
    assert -signal.SIGTERM == done.returncode, done.stderr
    assert 1 == len(list((wandb_root / "wandb").glob("*run-*"))), done.stderr
    (run,) = read_runs(wandb_root / "wandb")
    assert (143, (0, 0.0)) == (run.exit_code, run.series("operator/loss")[0])
