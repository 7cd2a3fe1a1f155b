"""Redaction of secret-looking config keys before config leaves the process.

Pure: no wandb, no I/O. A key is secret when one of its segments (the name lowercased and split
on ``_``, ``-``, ``.`` and ``/``) is ``apikey``, ``token``, ``password``, ``passwd`` or
``secret``, or two neighbouring segments are ``api`` and ``key``. So ``api_key``, ``apiKey``,
``hf_token``, ``db.password`` and ``client-secret`` are secret; ``max_tokens``, ``tokenizer`` and
``keyword`` are not. The value of a secret key (a whole nested mapping, if it is one) becomes
:data:`REDACTED`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from instrument._problems import Problem, report

#: What a secret value is replaced with.
REDACTED = "<redacted>"

#: Segments that make a key secret on their own.
SECRET_SEGMENTS = frozenset({"apikey", "token", "password", "passwd", "secret"})

_SPLIT = re.compile(r"[_\-./]+")


def is_secret_key(name: object) -> bool:
    """Return whether the config key *name* looks like it holds a secret (see the module doc)."""
    if not isinstance(name, str):
        return False
    parts = [part for part in _SPLIT.split(name.lower()) if part]
    if any(part in SECRET_SEGMENTS for part in parts):
        return True
    return any(first == "api" and second == "key" for first, second in itertools.pairwise(parts))


def redact(values: Any, found: list[str], path: str = "") -> Any:
    """Return a copy of *values* with the value of every secret key replaced by :data:`REDACTED`.

    Args:
        values: plain config data: mappings (nested), lists, scalars.
        found: the full ``a/b`` path of each redacted key is appended to it.
        path: the path of *values* itself (for nested calls).

    Returns:
        New containers where something was redacted; the same scalars otherwise.
    """
    if isinstance(values, Mapping):
        out: dict[Any, Any] = {}
        for key, value in values.items():
            full = f"{path}/{key}" if path else str(key)
            if is_secret_key(key) and value is not None:
                found.append(full)
                out[key] = REDACTED
            else:
                out[key] = redact(value, found, full)
        return out
    if isinstance(values, list | tuple):
        return [redact(value, found, f"{path}[{index}]") for index, value in enumerate(values)]
    return values


def redact_config(values: Any) -> Any:
    """Return *values* redacted (see :func:`redact`), warning once per redacted key.

    The warning names the key and how to keep it (``redact_secrets=False`` on
    ``instrument.configure()`` or ``instrument.pipeline()``); the function that wrote the
    config is added by :func:`~instrument._problems.report`.
    """
    found: list[str] = []
    out = redact(values, found)
    for key in found:
        report(Problem("redacted", f"instrument: config key {key!r} looks like a secret; its value "
                       f"was replaced by {REDACTED!r} before it left the process (pass redact_secrets=False "
                       "to instrument.configure() or instrument.pipeline() to keep it)", key), once=True)
    return out
