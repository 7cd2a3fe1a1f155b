"""A wandb-core that stops answering (frozen with SIGSTOP by the test) still lets the process exit,
and what it never wrote is kept for ``python -m instrument replay`` without duplicating a row."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import eventually, wandb_env

from instrument._backends.base import Call
from instrument._backends.wandb_core import Retained, same_row
from instrument.runfile import read_runs

#: The script: two stage points made durable (wandb flushes its file every second), two more
#: handed to wandb, then it waits for the test to freeze wandb-core and ends. With WHEN
#: "before-the-run" the test freezes wandb-core before the first record, so that starting the
#: run hangs; with "after-finish" once the run was finished, so that only wandb's teardown hangs.
SCRIPT = """
import os, pathlib, time
import instrument

WHEN = {when!r}
FREEZE_FIRST = WHEN == "before-the-run"

@instrument.training_stage("train")
def step(i):
    return {{"loss": 1.0 / (i + 1)}}

def wait_for_the_freeze():
    pathlib.Path("ready").write_text("")
    while not pathlib.Path("frozen").exists():
        time.sleep(0.02)

if FREEZE_FIRST:
    from wandb.sdk import wandb_setup
    wandb_setup.singleton().ensure_service()  # wandb-core runs; no run started yet
    wait_for_the_freeze()
for i in range(2):
    step(i)
if not FREEZE_FIRST:
    instrument.flush()
    time.sleep(2.5)  # wandb-core writes these two to the run file
    for i in range(2, 4):
        step(i)
    instrument.flush()
    if WHEN == "after-finish":
        instrument.finish()
    wait_for_the_freeze()
"""


def _wandb_core_of(pid: int) -> int | None:
    """Return the pid of the wandb-core process that *pid* started, if it runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        if parent == pid and name.startswith("wandb-core"):
            return int(entry.name)
    return None


@contextlib.contextmanager
def _frozen_core_cleanup(process: subprocess.Popen[bytes], found: list[int]) -> Iterator[None]:
    """Whatever happens, end the script and thaw and kill the wandb-core it started, by pid."""
    try:
        yield
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in found:
            for sent in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sent)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finding wandb-core's pid reads /proc (Linux)")
@pytest.mark.parametrize("when", ["after-logging", "before-the-run", "after-finish"])
def test_a_frozen_wandb_core_lets_the_process_exit_and_loses_nothing(wandb_root: Path, when: str) -> None:
    """The script exits with status 0, the warning says wandb-core was killed and where the rows are,
    and the run folder plus the replayed journal hold every row exactly once."""
    wandb_root.mkdir(exist_ok=True)
    (wandb_root / "script.py").write_text(textwrap.dedent(SCRIPT.format(when=when)))
    env = wandb_env(wandb_root, INSTRUMENT_EXIT_TIMEOUT="5")
    found: list[int] = []
    with open(wandb_root / "out.txt", "wb") as out:  # wandb-core inherits it: never a pipe
        process = subprocess.Popen([sys.executable, "script.py"], cwd=wandb_root, env=env, stdout=out, stderr=out)
        with _frozen_core_cleanup(process, found):
            eventually(lambda: (wandb_root / "ready").exists() or process.poll() is not None, timeout=120)
            core = _wandb_core_of(process.pid)
            assert core is not None, (wandb_root / "out.txt").read_text()
            found.append(core)
            os.kill(core, signal.SIGSTOP)
            (wandb_root / "frozen").write_text("")
            returncode = process.wait(timeout=120)  # about the exit timeout plus a second or two
    output = (wandb_root / "out.txt").read_text()
    assert 0 == returncode, output
    if when == "after-finish":  # the run was written in full: only the kill is said
        (message,) = [m for m in re.findall(r"InstrumentationWarning: (.*)", output) if "SIGKILL" in m]
        assert f"wandb-core (pid {core})" in message
        (run,) = read_runs(wandb_root / "wandb")
        assert [(i, 1.0 / (i + 1)) for i in range(4)] == run.series("train/loss")
        return
    (message,) = [m for m in re.findall(r"InstrumentationWarning: (.*)", output) if "never wrote" in m]
    assert f"stopped wandb-core (pid {core}) with SIGKILL" in message
    assert "INSTRUMENT_EXIT_TIMEOUT" in message
    journal = message.split("python -m instrument replay ", 1)[1].split("`", 1)[0]
    replayed = subprocess.run([sys.executable, "-m", "instrument", "replay", journal], cwd=wandb_root,
                              env=wandb_env(wandb_root), capture_output=True, text=True, timeout=120)
    assert 0 == replayed.returncode, replayed.stderr
    rows = sorted(point for run in read_runs(wandb_root / "wandb") for point in run.series("train/loss"))
    expected = [(i, 1.0 / (i + 1)) for i in range(2 if when == "before-the-run" else 4)]
    assert expected == rows


def test_the_calls_after_the_last_row_in_the_file_are_unwritten() -> None:
    """Kept calls up to the file's last row are written; what follows it is returned, after the
    declarations of the keys it uses."""
    retained = Retained(seconds=5.0, max_bytes=1 << 20)
    retained.add(0.0, "define_metric", {"name": "a", "step_metric": "s", "summary": None}, 10)
    for i in range(4):
        retained.add(0.1 * i, "log", {"row": {"a": float(i), "s": i}}, 10)
    retained.add(0.5, "update_summary", {"values": {"x": 1}}, 10)
    expected: list[Call] = [("define_metric", {"name": "a", "step_metric": "s", "summary": None}),
                            ("log", {"row": {"a": 2.0, "s": 2}}), ("log", {"row": {"a": 3.0, "s": 3}}),
                            ("update_summary", {"values": {"x": 1}})]
    assert expected == retained.unwritten([{"a": 0.0, "s": 0, "_step": 0}, {"a": 1.0, "s": 1, "_step": 1}])


def test_every_kept_call_is_unwritten_when_the_file_holds_none_of_its_rows() -> None:
    """A file whose last row is older than everything kept gives back every kept call."""
    retained = Retained(seconds=5.0, max_bytes=1 << 20)
    retained.add(0.0, "log", {"row": {"a": 5.0}}, 10)
    assert [("log", {"row": {"a": 5.0}})] == retained.unwritten([{"a": 4.0}])
    assert [("log", {"row": {"a": 5.0}})] == retained.unwritten([])


def test_calls_older_than_the_window_or_over_the_bytes_are_let_go() -> None:
    """Only the last *seconds* are kept, and at most *max_bytes*; rows let go early are counted."""
    retained = Retained(seconds=5.0, max_bytes=25)
    retained.add(0.0, "log", {"row": {"a": 0.0}}, 10)
    retained.add(10.0, "log", {"row": {"a": 1.0}}, 10)
    retained.add(10.1, "log", {"row": {"a": 2.0}}, 10)
    retained.add(10.2, "log", {"row": {"a": 3.0}}, 10)
    assert [("log", {"row": {"a": 2.0}}), ("log", {"row": {"a": 3.0}})] == retained.unwritten([])
    assert 1 == retained.dropped_rows


@pytest.mark.parametrize(
    ("mine", "theirs", "same"),
    [
        ({"a": 1.5, "n": 2, "ok": True}, {"a": 1.5, "n": 2, "ok": True, "_step": 3, "_runtime": 0.1}, True),
        ({"a": float("nan")}, {"a": float("nan")}, True),
        ({"a": 1.5}, {"a": 1.25}, False),
        ({"a": 1.5}, {"b": 1.5}, False),
        ({"img": object()}, {"img": {"_type": "image-file"}}, True),
    ],
)
def test_a_row_is_recognised_in_the_file_by_its_plain_values(mine: dict[str, object], theirs: dict[str, object],
                                                             same: bool) -> None:
    """Plain values must be equal (NaN to NaN); media need only be there; wandb's own keys are ignored."""
    assert same == same_row(mine, theirs)
