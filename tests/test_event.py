"""Event creation, derivation and UUIDv7 event ids."""

from __future__ import annotations

import os
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

import reactor.messages.event as event_module
from reactor import Event, FrozenDict
from reactor.errors import ImmutableMessageError, InvalidTopicError
from reactor.messages.event import new_event_id

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_fields_are_exactly_the_documented_ones() -> None:
    assert [f.name for f in attrs.fields(Event)] == [
        "id",
        "topic",
        "data",
        "key",
        "time",
        "source",
        "headers",
        "correlation_id",
        "causation_id",
    ]


def test_create_fills_id_time_and_defaults() -> None:
    before = datetime.now(UTC)
    e = Event.create("orders.created", {"id": 1})
    after = datetime.now(UTC)
    assert UUID7.fullmatch(e.id)
    assert e.topic == "orders.created"
    assert e.data == {"id": 1}
    assert isinstance(e.data, FrozenDict)
    assert e.key is None
    assert before <= e.time <= after
    assert e.time.tzinfo is UTC
    assert e.source == "reactor"
    assert e.headers == {}
    assert isinstance(e.headers, FrozenDict)
    assert e.correlation_id == e.id
    assert e.causation_id is None


def test_create_takes_every_field() -> None:
    when = datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    e = Event.create(
        "a.b",
        [1],
        key="k",
        source="web",
        headers={"h": "v"},
        correlation_id="c",
        causation_id="p",
        id="my-id",
        time=when,
    )
    assert (e.id, e.key, e.source, e.correlation_id, e.causation_id) == (
        "my-id",
        "k",
        "web",
        "c",
        "p",
    )
    assert e.data == (1,)
    assert e.headers == {"h": "v"}
    assert e.time == when
    assert e.time.tzinfo is UTC  # stored in UTC
    assert e.time.hour == 10


def test_data_is_a_private_frozen_copy() -> None:
    payload = {"items": [1, 2]}
    e = Event.create("a", payload)
    payload["items"].append(3)
    assert e.data == {"items": (1, 2)}


def test_unfreezable_data_names_its_path() -> None:
    with pytest.raises(ImmutableMessageError) as info:
        Event.create("a", {"items": [1, 2, bytearray(b"ok"), object()]})
    assert info.value.path == "data['items'][3]"


def test_invalid_topic_is_refused() -> None:
    with pytest.raises(InvalidTopicError, match="'orders created'"):
        Event.create("orders created")
    with pytest.raises(InvalidTopicError):
        Event.create("orders.#")


def test_int_keys_become_str_other_keys_are_refused() -> None:
    assert Event.create("a", key=7).key == "7"
    for bad in (True, 1.5, b"k", ("a",)):
        with pytest.raises(TypeError, match=r"key must be a str.*" + type(bad).__name__):
            Event.create("a", key=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers", [{"a": 1}, {1: "a"}, {"a": None}, [("a", "b")], "a=b"], ids=repr
)
def test_headers_must_map_str_to_str(headers: Any) -> None:
    with pytest.raises(TypeError, match="headers"):
        Event.create("a", headers=headers)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("id", "", ValueError),
        ("id", 5, TypeError),
        ("source", "", ValueError),
        ("source", None, TypeError),
        ("correlation_id", 3, TypeError),
        ("causation_id", "", ValueError),
        ("time", "2024-01-01", TypeError),
        ("time", datetime(2024, 1, 1), ValueError),
    ],
)
def test_other_fields_are_checked(field: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=field if field != "time" else "time"):
        Event.create("a", **{field: value})


def test_the_constructor_and_evolve_apply_the_same_checks() -> None:
    e = Event.create("a", {"x": 1})
    with pytest.raises(InvalidTopicError):
        attrs.evolve(e, topic="bad topic")
    with pytest.raises(ImmutableMessageError):
        attrs.evolve(e, data=[object()])
    changed = attrs.evolve(e, data={"y": [1]}, key=3)
    assert changed.data == {"y": (1,)}
    assert changed.key == "3"


def test_events_are_immutable_and_hashable() -> None:
    e = Event.create("a", {"x": [1]}, headers={"h": "v"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        e.topic = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        e.extra = 1  # type: ignore[attr-defined]
    assert hash(e) == hash(attrs.evolve(e))
    assert e == attrs.evolve(e)
    assert e != attrs.evolve(e, key="k")


def test_derive_keeps_the_flow() -> None:
    root = Event.create("orders.created", {"id": 1}, key="customer-7", source="web")
    child = root.derive("orders.billed", {"id": 1})
    grandchild = child.derive("orders.mailed", headers={"h": "v"})
    assert child.id != root.id
    assert child.id > root.id
    assert child.topic == "orders.billed"
    assert child.correlation_id == root.id
    assert child.causation_id == root.id
    assert child.key == "customer-7"
    assert child.source == "web"
    assert child.headers == {}
    assert grandchild.correlation_id == root.id
    assert grandchild.causation_id == child.id
    assert grandchild.data is None
    assert grandchild.headers == {"h": "v"}


def test_derive_overrides() -> None:
    root = Event.create("a", key="k", source="web", headers={"h": "v"})
    assert root.derive("b", key=None).key is None
    assert root.derive("b", key=5).key == "5"
    assert root.derive("b", source="billing").source == "billing"
    with pytest.raises(InvalidTopicError):
        root.derive("b..c")
    with pytest.raises(ImmutableMessageError):
        root.derive("b", {"x": object()})


def test_repr_is_short() -> None:
    e = Event.create("a.b", {"blob": "x" * 1000}, key="k")
    text = repr(e)
    assert text.startswith(f"Event('a.b', id='{e.id}', key='k', data=FrozenDict(")
    assert len(text) < 150


def test_subclasses_go_through_their_own_init() -> None:
    @attrs.frozen(slots=True, kw_only=True, repr=False)
    class Tagged(Event):
        tag: str = "t"

    e = Tagged.create("a", [1])
    assert type(e) is Tagged
    assert e.data == (1,)
    assert e.correlation_id == e.id


# --- ids ------------------------------------------------------------------------


def test_ids_are_uuid7_with_the_current_time() -> None:
    before = datetime.now(UTC)
    value = new_event_id()
    after = datetime.now(UTC)
    assert UUID7.fullmatch(value)
    parsed = uuid.UUID(value)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == value
    ms = int(value.replace("-", "")[:12], 16)
    assert before.timestamp() * 1000 - 1 <= ms <= after.timestamp() * 1000 + 1


def test_ids_sort_in_creation_order() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_stay_ordered_when_the_counter_overflows_or_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [10**18]
    monkeypatch.setattr(event_module, "_time_ns", lambda: now[0])
    first = [new_event_id() for _ in range(5000)]  # > 4096 in one "millisecond"
    now[0] -= 10**12  # the wall clock jumps back a thousand seconds
    second = [new_event_id() for _ in range(10)]
    ids = first + second
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(UUID7.fullmatch(i) for i in ids)


def test_ids_are_unique_and_ordered_across_threads() -> None:
    per_thread = 5000
    results: list[list[str]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        mine = [new_event_id() for _ in range(per_thread)]
        with lock:
            results.append(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 8
    for mine in results:
        assert mine == sorted(mine)  # each thread sees increasing ids
    everything = [i for mine in results for i in mine]
    assert len(set(everything)) == 8 * per_thread


def test_ids_keep_their_layout_across_many_refills_of_random_tails() -> None:
    ids = [new_event_id() for _ in range(3 * event_module._TAILS_PER_REFILL + 7)]
    assert all(UUID7.fullmatch(i) for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    tails = [i[19:] for i in ids]
    assert len(set(tails)) == len(tails)  # 62 random bits each: no repeat in a few thousand


def test_a_forked_child_makes_other_random_bits_than_its_parent() -> None:
    new_event_id()  # the parent holds a batch of random tails now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids and leave at once
        try:
            os.write(write, "\n".join(new_event_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    parent = [new_event_id() for _ in range(50)]
    assert len(child) == 50
    # Without a reseed the child would pop the very tails the parent pops next.
    assert not {i[19:] for i in child} & {i[19:] for i in parent}


def test_a_flat_dict_is_copied_so_the_publisher_keeps_its_own() -> None:
    data: dict[str, Any] = {"n": 1, "name": "x", "ok": True, "none": None}
    e = Event.create("t.x", data, source="s")
    data["n"] = 2
    assert type(e.data) is FrozenDict
    assert e.data == {"n": 1, "name": "x", "ok": True, "none": None}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"items": [1, 2]}, {"items": (1, 2)}),  # a list inside: the generic walk
        ({("a", 1): 1}, {("a", 1): 1}),  # a tuple key
        ({"b": bytearray(b"x")}, {"b": b"x"}),
    ],
)
def test_a_dict_that_is_not_flat_is_still_deep_frozen(data: Any, expected: Any) -> None:
    e = Event.create("t.x", data)
    assert e.data == expected
    assert all(type(v) is not list and type(v) is not bytearray for v in e.data.values())


def test_a_dict_with_something_mutable_inside_is_still_refused() -> None:
    with pytest.raises(ImmutableMessageError) as info:
        Event.create("t.x", {"ok": 1, "bad": object()})
    assert "data['bad']" in str(info.value)
    parent = Event.create("t.x", {"n": 1})
    with pytest.raises(ImmutableMessageError):
        parent.derive("t.y", {"bad": object()})
