"""What only the durable ``sqlite`` backend does: restarts, offsets, replay, retention, files.

The channel semantics it shares with ``memory`` are in ``test_channels.py``; crash
safety under ``SIGKILL`` is in ``test_sqlite_crash.py``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import reactor
from reactor import Event, Topology
from reactor.channels.sqlite import LogFormatError, LogLockedError, parse_url
from reactor.channels.sqlite import file as sqlite_file
from reactor.channels.sqlite.log import MIN_WINDOW, SqliteLog
from reactor.clock import SystemClock
from reactor.errors import DecodeError
from reactor.messages.control import Encoded
from reactor.messages.lifecycle import RETENTION_FORCED
from reactor.testing import Recorder, wait_for

ROOT = Path(__file__).resolve().parent.parent


def url(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def run(
    db: str,
    handler: Any,
    publish: range | None = None,
    *,
    group: str = "g",
    start: Any = "earliest",
    idempotent: bool = False,
    max_deliveries: int = 5,
    extra: Any = None,
) -> None:
    """One 'process lifetime': start a topology on ``db``, publish, drain, stop."""
    topo = Topology("durable")
    topo.channel("c", backend=db)
    topo.consumer(
        group,
        handler,
        channel="c",
        start=start,
        idempotent=idempotent,
        max_deliveries=max_deliveries,
    )
    if extra is not None:
        extra(topo)
    with topo.start() as system:
        for n in publish or ():
            system.publish("c", "t.x", n)
        system.wait_idle(10)


def channel_of(system: reactor.System, name: str = "c") -> Any:
    return system._router.channel(name)


# -- restarts --------------------------------------------------------------------------


def test_a_restart_resumes_after_the_last_acked_event(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db")
    first, second = Recorder(), Recorder()
    run(db, first, range(50))
    run(db, second, range(50, 60))
    assert first.data() == list(range(50))
    assert second.data() == list(range(50, 60)), "acked events must not come back"


def test_events_published_before_any_consumer_wait_in_the_log(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db")
    topo = Topology("producer-only")
    topo.channel("c", backend=db)
    with topo.start() as system:
        for n in range(5):
            system.publish("c", "t.x", n)
        assert system.metrics().channel("c").unrouted == 5
    recorder = Recorder()
    run(db, recorder)  # a new group starts at "earliest" by default
    assert recorder.data() == list(range(5))


def test_after_a_crash_only_the_first_unsettled_delivery_is_charged(tmp_path: Path) -> None:
    # Three events were delivered; the first was in the handler when the process
    # "died", the other two waited behind it in the prefetch. Only the first is
    # charged an attempt: the others come back as they were.
    db = url(tmp_path / "log.db")
    gate = threading.Event()
    topo = Topology("stuck")
    topo.channel("c", backend=db)
    topo.consumer("g", lambda e: gate.wait(5), channel="c", prefetch=4, shutdown_s=0.2)
    system = topo.start()
    for n in range(3):
        system.publish("c", "t.x", n)
    wait_for(lambda: system.metrics().group("c", "g").in_flight == 3)
    system.stop(timeout=1.0, drain=False)  # as if the process died: nothing was acked
    gate.set()

    seen: list[tuple[Any, int]] = []
    topo = Topology("again")
    topo.channel("c", backend=db)
    topo.consumer("g", lambda e: seen.append((e.data, _last_attempt[e.id])), channel="c")
    with topo.start() as system:
        system.wait_idle(10)
    assert seen == [(0, 2), (1, 1), (2, 1)]


_last_attempt: dict[str, int] = {}


def _event_of(item: Any) -> Event | None:
    try:
        return item.decode() if isinstance(item, Encoded) else item
    except DecodeError:
        return None  # bytes that are no event: nobody asks for their attempt


@pytest.fixture(autouse=True)
def record_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Deliver carries the attempt of each event; consumers do not pass it to handlers,
    # so the tests read it off the Deliver messages the channel sends.
    original = SqliteLog.deliver

    def deliver(self: SqliteLog, member: Any, deliver: Any) -> None:
        for item, attempt in zip(deliver.events, deliver.attempts, strict=True):
            event = _event_of(item)
            if event is not None:
                _last_attempt[event.id] = attempt
        original(self, member, deliver)

    monkeypatch.setattr(SqliteLog, "deliver", deliver)


def test_an_event_that_never_comes_back_is_dead_lettered_after_max_deliveries(
    tmp_path: Path,
) -> None:
    db = url(tmp_path / "log.db")
    release = threading.Event()
    for round_ in range(3):
        topo = Topology(f"poison-{round_}")
        topo.channel("c", backend=db)
        topo.consumer("g", lambda e: release.wait(5), channel="c", max_deliveries=3, shutdown_s=0.2)
        system = topo.start()
        if round_ == 0:
            system.publish("c", "t.x", "poison")
        wait_for(lambda system=system: system.metrics().group("c", "g").in_flight == 1)
        system.stop(timeout=1.0, drain=False)  # the process "dies" while the event is in flight
    release.set()
    dead, handled = Recorder(), Recorder()
    topo = Topology("after")
    topo.channel("c", backend=db)
    topo.consumer("g", handled, channel="c", max_deliveries=3)
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    with topo.start() as system:
        dead.wait_for_count(1)
        system.wait_idle(5)
    assert handled.data() == []
    letter = dead.events[0].data
    assert (letter["error_type"], letter["attempts"], letter["group"]) == (
        "DeliveryAbandoned",
        3,
        "g",
    )
    with sqlite3.connect(tmp_path / "log.db") as db_file:
        rows = db_file.execute(
            "SELECT grp, attempts, error_type FROM reactor_deadletters"
        ).fetchall()
    assert rows == [("g", 3, "DeliveryAbandoned")]


def test_an_event_whose_id_the_dedup_window_holds_is_never_dead_lettered(tmp_path: Path) -> None:
    # Its attempts are spent (the process died with it in flight, again and again),
    # but its id is in the group's durable dedup window: its handler did finish, only
    # the ack was lost. It is settled, not dead-lettered as DeliveryAbandoned.
    path = tmp_path / "log.db"
    db = url(path)
    release = threading.Event()
    sent = Event.create("t.x", "done-but-unacked")
    for round_ in range(3):
        topo = Topology(f"lost-acks-{round_}")
        topo.channel("c", backend=db)
        topo.consumer(
            "g",
            lambda e: release.wait(5),
            channel="c",
            max_deliveries=3,
            idempotent=True,
            shutdown_s=0.2,
        )
        system = topo.start()
        if round_ == 0:
            system.publish("c", sent)
        wait_for(lambda system=system: system.metrics().group("c", "g").in_flight == 1)
        system.stop(timeout=1.0, drain=False)
    release.set()
    with sqlite3.connect(path) as db_file:  # as if its handler had returned
        (cid,) = db_file.execute("SELECT id FROM reactor_channels WHERE name = 'c'").fetchone()
        db_file.execute(
            "INSERT INTO reactor_dedup(channel, grp, n, event_id) VALUES (?, 'g', 1, ?)",
            (cid, sent.id),
        )
    dead, handled = Recorder(), Recorder()
    topo = Topology("after")
    topo.channel("c", backend=db)
    topo.consumer("g", handled, channel="c", max_deliveries=3, idempotent=True)
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    with topo.start() as system:
        system.wait_idle(5)
        stats = system.metrics().group("c", "g")
    assert (handled.data(), dead.data(), stats.dead_lettered, stats.acked) == ([], [], 0, 1)
    with sqlite3.connect(path) as db_file:
        assert db_file.execute("SELECT count(*) FROM reactor_deadletters").fetchone() == (0,)
    again = Recorder()
    run(db, again)
    assert again.data() == []  # settled for good


def test_idempotent_dedup_survives_a_restart(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db")
    event = Event.create("t.x", {"order": 1})
    first, second = Recorder(), Recorder()
    for recorder in (first, second):
        topo = Topology("dedup")
        topo.channel("c", backend=db)
        topo.consumer("g", recorder, channel="c", idempotent=True)
        with topo.start() as system:
            system.publish("c", event)  # the same id, published again after a restart
            system.publish("c", "t.x", {"fresh": True})
            system.wait_idle(5)
    assert first.data() == [{"order": 1}, {"fresh": True}]
    assert second.data() == [{"fresh": True}]


# -- where a group starts, and replay ----------------------------------------------------


def _seed_log(db: str, count: int, wall: list[float] | None = None) -> None:
    topo = Topology("seed")
    topo.channel("c", backend=db)
    with topo.start() as system:
        for n in range(count):
            if wall is not None:
                wall[0] = 1000.0 + n
            system.publish("c", "t.x", n)


@pytest.fixture
def fake_wall(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    # The system's clock stamps appends with its wall time.
    monkeypatch.setattr(SystemClock, "wall", staticmethod(lambda: now[0]))
    return now


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("earliest", list(range(10))),
        ("latest", []),
        (4, list(range(3, 10))),  # offsets count from 1: offset 4 holds n == 3
        (0, list(range(10))),
        (datetime.fromtimestamp(1006.0, UTC), list(range(6, 10))),
        (datetime.fromtimestamp(1006.0, UTC).replace(tzinfo=None), list(range(6, 10))),
    ],
)
def test_a_new_group_starts_where_it_is_told(
    tmp_path: Path, fake_wall: list[float], start: Any, expected: list[int]
) -> None:
    db = url(tmp_path / "log.db")
    _seed_log(db, 10, fake_wall)
    recorder = Recorder()
    run(db, recorder, start=start)
    assert recorder.data() == expected


def test_a_known_group_ignores_start(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db")
    first, second = Recorder(), Recorder()
    run(db, first, range(3), start="latest")
    run(db, second, range(3, 5), start="earliest")
    assert (first.data(), second.data()) == ([0, 1, 2], [3, 4])


@pytest.mark.parametrize(
    ("from_", "expected"),
    [("earliest", list(range(10))), (8, [7, 8, 9]), ("latest", []), ("time", [5, 6, 7, 8, 9])],
)
def test_replay_rewinds_a_group(
    tmp_path: Path, fake_wall: list[float], from_: Any, expected: list[int]
) -> None:
    db = url(tmp_path / "log.db")
    recorder = Recorder()
    topo = Topology("replay")
    topo.channel("c", backend=db)
    topo.consumer("g", recorder, channel="c")
    with topo.start() as system:
        for n in range(10):
            fake_wall[0] = 1000.0 + n
            system.publish("c", "t.x", n)
        system.wait_idle(5)
        assert recorder.data() == list(range(10))
        position = from_ if from_ != "time" else datetime.fromtimestamp(1005.0, UTC)
        first = system.replay("c", "g", position)
        system.wait_idle(5)
        assert recorder.data()[10:] == expected
        assert first == (expected[0] + 1 if expected else 11)
        group = system.metrics().group("c", "g")
        assert (group.backlog, group.in_flight) == (0, 0)
    # The rewound position is durable too: nothing comes back after a restart.
    again = Recorder()
    run(db, again)
    assert again.data() == []


def test_replay_while_events_are_in_flight_loses_nothing(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db")
    gate = threading.Event()
    seen: list[int] = []

    def handle(event: Event) -> None:
        gate.wait(5)
        seen.append(event.data)

    topo = Topology("replay-busy")
    topo.channel("c", backend=db)
    topo.consumer("g", handle, channel="c", prefetch=2)
    with topo.start() as system:
        for n in range(6):
            system.publish("c", "t.x", n)
        wait_for(lambda: system.metrics().group("c", "g").in_flight == 2)
        system.replay("c", "g", "earliest")
        gate.set()
        system.wait_idle(5)
    assert seen[:2] == [0, 1]
    assert seen[2:] == list(range(6))


def test_replay_needs_a_log(tmp_path: Path) -> None:
    topo = Topology("memory")
    topo.channel("c")
    topo.consumer("g", Recorder(), channel="c")
    with topo.start() as system, pytest.raises(reactor.ReactorError, match="keeps no log"):
        system.replay("c", "g")


def test_replay_of_an_unknown_group_names_it(tmp_path: Path) -> None:
    topo = Topology("unknown")
    topo.channel("c", backend=url(tmp_path / "log.db"))
    topo.consumer("g", Recorder(), channel="c")
    with topo.start() as system, pytest.raises(LookupError, match=r"'nope'.*groups: g"):
        system.replay("c", "nope")


def test_a_bad_start_is_a_topology_error(tmp_path: Path) -> None:
    topo = Topology("bad-start")
    topo.channel("c", backend=url(tmp_path / "log.db"))
    topo.consumer("g", Recorder(), channel="c", start="yesterday")
    with pytest.raises(reactor.TopologyError, match="start must be"):
        topo.start()


# -- bounded memory ----------------------------------------------------------------------


def test_a_group_reading_a_large_log_pages_it_in(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db")
    topo = Topology("big")
    topo.channel("c", backend=db)
    with topo.start() as system:
        system.publish_many("c", [Event.create("t.x", n) for n in range(6000)])
    peak = [0]
    handled: list[int] = []
    holder: dict[str, Any] = {}
    ready = threading.Event()

    def handle(event: Event) -> None:
        ready.wait(5)
        peak[0] = max(peak[0], len(holder["channel"].log.groups["g"].events))
        handled.append(event.data)

    topo = Topology("reader")
    topo.channel("c", backend=db, capacity=100)  # the window held in memory: max(capacity, 1024)
    topo.consumer("g", handle, channel="c", prefetch=64)
    system = topo.start()
    holder["channel"] = channel_of(system)
    with system:
        group = system.metrics().group("c", "g")
        assert group.backlog + group.in_flight == 6000  # counted, not loaded
        ready.set()
        system.wait_idle(30)
    assert handled == list(range(6000))
    assert 0 < peak[0] <= MIN_WINDOW


# -- retention -----------------------------------------------------------------------------


def test_max_events_keeps_the_newest_and_reports_what_a_lagging_group_loses(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db", "max_events=100")
    gate = threading.Event()
    lagging: list[int] = []
    forced = Recorder()

    def slow(event: Event) -> None:
        gate.wait(10)
        lagging.append(event.data)

    topo = Topology("retention")
    topo.channel("c", backend=db, capacity=1000)
    fast = Recorder()
    topo.consumer("fast", fast, channel="c")
    topo.consumer("slow", slow, channel="c", prefetch=1)
    topo.consumer("watch", forced, channel="$system", pattern="$system.retention.#")
    with topo.start() as system:
        for n in range(300):
            system.publish("c", "t.x", n)
            if n % 50 == 49:
                fast.wait_for_count(n + 1)  # never 100 behind, however loaded the machine
        forced.wait_for_count(1)
        gate.set()
        system.wait_idle(10)
        stats = system.metrics().channel("c")
        slow_stats = system.metrics().group("c", "slow")
    with sqlite3.connect(tmp_path / "log.db") as db_file:
        kept = db_file.execute("SELECT count(*), min(seq), max(seq) FROM reactor_log").fetchone()
    assert kept[2] == 300
    assert 100 <= kept[0] <= 110
    assert {e.topic for e in forced.events} == {RETENTION_FORCED}
    lost = sum(e.data["count"] for e in forced.events)
    assert {e.data["group"] for e in forced.events} == {"slow"}
    assert slow_stats.expired == stats.expired == lost > 0
    # The slow group lost exactly what retention reported; everything else reached it, in order.
    assert len(lagging) + lost == 300
    assert lagging == sorted(lagging)
    assert lagging[-1] == 299
    assert system.metrics().group("c", "fast").expired == 0


def test_max_age_deletes_old_events(tmp_path: Path, fake_wall: list[float]) -> None:
    db = url(tmp_path / "log.db", "max_age=60")
    topo = Topology("age")
    topo.channel("c", backend=db)
    recorder = Recorder()
    topo.consumer("g", recorder, channel="c")
    with topo.start() as system:
        for n in range(10):
            fake_wall[0] = 1000.0 + 10 * n  # appended at 1000, 1010, ..., 1090
            system.publish("c", "t.x", n)
        system.wait_idle(5)
        deleted = channel_of(system).enforce_retention(now=1125.0)  # keeps appended >= 1065
        assert deleted == 7
        assert system.metrics().channel("c").expired == 0  # all were acked: nothing to report
    with sqlite3.connect(tmp_path / "log.db") as db_file:
        assert db_file.execute("SELECT min(seq), max(seq) FROM reactor_log").fetchone() == (8, 10)
    again = Recorder()
    run(db, again, range(10, 11), group="late")  # a new group starts at the oldest kept event
    assert again.data() == [7, 8, 9, 10]


def test_offsets_are_never_reused_after_retention_empties_the_log(
    tmp_path: Path, fake_wall: list[float]
) -> None:
    db = url(tmp_path / "log.db", "max_age=1")
    run(db, Recorder(), range(3))
    topo = Topology("empty")
    topo.channel("c", backend=db)
    topo.consumer("g", Recorder(), channel="c")
    with topo.start() as system:
        channel_of(system).enforce_retention(now=10_000.0)
        system.publish("c", "t.x", "next")
        assert channel_of(system).head == 4


# -- the file --------------------------------------------------------------------------------


def test_a_second_process_is_refused_the_log(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    topo = Topology("owner")
    topo.channel("c", backend=url(path))
    child = (
        "import sys, reactor\n"
        "from reactor.channels.sqlite import LogLockedError\n"
        "topo = reactor.Topology('intruder')\n"
        f"topo.channel('c', backend={url(path)!r})\n"
        "try:\n"
        "    topo.start().stop()\n"
        "except LogLockedError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    with topo.start():
        result = subprocess.run(
            [sys.executable, "-c", child],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 3, result.stderr
    assert "already open for writing by another process" in result.stdout
    assert str(path) in result.stdout
    # Once the owner has stopped, the file is free again.
    run(url(path), Recorder())


def test_the_same_channel_twice_in_one_process_is_refused(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db")
    first, second = Topology("a"), Topology("b")
    first.channel("c", backend=db)
    second.channel("c", backend=db)
    second.channel("d", backend=url(tmp_path / "other.db"))
    with first.start(), pytest.raises(LogLockedError, match=r"'c'.*already open in this process"):
        second.start()
    run(url(tmp_path / "other.db"), Recorder())  # the failed start gave back what it opened


def test_channels_can_share_one_file(tmp_path: Path) -> None:
    db = url(tmp_path / "shared.db")
    topo = Topology("shared")
    topo.channel("a", backend=db)
    topo.channel("b", backend=db)
    got_a, got_b = Recorder(), Recorder()
    topo.consumer("ra", got_a, channel="a")
    topo.consumer("rb", got_b, channel="b")
    with topo.start() as system:
        system.publish("a", "t.x", "to a")
        system.publish("b", "t.x", "to b")
        system.wait_idle(5)
    assert (got_a.data(), got_b.data()) == (["to a"], ["to b"])


def test_a_corrupted_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    path.write_bytes(b"this is not a database at all" * 200)
    topo = Topology("corrupt")
    topo.channel("c", backend=url(path))
    with pytest.raises(LogFormatError, match=r"log\.db.*corrupted or is not a SQLite database"):
        topo.start()


def test_a_foreign_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db_file:
        db_file.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)")
    topo = Topology("foreign")
    topo.channel("c", backend=url(path))
    with pytest.raises(LogFormatError, match=r"app\.db is a foreign database \(tables: users\)"):
        topo.start()
    with sqlite3.connect(path) as db_file:  # and it was left alone
        tables = {
            r[0] for r in db_file.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert tables == {"users"}


def _corrupt_row(path: Path, seq: int, body: bytes) -> None:
    with sqlite3.connect(path) as db_file:
        db_file.execute("UPDATE reactor_log SET body = ? WHERE seq = ?", (body, seq))


@pytest.mark.parametrize("groups", [1, 2])
def test_bytes_in_the_log_that_are_no_event_are_dead_lettered_with_their_bytes(
    tmp_path: Path, groups: int
) -> None:
    # One group: the consumer decodes, and nacks the bytes as final. Two groups: the
    # channel decodes once for both, and hands the bytes on for each to dead-letter.
    path = tmp_path / "log.db"
    db = url(path)
    topo = Topology("writer")
    topo.channel("c", backend=db)
    with topo.start() as system:
        system.publish_many("c", [Event.create("t.x", n) for n in range(5)])
    _corrupt_row(path, 3, b"{not json")

    topo = Topology("reader")
    topo.channel("c", backend=db)
    readers = [Recorder() for _ in range(groups)]
    for n, reader in enumerate(readers):
        topo.consumer(f"g{n}", reader, channel="c", max_deliveries=5)
    dead = Recorder()
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    with topo.start() as system:
        dead.wait_for_count(groups)
        system.wait_idle(5)
        stats = system.metrics().channel("c")
    assert all(reader.data() == [0, 1, 3, 4] for reader in readers)  # the rest, in order
    letters = sorted((e.data for e in dead.events), key=lambda d: d["group"])
    assert [d["group"] for d in letters] == [f"g{n}" for n in range(groups)]
    for letter in letters:
        assert letter["event"] is None
        assert letter["raw"] == b"{not json"
        assert letter["offset"] == 3
        assert letter["error_type"] == "DecodeError"
        assert letter["attempts"] == 1  # no retry: no attempt could decode it
    assert stats.dead_lettered == groups
    with sqlite3.connect(path) as db_file:  # kept in the file too, as stored
        rows = db_file.execute("SELECT grp, seq, body FROM reactor_deadletters").fetchall()
    assert sorted(rows) == [(f"g{n}", 3, b"{not json") for n in range(groups)]
    # Settled: a restart delivers nothing again.
    again = Recorder()
    run(db, again, group="g0")
    assert again.data() == []


@pytest.mark.parametrize("groups", [1, 2])
def test_a_row_whose_topic_or_key_is_not_text_is_dead_lettered_with_its_bytes(
    tmp_path: Path, groups: int
) -> None:
    # Written by another tool (or damaged): a topic stored as text that is not UTF-8,
    # and a key stored as a blob that is not UTF-8. Reading them used to fail the
    # whole page (and the channel with it); now each group dead-letters those rows
    # with their bytes and gets the rest.
    path = tmp_path / "log.db"
    db = url(path)
    topo = Topology("writer")
    topo.channel("c", backend=db)
    with topo.start() as system:
        system.publish_many("c", [Event.create("t.x", n, key=f"k{n}") for n in range(5)])
    with sqlite3.connect(path) as db_file:
        db_file.execute("UPDATE reactor_log SET topic = CAST(x'742eff' AS TEXT) WHERE seq = 2")
        db_file.execute("UPDATE reactor_log SET key = x'c328' WHERE seq = 4")
        bodies = dict(db_file.execute("SELECT seq, body FROM reactor_log"))

    topo = Topology("reader")
    topo.channel("c", backend=db)
    readers = [Recorder() for _ in range(groups)]
    for n, reader in enumerate(readers):
        topo.consumer(f"g{n}", reader, channel="c", pattern="t.#")
    dead = Recorder()
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    with topo.start() as system:
        dead.wait_for_count(2 * groups)
        system.wait_idle(5)
        assert system.health().status == "ok"
    assert all(reader.data() == [0, 2, 4] for reader in readers)
    letters = sorted((e.data for e in dead.events), key=lambda d: (d["group"], d["offset"]))
    assert [(d["group"], d["offset"]) for d in letters] == [
        (f"g{n}", offset) for n in range(groups) for offset in (2, 4)
    ]
    for letter in letters:
        assert letter["event"] is None
        assert letter["raw"] == bodies[letter["offset"]]
        assert letter["error_type"] == "DecodeError"
    assert "topic=b't.\\xff'" in letters[0]["message"]
    assert "key=b'\\xc3('" in letters[1]["message"]
    # Settled: a restart delivers nothing again.
    again = Recorder()
    run(db, again, group="g0")
    assert again.data() == []


def test_a_version_1_log_is_upgraded_and_keeps_per_key_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_file, "_UPGRADE_PAGE", 7)  # several pages
    path = tmp_path / "log.db"
    topo = Topology("writer")
    topo.channel("c", backend=url(path))
    events = [Event.create("t.x", n, key=f"k{n % 3}") for n in range(30)]
    with topo.start() as system:
        system.publish_many("c", events)
    with sqlite3.connect(path) as db_file:  # what reactor wrote before the key column
        db_file.executescript(
            "ALTER TABLE reactor_log DROP COLUMN key;"
            "UPDATE reactor_meta SET value = '1' WHERE key = 'version';"
        )
    seen: dict[str, list[int]] = {}
    lock = threading.Lock()

    def handle(event: Event) -> None:
        with lock:
            seen.setdefault(event.key or "", []).append(event.data)

    topo = Topology("reader")
    topo.channel("c", backend=url(path))
    topo.pool("g", handle, channel="c", min_size=3, max_size=3)
    with topo.start() as system:
        system.wait_idle(10)
    assert seen == {f"k{k}": list(range(k, 30, 3)) for k in range(3)}
    with sqlite3.connect(path) as db_file:
        version = db_file.execute("SELECT value FROM reactor_meta WHERE key = 'version'").fetchone()
        keys = db_file.execute("SELECT key FROM reactor_log ORDER BY seq").fetchall()
    assert version == ("3",)
    assert [k for (k,) in keys] == [e.key for e in events]


def test_the_window_holds_stored_bytes_and_consumers_get_events(tmp_path: Path) -> None:
    db = url(tmp_path / "log.db")
    topo = Topology("writer")
    topo.channel("c", backend=db)
    with topo.start() as system:
        system.publish_many("c", [Event.create("t.x", {"n": n}) for n in range(50)])
    gate = threading.Event()
    got = Recorder()

    def handle(event: Event) -> None:
        gate.wait(5)
        got(event)

    topo = Topology("reader")
    topo.channel("c", backend=db)
    topo.consumer("g", handle, channel="c", prefetch=4)
    with topo.start() as system:
        held = channel_of(system).log.groups["g"].events
        wait_for(lambda: len(held) == 50)
        assert all(isinstance(item, Encoded) for item in list(held.values()))
        gate.set()
        system.wait_idle(5)
    assert all(isinstance(e, Event) for e in got.events)
    assert [e.data["n"] for e in got.events] == list(range(50))


def test_a_log_from_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    run(url(path), Recorder())
    with sqlite3.connect(path) as db_file:
        db_file.execute("UPDATE reactor_meta SET value = '99' WHERE key = 'version'")
    topo = Topology("newer")
    topo.channel("c", backend=url(path))
    with pytest.raises(LogFormatError, match="format version '99'"):
        topo.start()


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("sqlite://relative.db", "must look like sqlite:///"),
        ("sqlite:///", "must look like"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous='sometimes' in .* must be 'normal'"),
        ("sqlite:///x.db?max_events=-3", "max_events='-3' in .* must be a positive integer"),
        ("sqlite:///x.db?max_age=soon", "max_age='soon' in .* must be a positive number"),
        ("sqlite:///x.db?colour=blue", "unknown sqlite option 'colour'"),
    ],
)
def test_bad_urls_are_topology_errors(backend: str, message: str) -> None:
    with pytest.raises(reactor.TopologyError, match=message):
        parse_url(backend, "c")


def test_url_options(tmp_path: Path) -> None:
    assert parse_url("sqlite:///rel/x.db", "c").path == "rel/x.db"
    assert parse_url("sqlite:////abs/x.db", "c").path == "/abs/x.db"
    options = parse_url("sqlite:///x.db?synchronous=FULL&max_events=10&max_age=2.5", "c")
    assert (options.synchronous, options.max_events, options.max_age) == ("full", 10, 2.5)
    recorder = Recorder()
    run(url(tmp_path / "full.db", "synchronous=full"), recorder, range(3))
    assert recorder.data() == [0, 1, 2]
