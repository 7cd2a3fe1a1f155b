"""Reducing a decorated function's numbers across the ranks of a distributed job.

``training_stage(..., reduce="mean")`` and ``eval_summary(..., reduce="mean")`` hand what the
function returned to :func:`reduce_across_ranks` on every rank: its numbers travel in one packed
``all_reduce`` of the default process group, as Lightning's ``sync_dist`` does, and the reduced
value is what rank 0 writes. Without an initialized process group nothing happens. Never imports
torch: a process group exists only if the program imported ``torch.distributed`` itself.
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Mapping
from typing import Any

from instrument._problems import Problem, report

#: The reductions ``reduce=`` accepts.
OPS = ("mean", "sum", "max", "min")


def check_op(value: object, where: str) -> str | None:
    """Return the reduction *value* names, or None for no reduction.

    Raises:
        ValueError: *value* is not None and not one of :data:`OPS`; the message names *where*.
    """
    if value is None or (isinstance(value, str) and value in OPS):
        return value
    raise ValueError(f"{where}: reduce must be one of {', '.join(map(repr, OPS))} or None, got "
                     f"{type(value).__name__} {value!r}")


def process_group() -> Any | None:
    """Return ``torch.distributed`` when the program initialized its default process group, else None."""
    dist = sys.modules.get("torch.distributed")
    try:
        return dist if dist is not None and dist.is_available() and dist.is_initialized() else None
    except Exception:
        return None


def _number(value: Any) -> float | None:
    """Return *value* as a float if it is a number to reduce: int, float, numpy scalar, or a
    tensor or array of one element; bools and everything else are left alone (None)."""
    kind = type(value)
    if kind is bool or kind.__name__ == "bool_":
        return None
    if kind is int or kind is float:
        return float(value)
    module = kind.__module__
    if module == "numpy" or module.startswith("torch"):
        try:
            if getattr(value, "dtype", None) is not None and str(value.dtype).startswith(("torch.bool", "bool")):
                return None
            if int(getattr(value, "size", 1) if module == "numpy" else value.numel()) != 1:
                return None
            number = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError, AttributeError):
            return None
        return number
    return None


def _leaves(value: Any, path: str, out: list[tuple[str, float]], keep_step: bool) -> None:
    """Collect ``(key path, number)`` for every number of *value*, mappings walked in key order;
    with *keep_step*, a top-level ``step`` key is left out (a stage's own step is not a metric)."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            if not (keep_step and path == "" and key == "step"):
                _leaves(value[key], f"{path}/{key}" if path else str(key), out, False)
        return
    number = _number(value)
    if number is not None:
        out.append((path, number))


def _replace(value: Any, path: str, reduced: dict[str, float], keep_step: bool, whole_ok: bool) -> Any:
    """Return *value* with each number at a path of *reduced* replaced; with *whole_ok* (sum, max,
    min) an int stays an int."""
    if isinstance(value, Mapping):
        return {key: (item if (keep_step and path == "" and key == "step") else
                      _replace(item, f"{path}/{key}" if path else str(key), reduced, False, whole_ok))
                for key, item in value.items()}
    if path not in reduced:
        return value
    number = reduced[path]
    original = _number(value)
    whole = (whole_ok and type(value) is int) or (original is not None and "int" in str(getattr(value, "dtype", "")))
    return int(number) if whole and math.isfinite(number) and number.is_integer() else number


def reduce_across_ranks(value: Any, op: str, *, function: str = "", keep_step: bool = False) -> Any:
    """Return *value* with its numbers reduced across the ranks with *op*; unchanged without an
    initialized process group.

    It is a collective operation: every rank must call it, with a value of the same numeric keys
    (a rank that skips it makes the others wait). Numbers are ints, floats, numpy scalars and
    one-element tensors or arrays, at the top level or in nested mappings; bools, strings, media
    and markers are left as they are (rank 0's own). ``mean`` sums and divides by the world size;
    ints stay ints for ``sum``, ``max`` and ``min``. The numbers go in one float64 tensor (on the
    current CUDA device for the NCCL backend, padded to at least 16 numbers) through one
    ``all_reduce`` of the default process group, behind a header with their count and a digest
    of their key paths: when the ranks' keys differ, a warning names *function* and each rank
    keeps its own values.

    Args:
        value: what the decorated function returned or yielded (a mapping, or a bare number).
        op: one of :data:`OPS`.
        function: the decorated function, for the warning.
        keep_step: leave a top-level ``step`` key alone (a stage's step, not a metric).
    """
    dist = process_group()
    if dist is None:
        return value
    leaves: list[tuple[str, float]] = []
    _leaves(value, "", leaves, keep_step)
    import torch  # already imported: the process group exists

    count = len(leaves)
    digest = float(zlib.crc32("\0".join(path for path, _ in leaves).encode()))
    header = [digest, -digest, float(count), -float(count)]
    # Padded to a power of two (at least 16), so that ranks whose numbers differ by a few still
    # make tensors of one size: the header then tells, where a size mismatch would hang.
    size = max(16, 1 << max(0, count - 1).bit_length())
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    packed = torch.zeros(len(header) + size, dtype=torch.float64, device=device)
    packed[: len(header) + count] = torch.tensor(header + [number for _, number in leaves], dtype=torch.float64)
    reduction = {"mean": dist.ReduceOp.SUM, "sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                 "min": dist.ReduceOp.MIN}[op]
    dist.all_reduce(packed, op=reduction)
    world = dist.get_world_size()
    result = packed.tolist()
    factor = world if op in ("sum", "mean") else 1
    if result[:4] != [number * factor for number in header]:
        report(Problem("config", f"instrument: {function or 'reduce'}: the ranks returned different numeric keys, "
                       f"so reduce={op!r} could not combine them; each rank kept its own values",
                       function or "reduce"), once=True)
        return value
    numbers = result[len(header): len(header) + count]
    if op == "mean":
        numbers = [number / world for number in numbers]
    reduced = {path: number for (path, _), number in zip(leaves, numbers, strict=True)}
    return _replace(value, "", reduced, keep_step, op != "mean")
