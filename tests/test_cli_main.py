"""Tests of the ``instrument`` command's entry points: the parser, the console script, no wandb import."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from helpers import ROOT

import instrument
from instrument.cli import main


def test_the_console_script_is_declared() -> None:
    """pyproject declares the ``instrument`` console script on instrument.cli:console."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "instrument.cli:console" == project["scripts"]["instrument"]


def test_help_lists_every_command_and_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 listing each command; an unknown command or a missing argument exits 2."""
    assert 0 == main(["--help"])
    listed = capsys.readouterr().out
    assert all(f"    {name} " in listed or f"    {name}\n" in listed for name in
               ("show", "compare", "gate", "baseline", "leaderboard", "plot", "sync", "replay"))
    assert (2, 2, 2) == (main(["frobnicate"]), main(["show"]), main(["leaderboard"]))


def test_the_command_line_does_not_import_wandb() -> None:
    """Building the parser and running a command that reads no run leaves wandb unimported."""
    code = ("import sys\nfrom instrument.cli import main\nmain(['sync', '--dry-run', '/nonexistent'])\n"
            "main(['baseline', '--help'])\nprint('wandb' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert "False" == result.stdout.strip().splitlines()[-1]


def test_version_prints_the_package_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """``instrument --version`` and ``python -m instrument --version`` print instrument's version first and exit 0."""
    assert 0 == main(["--version"])
    printed = capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "instrument", "--version"], capture_output=True, text=True,
                            check=False, cwd=ROOT)
    assert printed.startswith(f"instrument {instrument.__version__} (wandb ")
    assert (0, printed) == (result.returncode, result.stdout)


def test_an_unknown_option_prints_the_usage_of_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt option after a command exits 2 with that command's usage (``show``, ``gate check``),
    not the top-level one, and the option named."""
    shown = []
    for argv in (["show", "RUN", "--jsn"], ["gate", "check", "RUN", "--x"]):
        status = main(argv, {})
        err = capsys.readouterr().err.splitlines()
        shown.append((status, err[0].split(" [")[0], err[-1]))
    assert [(2, "usage: instrument show", "instrument show: error: unrecognized arguments: --jsn"),
            (2, "usage: instrument gate check", "instrument gate check: error: unrecognized arguments: --x")] == shown
