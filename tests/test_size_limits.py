"""Oversized payloads are never cut silently, and float images keep their pixels (real wandb offline).

wandb has limits instrument can hit: a table keeps 200,000 rows (and 10,000 in the run's media
file), a histogram at most 512 bins, a list of images 108 images, a media file name at most 255
bytes (it starts with the key), a table's artifact name 128 characters. Each is either kept
within the limit with a warning naming the key, the size and the limit, or not reached at all.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from helpers import run_script

from instrument.runfile import RunFile, read_runs

pytestmark = pytest.mark.integration

SCRIPT = """
import json, warnings
import numpy as np
import instrument

@instrument.eval_summary(prefix="eval")
def evaluate(first):
    big = {"big": instrument.Table(["i"], [[i] for i in range(250_000)])} if first else {}
    return {
        **big,
        "fine": instrument.Histogram(np.linspace(0.0, 1.0, 1000), num_bins=1000),
        "pair": instrument.Histogram((np.ones(600), np.arange(601.0))),
        "batch": instrument.Image(np.zeros((120, 2, 2, 1), np.uint8)),
        "long_" + "x" * 300: instrument.Image(np.zeros((2, 2), np.uint8)),
        "table_" + "t" * 200: instrument.Table(["a"], [[1]]),
        "signed": instrument.Image(np.linspace(-1.0, 1.0, 12).reshape(3, 4)),
        "bytes": instrument.Image(np.arange(12.0).reshape(3, 4) * 20),
        "overshoot": instrument.Image(np.linspace(0.0, 1.2, 12).reshape(3, 4)),
        "wild": instrument.Image(np.linspace(-5.0, 3.0, 12).reshape(3, 4)),
        "loss": 0.5,
    }

with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    evaluate(True)
    evaluate(False)  # the rescaling notes are said once per key
    instrument.finish()
json.dump([str(w.message) for w in seen], open("warnings.json", "w"))
"""


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFile, list[str]]:
    """The oversized values written by real wandb offline, and the warnings they caused."""
    root = tmp_path_factory.mktemp("limits")
    run_script(root, SCRIPT, timeout=300)
    (run,) = read_runs(root / "wandb")
    return run, json.loads((root / "warnings.json").read_text())


def _about(warned: list[str], key: str) -> list[str]:
    return [message for message in warned if f"key {key!r}" in message]


def _pixels(run: RunFile, image: dict[str, Any]) -> list[list[int]]:
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(run.path.parent / "files" / image["path"])).tolist()  # type: ignore[no-any-return]


def test_a_table_over_the_row_limit_is_named_with_its_row_count(written: tuple[RunFile, list[str]]) -> None:
    """A 250,000-row table warns naming the key, 250000 rows and wandb's 200000-row limit."""
    run, warned = written
    about = _about(warned, "eval/big")
    assert (1, True, 250000) == (len(about), all("250000" in m and "200000" in m for m in about),
                                 run.summary["eval/big"]["nrows"])


def test_histograms_over_512_bins_are_rebinned_with_a_warning(written: tuple[RunFile, list[str]]) -> None:
    """1,000 requested bins become wandb's maximum of 512; a 600-bin pair is merged to 300 bins with every
    count kept; both warn naming the key and the limit."""
    run, warned = written
    fine, pair = run.summary["eval/fine"], run.summary["eval/pair"]
    assert (512, 300, 600.0, 0.0, 600.0) == (len(fine["values"]), len(pair["values"]), sum(pair["values"]),
                                              pair["bins"][0], pair["bins"][-1])
    assert all(_about(warned, key) and all("512" in m for m in _about(warned, key)) for key in ("eval/fine", "eval/pair"))


def test_a_batch_over_wandbs_image_limit_is_named(written: tuple[RunFile, list[str]]) -> None:
    """A batch of 120 images warns that wandb keeps 108 of them, naming the key."""
    run, warned = written
    about = _about(warned, "eval/batch")
    assert (108, True) == (run.summary["eval/batch"]["count"], bool(about) and all("120" in m and "108" in m
                                                                                   for m in about))


def test_keys_too_long_for_a_file_name_are_shortened_and_said(written: tuple[RunFile, list[str]]) -> None:
    """A media key too long for wandb's file name (or a table's artifact name) lands under a shortened key
    that the warning names, instead of failing the whole row."""
    run, warned = written
    for long_key in ("eval/long_" + "x" * 300, "eval/table_" + "t" * 200):
        (message,) = set(_about(warned, long_key))
        shortened = message.split("stored under key ")[1].split("'")[1]
        assert (True, True) == (shortened in run.summary, len(shortened) < len(long_key))


def test_float_images_are_rescaled_and_said_once_per_key(written: tuple[RunFile, list[str]]) -> None:
    """[-1, 1] floats map to 0..255 (not clipped at 0), whole-number floats in [0, 255] are the bytes they
    equal, other ranges (a 0..1 image that overshoots to 1.2, [-5, 3]) are stretched to 0..255 with a
    warning naming the range; each note is given once per key."""
    run, warned = written
    keys = ("signed", "bytes", "overshoot", "wild")
    signed, as_bytes, overshoot, wild = (_pixels(run, run.summary[f"eval/{key}"]) for key in keys)
    assert ([0, 255], (np.arange(12).reshape(3, 4) * 20).tolist(), [0, 255], [0, 255]) == (
        [signed[0][0], signed[-1][-1]], as_bytes, [overshoot[0][0], overshoot[-1][-1]], [wild[0][0], wild[-1][-1]])
    counts = [len(_about(warned, f"eval/{key}")) for key in keys]
    assert ([1, 1, 1, 1], True, True) == (counts, "[0, 1.2]" in _about(warned, "eval/overshoot")[0],
                                          "-5" in _about(warned, "eval/wild")[0])


def test_the_rest_of_the_record_lands(written: tuple[RunFile, list[str]]) -> None:
    """Every oversized value beside the loss leaves the loss in place."""
    run, _ = written
    assert 0.5 == run.summary["eval/loss"]
