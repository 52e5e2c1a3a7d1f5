"""The file under the ``sqlite`` backend: schema, single-writer lock, connections.

The statements that read and write a channel's rows are in
:mod:`reactor.channels.sqlite.store`; this module holds the file itself.

One :class:`LogStore` per database file per process, shared by every channel
that lives in that file and reference-counted by them. It owns:

* the **lock file** ``<db>.lock``, held with ``fcntl.flock(LOCK_EX | LOCK_NB)``
  for as long as the store is open: a second process that opens the log gets
  :class:`LogLockedError` at once instead of interleaving writes with ours. The
  kernel drops the lock when the process dies, even by ``SIGKILL``;
* the **writer connection**, guarded by :attr:`LogStore.lock`: publishers append
  through it in their own threads, channel actors record offsets and attempts
  through it, durable dedup windows record handled ids through it. Every write
  is one explicit transaction;
* the **schema** (``reactor_*`` tables, WAL mode) and the format check that
  refuses a foreign or corrupted file with :class:`LogFormatError`.

A log holds every event's data, so a new log and its lock file are created
``0600`` (readable by their owner only); SQLite gives the ``-wal`` and ``-shm``
files the database file's mode. A log that cannot be created or opened (no such
folder, no permission) is a :class:`ChannelOpenError` naming the file.

Readers (one per channel actor) open their own connections with
:meth:`LogStore.reader`; WAL lets them read while the writer writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from reactor.channels.sqlite.options import Synchronous
from reactor.errors import ChannelOpenError, DecodeError, LogFormatError, LogLockedError
from reactor.messages.codecs import JsonCodec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LogFormatError",
    "LogLockedError",
    "LogStore",
    "open_store",
    "release_store",
    "write_transaction",
]

FORMAT = "reactor-sqlite-log"
FORMAT_VERSION = "3"
# Version 2 added reactor_log.key, so that a channel can keep per-key order
# without decoding the events it reads back. Version 3 added the consumer and the
# time of each dead letter (reactor_deadletters.consumer, .dead_at), to list them.

_UPGRADE_PAGE = 10_000
# A log and its lock file: readable and writable by their owner only.
_FILE_MODE = 0o600  # rows read at a time when a log is upgraded to this format

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reactor_meta(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactor_channels(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    head INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reactor_log(
    channel INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    appended REAL NOT NULL,
    topic TEXT NOT NULL,
    body BLOB NOT NULL,
    key TEXT,
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactor_groups(
    channel INTEGER NOT NULL,
    grp TEXT NOT NULL,
    committed INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactor_pending(
    channel INTEGER NOT NULL,
    grp TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (channel, grp, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactor_dedup(
    channel INTEGER NOT NULL,
    grp TEXT NOT NULL,
    n INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (channel, grp, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactor_deadletters(
    channel INTEGER NOT NULL,
    grp TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    body BLOB NOT NULL,
    consumer TEXT NOT NULL DEFAULT '',
    dead_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, grp, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactor_projections(
    channel INTEGER NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    above TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (channel, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactor_scheduled(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel INTEGER NOT NULL,
    due REAL NOT NULL,
    topic TEXT NOT NULL,
    key TEXT,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS reactor_scheduled_due ON reactor_scheduled(channel, due, id);
CREATE TABLE IF NOT EXISTS reactor_sagas(
    channel INTEGER NOT NULL,
    saga TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (channel, saga, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reactor_sagas_state ON reactor_sagas(channel, saga, state);
"""


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``db`` (autocommit mode): committed when the block ends,
    rolled back if it raises. The caller holds the file's lock."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class LogStore:
    """One open log file: its lock, its writer connection and its channels.

    Thread-safety: hold :attr:`lock` around every use of :attr:`writer`; the
    other methods may be called from any thread.
    """

    def __init__(self, path: str, synchronous: Synchronous) -> None:
        self.path = path
        self.synchronous = synchronous
        self.lock = threading.Lock()
        self.refs = 0
        self.channels: set[str] = set()
        self._lock_fd = _take_lock(path)
        try:
            _create_private(path)
            self.writer = _connect(path, synchronous)
            _check_and_create(self.writer, path)
        except BaseException:
            _drop_lock(self._lock_fd)
            raise

    def reader(self) -> sqlite3.Connection:
        """A new connection for one channel actor's reads (not shared between threads at once)."""
        return _connect(self.path, self.synchronous, read_only=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``with store.transaction() as db:`` one write transaction under :attr:`lock`."""
        with self.lock, write_transaction(self.writer) as db:
            yield db

    def write(self, statements: list[tuple[str, Any, bool]]) -> None:
        """Run ``(sql, parameters, many)`` statements as one transaction, in order.

        ``many`` means ``executemany`` with a list of parameter rows. A lone
        ``execute`` runs without ``BEGIN``/``COMMIT``: SQLite makes one statement
        a transaction by itself, and it is one call instead of three. That
        matters in a busy process: each call gives the GIL away while SQLite
        works, and must win it back from the other threads.
        """
        if len(statements) == 1 and not statements[0][2]:
            sql, parameters, _ = statements[0]
            with self.lock:
                self.writer.execute(sql, parameters)
            return
        with self.transaction() as db:
            for sql, parameters, many in statements:
                if many:
                    db.executemany(sql, parameters)
                else:
                    db.execute(sql, parameters)

    def close(self) -> None:
        with self.lock:
            self.writer.close()
        _drop_lock(self._lock_fd)


_STORES: dict[str, LogStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(path: str, synchronous: Synchronous, channel: str) -> LogStore:
    """Open (or share) the store for ``path`` and claim ``channel`` in it.

    Raises:
        LogLockedError: another process holds the file, or ``channel`` is already
            open in this process.
        LogFormatError: the file is not a reactor log.
    """
    real = os.path.realpath(path)
    with _STORES_LOCK:
        store = _STORES.get(real)
        if store is None:
            store = LogStore(real, synchronous)
            _STORES[real] = store
        if channel in store.channels:
            raise LogLockedError(
                f"channel {channel!r} of sqlite log {path} is already open in this process; "
                "a channel's log has one writer: stop the other system first"
            )
        store.channels.add(channel)
        store.refs += 1
        return store


def release_store(store: LogStore, channel: str) -> None:
    """Give back ``channel``'s claim; the last one closes the file and drops the lock."""
    with _STORES_LOCK:
        store.channels.discard(channel)
        store.refs -= 1
        if store.refs > 0:
            return
        _STORES.pop(store.path, None)
    store.close()


def _take_lock(path: str) -> int:
    lock_path = f"{path}.lock"
    directory = os.path.dirname(lock_path) or "."
    if not os.path.isdir(directory):
        raise ChannelOpenError(
            f"cannot open sqlite log {path}: directory {directory} does not exist; create it "
            "first, or point the channel's backend URL at another path"
        )
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    except OSError as exc:
        raise _open_error(path, lock_path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise LogLockedError(
            f"sqlite log {path} is already open for writing by another process "
            f"(pid {holder}, lock file {lock_path}); one process owns a log: stop it, "
            "or give this channel another file"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
    return fd


def _open_error(path: str, file: str, exc: OSError) -> ChannelOpenError:
    return ChannelOpenError(
        f"cannot open sqlite log {path}: {file}: {exc.strerror or exc}; check the folder's "
        "permissions, or point the channel's backend URL at another path"
    )


def _create_private(path: str) -> None:
    """Create the log file ``0600`` if it does not exist yet (SQLite would make it ``0644``)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise _open_error(path, path, exc) from None
    os.close(fd)


def _drop_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _connect(path: str, synchronous: Synchronous, *, read_only: bool = False) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), so
    # nothing is ever held open between calls by the sqlite3 module's own logic.
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    except sqlite3.OperationalError as exc:
        raise ChannelOpenError(
            f"cannot open sqlite log {path}: {exc}; check the file's and its folder's "
            "permissions, or point the channel's backend URL at another path"
        ) from None
    try:
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if read_only:
            db.execute("PRAGMA query_only=ON")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _format_error(path, exc) from None
    return db


def _format_error(path: str, exc: sqlite3.DatabaseError) -> LogFormatError:
    return LogFormatError(
        f"sqlite log {path} cannot be read ({exc}): the file is corrupted or is not a "
        "SQLite database; restore it from a backup or point the channel at another file"
    )


def _check_and_create(db: sqlite3.Connection, path: str) -> None:
    try:
        tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if tables and "reactor_meta" not in tables:
            raise LogFormatError(
                f"sqlite log {path} is a foreign database (tables: {', '.join(sorted(tables))}) "
                "without reactor's log tables; point the channel at another file"
            )
        if "reactor_meta" in tables:
            meta = dict(db.execute("SELECT key, value FROM reactor_meta").fetchall())
            if meta.get("format") != FORMAT:
                raise LogFormatError(
                    f"sqlite log {path} has a reactor_meta table but format "
                    f"{meta.get('format')!r}, not {FORMAT!r}; point the channel at another file"
                )
            version = meta.get("version")
            if version == "1":
                _upgrade_from_1(db)
                version = "2"
            if version == "2":
                _upgrade_from_2(db, tables)
            elif version != FORMAT_VERSION:
                raise LogFormatError(
                    f"sqlite log {path} is format version {meta.get('version')!r}; this reactor "
                    f"reads version {FORMAT_VERSION}: upgrade reactor or use another file"
                )
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LogFormatError(f"sqlite log {path} cannot use WAL mode (got {mode!r})")
        # executescript commits on its own; the schema is idempotent (IF NOT EXISTS).
        db.executescript(_SCHEMA)
        db.execute(
            "INSERT OR IGNORE INTO reactor_meta(key, value) VALUES ('format', ?), ('version', ?)",
            (FORMAT, FORMAT_VERSION),
        )
    except sqlite3.DatabaseError as exc:
        raise _format_error(path, exc) from None


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Add ``reactor_log.key`` to a version 1 log, filled from the stored events.

    One transaction: a crash leaves the file at version 1, to be upgraded next time.
    Bytes that are not an event get no key; the consumer that reads them
    dead-letters them as before.
    """
    codec = JsonCodec()
    with write_transaction(db):
        db.execute("ALTER TABLE reactor_log ADD COLUMN key TEXT")
        after = (0, 0)  # (channel, seq): a page at a time, so memory stays bounded
        while True:
            rows = db.execute(
                "SELECT channel, seq, body FROM reactor_log WHERE (channel, seq) > (?, ?) "
                "ORDER BY channel, seq LIMIT ?",
                (*after, _UPGRADE_PAGE),
            ).fetchall()
            if not rows:
                break
            after = (rows[-1][0], rows[-1][1])
            keys = []
            for channel, seq, body in rows:
                try:
                    key = codec.decode(body).key
                except DecodeError:
                    continue
                if key is not None:
                    keys.append((key, channel, seq))
            db.executemany("UPDATE reactor_log SET key = ? WHERE channel = ? AND seq = ?", keys)
        db.execute("UPDATE reactor_meta SET value = '2' WHERE key = 'version'")


def _upgrade_from_2(db: sqlite3.Connection, tables: set[str]) -> None:
    """Add each dead letter's consumer and time to a version 2 log, in one transaction.

    Letters stored before have no consumer ('') and time 0 (the epoch): nobody knows.
    """
    with write_transaction(db):
        if "reactor_deadletters" in tables:
            columns = {row[1] for row in db.execute("PRAGMA table_info(reactor_deadletters)")}
            if "consumer" not in columns:
                db.execute(
                    "ALTER TABLE reactor_deadletters ADD COLUMN consumer TEXT NOT NULL DEFAULT ''"
                )
            if "dead_at" not in columns:
                db.execute(
                    "ALTER TABLE reactor_deadletters ADD COLUMN dead_at REAL NOT NULL DEFAULT 0"
                )
        db.execute("UPDATE reactor_meta SET value = ? WHERE key = 'version'", (FORMAT_VERSION,))
