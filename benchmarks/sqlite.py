"""``sqlite``: durable append and consume throughput, reactor vs. a raw sqlite3 loop.

Both sides do the same durable work, in the same run, on the same kind of file
(WAL, ``synchronous=NORMAL`` unless ``--full``), with the same batching:

* **append**: ``N`` ready-made events are published in batches of ``--batch``.
  ``reactor`` calls ``System.publish_many`` on a ``sqlite`` channel with no
  subscriber (events are stored, nobody is owed them): credits, JSON encoding
  with :class:`~reactor.JsonCodec`, one ``INSERT`` + ``COMMIT`` per batch in the
  publisher's thread, and the hand-off to the channel actor. ``raw`` encodes the
  same events with the same codec and runs ``executemany(INSERT)`` + ``COMMIT``
  per batch on a table of the same shape. Timed from the first publish to the
  last return.
* **consume**: a log holding ``N`` events is read by one new group from
  ``earliest``. ``reactor`` starts a topology with one consumer (the handler only
  counts), timed from ``Topology.start()`` until ``wait_idle()`` returns: every
  event paged from the file, decoded, delivered, handled, acked, and the
  group's offsets committed. ``raw`` reads pages of ``max_batch`` rows in offset
  order, decodes each with the same codec, calls the same counting handler and
  commits the group's offset with one ``UPDATE`` + ``COMMIT`` per page.

Ratios are reactor / raw, the median over the interleaved rounds and the best
run of each; targets: append >= 0.7, consume >= 0.85 (median, issue 13).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable

from benchmarks._harness import Result, best_of, describe_machine, median_ratio, now
from reactor import Event, JsonCodec, Topology
from reactor.messages.jsontext import json_text

__all__ = ["main"]

TOPIC = "bench.tick"
TARGET = 0.7  # append (issue 5)
CONSUME_TARGET = 0.85  # consume, on the median of the rounds (issue 13, target 4)
_codec = JsonCodec()


def _events(count: int) -> list[Event]:
    return [
        Event.create(TOPIC, {"n": n, "payload": "x" * 64}, source="bench") for n in range(count)
    ]


def _url(path: str, full: bool) -> str:
    return f"sqlite:///{path}" + ("?synchronous=full" if full else "")


def reactor_append(events: list[Event], batch: int, workdir: str, full: bool) -> float:
    path = os.path.join(workdir, "reactor-append.db")
    topo = Topology("bench-append")
    topo.channel("c", backend=_url(path, full), capacity=100_000)
    with topo.start() as system:
        started = now()
        for i in range(0, len(events), batch):
            system.publish_many("c", events[i : i + batch])
        seconds = now() - started
    _remove(path)
    return seconds


def raw_append(events: list[Event], batch: int, workdir: str, full: bool) -> float:
    path = os.path.join(workdir, "raw-append.db")
    db = _raw_db(path, full)
    started = now()
    seq = 0
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        bodies = [_codec.encode(event) for event in chunk]
        stamp = _wall()
        rows = [
            (1, seq + k + 1, stamp, e.topic, e.key, b)
            for k, (e, b) in enumerate(zip(chunk, bodies, strict=True))
        ]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO log(channel, seq, appended, topic, key, body) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute("COMMIT")
        seq += len(chunk)
    seconds = now() - started
    db.close()
    _remove(path)
    return seconds


def _fill_log(path: str, events: list[Event], full: bool) -> None:
    topo = Topology("bench-fill")
    topo.channel("c", backend=_url(path, full), capacity=100_000)
    with topo.start() as system:
        for i in range(0, len(events), 1000):
            system.publish_many("c", events[i : i + 1000])


def reactor_consume(template: str, workdir: str, full: bool, max_batch: int) -> float:
    path = os.path.join(workdir, "reactor-consume.db")
    shutil.copyfile(template, path)
    count = [0]

    def handle(event: Event) -> None:
        count[0] += 1

    topo = Topology("bench-consume")
    topo.channel("c", backend=_url(path, full), max_batch=max_batch)
    topo.consumer("reader", handle, channel="c", start="earliest", prefetch=2 * max_batch)
    started = now()
    with topo.start() as system:
        system.wait_idle(600)
        seconds = now() - started
    _remove(path)
    return seconds


def raw_consume(template: str, workdir: str, full: bool, max_batch: int) -> float:
    path = os.path.join(workdir, "raw-consume.db")
    shutil.copyfile(template, path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
    db.execute("CREATE TABLE IF NOT EXISTS offsets(grp TEXT PRIMARY KEY, committed INTEGER)")
    db.execute("INSERT OR REPLACE INTO offsets VALUES ('reader', 0)")
    count = [0]

    def handle(event: Event) -> None:
        count[0] += 1

    started = now()
    committed = 0
    while True:
        rows = db.execute(
            "SELECT seq, topic, body FROM reactor_log WHERE channel = 1 AND seq > ? ORDER BY seq LIMIT ?",
            (committed, max_batch),
        ).fetchall()
        if not rows:
            break
        for seq, _topic, body in rows:
            handle(_codec.decode(body))
            committed = seq
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE offsets SET committed = ? WHERE grp = 'reader'", (committed,))
        db.execute("COMMIT")
    seconds = now() - started
    db.close()
    _remove(path)
    return seconds


def _raw_db(path: str, full: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
    db.execute(
        "CREATE TABLE log(channel INTEGER NOT NULL, seq INTEGER NOT NULL, appended REAL NOT NULL, "
        "topic TEXT NOT NULL, body BLOB NOT NULL, key TEXT, PRIMARY KEY (channel, seq)) WITHOUT ROWID"
    )
    return db


def _wall() -> float:

    return time.time()


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def _report(title: str, results: list[Result], target: float) -> float:
    """Print the best runs and both ratios; return the median ratio (the target's measure)."""
    by_name = {r.name: r for r in results}
    print(f"\n{title}")
    for r in results:
        print(f"  {r.name:<8} {r.rate:>12,.0f} events/s  (best of {len(r.runs)}: {r.best_s:.3f} s)")
    best = by_name["reactor"].rate / by_name["raw"].rate
    median = median_ratio(by_name["raw"].runs, by_name["reactor"].runs)
    verdict = "meets" if median >= target else "below"
    print(f"  ratio reactor/raw: median of rounds {median:.2f}x ({verdict} the {target}x target)")
    print(f"                     best of each     {best:.2f}x")
    return median


def main(argv: list[str]) -> int:
    """Durable append and consume throughput of the sqlite backend vs. a raw sqlite3 loop."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks sqlite", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--events", type=int, default=50_000, help="events per run (default 50,000)"
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="events per publish / commit (default 100)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=128, help="events per delivery / page (default 128)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per variant, best kept (default 5)"
    )
    parser.add_argument("--full", action="store_true", help="synchronous=FULL (fsync every commit)")
    parser.add_argument("--dir", default=None, help="where to put the files (default: a temp dir)")
    args = parser.parse_args(argv)
    print(
        f"sqlite: {args.events:,} events, batch {args.batch}, synchronous={'FULL' if args.full else 'NORMAL'}"
    )
    print(describe_machine())
    events = _events(args.events)
    print(f"JSON library of the codecs (both sides): {json_text('auto').library}")
    workdir = tempfile.mkdtemp(prefix="reactor-bench-", dir=args.dir)
    try:
        append: dict[str, Callable[[int], float]] = {
            "reactor": lambda n: reactor_append(events[:n], args.batch, workdir, args.full),
            "raw": lambda n: raw_append(events[:n], args.batch, workdir, args.full),
        }
        print("\nappend")
        append_ratio = _report("append", best_of(append, args.repeat, args.events), TARGET)
        template = os.path.join(workdir, "template.db")
        _fill_log(template, events, args.full)
        consume: dict[str, Callable[[int], float]] = {
            "reactor": lambda n: reactor_consume(template, workdir, args.full, args.max_batch),
            "raw": lambda n: raw_consume(template, workdir, args.full, args.max_batch),
        }
        print("\nconsume")
        consume_ratio = _report(
            "consume", best_of(consume, args.repeat, args.events), CONSUME_TARGET
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nsummary (medians): append {append_ratio:.2f}x raw (target {TARGET}x), "
        f"consume {consume_ratio:.2f}x raw (target {CONSUME_TARGET}x)"
    )
    return 0
