"""The context file: what a pipeline tells its subprocesses, as a small JSON file.

Written atomically with mode 0600 by the process that owns a pipeline run, named by
``WANDB_CONTEXT_FILE`` in its subprocesses' environment; it never holds a secret. A leaf: imports
only :mod:`instrument._env`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import attrs

from instrument import _env

CONTEXT_VERSION = 1


class ContextFileError(ValueError):
    """The file named by ``WANDB_CONTEXT_FILE`` is missing, is not a valid context file, or names
    a journal folder that does not exist (left over from a pipeline that has ended)."""


@attrs.frozen(slots=True)
class ContextFile:
    """What a pipeline tells its subprocesses (the context file); never a secret.

    Attributes:
        run_id: the pipeline run's id.
        project, entity, group: where the children's runs go (the pipeline's group).
        mode: the pipeline's wandb mode; it wins over a child's ``WANDB_MODE``.
        journal_dir: the folder where non-owners append records for the pipeline run.
    """

    run_id: str
    project: str | None
    entity: str | None
    group: str | None
    mode: str
    journal_dir: str
    version: int = CONTEXT_VERSION

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the context to *path* atomically with mode 0600; return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".context-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(attrs.asdict(self), handle, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, require_journal: bool = True) -> ContextFile:
        """Read a context file.

        Args:
            path: the context file.
            require_journal: reject a file whose *journal_dir* does not exist (a file left over
                from a pipeline that has ended: what a child writes there would be lost).

        Raises:
            ContextFileError: the file is missing, unreadable, empty, not a JSON object, lacks a
                field, has a field of the wrong type, names a mode wandb does not know, names a
                journal folder that does not exist (with *require_journal*), or was written by a
                newer instrument; the message names the file and what is wrong.
        """
        where = f"{_env.WANDB_CONTEXT_FILE}={os.fspath(path)!r}"
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as error:
            detail = getattr(error, "strerror", None) or str(error)
            raise ContextFileError(f"{where}: cannot read the context file ({detail})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            detail = "the file is empty" if not text.strip() else f"not JSON: {error}"
            raise ContextFileError(f"{where}: not a valid context file ({detail})") from None
        if not isinstance(data, dict):
            raise ContextFileError(
                f"{where}: not a valid context file (expected a JSON object, got {type(data).__name__})"
            )
        wrong = [f"{name} is missing" for name in ("run_id", "mode", "journal_dir") if name not in data]
        wrong.extend(f"{name} must be a non-empty string, got {type(data[name]).__name__} {data[name]!r}"
                     for name in ("run_id", "mode", "journal_dir")
                     if name in data and (not isinstance(data[name], str) or not data[name]))
        wrong.extend(f"{name} must be a string or null, got {type(data[name]).__name__} {data[name]!r}"
                     for name in ("project", "entity", "group")
                     if data.get(name) is not None and not isinstance(data[name], str))
        if isinstance(data.get("mode"), str) and data["mode"]:
            try:
                data["mode"] = _env.check_mode(data["mode"], "mode")
            except ValueError:
                wrong.append(f"mode {data['mode']!r} is not a wandb mode")
        journal = data.get("journal_dir")
        if require_journal and isinstance(journal, str) and journal and not os.path.isdir(journal):
            wrong.append(f"its journal folder journal_dir={journal!r} does not exist (the pipeline that wrote "
                         "this file has ended, or the file is left over from an earlier run)")
        version = data.get("version", CONTEXT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version > CONTEXT_VERSION:
            wrong.append(f"version {version!r} is not one this instrument reads (up to {CONTEXT_VERSION})")
        if wrong:
            raise ContextFileError(f"{where}: not a valid context file: {'; '.join(wrong)}")
        return cls(
            run_id=data["run_id"], project=data.get("project"), entity=data.get("entity"),
            group=data.get("group"), mode=data["mode"], journal_dir=data["journal_dir"], version=version,
        )
