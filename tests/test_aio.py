"""The asyncio face: a system driven from an event loop never blocks that loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import reactor
from reactor import AsyncSystem, Event, Topology
from reactor.testing import Recorder, wait_for

pytestmark = pytest.mark.timeout(60)


def _publishing_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("reactor:publish")]


def _held_by(release: threading.Event) -> Any:
    def hold(event: Event) -> None:
        release.wait(10)

    return hold


def _topology(handler: Any, **channel: Any) -> Topology:
    topo = Topology("aio")
    topo.channel("orders", **channel)
    topo.consumer("clerk", handler, channel="orders")
    return topo


def test_events_published_from_a_coroutine_arrive_in_order() -> None:
    recorder = Recorder()

    async def main() -> None:
        async with AsyncSystem(_topology(recorder)) as system:
            assert system.state == "running"
            for n in range(200):
                await system.publish("orders", "order.placed", {"n": n}, key=f"k{n % 3}")
            made = [Event.create("order.paid", {"n": n}) for n in range(50)]
            assert await system.publish_many("orders", made) == 50
            await system.wait_idle()
            assert system.metrics().channel("orders").acked == 250
        assert system.state == "stopped"

    asyncio.run(main())
    assert [e.data["n"] for e in recorder.events if e.topic == "order.placed"] == list(range(200))
    assert [e.data["n"] for e in recorder.events if e.topic == "order.paid"] == list(range(50))
    assert _publishing_threads() == []


def test_a_full_channel_makes_the_publish_wait_but_never_the_loop() -> None:
    release = threading.Event()
    recorder = Recorder(_held_by(release))

    async def main() -> None:
        async with AsyncSystem(_topology(recorder, capacity=2)) as system:
            publishing = asyncio.create_task(_publish_all(system, 6))
            # The loop keeps running other coroutines while the publishes wait for credits.
            ticks = 0
            while system.metrics().channel("orders").unsettled < 2:
                await asyncio.sleep(0.001)
            for _ in range(20):
                await asyncio.sleep(0)
                ticks += 1
            assert ticks == 20
            assert not publishing.done(), "the channel holds 2 at most: the publish must wait"
            release.set()
            assert await asyncio.wait_for(publishing, 10) == list(range(6))
            await system.wait_idle()

    asyncio.run(main())
    assert [e.data for e in recorder.events] == list(range(6))


async def _publish_all(system: AsyncSystem, count: int) -> list[int]:
    sent = []
    for n in range(count):
        event = await system.publish("orders", "order.placed", n)
        sent.append(event.data)
    return sent


def test_a_real_asyncio_server_publishes_what_its_clients_send() -> None:
    recorder = Recorder()

    async def main() -> None:
        async with AsyncSystem(_topology(recorder)) as system:

            async def serve_client(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                while line := await reader.readline():
                    event = await system.publish("orders", "order.placed", line.decode().strip())
                    writer.write(f"{event.id}\n".encode())
                    await writer.drain()
                writer.close()

            server = await asyncio.start_server(serve_client, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            async with server:
                replies = await asyncio.gather(*(_client(port, c) for c in range(4)))
            await system.wait_idle()
            assert all(len(ids) == 25 for ids in replies)

    asyncio.run(main())
    by_client: dict[str, list[int]] = {}
    for event in recorder.events:
        client, n = event.data.split(":")
        by_client.setdefault(client, []).append(int(n))
    assert by_client == {str(c): list(range(25)) for c in range(4)}


async def _client(port: int, client: int) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ids = []
    for n in range(25):
        writer.write(f"{client}:{n}\n".encode())
        await writer.drain()
        ids.append((await reader.readline()).decode().strip())
    writer.close()
    await writer.wait_closed()
    return ids


def test_wait_idle_names_what_is_busy_and_a_cancelled_wait_leaves_nothing_behind() -> None:
    release = threading.Event()

    async def main() -> None:
        async with AsyncSystem(_topology(Recorder(_held_by(release)))) as system:
            await system.publish("orders", "order.placed", 1)
            with pytest.raises(reactor.IdleTimeout, match="channel 'orders' holds 1 unsettled"):
                await system.wait_idle(timeout=0.05)
            waiting = asyncio.create_task(system.wait_idle(timeout=None))
            await asyncio.sleep(0)  # the wait starts, and waits
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            release.set()
            await system.wait_idle()

    before = set(threading.enumerate())
    asyncio.run(main())
    assert _publishing_threads() == []
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_mistakes_raise_the_usual_errors_without_a_thread() -> None:
    async def main() -> None:
        system = AsyncSystem(_topology(Recorder()))
        with pytest.raises(reactor.SystemStoppedError):
            await system.publish("orders", "order.placed", 1)
        async with system:
            with pytest.raises(reactor.UnknownChannelError, match="'order'"):
                await system.publish("order", "order.placed", 1)
            with pytest.raises(reactor.InvalidTopicError):
                await system.publish("orders", "bad topic!", 1)
            assert _publishing_threads() == []
        with pytest.raises(reactor.SystemStoppedError):
            await system.publish("orders", "order.placed", 1)

    asyncio.run(main())


def test_an_invalid_topology_fails_start_with_a_topology_error() -> None:
    topo = Topology("bad")
    topo.consumer("clerk", Recorder(), channel="missing")

    async def main() -> None:
        with pytest.raises(reactor.TopologyError, match="missing"):
            async with AsyncSystem(topo):
                pass  # pragma: no cover - start raises

    asyncio.run(main())


def test_leaving_the_block_on_an_error_stops_and_raises_the_error() -> None:
    release = threading.Event()
    recorder = Recorder(_held_by(release))

    system = AsyncSystem(_topology(recorder))

    async def main() -> None:
        async with system:
            for n in range(3):
                await system.publish("orders", "order.placed", n)
            # The handler holds event 0 until the stop has begun.
            threading.Thread(target=_release_when_stopping, args=(system, release)).start()
            raise RuntimeError("request failed")

    with pytest.raises(RuntimeError, match="request failed"):
        asyncio.run(main())
    assert system.state == "stopped"
    assert _publishing_threads() == []


def _release_when_stopping(system: AsyncSystem, release: threading.Event) -> None:
    wait_for(lambda: system.state != "running", timeout=10)
    release.set()
