"""Chaos: crashing consumers in a two-level supervision tree lose nothing.

Three consumers, each its own group on one channel (so each must see every
event), under two supervisors::

    $consumers
    ├── dlq                 collects $deadletter
    └── outer  (rest_for_one)
        ├── billing
        └── inner (one_for_all)
            ├── audit
            └── mail

A handler fails on a seeded 5% of (consumer, event, attempt) triples, so a retry
usually succeeds, and always fails on a few poison events. The run is made twice:

* ``crash``: every failed event is also a consumer failure (``failure_threshold=1``),
  under tolerant supervisors. ``billing`` failing restarts ``inner`` too
  (rest_for_one), and ``audit`` failing restarts ``mail`` (one_for_all): restarts
  sweep healthy consumers mid-batch all the time.
* ``defaults``: every option as a user gets it. Failed events are retried later
  and nothing is restarted.

Because every failure is decided by a pure function, the outcome is known in
advance: an event is dead-lettered by a consumer exactly when its first
``max_deliveries`` attempts all fail, and otherwise handled exactly once.

``REACTOR_SOAK=1`` runs ten times as many events.
"""

from __future__ import annotations

import collections
import os
import random
import threading
from typing import Any, TypeVar

import pytest

from reactor import Backoff, Event, OneForAll, OneForOne, RestForOne, Strategy, Topology
from reactor.messages import lifecycle
from reactor.testing import Recorder

SEED = 20_240_611
EVENTS = 20_000 * (10 if os.environ.get("REACTOR_SOAK") == "1" else 1)
FAIL_RATE = 0.05
MAX_DELIVERIES = 4
POISON = frozenset({7, EVENTS // 3, EVENTS // 2 + 1, EVENTS - 1})
CONSUMERS = ("billing", "audit", "mail")
S = TypeVar("S", bound=Strategy)


def tolerant(kind: type[S]) -> S:
    """Generous intensity and no backoff: thousands of restarts, none waited for."""
    return kind(max_restarts=1_000_000, within_s=1.0, backoff=Backoff(min_s=0))


class ChaosError(RuntimeError):
    """The failure a chaos handler raises on purpose."""


def fails(consumer: str, n: int, attempt: int) -> bool:
    """Whether ``consumer``'s ``attempt``-th try of event ``n`` fails: pure and seeded."""
    if n in POISON:
        return True
    return random.Random(f"{SEED}/{consumer}/{n}/{attempt}").random() < FAIL_RATE


def expected_dead(consumer: str) -> set[int]:
    return {
        n for n in range(EVENTS) if all(fails(consumer, n, a) for a in range(1, MAX_DELIVERIES + 1))
    }


class Ledger:
    """Counts every attempt and every side effect, per (consumer, event).

    Thread-safety: handlers of different consumers run on different threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempts: collections.Counter[tuple[str, int]] = collections.Counter()
        self.effects: collections.Counter[tuple[str, int]] = collections.Counter()

    def handler(self, consumer: str) -> Any:
        def handle(event: Event) -> None:
            n = event.data["n"]
            key = (consumer, n)
            # A handler call is one delivery attempt: the channel counts the same way
            # (a call that raises is nacked; events never reached are handed back
            # without spending an attempt), so this count is the attempt number.
            with self._lock:
                self.attempts[key] += 1
                attempt = self.attempts[key]
            if fails(consumer, n, attempt):
                raise ChaosError(f"{consumer} fails #{n} on attempt {attempt}")
            with self._lock:
                self.effects[key] += 1  # the side effect, only once the handler succeeds

        return handle


@pytest.mark.parametrize("mode", ["crash", "defaults"])
def test_chaos_every_event_handled_once_or_dead_lettered(mode: str) -> None:
    crash = mode == "crash"
    ledger = Ledger()
    dead = Recorder()
    topo = Topology("chaos", strategy=tolerant(OneForOne) if crash else None)
    topo.channel("orders", capacity=2_000)
    topo.producer(
        "feed", channel="orders", topic="orders.created", source=({"n": n} for n in range(EVENTS))
    )
    topo.consumer("dlq", dead, channel="$system", pattern=lifecycle.DEADLETTER)
    options: dict[str, Any] = {
        "channel": "orders",
        "pattern": "orders.#",
        "max_deliveries": MAX_DELIVERIES,
        "idempotent": True,
        "prefetch": 32,
    }
    if crash:
        options["failure_threshold"] = 1
    with topo.supervisor("outer", strategy=tolerant(RestForOne) if crash else None) as outer:
        outer.consumer("billing", ledger.handler("billing"), **options)
        with outer.supervisor("inner", strategy=tolerant(OneForAll) if crash else None) as inner:
            inner.consumer("audit", ledger.handler("audit"), **options)
            inner.consumer("mail", ledger.handler("mail"), **options)

    with topo.start(seed=SEED) as system:
        system.wait_idle(timeout=120)
        metrics = system.metrics()
        assert system.state == "running", "a supervisor gave up: intensity too low for chaos"

    dead_by_consumer: dict[str, dict[int, dict[str, Any]]] = collections.defaultdict(dict)
    for letter in dead.events:
        data = letter.data
        n = data["event"].data["n"]
        assert n not in dead_by_consumer[data["consumer"]], f"#{n} dead-lettered twice"
        dead_by_consumer[data["consumer"]][n] = dict(data)

    for consumer in CONSUMERS:
        expected = expected_dead(consumer)
        assert expected >= POISON
        letters = dead_by_consumer[consumer]
        assert set(letters) == expected, f"{consumer}: wrong events dead-lettered"
        for data in letters.values():
            assert (data["attempts"], data["group"], data["error_type"]) == (
                MAX_DELIVERIES,
                consumer,
                "ChaosError",
            )
            assert f"attempt {MAX_DELIVERIES}" in data["message"]
            assert "ChaosError" in data["traceback"]
        # 0 lost, 0 duplicate side effects: every other event had exactly one.
        effects = {n: ledger.effects[(consumer, n)] for n in range(EVENTS)}
        duplicated = {n: c for n, c in effects.items() if c > 1}
        lost = [n for n, c in effects.items() if c == 0 and n not in expected]
        assert duplicated == {}, f"{consumer}: side effects repeated"
        assert lost == [], f"{consumer}: {len(lost)} events lost"
        assert not any(effects[n] for n in expected), (
            f"{consumer}: a dead-lettered event also succeeded"
        )

        group = metrics.group("orders", consumer)
        assert group.acked + group.dead_lettered == EVENTS
        assert group.dead_lettered == len(expected)
        if crash:
            # Restarts really happened: about one per 20 events, less the crashes that
            # raced a sweep (the sweep's restart covers those).
            assert metrics.actor(consumer).restarts > EVENTS * FAIL_RATE / 4
        else:
            assert metrics.actor(consumer).restarts == 0
            assert metrics.actor(consumer).event_failures >= EVENTS * FAIL_RATE / 2
    assert metrics.channel("orders").unsettled == 0
    assert (metrics.actor("inner").restarts > 0) is crash  # swept by billing's restarts
