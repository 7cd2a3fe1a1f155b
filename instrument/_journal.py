"""The journal: how a process that does not own a run writes into it.

W&B lets one process write a run at a time (its shared mode needs a live server), so an eval
subprocess appends its records, one JSON line each, flushed per record, to a file of its own in
the folder the context file names; the owner ingests them and removes the file once drained.
Files a child hands over (saved files, images, artifacts) are copied into the journal folder, and
the owner uploads only from there.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

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
                       "instrument.Histogram; it was dropped", key))
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


def _inside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise JournalError(f"journal record names {name!r}, outside the journal folder {folder}")
    return path


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
        self._lock = threading.Lock()
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

        A torn last line (a child killed mid-write) is left for a later call.
        """
        out: list[Record | dict[str, Any]] = []
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.glob("journal-*.jsonl"), key=lambda p: p.stat().st_mtime_ns):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            end = data.rfind(b"\n") + 1
            self._offsets[path] = offset + end
            for line in data[:end].splitlines():
                if line.strip():
                    out.append(self._decode(json.loads(line), path))
        return out

    def _decode(self, line: dict[str, Any], path: Path) -> Record | dict[str, Any]:
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
