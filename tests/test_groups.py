"""The group machinery every channel backend shares, driven without actors."""

from __future__ import annotations

from typing import Any

import pytest

from reactor import Event
from reactor.channels import groups as membership
from reactor.channels.backend import GroupSpec
from reactor.channels.groups import Group
from reactor.channels.routes import RouteCache
from reactor.messages.control import Ack, Deliver, ErrorInfo, Join, Leave, Nack


class _Inbox:
    def tell(self, message: Any) -> None:  # pragma: no cover - the tests take Delivers from fill
        raise AssertionError(message)


def _group(events: dict[int, Event], max_deliveries: int = 3) -> dict[str, Group]:
    return {"g": Group(GroupSpec("g", ("#",), max_deliveries), "c", events)}


def _publish(groups: dict[str, Group], events: dict[int, Event], *keys: str | None) -> None:
    for key in keys:
        seq = len(events) + 1
        events[seq] = Event.create("t", seq, key=key)
        groups["g"].place(seq, key)


def _join(groups: dict[str, Group], name: str, demand: int = 10) -> int:
    return membership.join(groups, Join("g", name, _Inbox(), demand), "c")[1].epoch


def _fill(groups: dict[str, Group], name: str) -> Deliver | None:
    group = groups["g"]
    return group.fill(group.members[name], 100)


def test_unknown_group_names_the_channel_and_group() -> None:
    with pytest.raises(LookupError, match="channel 'c' has no group 'nope'"):
        membership.join(_group({}), Join("nope", "m", _Inbox(), 1), "c")


def test_a_key_stays_with_one_member_and_orphans_wait_for_the_first() -> None:
    events: dict[int, Event] = {}
    groups = _group(events)
    _publish(groups, events, "k1", "k2", None)
    assert list(groups["g"].orphans) == [1, 2]
    _join(groups, "a")
    _join(groups, "b")
    _publish(groups, events, "k1", "k2", "k1")
    a, b = _fill(groups, "a"), _fill(groups, "b")
    got = {name: d.seqs for name, d in (("a", a), ("b", b)) if d is not None}
    keys = {name: {events[s].key for s in seqs} - {None} for name, seqs in got.items()}
    assert set.union(*keys.values()) == {"k1", "k2"}
    assert sum(len(k) for k in keys.values()) == 2  # no key split between members
    assert sorted(s for seqs in got.values() for s in seqs) == [1, 2, 3, 4, 5, 6]


def test_rejoin_hands_back_in_flight_and_fences_the_old_epoch() -> None:
    events: dict[int, Event] = {}
    groups = _group(events)
    old = _join(groups, "m")
    _publish(groups, events, None, None)
    first = _fill(groups, "m")
    assert first is not None
    assert first.seqs == (1, 2)
    assert first.attempts == (1, 1)
    new = _join(groups, "m")
    assert new == old + 1
    assert membership.ack(groups, Ack("g", "m", old, (1, 2))) is None  # too late
    again = _fill(groups, "m")
    assert again is not None
    assert again.epoch == new
    assert again.attempts == (1, 1)
    acked = membership.ack(groups, Ack("g", "m", new, (1, 2)))
    assert acked is not None
    assert acked[0] is groups["g"]
    assert list(acked[1]) == [1, 2]


def test_nack_retries_then_gives_up_and_leave_with_epoch_0_always_counts() -> None:
    events: dict[int, Event] = {}
    groups = _group(events, max_deliveries=2)
    epoch = _join(groups, "m")
    _publish(groups, events, None)
    assert _fill(groups, "m") is not None
    error = ErrorInfo("ValueError", "boom", "")
    assert membership.nack(groups, Nack("g", "m", epoch, 1, error, "x"), 0.0) == (
        groups["g"],
        1,
        events[1],
    )
    retry = _fill(groups, "m")
    assert retry is not None
    assert retry.attempts == (2,)
    found = membership.nack(groups, Nack("g", "m", epoch, 1, error, "x"), 0.0)
    assert found == (groups["g"], 2, events[1])  # the last attempt: not queued again
    assert _fill(groups, "m") is None
    assert membership.leave(groups, Leave("g", "m", epoch + 5)) is None
    assert membership.leave(groups, Leave("g", "m", 0)) is groups["g"]
    assert groups["g"].members == {}


def test_abandoned_seqs_are_handed_to_the_caller_not_delivered() -> None:
    events: dict[int, Event] = {}
    groups = _group(events, max_deliveries=2)
    _join(groups, "m")
    _publish(groups, events, None, None)
    groups["g"].attempts[1] = 2  # spent in earlier runs
    abandoned: list[tuple[int, int]] = []
    deliver = groups["g"].fill(groups["g"].members["m"], 10, abandoned)
    assert abandoned == [(1, 2)]
    assert deliver is not None
    assert deliver.seqs == (2,)


def test_members_take_turns_being_served_first() -> None:
    events: dict[int, Event] = {}
    groups = _group(events)
    for name in ("a", "b", "c"):
        _join(groups, name)
    _publish(groups, events, None)  # something shared: every member may take it
    firsts = [next(iter(groups["g"].turn())).name for _ in range(6)]
    assert sorted(firsts) == ["a", "a", "b", "b", "c", "c"]
    assert all(len(list(groups["g"].turn())) == 3 for _ in range(3))


def test_with_only_keyed_seqs_queued_a_turn_skips_the_members_with_none() -> None:
    events: dict[int, Event] = {}
    groups = _group(events)
    for name in ("a", "b", "c"):
        _join(groups, name)
    assert list(groups["g"].turn()) == []  # nothing queued: nobody to serve
    _publish(groups, events, "k")
    holders = [m.name for m in groups["g"].order if m.keyed]
    assert len(holders) == 1
    assert [m.name for m in groups["g"].turn()] == holders


def test_a_join_with_keyed_seqs_queued_spreads_them_over_the_members_in_order() -> None:
    events: dict[int, Event] = {}
    groups = _group(events)
    _join(groups, "a")
    _publish(groups, events, *(f"k{i}" for i in range(20)))
    _join(groups, "b")  # the members changed while keyed seqs waited: they move
    group = groups["g"]
    queued = sorted(seq for m in group.order for seq in m.keyed)
    assert queued == list(range(1, 21))
    assert all(list(m.keyed) == sorted(m.keyed) for m in group.order)
    assert all(m.keyed for m in group.order)  # 20 keys over 2 members: both get some


def test_a_fresh_batch_skips_seqs_gone_while_queued_and_keeps_the_rest_in_order() -> None:
    events: dict[int, Event] = {}
    groups = _group(events)
    _join(groups, "m", demand=3)
    _publish(groups, events, None, None, None, None, None)
    del events[2]  # settled elsewhere (evicted, expired) while still queued
    first = groups["g"].fill(groups["g"].members["m"], 3)
    assert first is not None
    assert (first.seqs, first.attempts) == ((1, 3, 4), (1, 1, 1))
    assert first.events == (events[1], events[3], events[4])
    assert groups["g"].members["m"].demand == 0
    assert set(groups["g"].members["m"].in_flight) == {1, 3, 4}
    del events[5]
    membership.ack(groups, Ack("g", "m", 1, (1, 3, 4)))
    assert groups["g"].fill(groups["g"].members["m"], 3) is None  # only a gone seq was left
    assert list(groups["g"].shared) == []


def test_requeued_seqs_take_their_place_by_order() -> None:
    events: dict[int, Event] = {}
    groups = _group(events)
    group = groups["g"]
    for seq in (5, 9, 2, 7, 12, 1):  # arrivals from several readers, out of order
        events[seq] = Event.create("t", seq)
        group.requeue(seq, None)
    assert list(group.shared) == [1, 2, 5, 7, 9, 12]


def test_the_route_cache_matches_once_and_stays_bounded() -> None:
    groups = {
        "orders": Group(GroupSpec("orders", ("orders.#",)), "c", {}),
        "all": Group(GroupSpec("all", ("#",)), "c", {}),
    }
    routes = RouteCache(groups)
    assert routes["orders.created"] == (groups["orders"], groups["all"])
    assert routes["audit.x"] == (groups["all"],)
    assert set(routes) == {"orders.created", "audit.x"}
    for n in range(5000):  # a flood of distinct topics starts the cache over
        routes[f"t.{n}"]
    assert 0 < len(routes) <= 4096
    assert routes["orders.created"] == (groups["orders"], groups["all"])


def test_the_registry_imports_builtin_backends_when_asked() -> None:
    from reactor.channels import registry  # noqa: PLC0415 - the module under test
    from reactor.errors import TopologyError  # noqa: PLC0415 - beside it

    assert {"memory", "sqlite", "redis", "rediss"} <= set(registry.known_schemes())
    assert registry.backend_for("sqlite:///x.db").scheme == "sqlite"
    assert registry.backend_for("rediss://h/0").scheme == "rediss"
    with pytest.raises(TopologyError, match=r"no channel backend for 'kafka://x'.*memory"):
        registry.backend_for("kafka://x")
