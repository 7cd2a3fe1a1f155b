"""Type checkers see the decorated functions' own signatures (mypy --strict on tests/typing_usage.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mypy")


def mypy(target: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """Run ``mypy --strict`` on *target* against this checkout's instrument (imports checked silently)."""
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
         "--cache-dir", str(cache), str(target)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_typing_usage_passes_mypy_strict_and_wrong_calls_are_flagged(tmp_path: Path) -> None:
    """typing_usage.py type-checks clean (no reveal_type), and wrong arguments to decorated callables are errors."""
    usage = ROOT / "tests" / "typing_usage.py"
    assert "reveal_type" not in usage.read_text()
    clean = mypy(usage, tmp_path / "cache")
    assert ("", 0) == (clean.stdout + clean.stderr, clean.returncode)

    wrong = ROOT / "tests" / f"_typing_wrong_{os.getpid()}.py"
    wrong.write_text(
        "from typing_usage import Model, evaluate_called, train_epochs, train_step\n"
        "train_step('not a list')\n"
        "train_epochs(epochs='3')\n"
        "evaluate_called('m', sample=4)\n"
        "Model.score(value='a')\n"
    )
    try:
        flagged = mypy(wrong, tmp_path / "cache")
    finally:
        wrong.unlink()
    lines = [line for line in flagged.stdout.splitlines() if ": error:" in line]
    assert 1 == flagged.returncode
    assert [2, 3, 4, 5] == sorted(int(line.split(":")[1]) for line in lines), flagged.stdout
