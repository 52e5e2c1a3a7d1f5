"""Request-reply: system.request publishes an event and returns the reply a handler returned."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import reactor
from reactor import AsyncSystem, Event, Topology
from reactor.testing import wait_for

pytestmark = pytest.mark.timeout(60)


def price(event: Event) -> Event:
    return event.reply({"sku": event.data["sku"], "price": len(event.data["sku"])})


def _shop(backend: str) -> Topology:
    topo = Topology("shop")
    topo.channel("prices", backend=backend)
    topo.consumer("pricer", price, channel="prices", pattern="price.get")
    return topo


def test_a_request_returns_the_reply_of_the_handler(backend: str) -> None:
    with _shop(backend).start() as system:
        reply = system.request("prices", "price.get", {"sku": "abc"}, timeout=10)
        assert reply.topic == "price.get.reply"
        assert reply.data == {"sku": "abc", "price": 3}
        metrics = system.metrics()
        assert metrics.requests_waiting == 0
        # The reply went to the requester, not into the channel.
        assert metrics.channel("prices").published == 1


def test_many_requests_at_once_each_get_their_own_reply() -> None:
    with _shop("memory").start() as system:
        replies: dict[str, Event] = {}

        def ask(sku: str) -> None:
            replies[sku] = system.request("prices", "price.get", {"sku": sku})

        threads = [threading.Thread(target=ask, args=("x" * n,)) for n in range(1, 21)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert {sku: reply.data["price"] for sku, reply in replies.items()} == {
        "x" * n: n for n in range(1, 21)
    }


def test_a_request_without_reply_times_out_and_its_late_reply_is_dropped_and_counted() -> None:
    release = threading.Event()

    def slow(event: Event) -> Event:
        release.wait(10)
        return event.reply("too late")

    topo = Topology("late")
    topo.channel("prices")
    topo.consumer("pricer", slow, channel="prices")
    with topo.start() as system:
        with pytest.raises(reactor.RequestTimeout, match=r"no reply .* within 0.1s"):
            system.request("prices", "price.get", {"sku": "a"}, timeout=0.1)
        release.set()
        system.wait_idle(10)
        wait_for(lambda: system.metrics().late_replies == 1, timeout=5)
        assert system.metrics().requests_waiting == 0


def test_a_reply_to_a_plain_event_is_an_ordinary_follow_up() -> None:
    seen: list[Event] = []
    topo = Topology("plain")
    topo.channel("prices")
    topo.consumer("pricer", price, channel="prices", pattern="price.get")
    topo.consumer("audit", seen.append, channel="prices", pattern="price.get.reply")
    with topo.start() as system:
        system.publish("prices", "price.get", {"sku": "ab"})
        system.wait_idle(10)
    assert [e.data["price"] for e in seen] == [2]


def test_an_async_request_awaits_its_reply_without_blocking_the_loop() -> None:
    async def main() -> list[int]:
        async with AsyncSystem(_shop("memory")) as system:
            replies = await asyncio.gather(
                *(system.request("prices", "price.get", {"sku": "y" * n}) for n in range(1, 31))
            )
            with pytest.raises(reactor.RequestTimeout):
                await system.request("prices", "nobody.listens", {"sku": "z"}, timeout=0.05)
            return [reply.data["price"] for reply in replies]

    topo_prices = asyncio.run(main())
    assert topo_prices == list(range(1, 31))


WORKER = """
import os
from reactor import Topology

def price(event):
    return event.reply({"sku": event.data["sku"], "pid": os.getpid()})

topology = Topology("shop")
topology.channel("prices", backend=os.environ["PRICES_URL"])
topology.consumer("pricer", price, channel="prices")
"""


def test_a_request_over_redis_is_answered_by_a_worker_in_another_process(
    redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "pricing.py").write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "PRICES_URL": redis_url, "PYTHONPATH": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "reactor", "worker", "pricing:topology", "--no-dashboard"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        topo = Topology("shop")
        topo.channel("prices", backend=redis_url)
        with topo.start() as system:  # no consumer here: only the worker answers
            replies = [
                system.request("prices", "price.get", {"sku": f"s{n}"}, timeout=20)
                for n in range(5)
            ]
        assert [r.data["sku"] for r in replies] == [f"s{n}" for n in range(5)]
        assert {r.data["pid"] for r in replies} == {worker.pid}
    finally:
        worker.terminate()
        _, stderr = worker.communicate(timeout=20)
    assert worker.returncode == 0, stderr.decode()
