"""Dead letters you can operate: stored on every backend, listed, redriven, purged.

Each test runs with the settings a user gets by default, unless it says why not,
against every backend where the behaviour is the channel's.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import reactor
from reactor import Event, Topology
from reactor.channels import memory
from reactor.messages import lifecycle
from reactor.testing import Recorder, wait_for

TIMEOUT = 30.0


class Breakable:
    """Raises for the events whose number is in ``poison`` while ``broken``; records the rest.

    Each outcome is a pure function of the event and of whether the handler is fixed
    yet. Thread-safety: every method takes the lock.
    """

    def __init__(self, poison: set[int]) -> None:
        self.poison = poison
        self.broken = True
        self.lock = threading.Lock()
        self.handled: collections.Counter[int] = collections.Counter()
        self.attempts: dict[int, list[int]] = collections.defaultdict(list)

    def __call__(self, event: Event) -> None:
        n = event.data["n"]
        attempt = reactor.current_delivery().attempt
        with self.lock:
            self.attempts[n].append(attempt)
            broken = self.broken
        if broken and n in self.poison:
            raise ConnectionError(f"#{n} cannot reach the ledger")
        with self.lock:
            self.handled[n] += 1

    def fix(self) -> None:
        with self.lock:
            self.broken = False


def shop(backend: str, worker: Breakable, audit: Recorder) -> Topology:
    topo = Topology("letters")
    topo.channel("work", backend=backend)
    topo.consumer("worker", worker, channel="work", pattern="job.#")
    topo.consumer("audit", audit, channel="work", pattern="job.#")  # a second group
    return topo


def stored(system: reactor.System, count: int, channel: str = "work") -> list[reactor.DeadLetter]:
    wait_for(
        lambda: len(system.dead_letters(channel)) == count,
        TIMEOUT,
        message=f"expected {count} stored dead letters on {channel!r}",
    )
    return list(system.dead_letters(channel))


def test_poison_events_are_stored_listed_redriven_once_and_purged(backend: str) -> None:
    poison = {3, 8, 14}
    worker = Breakable(poison)
    audit = Recorder()
    before = datetime.now(UTC) - timedelta(seconds=1)
    with shop(backend, worker, audit).start() as system:
        for n in range(20):
            system.publish("work", "job.run", {"n": n}, key=f"k{n % 4}")
        letters = stored(system, len(poison))
        system.wait_idle(TIMEOUT)
        assert {letter.event.data["n"] for letter in letters if letter.event} == poison
        for letter in letters:
            assert (letter.channel, letter.group, letter.consumer) == ("work", "worker", "worker")
            assert (letter.error_type, letter.attempts, letter.raw) == ("ConnectionError", 5, None)
            assert "cannot reach the ledger" in letter.message
            assert "ConnectionError" in letter.traceback
            assert before <= letter.time <= datetime.now(UTC) + timedelta(seconds=1)
        assert len({letter.id for letter in letters}) == len(poison)
        assert system.dead_letters("work", "worker") == tuple(letters)
        assert system.dead_letters("work", "audit") == ()
        assert len(system.dead_letters("work", limit=2)) == 2
        # The count a durable store keeps is bumped once the write returns: wait for it.
        wait_for(lambda: system.metrics().channel("work").stored_dead_letters == 3, TIMEOUT)
        assert system.metrics().channel("work").dead_lettered == 3
        assert system.metrics().group("work", "worker").dead_lettered == 3

        worker.fix()
        first = letters[0]
        assert system.redrive("work", [first.id]) == 1
        assert [v.id for v in system.dead_letters("work")] == [v.id for v in letters[1:]]
        assert system.redrive("work", group="worker") == 2
        system.wait_idle(TIMEOUT)
        assert system.dead_letters("work") == ()
        assert system.metrics().channel("work").stored_dead_letters == 0

        # Fixed: each poison event handled exactly once, on a fresh first attempt.
        assert {n: worker.handled[n] for n in poison} == dict.fromkeys(poison, 1)
        assert all(worker.attempts[n] == [1, 2, 3, 4, 5, 1] for n in poison)
        # Only the group that gave up got them again: audit saw every event once.
        assert sorted(e.data["n"] for e in audit.events) == list(range(20))

        # Purge: by id, then the rest.
        worker.broken = True
        for n in (103, 108):
            worker.poison.add(n)
            system.publish("work", "job.run", {"n": n})
        letters = stored(system, 2)
        assert system.purge("work", [letters[0].id]) == 1
        assert [v.id for v in system.dead_letters("work")] == [letters[1].id]
        assert system.purge("work") == 1
        assert system.dead_letters("work") == ()
        assert system.redrive("work") == 0
        assert system.metrics().channel("work").dead_lettered == 5


def test_unknown_channels_groups_and_ids_are_refused_naming_them(backend: str) -> None:
    topo = shop(backend, Breakable(set()), Recorder())
    with topo.start() as system:
        with pytest.raises(reactor.UnknownChannelError, match="'nope'"):
            system.dead_letters("nope")
        with pytest.raises(reactor.UnknownGroupError, match="no group 'billing'"):
            system.dead_letters("work", "billing")
        with pytest.raises(reactor.UnknownGroupError, match="no group 'billing'"):
            system.purge("work", group="billing")
        with pytest.raises(reactor.UnknownDeadLetterError, match="'17'"):
            system.redrive("work", ["17"])
        with pytest.raises(reactor.UnknownDeadLetterError, match="'17'"):
            system.purge("work", ["17"])
    with pytest.raises(reactor.SystemStoppedError):
        system.dead_letters("work")


def test_the_memory_store_keeps_the_latest_letters_and_counts_the_evicted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "MAX_DEAD_LETTERS", 5)  # the real bound is 10,000
    topo = Topology("bounded")
    topo.channel("work")
    # One attempt each, so that eight letters come quickly; the bound is what is tested.
    topo.consumer("worker", Breakable(set(range(8))), channel="work", max_deliveries=1)
    with topo.start() as system:
        for n in range(8):
            system.publish("work", "job.run", {"n": n})
        system.wait_idle(TIMEOUT)
        letters = stored(system, 5)
        stats = system.metrics().channel("work")
    assert [v.event.data["n"] for v in letters if v.event] == [3, 4, 5, 6, 7]
    assert (stats.dead_lettered, stats.stored_dead_letters, stats.evicted_dead_letters) == (
        8,
        5,
        3,
    )


def test_sqlite_dead_letters_survive_a_restart_and_a_redrive_is_not_repeated(
    tmp_path: Path,
) -> None:
    backend = f"sqlite:///{tmp_path}/c.db"
    worker = Breakable({1, 2})
    audit = Recorder()
    with shop(backend, worker, audit).start() as system:
        for n in range(5):
            system.publish("work", "job.run", {"n": n})
        stored(system, 2)
        system.wait_idle(TIMEOUT)

    worker.fix()
    with shop(backend, worker, audit).start() as system:
        letters = stored(system, 2)
        assert {v.event.data["n"] for v in letters if v.event} == {1, 2}
        assert {(v.consumer, v.attempts, v.error_type) for v in letters} == {
            ("worker", 5, "ConnectionError")
        }
        assert {tuple(v.where) for v in letters} == {("offset",)}
        assert system.redrive("work") == 2
        system.wait_idle(TIMEOUT)
    assert (worker.handled[1], worker.handled[2]) == (1, 1)

    with shop(backend, worker, audit).start() as system:
        system.wait_idle(TIMEOUT)
        assert system.dead_letters("work") == ()
    # Neither the restart nor the other group saw the redriven events again.
    assert (worker.handled[1], worker.handled[2]) == (1, 1)
    assert sorted(e.data["n"] for e in audit.events) == list(range(5))


def test_a_sqlite_redrive_without_consumers_is_for_its_group_after_a_restart(
    tmp_path: Path,
) -> None:
    backend = f"sqlite:///{tmp_path}/c.db"
    worker = Breakable({1})
    audit = Recorder()
    with shop(backend, worker, audit).start() as system:
        for n in range(3):
            system.publish("work", "job.run", {"n": n})
        stored(system, 1)
        system.wait_idle(TIMEOUT)
    # As `reactor dead-letters` does: the channels open, no consumer runs.
    system = shop(backend, worker, audit).start(only=())
    try:
        assert system.redrive("work") == 1
    finally:
        system.stop(drain=False)
    worker.fix()
    with shop(backend, worker, audit).start() as system:
        system.wait_idle(TIMEOUT)
    assert worker.handled == {0: 1, 1: 1, 2: 1}
    assert worker.attempts[1] == [1, 2, 3, 4, 5, 1]
    assert sorted(e.data["n"] for e in audit.events) == [0, 1, 2]


def test_a_version_2_log_opens_with_its_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with shop(f"sqlite:///{path}", Breakable({0}), Recorder()).start() as system:
        system.publish("work", "job.run", {"n": 0})
        stored(system, 1)
        system.wait_idle(TIMEOUT)
    with sqlite3.connect(path) as db_file:  # what reactor wrote before consumer and time
        db_file.executescript(
            "ALTER TABLE reactor_deadletters DROP COLUMN consumer;"
            "ALTER TABLE reactor_deadletters DROP COLUMN dead_at;"
            "UPDATE reactor_meta SET value = '2' WHERE key = 'version';"
        )
    with shop(f"sqlite:///{path}", Breakable(set()), Recorder()).start() as system:
        (letter,) = system.dead_letters("work")
    assert (letter.consumer, letter.time, letter.attempts) == (
        "",
        datetime.fromtimestamp(0, UTC),
        5,
    )
    assert letter.event is not None
    assert letter.event.data == {"n": 0}


def test_stored_bytes_that_are_no_event_are_kept_with_where_they_were(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    topo = Topology("writer")
    topo.channel("work", backend=f"sqlite:///{path}")
    with topo.start() as system:
        system.publish("work", "job.run", {"n": 0})
    with sqlite3.connect(path) as db_file:
        db_file.execute("UPDATE reactor_log SET body = x'7b6e6f74' WHERE seq = 1")
    with shop(f"sqlite:///{path}", Breakable(set()), Recorder()).start() as system:
        letters = stored(system, 2)  # one per group that routes it
        assert system.redrive("work") == 0  # no event to deliver: they stay
        assert len(system.dead_letters("work")) == 2
        assert system.purge("work", group="audit") == 1
    assert {(v.group, v.event, v.raw, v.where["offset"]) for v in letters} == {
        ("worker", None, b"{not", 1),
        ("audit", None, b"{not", 1),
    }
    assert all(v.error_type == "DecodeError" for v in letters)


def test_a_dead_letter_of_a_system_event_is_stored_never_published() -> None:
    published = Recorder()

    def fails(event: Event) -> None:
        raise RuntimeError("a $system subscriber that always raises")

    topo = Topology("system-letters")
    topo.channel("work")
    # One attempt, so that the letter comes at once; the store is what is tested.
    topo.consumer("watch", fails, channel="$system", pattern="$system.actor.#", max_deliveries=1)
    topo.consumer("dlq", published, channel="$system", pattern=lifecycle.DEADLETTER)
    with topo.start() as system:
        # Every actor's start is a $system event, and each fails once.
        wait_for(lambda: system.dead_letters("$system"), TIMEOUT, message="no letter stored")
        letters = system.dead_letters("$system")
        system.wait_idle(TIMEOUT)
    assert {(v.group, v.consumer, v.error_type) for v in letters} == {
        ("watch", "watch", "RuntimeError")
    }
    assert all(v.event is not None and v.event.topic.startswith("$system.actor.") for v in letters)
    assert all(e.data["channel"] != "$system" for e in published.events)


def test_a_redriven_event_that_fails_again_is_dead_lettered_again(backend: str) -> None:
    worker = Breakable({0})
    with shop(backend, worker, Recorder()).start() as system:
        system.publish("work", "job.run", {"n": 0})
        (first,) = stored(system, 1)
        assert system.redrive("work", [first.id]) == 1
        wait_for(
            lambda: [v.id != first.id for v in system.dead_letters("work")] == [True],
            TIMEOUT,
            message="the redriven event was not dead-lettered again",
        )
        (again,) = system.dead_letters("work")
        system.wait_idle(TIMEOUT)
    assert again.attempts == 5
    assert worker.attempts[0] == [1, 2, 3, 4, 5] * 2


def test_an_unretryable_error_dead_letters_its_event_at_once_and_the_consumer_goes_on(
    backend: str,
) -> None:
    calls: collections.Counter[int] = collections.Counter()
    handled: list[int] = []

    def handle(event: Event) -> None:
        n = event.data["n"]
        calls[n] += 1
        if n >= 3:
            raise reactor.Unretryable(f"order {n} names no customer")
        handled.append(n)

    topo = Topology("unretryable")
    topo.channel("work", backend=backend)
    # failure_threshold=2: were three in a row counted as consumer failures, it would restart.
    topo.consumer("worker", handle, channel="work", failure_threshold=2)
    with topo.start() as system:
        for n in range(6):
            system.publish("work", "job.run", {"n": n})
        letters = stored(system, 3)
        system.wait_idle(TIMEOUT)
        assert sorted(handled) == [0, 1, 2]
        assert calls == dict.fromkeys(range(6), 1)  # never retried
        assert {letter.event.data["n"] for letter in letters if letter.event} == {3, 4, 5}
        for letter in letters:
            assert (letter.error_type, letter.attempts, letter.group) == (
                "Unretryable",
                1,
                "worker",
            )
            assert "names no customer" in letter.message
        assert system.metrics().group("work", "worker").dead_lettered == 3
        assert system.metrics().actor("worker").restarts == 0
