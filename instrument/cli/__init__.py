"""The ``instrument`` command: look at offline runs, compare and rank them, check gates, sync them.

Every command reads the local ``.wandb`` files with :mod:`instrument.runfile` and needs no
account, no network and no server, except ``sync`` (which runs ``wandb sync``). ``python -m
instrument`` is the same command. One module per verb family; :func:`main` is the console script.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from collections.abc import Mapping, Sequence

from instrument import __version__
from instrument.cli import _compare, _gate, _leaderboard, _plot, _replay, _show, _sync
from instrument.cli._common import USAGE, CommandError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the ``instrument`` argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="instrument",
        description="Look at, compare, rank, gate, plot and upload the wandb runs in ./wandb "
        "(or $WANDB_DIR/wandb), offline. Run 'instrument COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print instrument's version (and wandb's and Python's) and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (_show, _compare, _gate, _leaderboard, _plot, _sync, _replay):
        module.add_parser(commands)
    return parser


def version_text() -> str:
    """Return what ``instrument --version`` prints: ``instrument <version> (wandb <version>, Python <version>)``.

    wandb's version is read from its installed metadata, without importing it.
    """
    try:
        wandb = f"wandb {importlib.metadata.version('wandb')}"
    except importlib.metadata.PackageNotFoundError:
        wandb = "wandb not installed"
    return f"instrument {__version__} ({wandb}, Python {platform.python_version()})"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """Run the command line with *argv* (default ``sys.argv[1:]``); return the exit status.

    Args:
        argv: The arguments after the program name.
        environ: The environment (``WANDB_DIR`` and, for ``sync``, what ``wandb sync`` gets).

    Returns:
        The command's exit status: 0 success; 2 bad usage, not a run, or a key, project, suite or
        folder that no run holds (the message names the closest there are); and what each command
        documents (1 a failed gate or a regression, 3 no baseline, 4 runs left unsynced).
    """
    parser = build_parser()
    try:
        arguments, unknown = parser.parse_known_args(argv)
        if unknown:  # argparse would print the top-level usage; the command's own says what it takes
            _command_parser(parser, arguments).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit_:  # argparse exits 2 on bad usage, 0 after --help and --version
        return exit_.code if isinstance(exit_.code, int) else USAGE
    try:
        status: int = arguments.handler(arguments, environ)
    except CommandError as error:
        print(f"instrument {getattr(arguments, 'verb', arguments.command)}: {error}", file=sys.stderr)
        return error.status
    except BrokenPipeError:  # `instrument show RUN | head`
        sys.stderr.close()
        return 0
    return status


def console() -> None:
    """The ``instrument`` console script: run :func:`main` and exit with its status."""
    sys.exit(main())


def _command_parser(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> argparse.ArgumentParser:
    """Return the parser of the (sub)command *arguments* were parsed for (``gate check``, ``show``)."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its subcommands only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            chosen = action.choices.get(getattr(arguments, action.dest, None) or "")
            if chosen is not None:
                return _command_parser(chosen, arguments)
    return parser
