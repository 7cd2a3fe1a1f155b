"""Keys made W&B keys: non-string keys as text, metric names escaped, media keys within wandb's lengths."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import pytest

from instrument._keys import (
    MEDIA_SEGMENT_BYTES,
    TABLE_KEY_CHARS,
    key_text,
    media_key,
    metric_name,
)


class Split(enum.Enum):
    TRAIN = "train"


@pytest.mark.parametrize(("key", "text"), [
    ("with space", "with space"), ("ünï", "ünï"), (0, "0"), (np.int64(3), "3"), (True, "True"),
    (Split.TRAIN, "train"), (0.5, "0.5"), ("", None), (None, None),
])
def test_keys_become_the_text_wandb_stores(key: Any, text: str | None) -> None:
    """Strings stay; ints, numpy ints, bools and enums become their text; None and "" are no key."""
    assert text == key_text(key)


def test_metric_names_escape_every_dot() -> None:
    """A dot in a define_metric name is escaped so wandb-core does not read it as nesting."""
    assert ("op/top1\\.acc", "phase1\\.warmup/step", "op/loss") == (
        metric_name("op/top1.acc"), metric_name("phase1.warmup/step"), metric_name("op/loss"))


@pytest.mark.parametrize("key", ["op/lr*", "op/a*b"])
def test_a_key_with_a_star_cannot_be_declared(key: str) -> None:
    """define_metric reads ``*`` as a glob, so a key holding one is not declared."""
    assert metric_name(key) is None


def test_short_media_keys_are_kept() -> None:
    """A media key whose segments fit a file name is unchanged, however many segments it has."""
    key = "/".join(["s" * MEDIA_SEGMENT_BYTES] * 3)
    assert key == media_key(key, table=False)


@pytest.mark.parametrize("segment", ["x" * 300, "ü" * 150])
def test_a_long_media_segment_is_shortened_to_fit_a_file_name(segment: str) -> None:
    """A segment too long for a file name is cut to fit in bytes, ending in ~ and a hash of the whole."""
    shortened = media_key(f"eval/{segment}", table=False)
    last = shortened.split("/")[-1]
    assert ("eval", True, True, segment[:5]) == (shortened.split("/")[0], len(last.encode()) <= MEDIA_SEGMENT_BYTES,
                                                 last[-9] == "~", last[:5])


def test_long_keys_stay_apart_after_shortening() -> None:
    """Two long keys with the same start are shortened to different keys."""
    assert media_key("t" * 300 + "a", table=True) != media_key("t" * 300 + "b", table=True)


def test_a_long_table_key_fits_wandbs_artifact_name() -> None:
    """A table key is cut so that ``run-<id>-<key>`` stays within 128 characters."""
    assert (TABLE_KEY_CHARS, "eval/ttt") == (len(media_key("eval/" + "t" * 200, table=True)),
                                            media_key("eval/" + "t" * 200, table=True)[:8])
