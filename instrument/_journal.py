"""The record journal: how a subprocess writes records into a run its pipeline owns.

W&B lets one process write a run at a time (its shared mode needs a live server), so an eval
subprocess appends records (JSON lines, flushed per line, files 0600 in folders 0700) to a file
of its own in the folder the context file names (:class:`JournalSink`); the owner reads them
(:class:`JournalReader`) and writes them into its run (:func:`ingest`). Media and files cross as
copies next to the journal, and a line naming a path outside the folder is refused. The same
encoding serves the call journal (:mod:`instrument._backends.call_journal`) and the dispatcher's
spill. Imports only leaves; the owner's run is anything with ``write``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from instrument._foreign import Encoder as StateEncoder
from instrument._foreign import ForeignError, PlotlyFigure, decode, is_wandb_object
from instrument._kinds import is_pil_image, is_plotly_figure, type_name
from instrument._problems import ONCE_PER_KEY, InstrumentationError, Problem, report, warn
from instrument._records import (
    ConfigUpdate,
    DeclareChart,
    LogArtifact,
    Point,
    Record,
    SaveFile,
    SendAlert,
    SummaryUpdate,
)
from instrument._redact import redact_config
from instrument._values import Histogram, Image, Table

_RECORDS: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (Point, SummaryUpdate, ConfigUpdate, SaveFile, LogArtifact, SendAlert, DeclareChart)
}

#: The key that marks an encoded media value inside a journal line.
_MEDIA = "__media__"


class JournalError(ValueError):
    """A journal line cannot be read, or names a file outside the journal folder."""


class Encoder:
    """Turns the media of one record into JSON, copying their pixels and files into *files*.

    instrument's own media cross as their data; wandb's own objects (``wandb.Html``, a
    ``wandb.Table`` of images, a chart's table, ...) as their state
    (:mod:`instrument._foreign`), so the owner writes exactly what ``run.log`` writes for them
    in-process; a plotly figure as its JSON. *function* names the decorated function in the
    warning about a value that cannot cross.
    """

    def __init__(self, files: Path, counter: Iterator[int], function: str = "") -> None:
        self.files = files
        self.counter = counter
        self.function = function

    def name(self, suffix: str) -> str:
        return f"media-{next(self.counter)}{suffix}"

    def value(self, key: str, value: Any) -> Any:
        if isinstance(value, Table):
            return {_MEDIA: "table", "columns": list(value.columns),
                    "rows": [[self.value(key, cell) for cell in row] for row in value.rows]}
        if isinstance(value, Histogram):
            return {_MEDIA: "histogram", "values": list(value.values), "num_bins": value.num_bins,
                    "counts": None if value.counts is None else list(value.counts),
                    "bins": None if value.bins is None else list(value.bins)}
        if isinstance(value, Image):
            return {_MEDIA: "image", "file": self.image_file(value.data), "caption": value.caption}
        if isinstance(value, PlotlyFigure):
            return {_MEDIA: "plotly", "json": value.json}
        if is_plotly_figure(value):
            return {_MEDIA: "plotly", "json": value.to_json()}
        if is_wandb_object(value):
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
            import numpy as np  # only for an array, so numpy is there; never at import

            name = self.name(".npy")
            np.save(self.files / name, data, allow_pickle=False)
        return name

    def wandb_value(self, key: str, value: Any) -> Any:
        try:
            return {_MEDIA: "wandb", "state": StateEncoder(self.files, self.counter).encode(value)}
        except (ForeignError, OSError) as error:
            function = f"{self.function}: " if self.function else ""
            report(Problem("unroutable", f"instrument: {function}key {key!r}: a {type_name(value)} cannot be "
                           f"written to the journal ({error})", key, "it was dropped"))
            return _DROP


_DROP: Any = object()


def without_dropped(values: dict[str, Any]) -> dict[str, Any]:
    """Return *values* without the ones an :class:`Encoder` could not carry."""
    return {k: v for k, v in values.items() if v is not _DROP}


def decode_value(value: Any, files: Path) -> Any:
    """Return an encoded value (from :class:`Encoder`, read back from JSON) decoded, its files in *files*.

    wandb's objects come back as :class:`~instrument._foreign.ForeignValue` (the wandb backend
    rebuilds them), plotly figures as :class:`~instrument._foreign.PlotlyFigure`.

    Raises:
        JournalError: a file named lies outside *files*.
        ValueError: an encoded value is malformed.
    """
    if isinstance(value, dict):
        media = value.get(_MEDIA)
        if media == "table":
            return Table(value["columns"], [[decode_value(c, files) for c in row] for row in value["rows"]])
        if media == "histogram":
            if value.get("counts") is not None:
                return Histogram(counts=value["counts"], bins=value["bins"])
            return Histogram(value["values"], num_bins=value.get("num_bins", 64))
        if media == "image":
            path = inside(files, value["file"])
            if path.suffix == ".npy":
                import numpy as np  # only for pixels a child saved from an array; never at import

                return Image(np.load(path, allow_pickle=False), caption=value.get("caption"))
            return Image(str(path), caption=value.get("caption"))
        if media == "plotly":
            return PlotlyFigure(str(value["json"]))
        if media == "wandb":
            return decode(value["state"], files, inside)
        return {k: decode_value(v, files) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_value(v, files) for v in value]
    return value


def inside(folder: Path, name: str | os.PathLike[str]) -> Path:
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
            if record.native is not None:
                line["path"] = str(native_artifact_files(record.native, folder))
            else:
                line["path"] = self._copy(Path(record.path), folder / Path(record.path).name)
            line["aliases"] = list(record.aliases)
            line.pop("native")
        elif isinstance(record, Point | SummaryUpdate):
            encoder = Encoder(self.files, self._counter, record.function)
            line["values"] = without_dropped({k: encoder.value(k, v) for k, v in record.values.items()})
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


def native_artifact_files(artifact: Any, folder: Path) -> Path:
    """Copy the files of a ``wandb.Artifact`` into *folder* under their names in the artifact.

    wandb staged a copy of each file when it was added; the owner logs the folder as an artifact
    of the same name, type, metadata and description. A reference to a remote object (``s3://``)
    has no file to carry: it is left out with a warning naming the artifact and the reference.

    Returns:
        *folder*, created.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, entry in artifact.manifest.entries.items():
        if entry.local_path and os.path.isfile(entry.local_path):
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(entry.local_path, target)
        else:
            report(Problem("unroutable", f"instrument: artifact {artifact.name!r}: its entry {name!r} "
                           f"({entry.ref or 'no local file'}) cannot cross from this subprocess to the pipeline run",
                           f"artifact:{artifact.name}", "it was left out"))
    return folder


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
            raise TypeError("a journal line must be a JSON object")
        cls = _RECORDS.get(line.pop("record", None) or "")
        if cls is None:
            return line  # a plain message, such as {"type": "child", "run_id": ...}
        if cls in (Point, SummaryUpdate):
            line["values"] = decode_value(line["values"], self.folder / f"files-{path.stem.split('-')[1]}")
        elif cls in (SaveFile, LogArtifact):
            inside(self.folder, line["path"])
            if cls is LogArtifact:
                line["aliases"] = tuple(line.get("aliases", ()))
                line.pop("native", None)
        return cls(**line)  # type: ignore[no-any-return]

    def remove(self) -> None:
        """Delete the journal folder once everything in it was ingested."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class Writable(Protocol):
    """Where ingested records go: the owner's session (anything with this ``write``)."""

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Write *records* to the run, reporting *problems* first."""


class JournalSink:
    """Write records for the pipeline run into this process's journal in *journal_dir*.

    The one place a subprocess writes into the pipeline run; config is redacted before it hits
    the disk unless *redact_secrets* is False.
    """

    def __init__(self, journal_dir: str, *, redact_secrets: bool = True) -> None:
        self.writer = JournalWriter(journal_dir)
        self.redact_secrets = redact_secrets

    def write(self, records: Iterable[Record], problems: Iterable[Problem] = ()) -> None:
        """Append *records* to the journal (one flushed line each) after reporting *problems*.

        A record that cannot be written is reported (once per kind), never raised.
        """
        for problem in problems:
            report(problem, once=problem.kind in ONCE_PER_KEY)
        for record in records:
            line = record
            if isinstance(record, ConfigUpdate) and self.redact_secrets:
                line = attrs.evolve(record, values=redact_config(record.values))  # before it hits the disk
            try:
                self.writer.append(line)
            except Exception as error:  # never raise into user code
                report(Problem("backend", f"instrument: writing to the journal {self.writer.path} failed "
                               f"({type(error).__name__}: {error})"), once=True)

    def announce_child(self, run_id: str, location: str) -> None:
        """Tell the owner that this process started run *run_id*, whose data lives at *location*."""
        self.writer.append({"type": "child", "run_id": run_id, "location": location})

    def close(self) -> None:
        """Close the journal file (it stays on disk for the owner)."""
        self.writer.close()


def ingest(target: Writable, reader: JournalReader, locations: dict[str, str] | None = None) -> list[str]:
    """Write the journal records found by *reader* into *target*; return children's run ids.

    Every record read is written. A problem a record raises in strict mode comes from another
    process and cannot be raised there, so here it is a warning that names the run (*target*'s
    ``id``). Where a child said where its run lives (its wandb folder), *locations* gets
    ``{run id: folder}``.
    """
    children: list[str] = []
    for record in reader.read_new():
        if isinstance(record, dict):
            if record.get("type") == "child":
                children.append(str(record["run_id"]))
                if locations is not None and isinstance(record.get("location"), str):
                    locations[str(record["run_id"])] = record["location"]
            else:
                report(Problem("backend", f"instrument: journal {reader.folder}: a line of unknown type "
                               f"{record.get('type')!r} was skipped"), once=True)
            continue
        try:
            target.write([record])
        except InstrumentationError as error:
            warn(f"{error} (a record journaled for run {getattr(target, 'id', '?')})")
    return children


def children_summary(children: Iterable[str]) -> SummaryUpdate:
    """Return the summary record that lists a pipeline's child runs (``pipeline/children``)."""
    return SummaryUpdate(values={"pipeline/children": sorted(set(children))}, owned=True)
