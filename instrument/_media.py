"""Media conversion: image data W&B accepts, the pictures of an image, histogram values, tables
from DataFrames, and artifact names.

Pure: no wandb, no I/O. numpy is used only for an array the caller already handed in. Imports
only the leaves :mod:`instrument._kinds` and :mod:`instrument._values`.
"""

from __future__ import annotations

import math
import os
import pathlib
import re
from typing import Any

from instrument._kinds import is_array, is_pil_image, is_tensor, numpy, tensor_to_numpy, type_name
from instrument._values import Image, Table

#: Channel counts an image array may have (last axis of HxWxC, first of CxHxW).
IMAGE_CHANNELS = (1, 3, 4)


def image_data(data: Any) -> tuple[Any | None, str]:
    """Return *data* as image data W&B accepts, or ``(None, reason)``.

    Args:
        data: a numpy array or tensor (HxW, HxWx1/3/4, CxHxW; a batch NxHxWxC or NxCxHxW;
            uint8 0..255, float 0..1, bool, or integers within 0..255), a PIL image, or the
            path of an image file.

    Returns:
        ``(converted, note)``: a fresh uint8 array HxW, HxWxC (C of 3 or 4) or a batch NxHxWxC
        (C of 1, 3 or 4), a copy of the PIL image, or an absolute path string; *note* says what
        was clipped (or is ``""``). On failure ``(None, reason)``, the reason naming the shape
        and dtype.
    """
    if isinstance(data, str | os.PathLike):
        return os.path.abspath(os.fspath(data)), ""
    if is_pil_image(data):
        return data.copy(), ""
    if is_tensor(data):
        data = tensor_to_numpy(data)
    if not is_array(data):
        return None, f"image data of type {type_name(data)} is not an array, a PIL image or a path"
    np = numpy()
    array = np.array(data, copy=True)
    shape, dtype = tuple(array.shape), str(array.dtype)
    note = ""
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            note = "non-finite pixels were set to 0"
            array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            note = (note + "; " if note else "") + "float pixels outside 0..1 were clipped"
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif array.dtype.kind == "b":
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind in "iu" and array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            return None, f"an integer image of shape {shape} and dtype {dtype} has values outside 0..255"
        array = array.astype(np.uint8)
    elif array.dtype != np.uint8:
        return None, f"an image of dtype {dtype} (shape {shape}) is not uint8, float or bool"
    bad = (f"an image of shape {shape} and dtype {dtype} is not HxW, HxWx1/3/4, CxHxW or a batch "
           "NxHxWxC")
    if array.ndim in (3, 4) and array.shape[-1] not in IMAGE_CHANNELS:
        if array.shape[-3] not in IMAGE_CHANNELS:
            return None, bad
        array = np.moveaxis(array, -3, -1)  # CxHxW -> HxWxC, NxCxHxW -> NxHxWxC
    if array.ndim not in (2, 3, 4) or 0 in array.shape:
        return None, bad
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]  # one channel is grey: HxW
    array = np.ascontiguousarray(array)
    return array, note


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


def histogram_values(array: Any) -> tuple[list[float], int]:
    """Return the finite values of a numeric 1-D array as floats, and how many were left out."""
    values = [float(x) for x in array.tolist()]
    finite = [x for x in values if math.isfinite(x)]
    return finite, len(values) - len(finite)


def dataframe_table(frame: Any) -> Table:
    """Return a pandas DataFrame as a :class:`~instrument.Table` (column names as strings, no index)."""
    columns = [str(c) for c in frame.columns]
    rows = [list(r) for r in frame.itertuples(index=False, name=None)]
    return Table(columns, rows)


def artifact_name(path: str) -> str:
    """Return the default artifact name for *path*: its stem, W&B-safe (letters, digits, ``-_.``)."""
    stem = pathlib.PurePath(path).stem or pathlib.PurePath(path).name
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem) or "artifact"
