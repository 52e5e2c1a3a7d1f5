"""A channel's max_event_size: refused at every way in, on every backend, to the byte.

The size is the event's encoding in its channel's codec (JsonCodec for memory and
sqlite, CloudEvents for redis). The memory backend bounds it cheaply and encodes
only near the limit; :func:`size_bound` must never be below the real size.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reactor
from reactor import (
    AsyncSystem,
    CloudEventsCodec,
    Event,
    EventTooLargeError,
    JsonCodec,
    Retry,
    Topology,
)
from reactor.channels.sizes import DEFAULT_MAX_EVENT_SIZE
from reactor.messages import lifecycle
from reactor.messages.sizes import size_bound
from reactor.testing import Recorder, wait_for

pytestmark = pytest.mark.timeout(60)

_STAMP = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _codec(backend: str) -> Any:
    return CloudEventsCodec() if backend.startswith("redis") else JsonCodec()


def _event(blob: str, topic: str = "orders.created") -> Event:
    return Event.create(topic, {"blob": blob, "n": 1}, time=_STAMP)


def test_the_default_limit_is_one_mebibyte() -> None:
    topo = Topology("size")
    decl = topo.channel("orders")
    assert decl.max_event_size == DEFAULT_MAX_EVENT_SIZE == 1_048_576


def test_an_event_at_the_limit_passes_and_one_byte_more_is_refused(backend: str) -> None:
    event = _event("x" * 3000)
    size = len(_codec(backend).encode(event))
    recorder = Recorder()
    topo = Topology("size")
    topo.channel("exact", backend=backend, max_event_size=size)
    topo.channel("tight", backend=backend, max_event_size=size - 1)  # the event is limit + 1
    topo.consumer("exact-reader", recorder, channel="exact")
    topo.consumer("tight-reader", recorder, channel="tight")
    with topo.start() as system:
        system.publish("exact", event)
        with pytest.raises(EventTooLargeError) as refused:
            system.publish("tight", event)
        system.wait_idle(timeout=10)
        assert system.metrics().channel("tight").published == 0
    assert [e.id for e in recorder.events] == [event.id]
    error = refused.value
    assert (error.channel, error.topic, error.event_id) == ("tight", "orders.created", event.id)
    assert (error.size, error.limit) == (size, size - 1)
    text = str(error)
    for part in ("'tight'", "'orders.created'", f"{size:,} bytes", f"{size - 1:,} bytes"):
        assert part in text
    assert "key or URL" in text
    assert isinstance(error, ValueError)
    assert isinstance(error, reactor.ReactorError)


def test_publish_many_with_one_event_too_big_publishes_none(backend: str) -> None:
    recorder = Recorder()
    topo = Topology("size")
    # capacity 2: the publish is split into several sends, and must still be all or nothing.
    topo.channel("orders", backend=backend, max_event_size=2048, capacity=2)
    topo.consumer("clerk", recorder, channel="orders")
    small = [_event(f"small-{n}") for n in range(4)]
    big = _event("y" * 4096)
    with topo.start() as system:
        with pytest.raises(EventTooLargeError) as refused:
            system.publish_many("orders", [*small, big])
        with pytest.raises(EventTooLargeError):
            system.publish_many("orders", [big, *small])
        marker = system.publish("orders", "orders.marker", {"n": 0})
        system.wait_idle(timeout=10)
        stats = system.metrics().channel("orders")
        assert (stats.published, stats.unsettled) == (1, 0)
    assert refused.value.event_id == big.id
    assert [e.id for e in recorder.events] == [marker.id]


def test_a_delayed_event_too_big_is_refused_when_scheduled(backend: str) -> None:
    topo = Topology("size")
    topo.channel("orders", backend=backend, max_event_size=2048)
    small, big = _event("s"), _event("d" * 4096)
    with topo.start() as system:
        with pytest.raises(EventTooLargeError):
            system.publish("orders", big, delay=3600)
        with pytest.raises(EventTooLargeError):
            system.publish_many("orders", [small, big], delay=3600)
        assert system.metrics().channel("orders").scheduled == 0
        system.publish("orders", small, delay=3600)
        assert system.metrics().channel("orders").scheduled == 1


def test_a_request_too_big_is_refused(backend: str) -> None:
    topo = Topology("size")
    topo.channel("quotes", backend=backend, max_event_size=1024)
    topo.consumer("quoter", lambda e: e.reply({"price": 1}), channel="quotes")
    with topo.start() as system:
        with pytest.raises(EventTooLargeError):
            system.request("quotes", "quote.asked", {"text": "z" * 2048}, timeout=5)
        assert system.request("quotes", "quote.asked", {"text": "z"}, timeout=5).data == {
            "price": 1
        }


def test_async_publish_refuses_a_too_big_event() -> None:
    recorder = Recorder()
    topo = Topology("size")
    topo.channel("orders", max_event_size=1024)
    topo.consumer("clerk", recorder, channel="orders")

    async def main() -> None:
        async with AsyncSystem(topo) as system:
            with pytest.raises(EventTooLargeError):
                await system.publish("orders", "orders.created", {"blob": "x" * 2048})
            await system.publish("orders", "orders.created", {"blob": "x"}, version=2)
            await system.wait_idle()

    asyncio.run(main())
    assert [(e.data["blob"], e.version) for e in recorder.events] == [("x", 2)]


def test_a_handler_output_too_big_fails_its_input_which_is_dead_lettered(backend: str) -> None:
    recorder = Recorder()

    def enrich(event: Event) -> Event:
        size = 4096 if event.data["n"] == 1 else 10
        return event.derive("orders.enriched", {"n": event.data["n"], "blob": "e" * size})

    topo = Topology("size")
    topo.channel("orders", backend=backend, max_event_size=2048)
    topo.consumer(
        "enricher",
        enrich,
        channel="orders",
        pattern="orders.created",
        max_deliveries=2,
        retry=Retry(min_s=0.01, max_s=0.02),
    )
    topo.consumer("sink", recorder, channel="orders", pattern="orders.enriched")
    with topo.start() as system:
        for n in range(3):
            system.publish("orders", "orders.created", {"n": n})
        system.wait_idle(timeout=20)
        (letter,) = system.dead_letters("orders")
        assert system.state == "running"
    assert letter.event is not None
    assert letter.event.data["n"] == 1
    assert (letter.error_type, letter.attempts, letter.consumer) == (
        "EventTooLargeError",
        2,
        "enricher",
    )
    assert "'orders.enriched'" in letter.message
    assert sorted(e.data["n"] for e in recorder.events) == [0, 2]


def test_a_producer_drops_a_too_big_event_reports_it_and_goes_on(backend: str) -> None:
    recorder = Recorder()
    dropped = Recorder()
    items = [{"n": 0}, {"n": 1, "blob": "p" * 4096}, {"n": 2}]
    topo = Topology("size")
    topo.channel("orders", backend=backend, max_event_size=2048)
    topo.producer("feed", channel="orders", topic="orders.created", source=items)
    topo.consumer("clerk", recorder, channel="orders")
    topo.consumer(
        "watch", dropped, channel=lifecycle.SYSTEM_CHANNEL, pattern=lifecycle.EVENT_DROPPED
    )
    with topo.start() as system:
        wait_for(lambda: len(recorder) == 2 and len(dropped) == 1, timeout=10)
        system.wait_idle(timeout=10)
        assert system.state == "running"
    assert [e.data["n"] for e in recorder.events] == [0, 2]
    (report,) = dropped.events
    assert (report.data["channel"], report.data["policy"]) == ("orders", "max_event_size")


def test_bytes_read_back_past_the_limit_are_not_refused(durable: str) -> None:
    url = durable
    writer = Topology("size")
    writer.channel("orders", backend=url, max_event_size=64 * 1024)
    writer.consumer("clerk", lambda e: None, channel="orders", pattern="nothing.here")
    with writer.start() as system:
        big = system.publish("orders", "orders.created", {"blob": "b" * 8192})
    recorder = Recorder()
    reader = Topology("size")
    reader.channel("orders", backend=url, max_event_size=1024)  # smaller than what is stored
    reader.consumer("late", recorder, channel="orders")
    with reader.start() as system:
        recorder.wait_for_count(1, timeout=10)
        system.wait_idle(timeout=10)
        assert not system.dead_letters("orders")
    assert [e.id for e in recorder.events] == [big.id]


def test_the_system_channel_has_no_limit() -> None:
    """Dead letters carry whole events: $system takes them whatever their size."""
    letters = Recorder()
    topo = Topology("size")
    topo.channel("orders", max_event_size=DEFAULT_MAX_EVENT_SIZE)

    def fail(event: Event) -> None:
        raise ValueError("x" * 600_000)  # its message and traceback go in the dead letter

    topo.consumer("clerk", fail, channel="orders", max_deliveries=1)
    topo.consumer("watch", letters, channel=lifecycle.SYSTEM_CHANNEL, pattern=lifecycle.DEADLETTER)
    with topo.start() as system:
        system.publish("orders", "orders.created", {"blob": "q" * 600_000})
        letters.wait_for_count(1, timeout=10)
    assert len(JsonCodec().encode(letters.events[0])) > DEFAULT_MAX_EVENT_SIZE


def test_memory_encodes_only_near_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    real = JsonCodec.encode

    def counting(self: JsonCodec, event: Event) -> bytes:
        if threading.current_thread() is threading.main_thread():
            encoded.append(event.topic)
        return real(self, event)

    monkeypatch.setattr(JsonCodec, "encode", counting)
    topo = Topology("size")
    topo.channel("orders", max_event_size=64 * 1024)
    with topo.start() as system:
        for n in range(100):
            system.publish("orders", "orders.small", {"n": n, "name": "tick"})
        system.publish("orders", "orders.near", {"blob": "n" * 20_000})
        with pytest.raises(EventTooLargeError):
            system.publish("orders", "orders.big", {"blob": "b" * 70_000})
    assert encoded == ["orders.near", "orders.big"]


# -- the bound -------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.uuids(),
)
_keys = st.one_of(st.text(max_size=12), st.just("__reactor__"), st.integers(), st.none())
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(_keys, inner, max_size=5),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=5)), max_size=5),
    ),
    max_leaves=20,
)


def _encoded_sizes(event: Event) -> list[int]:
    sizes = [len(JsonCodec().encode(event))]
    with contextlib.suppress(TypeError, ValueError):  # not plain JSON: CloudEvents refuses it
        sizes.append(len(CloudEventsCodec().encode(event)))
    return sizes


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(_values, st.dictionaries(st.text(max_size=12), _scalars, max_size=8)),
    key=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    headers=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
)
def test_the_bound_is_never_below_either_encoding(
    data: Any, key: str | None, headers: dict[str, str]
) -> None:
    try:
        event = Event.create("orders.created", data, key=key, headers=headers)
        sizes = _encoded_sizes(event)
    except (TypeError, ValueError, UnicodeError):
        return  # no codec writes it (a lone surrogate, an int past the digit limit)
    assert size_bound(event) >= max(sizes)


@pytest.mark.parametrize(
    "data",
    [
        {"nan": math.nan, "inf": -math.inf, "c": complex(math.nan, math.nan), "b": b""},
        {"nested": (complex(1, 2), complex(math.nan, 0), math.nan) * 20},
        {"control": "\x00\x01\x1f" * 100, "quote": '"\\' * 100, "wide": "\U0001f600" * 50},
        {1: "int key", None: "none key", "__reactor__": "tag key"},
        {"event": Event.create("inner.event", {"x": "\x00" * 50}), "when": _STAMP},
        {"decimal": Decimal("1e-100"), "big": 10**300, "d": date.today(), "t": time(1)},
        {"delta": timedelta(days=-999_999_999), "id": UUID(int=0), "set": frozenset({1, 2})},
        "\x00" * 1000,
        (None,) * 500,
        b"\xff" * 300,
    ],
)
def test_the_bound_holds_for_the_costliest_values(data: Any) -> None:
    event = Event.create("orders.created", data, headers={'"q"': "\x00\\", "ok": "v"})
    assert size_bound(event) >= max(_encoded_sizes(event))
