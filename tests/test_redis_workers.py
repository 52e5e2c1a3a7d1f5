"""Scale-out over Redis: worker processes share a group; a killed worker loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis_support import worker_topology

from reactor.testing import wait_for

SUPPORT = Path(__file__).with_name("redis_support.py")


def _spawn(url: str, work_s: float, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(SUPPORT.parent.parent)}
    with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, str(SUPPORT), url, str(work_s)], env=env, stderr=stderr
        )


def _client(url: str) -> Any:
    import redis  # noqa: PLC0415 - redis-py is optional

    return redis.Redis.from_url(url.split("?", maxsplit=1)[0])


@pytest.mark.timeout(60)
def test_a_killed_worker_loses_nothing_and_idempotent_effects_happen_once(
    redis_url: str, tmp_path: Path
) -> None:
    url = redis_url.replace("lease=2", "lease=0.5")
    prefix = url.split("prefix=")[1].split("&")[0]
    total = 1_000
    workers = [_spawn(url, 0.002, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        with _client(url) as client:
            stream = f"{prefix}:jobs"
            # Both workers have joined the group once Redis knows both consumers.
            wait_for(
                lambda: client.exists(stream) and len(client.xinfo_consumers(stream, "work")) == 2,
                timeout=20,
                message="workers did not start",
            )
            feeder = worker_topology(url, events=total).start(only={"feed"})
            try:
                wait_for(lambda: client.llen(f"{prefix}:done") >= 150, timeout=20)
                workers[0].send_signal(signal.SIGKILL)  # mid-stream, holding entries
                workers[0].wait(10)
                wait_for(
                    lambda: client.hlen(f"{prefix}:effects") == total,
                    timeout=30,
                    message="the surviving worker did not take over",
                )
                feeder.wait_idle(20)  # every group backlog settled, in Redis
            finally:
                feeder.stop(timeout=10)
            effects = client.hgetall(f"{prefix}:effects")
            done = [d.decode() for d in client.lrange(f"{prefix}:done", 0, -1)]
            assert client.xpending(stream, "work")["pending"] == 0
        workers[1].send_signal(signal.SIGTERM)
        assert workers[1].wait(20) == 0, (tmp_path / "worker1.log").read_text()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    assert len(effects) == total  # every event handled at least once
    pids = {pid.decode() for pid in effects.values()}
    assert pids == {str(workers[0].pid), str(workers[1].pid)}, "both workers must have worked"
    duplicates = len(done) - len(set(done))
    # Only an event the killed worker finished but had not yet recorded as handled can
    # run twice: the kill lands between one handler's effect and its dedup record.
    assert duplicates <= 1, f"{duplicates} events handled twice"


@pytest.mark.timeout(120)
def test_a_worker_killed_five_times_dead_letters_nothing(redis_url: str, tmp_path: Path) -> None:
    # Default delivery settings (max_deliveries=5): a worker killed five times, restarted
    # each time under the same name (so it re-reads its own pending entries) while the
    # other worker claims what it held. Every event is handled: none was charged an
    # attempt for each kill that found it in a prefetch window.
    url = redis_url.replace("lease=2", "lease=0.5")
    prefix = url.split("prefix=")[1].split("&")[0]
    total = 1_000
    stream = f"{prefix}:jobs"
    logs = [tmp_path / f"worker{i}.log" for i in range(7)]
    # Slow enough that the backlog outlasts five victims' starts: each must find work.
    steady = _spawn(url, 0.02, logs[0])
    killed: list[subprocess.Popen[bytes]] = []
    last: subprocess.Popen[bytes] | None = None
    try:
        with _client(url) as client:
            wait_for(lambda: client.exists(stream), timeout=20, message="worker did not start")
            feeder = worker_topology(url, events=total).start(only={"feed"})
            try:
                for kill in range(5):
                    victim = _spawn(f"{url}&worker=victim", 0.004, logs[kill + 1])
                    killed.append(victim)
                    # It has joined and handled events of its own, with more in flight.
                    wait_for(
                        lambda victim=victim: (
                            str(victim.pid).encode() in client.hvals(f"{prefix}:effects")
                        ),
                        timeout=30,
                        message=f"kill {kill}: the victim never handled anything",
                    )
                    victim.send_signal(signal.SIGKILL)
                    victim.wait(10)
                # Its last life takes back what the fifth one held, and helps finish.
                last = _spawn(f"{url}&worker=victim", 0.002, logs[6])
                wait_for(
                    lambda: client.hlen(f"{prefix}:effects") == total,
                    timeout=60,
                    message="not every event was handled (some dead-lettered?)",
                )
                feeder.wait_idle(30)
            finally:
                feeder.stop(timeout=10)
            assert client.xpending(stream, "work")["pending"] == 0
            assert client.hlen(f"{stream}:attempts:work") == 0
        for worker, log in ((steady, logs[0]), (last, logs[6])):
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0, log.read_text()
    finally:
        for worker in [steady, *killed, *([last] if last is not None else [])]:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    assert not any("DeliveryAbandoned" in log.read_text() for log in (logs[0], logs[6]))
