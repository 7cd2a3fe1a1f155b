"""Journals: records on disk, for a run that cannot be written directly right now.

Two kinds, both JSON lines flushed per line, files created 0600 in folders created 0700:

* a *record journal* (:class:`JournalWriter`, :class:`JournalReader`): W&B lets one process write
  a run at a time (its shared mode needs a live server), so an eval subprocess appends its
  records to a file of its own in the folder the context file names; the owner ingests them and
  removes the folder once drained. Files a child hands over (saved files, images, artifacts) are
  copied into the journal folder, and the owner uploads only from there: a journal line naming a
  path outside it (``..``, an absolute path, a symlink pointing out) is refused.
* a *call journal* (:class:`JournalRun`): when a run cannot be started, or a backend call fails
  mid-run, the session writes the rest of the run's backend calls into a private folder
  (``spill.jsonl`` and ``files/``); ``python -m instrument replay <folder>`` writes them into an
  offline run later.

Neither holds an API key: the context names no secret and secret-looking config keys are
redacted before config reaches a journal (``instrument._redact``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from instrument._backends.base import RunSpec
from instrument._records import (
    ConfigUpdate,
    LogArtifact,
    Point,
    Record,
    SaveFile,
    SendAlert,
    SummaryUpdate,
)
from instrument._problems import Problem, report
from instrument._routing import is_pil_image, is_wandb_value
from instrument._values import Histogram, Image, Table

_RECORDS: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (Point, SummaryUpdate, ConfigUpdate, SaveFile, LogArtifact, SendAlert)
}

#: The key that marks an encoded media value inside a journal line.
_MEDIA = "__media__"


class JournalError(ValueError):
    """A journal line cannot be read, or names a file outside the journal folder."""


class _Encoder:
    """Turns the media of one record into JSON, copying their pixels and files into *files*."""

    def __init__(self, files: Path, counter: Iterator[int]) -> None:
        self.files = files
        self.counter = counter

    def name(self, suffix: str) -> str:
        return f"media-{next(self.counter)}{suffix}"

    def value(self, key: str, value: Any) -> Any:
        if isinstance(value, Table):
            return {_MEDIA: "table", "columns": list(value.columns),
                    "rows": [[self.value(key, cell) for cell in row] for row in value.rows]}
        if isinstance(value, Histogram):
            return {_MEDIA: "histogram", "values": list(value.values), "num_bins": value.num_bins}
        if isinstance(value, Image):
            return {_MEDIA: "image", "file": self.image_file(value.data), "caption": value.caption}
        if is_wandb_value(value):
            return self.wandb_value(key, value)
        if isinstance(value, dict):
            return {k: self.value(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(key, v) for v in value]
        return value

    def image_file(self, data: Any) -> str:
        if isinstance(data, str):  # a path: hand over a copy
            name = self.name(Path(data).suffix)
            shutil.copy2(data, self.files / name)
        elif is_pil_image(data):
            name = self.name(".png")
            data.save(self.files / name, format="PNG")
        else:  # a uint8 array, converted by routing: kept exactly
            import numpy as np

            name = self.name(".npy")
            np.save(self.files / name, data, allow_pickle=False)
        return name

    def wandb_value(self, key: str, value: Any) -> Any:
        kind = type(value).__name__
        if kind == "Table" and hasattr(value, "columns") and hasattr(value, "data"):
            return self.value(key, Table(value.columns, value.data))
        path = getattr(value, "_path", None)
        if kind == "Image" and isinstance(path, str) and os.path.isfile(path):
            return self.value(key, Image(path, caption=getattr(value, "_caption", None)))
        report(Problem("unroutable", f"instrument: key {key!r}: a wandb.{kind} cannot cross from this "
                       "subprocess to the pipeline run; use instrument.Table, instrument.Image or "
                       "instrument.Histogram", key, "it was dropped"))
        return _DROP


_DROP: Any = object()


def _without_dropped(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not _DROP}


def _decode_value(value: Any, files: Path) -> Any:
    if isinstance(value, dict):
        media = value.get(_MEDIA)
        if media == "table":
            return Table(value["columns"], [[_decode_value(c, files) for c in row] for row in value["rows"]])
        if media == "histogram":
            return Histogram(value["values"], num_bins=value.get("num_bins", 64))
        if media == "image":
            path = _inside(files, value["file"])
            if path.suffix == ".npy":
                import numpy as np

                return Image(np.load(path, allow_pickle=False), caption=value.get("caption"))
            return Image(str(path), caption=value.get("caption"))
        return {k: _decode_value(v, files) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_value(v, files) for v in value]
    return value


def _inside(folder: Path, name: str | os.PathLike[str]) -> Path:
    """Return ``folder/name`` resolved, refusing anything that leads outside *folder*.

    A folder is checked whole: a symlink anywhere in it that points outside is refused too, so a
    journal line can never make the owner read or upload a file the child did not copy in.

    Raises:
        JournalError: the path (or a link under it) resolves outside *folder*.
    """
    root = folder.resolve()
    path = (folder / name).resolve()
    if root not in path.parents:
        raise JournalError(f"journal record names {os.fspath(name)!r}, outside the journal folder {folder}")
    if path.is_dir():
        for below in path.rglob("*"):
            if below.is_symlink() and root not in below.resolve().parents:
                raise JournalError(
                    f"journal record names {os.fspath(name)!r}, whose {below.name!r} links outside the "
                    f"journal folder {folder}"
                )
    return path


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


class JournalWriter:
    """Append records to this process's journal file in *folder* (created 0600, flushed per record).

    Media and files cross with the record: pixels of an ``Image`` as ``.npy`` (exactly as routed)
    or PNG (a PIL image), image files, saved files and artifacts as copies in ``files-<pid>/``
    next to the journal, taken when the record is written. The owner uploads only these copies,
    so the child may delete or change its files once the call returned. A saved file keeps its
    path relative to its base folder; a ``"live"`` file becomes ``"now"`` (a copy cannot follow
    the original, as wandb itself does when it copies).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.files = self.folder / f"files-{os.getpid()}"
        self.path = self.folder / f"journal-{os.getpid()}-{threading.get_ident()}.jsonl"
        self._lock = threading.RLock()  # re-entrant: a SIGTERM handler may close it mid-append
        self._fd: int | None = None
        self._counter = itertools.count()

    def _open(self) -> int:
        if self._fd is None:
            self.files.mkdir(mode=0o700, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._fd

    def append(self, record: Record | dict[str, Any]) -> None:
        """Write one record as a JSON line; media and files it names are copied next to it.

        Raises:
            OSError: a file the record names cannot be read or copied (nothing is written).
        """
        with self._lock:
            fd = self._open()
            line = dict(record) if isinstance(record, dict) else self._line(record)
            os.write(fd, (json.dumps(line, default=str) + "\n").encode())

    def _line(self, record: Record) -> dict[str, Any]:
        # The record's class goes under "record": "type" is a field of LogArtifact (the artifact type).
        line: dict[str, Any] = {"record": type(record).__name__, **attrs.asdict(record, recurse=False)}
        if isinstance(record, SaveFile):
            source = Path(record.path)
            base = Path(record.base_path) if record.base_path else source.parent
            relative = source.relative_to(base) if source.is_relative_to(base) else Path(source.name)
            line["path"] = self._copy(source, self.files / relative)
            line["base_path"] = str(self.files)
            line["policy"] = "now" if record.policy == "live" else record.policy
        elif isinstance(record, LogArtifact):
            folder = self.files / f"artifact-{next(self._counter)}"
            line["path"] = self._copy(Path(record.path), folder / Path(record.path).name)
            line["aliases"] = list(record.aliases)
        elif isinstance(record, Point | SummaryUpdate):
            encoder = _Encoder(self.files, self._counter)
            line["values"] = _without_dropped({k: encoder.value(k, v) for k, v in record.values.items()})
        return line

    @staticmethod
    def _copy(source: Path, target: Path) -> str:
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        return str(target)

    def close(self) -> None:
        """Close the journal file (it stays on disk for the owner)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class JournalReader:
    """Read the journals in *folder* incrementally: each call returns only what is new."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._offsets: dict[Path, int] = {}

    def read_new(self) -> list[Record | dict[str, Any]]:
        """Return the complete records appended since the last call, file by file.

        A torn last line (a child killed mid-write) is left for a later call (see :meth:`torn`).
        A line that cannot be decoded, or names a file outside the journal folder, is skipped
        with a warning naming the journal file and the line; the other lines still land.
        """
        out: list[Record | dict[str, Any]] = []
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.glob("journal-*.jsonl"), key=_mtime):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            end = data.rfind(b"\n") + 1
            self._offsets[path] = offset + end
            for line in data[:end].splitlines():
                if not line.strip():
                    continue
                try:
                    out.append(self._decode(json.loads(line), path))
                except (ValueError, TypeError, KeyError, AttributeError, IndexError, OSError) as error:
                    report(Problem("backend", f"instrument: journal {path}: a line was skipped "
                                   f"({type(error).__name__}: {error}): {line[:200]!r}"))
        return out

    def torn(self) -> list[Path]:
        """Return the journal files that end with an incomplete line (their writer died mid-write)."""
        found = []
        for path in sorted(self.folder.glob("journal-*.jsonl")) if self.folder.is_dir() else []:
            try:
                if path.stat().st_size > self._offsets.get(path, 0):
                    found.append(path)
            except OSError:
                continue
        return found

    def _decode(self, line: dict[str, Any], path: Path) -> Record | dict[str, Any]:
        if not isinstance(line, dict):
            raise ValueError("a journal line must be a JSON object")
        cls = _RECORDS.get(line.pop("record", None) or "")
        if cls is None:
            return line  # a plain message, such as {"type": "child", "run_id": ...}
        if cls in (Point, SummaryUpdate):
            line["values"] = _decode_value(line["values"], self.folder / f"files-{path.stem.split('-')[1]}")
        elif cls in (SaveFile, LogArtifact):
            _inside(self.folder, line["path"])
            if cls is LogArtifact:
                line["aliases"] = tuple(line.get("aliases", ()))
        return cls(**line)  # type: ignore[no-any-return]

    def remove(self) -> None:
        """Delete the journal folder once everything in it was ingested."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


#: The file of a call journal inside its folder.
SPILL_FILE = "spill.jsonl"
SPILL_VERSION = 1


def new_spill_folder(root: Path, run_id: str) -> Path:
    """Create a private folder (mode 0700) for the call journal of run *run_id* under *root*.

    Falls back to the system temp dir when *root* cannot be written.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"instrument-journal-{run_id}-", dir=root))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=f"instrument-journal-{run_id}-"))


class JournalRun:
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
        encoder = _Encoder(self.files, self._counter)
        return _without_dropped({key: encoder.value(key, value) for key, value in values.items()})

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

    def log_artifact(self, path: str, type: str, name: str, aliases: tuple[str, ...]) -> None:
        """Copy the file or folder into the journal now and journal ``run.log_artifact``."""
        copied, _ = self._copy(path, None)
        self._call("log_artifact", path=copied, type=type, name=name, aliases=list(aliases))

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
                args[key] = _decode_value(args[key], files)
            if method in ("save", "log_artifact"):
                args["path"] = str(_inside(folder, args["path"]))
                if args.get("base_path"):
                    args["base_path"] = str(_inside(folder, args["base_path"]))
                if method == "log_artifact":
                    args["aliases"] = tuple(args.get("aliases") or ())
            calls.append((method, args))
        else:
            raise JournalError(f"{path}:{number}: not a journal line: {raw[:200]!r}")
    if header is None:
        raise JournalError(f"{path}: the journal has no header line")
    return header, calls, exit_code


_CALLS = frozenset({"log", "define_metric", "update_summary", "update_config", "save", "log_artifact", "alert"})
