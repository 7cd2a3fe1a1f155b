"""Offline means no network (promise 10): offline and disabled runs make no connection attempt, every
process traced with strace."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wandb_env

from instrument.runfile import read_runs

pytestmark = pytest.mark.integration

STRACE = shutil.which("strace")

#: A socket call of the traced processes that reaches an IPv4 or IPv6 address (a DNS query
#: included); loopback addresses are wandb's own service connection when it listens on one.
_NETWORK_CALL = re.compile(r"\b(connect|sendto|sendmsg)\(.*sa_family=AF_INET6?\b")
_LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"')

SCRIPT = """
import instrument
{configure}

@instrument.training_stage("train")
def step(i):
    return {{"loss": 1.0 / (i + 1)}}

@instrument.eval_summary(prefix="eval")
def evaluate():
    return {{"acc": 0.9}}

for i in range(10):
    step(i)
evaluate()
"""


def _outside_attempts(root: Path, configure: str, env: dict[str, str]) -> list[str]:
    """Run the script under strace (every thread and child: wandb-core too); return the socket
    calls that reach a non-loopback address."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "script.py").write_text(SCRIPT.format(configure=configure))
    trace = root / "trace.txt"
    result = subprocess.run(
        [STRACE or "strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace),
         sys.executable, "script.py"],
        cwd=root, env=env, capture_output=True, text=True, timeout=180,
    )
    assert 0 == result.returncode, result.stderr[-3000:]
    lines = trace.read_text().splitlines()
    return [line for line in lines if _NETWORK_CALL.search(line) and not _LOOPBACK.search(line)]


@pytest.mark.skipif(STRACE is None, reason="strace is not installed, so connection attempts cannot be "
                    "recorded (Debian: apt-get install strace; .ci/run installs it)")
@pytest.mark.parametrize(
    ("case", "configure", "variables"),
    [
        ("no credentials (offline by default)", "", {}),
        ("configure(mode='offline')", "instrument.configure(mode='offline')", {}),
        ("WANDB_MODE=disabled", "", {"WANDB_MODE": "disabled"}),
    ],
)
def test_offline_and_disabled_runs_attempt_no_connection(
    wandb_root: Path, case: str, configure: str, variables: dict[str, str]
) -> None:
    """No process of the run (the script, its threads, wandb-core) sends to or connects to a
    network address, not even a DNS query; an offline run is still written in full."""
    env = wandb_env(wandb_root, **variables)
    for name in ("WANDB_MODE", "WANDB_ERROR_REPORTING"):  # what a user has: neither is set
        if name not in variables:
            env.pop(name, None)
    assert [] == _outside_attempts(wandb_root, configure, env)
    if "disabled" not in case:
        (run,) = read_runs(wandb_root / "wandb")
        assert 10 == len(run.history)
        assert 0.9 == run.summary["eval/acc"]
