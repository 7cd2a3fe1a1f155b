"""Media conversion: image data W&B accepts, the pictures of an image, histograms within wandb's
bins, tables from DataFrames, artifact names, and the size limits of wandb that values can reach.

Pure: no wandb, no I/O but rendering a figure the caller handed in. numpy is used only for an
array the caller already handed in. Imports only leaves.
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import re
from typing import Any

from instrument._kinds import (
    is_array,
    is_matplotlib_figure,
    is_pil_image,
    is_tensor,
    numpy,
    tensor_to_numpy,
    type_name,
)
from instrument._values import DEFAULT_BINS, Histogram, Image, Table

#: Channel counts an image array may have (last axis of HxWxC, first of CxHxW).
IMAGE_CHANNELS = (1, 3, 4)

#: wandb's limits, as wandb 0.31 applies them (docs/wandb-behaviour.md, "Size limits").
#: A table keeps this many rows in its artifact (10,000 in the run's media file); the rest are cut.
TABLE_MAX_ROWS = 200_000
#: A histogram holds at most this many bins; wandb refuses more.
HISTOGRAM_MAX_BINS = 512
#: Of a list of images under one key, wandb keeps this many.
IMAGES_PER_KEY = 108
#: wandb's upload skips a history row, or the whole summary, whose JSON is longer than this.
LINE_MAX_BYTES = (10 << 20) - (100 << 10)


def image_data(data: Any) -> tuple[Any | None, str, str]:
    """Return *data* as image data W&B accepts, or ``(None, reason, "")``.

    Args:
        data: a numpy array or tensor (HxW, HxWx1/3/4, CxHxW; a batch NxHxWxC or NxCxHxW; uint8,
            float, bool or integers; bfloat16 tensors too), a PIL image, a matplotlib figure, or
            the path of an image file.

    Returns:
        ``(converted, note, notice)``: a fresh uint8 array HxW, HxWxC (C of 3 or 4) or a batch
        NxHxWxC (C of 1, 3 or 4), a PIL image (a copy, or the figure rendered), or an absolute
        path string. *note* says how pixel values outside uint8's range were mapped to 0..255
        (see :func:`_to_bytes`), *notice* that non-finite pixels were
        set to 0; both ``""`` when nothing was. On failure ``(None, reason, "")``, the reason
        naming the shape and dtype.
    """
    if isinstance(data, str | os.PathLike):
        return os.path.abspath(os.fspath(data)), "", ""
    if is_pil_image(data):
        return data.copy(), "", ""
    if is_matplotlib_figure(data):
        return figure_image(data), "", ""
    if is_tensor(data):
        data = tensor_to_numpy(data)
    if not is_array(data):
        return None, f"image data of type {type_name(data)} is not an array, a PIL image, a figure or a path", ""
    np = numpy()
    array = np.array(data, copy=True)
    shape, dtype = tuple(array.shape), str(array.dtype)
    note = notice = ""
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            notice = "non-finite pixels were set to 0"
            array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
        array, note = _to_bytes(np, array.astype(np.float64), floats=True)
    elif array.dtype.kind == "b":
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind in "iu" and array.dtype != np.uint8:
        array, note = _to_bytes(np, array.astype(np.float64), floats=False)
    elif array.dtype != np.uint8:
        return None, f"an image of dtype {dtype} (shape {shape}) is not uint8, float or bool", ""
    bad = (f"an image of shape {shape} and dtype {dtype} is not HxW, HxWx1/3/4, CxHxW or a batch "
           "NxHxWxC")
    if array.ndim in (3, 4) and array.shape[-1] not in IMAGE_CHANNELS:
        if array.shape[-3] not in IMAGE_CHANNELS:
            return None, bad, ""
        array = np.moveaxis(array, -3, -1)  # CxHxW -> HxWxC, NxCxHxW -> NxHxWxC
    if array.ndim not in (2, 3, 4) or 0 in array.shape:
        return None, bad, ""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]  # one channel is grey: HxW
    array = np.ascontiguousarray(array)
    return array, note, notice


def _to_bytes(np: Any, array: Any, *, floats: bool) -> tuple[Any, str]:
    """Return float64 pixels as uint8 and what was done (``""``: nothing to say).

    Floats in 0..1 are scaled, in -1..1 mapped, whole numbers in 0..255 (an 8-bit picture held as
    floats) are the 8-bit values they equal; integers in 0..255 are kept. Anything else (a 0..1 picture that overshoots,
    normalised pixels, integers past 0..255) is stretched from its range to 0..255, and a single
    value out of those ranges is clipped to 0..255.
    """
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    kind = "float" if floats else "integer"
    if floats and lo >= 0.0 and hi <= 1.0:
        return _clipped(np, array * 255.0), ""
    if floats and lo >= -1.0 and hi <= 1.0:
        return _clipped(np, (array + 1.0) * 127.5), "float pixels in [-1, 1] were mapped to 0..255"
    if lo >= 0.0 and hi <= 255.0 and not floats:
        return _clipped(np, array), ""
    if lo >= 0.0 and hi <= 255.0 and bool((array == np.round(array)).all()):
        return _clipped(np, array), "float pixels, whole numbers in [0, 255], were taken as the 8-bit values they equal"
    if hi == lo:
        return _clipped(np, array), (f"{kind} pixels all equal {lo:g}, outside 0..1, -1..1 and 0..255; they were "
                                     "clipped to 0..255")
    within = "outside 0..1, -1..1 and whole numbers in 0..255" if floats else "outside 0..255"
    return _clipped(np, (array - lo) * (255.0 / (hi - lo))), (f"{kind} pixels range over [{lo:g}, {hi:g}], {within}; "
                                                              "they were stretched to 0..255")


def _clipped(np: Any, array: Any) -> Any:
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


def figure_image(figure: Any) -> Any:
    """Return a matplotlib figure rendered as a PIL image: a PNG at the figure's size and dpi, as
    ``wandb.Image(figure)`` renders it (without needing ``matplotlib.pyplot`` imported)."""
    from PIL import Image as PILImage  # only for a figure, so matplotlib (which needs pillow) is there

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    image = PILImage.open(buffer)
    image.load()
    return image


def is_image_batch(data: Any) -> bool:
    """Return whether converted image data (see :func:`image_data`) holds several pictures."""
    return is_array(data) and data.ndim == 4


def pictures(image: Image) -> list[Any]:
    """Return the pictures *image* holds: one per frame of a batch NxHxWxC, else one.

    Each is what ``wandb.Image`` accepts: a uint8 array (HxW or HxWxC), a PIL image or a path.
    Routing already converted the data (:func:`image_data`).
    """
    data = image.data
    if is_image_batch(data):
        return [frame[:, :, 0] if frame.shape[2] == 1 else frame for frame in data]
    return [data]


def histogram_of(array: Any) -> tuple[Histogram, int]:
    """Return the histogram of a numeric array's finite values, binned as ``wandb.Histogram(values)``
    bins them (``numpy.histogram``, :data:`~instrument._values.DEFAULT_BINS` bins), and how many
    values were left out (NaN, ±inf). One numpy pass: the record holds the bins, not the values."""
    np = numpy()
    values = np.asarray(array, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    counts, edges = np.histogram(finite, bins=DEFAULT_BINS)
    return Histogram(counts=counts.tolist(), bins=edges.tolist()), int(values.size - finite.size)


def within_bins(histogram: Histogram) -> tuple[Histogram, str]:
    """Return *histogram* within wandb's :data:`HISTOGRAM_MAX_BINS`, and what was done (or ``""``).

    More bins requested for values become the maximum; a ``(counts, bin_edges)`` pair of more
    bins has each run of *k* neighbouring bins merged into one (the fewest *k* that fits), so
    every count is kept on coarser bins whose edges are the pair's own.
    """
    if histogram.counts is None or histogram.bins is None:
        if histogram.num_bins <= HISTOGRAM_MAX_BINS:
            return histogram, ""
        note = (f"{histogram.num_bins} bins asked for, more than the {HISTOGRAM_MAX_BINS} wandb keeps; "
                f"{HISTOGRAM_MAX_BINS} bins were used")
        return Histogram(histogram.values, num_bins=HISTOGRAM_MAX_BINS), note
    counts, edges = histogram.counts, histogram.bins
    if len(counts) <= HISTOGRAM_MAX_BINS:
        return histogram, ""
    factor = math.ceil(len(counts) / HISTOGRAM_MAX_BINS)
    merged = [sum(counts[i:i + factor]) for i in range(0, len(counts), factor)]
    kept = list(edges[::factor])
    if len(kept) == len(merged):
        kept.append(edges[-1])
    note = (f"a histogram of {len(counts)} bins is more than the {HISTOGRAM_MAX_BINS} wandb keeps; every "
            f"{factor} neighbouring bins were merged into one ({len(merged)} bins, every count kept)")
    return Histogram(counts=merged, bins=kept), note


def dataframe_table(frame: Any) -> Table:
    """Return a pandas DataFrame as a :class:`~instrument.Table` (column names as strings, no index)."""
    columns = [str(c) for c in frame.columns]
    rows = [list(r) for r in frame.itertuples(index=False, name=None)]
    return Table(columns, rows)


def artifact_name(path: str) -> str:
    """Return the default artifact name for *path*: its stem, W&B-safe (letters, digits, ``-_.``)."""
    stem = pathlib.PurePath(path).stem or pathlib.PurePath(path).name
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem) or "artifact"
