"""Where this process stands among its family: a plain process, a rank of a distributed job (and
whether its rank policy lets it write), or a worker whose records go to its parent; and the
options of a run it starts as its own (the run id from the environment, the ranks' group).

Resolved once, at the first record (again after ``configure``, a swapped backend or a fork).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

from instrument import _env, _family, _linkage_state, _ranks
from instrument._options import RunOptions
from instrument._problems import Problem, report
from instrument._workers import Inbox


@attrs.frozen
class Placement:
    """Where this process stands, resolved at its first record (see :func:`placement`).

    Attributes:
        rank: its rank in a distributed job (rank 0 of 1 for a plain process).
        policy: the rank policy in force (``rank0`` or ``per_rank``).
        parent: for a worker, the process its records go to (None otherwise).
        writes: whether it writes runs of its own (not a worker, and its rank writes under the
            policy); a worker's *writes* is False.
    """

    rank: _ranks.Rank
    policy: str
    parent: int | None
    writes: bool


_found: Placement | None = None


def placement(environ: Mapping[str, str] = os.environ) -> Placement:
    """Return where this process stands; resolved once (again after ``configure`` or a fork).

    A worker is a multiprocessing child, or a process forked from one that imported instrument,
    unless it initialized ``torch.distributed`` itself (the ranks ``torch.multiprocessing.spawn``
    starts do; a child forked from a rank only inherits its process group). A worker whose parent,
    as far as it can tell, writes nothing (a rank its policy keeps from writing, mode
    ``disabled``) has no parent here: its records go nowhere and no inbox is created. A parent
    that made its inbox (it started a run, or records under a swapped backend) reads it: then
    only the parent's rank counts, not the mode the worker sees.
    """
    global _found
    with _linkage_state.lock:
        if _found is not None:
            return _found
        state = _linkage_state.state
        policy = _ranks.resolve_policy(state.settings.rank_policy, environ)
        parent = _family.parent_pid()
        if (parent is not None and not _family.forked_from_parent()
                and _ranks.current_rank(environ).source == "torch.distributed"):
            parent = None  # a rank that torch.multiprocessing.spawn started: its own process of the job
        if parent is None:
            rank = _ranks.current_rank(environ)
            found = Placement(rank, policy, None, _ranks.writes(rank, policy))
        else:
            rank = _ranks.cached_rank(parent) or _ranks.resolve_rank(environ)  # the parent's, as seen from here
            parent_writes = _ranks.writes(rank, policy) and (
                Inbox.is_read(parent) or not _linkage_state.mode_disabled())
            found = Placement(rank, policy, parent if parent_writes else None, False)
        _found = found
        state.disabled = None  # a rank that writes nothing takes the decorators' fast path from now on
        return found


def own_run_options(options: RunOptions, environ: Mapping[str, str], *, from_environment: bool = True) -> RunOptions:
    """Return *options* completed for a run this process starts as its own.

    *from_environment* (standalone and pipeline runs; not a pipeline's training child, which
    inherits its parent's environment): ``WANDB_RUN_ID`` and ``WANDB_RESUME`` fill the run id and
    resume mode not given, for the first such run of the process; a value wandb would refuse is
    reported once and ignored. Under ``per_rank`` in a distributed job the run joins the ranks'
    group (the one given, else :func:`instrument._ranks.job_group`), gets the tag ``rank:<k>`` and
    config ``instrument/rank`` (and ``instrument/world_size``), and a given run id gets the
    suffix ``-rank<k>`` (every rank sees the same ``WANDB_RUN_ID``).
    """
    run_id, resume = options.run_id, options.resume
    state = _linkage_state.state
    if from_environment and not state.identity_taken:
        state.identity_taken = True
        identity = _env.run_identity(environ)
        for name, message in identity.refused:
            report(Problem("config", message, name), once=True)
        run_id = run_id or identity.run_id
        resume = resume or identity.resume
    where = placement(environ)
    group, tags, config = options.group, options.tags, options.config
    if where.policy == "per_rank" and where.rank.distributed and where.rank.index is not None:
        group = group or _ranks.job_group(environ)
        if group is None:
            report(Problem("config", "instrument: per_rank: no job id found (TORCHELASTIC_RUN_ID, SLURM_JOB_ID, "
                           f"MASTER_ADDR and MASTER_PORT, ...) and {_env.WANDB_RUN_GROUP} is unset, so the ranks' runs "
                           "share no group; set WANDB_RUN_GROUP", "per_rank"), once=True)
        tags = (*tags, f"rank:{where.rank.index}")
        ranked = {"rank": where.rank.index, **({"world_size": where.rank.size} if where.rank.size else {})}
        mine = (config or {}).get("instrument")
        config = {**(config or {}), "instrument": {**(mine if isinstance(mine, dict) else {}), **ranked}}
        run_id = f"{run_id}-rank{where.rank.index}" if run_id else None
    return attrs.evolve(options, run_id=run_id, resume=resume, group=group, tags=tags, config=config)


def cached() -> Placement | None:
    """Return where this process stands if that was resolved already, else None."""
    return _found


def forget() -> None:
    """Resolve the placement again at the next record (``configure``, a swapped backend)."""
    global _found
    _found = None


os.register_at_fork(after_in_child=forget)
