"""Ranks: which process of a distributed job this is, and whether it writes a run.

The rank is resolved lazily, at a process's first record, and cached per process id; it is never
read at import, and resolving it never imports torch (``torch.distributed`` counts only when the
program already imported it and initialized a process group). :func:`resolve_rank` says where it
comes from, most specific first (docs/frameworks.md, "Ranks and distributed jobs", is the same
table). The policy (``rank0`` or ``per_rank``) says which ranks write; :func:`job_group` names
the group the ranks' runs share under ``per_rank``, derived from the launcher without any
communication.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from instrument import _env, _family
from instrument._problems import Problem, report

#: Where the group of the ranks' runs comes from under ``per_rank`` when no pipeline names one
#: and ``WANDB_RUN_GROUP`` is unset: the first variable set (a launcher's job or rendezvous id,
#: the same on every rank). ``TORCHELASTIC_RUN_ID`` is skipped when it is ``none`` (torchrun's
#: static rendezvous); then ``MASTER_ADDR:MASTER_PORT`` names the job.
JOB_IDS = (
    "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "PMIX_NAMESPACE", "OMPI_MCA_orte_ess_jobid", "LSB_JOBID", "PBS_JOBID",
)


@attrs.frozen(slots=True)
class Rank:
    """Which process of a distributed job this is.

    Attributes:
        index: the global rank, from 0; None for a process that is certainly not rank 0 but
            whose global rank cannot be computed (``LOCAL_RANK`` on a node other than 0 without
            ``LOCAL_WORLD_SIZE``).
        size: the world size (processes in the job); None when the source does not say.
        source: the source that gave it: ``"INSTRUMENT_RANK"``, ``"torch.distributed"``,
            ``"RANK"``, ``"OMPI_COMM_WORLD_RANK"``, ``"PMI_RANK"``, ``"SLURM_PROCID"``,
            ``"LOCAL_RANK"`` or ``"default"`` (rank 0 of 1).
    """

    index: int | None
    size: int | None
    source: str

    @property
    def distributed(self) -> bool:
        """Whether this process is one of several ranks (not a plain single process)."""
        return self.index != 0 or (self.size or 1) > 1


#: The rank of a process that no source describes.
SINGLE = Rank(0, 1, "default")


def _whole(environ: Mapping[str, str], name: str, *, minimum: int = 0) -> int | None:
    """Return the whole number in *name* (at least *minimum*), None when unset; warn once when
    it is set to something else (the variable is then ignored)."""
    text = environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        report(Problem("config", f"instrument: {name}={text!r} is not a whole number >= {minimum}; it is ignored "
                       "when working out this process's rank", name), once=True)
        return None
    return value


def _from_variables(environ: Mapping[str, str], rank: str, size: str, source: str) -> Rank | None:
    index = _whole(environ, rank)
    return None if index is None else Rank(index, _whole(environ, size, minimum=1), source)


def _instrument_rank(environ: Mapping[str, str], modules: Mapping[str, Any]) -> Rank | None:
    return _from_variables(environ, _env.INSTRUMENT_RANK, "WORLD_SIZE", "INSTRUMENT_RANK")


def _torch_distributed(environ: Mapping[str, str], modules: Mapping[str, Any]) -> Rank | None:
    dist = modules.get("torch.distributed")  # never imported here: only a program's own import counts
    if dist is None:
        return None
    try:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        return Rank(int(dist.get_rank()), int(dist.get_world_size()), "torch.distributed")
    except Exception:
        return None


def _torchrun(environ: Mapping[str, str], modules: Mapping[str, Any]) -> Rank | None:
    return _from_variables(environ, "RANK", "WORLD_SIZE", "RANK")


def _open_mpi(environ: Mapping[str, str], modules: Mapping[str, Any]) -> Rank | None:
    return _from_variables(environ, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")


def _pmi(environ: Mapping[str, str], modules: Mapping[str, Any]) -> Rank | None:
    return _from_variables(environ, "PMI_RANK", "PMI_SIZE", "PMI_RANK")


def _slurm(environ: Mapping[str, str], modules: Mapping[str, Any]) -> Rank | None:
    # One task (an sbatch script, or srun of one task that runs torchrun) is not a rank of a job.
    tasks = _whole(environ, "SLURM_NTASKS", minimum=1)
    if tasks is None or tasks < 2:
        return None
    index = _whole(environ, "SLURM_PROCID")
    return None if index is None else Rank(index, tasks, "SLURM_PROCID")


def _local_rank(environ: Mapping[str, str], modules: Mapping[str, Any]) -> Rank | None:
    local = _whole(environ, "LOCAL_RANK")
    node_variable = next((name for name in ("NODE_RANK", "GROUP_RANK") if environ.get(name)), None)
    if local is None or node_variable is None:
        return None
    node = _whole(environ, node_variable)
    if node is None:
        return None
    size = _whole(environ, "WORLD_SIZE", minimum=1)
    per_node = _whole(environ, "LOCAL_WORLD_SIZE", minimum=1)
    if per_node is not None:
        return Rank(node * per_node + local, size, "LOCAL_RANK")
    if node == 0:
        return Rank(local, size, "LOCAL_RANK")  # node 0 holds ranks 0 .. LOCAL_WORLD_SIZE - 1
    report(Problem("config", f"instrument: LOCAL_RANK={local} on {node_variable}={node} without LOCAL_WORLD_SIZE: "
                   "the global rank cannot be computed; this process counts as a rank other than 0 (set "
                   f"{_env.INSTRUMENT_RANK} to its global rank)", "LOCAL_RANK"), once=True)
    return Rank(None, size, "LOCAL_RANK")


_RESOLVERS: tuple[Callable[[Mapping[str, str], Mapping[str, Any]], Rank | None], ...] = (
    _instrument_rank, _torch_distributed, _torchrun, _open_mpi, _pmi, _slurm, _local_rank,
)


def resolve_rank(environ: Mapping[str, str] = os.environ, modules: Mapping[str, Any] = sys.modules) -> Rank:
    """Return this process's rank from the first source that applies, most specific first:
    ``INSTRUMENT_RANK``; ``torch.distributed`` (already imported and initialized); ``RANK``
    (torchrun, Accelerate, DeepSpeed); ``OMPI_COMM_WORLD_RANK``; ``PMI_RANK``; ``SLURM_PROCID``
    when ``SLURM_NTASKS`` > 1; ``LOCAL_RANK`` with ``NODE_RANK`` or ``GROUP_RANK`` (times
    ``LOCAL_WORLD_SIZE``); else rank 0 of 1. World sizes come from ``WORLD_SIZE``,
    ``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``, ``SLURM_NTASKS``.

    Args:
        environ: the environment to read the launchers' variables from.
        modules: where to look for an already imported ``torch.distributed`` (``sys.modules``).

    A variable set to something other than a whole number is warned about once (an error in
    strict mode) and skipped. Never imports torch.
    """
    for resolver in _RESOLVERS:
        rank = resolver(environ, modules)
        if rank is not None:
            return rank
    return SINGLE


_cache: dict[int, Rank] = {}


def current_rank(environ: Mapping[str, str] = os.environ) -> Rank:
    """Return this process's rank, resolved on the first call in this process and then cached.

    A forked child has a process id of its own, so it resolves its own rank.
    """
    pid = os.getpid()
    rank = _cache.get(pid)
    if rank is None:
        rank = _cache[pid] = resolve_rank(environ)
    return rank


def cached_rank(pid: int) -> Rank | None:
    """Return the rank process *pid* resolved before this process forked from it, if it did."""
    return _cache.get(pid)


def forget() -> None:
    """Forget every cached rank (tests that change the environment between cases)."""
    _cache.clear()


def resolve_policy(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """Return the rank policy: *explicit* (``configure(rank_policy=...)``), else
    ``INSTRUMENT_RANK_POLICY``, else ``"rank0"``. An unknown ``INSTRUMENT_RANK_POLICY`` is warned
    about once and ``rank0`` is used (every rank writing would make one run per process)."""
    if explicit is not None:
        return explicit
    value = environ.get(_env.INSTRUMENT_RANK_POLICY, "").strip()
    if not value:
        return "rank0"
    if value not in _env.RANK_POLICIES:
        report(Problem("config", f"instrument: {_env.INSTRUMENT_RANK_POLICY}={value!r} is not a rank policy "
                       "(expected 'rank0' or 'per_rank'); only rank 0 writes", _env.INSTRUMENT_RANK_POLICY), once=True)
        return "rank0"
    return value


def writes(rank: Rank, policy: str) -> bool:
    """Return whether a process of *rank* writes runs under *policy*.

    ``rank0``: only global rank 0. ``per_rank``: every rank whose global rank is known; one
    whose rank cannot be computed writes nothing and is warned about once.
    """
    if policy == "per_rank" and rank.index is None:
        report(Problem("config", f"instrument: {_env.INSTRUMENT_RANK_POLICY}=per_rank, but this process's global "
                       f"rank is unknown (source {rank.source}); it writes no run", "per_rank"), once=True)
    return rank.index == 0 or (policy == "per_rank" and rank.index is not None)


def job_group(environ: Mapping[str, str] = os.environ, modules: Mapping[str, Any] = sys.modules) -> str | None:
    """Return the group every rank's run joins under ``per_rank``, the same on every rank without
    any communication; None when the launcher says nothing that names the job.

    ``WANDB_RUN_GROUP`` as it is; else a run-id-shaped name (8 lowercase letters and digits)
    derived from the first of :data:`JOB_IDS` that is set, else from ``MASTER_ADDR:MASTER_PORT``,
    else, in processes started by ``torch.multiprocessing.spawn`` (or any multiprocessing start),
    from the starting process's multiprocessing key, which all its children share.
    """
    explicit = environ.get(_env.WANDB_RUN_GROUP)
    if explicit:
        return explicit
    for name in JOB_IDS:
        value = environ.get(name, "").strip()
        if value and not (name == "TORCHELASTIC_RUN_ID" and value == "none"):
            return _run_id_shaped(f"{name}={value}")
    if environ.get("MASTER_ADDR") and environ.get("MASTER_PORT"):
        return _run_id_shaped(f"MASTER={environ['MASTER_ADDR']}:{environ['MASTER_PORT']}")
    process = getattr(modules.get("multiprocessing.process"), "parent_process", None)
    if process is not None and process() is not None:
        return _run_id_shaped(f"multiprocessing={_family.family_key()}")
    return None


_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _run_id_shaped(text: str) -> str:
    """Return 8 characters of wandb's run-id alphabet derived from *text* (the same everywhere)."""
    number = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    out = []
    for _ in range(8):
        number, digit = divmod(number, len(_ALPHABET))
        out.append(_ALPHABET[digit])
    return "".join(out)
