"""The framing of wandb's ``.wandb`` transaction log: the records in its bytes, no wandb needed.

The framing is wandb-core's LevelDB-log variant (checked against files written by wandb 0.31.0):

* a 7-byte header: ``b":W&B"``, magic ``0xBEE1`` (uint16, little-endian), version ``0``;
* then 32 KiB blocks (the header counts as part of block 0) of chunks, each with a 7-byte
  header: CRC (uint32 LE), payload length (uint16 LE), type (FULL=1, FIRST=2, MIDDLE=3, LAST=4);
  a block tail shorter than a chunk header is zero padding;
* the CRC is the plain IEEE CRC-32 (``zlib.crc32``, *not* LevelDB's masked CRC-32C) of the
  type byte followed by the payload;
* each record payload is a serialized ``wandb.proto.wandb_internal_pb2.Record``.

:mod:`instrument.runfile` reads whole files with it; the wandb backend reads the end of a run's
file after a wandb-core that stopped answering was killed.
"""

from __future__ import annotations

import os
import pathlib
import struct
import zlib

HEADER = struct.Struct("<4sHB")  # ident, magic, version
_IDENT, _MAGIC, _VERSION = b":W&B", 0xBEE1, 0
_CHUNK = struct.Struct("<IHB")  # crc32, payload length, chunk type
BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class RunFileError(ValueError):
    """A file that is not a readable ``.wandb`` transaction log; the message names the file."""


def check_header(data: bytes, path: str | os.PathLike[str]) -> None:
    """Check that *data* starts with the header of a ``.wandb`` file.

    Raises:
        RunFileError: it is shorter than the header, has another magic, or another version.
    """
    if len(data) < HEADER.size:
        raise RunFileError(f"{path}: not a wandb file: {len(data)} bytes, shorter than the header")
    ident, magic, version = HEADER.unpack_from(data)
    if ident != _IDENT or magic != _MAGIC:
        raise RunFileError(f"{path}: not a wandb file: bad magic {data[:6]!r}")
    if version != _VERSION:
        raise RunFileError(f"{path}: unsupported .wandb version {version}")


def split_records(data: bytes, path: str | os.PathLike[str], *, offset: int = 0) -> tuple[list[bytes], bool]:
    """Return the record payloads in *data* and whether it ends inside a record.

    Args:
        data: a whole file (*offset* 0, the header checked), or the file from *offset* on.
        path: the file, named in errors.
        offset: where *data* starts in the file: 0, or a multiple of the 32 KiB block; records
            that began before it are skipped.

    Raises:
        RunFileError: the header is wrong, or a chunk is corrupt (bad checksum, overflowing its
            block, out of order).
    """
    if offset == 0:
        check_header(data, path)
    elif offset % BLOCK:
        raise ValueError(f"offset {offset} is not at a {BLOCK}-byte block boundary")
    records: list[bytes] = []
    parts: list[bytes] | None = None  # chunks of a record begun by FIRST
    resync = offset > 0  # skip the rest of a record that began before offset
    pos = 0 if offset else HEADER.size
    while pos < len(data):
        room = BLOCK - pos % BLOCK
        if room < _CHUNK.size:  # zero trailer of a block
            pos += room
            continue
        if pos + _CHUNK.size > len(data):
            return records, True
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        if crc == length == kind == 0:  # zero-filled tail (preallocated or crashed writer)
            return records, True
        end = pos + _CHUNK.size + length
        if end > len(data):
            return records, True
        if length > room - _CHUNK.size:
            raise RunFileError(f"{path}: corrupt: chunk at offset {offset + pos} overflows its block")
        if zlib.crc32(data[pos + 6 : end]) != crc:  # over the type byte and the payload
            raise RunFileError(f"{path}: corrupt: checksum mismatch in chunk at offset {offset + pos}")
        payload = data[pos + _CHUNK.size : end]
        if resync and kind in (_MIDDLE, _LAST):
            pos = end
            continue
        resync = False
        if kind == _FULL and parts is None:
            records.append(payload)
        elif kind == _FIRST and parts is None:
            parts = [payload]
        elif kind in (_MIDDLE, _LAST) and parts is not None:
            parts.append(payload)
            if kind == _LAST:
                records.append(b"".join(parts))
                parts = None
        else:
            raise RunFileError(f"{path}: corrupt: unexpected chunk type {kind} at offset {offset + pos}")
        pos = end
    return records, parts is not None


def read_tail(path: str | os.PathLike[str], max_bytes: int) -> list[bytes]:
    """Return the payloads of the records that begin in the last *max_bytes* of the file at *path*.

    Reading starts at the block that holds the first of those bytes (the whole file when it is
    smaller); a record torn by a killed writer is left out.

    Raises:
        OSError: the file cannot be read.
        RunFileError: it is not a ``.wandb`` file, or is corrupt.
    """
    with open(path, "rb") as handle:
        head = handle.read(HEADER.size)
        size = os.fstat(handle.fileno()).st_size
        offset = max(0, (size - max_bytes) // BLOCK * BLOCK)
        handle.seek(offset)
        data = handle.read()
    check_header(head, path)
    return split_records(data, pathlib.Path(path), offset=offset)[0]
