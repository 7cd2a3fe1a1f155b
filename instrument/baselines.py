"""The baseline store of the regression gates: ``.instrument/baselines/<project>/<prefix>.json``.

One small JSON file per suite, sorted and indented so that it diffs well and can be committed.
It changes only when a run is promoted: :func:`promote` here, the command line, or an eval
declared with ``Baseline.pinned(promote="on-pass")``. docs/gates.md has the format.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from instrument._gatefiles import (
    GateFileError,
    find_sidecar,
    merge_store,
    promotion_entries,
    read_sidecar,
    read_store,
    store_path,
    store_values,
)
from instrument._verdicts import BaselineValue

__all__ = ["BaselineValue", "GateFileError", "load", "path", "promote"]


def path(project: str, prefix: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Return the store file of suite *prefix* in *project*.

    Args:
        project: the W&B project.
        prefix: the eval's prefix.
        root: the ``.instrument`` folder; default ``<WANDB_DIR>/.instrument``, else
            ``./.instrument``.
    """
    return store_path(project, prefix, Path(root) if root is not None else None)


def load(project: str, prefix: str, root: str | os.PathLike[str] | None = None) -> dict[str, BaselineValue]:
    """Return the stored baseline of suite *prefix* in *project*, by metric (empty when none).

    Raises:
        GateFileError: the store file exists but is malformed; the message names it.
    """
    return store_values(read_store(path(project, prefix, root)))


def promote(
    run: str | os.PathLike[str],
    *,
    prefixes: Iterable[str] | None = None,
    force: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Make *run*'s gated values the stored baseline of each of its suites.

    For every suite the run recorded (or those in *prefixes*), each gated metric with a finite
    value is written to ``.instrument/baselines/<project>/<prefix>.json`` with its
    ``<metric>_stderr`` (if the eval returned one), its direction, and the run id, git commit and
    time of the evaluation. Other metrics already in the store stay. Atomic and locked.

    Args:
        run: a run id, or the path of its sidecar, its wandb run folder or its ``.wandb`` file.
        prefixes: only these suites.
        force: also promote suites whose gates failed.
        root: the ``.instrument`` folder to look the run id up in and to write to; default:
            the one holding the run's sidecar.

    Returns:
        The store files written.

    Raises:
        GateFileError: the run has no gate verdicts, or a store file is malformed.
        ValueError: a suite did not pass and *force* is False, or a name in *prefixes* is not a
            suite of the run; nothing is written then.
    """
    sidecar = find_sidecar(run, Path(root) if root is not None else None)
    data = read_sidecar(sidecar)
    suites = data["suites"]
    chosen = list(suites) if prefixes is None else list(prefixes)
    unknown = [prefix for prefix in chosen if prefix not in suites]
    if unknown:
        raise ValueError(f"instrument.baselines.promote: run {data['run_id']} has no suite {unknown[0]!r} "
                         f"(it has {sorted(suites)})")
    failed = [prefix for prefix in chosen if not suites[prefix].get("passed", False)]
    if failed and not force:
        raise ValueError(f"instrument.baselines.promote: the gates of {failed[0]!r} failed in run {data['run_id']}; "
                         "promote it anyway with force=True (on the command line: `instrument baseline set`)")
    target = Path(root) if root is not None else sidecar.parent.parent.parent
    written = []
    for prefix in chosen:
        entries = promotion_entries(suites[prefix], data["run_id"])
        if entries:
            written.append(merge_store(data["project"], prefix, entries, target))
    return written
