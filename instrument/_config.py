"""Run config values: conversion to plain data, NaN checks and the deep merge.

What W&B does with config is the rule here: ``config.update`` replaces a nested dict whole (so
instrument merges first), NaN anywhere in the config (nested, in a list) is stored as null, and
a value of another type is stored as its ``str()`` (instrument says so). Settings objects are
:mod:`instrument._settings`'. Pure; imports only leaves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from instrument._problems import Problem
from instrument._settings import Note, plain

#: What the config accepts, for messages.
CONFIG_KINDS = ("a mapping or a settings object (a dataclass, attrs or pydantic instance, an argparse.Namespace, "
                "an OmegaConf config)")


def plain_config(value: Any, problems: list[Problem] | None = None) -> Any:
    """Return *value* as plain config data: nesting kept, JSON-safe (:func:`instrument._settings.plain`).

    Settings objects become dicts, paths strings, tuples and sets lists, enums their value,
    numpy and tensor values numbers and lists. A leaf that is no config value is stored as its
    ``str()``: a problem saying so (advisory, once per key) is appended to *problems*.
    """
    notes: list[Note] = []
    converted = plain(value, notes)
    if problems is not None:
        problems.extend(Problem("converted", f"instrument: config key {note.key!r}: {note.message}",
                                f"config:{note.key}") for note in notes)
    return converted


def nan_keys(values: Any, path: str = "") -> list[str]:
    """Return the ``a/b`` paths of the config *values* (plain data) that are or hold a NaN float.

    wandb stores NaN anywhere in the config (nested, or inside a list) as null.
    """
    if isinstance(values, float) and math.isnan(values):
        return [path]
    if isinstance(values, Mapping):
        return [found for key, value in values.items() for found in nan_keys(value, _join(path, str(key)))]
    if isinstance(values, list | tuple):
        return [path] if any(nan_keys(value, path) for value in values) else []
    return []


def nan_config_problems(values: Any, prefix: str | None = None) -> list[Problem]:
    """Return one problem per config key in *values* (under *prefix*) that holds a NaN."""
    return [Problem("non_finite", f"instrument: config key {key!r} is NaN; wandb stores NaN in the config "
                    "as null", f"config:{key}") for key in nan_keys(values, prefix or "")]


def same_value(old: Any, new: Any) -> bool:
    """Return whether two config values are equal, NaN equal to NaN (also inside lists)."""
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(same_value(a, b) for a, b in zip(old, new, strict=True))
    return bool(old == new) or (_is_nan(old) and _is_nan(new))


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def deep_merge(target: dict[str, Any], values: dict[str, Any], path: str, changed: list[str]) -> None:
    """Merge *values* into *target* in place; append to *changed* each leaf whose value changed
    (``"a/b (old -> new)"``). Nested dicts merge key by key; anything else replaces."""
    for key, value in values.items():
        full = f"{path}/{key}" if path else key
        old = target.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            deep_merge(old, value, full, changed)
            continue
        if key in target and not same_value(old, value):
            changed.append(f"{full} ({old!r} -> {value!r})")
        target[key] = value if not isinstance(value, dict) else {**value}


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key
