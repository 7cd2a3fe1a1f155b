"""The lazy seam between the decorators and the layers below them (import cost).

``import instrument`` loads only what decorating needs: the decorators, the run options and the
problems. Linkage, sessions, dispatch, journals, backends and routing load on the first record
(or the first pipeline), through the functions here. Each function imports its layer on its
first call and replaces itself in this module by the real function, so later calls go straight
there. The decorator modules call these as ``_runtime.name(...)``, never ``from ... import``.
See docs/DESIGN.md, "Import cost".
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from instrument import _family  # its fork hooks must be in place before the first fork

if TYPE_CHECKING:
    from instrument._gates import Suite
    from instrument._linkage import Sink
    from instrument._options import RunOptions
    from instrument._pipeline_run import PipelineRun
    from instrument._records import Record
    from instrument._routing import Role, Routed
    from instrument._verdicts import SuiteVerdict

# Each function below imports lazily for import cost: the layers load on the first record.


def _drain_workers_at_exit() -> None:
    """When the main thread ends: write what this process's workers journaled, even if the
    process itself never wrote a record (then the layers load only if its inbox exists or
    multiprocessing children still run, which may write to it)."""
    if _family.may_have_inbox() and (_family.inbox_folder(os.getpid()).is_dir() or _family.live_children()):
        _load()
        from instrument import _finishing

        _finishing.drain_workers_at_exit()


_register = getattr(threading, "_register_atexit", None)  # before every atexit hook, as concurrent.futures does
if _register is not None:
    with contextlib.suppress(RuntimeError):  # already shutting down
        _register(_drain_workers_at_exit)


def disabled() -> bool:
    """Return whether a record written now would go nowhere (``_linkage.disabled``)."""
    _load()
    return disabled()


def resolve(role: str) -> Sink | None:
    """Return where a record of *role* written now goes (``_linkage.resolve``)."""
    _load()
    return resolve(role)


def route(
    value: Any, *, role: Role, prefix: str | None, function: str, step: int | None = None,
    summary: Mapping[str, str] | None = None,
) -> Routed:
    """Route a returned value (``_routing.route``)."""
    _load()
    return route(value, role=role, prefix=prefix, function=function, step=step, summary=summary)


def route_numbers(values: Any, prefix: str | None, step: int | None, summary: dict[str, str]) -> Routed | None:
    """Route a stage's flat dict of plain numbers, fast (``_routing.route_numbers``)."""
    _load()
    return route_numbers(values, prefix, step, summary)


def pipeline_run(options: RunOptions) -> PipelineRun:
    """Start a pipeline's own run (``_pipeline_run.PipelineRun``)."""
    _load()
    return pipeline_run(options)


def run_gates(suite: Suite, records: Sequence[Record], function: str) -> SuiteVerdict | None:
    """Run an eval's gates on the records its call wrote, in the run eval values go to now
    (``_gating.run_gates``); None where this process writes no run of its own (a worker, whose
    values go to its parent's run, or a rank that writes nothing)."""
    _load()
    return run_gates(suite, records, function)


def _run_gates(suite: Suite, records: Sequence[Record], function: str) -> SuiteVerdict | None:
    from instrument import _gated_run, _gating, _linkage, _placement

    sink = _linkage.resolve("summary")
    if sink is None or not _placement.placement().writes:
        return None
    return _gating.run_gates(suite, records, _gated_run.gated_run(sink), function)


def _load() -> None:
    global disabled, resolve, route, route_numbers, pipeline_run, run_gates
    from instrument import _linkage, _pipeline_run, _routing

    disabled = _linkage.disabled
    resolve = _linkage.resolve
    route = _routing.route
    route_numbers = _routing.route_numbers
    pipeline_run = _pipeline_run.PipelineRun
    run_gates = _run_gates
