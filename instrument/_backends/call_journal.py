"""The call journal: a :class:`~instrument._backends.base.BackendRun` that writes calls to disk.

When a run cannot be started, or a backend call fails mid-run, the session writes the rest of
the run's backend calls into a private folder (``spill.jsonl`` and ``files/``, 0700/0600); the
first line describes the run, the last holds the exit code. ``python -m instrument replay
<folder>`` (:mod:`instrument._replay`) writes it into an offline run later. Media are encoded as
in the record journal (:mod:`instrument._journal`); no API key is ever written.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import attrs

from instrument._backends.base import RunSpec
from instrument._journal import Encoder, JournalError, decode_value, inside, native_artifact_files, without_dropped


def _copy_into(source: str, base_path: str | None, target_root: Path) -> Path:
    """Copy the file or folder *source* under *target_root*, keeping its path relative to
    *base_path* (else to the working directory when it lies under it, else only its name)."""
    src = Path(source)
    base = Path(base_path) if base_path else (Path.cwd() if src.resolve().is_relative_to(Path.cwd()) else src.parent)
    try:
        relative = src.resolve().relative_to(base.resolve())
    except ValueError:
        relative = Path(src.name)
    target = target_root / relative
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, target, dirs_exist_ok=True)
    else:
        shutil.copy2(src, target)
    return target


#: The file of a call journal inside its folder.
SPILL_FILE = "spill.jsonl"
SPILL_VERSION = 1


def new_call_journal_folder(root: Path, run_id: str) -> Path:
    """Create a private folder (mode 0700) for the call journal of run *run_id* under *root*.

    Falls back to the system temp dir when *root* cannot be written.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"instrument-journal-{run_id}-", dir=root))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=f"instrument-journal-{run_id}-"))


class CallJournal:
    """A :class:`~instrument._backends.base.BackendRun` that writes every call to a call journal.

    The first line describes the run (its :class:`~instrument._backends.base.RunSpec`, why it is
    journaled, where the part written before lives); then one line per backend call; the last
    line holds the exit code. Files handed to ``save``/``log_artifact`` are copied into
    ``files/`` at once (wandb's ``run.save`` keeps a symlink only, so a later replay would read
    whatever the file holds then). ``python -m instrument replay <folder>`` writes it into an
    offline run.

    Raises:
        OSError: the folder or the file cannot be written (when created or on any call).
    """

    def __init__(self, folder: Path, spec: RunSpec, *, reason: str, partial: str | None = None) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.id = spec.id
        self.files = self.folder / "files"
        self.files.mkdir(mode=0o700, exist_ok=True)
        self.path = self.folder / SPILL_FILE
        self._lock = threading.RLock()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._copies = 0
        self._counter = itertools.count()
        spec_fields = attrs.asdict(spec)
        spec_fields["tags"] = list(spec.tags)
        self._write({"type": "run", "version": SPILL_VERSION, "spec": spec_fields, "reason": reason,
                     "partial": partial, "pid": os.getpid(), "host": socket.gethostname()})

    def _write(self, line: dict[str, Any]) -> None:
        with self._lock:
            if self._fd is None:
                raise OSError(f"the journal {self.path} is closed")
            os.write(self._fd, (json.dumps(line, default=repr) + "\n").encode())

    def _call(self, method: str, **args: Any) -> None:
        self._write({"type": "call", "method": method, "args": args})

    def _copy(self, path: str, base_path: str | None) -> tuple[str, str]:
        with self._lock:
            self._copies += 1
            root = self.files / f"{self._copies:04d}"
        target = _copy_into(path, base_path, root)
        return str(target.relative_to(self.folder)), str(root.relative_to(self.folder))

    def _encode(self, values: dict[str, Any]) -> dict[str, Any]:
        encoder = Encoder(self.files, self._counter)
        return without_dropped({key: encoder.value(key, value) for key, value in values.items()})

    def log(self, row: dict[str, Any]) -> None:
        """Journal ``run.log(row)``."""
        self._call("log", row=self._encode(row))

    def define_metric(self, name: str, step_metric: str | None, summary: str | None) -> None:
        """Journal ``run.define_metric``."""
        self._call("define_metric", name=name, step_metric=step_metric, summary=summary)

    def update_summary(self, values: dict[str, Any]) -> None:
        """Journal ``run.summary.update``."""
        self._call("update_summary", values=self._encode(values))

    def update_config(self, values: dict[str, Any]) -> None:
        """Journal ``run.config.update``."""
        self._call("update_config", values=values)

    def save(self, path: str, base_path: str | None, policy: str) -> None:
        """Copy the file into the journal now and journal ``run.save`` of the copy."""
        copied, base = self._copy(path, base_path)
        self._call("save", path=copied, base_path=base, policy=policy)

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...], *,
                     metadata: dict[str, Any] | None = None, description: str | None = None) -> None:
        """Copy the file or folder into the journal now and journal ``run.log_artifact``."""
        copied, _ = self._copy(path, None)
        self._call("log_artifact", path=copied, type=type, name=name, aliases=list(aliases), metadata=metadata,
                   description=description)

    def log_wandb_artifact(self, artifact: Any, aliases: tuple[str, ...]) -> None:
        """Copy the files of a ``wandb.Artifact`` into the journal now and journal them as one artifact
        of its name, type, metadata and description."""
        with self._lock:
            self._copies += 1
            root = self.files / f"{self._copies:04d}"
        native_artifact_files(artifact, root)
        self._call("log_artifact", path=str(root.relative_to(self.folder)), type=artifact.type, name=artifact.name,
                   aliases=list(aliases), metadata=dict(artifact.metadata), description=artifact.description)

    def declare_chart(self, key: str, spec: dict[str, Any]) -> None:
        """Journal the declaration of the custom chart *key*."""
        self._call("declare_chart", key=key, spec=spec)

    def alert(self, title: str, text: str, level: str) -> None:
        """Journal ``run.alert``."""
        self._call("alert", title=title, text=text, level=level)

    def finish(self, exit_code: int) -> None:
        """Write the exit code and close the journal (it stays on disk for the replay)."""
        with self._lock:
            if self._fd is None:
                return
            self._write({"type": "exit", "exit_code": exit_code})
            os.close(self._fd)
            self._fd = None

    def location(self) -> str:
        """Return the journal folder."""
        return str(self.folder)


def read_call_journal(folder: Path) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]], int | None]:
    """Read the call journal in *folder*: ``(header, [(method, args), ...], exit_code)``.

    Arguments are decoded (media values back to :mod:`instrument._values`; paths checked to lie
    inside *folder* and made absolute). A torn last line is ignored; ``exit_code`` is None when
    the writer never finished.

    Raises:
        JournalError: the file lacks its header, or a line is not valid, or names a file outside
            *folder*.
    """
    path = folder / SPILL_FILE
    header: dict[str, Any] | None = None
    calls: list[tuple[str, dict[str, Any]]] = []
    exit_code: int | None = None
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    files = folder / "files"
    for number, raw in enumerate(complete.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as error:
            raise JournalError(f"{path}:{number}: not JSON ({error})") from None
        kind = line.get("type") if isinstance(line, dict) else None
        if kind == "run":
            header = line
        elif kind == "exit":
            exit_code = int(line["exit_code"])
        elif kind == "call" and line.get("method") in _CALLS:
            args = dict(line.get("args") or {})
            method = line["method"]
            if method in ("log", "update_summary"):
                key = "row" if method == "log" else "values"
                args[key] = decode_value(args[key], files)
            if method in ("save", "log_artifact"):
                args["path"] = str(inside(folder, args["path"]))
                if args.get("base_path"):
                    args["base_path"] = str(inside(folder, args["base_path"]))
                if method == "log_artifact":
                    args["aliases"] = tuple(args.get("aliases") or ())
            calls.append((method, args))
        else:
            raise JournalError(f"{path}:{number}: not a journal line: {raw[:200]!r}")
    if header is None:
        raise JournalError(f"{path}: the journal has no header line")
    return header, calls, exit_code


_CALLS = frozenset({"log", "define_metric", "update_summary", "update_config", "save", "log_artifact", "alert",
                    "declare_chart"})
