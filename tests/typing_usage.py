"""Type-checked usage of the decorators: `mypy --strict` must pass on this file (tests/test_typing.py).

It is never run by pytest (no test functions); each `assert_type` states what a type checker
must see after decoration: the user's own signature, kept through `ParamSpec`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

import instrument


@instrument.training_stage("operator", summary={"loss": "min"})
def train_step(batch: list[float], *, lr: float = 0.1) -> dict[str, float]:
    """One step."""
    return {"loss": sum(batch) * lr}


@instrument.training_stage("operator")
def train_epochs(epochs: int) -> Iterator[dict[str, float]]:
    """Several points."""
    for epoch in range(epochs):
        yield {"loss": 1.0 / (epoch + 1)}


@instrument.training_stage("operator")
async def train_async(steps: int) -> dict[str, int]:
    """An awaited stage."""
    return {"steps": steps}


@instrument.training_stage("operator")
async def train_stream(steps: int) -> AsyncIterator[dict[str, int]]:
    """An async generator stage."""
    for step in range(steps):
        yield {"step_loss": step}


@instrument.eval_summary
def evaluate_bare(model: str) -> dict[str, float]:
    """Bare form."""
    return {"nrmse": 0.09}


@instrument.eval_summary(prefix="eval_small")
def evaluate_called(model: str, samples: int = 8) -> dict[str, Any]:
    """Called form."""
    return {"nrmse": 0.09, "config": instrument.Config({"samples": samples})}


@instrument.eval_summary("eval_full")
def evaluate_positional(model: str) -> instrument.Summary:
    """Prefix given positionally."""
    return instrument.Summary({"nrmse": 0.1})


@instrument.run_config
def make_config(lr: float) -> dict[str, float]:
    """Bare run_config."""
    return {"lr": lr}


@instrument.run_config()
async def make_config_async(lr: float) -> dict[str, float]:
    """Called run_config on a coroutine function."""
    return {"lr": lr}


@instrument.pipeline(project="p", mode="disabled")
def main(argv: list[str]) -> int:
    """An orchestrator."""
    return len(argv)


@instrument.pipeline
def main_bare(argv: list[str]) -> str:
    """A bare pipeline."""
    return " ".join(argv)


class Model:
    """Methods of every kind keep their signatures."""

    @instrument.training_stage("model")
    def step(self, x: float) -> dict[str, float]:
        """An instance method."""
        return {"x": x}

    @classmethod
    @instrument.eval_summary
    def evaluate(cls, name: str) -> dict[str, str]:
        """A classmethod, decorator under @classmethod."""
        return {"name": name}

    @instrument.training_stage("model")
    @classmethod
    def class_steps(cls, n: int) -> Iterator[dict[str, int]]:
        """A classmethod generator, decorator above @classmethod."""
        yield {"n": n}

    @instrument.eval_summary(prefix="static")
    @staticmethod
    def score(value: float) -> dict[str, float]:
        """A staticmethod, decorator above @staticmethod."""
        return {"value": value}


async def check_types() -> None:
    """What a type checker sees after decoration (never called)."""
    assert_type(train_step([1.0], lr=0.5), dict[str, float])
    assert_type(train_epochs(3), Iterator[dict[str, float]])
    assert_type(await train_async(3), dict[str, int])
    assert_type(train_stream(3), AsyncIterator[dict[str, int]])
    assert_type(evaluate_bare("m"), dict[str, float])
    assert_type(evaluate_called("m", samples=4), dict[str, Any])
    assert_type(evaluate_positional("m"), instrument.Summary)
    assert_type(make_config(0.1), dict[str, float])
    assert_type(await make_config_async(0.1), dict[str, float])
    assert_type(main(["a"]), int)
    assert_type(main_bare(["a"]), str)
    assert_type(Model().step(1.0), dict[str, float])
    assert_type(Model.evaluate("m"), dict[str, str])
    assert_type(Model.score(1.0), dict[str, float])
    assert_type(Model.class_steps(2), Iterator[dict[str, int]])
    instrument.log({"loss": 0.1}, step=3)
