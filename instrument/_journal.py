"""The journal: how a process that does not own a run writes into it.

W&B lets one process write a run at a time (its shared mode needs a live server), so an eval
subprocess appends its records, one JSON line each, flushed per record, to a file of its own in
the folder the context file names; the owner ingests them and removes the file once drained.
Files a child hands over (saved files, images, artifacts) are copied into the journal folder, and
the owner uploads only from there.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
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
from instrument._values import Histogram, Image, Table

_RECORDS: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (Point, SummaryUpdate, ConfigUpdate, SaveFile, LogArtifact, SendAlert)
}


class JournalError(ValueError):
    """A journal line cannot be read, or names a file outside the journal folder."""


def _encode_value(value: Any, files: Path) -> Any:
    if isinstance(value, Table):
        return {"__media__": "table", "columns": list(value.columns), "rows": [list(r) for r in value.rows]}
    if isinstance(value, Histogram):
        return {"__media__": "histogram", "values": list(value.values)}
    if isinstance(value, Image):
        from instrument._wandb_backend import image_array

        names = []
        for array in image_array(value):
            import numpy as np

            name = f"image-{os.getpid()}-{threading.get_ident()}-{len(list(files.iterdir()))}.npy"
            np.save(files / name, np.asarray(array))
            names.append(name)
        return {"__media__": "image", "files": names, "caption": value.caption}
    if isinstance(value, dict):
        return {k: _encode_value(v, files) for k, v in value.items()}
    return value


def _decode_value(value: Any, files: Path) -> Any:
    if isinstance(value, dict):
        media = value.get("__media__")
        if media == "table":
            return Table(value["columns"], value["rows"])
        if media == "histogram":
            return Histogram(value["values"])
        if media == "image":
            import numpy as np

            arrays = [np.load(_inside(files, name)) for name in value["files"]]
            data = arrays[0] if len(arrays) == 1 else np.stack(arrays)
            return Image(data, caption=value.get("caption"))
        return {k: _decode_value(v, files) for k, v in value.items()}
    return value


def _inside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise JournalError(f"journal record names {name!r}, outside the journal folder {folder}")
    return path


class JournalWriter:
    """Append records to this process's journal file in *folder* (created 0600, flushed per record)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.files = self.folder / f"files-{os.getpid()}"
        self.path = self.folder / f"journal-{os.getpid()}-{threading.get_ident()}.jsonl"
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.files.mkdir(mode=0o700, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._fd

    def append(self, record: Record | dict[str, Any]) -> None:
        """Write one record as a JSON line; files it names are copied into the journal folder."""
        with self._lock:
            fd = self._open()
            if isinstance(record, dict):
                line = dict(record)
            else:
                line = {"type": type(record).__name__, **attrs.asdict(record, recurse=False)}
                if isinstance(record, SaveFile | LogArtifact):
                    line["path"] = self._copy(record.path, getattr(record, "base_path", None))
                    line["base_path"] = str(self.files) if isinstance(record, SaveFile) else None
                    if isinstance(record, LogArtifact):
                        line.pop("base_path")
                for field in ("values",):
                    if field in line:
                        line[field] = _encode_value(line[field], self.files)
                if "aliases" in line:
                    line["aliases"] = list(line["aliases"])
            os.write(fd, (json.dumps(line) + "\n").encode())

    def _copy(self, source: str, base_path: str | None) -> str:
        src = Path(source)
        base = Path(base_path) if base_path else (Path.cwd() if src.resolve().is_relative_to(Path.cwd()) else src.parent)
        try:
            relative = src.resolve().relative_to(base.resolve())
        except ValueError:
            relative = Path(src.name)
        target = self.files / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)
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
        kind = line.pop("type", None)
        cls = _RECORDS.get(kind or "")
        if cls is None:
            return {"type": kind, **line}
        if "values" in line:
            line["values"] = _decode_value(line["values"], self.folder / f"files-{path.stem.split('-')[1]}")
        if cls in (SaveFile, LogArtifact):
            _inside(self.folder, line["path"])
            line["aliases"] = tuple(line.get("aliases", ())) if cls is LogArtifact else None
            if cls is SaveFile:
                line.pop("aliases")
        return cls(**line)  # type: ignore[no-any-return]

    def remove(self) -> None:
        """Delete the journal folder once everything in it was ingested."""
        shutil.rmtree(self.folder, ignore_errors=True)
