"""Running a suite's gates after an eval returned: evaluate, record, hand the verdicts on.

Called (through :mod:`instrument._runtime`) with the records an eval call wrote and the run
they went to (a :class:`GatedRun`). On the calling thread, before the decorated call returns: the baseline
is resolved, the suite evaluated, the sidecar and the history line written (so both survive a
kill right after), and the verdicts routed like any eval value (summary keys, a table, an alert)
to the same run. Never raises, except :class:`~instrument.GateError` for ``on_fail="raise"``
and strict mode's :class:`~instrument.InstrumentationError` for a baseline that cannot be read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from instrument._gatefiles import (
    Evaluation,
    append_history,
    config_hash,
    git_commit,
    instrument_root,
    merge_store,
    now,
    project_of,
    promotion_entries,
    resolve_baseline,
    write_sidecar,
)
from instrument._gates import GateError, Suite
from instrument._problems import Problem, report
from instrument._records import Record, SendAlert, SummaryUpdate
from instrument._values import Table
from instrument._verdicts import SuiteVerdict, as_metric, evaluate


class GatedRun(Protocol):
    """The run an eval's values went to, as the gates need to know it."""

    @property
    def run_id(self) -> str:
        """The run's id (the pipeline run's, for an eval subprocess)."""

    @property
    def project(self) -> str | None:
        """The run's project, if known."""

    @property
    def config(self) -> Mapping[str, Any] | None:
        """The run config this process knows (None for none)."""

    @property
    def keeps_files(self) -> bool:
        """Whether gate files are written (False under a recording: tests leave no files)."""

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Write records to the run."""


def metrics_of(records: Iterable[Record], prefix: str) -> dict[str, Any]:
    """Return the summary values *records* set under ``<prefix>/``, keys without the prefix."""
    start = f"{prefix}/"
    found: dict[str, Any] = {}
    for record in records:
        if isinstance(record, SummaryUpdate):
            for key, value in record.values.items():
                if key.startswith(start):
                    found[key[len(start):]] = value
    return found


def run_gates(
    suite: Suite,
    records: Iterable[Record],
    target: GatedRun,
    function: str,
    environ: Mapping[str, str] = os.environ,
) -> SuiteVerdict:
    """Evaluate *suite* on what an eval returned and record the verdicts; return them.

    Args:
        suite: the declaration.
        records: the records the eval's value was routed to (its summary values are the metrics).
        target: the run those records went to.
        function: the decorated function's name, for messages and the sidecar.
        environ: where ``WANDB_DIR`` and ``WANDB_PROJECT`` are read.

    Raises:
        GateError: ``on_fail="raise"`` and a ``fail`` gate failed (after everything was written).
        InstrumentationError: strict mode, and the baseline could not be read.
    """
    returned = metrics_of(records, suite.prefix)
    numbers = {key: number for key, value in returned.items() if (number := as_metric(value)) is not None}
    project = project_of(target.project, environ)
    root = instrument_root(environ)
    resolved = resolve_baseline(suite, project=project, run_id=target.run_id, root=root)
    verdict = evaluate(suite, returned, resolved.values if resolved is not None else None)
    if target.keeps_files:
        evaluation = Evaluation(target.run_id, project, suite, numbers, resolved, verdict, function, now(),
                                git_commit(), config_hash(target.config))
        _write_files(evaluation, root)
    target.write(_records(verdict, suite))
    if resolved is not None and resolved.problem:
        report(Problem("config", f"instrument: {function}: the baseline of the gates {suite.prefix!r} could not "
                       f"be read ({resolved.problem.removeprefix('instrument: ')}); the regression gates are "
                       "no_baseline", f"gates/{suite.prefix}"))
    if suite.on_fail == "raise" and not verdict.passed:
        raise GateError(verdict)
    return verdict


def _write_files(evaluation: Evaluation, root: Any) -> None:
    """Write the sidecar and the history line, and promote on pass if asked; failures are warned."""
    suite = evaluation.suite
    try:
        write_sidecar(evaluation, root)
        append_history(evaluation, root)
        if suite.baseline.promote == "on-pass" and evaluation.verdict.passed:
            entries = promotion_entries(evaluation.suite_entry(), evaluation.run_id)
            if entries:
                merge_store(evaluation.project, suite.prefix, entries, root)
    except Exception as error:  # the gates never break the eval
        report(Problem("backend", f"instrument: writing the gate verdicts of {suite.prefix!r} for run "
                       f"{evaluation.run_id} under {root} failed ({type(error).__name__}: {error}); they are "
                       "still in the run's summary"), once=True)


def _records(verdict: SuiteVerdict, suite: Suite) -> list[Record]:
    """Return the verdicts as an eval value's records: summary keys with the table (an eval's
    own summary values), and the alert if one is due."""
    columns, rows = verdict.table()
    records: list[Record] = [SummaryUpdate({**verdict.summary(), f"gates/{suite.prefix}/table": Table(columns, rows)})]
    alert = verdict.alert() if suite.on_fail != "record" else None
    if alert is not None:
        records.append(SendAlert(*alert))
    return records
