"""Evaluation: final errors of a fitted weight, for ``run.summary``, never history."""

from __future__ import annotations

import math

import instrument

from .training import Data


@instrument.eval_summary(prefix="eval")
def evaluate(weight: float, data: Data) -> dict[str, object]:
    """Return the mean squared error, the normalised RMSE and a per-sample table.

    Lands in the summary as ``eval/mse``, ``eval/nrmse`` and the table ``eval/samples``.
    """
    errors = [(weight * x - y) ** 2 for x, y in data]
    mse = sum(errors) / len(errors)
    spread = math.sqrt(sum(y * y for _, y in data) / len(data)) or 1.0
    table = instrument.Table(["x", "y", "prediction"], [[x, y, weight * x] for x, y in data])
    return {"mse": mse, "nrmse": math.sqrt(mse) / spread, "samples": table}
