"""Sagas killed mid-way: SIGKILL a process running sagas on a durable channel, restart it.

Every round a child process (``saga_crash_child.py``) starts a fresh range of saga
instances; the test kills it with SIGKILL at a seeded-random point (after it started
some instances, or after some reached their function step), then starts it again.
A last round runs until no instance is active. Then, from what the backend stored alone
(the sqlite file; the redis stream and the saga's hash):

* every instance whose ``start_saga()`` returned exists, and ended ``completed`` or
  ``compensated`` as its data says (none ``stuck``, none left active);
* no action was taken twice: each step's command is in the log once, or twice with
  one id when the saga's record says it sent it again (``resent``); the function
  step ran once, or again where ``resent`` says so;
* no compensation was missed: in a compensated instance every step that completed
  was undone, by its own command (or function), in reverse order.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import crashes
import pytest
from crashes import kill_rounds, published_since

from reactor import CloudEventsCodec, Codec, JsonCodec
from reactor.channels.sagas import SagaInstance, decode_instance

CHILD = Path(__file__).resolve().parent / "saga_crash_child.py"
PER_ROUND = 24
COMMANDS = {"reserve": "reserve", "charge": "charge", "ship": "ship"}  # steps that send


def _run(tmp_path: Path, seed: int, kills: int, redis_url: str | None = None) -> None:
    rng = random.Random(seed)
    db, out = tmp_path / "sagas.db", tmp_path / "effects.log"
    where = redis_url if redis_url is not None else str(db)
    # Some kills land while instances are being started, others once several have
    # passed their function step (mid-saga, commands and replies in flight).
    points = [(rng.choice(["P ", "F "]), rng.randrange(0, PER_ROUND // 2)) for _ in range(kills)]
    kill_rounds(
        CHILD,
        where,
        out,
        kills=kills,
        per_round=PER_ROUND,
        ready=lambda r, lines: published_since(lines, r, points[r][0]) >= points[r][1],
        finish_s=180,
    )
    lines = crashes.lines(out)
    texts, bodies = _stored(db) if redis_url is None else _stored_in_redis(redis_url)
    # The redis backend writes CloudEvents; the sqlite log, reactor's JSON.
    _check(texts, bodies, lines, JsonCodec() if redis_url is None else CloudEventsCodec())


def _stored(db: Path) -> tuple[list[str], list[bytes]]:
    """The saga records and the events of the sqlite log, in log order."""
    with sqlite3.connect(db) as conn:
        texts = [text for (text,) in conn.execute("SELECT record FROM reactor_sagas")]
        bodies = [body for (body,) in conn.execute("SELECT body FROM reactor_log ORDER BY seq")]
    return texts, bodies


def _stored_in_redis(url: str) -> tuple[list[bytes], list[bytes]]:
    """The saga records and the events of the stream, in stream order."""
    import redis  # noqa: PLC0415 - redis-py is optional

    prefix = url.split("prefix=")[1].split("&", maxsplit=1)[0]
    client = redis.Redis.from_url(url.split("?", maxsplit=1)[0])
    try:
        texts = list(client.hvals(f"{prefix}:orders:saga:order"))
        bodies = [fields[b"event"] for _, fields in client.xrange(f"{prefix}:orders")]
    finally:
        client.close()
    return texts, bodies


def _check(texts: list[Any], bodies: list[bytes], lines: list[str], codec: Codec) -> None:
    records = {r.id: r for r in (decode_instance(text, "test") for text in texts)}
    # (instance, topic) -> the ids of the commands in the log, in log order.
    commands: dict[tuple[str, str], list[str]] = defaultdict(list)
    order: dict[str, list[str]] = defaultdict(list)  # instance -> command topics, in order
    for body in bodies:
        event = codec.decode(body)
        if "reactor-saga" in event.headers:
            commands[(str(event.correlation_id), event.topic)].append(event.id)
            order[str(event.correlation_id)].append(event.topic)
    functions = Counter(tuple(line.split()) for line in lines if line[:2] in ("F ", "G "))

    started = {line.split()[1]: int(line.split()[2]) for line in lines if line.startswith("P ")}
    assert set(started) <= set(records), "an instance whose start returned was never started"
    for instance, record in records.items():
        _check_instance(record, commands, order[instance], functions)


def _check_instance(
    record: SagaInstance,
    commands: dict[tuple[str, str], list[str]],
    order: list[str],
    functions: Counter[tuple[str, ...]],
) -> None:
    n = record.data["n"]
    failing = "charge" if n % 4 == 0 else "ship" if n % 5 == 0 else None
    expected = "completed" if failing is None else "compensated"
    assert record.state == expected, (record.id, n, record.state, record.steps)
    steps = {step.name: step for step in record.steps}
    for name, step in steps.items():
        resent = step.resent
        if name in COMMANDS:
            sent = commands[(record.id, f"{name}.do")]
            assert len(set(sent)) == (1 if step.attempts else 0), (record.id, name, sent)
            assert len(sent) <= 1 + resent, (
                f"{record.id}: {name} sent {len(sent)}x, resent {resent}"
            )
            undone = commands[(record.id, f"{name}.undo")]
            assert len(undone) <= step.compensations + resent, (record.id, name, undone)
        else:  # the function step: it writes F (action) and G (compensation) lines
            ran = functions[("F", record.id)] if "instance_of" in record.data else 0
            assert ran <= 1 + resent, f"{record.id}: function step ran {ran}x, resent {resent}"
        if expected == "completed":
            assert step.status == "done", (record.id, name, step)
    if failing is None:
        return
    # Every step before the failing one completed and was undone, the last one first.
    before = [s.name for s in record.steps[: [s.name for s in record.steps].index(failing)]]
    assert [steps[name].status for name in before] == ["compensated"] * len(before), record.steps
    assert steps[failing].status == "failed"
    undos = [topic.removesuffix(".undo") for topic in order if topic.endswith(".undo")]
    undos = list(dict.fromkeys(undos))  # a resent compensation counts once
    assert undos == [name for name in reversed(before) if name in COMMANDS], (record.id, order)
    assert functions[("G", record.id)] >= 1, f"{record.id}: the function step was not undone"


def test_sagas_killed_at_random_points_resume_without_repeating_or_missing_a_step(
    tmp_path: Path,
) -> None:
    _run(tmp_path, seed=7, kills=4)


def test_sagas_on_redis_killed_at_random_points_resume_without_repeating_or_missing_a_step(
    tmp_path: Path, redis_url: str
) -> None:
    _run(tmp_path, seed=11, kills=3, redis_url=redis_url)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3))
def test_sagas_killed_often_soak(tmp_path: Path, seed: int) -> None:
    if not os.environ.get("REACTOR_SOAK"):
        pytest.skip("set REACTOR_SOAK=1 for the long saga crash soak")
    _run(tmp_path, seed=200 + seed, kills=20)
