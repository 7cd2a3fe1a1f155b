"""A faster route for history rows of plain numbers into wandb-core, for wandb 0.31 only.

``run.log`` spends about 180 us of Python per 10-key row (a JSON encoder call per value, a
protobuf built item by item, an OpenTelemetry measurement, and a wait for wandb's asyncio thread
per row). For a row whose keys are strings and whose values are exactly ``int``, ``float`` or
``bool``, :class:`HistoryWriter` builds the same partial-history request that ``run.log`` sends
and hands several rows to wandb's asyncio thread at once. The ``.wandb`` file it leads to is the
one ``run.log`` writes (a parity test checks it). It is used only with the wandb version it was
checked against, only when the run looks exactly as expected, and a row it cannot take goes
through ``run.log``.
"""

from __future__ import annotations

import math
import operator
import struct
import time
from typing import Any

#: The wandb versions whose ``run.log`` this module mirrors (checked by the parity test).
SUPPORTED_VERSIONS = ("0.31.0",)

#: Rows handed to wandb's asyncio thread at once, at most.
MAX_ROWS = 64

#: Encoded bytes handed to wandb's asyncio thread at once, at most.
MAX_BYTES = 1 << 20

_HEADER = struct.Struct("<BI").pack
_MAGIC = ord("W")
_float_repr = float.__repr__
_int_repr = int.__repr__


def value_json(value: Any) -> str:
    """Return the JSON text ``run.log`` writes for a plain ``int``, ``float`` or ``bool``.

    The same text as Python's JSON encoder with ``allow_nan``: ``NaN``, ``Infinity``,
    ``-Infinity``, ``true``/``false``, ``repr`` otherwise.
    """
    kind = value.__class__
    if kind is float:
        if value - value == 0.0:  # finite
            return _float_repr(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind is bool:
        return "true" if value else "false"
    return _int_repr(value)


_PLAIN = frozenset({int, float, bool})
_STR = frozenset({str})
_private = operator.methodcaller("startswith", "_")


def is_plain_row(row: dict[str, Any]) -> bool:
    """Return whether :class:`HistoryWriter` can take *row*: non-empty string keys that do not
    start with ``_`` (wandb treats ``_step`` and ``_timestamp`` specially), values exactly int,
    float or bool. Checked by C loops: about 0.1 us a key."""
    return (
        _PLAIN.issuperset(map(type, row.values()))
        and _STR.issuperset(map(type, row))
        and "" not in row
        and not any(map(_private, row))
    )


class HistoryWriter:
    """Send rows of plain numbers to a wandb 0.31 run's wandb-core, several per hand-over.

    Rows added with :meth:`add` are encoded at once and sent by :meth:`send`; the caller sends
    before any other call to the run, so the order of records is kept.
    """

    def __init__(self, run: Any, interface: Any) -> None:
        import importlib

        self._run = run
        self._client = interface._client
        self._asyncer = interface._asyncer
        self._stream_id: str = interface._stream_id
        self._request: Any = importlib.import_module("wandb.proto.wandb_server_pb2").ServerRequest
        self._chunks: list[bytes] = []
        self._bytes = 0
        self.pending: list[dict[str, Any]] = []  # rows encoded and not sent yet

    @classmethod
    def attach(cls, run: Any) -> HistoryWriter | None:
        """Return a writer for *run*, or None if anything about it is not as this module expects.

        Checks: the wandb version is in :data:`SUPPORTED_VERSIONS`; the run talks to wandb-core
        through its socket interface; history values are written in the JSON form only; no
        TensorBoard sync is patched in (it changes how steps are published).
        """
        try:
            import wandb
            from wandb.sdk.interface.interface_sock import InterfaceSock

            interface = getattr(run, "_interface", None)
            if (
                wandb.__version__ not in SUPPORTED_VERSIONS
                or type(interface) is not InterfaceSock
                or run._settings.x_history_value_encoding != "json"
                or wandb.patched["tensorboard"]
                or not isinstance(getattr(run, "_local_step", None), int)
                or not all(hasattr(interface, name) for name in ("_client", "_asyncer", "_stream_id"))
                or not hasattr(interface._client, "_writer")
            ):
                return None
            return cls(run, interface)
        except Exception:  # any doubt: run.log
            return None

    def add(self, row: dict[str, Any]) -> bool:
        """Encode *row* for the next :meth:`send`; False (nothing done) if it is not plain.

        Returns True when the row was taken; the caller then calls :meth:`send` when
        :attr:`full` or before any other call to the run.
        """
        if not is_plain_row(row):
            return False
        request = self._request()
        record = request.record_publish
        add = record.request.partial_history.item.add
        for key, value in row.items():
            add(key=key, value_json=value_json(value))
        add(key="_timestamp", value_json=_float_repr(time.time()))
        record.control.local = True  # as wandb marks every request: not persisted as such
        record._info.stream_id = self._stream_id
        data = request.SerializeToString()
        self._chunks.append(_HEADER(_MAGIC, len(data)))
        self._chunks.append(data)
        self._bytes += len(data) + 5
        self.pending.append(row)
        return True

    @property
    def full(self) -> bool:
        """Whether enough rows wait that they should be sent now."""
        return len(self.pending) >= MAX_ROWS or self._bytes >= MAX_BYTES

    def send(self) -> None:
        """Hand every encoded row to wandb-core in one write, waiting for its flow control.

        Raises:
            Exception: whatever wandb's socket client raises (a broken connection); the rows
                stay in :attr:`pending` for the caller to keep.
        """
        if not self.pending:
            return
        payload = b"".join(self._chunks)
        client = self._client

        async def publish() -> None:  # what wandb's ServiceClient.publish does, for many rows
            if client._broken_exc is not None:
                raise client._broken_exc
            client._writer.write(payload)
            try:
                await client._drain_writer()
            except Exception as error:
                client._broken_exc, client._broken_tb = error, error.__traceback__
                raise

        self._asyncer.run(publish)
        self._run._local_step += len(self.pending)  # as run.log counts its rows
        self._chunks = []
        self._bytes = 0
        self.pending = []
