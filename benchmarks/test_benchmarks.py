"""The in-process parts of ``bench_dispatch.py`` under pytest-benchmark (skipped without it).

Not collected by the default ``python -m pytest`` (pyproject's testpaths are ``tests`` and
``examples``); run ``python -m pytest benchmarks`` with pytest-benchmark installed. Each test takes
a second or two. No wandb is involved: the calling thread's cost is what is measured; the
comparison with real wandb needs fresh processes and lives in ``bench_dispatch.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")

import instrument
from instrument import _linkage
from instrument._backends.disabled import DisabledRun
from instrument.testing import RunSpec, use_backend

METRICS = {f"m{j}": j * 0.1 for j in range(10)}


class _ThreadedNullBackend:
    """Starts runs that keep nothing, written by a dispatcher thread like the wandb backend's."""

    synchronous = False

    def start(self, spec: RunSpec) -> Any:
        return DisabledRun(spec)

    def adopt(self) -> None:
        return None


@pytest.fixture
def threaded_null() -> Iterator[None]:
    with use_backend(_ThreadedNullBackend()):
        yield


@pytest.fixture
def disabled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    token = _linkage.push_backend(None, inherit_settings=False)  # a fresh production state
    yield
    _linkage.pop_backend(token)


def test_bare_function(benchmark: Any) -> None:
    """The baseline: the undecorated function."""

    def step() -> dict[str, float]:
        return METRICS

    benchmark(step)


def test_disabled_stage_call(benchmark: Any, disabled: None) -> None:
    """A decorated stage call when the mode is disabled (target: at most 2 us over the bare call)."""

    @instrument.training_stage("op")
    def step() -> dict[str, float]:
        return METRICS

    benchmark(step)


def test_stage_call_queued(benchmark: Any, threaded_null: None) -> None:
    """A decorated stage call returning 10 metrics, queued for the dispatcher thread."""

    @instrument.training_stage("op")
    def step() -> dict[str, float]:
        return METRICS

    benchmark(step)


def test_log_training_metric_queued(benchmark: Any, threaded_null: None) -> None:
    """Ten ``log_training_metric`` calls at one step (coalesced into one row)."""
    ctx = instrument.current()
    steps = iter(range(10**9))

    def ten() -> None:
        k = next(steps)
        for name, value in METRICS.items():
            ctx.log_training_metric("op", name, value, step=k)

    benchmark(ten)
