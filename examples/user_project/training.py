"""Training: fit ``y = w * x`` by gradient descent; each epoch is one point of the ``fit`` stage."""

from __future__ import annotations

from collections.abc import Sequence

import instrument

Data = Sequence[tuple[float, float]]


@instrument.run_config
def make_config(lr: float = 0.1, epochs: int = 5) -> dict[str, float | int]:
    """Return the hyperparameters; they land in ``run.config``."""
    return {"lr": lr, "epochs": epochs}


@instrument.training_stage("fit", summary={"loss": "min"})
def train_epoch(weight: float, data: Data, lr: float) -> dict[str, float]:
    """Take one gradient step on the mean squared error; return the new weight and the loss.

    Lands in history as ``fit/loss`` and ``fit/weight`` on the axis ``fit/step``; the summary
    keeps ``fit/loss`` as ``{"min": best}``.
    """
    gradient = sum(2 * (weight * x - y) * x for x, y in data) / len(data)
    weight -= lr * gradient
    loss = sum((weight * x - y) ** 2 for x, y in data) / len(data)
    return {"loss": loss, "weight": weight}


def train(data: Data, lr: float = 0.1, epochs: int = 5) -> float:
    """Fit the weight over *epochs* epochs and return it."""
    config = make_config(lr=lr, epochs=epochs)
    weight = 0.0
    for _ in range(int(config["epochs"])):
        weight = train_epoch(weight, data, float(config["lr"]))["weight"]
    return weight
