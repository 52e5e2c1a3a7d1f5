"""Channel semantics, written once and run against every backend."""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections import defaultdict
from typing import Any

import pytest

import reactor
from reactor import Event, Topology
from reactor.testing import Recorder, wait_for


def test_every_group_gets_every_event_and_members_compete(backend: str) -> None:
    topo = Topology("groups")
    topo.channel("orders", backend=backend)
    audit = Recorder()
    billing: dict[str, Recorder] = {name: Recorder() for name in ("b1", "b2", "b3")}
    topo.consumer("audit", audit, channel="orders", pattern="orders.#")
    for name, recorder in billing.items():
        topo.consumer(name, recorder, channel="orders", pattern="orders.#", group="billing")
    with topo.start() as system:
        for i in range(3000):
            system.publish("orders", "orders.created", {"i": i})
        system.wait_idle(20)
        handled = [e.data["i"] for r in billing.values() for e in r.events]
        assert sorted(audit.data(), key=lambda d: d["i"]) == [{"i": i} for i in range(3000)]
        assert sorted(handled) == list(range(3000))  # each once, across the group
        assert all(len(r) > 0 for r in billing.values()), "members of a group must share the work"
        group = system.metrics().group("orders", "billing")
        assert (group.members, group.acked, group.backlog, group.in_flight) == (3, 3000, 0, 0)


def test_patterns_route_by_topic(backend: str) -> None:
    topo = Topology("routing")
    topo.channel("events", backend=backend)
    created, anything_paid, all_orders = Recorder(), Recorder(), Recorder()
    topo.consumer("created", created, channel="events", pattern="orders.created")
    topo.consumer("paid", anything_paid, channel="events", pattern="*.paid")
    topo.consumer("orders", all_orders, channel="events", pattern="orders.#")
    with topo.start() as system:
        for topic in ("orders.created", "orders.paid", "invoices.paid", "orders", "orders.a.b"):
            system.publish("events", topic, {"t": topic})
        system.wait_idle(5)
        assert [e.topic for e in created.events] == ["orders.created"]
        assert sorted(e.topic for e in anything_paid.events) == ["invoices.paid", "orders.paid"]
        assert sorted(e.topic for e in all_orders.events) == [
            "orders",
            "orders.a.b",
            "orders.created",
            "orders.paid",
        ]
        assert system.metrics().channel("events").unrouted == 0


def test_unrouted_events_settle_at_once(backend: str) -> None:
    topo = Topology("unrouted")
    topo.channel("c", backend=backend)
    topo.consumer("x", Recorder(), channel="c", pattern="x.#")
    with topo.start() as system:
        system.publish("c", "y.z", 1)
        system.wait_idle(5)
        assert system.metrics().channel("c").unrouted == 1


def test_per_key_order_with_four_members(backend: str) -> None:
    topo = Topology("keys")
    topo.channel("c", backend=backend)
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    lock = threading.Lock()

    def make(member: str) -> Any:
        def handle(event: Event) -> None:
            with lock:
                seen[event.key or ""].append((member, event.data["n"]))

        return handle

    for member in ("m1", "m2", "m3", "m4"):
        topo.consumer(member, make(member), channel="c", group="g", prefetch=16)
    keys = [f"customer-{k}" for k in range(40)]
    with topo.start() as system:
        for n in range(200):
            for key in keys:
                system.publish("c", "orders.created", {"n": n}, key=key)
        system.wait_idle(20)
    members_used = set()
    for key in keys:
        handled = seen[key]
        assert [n for _, n in handled] == list(range(200)), f"{key} was handled out of order"
        owners = {member for member, _ in handled}
        assert len(owners) == 1, f"{key} was handled by {owners} while membership was stable"
        members_used |= owners
    assert len(members_used) == 4, "keys must spread over all members"


def test_publishers_in_many_threads_lose_nothing_and_keep_each_keys_order(
    backend: str,
) -> None:
    # One event per publish() from 4 threads at once: the memory channel takes them in
    # through one outbox, noted to its actor only when no note is pending; a race
    # between a publisher's append and the actor emptying it would lose or reorder events.
    topo = Topology("threads")
    topo.channel("c", backend=backend, capacity=64)  # small: publishers wait for credits
    seen: dict[str, dict[str, list[int]]] = {"all": defaultdict(list), "some": defaultdict(list)}

    def make(group: str) -> Any:
        def handle(event: Event) -> None:
            seen[group][event.key or ""].append(event.data["n"])

        return handle

    topo.consumer("all", make("all"), channel="c", pattern="#")
    topo.consumer("some", make("some"), channel="c", pattern="a.#")  # two groups for some
    per_thread = 300
    start = threading.Barrier(4)

    def publish(system: reactor.System, name: str) -> None:
        start.wait(timeout=10)
        for n in range(per_thread):
            system.publish("c", "a.x" if n % 3 == 0 else "b.x", {"n": n}, key=name)

    with topo.start() as system:
        threads = [
            threading.Thread(target=publish, args=(system, f"t{i}"), daemon=True) for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        system.wait_idle(30)
    for i in range(4):
        assert seen["all"][f"t{i}"] == list(range(per_thread))
        assert seen["some"][f"t{i}"] == list(range(0, per_thread, 3))


def test_published_data_is_a_frozen_copy(backend: str) -> None:
    topo = Topology("frozen")
    topo.channel("c", backend=backend)
    got: list[Any] = []
    release = threading.Event()

    def handle(event: Event) -> None:
        release.wait(5)
        got.append(event.data)

    topo.consumer("x", handle, channel="c")
    payload = {"items": [1, 2], "meta": {"a": 1}}
    with topo.start() as system:
        system.publish("c", "t.x", payload)
        payload["items"].append(3)  # type: ignore[attr-defined]
        payload["meta"]["a"] = 2  # type: ignore[index]
        release.set()
        system.wait_idle(5)
    assert got[0]["items"] == (1, 2)
    assert got[0]["meta"]["a"] == 1
    with pytest.raises(TypeError):
        got[0]["meta"]["a"] = 3


def test_bad_input_is_refused_and_loses_nothing(backend: str) -> None:
    topo = Topology("bad")
    topo.channel("c", backend=backend)
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    with topo.start() as system:
        with pytest.raises(reactor.ImmutableMessageError, match=r"data\['items'\]\[1\]"):
            system.publish("c", "t.x", {"items": [1, object()]})
        with pytest.raises(reactor.InvalidTopicError, match=r"or\.\.ders"):
            system.publish("c", "or..ders", {})
        with pytest.raises(reactor.UnknownChannelError, match="nope"):
            system.publish("nope", "t.x", {})
        system.publish("c", "t.x", {"ok": True})
        system.wait_idle(5)
        assert recorder.data() == [{"ok": True}]
        assert system.metrics().channel("c").published == 1


def test_handler_results_are_published_as_derived_events(backend: str) -> None:
    topo = Topology("derive")
    topo.channel("orders", backend=backend)
    topo.channel("audit", backend=backend)
    audit = Recorder()

    @topo.consumer("bill", channel="orders", pattern="orders.created", output="audit")
    def bill(event: Event) -> Any:
        return [("orders.billed", {"id": event.data["id"]}), event.derive("orders.noted", None)]

    topo.consumer("audit", audit, channel="audit")
    with topo.start() as system:
        original = system.publish("orders", "orders.created", {"id": 7}, key="c-1")
        system.wait_idle(5)
    assert sorted(e.topic for e in audit.events) == ["orders.billed", "orders.noted"]
    for event in audit.events:
        assert event.correlation_id == original.correlation_id
        assert event.causation_id == original.id
        assert event.key == "c-1"


def test_processor_feeding_its_own_channel_does_not_deadlock_at_capacity(backend: str) -> None:
    topo = Topology("loop")
    topo.channel("work", backend=backend, capacity=8)
    finished = Recorder()

    @topo.consumer("step", channel="work", pattern="work.step", prefetch=8)
    def step(event: Event) -> Any:
        hops = event.data["hops"]
        if hops == 0:
            return ("work.done", {"chain": event.data["chain"]})
        return ("work.step", {"chain": event.data["chain"], "hops": hops - 1})

    topo.consumer("done", finished, channel="work", pattern="work.done")
    # As many chains as capacity, each doing 50 hops through the same channel: a hop
    # holds its input and its output at once, within the documented overdraft of one
    # capacity (the producer waits for room; the handler's outputs never do).
    topo.producer(
        "seed",
        channel="work",
        topic="work.step",
        source=({"chain": c, "hops": 50} for c in range(8)),
    )
    with topo.start() as system:
        system.wait_idle(30)
        assert sorted(d["chain"] for d in finished.data()) == list(range(8))
        stats = system.metrics().channel("work")
        assert (stats.peak_unsettled <= 16, stats.dead_lettered) == (True, 0)


def test_fast_producer_slow_consumer_stays_within_capacity(backend: str) -> None:
    topo = Topology("backpressure")
    topo.channel("c", backend=backend, capacity=50)
    recorder = Recorder(lambda event: time.sleep(0.0005))  # sleep-ok: the consumer's work
    topo.consumer("slow", recorder, channel="c", prefetch=10)
    topo.producer("fast", channel="c", topic="t.x", source=({"i": i} for i in range(2000)))
    with topo.start() as system:
        system.wait_idle(60)
        stats = system.metrics().channel("c")
    assert [d["i"] for d in recorder.data()] == list(range(2000))
    assert stats.peak_unsettled <= 50
    assert stats.dropped == 0


def _blocked_consumer(
    topo: Topology, channel: str, gate: threading.Event, recorder: Recorder
) -> None:
    def handle(event: Event) -> None:
        gate.wait(10)
        recorder(event)

    topo.consumer("blocked", handle, channel=channel, prefetch=1)


def test_block_policy_times_out_with_a_clear_error(backend: str) -> None:
    topo = Topology("block")
    topo.channel("c", backend=backend, capacity=2)
    gate, recorder = threading.Event(), Recorder()
    _blocked_consumer(topo, "c", gate, recorder)
    with topo.start() as system:
        system.publish("c", "t.x", 1)
        system.publish("c", "t.x", 2)
        with pytest.raises(reactor.BackpressureTimeout, match="'c'"):
            system.publish("c", "t.x", 3, timeout=0.05)
        gate.set()
        system.wait_idle(5)
        assert recorder.data() == [1, 2]


def test_reject_policy_raises_channel_full(backend: str) -> None:
    topo = Topology("reject")
    topo.channel("c", backend=backend, capacity=3, overflow="reject")
    gate, recorder = threading.Event(), Recorder()
    _blocked_consumer(topo, "c", gate, recorder)
    with topo.start() as system:
        for n in range(3):
            system.publish("c", "t.x", n)
        with pytest.raises(reactor.ChannelFull, match="reject"):
            system.publish("c", "t.x", 99)
        gate.set()
        system.wait_idle(5)
        assert recorder.data() == [0, 1, 2]


def _drop_topology(
    backend: str, overflow: str
) -> tuple[Topology, threading.Event, Recorder, Recorder]:
    topo = Topology(overflow)
    topo.channel("c", backend=backend, capacity=3, overflow=overflow)  # type: ignore[arg-type]
    gate, recorder, drops = threading.Event(), Recorder(), Recorder()
    _blocked_consumer(topo, "c", gate, recorder)
    topo.consumer("drops", drops, channel="$system", pattern="$system.event.dropped")
    return topo, gate, recorder, drops


def test_drop_newest_drops_and_reports_the_newcomers(backend: str) -> None:
    topo, gate, recorder, drops = _drop_topology(backend, "drop_newest")
    with topo.start() as system:
        ids = [system.publish("c", "t.x", n).id for n in range(6)]
        drops.wait_for_count(3)
        gate.set()
        system.wait_idle(5)
        assert recorder.data() == [0, 1, 2]
        # A report names its victim and never carries it (it could be dropped in turn).
        assert sorted(e.data["id"] for e in drops.events) == sorted(ids[3:])
        assert {(e.data["topic"], e.data["channel"]) for e in drops.events} == {("t.x", "c")}
        assert all("event" not in e.data for e in drops.events)
        assert {e.data["policy"] for e in drops.events} == {"drop_newest"}
        assert system.metrics().channel("c").dropped == 3


def test_drop_oldest_evicts_queued_events_never_in_flight_ones(backend: str) -> None:
    topo, gate, recorder, drops = _drop_topology(backend, "drop_oldest")
    with topo.start() as system:
        ids = [system.publish("c", "t.x", 0).id]
        wait_for(lambda: system.metrics().channel("c").in_flight == 1)
        ids += [system.publish("c", "t.x", n).id for n in range(1, 6)]
        drops.wait_for_count(3)
        gate.set()
        system.wait_idle(5)
        # 0 was in the handler; 1, 2, 3 were the oldest queued when 4 and 5 came.
        assert recorder.data() == [0, 4, 5]
        assert sorted(e.data["id"] for e in drops.events) == sorted(ids[1:4])
        assert system.metrics().channel("c").dropped == 3


def test_stop_drains_in_flight_events(backend: str) -> None:
    topo = Topology("drain")
    topo.channel("c", backend=backend)
    recorder = Recorder(lambda event: time.sleep(0.001))  # sleep-ok: the consumer's work
    topo.consumer("x", recorder, channel="c", prefetch=8)
    system = topo.start()
    for n in range(300):
        system.publish("c", "t.x", n)
    system.stop(timeout=30)
    assert recorder.data() == list(range(300))
    assert system.state == "stopped"
    with pytest.raises(reactor.SystemStoppedError):
        system.publish("c", "t.x", 1)


def test_stop_without_drain_finishes_within_its_timeout(backend: str) -> None:
    topo = Topology("nodrain")
    topo.channel("c", backend=backend)
    gate = threading.Event()
    topo.consumer("x", lambda event: gate.wait(0.5), channel="c", shutdown_s=0.2)
    system = topo.start()
    for n in range(50):
        system.publish("c", "t.x", n)
    started = time.monotonic()
    system.stop(timeout=1.0, drain=False)
    assert time.monotonic() - started < 1.5
    gate.set()


def test_wait_idle_names_what_is_busy(backend: str) -> None:
    topo = Topology("busy")
    topo.channel("c", backend=backend)
    gate = threading.Event()
    topo.consumer("x", lambda event: gate.wait(10), channel="c")
    with topo.start() as system:
        system.publish("c", "t.x", 1)
        with pytest.raises(reactor.IdleTimeout, match="channel 'c' holds 1 unsettled"):
            system.wait_idle(0.05)
        gate.set()
        system.wait_idle(5)


def test_class_handlers_get_on_start_and_on_stop(backend: str) -> None:
    calls: list[str] = []

    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def on_start(self) -> None:
            calls.append("start")

        def handle(self, event: Event) -> None:
            self.count += 1
            calls.append(f"handle {self.count}")

        def on_stop(self) -> None:
            calls.append("stop")

    topo = Topology("classes")
    topo.channel("c", backend=backend)
    topo.consumer("x", Counter, channel="c")
    with topo.start() as system:
        system.publish("c", "t.x", 1)
        system.publish("c", "t.x", 2)
        system.wait_idle(5)
    assert calls == ["start", "handle 1", "handle 2", "stop"]


def test_a_bad_handler_result_is_a_failure_that_ends_in_dead_letters(backend: str) -> None:
    topo = Topology("badresult")
    topo.channel("c", backend=backend)
    dead = Recorder()
    topo.consumer("x", lambda event: 42, channel="c", max_deliveries=2)
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    with topo.start() as system:
        system.publish("c", "t.x", 1)
        dead.wait_for_count(1)
        system.wait_idle(5)
    letter = dead.events[0].data
    assert letter["error_type"] == "ResultError"
    assert "returned int 42" in letter["message"]
    assert letter["attempts"] == 2
    assert (letter["consumer"], letter["group"], letter["channel"]) == ("x", "x", "c")


def test_a_member_never_holds_more_than_its_demand(backend: str) -> None:
    topo = Topology("demand")
    topo.channel("c", backend=backend)
    gate, recorder = threading.Event(), Recorder()

    def handle(event: Event) -> None:
        gate.wait(10)
        recorder(event)

    topo.consumer("x", handle, channel="c", prefetch=3)
    with topo.start() as system:
        for n in range(20):
            system.publish("c", "t.x", n)
        wait_for(lambda: system.metrics().group("c", "x").backlog == 17)
        group = system.metrics().group("c", "x")
        assert (group.in_flight, group.delivered) == (3, 3)
        gate.set()
        system.wait_idle(5)
        assert recorder.data() == list(range(20))


def test_memory_stays_bounded_when_the_producer_outruns_the_consumer(backend: str) -> None:
    # A distinct ~2 KB string per event: 5,000 of them queued would be ~10 MB.
    topo = Topology("bounded")
    topo.channel("c", backend=backend, capacity=20)
    handled = []
    topo.consumer(
        "slow",
        lambda e: handled.append(e.data["n"]) or time.sleep(0.0001),  # sleep-ok: work
        channel="c",
        prefetch=4,
    )
    topo.producer(
        "fast",
        channel="c",
        topic="t.x",
        source=({"n": n, "p": f"{n:0>2000}"} for n in range(5_000)),
    )
    tracemalloc.start()
    try:
        with topo.start() as system:
            system.wait_idle(60)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert handled == list(range(5_000))
    assert peak < 3_000_000, f"peak {peak / 1e6:.1f} MB: events are piling up somewhere"


def test_publish_many_checks_every_item_before_it_takes_a_credit(backend: str) -> None:
    topo = Topology("not-events")
    topo.channel("c", backend=backend, capacity=4)
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    with topo.start() as system:
        bad = [Event.create("t.x", 1), Event.create("t.x", 2), {"topic": "t.x"}]
        with pytest.raises(reactor.NotAnEventError, match=r"item 2 is a builtins\.dict") as info:
            system.publish_many("c", bad)
        assert isinstance(info.value, TypeError)
        assert info.value.index == 2
        assert system.metrics().channel("c").unsettled == 0  # no credit taken, none leaked
        assert system.metrics().channel("c").published == 0
        system.publish_many("c", [Event.create("t.x", n) for n in range(10)])
        recorder.wait_for_count(10)
        system.wait_idle(5)
        assert recorder.data() == list(range(10))
        assert system.metrics().channel("c").unsettled == 0
