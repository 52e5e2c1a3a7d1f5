"""The redis backend beyond the shared channel suite: interop, bad entries, claims,
retention, outages and restarts of redis-server."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from redis_support import RedisServer, require_redis_server

import reactor
from reactor import Event, Topology, testing
from reactor.channels import redis as redis_backend
from reactor.channels.redis import client as redis_client
from reactor.channels.redis import parse_url
from reactor.testing import Recorder, wait_for


def _client(url: str) -> Any:
    import redis  # noqa: PLC0415 - redis-py is optional

    return redis.Redis.from_url(url.split("?", maxsplit=1)[0])


def _prefix(url: str) -> str:
    return url.split("prefix=")[1].split("&", maxsplit=1)[0]


def _cloudevent(event_id: str, topic: str, data: Any, **extra: Any) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "test",
            "type": topic,
            "data": data,
            **extra,
        }
    ).encode()


# -- URL and packaging -------------------------------------------------------------------


def test_url_options_are_split_from_the_redis_url() -> None:
    options = parse_url(
        "rediss://:s3cret@cache.example:6380/2?maxlen=1000&approx=1&lease=5&worker=w1"
        "&ssl_cert_reqs=none",
        "orders",
    )
    assert options.client_url == "rediss://:s3cret@cache.example:6380/2?ssl_cert_reqs=none"
    assert options.display == "rediss://cache.example:6380/2"  # no password in messages
    assert (options.maxlen, options.approximate, options.lease_s, options.worker) == (
        1000,
        True,
        5.0,
        "w1",
    )
    with pytest.raises(ValueError, match=r"channel 'orders': option maxlen='x'"):
        parse_url("redis://localhost/0?maxlen=x", "orders")
    with pytest.raises(ValueError, match="start"):
        parse_url("redis://localhost/0?start=1-0", "orders")


def test_without_redis_py_opening_a_channel_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_client, "redis_py", None)
    topo = Topology("nodriver")
    topo.channel("c", backend="redis://:pw@localhost:6379/0")
    topo.consumer("x", Recorder(), channel="c")
    topo.validate()  # the scheme is known: only opening the channel needs the package
    with pytest.raises(
        redis_backend.RedisUnavailable, match=r"pip install reactor-actors\[redis\]"
    ) as info:
        topo.start()
    assert "pw" not in str(info.value)


# -- interop -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_reads_cloudevents_and_its_entries_are_consumed(
    redis_url: str, redis_server: RedisServer
) -> None:
    topo = Topology("interop")
    topo.channel("orders", backend=redis_url)
    recorder = Recorder()
    topo.consumer("audit", recorder, channel="orders", pattern="orders.#")
    stream = f"{_prefix(redis_url)}:orders"
    cli = ["redis-cli", "-p", str(redis_server.port), "--raw"]
    with topo.start() as system:
        sent = system.publish("orders", "orders.created", {"id": 7, "items": ["a"]}, key="c-1")
        system.wait_idle(5)
        out = subprocess.run(
            [*cli, "XRANGE", stream, "-", "+"], capture_output=True, check=True, text=True
        )
        lines = out.stdout.splitlines()
        assert lines[1] == "event"
        ce = json.loads(lines[2])
        assert ce["specversion"] == "1.0"
        assert (ce["id"], ce["type"], ce["data"], ce["partitionkey"]) == (
            sent.id,
            "orders.created",
            {"id": 7, "items": ["a"]},
            "c-1",
        )
        foreign = _cloudevent("from-cli-1", "orders.paid", {"id": 8}, partitionkey="c-2")
        subprocess.run(
            [*cli, "XADD", stream, "*", "event", foreign.decode()], capture_output=True, check=True
        )
        recorder.wait_for_count(2)
        system.wait_idle(5)
    got = recorder.events[1]
    assert (got.id, got.topic, got.data, got.key, got.source) == (
        "from-cli-1",
        "orders.paid",
        {"id": 8},
        "c-2",
        "test",
    )


def test_undecodable_entries_are_dead_lettered_and_do_not_stop_the_group(redis_url: str) -> None:
    topo = Topology("garbage")
    topo.channel("c", backend=redis_url)
    recorder, dead = Recorder(), Recorder()
    topo.consumer("x", recorder, channel="c")
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    stream = f"{_prefix(redis_url)}:c"
    with topo.start() as system, _client(redis_url) as client:
        client.xadd(stream, {"event": b"{not json"})
        client.xadd(stream, {"event": _cloudevent("bad-topic", "a..b", 1)})
        client.xadd(stream, {"payload": b"no event field"})
        client.xadd(stream, {"event": _cloudevent("good", "t.ok", 1)})
        recorder.wait_for_count(1)
        dead.wait_for_count(3)
        # Entries written by another client are counted once the monitor sees them.
        wait_for(lambda: client.xpending(stream, "x")["pending"] == 0)
        system.wait_idle(5)
        # Stored in Redis too, with the bytes and the entry they were in.
        wait_for(lambda: len(system.dead_letters("c")) == 3)
        kept = system.dead_letters("c")
        assert client.xlen(f"{stream}:deadletters") == 3
    assert [(v.event, v.group, v.error_type) for v in kept] == [(None, "x", "DecodeError")] * 3
    assert kept[0].raw == b"{not json"
    assert all(v.where["entry_id"] for v in kept)
    assert [e.id for e in recorder.events] == ["good"]
    letters = [e.data for e in dead.events]
    assert {d["error_type"] for d in letters} == {"DecodeError"}
    assert letters[0]["raw"] == b"{not json"
    assert "not valid" in letters[1]["message"] or "'type'" in letters[1]["message"]
    assert "no 'event' field (fields: payload)" in letters[2]["message"]
    assert all(d["group"] == "x" and d["channel"] == "c" and d["entry_id"] for d in letters)


def test_reactor_entries_carry_topic_and_key_and_are_decoded_by_the_consumer(
    redis_url: str,
) -> None:
    # reactor writes the topic and key beside the event, so workers route and place an
    # entry without decoding it; its consumer decodes it, and dead-letters bytes that
    # are no event at once (no retries), with the entry id.
    topo = Topology("fields")
    topo.channel("c", backend=redis_url)
    recorder, dead = Recorder(), Recorder()
    topo.consumer("x", recorder, channel="c", pattern="t.#", max_deliveries=5)
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    stream = f"{_prefix(redis_url)}:c"
    with topo.start() as system, _client(redis_url) as client:
        sent = system.publish("c", "t.x", {"n": 1}, key="k-1")
        recorder.wait_for_count(1)
        ((_, fields),) = client.xrange(stream)
        assert fields[b"reactor.topic"] == b"t.x"
        assert fields[b"reactor.key"] == b"k-1"
        client.xadd(stream, {"event": b"{broken", "reactor.topic": b"t.y"})
        client.xadd(stream, {"event": b"{broken", "reactor.topic": b"other.z"})  # not routed
        system.publish("c", "t.x", {"n": 2})
        recorder.wait_for_count(2)
        dead.wait_for_count(1)
        wait_for(lambda: client.xpending(stream, "x")["pending"] == 0)
        system.wait_idle(5)
    assert recorder.events[0].id == sent.id
    assert recorder.events[0].key == "k-1"
    assert [e.data for e in recorder.events] == [{"n": 1}, {"n": 2}]
    assert len(dead.events) == 1
    letter = dead.events[0].data
    assert letter["event"] is None
    assert letter["raw"] == b"{broken"
    assert letter["error_type"] == "DecodeError"
    assert letter["attempts"] == 1
    assert letter["group"] == "x"
    assert letter["entry_id"]


def test_an_entry_whose_reactor_fields_are_not_utf8_is_dead_lettered_with_its_bytes(
    redis_url: str,
) -> None:
    # A reactor.topic or reactor.key that is not UTF-8 used to fail the whole read: the
    # entry and those read with it stayed pending forever. Now only that entry is
    # dead-lettered (with its raw bytes); the rest of its batch is delivered.
    topo = Topology("bad-fields")
    topo.channel("c", backend=redis_url)
    recorder, dead = Recorder(), Recorder()
    topo.consumer("x", recorder, channel="c", prefetch=8)
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    stream = f"{_prefix(redis_url)}:c"
    body = _cloudevent("fine-body", "t.x", 0)
    with _client(redis_url) as client:
        client.xgroup_create(stream, "x", id="$", mkstream=True)
        client.xadd(stream, {"event": _cloudevent("before", "t.x", 1), "reactor.topic": b"t.x"})
        client.xadd(stream, {"event": body, "reactor.topic": b"t.\xff\xfe"})
        client.xadd(stream, {"event": body, "reactor.topic": b"t.x", "reactor.key": b"\xc3("})
        client.xadd(stream, {"event": _cloudevent("after", "t.x", 2), "reactor.topic": b"t.x"})
        with topo.start() as system:
            recorder.wait_for_count(2)
            dead.wait_for_count(2)
            wait_for(lambda: client.xpending(stream, "x")["pending"] == 0)
            system.wait_idle(5)
            assert system.health().status == "ok"
    assert [e.id for e in recorder.events] == ["before", "after"]
    letters = [e.data for e in dead.events]
    assert [d["raw"] for d in letters] == [body, body]
    assert all(d["event"] is None and d["error_type"] == "DecodeError" for d in letters)
    assert "reactor.topic=b't.\\xff\\xfe'" in letters[0]["message"]
    assert "reactor.key=b'\\xc3('" in letters[1]["message"]
    assert all(d["entry_id"] and d["attempts"] == 1 for d in letters)


# -- claims, attempts, retention ------------------------------------------------------------


def _ghost_reads(client: Any, stream: str, group: str, consumer: str, count: int) -> list[bytes]:
    """A worker that reads entries and dies holding them."""
    reply = client.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]]


def test_entries_of_a_dead_worker_are_claimed_with_one_attempt_charged(redis_url: str) -> None:
    # The dead worker held five entries; it was handling the first (members take
    # entries in id order), the others waited in its prefetch. Only the first is
    # charged an attempt, in the attempts hash, for whoever takes it next.
    url = redis_url.replace("lease=2", "lease=0.2")
    stream = f"{_prefix(url)}:c"
    attempts: dict[int, int] = {}

    def handle(event: Event) -> None:
        attempts[event.data] = reactor.current_delivery().attempt

    with _client(url) as client:
        client.xgroup_create(stream, "x", id="$", mkstream=True)
        for n in range(5):
            client.xadd(stream, {"event": _cloudevent(f"e{n}", "t.x", n)})
        assert len(_ghost_reads(client, stream, "x", "dead-worker", 5)) == 5
        topo = Topology("claim")
        topo.channel("c", backend=url)
        topo.consumer("x", handle, channel="c")
        with topo.start() as system:
            wait_for(lambda: len(attempts) == 5)
            system.wait_idle(5)
            assert client.xpending(stream, "x")["pending"] == 0
            assert system.metrics().group("c", "x").redelivered == 5
            assert client.hlen(f"{stream}:attempts:x") == 0  # forgotten once settled
    assert attempts == {0: 2, 1: 1, 2: 1, 3: 1, 4: 1}


def test_a_worker_restarted_under_its_name_takes_back_its_pending_entries_first(
    redis_url: str,
) -> None:
    url = redis_url.replace("lease=2", "lease=600") + "&worker=w1"  # no claims: only the re-read
    stream = f"{_prefix(url)}:c"
    recorder = Recorder()
    with _client(url) as client:
        client.xgroup_create(stream, "x", id="$", mkstream=True)
        for n in range(3):
            client.xadd(stream, {"event": _cloudevent(f"e{n}", "t.x", n)})
        _ghost_reads(client, stream, "x", "w1", 3)  # w1's previous life
        client.xadd(stream, {"event": _cloudevent("e3", "t.x", 3)})
        topo = Topology("reread")
        topo.channel("c", backend=url)
        topo.consumer("x", recorder, channel="c", prefetch=1)
        with topo.start() as system:
            recorder.wait_for_count(4)
            system.wait_idle(5)
    assert recorder.data() == [0, 1, 2, 3]


def test_an_entry_whose_workers_kept_dying_is_dead_lettered_without_another_try(
    redis_url: str,
) -> None:
    url = redis_url.replace("lease=2", "lease=0.2")
    stream = f"{_prefix(url)}:c"
    recorder, dead = Recorder(), Recorder()
    with _client(url) as client:
        client.xgroup_create(stream, "x", id="$", mkstream=True)
        entry = client.xadd(stream, {"event": _cloudevent("poison", "t.x", 0)})
        _ghost_reads(client, stream, "x", "w-a", 1)
        # Two workers took it over before and died in its handler: each was charged.
        client.hset(f"{stream}:attempts:x", entry, 2)
        topo = Topology("poison")
        topo.channel("c", backend=url)
        topo.consumer("x", recorder, channel="c", max_deliveries=3)
        topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
        with topo.start() as system:
            dead.wait_for_count(1)
            system.wait_idle(5)
    assert len(recorder) == 0
    letter = dead.events[0].data
    assert (letter["error_type"], letter["attempts"], letter["event"].id) == (
        "DeliveryAbandoned",
        3,
        "poison",
    )


def test_failed_attempts_are_kept_in_redis_for_the_next_worker(redis_url: str) -> None:
    stream = f"{_prefix(redis_url)}:c"
    attempts: list[int] = []
    failing = threading.Event()

    def handle(event: Event) -> None:
        attempts.append(1)
        failing.set()
        raise RuntimeError("boom")

    topo = Topology("attempts")
    topo.channel("c", backend=redis_url)
    topo.consumer("x", handle, channel="c", max_deliveries=50)
    dead = Recorder()
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    with topo.start() as system, _client(redis_url) as client:
        system.publish("c", "t.x", 1)
        wait_for(lambda: client.hlen(f"{stream}:attempts:x") == 1 and len(attempts) >= 3)
        spent = int(next(iter(client.hvals(f"{stream}:attempts:x"))))
        assert spent >= 2
        system.stop(timeout=5, drain=False)


def test_pending_entries_removed_by_retention_are_reported(redis_url: str) -> None:
    url = redis_url.replace("lease=2", "lease=0.2")
    stream = f"{_prefix(url)}:c"
    trimmed = Recorder()
    recorder = Recorder()
    with _client(url) as client:
        client.xgroup_create(stream, "x", id="$", mkstream=True)
        for n in range(4):
            client.xadd(stream, {"event": _cloudevent(f"e{n}", "t.x", n)})
        _ghost_reads(client, stream, "x", "dead-worker", 4)
        client.xtrim(stream, maxlen=1, approximate=False)  # e0..e2 go while pending
        topo = Topology("trim")
        topo.channel("c", backend=url)
        topo.consumer("x", recorder, channel="c")
        topo.consumer("watch", trimmed, channel="$system", pattern="$system.retention.forced")
        with topo.start() as system:
            trimmed.wait_for_count(1)
            recorder.wait_for_count(1)
            system.wait_idle(5)
            stats = system.metrics().channel("c")
    assert recorder.data() == [3]
    assert trimmed.events[0].data["count"] == 3
    assert (stats.expired, stats.groups[0].expired) == (3, 3)


def test_maxlen_bounds_the_stream(redis_url: str) -> None:
    url = redis_url + "&maxlen=10"
    topo = Topology("retention")
    topo.channel("c", backend=url)
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    with topo.start() as system, _client(url) as client:
        for n in range(50):
            system.publish("c", "t.x", n)
            # Trimming may delete entries no group has read yet (they were never pending, so
            # nobody lost them): keep the consumer caught up for this test.
            recorder.wait_for_count(n + 1)
        system.wait_idle(5)
        assert client.xlen(f"{_prefix(url)}:c") == 10
    assert recorder.data() == list(range(50))


def test_capacity_counts_the_slowest_group(redis_url: str) -> None:
    topo = Topology("twogroups")
    topo.channel("c", backend=redis_url, capacity=4, overflow="reject")
    gate = threading.Event()
    fast, slow = Recorder(), Recorder()
    topo.consumer("fast", fast, channel="c")
    topo.consumer("slow", lambda e: gate.wait(10) and slow(e), channel="c", prefetch=1)
    with topo.start() as system:
        for n in range(4):
            system.publish("c", "t.x", n)
        fast.wait_for_count(4)
        # The fast group is done, but the slow one still holds all four.
        wait_for(lambda: system.metrics().group("c", "fast").acked == 4)
        with pytest.raises(reactor.ChannelFull):
            system.publish("c", "t.x", 99)
        gate.set()
        system.wait_idle(5)
        assert system.metrics().channel("c").unsettled == 0
    assert sorted(slow.data()) == [0, 1, 2, 3]


# -- outages ---------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path / "redis", aof=True)
    server.start()
    yield server
    server.stop()


def test_publish_during_an_outage_follows_the_overflow_policy(own_server: RedisServer) -> None:
    base = f"{own_server.url}?prefix=o&publish_timeout=1"
    topo = Topology("outage")
    topo.channel("blocky", backend=base)
    topo.channel("picky", backend=base, overflow="reject")
    topo.channel("lossy", backend=base, overflow="drop_newest")
    recorder, events = Recorder(), Recorder()
    for channel in ("blocky", "picky", "lossy"):
        topo.consumer(f"x-{channel}", recorder, channel=channel)
    topo.consumer("watch", events, channel="$system", pattern="$system.channel.*")
    with topo.start() as system:
        system.publish("blocky", "t.x", "before")
        recorder.wait_for_count(1)
        own_server.stop()
        events.wait_for_count(1, timeout=10)  # the monitors notice
        assert events.events[0].topic == "$system.channel.disconnected"
        wait_for(
            lambda: all(
                any(p.startswith(f"channel {c!r}:") for p in system.health().problems)
                for c in ("blocky", "picky", "lossy")
            ),
            timeout=10,
        )
        assert system.health().status == "degraded"
        with pytest.raises(reactor.BackpressureTimeout, match="cannot reach Redis"):
            system.publish("blocky", "t.x", "blocked", timeout=0.1)
        with pytest.raises(reactor.ChannelFull, match="cannot reach Redis"):
            system.publish("picky", "t.x", "rejected")
        system.publish("lossy", "t.x", "dropped")
        assert system.metrics().channel("lossy").dropped == 1
        own_server.start()
        wait_for(
            lambda: any(e.topic == "$system.channel.reconnected" for e in events.events), timeout=10
        )
        system.publish("blocky", "t.x", "after")
        recorder.wait_for_count(2, timeout=10)
        system.wait_idle(10)
        wait_for(lambda: system.health().ok, timeout=10)
    assert recorder.data() == ["before", "after"]


def test_redis_restart_mid_stream_loses_nothing(own_server: RedisServer) -> None:
    url = f"{own_server.url}?prefix=r&publish_timeout=20&lease=1"
    topo = Topology("restart")
    topo.channel("c", backend=url, capacity=100)
    seen: set[int] = set()
    lock = threading.Lock()

    def handle(event: Event) -> None:
        with lock:
            seen.add(event.data)

    topo.consumer("x", handle, channel="c", prefetch=16)
    total = 600
    with topo.start() as system:
        published = threading.Event()

        def publish() -> None:
            for n in range(total):
                system.publish("c", "t.x", n, timeout=30)
            published.set()

        publisher = threading.Thread(target=publish, name="test-publisher")
        publisher.start()
        wait_for(lambda: len(seen) >= 100, timeout=10)
        own_server.stop()  # SIGTERM: AOF (appendfsync always) has every acknowledged write
        own_server.start()
        publisher.join(30)
        assert published.is_set()
        system.wait_idle(30)
    assert seen == set(range(total))


def test_a_new_group_starts_where_its_consumer_says(redis_url: str) -> None:
    url = redis_url  # a key prefix of its own: both systems below share the stream
    first = Topology("history")
    first.channel("c", backend=url)
    first.consumer("early", Recorder(), channel="c")
    with first.start() as system:
        for n in range(3):
            system.publish("c", "t.x", n)
        system.wait_idle(10)
    earliest, latest = Recorder(), Recorder()
    second = Topology("newcomers")
    second.channel("c", backend=url)
    second.consumer("replayer", earliest, channel="c")  # start="earliest" by default
    second.consumer("tail", latest, channel="c", start="latest")
    with second.start() as system:
        system.publish("c", "t.x", 3)
        earliest.wait_for_count(4, timeout=10)
        latest.wait_for_count(1, timeout=10)
        system.wait_idle(10)
    assert earliest.data() == [0, 1, 2, 3]
    assert latest.data() == [3]


def test_a_redis_group_cannot_start_at_an_offset(redis_url: str) -> None:
    topo = Topology("offset")
    topo.channel("c", backend=redis_url)
    topo.consumer("x", Recorder(), channel="c", start=5)
    with pytest.raises(Exception, match="stream ids are not offsets"):
        topo.start()


# -- reactor.testing.RedisServer ----------------------------------------------------------------


def test_a_private_redis_server_runs_in_a_with_block_and_leaves_nothing_behind() -> None:
    require_redis_server()
    with testing.RedisServer() as server, server.client() as client:
        client.set("k", "v")
        assert client.get("k") == b"v"
        directory, process = server.directory, server.process
        assert directory.is_dir()
    assert process is not None
    assert process.poll() is not None
    assert not directory.exists()


def test_a_missing_redis_server_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to run there
    with pytest.raises(FileNotFoundError, match=r"apt-get install redis-server"):
        testing.RedisServer(tmp_path)
