"""``python -m instrument``: the command line.

``python -m instrument replay <journal> [--run-id ID] [--keep] [--force]`` writes a journal that
instrument left on disk (a run wandb could not write, or a dead pipeline owner's undrained
journals) into an offline wandb run, prints where it went and the ``wandb sync`` command, and
removes the journal. Exit status 0 on success, 1 when the journal cannot be replayed, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default ``sys.argv[1:]``); return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m instrument",
        description="instrument's command line: write a journal that instrument left on disk into an offline "
        "wandb run (then upload it with: wandb sync <folder>).",
        epilog="Run 'python -m instrument replay --help' for the replay options.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser(
        "replay", help="write a journal left on disk into an offline wandb run",
        description="Write a journal instrument left on disk into an offline wandb run, then remove it.",
    )
    replay.add_argument("journal", help="the journal folder (or a file in it) named in instrument's warning")
    replay.add_argument("--run-id", help="write into a run with this id instead of the journal's own")
    replay.add_argument("--keep", action="store_true", help="keep the journal after replaying it")
    replay.add_argument("--force", action="store_true", help="replay even if the writing process seems alive")
    replay.add_argument("--json", action="store_true", help="print the result as one JSON line")
    arguments = parser.parse_args(argv)

    # The replay loads sessions and backends: only once the arguments are known (--help stays fast).
    from instrument._replay import ReplayError, _main_json
    from instrument._replay import replay as run_replay

    try:
        replayed = run_replay(arguments.journal, run_id=arguments.run_id, keep=arguments.keep, force=arguments.force)
    except ReplayError as error:
        print(error, file=sys.stderr)
        return 1
    print(_main_json(replayed) if arguments.json else replayed.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
