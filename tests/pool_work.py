"""Decorated module-level functions for process-pool tests: a spawned worker imports this module
to find them (``test_processes.test_decorated_functions_go_to_process_pools``)."""

from __future__ import annotations

from typing import Any

import instrument


@instrument.training_stage("work")
def work(i: int) -> dict[str, float]:
    """A stage: one point ``work/i`` per call (in the parent's run, from a pool worker too)."""
    return {"i": float(i)}


@instrument.eval_summary(prefix="check")
def check(i: int) -> dict[str, float]:
    """An eval: summary ``check/i``."""
    return {"i": float(i)}


@instrument.run_config
def settings(i: int) -> dict[str, Any]:
    """A config function: ``config["worker_setting"]``."""
    return {"worker_setting": i}


@instrument.pipeline(project="p")
def experiment(i: int) -> int:
    """A whole pipeline per call (a plain block in a pool worker: its points go to the parent's run)."""
    work(i)
    return i * 10
