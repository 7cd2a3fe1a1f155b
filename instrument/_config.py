"""Run config values: conversion to plain data, NaN checks and the deep merge.

What W&B does with config is the rule here: ``config.update`` replaces a nested dict whole (so
instrument merges first), NaN anywhere in the config (nested, in a list) is stored as null, and
a value of another type is stored as its ``str()``. Pure; imports only the leaves
:mod:`instrument._kinds` and :mod:`instrument._problems`.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Mapping
from typing import Any

import attrs

from instrument._kinds import as_number, module_of
from instrument._problems import Problem


def is_config_mapping(value: object) -> bool:
    """Return whether *value* can be a run config: a mapping, an attrs or dataclass instance, an
    OmegaConf config (recognised by its module, omegaconf is not imported)."""
    if isinstance(value, Mapping) or attrs.has(type(value)) or module_of(value) == "omegaconf":
        return True
    return hasattr(value, "__dataclass_fields__") and not isinstance(value, type)


def plain_config(value: Any) -> Any:
    """Return *value* as plain config data: nesting kept, paths as strings, tuples as lists.

    Accepts mappings, attrs and dataclass instances, OmegaConf configs (recognised, and
    ``omegaconf`` imported only when one was passed), sequences and scalars; numpy and 0-d
    tensor scalars become plain numbers. Other leaves are kept as they are (wandb stores them
    as their ``str()``).
    """
    if module_of(value) == "omegaconf":
        from omegaconf import OmegaConf  # only when one was passed, so it is installed

        value = OmegaConf.to_container(value, resolve=True)
    if attrs.has(type(value)):
        value = attrs.asdict(value, recurse=False)
    elif hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_config(v) for v in value]
    if isinstance(value, pathlib.PurePath):
        return str(value)
    number = as_number(value)
    if number is not None:
        return number
    return value


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
