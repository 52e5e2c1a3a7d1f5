"""The instances of a saga whose channel is a sqlite log, kept in the log's file.

One concept: the SQL of saga records (the table is created with the rest of the
schema in :mod:`reactor.channels.sqlite.file`). Each instance is one row of
``reactor_sagas``, keyed by channel, saga and instance id, holding its state (to
count and list by state) and its record as JSON
(:func:`~reactor.channels.sagas.encode_instance`). Every save is one committed
transaction through the file's writer, under its lock.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from reactor.channels.sagas import (
    FINISHED_STATES,
    SagaInstance,
    decode_instance,
    encode_instance,
)
from reactor.channels.sqlite.file import LogStore

__all__ = ["SqliteSagaStore"]

logger = logging.getLogger("reactor")


class SqliteSagaStore:
    """A :class:`~reactor.channels.sagas.SagaStore` in a sqlite log file.

    Args:
        file: the open log file of the saga's channel.
        channel_id: the channel's id in that file.
        channel: the channel's name, for messages.
        saga: the saga's name.

    Thread-safety: every method may be called from any thread (each takes the
    file's lock around its statement).
    """

    def __init__(self, file: LogStore, channel_id: int, channel: str, saga: str) -> None:
        self._file = file
        self._channel_id = channel_id
        self._where = f"saga {saga!r} on sqlite channel {channel!r}"
        self._saga = saga

    def load(self, instance: str) -> SagaInstance | None:
        rows = self._read(
            "SELECT record FROM reactor_sagas WHERE channel = ? AND saga = ? AND id = ?",
            (self._channel_id, self._saga, instance),
        )
        return decode_instance(rows[0][0], self._where) if rows else None

    def save(self, record: SagaInstance) -> None:
        text = encode_instance(record)
        with self._file.lock:
            # Each statement is a transaction by itself: committed when execute returns.
            self._file.writer.execute(
                "INSERT OR REPLACE INTO reactor_sagas(channel, saga, id, state, started, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self._channel_id, self._saga, record.id, record.state, record.started, text),
            )

    def instances(self, state: str | None = None) -> list[SagaInstance]:
        if state is None:
            rows = self._read(
                "SELECT record FROM reactor_sagas WHERE channel = ? AND saga = ? "
                "ORDER BY started, id",
                (self._channel_id, self._saga),
            )
        else:
            rows = self._read(
                "SELECT record FROM reactor_sagas WHERE channel = ? AND saga = ? AND state = ? "
                "ORDER BY started, id",
                (self._channel_id, self._saga, state),
            )
        return [decode_instance(row[0], self._where) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._read(
            "SELECT state, count(*) FROM reactor_sagas WHERE channel = ? AND saga = ? "
            "GROUP BY state",
            (self._channel_id, self._saga),
        )
        return {str(state): int(count) for state, count in rows}

    def prune(self, keep: int) -> int:
        finished = f"state IN ({', '.join('?' * len(FINISHED_STATES))})"
        mine = (self._channel_id, self._saga, *FINISHED_STATES)
        with self._file.lock:
            db = self._file.writer
            (count,) = db.execute(
                f"SELECT count(*) FROM reactor_sagas WHERE channel = ? AND saga = ? AND {finished}",
                mine,
            ).fetchone()
            excess = int(count) - keep
            if excess <= 0:
                return 0
            # One statement, one transaction: committed when execute returns.
            db.execute(
                "DELETE FROM reactor_sagas WHERE channel = ? AND saga = ? AND id IN ("
                f"SELECT id FROM reactor_sagas WHERE channel = ? AND saga = ? AND {finished} "
                "ORDER BY started, id LIMIT ?)",
                (self._channel_id, self._saga, *mine, excess),
            )
            return excess

    def _read(self, sql: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._file.lock:
            try:
                return self._file.writer.execute(sql, parameters).fetchall()
            except sqlite3.ProgrammingError:
                # The channel closed its file (the system is stopping): nothing to read.
                logger.debug("%s: log closed, nothing read", self._where)
                return []
