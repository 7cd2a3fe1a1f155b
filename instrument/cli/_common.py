"""What every command shares: its error type, number formatting, tables for terminals and Markdown."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: Exit statuses shared by the commands.
OK, FAILED, USAGE, NO_BASELINE, NOT_SYNCED = 0, 1, 2, 3, 4

#: Summary and history keys that wandb adds itself (run time, global step, wall clock, internals).
WANDB_KEYS = frozenset({"_runtime", "_step", "_timestamp", "_wandb"})


class CommandError(Exception):
    """A command cannot go on: the message goes to stderr and the command exits with *status*.

    Args:
        message: What went wrong, naming the argument or file.
        status: The exit status (2, usage or not a run, unless a command documents another).
    """

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status


def unknown_key(option: str, key: str, known: Iterable[str], holder: str) -> CommandError:
    """Return the usage error for an *option* that names a *key* none of the runs holds.

    The message names the option and the key, then the closest keys that do exist (by
    :func:`difflib.get_close_matches`, and keys ending in ``/<key>`` or ``.<key>``), or else
    some of the keys there are, so that a misspelt key fails loudly instead of matching nothing.

    Args:
        option: The option as typed, e.g. ``--metric``.
        key: The key it named, as typed.
        known: The keys the runs do hold, spelt as the option takes them.
        holder: What was searched, for the message, e.g. ``"summary key of the 4 runs read"``.

    Returns:
        The error, exit status 2, for the caller to raise.
    """
    keys = sorted(set(known))
    close = [k for k in keys if k.endswith((f"/{key}", f".{key}"))]
    close += [k for k in difflib.get_close_matches(key, keys, n=3, cutoff=0.6) if k not in close]
    if close:
        hint = f"closest: {', '.join(close[:3])}"
    elif keys:
        hint = f"there are: {', '.join(keys[:12])}" + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
    else:
        hint = "there are none"
    return CommandError(f"{option} {key}: no such {holder}; {hint}")


#: The help of every RUN argument.
RUN_HELP = "a run folder (or its name in ./wandb), its run-<id>.wandb file, or a run id in ./wandb"


def at_least(minimum: int) -> Callable[[str], int]:
    """Return an argparse type that reads an int of at least *minimum* (a usage error otherwise)."""

    def read(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return read


def relative(path: str | os.PathLike[str]) -> str:
    """Return *path* relative to the working directory, for printing (as given on another drive)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return os.fspath(path)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into ``'/'``-joined keys, as W&B names nested summary and config keys.

    A W&B value dict (a table, an image: it has ``_type``) and an empty dict stay leaves.
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and "_type" not in value:
            flat |= flatten(value, f"{prefix}{key}/")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def is_number(value: Any) -> bool:
    """Whether *value* is an int or float (not a bool): what a metric can be compared on."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_number(value: Any) -> float | None:
    """Return *value* as a float when it is an int or float (not a bool), else None."""
    return float(value) if is_number(value) else None


def number(value: Any) -> str:
    """Format a value for a table: 6 significant digits for floats, ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(json_safe(value))


def json_safe(value: Any) -> Any:
    """Return *value* with NaN and infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.

    Strict JSON has no NaN; wandb's own files use these spellings.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Return *value* as strict, indented JSON (see :func:`json_safe`)."""
    return json.dumps(json_safe(value), indent=2, allow_nan=False)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool] = ()) -> list[str]:
    """Return the lines of a table aligned for a terminal.

    Args:
        headers: Column names.
        rows: Cells, already formatted.
        right: Per column, whether to right-align it (numbers); missing entries mean left.
    """
    table = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(width) if i < len(right) and right[i] else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool] = ()) -> list[str]:
    """Return the lines of a GitHub-flavoured Markdown table (``|`` in cells escaped).

    Args:
        headers: Column names.
        rows: Cells, already formatted.
        right: Per column, whether to right-align it (numbers).
    """

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    rule = ["---:" if i < len(right) and right[i] else "---" for i in range(len(headers))]
    return [line(headers), "|" + "|".join(rule) + "|", *(line(row) for row in rows)]
