"""What a value is: numbers, steps, arrays, tensors, PIL images, DataFrames, W&B data types.

Recognised by duck typing and the module of their class: numpy, torch, pandas, PIL and wandb are
never imported here (numpy is used only for an array the caller already handed in). A leaf: it
imports nothing of instrument's.
"""

from __future__ import annotations

import decimal
import math
import numbers
import sys
from typing import Any

_TENSOR_MODULES = frozenset({"torch", "jax", "jaxlib", "tensorflow"})


def module_of(value: object) -> str:
    """Return the top-level package of *value*'s class (``"numpy"`` for a ``numpy.float32``)."""
    return type(value).__module__.split(".", 1)[0]


def type_name(value: object) -> str:
    """Return the dotted name of *value*'s class, for messages (``"numpy.ndarray"``)."""
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def shown(value: object, limit: int = 60) -> str:
    """Return *value*'s type and its repr cut to *limit* characters, for messages (``"int 3"``)."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= limit else text[:limit - 3] + '...'}"


def is_tensor(value: object) -> bool:
    """Return whether *value* looks like a torch/jax/tensorflow tensor (duck typing, nothing imported)."""
    return module_of(value) in _TENSOR_MODULES and hasattr(value, "shape")


def is_array(value: object) -> bool:
    """Return whether *value* is a numpy array (``numpy.ndarray`` or a subclass)."""
    return (module_of(value) == "numpy" and hasattr(value, "ndim") and hasattr(value, "dtype")
            and hasattr(value, "shape"))


def is_wandb_value(value: object) -> bool:
    """Return whether *value* is a W&B data type (``wandb.Table``, ``wandb.Image``, ...).

    Recognised by its class hierarchy (wandb's ``WBValue`` base), without importing wandb.
    """
    return module_of(value) == "wandb" and any(cls.__name__ == "WBValue" for cls in type(value).__mro__)


def is_custom_chart(value: object) -> bool:
    """Return whether *value* is a chart of ``wandb.plot`` (``wandb.plot.line(...)``, a ``CustomChart``)."""
    return (module_of(value) == "wandb" and type(value).__name__ == "CustomChart" and hasattr(value, "table")
            and hasattr(value, "spec"))


def is_wandb_artifact(value: object) -> bool:
    """Return whether *value* is a ``wandb.Artifact``."""
    return module_of(value) == "wandb" and type(value).__name__ == "Artifact" and hasattr(value, "manifest")


def is_matplotlib_figure(value: object) -> bool:
    """Return whether *value* is a matplotlib figure (duck typing, matplotlib is not imported)."""
    return module_of(value) == "matplotlib" and hasattr(value, "savefig") and hasattr(value, "canvas")


def is_plotly_figure(value: object) -> bool:
    """Return whether *value* is a plotly figure (duck typing, plotly is not imported)."""
    return module_of(value) == "plotly" and hasattr(value, "to_plotly_json") and hasattr(value, "to_json")


def is_pil_image(value: object) -> bool:
    """Return whether *value* is a PIL image (duck typing, PIL is not imported)."""
    return module_of(value) == "PIL" and hasattr(value, "size") and hasattr(value, "mode") and hasattr(value, "copy")


def is_dataframe(value: object) -> bool:
    """Return whether *value* is a pandas DataFrame (duck typing, pandas is not imported)."""
    return module_of(value) == "pandas" and hasattr(value, "columns") and hasattr(value, "itertuples")


def tensor_to_numpy(value: Any) -> Any:
    """Return the numpy array of a tensor (detached and moved to the CPU first when it can be).

    numpy has no bfloat16: a bfloat16 tensor becomes float32 first (every bfloat16 value is
    exact in float32).
    """
    for step in ("detach", "cpu"):
        method = getattr(value, step, None)
        if callable(method):
            value = method()
    if str(getattr(value, "dtype", "")) == "torch.bfloat16":
        value = value.float()
    return value.numpy() if hasattr(value, "numpy") else value


def numpy() -> Any:
    """Return the numpy module; only called for an array the caller handed in, so it is imported."""
    return sys.modules.get("numpy") or __import__("numpy")


def as_number(value: object) -> int | float | bool | None:
    """Return *value* as a plain Python number, or None if it is not a scalar number.

    Accepts int, float, bool (and their subclasses, such as ``IntEnum``), numpy scalars, 0-d
    numpy arrays and 0-d tensors (through ``.item()``), and the other real numbers
    (``decimal.Decimal``, ``fractions.Fraction``, any ``numbers.Real``) as floats. NaN and
    infinities are numbers.
    """
    if type(value) in (bool, int, float):
        return value  # type: ignore[return-value]
    if isinstance(value, bool | int | float):  # subclasses such as IntEnum
        return bool(value) if isinstance(value, bool) else int(value) if isinstance(value, int) else float(value)
    if (module_of(value) == "numpy" or is_tensor(value)) and tuple(getattr(value, "shape", (1,))) == () \
            and hasattr(value, "item"):
        value = value.item()
        if isinstance(value, bool | int | float):
            return value
    if isinstance(value, numbers.Real | decimal.Decimal):
        try:
            return float(value)
        except (ValueError, OverflowError):  # a signalling NaN, a fraction beyond floats
            return None
    return None


#: The steps wandb keeps exactly: a history value is a 64-bit int or else a float.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def as_step(value: object) -> int | None:
    """Return *value* as an exact int step, or None if it is not a whole number within 64 bits.

    ``10``, ``10.0``, ``np.int64(10)``, ``Decimal("10")`` and a 0-d tensor holding 10 give 10;
    ``10.5``, ``"10"``, NaN, bools and ``2**70`` give None.
    """
    if isinstance(value, bool):
        return None
    number = as_number(value)
    if isinstance(number, bool) or number is None:
        return None
    if isinstance(number, float):
        if not math.isfinite(number) or number != int(number):
            return None
        number = int(number)
    return number if INT64_MIN <= number <= INT64_MAX else None
