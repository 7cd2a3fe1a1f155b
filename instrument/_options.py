"""Run options: what a run is started with, as the user gives it, checked once.

One attrs class for every public spelling: ``instrument.pipeline(...)``, ``instrument.configure(...)``
and ``instrument.create_wandb_context(...)`` build a :class:`RunOptions` with :meth:`RunOptions.checked`,
which names the function in every error; linkage turns options into the ``RunSpec`` a backend
starts. A leaf: imports only :mod:`instrument._env`, :mod:`instrument._config` and
:mod:`instrument._kinds`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from instrument._config import CONFIG_KINDS, plain_config
from instrument._env import check_mode, check_rank_policy, check_resume, check_run_id
from instrument._kinds import shown
from instrument._settings import is_settings


def _text(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {shown(value)}")


def _as_tags(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(tag, str) for tag in value
    ):
        raise TypeError(f"tags must be a list or tuple of strings, got {shown(value)}")
    return tuple(value)


def _as_config(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not is_settings(value):
        raise TypeError(f"config must be {CONFIG_KINDS}, got {shown(value)}")
    converted: dict[str, Any] = plain_config(value)
    return converted


def _as_mode(value: Any) -> str | None:
    return None if value is None else check_mode(value, "mode")


def _as_run_id(value: Any) -> str | None:
    return None if value is None else check_run_id(value, "run_id")


def _as_resume(value: Any) -> str | None:
    return None if value is None else check_resume(value, "resume")


def _as_policy(value: Any) -> str | None:
    return None if value is None else check_rank_policy(value, "rank_policy")


def _optional_bool(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True, False or None, got {shown(value)}")


@attrs.frozen(kw_only=True)
class RunOptions:
    """What a run is started with (``wandb.init``'s arguments), as the user gave them.

    Attributes:
        project, entity, name, group, job_type: strings or None (wandb's defaults).
        run_id: the run's id (``configure``, ``pipeline``, ``create_wandb_context``); None for
            ``WANDB_RUN_ID`` (standalone and pipeline runs), else a fresh one. wandb's
            characters ``:;,#?/'`` are refused.
        resume: wandb's resume mode for that id: ``allow``, ``must``, ``never`` or ``auto``;
            None for ``WANDB_RESUME`` (standalone and pipeline runs), else none.
        tags: strings (given as a list, tuple or set).
        mode: ``online``, ``offline``, ``disabled`` (also ``dryrun``, ``run``), lower-cased;
            None resolves it at start (``WANDB_MODE``, else online with credentials, else offline).
        config: the run's config as plain data (:func:`~instrument._config.plain_config` of a
            mapping, attrs or dataclass instance, OmegaConf config), or None for none.
        redact_secrets: replace secret-looking config values (see :mod:`instrument._redact`);
            None follows ``instrument.configure`` (whose default is True).
        synchronous: call the backend on the calling thread (``configure(synchronous=True)``).
        rank_policy: which ranks of a distributed job write runs, ``rank0`` or ``per_rank``
            (``configure(rank_policy=...)``); None for ``INSTRUMENT_RANK_POLICY``, else ``rank0``.

    Raises:
        TypeError: a field has the wrong type (a non-string project, tags given as one string,
            a config that is not a mapping, a mode that is not a string).
        ValueError: *mode* is not a wandb mode, *resume* not a resume mode, *rank_policy* not a
            rank policy, or *run_id* holds a character wandb refuses.
    """

    project: str | None = attrs.field(default=None, validator=_text)
    entity: str | None = attrs.field(default=None, validator=_text)
    name: str | None = attrs.field(default=None, validator=_text)
    group: str | None = attrs.field(default=None, validator=_text)
    job_type: str | None = attrs.field(default=None, validator=_text)
    run_id: str | None = attrs.field(default=None, converter=_as_run_id)
    resume: str | None = attrs.field(default=None, converter=_as_resume)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_as_tags)
    mode: str | None = attrs.field(default=None, converter=_as_mode)
    config: dict[str, Any] | None = attrs.field(default=None, converter=_as_config)
    redact_secrets: bool | None = attrs.field(default=None, validator=_optional_bool)
    synchronous: bool = False
    rank_policy: str | None = attrs.field(default=None, converter=_as_policy)

    @classmethod
    def checked(cls, where: str, **values: Any) -> RunOptions:
        """Return the options *values*, each error naming *where* (``"instrument.pipeline"``).

        Raises:
            TypeError, ValueError: as the class does, the message starting with ``"<where>: "``.
        """
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where}: {error}") from None
