"""Redis Streams: reactor over Redis vs a raw redis-py loop; one worker vs two.

Part 1, overhead: N events through one stream and one consumer group, with the
same batch size for XADD pipelines and XREADGROUP counts, timed from the first
publish until the last event is acked:

* ``raw``: a publisher thread XADDs pipelined batches of the same events,
  encoded with the same :class:`~reactor.CloudEventsCodec`; a consumer thread
  XREADGROUPs, decodes each entry back into an :class:`~reactor.Event` with that
  codec, calls a no-op handler and XACKs each batch. This is the baseline of the
  target: a client loop doing the same wire and event work, with none of
  reactor's runtime (as the ``sqlite`` benchmark's raw loop uses the same codec);
* ``raw-json``: the floor: CloudEvents JSON built from a dict with ``json.dumps``
  and only ``json.loads`` on the way out, with no event objects at all;
* ``reactor``: ``system.publish_many`` in batches of the same size into a
  ``redis://`` channel (``max_batch`` = batch size) and a consumer with a no-op
  handler.

Part 2, scale-out: N events are written to the stream first, then one worker
process (or two) drains the group; each event costs ``--work-ms`` of CPU in
its handler. The scale-out factor is the two-worker rate over the one-worker
rate (2.0 would be perfect).

A private ``redis-server`` is started on a free loopback port (no persistence)
unless ``--url`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks._harness import describe_machine, median_ratio
from reactor.messages.jsontext import json_text
from reactor.testing import RedisServer

TARGET_RATIO = 0.85  # on the median of the rounds (issue 13, target 4)


def _payload(n: int) -> dict[str, Any]:
    return {"order": n, "customer": f"c-{n % 97}", "amount": n * 3 % 1000}


# -- part 1 ----------------------------------------------------------------------------


def _raw_loop(
    url: str,
    events: int,
    batch: int,
    payload: Callable[[int], bytes | str],
    receive: Callable[[bytes], object],
) -> float:
    """A publisher XADDing pipelined batches, a consumer thread reading, handling, XACKing."""
    import redis  # noqa: PLC0415 - redis-py is optional

    client = redis.Redis.from_url(url)
    stream = f"raw-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, "g", id="$", mkstream=True)
    done = threading.Event()

    def consume() -> None:
        seen = 0
        while seen < events:
            reply = client.xreadgroup("g", "c1", {stream: ">"}, count=batch, block=100)
            if not reply:
                continue
            entries = reply[0][1]
            for _, fields in entries:
                receive(fields[b"event"])
            client.xack(stream, "g", *[entry_id for entry_id, _ in entries])
            seen += len(entries)
        done.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    started = time.perf_counter()
    for first in range(0, events, batch):
        pipe = client.pipeline(transaction=False)
        for n in range(first, min(events, first + batch)):
            pipe.xadd(stream, {"event": payload(n)})
        pipe.execute()
    done.wait()
    elapsed = time.perf_counter() - started
    consumer.join()
    client.delete(stream)
    client.close()
    return elapsed


def _raw(url: str, events: int, batch: int) -> float:
    """The same events and codec as reactor; decoded events go to a no-op handler."""
    from reactor import CloudEventsCodec, Event  # noqa: PLC0415 - beside redis, for symmetry

    codec = CloudEventsCodec()
    items = [Event.create("orders.created", _payload(n), source="bench") for n in range(events)]

    def handle(event: Event) -> None:
        return None

    return _raw_loop(
        url,
        events,
        batch,
        lambda n: codec.encode(items[n]),
        lambda body: handle(codec.decode(body)),
    )


def _raw_json(url: str, events: int, batch: int) -> float:
    """The floor: CloudEvents JSON from a dict with json.dumps, json.loads only."""

    def payload(n: int) -> str:
        ce = {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "bench",
            "type": "orders.created",
            "time": "2024-01-01T00:00:00Z",
            "datacontenttype": "application/json",
            "data": _payload(n),
        }
        return json.dumps(ce, separators=(",", ":"))

    return _raw_loop(url, events, batch, payload, json.loads)


def _reactor(url: str, events: int, batch: int) -> float:
    from reactor import Event, Topology  # noqa: PLC0415 - redis-py is optional

    prefix = f"b{uuid.uuid4().hex[:8]}"
    topo = Topology("bench-redis")
    topo.channel(
        "orders", backend=f"{url}?prefix={prefix}", capacity=max(10_000, 4 * batch), max_batch=batch
    )
    topo.consumer("sink", lambda event: None, channel="orders", prefetch=2 * batch)
    with topo.start() as system:
        items = [Event.create("orders.created", _payload(n), source="bench") for n in range(events)]
        started = time.perf_counter()
        for first in range(0, events, batch):
            system.publish_many("orders", items[first : first + batch], timeout=60)
        system.wait_idle(120)
        elapsed = time.perf_counter() - started
    import redis  # noqa: PLC0415 - redis-py is optional

    client = redis.Redis.from_url(url)
    client.delete(f"{prefix}:orders")
    client.close()
    return elapsed


# -- part 2 ----------------------------------------------------------------------------


def _worker_topology(url: str, work_ms: float) -> Any:
    from reactor import Event, Topology  # noqa: PLC0415 - redis-py is optional

    def work(event: Event) -> None:
        end = time.perf_counter() + work_ms / 1000
        while time.perf_counter() < end:  # CPU-bound work: what a second process is for
            pass

    topo = Topology("bench-scale")
    topo.channel("jobs", backend=url, capacity=1_000_000)
    topo.consumer("work", work, channel="jobs", prefetch=64)
    return topo


def _scale(url: str, events: int, workers: int, work_ms: float) -> float:
    import redis  # noqa: PLC0415 - redis-py is optional

    from reactor import Event  # noqa: PLC0415 - redis-py is optional
    from reactor.messages.codecs import CloudEventsCodec  # noqa: PLC0415 - redis-py is optional

    prefix = f"s{uuid.uuid4().hex[:8]}"
    channel_url = f"{url}?prefix={prefix}&start=0"
    stream = f"{prefix}:jobs"
    client = redis.Redis.from_url(url)
    client.xgroup_create(stream, "work", id="0", mkstream=True)
    codec = CloudEventsCodec()
    for first in range(0, events, 1000):
        pipe = client.pipeline(transaction=False)
        for n in range(first, min(events, first + 1000)):
            pipe.xadd(stream, {"event": codec.encode(Event.create("jobs.run", {"n": n}))})
        pipe.execute()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.redis",
                "--worker",
                channel_url,
                "--work-ms",
                str(work_ms),
            ],
            env=env,
        )
        for _ in range(workers)
    ]
    try:
        while True:
            info = client.xinfo_groups(stream)[0]
            if info["pending"] == 0 and info["lag"] == 0:
                break
            time.sleep(0.01)  # polling Redis for the end of the run
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        client.delete(stream)
        client.close()
    return elapsed


def _run_worker(url: str, work_ms: float) -> int:
    from reactor.runtime.worker import run_worker  # noqa: PLC0415 - redis-py is optional

    return run_worker(_worker_topology(url, work_ms), "work")


def main(argv: list[str]) -> int:
    """Redis Streams: reactor vs raw redis-py (same batches), and 1 vs 2 worker processes."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks redis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds of part 1 (median and best reported)"
    )
    parser.add_argument("--no-scale", action="store_true", help="skip part 2 (worker processes)")
    parser.add_argument("--scale-events", type=int, default=4_000)
    parser.add_argument("--work-ms", type=float, default=0.5)
    parser.add_argument("--url", help="use this Redis instead of a private redis-server")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _run_worker(args.worker, args.work_ms)

    server = None
    if not args.url:
        try:
            server = RedisServer()
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
        server.start()
    url = args.url or (server.url if server else "")
    try:
        print(f"redis benchmark: {describe_machine()}")
        print(f"JSON library of the codecs (both sides): {json_text('auto').library}")
        print(f"part 1: {args.events:,} events, batch {args.batch}, {args.repeat} rounds")
        raw_runs: list[float] = []
        json_runs: list[float] = []
        reactor_runs: list[float] = []
        variants = (
            ("raw", raw_runs, _raw),
            ("raw-json", json_runs, _raw_json),
            ("reactor", reactor_runs, _reactor),
        )
        for round_ in range(1, args.repeat + 1):
            for name, runs, fn in variants:
                seconds = fn(url, args.events, args.batch)
                runs.append(seconds)
                print(
                    f"  round {round_}  {name:<8} {args.events / seconds:>10,.0f} events/s "
                    f"({seconds:.3f} s)",
                    flush=True,
                )
        raw_rate = args.events / min(raw_runs)
        json_rate = args.events / min(json_runs)
        reactor_rate = args.events / min(reactor_runs)
        ratio = reactor_rate / raw_rate
        median = median_ratio(raw_runs, reactor_runs)
        verdict = "meets" if median >= TARGET_RATIO else "MISSES"
        print(f"  raw redis-py     {raw_rate:>10,.0f} events/s  (same codec and events)")
        print(f"  raw-json         {json_rate:>10,.0f} events/s  (floor: json only, no events)")
        print(f"  reactor          {reactor_rate:>10,.0f} events/s")
        print(f"  ratio (median)   {median:>10.2f}x  (target >= {TARGET_RATIO}x: {verdict})")
        print(f"  ratio (best)     {ratio:>10.2f}x")
        print(f"  vs the floor     {reactor_rate / json_rate:>10.2f}x")
        if args.no_scale:
            return 0
        print(f"part 2: {args.scale_events:,} events, {args.work_ms} ms of CPU each")
        one = min(_scale(url, args.scale_events, 1, args.work_ms) for _ in range(args.repeat))
        two = min(_scale(url, args.scale_events, 2, args.work_ms) for _ in range(args.repeat))
        print(
            f"  1 worker         {args.scale_events / one:>10,.0f} events/s "
            f"({one:.2f} s, incl. start)"
        )
        print(
            f"  2 workers        {args.scale_events / two:>10,.0f} events/s "
            f"({two:.2f} s, incl. start)"
        )
        print(f"  scale-out        {one / two:>10.2f}x")
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
