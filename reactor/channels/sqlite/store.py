"""Every statement on one channel's rows of a sqlite log, as typed methods.

One concept: the SQL of the ``sqlite`` backend (the schema and the file's lock
and format are in :mod:`reactor.channels.sqlite.file`). Reads go through the
channel's own reader connection, writes through the file's writer under its
lock, each write one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import attrs

from reactor.channels.sqlite.file import LogStore, write_transaction

__all__ = ["ChannelStore", "DeadLetterRow", "Progress", "Row"]

# (seq, topic, key, body): an event as the log stores it (topic None: not text, see page()).
Row = tuple[int, str | None, str | None, bytes]
# (group, seq, attempts, error type, message, traceback, body, consumer, dead_at):
# a stored dead letter.
DeadLetterRow = tuple[str, int, int, str, str, str, bytes, str, float]


@attrs.frozen(slots=True)
class Progress:
    """What a channel actor writes in one transaction, in this order.

    Attributes:
        attempts: ``(group, seq, attempts)``: attempts spent (failed, or charged to a crash)
            by events not settled yet.
        acked: ``(group, seq)`` acked above the group's watermark.
        cleared: ``(group, upto)``: the rows of ``group`` at or below ``upto`` are obsolete.
        positions: ``(group, committed, delivered)``: the new watermark and
            highest offset ever delivered.
        dead_letters: dead letters to keep.
    """

    attempts: Sequence[tuple[str, int, int]] = ()
    acked: Sequence[tuple[str, int]] = ()
    cleared: Sequence[tuple[str, int]] = ()
    positions: Sequence[tuple[str, int, int]] = ()
    dead_letters: Sequence[DeadLetterRow] = ()


class ChannelStore:
    """One channel's rows in a log file.

    Thread-safety: :meth:`append` needs :attr:`LogStore.lock` held by the caller
    (the publisher holds it around more than the write); the reads belong to the
    channel actor's thread (and its opening); the other writes take the lock.
    """

    def __init__(self, store: LogStore, name: str) -> None:
        self.file = store
        with store.transaction() as db:
            db.execute("INSERT OR IGNORE INTO reactor_channels(name) VALUES (?)", (name,))
            cid, head = db.execute(
                "SELECT id, head FROM reactor_channels WHERE name = ?", (name,)
            ).fetchone()
            last = db.execute(
                "SELECT max(seq) FROM reactor_log WHERE channel = ?", (cid,)
            ).fetchone()[0]
        self.id = int(cid)
        self.head = max(int(head), int(last or 0))  # the last offset appended
        self.reader: sqlite3.Connection = store.reader()

    def close(self) -> None:
        self.reader.close()

    # -- reads ---------------------------------------------------------------------

    def last_appended(self) -> float:
        """The append time of the newest event (0.0 for an empty log)."""
        row = self.reader.execute(
            "SELECT appended FROM reactor_log WHERE channel = ? ORDER BY seq DESC LIMIT 1",
            (self.id,),
        ).fetchone()
        return float(row[0]) if row else 0.0

    def low(self) -> int:
        """The first offset still in the log (``head + 1`` when it is empty)."""
        row = self.reader.execute(
            "SELECT min(seq) FROM reactor_log WHERE channel = ?", (self.id,)
        ).fetchone()
        return int(row[0]) if row[0] is not None else self.head + 1

    def positions(self) -> dict[str, tuple[int, int]]:
        """group -> (committed, delivered) of every group the log knows."""
        return {
            name: (int(committed), int(delivered))
            for name, committed, delivered in self.reader.execute(
                "SELECT grp, committed, delivered FROM reactor_groups WHERE channel = ?",
                (self.id,),
            )
        }

    def pending(self, group: str, above: int) -> list[tuple[int, int, str | None]]:
        """``(seq, attempts, topic)`` recorded for ``group`` above ``above`` (attempts -1: acked).

        ``topic`` is None where the stored topic is not UTF-8 text (see :meth:`page`).
        """
        return [
            (seq, attempts, _text(topic))
            for seq, attempts, topic in self.reader.execute(
                "SELECT p.seq, p.attempts, CAST(l.topic AS BLOB) FROM reactor_pending p "
                "JOIN reactor_log l ON l.channel = p.channel AND l.seq = p.seq "
                "WHERE p.channel = ? AND p.grp = ? AND p.seq > ?",
                (self.id, group, above),
            )
        ]

    def appended_at(self, seq: int) -> float | None:
        """When ``seq`` was appended; None if it is not in the log."""
        row = self.reader.execute(
            "SELECT appended FROM reactor_log WHERE channel = ? AND seq = ?", (self.id, seq)
        ).fetchone()
        return None if row is None else float(row[0])

    def topic_counts(self, after: int, upto: int) -> list[tuple[str | None, int]]:
        """How many events of each topic lie in offsets ``(after, upto]``.

        A topic that is not UTF-8 text is None (see :meth:`page`).
        """
        return [
            (_text(topic), count)
            for topic, count in self.reader.execute(
                "SELECT CAST(topic AS BLOB), count(*) FROM reactor_log "
                "WHERE channel = ? AND seq > ? AND seq <= ? GROUP BY topic",
                (self.id, after, upto),
            )
        ]

    def page(self, after: int, upto: int, limit: int) -> tuple[list[Row], dict[int, str]]:
        """Up to ``limit`` events in offsets ``(after, upto]``, in offset order.

        Returns:
            The rows, and what is wrong with each row (by offset) whose topic or
            key is not UTF-8 text (written by another tool, or damaged): such a
            row comes back with topic and key None, for its groups to dead-letter.
        """
        try:
            rows: list[Row] = self.reader.execute(
                "SELECT seq, topic, key, body FROM reactor_log "
                "WHERE channel = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (self.id, after, upto, limit),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise
        else:
            # A BLOB where text belongs comes back as bytes rather than failing.
            texts = {type(row[1]) for row in rows} | {type(row[2]) for row in rows}
            if _STR_OR_NONE.issuperset(texts):
                return rows, {}
        rows = []
        unreadable: dict[int, str] = {}
        for seq, topic, key, body in self.reader.execute(
            "SELECT seq, CAST(topic AS BLOB), CAST(key AS BLOB), body FROM reactor_log "
            "WHERE channel = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (self.id, after, upto, limit),
        ):
            topic_text, key_text = _text(topic), _text(key)
            if topic_text is None or (key is not None and key_text is None):
                bad = [
                    f"{name}={value!r:.80}"
                    for name, value, text in (("topic", topic, topic_text), ("key", key, key_text))
                    if value is not None and text is None
                ]
                unreadable[seq] = f"offset {seq}: column(s) not UTF-8 text: {', '.join(bad)}"
                rows.append((seq, None, None, body))
            else:
                rows.append((seq, topic_text, key_text, body))
        return rows, unreadable

    def groups_behind(self, last: int) -> list[tuple[str, int]]:
        """``(group, committed)`` of every group in the file whose watermark is below ``last``."""
        return [
            (name, int(committed))
            for name, committed in self.reader.execute(
                "SELECT grp, committed FROM reactor_groups WHERE channel = ? AND committed < ?",
                (self.id, last),
            )
        ]

    # -- writes --------------------------------------------------------------------

    def append(
        self, first: int, appended: float, rows: Iterable[tuple[str, str | None, bytes]]
    ) -> None:
        """Append ``(topic, key, body)`` rows at offsets ``first ..``, in one transaction.

        The caller holds the file's lock.
        """
        with write_transaction(self.file.writer) as db:
            self._log_rows(db, first, appended, rows)

    def _log_rows(
        self,
        db: sqlite3.Connection,
        first: int,
        appended: float,
        rows: Iterable[tuple[str, str | None, bytes]],
    ) -> None:
        """Insert ``(topic, key, body)`` rows into the log at offsets ``first ..``, in ``db``'s
        open transaction."""
        db.executemany(
            "INSERT INTO reactor_log(channel, seq, appended, topic, key, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (self.id, first + i, appended, topic, key, body)
                for i, (topic, key, body) in enumerate(rows)
            ],
        )

    def add_groups(self, positions: Sequence[tuple[str, int]]) -> None:
        """Record new groups at their ``(group, committed)`` starting watermark."""
        cid = self.id
        with self.file.transaction() as db:
            db.executemany(
                "INSERT INTO reactor_groups(channel, grp, committed) VALUES (?, ?, ?)",
                [(cid, name, committed) for name, committed in positions],
            )

    def rewind(self, group: str, position: int) -> None:
        """Move ``group`` back (or forward) to ``position``, forgetting its attempts and acks."""
        cid = self.id
        with self.file.transaction() as db:
            db.execute("DELETE FROM reactor_pending WHERE channel = ? AND grp = ?", (cid, group))
            db.execute(
                "UPDATE reactor_groups SET committed = ?, delivered = ? WHERE channel = ? AND grp = ?",
                (position, position, cid, group),
            )

    def delete_before(self, cutoff: int, head: int) -> int:
        """Delete the events below ``cutoff`` and move every group past them; returns how many."""
        cid = self.id
        last = cutoff - 1
        with self.file.transaction() as db:
            deleted = db.execute(
                "DELETE FROM reactor_log WHERE channel = ? AND seq < ?", (cid, cutoff)
            ).rowcount
            db.execute("DELETE FROM reactor_pending WHERE channel = ? AND seq < ?", (cid, cutoff))
            db.execute(
                "UPDATE reactor_groups SET committed = ? WHERE channel = ? AND committed < ?",
                (last, cid, last),
            )
            # The head is kept: offsets are never reused, even once the log is empty.
            db.execute("UPDATE reactor_channels SET head = max(head, ?) WHERE id = ?", (head, cid))
        return int(deleted)

    def save(self, progress: Progress) -> None:
        """Write ``progress`` in one transaction (nothing if it is empty)."""
        cid = self.id
        writes: list[tuple[str, object, bool]] = []
        if progress.attempts:
            writes.append(
                (
                    "INSERT INTO reactor_pending(channel, grp, seq, attempts) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(channel, grp, seq) DO UPDATE SET attempts = excluded.attempts",
                    [(cid, g, seq, n) for g, seq, n in progress.attempts],
                    True,
                )
            )
        if progress.acked:
            writes.append(
                (
                    "INSERT INTO reactor_pending(channel, grp, seq, attempts) VALUES (?, ?, ?, -1) "
                    "ON CONFLICT(channel, grp, seq) DO UPDATE SET attempts = -1",
                    [(cid, g, seq) for g, seq in progress.acked],
                    True,
                )
            )
        writes.extend(
            (
                "DELETE FROM reactor_pending WHERE channel = ? AND grp = ? AND seq <= ?",
                (cid, g, upto),
                False,
            )
            for g, upto in progress.cleared
        )
        writes.extend(
            (
                "UPDATE reactor_groups SET committed = ?, delivered = ? "
                "WHERE channel = ? AND grp = ?",
                (committed, delivered, cid, g),
                False,
            )
            for g, committed, delivered in progress.positions
        )
        if progress.dead_letters:
            writes.append(
                (
                    "INSERT OR REPLACE INTO reactor_deadletters(channel, grp, seq, attempts, "
                    "error_type, message, traceback, body, consumer, dead_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(cid, *row) for row in progress.dead_letters],
                    True,
                )
            )
        if writes:
            self.file.write(writes)

    # -- dead letters (any thread: through the writer, under the file's lock) -------------

    def dead_letters(self, group: str | None, limit: int | None) -> list[DeadLetterRow]:
        """The stored letters (of ``group``, if given), oldest first, at most ``limit``."""
        sql = (
            "SELECT grp, seq, attempts, error_type, message, traceback, body, consumer, dead_at "
            "FROM reactor_deadletters WHERE channel = ?"
        )
        parameters: list[object] = [self.id]
        if group is not None:
            sql += " AND grp = ?"
            parameters.append(group)
        sql += " ORDER BY dead_at, seq, grp LIMIT ?"
        parameters.append(-1 if limit is None else limit)
        with self.file.lock:
            return self.file.writer.execute(sql, parameters).fetchall()

    def count_dead_letters(self) -> int:
        return self._count_rows("reactor_deadletters")

    def _count_rows(self, table: str) -> int:
        """How many rows of ``table`` (one of ours, never a user's text) are this channel's."""
        with self.file.lock:
            return int(
                self.file.writer.execute(
                    f"SELECT count(*) FROM {table} WHERE channel = ?", (self.id,)
                ).fetchone()[0]
            )

    def delete_dead_letters(self, letters: Sequence[tuple[str, int]]) -> None:
        """Delete the ``(group, seq)`` letters; the caller holds the file's lock."""
        db = self.file.writer
        with write_transaction(db):
            db.executemany(
                "DELETE FROM reactor_deadletters WHERE channel = ? AND grp = ? AND seq = ?",
                [(self.id, g, seq) for g, seq in letters],
            )

    def redrive(
        self,
        first: int,
        appended: float,
        rows: Sequence[tuple[str, str, str | None, bytes, int]],
    ) -> None:
        """Append letters again for their groups only, and delete them: one transaction.

        ``rows`` are ``(group, topic, key, body, old seq)``; row ``i`` goes to offset
        ``first + i``, acked already (a pending row of -1) for every other group the
        file knows, so that only its own group is given it, now or after a restart.
        The caller holds the file's lock.
        """
        cid = self.id
        db = self.file.writer
        with write_transaction(db):
            known = [
                g for (g,) in db.execute("SELECT grp FROM reactor_groups WHERE channel = ?", (cid,))
            ]
            self._log_rows(db, first, appended, [(t, k, b) for _, t, k, b, _ in rows])
            db.executemany(
                "INSERT OR REPLACE INTO reactor_pending(channel, grp, seq, attempts) "
                "VALUES (?, ?, ?, -1)",
                [
                    (cid, other, first + i)
                    for i, (group, *_) in enumerate(rows)
                    for other in known
                    if other != group
                ],
            )
            db.executemany(
                "DELETE FROM reactor_deadletters WHERE channel = ? AND grp = ? AND seq = ?",
                [(cid, group, seq) for group, _, _, _, seq in rows],
            )

    # -- the scheduled area: delayed events, moved into the log when due ----------------

    def count_scheduled(self) -> int:
        """How many delayed events of this channel wait in the file."""
        return self._count_rows("reactor_scheduled")

    def schedule(self, due: float, rows: Sequence[tuple[str, str | None, bytes]]) -> None:
        """Store ``(topic, key, body)`` rows due at wall time ``due``, in one transaction.

        The caller holds the file's lock.
        """
        cid = self.id
        with write_transaction(self.file.writer) as db:
            db.executemany(
                "INSERT INTO reactor_scheduled(channel, due, topic, key, body) "
                "VALUES (?, ?, ?, ?, ?)",
                [(cid, due, topic, key, body) for topic, key, body in rows],
            )

    def release_due(
        self, now: float, first: int, appended: float, limit: int
    ) -> tuple[list[tuple[str, str | None, bytes]], float | None]:
        """Move up to ``limit`` events due at ``now`` into the log at offsets ``first ..``.

        One transaction appends them (earliest due first, then in scheduling
        order) and deletes them from the scheduled area, so a crash leaves each
        in exactly one of the two. The caller holds the file's lock.

        Returns:
            The rows moved ``(topic, key, body)``, and the earliest due time left.
        """
        cid = self.id
        db = self.file.writer
        with write_transaction(db):
            due = db.execute(
                "SELECT id, topic, key, body FROM reactor_scheduled "
                "WHERE channel = ? AND due <= ? ORDER BY due, id LIMIT ?",
                (cid, now, limit),
            ).fetchall()
            if due:
                self._log_rows(db, first, appended, [(t, k, b) for _, t, k, b in due])
                db.executemany(
                    "DELETE FROM reactor_scheduled WHERE id = ?", [(row[0],) for row in due]
                )
            after = db.execute(
                "SELECT min(due) FROM reactor_scheduled WHERE channel = ?", (cid,)
            ).fetchone()[0]
        rows = [(topic, key, bytes(body)) for _, topic, key, body in due]
        return rows, None if after is None else float(after)

    # -- the dedup window of idempotent groups ------------------------------------------

    def seen_ids(self, group: str, size: int) -> list[tuple[int, str]]:
        """The last ``size`` handled ids of ``group``, newest first, as ``(n, event id)``."""
        with self.file.lock:
            return self.file.writer.execute(
                "SELECT n, event_id FROM reactor_dedup WHERE channel = ? AND grp = ? "
                "ORDER BY n DESC LIMIT ?",
                (self.id, group, size),
            ).fetchall()

    def record_seen(self, group: str, n: int, event_id: str, forget_upto: int | None) -> bool:
        """Record handled id number ``n`` of ``group`` (and forget ids up to ``forget_upto``).

        The caller holds the file's lock. Returns False if the file is closed
        already (a handler abandoned at shutdown): nothing was recorded.
        """
        db = self.file.writer
        try:
            db.execute("BEGIN IMMEDIATE")
        except Exception:  # closed under an abandoned handler: nothing to record any more
            return False
        try:
            db.execute(
                "INSERT OR REPLACE INTO reactor_dedup(channel, grp, n, event_id) VALUES (?, ?, ?, ?)",
                (self.id, group, n, event_id),
            )
            if forget_upto is not None:
                db.execute(
                    "DELETE FROM reactor_dedup WHERE channel = ? AND grp = ? AND n <= ?",
                    (self.id, group, forget_upto),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return True

    # -- projections: one checkpoint each, and the log read back in order ----------------

    def checkpoint(self, name: str) -> tuple[int, str, str] | None:
        """``(position, above, state)`` of projection ``name``'s checkpoint; None if none."""
        with self.file.lock:
            row = self.file.writer.execute(
                "SELECT position, above, state FROM reactor_projections "
                "WHERE channel = ? AND name = ?",
                (self.id, name),
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), str(row[2]))

    def save_checkpoint(self, name: str, position: int, above: str, state: str) -> bool:
        """Replace projection ``name``'s checkpoint: its position with its state, one transaction.

        ``above`` is a JSON array of the positions above ``position`` folded too.

        Returns False if the file is closed already (nothing was written).
        """
        with self.file.lock:
            db = self.file.writer
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.ProgrammingError:  # closed: the system stopped under the caller
                return False
            try:
                db.execute(
                    "INSERT OR REPLACE INTO reactor_projections(channel, name, position, above, "
                    "state) VALUES (?, ?, ?, ?, ?)",
                    (self.id, name, position, above, state),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return True

    def committed(self, group: str) -> int:
        """The watermark ``group`` last wrote: it settled every event at or below it."""
        with self.file.lock:
            row = self.file.writer.execute(
                "SELECT committed FROM reactor_groups WHERE channel = ? AND grp = ?",
                (self.id, group),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def events_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` ``(seq, body)`` of the log above offset ``after``, in offset order."""
        with self.file.lock:
            return [
                (int(seq), bytes(body))
                for seq, body in self.file.writer.execute(
                    "SELECT seq, body FROM reactor_log WHERE channel = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (self.id, after, limit),
                )
            ]


_STR_OR_NONE = frozenset({str, type(None)})


def _text(value: bytes | None) -> str | None:
    """``value`` (a column read as bytes) as text; None if it is None or not UTF-8."""
    if value is None:
        return None
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        return None
