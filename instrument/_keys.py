"""Keys as W&B needs them: mapping keys of any type made strings, metric names escaped for
``define_metric``, media keys kept within the file and artifact names wandb can write
(docs/wandb-behaviour.md, "Values" and "Size limits"). A leaf: imports only ``_kinds``.
"""

from __future__ import annotations

import enum
import hashlib

from instrument._kinds import module_of

#: Longest file or folder name, in bytes (Linux, macOS).
_NAME_MAX = 255
#: What wandb appends to a media key's last segment: ``_<step>_<20-char hash><extension>``; the
#: extension is at most ``.boxes2D.json``. Kept with room for a long step number.
_MEDIA_SUFFIX = 64
#: The longest key segment a media value may have, in bytes.
MEDIA_SEGMENT_BYTES = _NAME_MAX - _MEDIA_SUFFIX
#: wandb names a logged table's artifact ``run-<run id>-<key>`` and refuses names over 128
#: characters; run ids are 8 characters here, up to 32 elsewhere.
TABLE_KEY_CHARS = 128 - len("run--") - 32


def key_text(key: object) -> str | None:
    """Return a mapping key as the string W&B stores, or None if it cannot be one.

    Strings stay as they are (spaces, dots and any unicode included), ints (numpy's too) and bools become
    their text, enums their value's text, anything else its ``str()``. None and the empty
    string are no key.
    """
    if isinstance(key, str):
        return key or None
    if isinstance(key, enum.Enum):
        return key_text(key.value)
    if key is None:
        return None
    if isinstance(key, bool):
        return str(key)
    if isinstance(key, int):
        return str(int(key))
    item = getattr(key, "item", None)  # numpy and 0-d tensor integers
    if callable(item) and module_of(key) in ("numpy", "torch"):
        return key_text(item())
    text = str(key)
    return text or None


def metric_name(key: str) -> str | None:
    """Return *key* as a ``define_metric`` name, each ``.`` escaped so it is not read as nesting.

    None when ``define_metric`` cannot declare the key: a ``*`` makes the name a glob (wandb
    refuses one anywhere but at the end, and at the end it would match other keys too).
    """
    if "*" in key:
        return None
    return key.replace(".", "\\.") if "." in key else key


def _shortened(text: str, limit: int, *, in_bytes: bool) -> str:
    """Return *text* cut to fit *limit* (characters, or UTF-8 bytes) with ``~`` and a hash appended."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    room = limit - len(digest) - 1
    kept = text[:room]
    while in_bytes and len(kept.encode()) > room:
        kept = kept[:-1]
    return f"{kept}~{digest}"


def media_key(key: str, *, table: bool) -> str:
    """Return *key*, shortened if wandb could not write a media value (a table, with *table*) under it.

    Each ``/``-segment must fit a file name with wandb's suffix; a table's whole key must fit its
    artifact name. A shortened key keeps the start of the original and ends with ``~`` and 8
    characters of its hash, so two long keys stay apart.
    """
    if table and len(key) > TABLE_KEY_CHARS:
        key = _shortened(key, TABLE_KEY_CHARS, in_bytes=False)
    segments = key.split("/")
    if all(len(segment.encode()) <= MEDIA_SEGMENT_BYTES for segment in segments):
        return key
    return "/".join(
        segment if len(segment.encode()) <= MEDIA_SEGMENT_BYTES else _shortened(segment, MEDIA_SEGMENT_BYTES,
                                                                                 in_bytes=True)
        for segment in segments
    )
