"""The run an eval's gates write their verdicts to, as the gates see it: its id, project and
config, whether gate files are kept (not under a test's backend); a journal's run is its
pipeline's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from instrument import _linkage_state
from instrument._linkage import Sink
from instrument._problems import Problem
from instrument._records import Record
from instrument._session import Session


@attrs.frozen(slots=True)
class GatedRun:
    """The run a sink writes to, as an eval's gates see it (``_gating.GatedRun``).

    Attributes:
        sink: where the verdicts are written (the same sink as the eval's values).
        run_id, project: the run's id and project (the pipeline run's, for a journal).
        config: the run config this process wrote (None through a journal).
        keeps_files: False under a swapped-in backend (a test's recording): no gate file is written.
    """

    sink: Sink
    run_id: str
    project: str | None
    config: dict[str, Any] | None
    keeps_files: bool

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Write *records* to the sink."""
        self.sink.write(records, problems)


def gated_run(sink: Sink) -> GatedRun:
    """Return what an eval's gates need to know about the run *sink* writes to."""
    state = _linkage_state.state
    keeps_files = state.backend is None
    if isinstance(sink, Session):
        return GatedRun(sink, sink.id, sink.spec.project, sink.config(), keeps_files)
    with _linkage_state.lock:
        run_id = next((run_id for run_id, journal in state.journals.items() if journal is sink), None)
        context = next((c for c in state.contexts.values() if c.run_id == run_id), None)
    if run_id is None:
        raise ValueError(f"instrument: the sink {sink!r} is neither a run of this process nor a pipeline's journal")
    return GatedRun(sink, run_id, context.project if context is not None else None, None, keeps_files)
