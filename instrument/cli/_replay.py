"""``instrument replay JOURNAL``: write a journal that instrument left on disk into an offline wandb run."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from instrument.cli._common import FAILED, OK, CommandError


def add_parser(commands: Any) -> None:
    """Add the ``replay`` command to the top-level parser's *commands*."""
    parser = commands.add_parser(
        "replay", help="write a journal left on disk into an offline wandb run",
        description="Write a journal instrument left on disk (named in its warning) into an offline wandb run, "
        "print where it went and the command that uploads it, then remove the journal. Exit status 0; 1 when "
        "the journal cannot be replayed; 2 for bad arguments or a path that does not exist.",
    )
    parser.add_argument("journal", help="the journal folder (or a file in it) named in instrument's warning")
    parser.add_argument("--run-id", help="write into a run with this id instead of the journal's own")
    parser.add_argument("--keep", action="store_true", help="keep the journal after replaying it")
    parser.add_argument("--force", action="store_true", help="replay even if the writing process seems alive")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.set_defaults(handler=run_replay)


def run_replay(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Replay ``arguments.journal``; return 0, or raise :class:`CommandError` with status 1 (2 when
    the path does not exist)."""
    from instrument._replay import ReplayError, _main_json, replay

    if not os.path.exists(arguments.journal):
        raise CommandError(f"{arguments.journal}: no such file or folder")
    try:
        replayed = replay(arguments.journal, run_id=arguments.run_id, keep=arguments.keep, force=arguments.force)
    except ReplayError as error:
        raise CommandError(str(error).removeprefix("instrument replay: "), FAILED) from error
    print(_main_json(replayed) if arguments.json else replayed.report())
    return OK
