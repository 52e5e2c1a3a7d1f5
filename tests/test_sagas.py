"""Sagas on every backend: steps in order, compensation in reverse, timeouts, stuck sagas,
resends after a restart, declarations in Python and TOML.

Each participant's answer is a pure function of the instance's data and the step
(``Shop``), so the outcome of every saga is known before it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

import reactor
from reactor import Event, Retry, SagaInstance, Topology
from reactor.channels.backend import ChannelConfig, ChannelServices
from reactor.channels.registry import backend_for
from reactor.channels.sagas import KeepsSagas, decode_instance, encode_instance
from reactor.errors import TopologyError, UnknownSagaError
from reactor.messages import lifecycle
from reactor.runtime.sagas import SAGA_HEADER, STEP_HEADER
from reactor.testing import FakeClock, Recorder, wait_for

STEPS = ("reserve", "charge", "ship")


class Shop:
    """The participants: each answers its command, failing the steps the data names.

    ``data["fail"]`` names the step whose action gets an error reply; ``data["silent"]``
    the step that never answers (a lost reply). Every command handled is recorded in
    order, as ``(instance, topic)``.
    """

    def __init__(self) -> None:
        self.handled: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> Event | None:
        with self._lock:
            self.handled.append((str(event.correlation_id), event.topic))
        step = event.headers[STEP_HEADER]
        if event.topic.endswith(".undo"):
            return event.reply({f"{step}_undone": True})
        if event.data.get("silent") == step:
            return None
        if event.data.get("fail") == step:
            return event.reply({"why": f"{step} refused"}, topic=f"{event.topic}.failed")
        return event.reply({step: "ok"})

    def of(self, instance: str) -> list[str]:
        with self._lock:
            return [topic for who, topic in self.handled if who == instance]


def shop(
    backend: str,
    *,
    timeout: float | None = None,
    compensation: Any = None,
    **saga_options: Any,
) -> tuple[Topology, Shop]:
    """Three command steps, ``<step>.do`` undone by ``<step>.undo``."""
    topo = Topology("shop")
    topo.channel("orders", backend=backend)
    saga = topo.saga("order", channel="orders", start_on="order.placed", **saga_options)
    for step in STEPS:
        undo = compensation if compensation is not None and step == "reserve" else f"{step}.undo"
        saga.step(step, action=f"{step}.do", compensation=undo, timeout=timeout)
    participants = Shop()
    patterns = [f"{step}.{kind}" for step in STEPS for kind in ("do", "undo")]
    topo.consumer("shop", participants, channel="orders", pattern=patterns)
    return topo, participants


def watch(topo: Topology) -> Recorder:
    """Records the ``$system.saga.*`` events and dead letters of ``topo``."""
    recorder = Recorder()
    topo.consumer(
        "watch",
        recorder,
        channel=lifecycle.SYSTEM_CHANNEL,
        pattern=["$system.saga.#", lifecycle.DEADLETTER],
    )
    return recorder


def final(system: reactor.System, instance: str, timeout: float = 10.0) -> SagaInstance:
    """The instance once it is final (completed, compensated or stuck)."""

    def done() -> SagaInstance | None:
        found = [r for r in system.sagas("order") if r.id == instance]
        return found[0] if found and found[0].step is None else None

    result: SagaInstance = wait_for(done, timeout, message=f"saga {instance} never ended")
    return result


def advancing(clock: FakeClock, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Wait for ``condition``, moving the fake clock a second forward at each look."""

    def moved() -> Any:
        result = condition()
        if not result:
            clock.advance(1.0)
        return result

    return wait_for(moved, timeout)


# -- running on every backend --------------------------------------------------------------


def test_a_saga_takes_its_steps_in_order_and_gathers_the_replies(backend: str) -> None:
    topo, participants = shop(backend)
    seen = watch(topo)
    with topo.start() as system:
        instance = system.start_saga("order", {"order": 7})
        record = final(system, instance)
        system.wait_idle(10)
        assert record.state == "completed"
        assert dict(record.data) == {"order": 7, "reserve": "ok", "charge": "ok", "ship": "ok"}
        assert [step.status for step in record.steps] == ["done"] * 3
        assert [step.attempts for step in record.steps] == [1, 1, 1]
        assert record.resent == 0
        assert participants.of(instance) == ["reserve.do", "charge.do", "ship.do"]
        metrics = system.metrics().sagas
        assert [(m.name, m.channel, m.completed, m.active) for m in metrics] == [
            ("order", "orders", 1, 0)
        ]
        wait_for(lambda: len(seen) >= 2)
        assert [(e.topic, e.data["instance"]) for e in seen.events] == [
            (lifecycle.SAGA_STARTED, instance),
            (lifecycle.SAGA_COMPLETED, instance),
        ]


def test_commands_carry_the_instance_as_correlation_id_and_key(backend: str) -> None:
    topo, _ = shop(backend)
    commands = Recorder()
    topo.consumer("spy", commands, channel="orders", pattern="*.do")
    with topo.start() as system:
        start = system.publish("orders", "order.placed", {"order": 1})
        final(system, start.id)
        system.wait_idle(10)
    assert [(e.correlation_id, e.key, e.headers[SAGA_HEADER]) for e in commands.events] == [
        (start.id, start.id, "order")
    ] * 3
    assert commands.events[0].causation_id == start.id


@pytest.mark.parametrize("failing", [1, 2, 3])
def test_a_failed_step_compensates_the_completed_ones_in_reverse_order(
    backend: str, failing: int
) -> None:
    topo, participants = shop(backend)
    seen = watch(topo)
    with topo.start() as system:
        step = STEPS[failing - 1]
        instance = system.start_saga("order", {"fail": step})
        record = final(system, instance)
        system.wait_idle(10)
    assert record.state == "compensated"
    done = list(STEPS[: failing - 1])
    assert participants.of(instance) == [
        *(f"{s}.do" for s in STEPS[:failing]),
        *(f"{s}.undo" for s in reversed(done)),
    ]
    statuses = [s.status for s in record.steps]
    assert statuses == ["compensated"] * len(done) + ["failed"] + ["pending"] * (3 - failing)
    assert record.error is not None
    assert f"step {step!r}" in record.error
    assert seen.events[-1].topic == lifecycle.SAGA_COMPENSATED


def test_a_participant_that_gives_up_on_a_command_fails_its_step_without_a_timeout(
    backend: str,
) -> None:
    # Default settings: no step timeout, max_deliveries 5. The participant raises on
    # every delivery of charge.do (on its own channel); once it dead-letters the
    # command it answers the saga with the step's failure topic, so the saga
    # compensates instead of waiting for ever.
    topo = Topology("shop")
    topo.channel("orders", backend=backend)
    topo.channel("payments", backend=backend)
    saga = topo.saga("order", channel="orders", start_on="order.placed")
    saga.step("reserve", action="stock.reserve", compensation="stock.release")
    saga.step("charge", action="charge.do", channel="payments")
    stock = Recorder(lambda event: event.reply({"held": True}))
    topo.consumer("stock", stock, channel="orders", pattern="stock.*")
    tries: list[str] = []

    def pay(event: Event) -> None:
        tries.append(event.id)
        raise ConnectionError("gateway down")

    topo.consumer("pay", pay, channel="payments", pattern="charge.do")
    with topo.start() as system:
        record = final(system, system.start_saga("order", {}), timeout=30)
        system.wait_idle(10)
        letters = system.dead_letters("payments")
    assert record.state == "compensated"
    assert [s.status for s in record.steps] == ["compensated", "failed"]
    assert record.steps[1].error is not None
    assert "ConnectionError: gateway down" in record.steps[1].error
    assert [e.topic for e in stock.events] == ["stock.reserve", "stock.release"]
    assert len(tries) == 5  # every delivery the defaults allow, then the answer
    assert len(set(tries)) == 1
    assert [(letter.event.topic, letter.error_type) for letter in letters] == [
        ("charge.do", "ConnectionError")
    ]


def test_metrics_keep_the_last_saga_counts_while_redis_is_unreachable(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis  # noqa: PLC0415 - redis-py is optional

    from reactor.channels.redis.client import RedisClient  # noqa: PLC0415 - redis only

    topo, _ = shop(redis_url)
    with topo.start() as system:
        final(system, system.start_saga("order", {}))
        assert system.metrics().sagas[0].completed == 1

        def unreachable(*args: Any) -> dict[str, int]:
            raise redis.ConnectionError("Connection refused")

        monkeypatch.setattr(RedisClient, "saga_counts", unreachable)
        assert system.metrics().sagas[0].completed == 1  # a snapshot, not an exception
        monkeypatch.undo()
        system.wait_idle(10)


def test_a_function_step_runs_in_the_saga_and_its_result_is_gathered(backend: str) -> None:
    calls: list[str] = []

    def price(data: Any) -> dict[str, int]:
        calls.append("price")
        return {"total": data["qty"] * 3}

    def unprice(data: Any) -> None:
        calls.append(f"unprice {data['total']}")

    def refuse(data: Any) -> None:
        raise ValueError("card declined")

    topo = Topology("shop")
    topo.channel("orders", backend=backend)
    saga = topo.saga("order", channel="orders", start_on="order.placed")
    saga.step("price", action=price, compensation=unprice)
    saga.step("charge", action=refuse)
    with topo.start() as system:
        instance = system.start_saga("order", {"qty": 2})
        record = final(system, instance)
    assert record.state == "compensated"
    assert calls == ["price", "unprice 6"]
    assert record.steps[1].status == "failed"
    assert record.steps[1].error == "ValueError: card declined"


def test_a_step_without_reply_times_out_and_is_compensated_with_the_done_ones(
    backend: str,
) -> None:
    clock = FakeClock()
    topo, participants = shop(backend, timeout=5)
    with topo.start(clock=clock) as system:
        instance = system.start_saga("order", {"silent": "charge"})
        wait_for(lambda: participants.of(instance) == ["reserve.do", "charge.do"])
        record = system.sagas("order", state="running")[0]
        assert record.step == "charge"
        # Timed out: the charge may have happened, so it is undone too, before the reserve.
        record = advancing(clock, lambda: system.sagas("order", state="compensated"))[0]
        system.wait_idle(10)
    assert participants.of(instance) == ["reserve.do", "charge.do", "charge.undo", "reserve.undo"]
    assert [s.status for s in record.steps] == ["compensated", "compensated", "pending"]
    assert record.error == "step 'charge': no reply within 5s"


def test_a_compensation_that_keeps_failing_leaves_the_saga_stuck_with_a_stored_dead_letter(
    backend: str,
) -> None:
    attempts: list[int] = []
    healed = threading.Event()

    def release(data: Any) -> None:
        attempts.append(1)
        if not healed.is_set():
            raise ConnectionError("warehouse unreachable")

    clock = FakeClock()
    topo, _ = shop(backend, compensation=release, max_attempts=3, retry=Retry(min_s=1, max_s=1))
    seen = watch(topo)
    with topo.start(clock=clock) as system:
        instance = system.start_saga("order", {"fail": "charge"})
        record = advancing(clock, lambda: system.sagas("order", state="stuck"))[0]
        letters = wait_for(lambda: system.dead_letters("orders", group="$saga.order"))
        wait_for(lambda: any(e.topic == lifecycle.DEADLETTER for e in seen.events))
        assert system.metrics().sagas[0].stuck == 1
        assert len(attempts) == 3
        assert record.id == instance
        assert record.steps[0].status == "stuck"
        assert record.steps[0].compensations == 3
        assert record.steps[0].error == "ConnectionError: warehouse unreachable"
        assert len(letters) == 1
        (letter,) = letters
        assert letter.error_type == "SagaStuck"
        assert letter.event is not None
        assert letter.event.id == record.letter
        for part in ("saga 'order'", f"instance {instance}", "step 'reserve'", "unreachable"):
            assert part in letter.message
        published = next(e for e in seen.events if e.topic == lifecycle.DEADLETTER).data
        assert (published["error_type"], published["group"]) == ("SagaStuck", "$saga.order")
        stuck = [e for e in seen.events if e.topic == lifecycle.SAGA_STUCK]
        assert [(e.data["instance"], e.data["step"]) for e in stuck] == [(instance, "reserve")]

        # Redriven once the warehouse is back: the compensation is tried again, and succeeds.
        healed.set()
        assert system.redrive("orders", [letter.id]) == 1
        record = advancing(clock, lambda: system.sagas("order", state="compensated"))[0]
        assert not system.dead_letters("orders", group="$saga.order")
    assert len(attempts) == 4
    assert record.id == instance
    assert record.letter is None
    assert [s.status for s in record.steps] == ["compensated", "failed", "pending"]
    assert record.steps[0].compensations == 1


def test_a_stuck_saga_whose_letter_is_redriven_and_fails_again_is_stuck_again(
    backend: str,
) -> None:
    def release(data: Any) -> None:
        raise ConnectionError("warehouse unreachable")

    clock = FakeClock()
    topo, _ = shop(backend, compensation=release, max_attempts=2, retry=Retry(min_s=1, max_s=1))
    with topo.start(clock=clock) as system:
        system.start_saga("order", {"fail": "charge"})
        advancing(clock, lambda: system.sagas("order", state="stuck"))
        (letter,) = wait_for(lambda: system.dead_letters("orders", group="$saga.order"))
        assert system.redrive("orders", [letter.id]) == 1
        wait_for(lambda: system.sagas("order", state="compensating"))
        advancing(clock, lambda: system.sagas("order", state="stuck"))
        (again,) = wait_for(lambda: system.dead_letters("orders", group="$saga.order"))
        assert again.error_type == "SagaStuck"
        assert "failed 2 times" in again.message
        # Purged (undone by hand): the saga stays stuck, and nothing comes again.
        assert system.purge("orders", group="$saga.order") == 1
        assert not system.dead_letters("orders", group="$saga.order")
        system.wait_idle(10)
        (record,) = system.sagas("order")
    assert record.state == "stuck"
    assert record.steps[0].compensations == 2


def test_a_compensation_that_fails_once_is_retried_and_succeeds(backend: str) -> None:
    failures = [1]

    def release(data: Any) -> None:
        if failures:
            failures.pop()
            raise ConnectionError("flaky")

    clock = FakeClock()
    topo, _ = shop(backend, compensation=release, retry=Retry(min_s=2, max_s=2))
    with topo.start(clock=clock) as system:
        system.start_saga("order", {"fail": "ship"})
        record = advancing(clock, lambda: system.sagas("order", state="compensated"))[0]
    assert record.steps[0].compensations == 2
    assert [s.status for s in record.steps] == ["compensated", "compensated", "failed"]


def test_many_sagas_at_once_each_end_as_their_data_says(backend: str) -> None:
    topo, participants = shop(backend)
    with topo.start() as system:
        plans = {
            system.start_saga("order", {"fail": STEPS[n % 4 - 1]} if n % 4 else {}): n % 4
            for n in range(40)
        }
        wait_for(lambda: not system.sagas("order", state="running"), 20)
        wait_for(lambda: not system.sagas("order", state="compensating"), 20)
        system.wait_idle(10)
        records = {r.id: r for r in system.sagas()}
        counts = system.metrics().sagas[0]
    assert set(records) == set(plans)
    for instance, failing in plans.items():
        assert records[instance].state == ("compensated" if failing else "completed")
        handled = participants.of(instance)
        assert len(handled) == len(set(handled)), f"{instance}: a command handled twice"
    assert (counts.completed, counts.compensated) == (10, 30)


def test_a_step_sends_its_command_to_its_own_channel_and_hears_back_on_the_sagas(
    backend: str,
) -> None:
    topo = Topology("shop")
    topo.channel("orders", backend=backend)
    topo.channel("stock", backend=backend)
    saga = topo.saga("order", channel="orders", start_on="order.placed")
    saga.step("reserve", action="stock.reserve", compensation="stock.release", channel="stock")
    saga.step("charge", action="charge.do")
    stock = Recorder(lambda event: event.reply({"held": event.topic}))
    topo.consumer("stock", stock, channel="stock", output="orders")
    topo.consumer(
        "pay",
        lambda event: event.reply({}, topic="charge.do.failed"),
        channel="orders",
        pattern="charge.do",
    )
    with topo.start() as system:
        record = final(system, system.start_saga("order", {}))
        system.wait_idle(10)
    assert record.state == "compensated"
    assert [e.topic for e in stock.events] == ["stock.reserve", "stock.release"]
    assert dict(record.data) == {"held": "stock.reserve"}


# -- resuming -----------------------------------------------------------------------------


def _waiting_on_its_first_step(url: str) -> str:
    """Start an instance on ``url`` that nobody answers; stop once its first command is sent."""
    quiet = Topology("shop")
    quiet.channel("orders", backend=url)
    saga = quiet.saga("order", channel="orders", start_on="order.placed")
    for step in STEPS:
        saga.step(step, action=f"{step}.do", compensation=f"{step}.undo")
    with quiet.start() as system:
        instance = system.start_saga("order", {})
        wait_for(lambda: [r for r in system.sagas("order") if r.steps[0].sent])
        system.wait_idle(10)
    return instance


def _rewrite(
    url: str, instance: str, change: Callable[[SagaInstance], SagaInstance]
) -> SagaInstance:
    """Store ``change(record)`` for ``instance``, as a process that died part way left it.

    Returns the record as it was stored before.
    """
    channel = backend_for(url).open(
        ChannelConfig("orders", url), ChannelServices(FakeClock(), lambda event: None)
    )
    try:
        assert isinstance(channel, KeepsSagas)
        store = channel.saga_store("order")
        record = store.load(instance)
        assert record is not None
        store.save(change(record))
        return record
    finally:
        channel.close()


def test_a_restart_resumes_a_saga_where_its_reply_was_waited_for(
    durable: str,
) -> None:
    url = durable
    instance = _waiting_on_its_first_step(url)
    topo, participants = shop(url)
    with topo.start() as system:
        record = final(system, instance)
    assert record.state == "completed"
    assert participants.of(instance) == ["reserve.do", "charge.do", "ship.do"]
    assert record.resent == 0


def test_an_action_recorded_but_not_known_sent_is_sent_again_once_and_said(
    durable: str,
) -> None:
    url = durable
    instance = _waiting_on_its_first_step(url)
    # As if the process died between recording the intent and recording the send.
    _rewrite(url, instance, lambda record: record.with_step(0, sent=False))
    topo, participants = shop(url)
    seen = watch(topo)
    with topo.start() as system:
        record = final(system, instance)
        wait_for(lambda: any(e.topic == lifecycle.SAGA_COMPLETED for e in seen.events))
    assert record.state == "completed"
    assert record.steps[0].resent == 1
    assert record.resent == 1
    # The command went out twice with one id: the participant saw it twice (it is not
    # idempotent here), and the saga moved on once.
    assert participants.of(instance) == ["reserve.do", "reserve.do", "charge.do", "ship.do"]
    resent = [e.data for e in seen.events if e.topic == lifecycle.SAGA_RESENT]
    assert [(d["instance"], d["step"], d["kind"]) for d in resent] == [
        (instance, "reserve", "action")
    ]


def test_a_step_timeout_survives_a_restart(
    durable: str,
) -> None:
    url = durable
    topo, participants = shop(url, timeout=30)
    with topo.start(clock=FakeClock()) as system:
        instance = system.start_saga("order", {"silent": "charge"})
        wait_for(lambda: participants.of(instance) == ["reserve.do", "charge.do"])
        system.wait_idle(10)
    # Stopped 10 s into the charge's 30 s; the restarted process lets the rest run out.
    topo, participants = shop(url, timeout=30)
    clock = FakeClock(wall=1_700_000_010.0)
    with topo.start(clock=clock) as system:
        clock.advance(19)
        system.wait_idle(10)
        assert [r.state for r in system.sagas("order")] == ["running"]
        clock.advance(2)  # due 30 s after the send: 20 s after the restart, not 30 s
        record = wait_for(lambda: system.sagas("order", state="compensated"))[0]
    assert record.error == "step 'charge': no reply within 30s"
    assert participants.of(instance) == ["charge.undo", "reserve.undo"]


def test_a_stuck_saga_without_its_letter_at_restart_gets_one(
    durable: str,
) -> None:
    url = durable
    healed = threading.Event()

    def release(data: Any) -> None:
        if not healed.is_set():
            raise ConnectionError("warehouse unreachable")

    topo, _ = shop(url, compensation=release, max_attempts=1)
    with topo.start() as system:
        instance = system.start_saga("order", {"fail": "charge"})
        wait_for(lambda: system.dead_letters("orders", group="$saga.order"))
        assert system.purge("orders", group="$saga.order") == 1
        system.wait_idle(10)
    # As if the process died after recording it stuck, before its letter was on its way.
    stored = _rewrite(url, instance, lambda record: attrs.evolve(record, letter=None))
    assert stored.state == "stuck"
    topo, _ = shop(url, compensation=release, max_attempts=1)
    with topo.start() as system:
        (letter,) = wait_for(lambda: system.dead_letters("orders", group="$saga.order"))
        assert letter.error_type == "SagaStuck"
        assert f"instance {instance}" in letter.message
        healed.set()
        assert system.redrive("orders", [letter.id]) == 1
        wait_for(lambda: final(system, instance).state == "compensated")
        record = final(system, instance)
    assert record.steps[0].status == "compensated"


def test_only_the_latest_finished_instances_are_kept(backend: str) -> None:
    def release(data: Any) -> None:
        if data.get("stuck"):
            raise ConnectionError("warehouse unreachable")

    topo, _ = shop(backend, compensation=release, keep_finished=3, max_attempts=1)
    clock = FakeClock()
    with topo.start(clock=clock) as system:
        stuck = system.start_saga("order", {"fail": "charge", "stuck": True})
        assert final(system, stuck).state == "stuck"
        ids = []
        for n in range(6):
            clock.advance(1.0)  # distinct start times: "oldest" is well defined
            ids.append(system.start_saga("order", {"n": n, "fail": "ship" if n % 2 else None}))
            assert final(system, ids[-1]).state == ("compensated" if n % 2 else "completed")
        system.wait_idle(10)
        kept = system.sagas("order")
        counts = system.metrics().sagas[0]
    # The three latest finished, and the stuck one (never deleted: it needs a hand).
    assert [r.id for r in kept] == [stuck, *ids[-3:]]
    assert (counts.completed, counts.compensated, counts.stuck) == (1, 2, 1)


# -- values and errors ----------------------------------------------------------------------


def test_sagas_lists_frozen_instances_by_name_and_state() -> None:
    topo, _ = shop("memory")
    with topo.start() as system:
        a = system.start_saga("order", {})
        b = system.start_saga("order", {"fail": "reserve"})
        final(system, a)
        final(system, b)
        assert [r.id for r in system.sagas(state="completed")] == [a]
        assert [r.id for r in system.sagas("order", state="compensated")] == [b]
        assert {r.id for r in system.sagas()} == {a, b}
        record = system.sagas(state="completed")[0]
        with pytest.raises(AttributeError):
            record.state = "running"  # type: ignore[misc]
        with pytest.raises(
            UnknownSagaError, match=r"no saga named 'ordr'; did you mean 'order'\? \(sagas: order\)"
        ):
            system.sagas("ordr")
        with pytest.raises(UnknownSagaError, match="no saga named 'nope'"):
            system.start_saga("nope", {})
        with pytest.raises(reactor.UsageError, match="unknown saga state 'done'"):
            system.sagas(state="done")


def test_a_record_survives_its_stored_form() -> None:
    topo, _ = shop("memory")
    with topo.start() as system:
        instance = system.start_saga("order", {"when": 1.5, "tags": ["a", "b"]})
        record = final(system, instance)
    assert decode_instance(encode_instance(record), "test") == record


def test_every_problem_of_a_saga_is_reported_at_once() -> None:
    async def later(data: Any) -> None:
        return None

    topo = Topology("shop")
    topo.channel("orders")
    saga = topo.saga(
        "bad name", channel="ordres", start_on="order..placed", max_attempts=0, keep_finished=0
    )
    saga.step("a", action="x.do", timeout=-1)
    saga.step("a", action=later, success="a.ok")
    topo.saga("empty", channel="orders", start_on="go")
    saga.step("c", action="c.do", channel="stok")
    with pytest.raises(TopologyError) as caught:
        topo.validate()
    text = str(caught.value)
    for expected in (
        "saga 'bad name': a saga name is one word",
        "saga 'bad name': start_on: invalid topic 'order..placed'",
        "max_attempts must be a positive integer",
        "keep_finished must be a positive integer",
        "unknown channel 'ordres'; did you mean 'orders'?",
        "declare it with topology.channel('ordres')",
        "step 'a': timeout must be a positive number of seconds",
        "step 'a': the name is already used by another step",
        "step 'a': action is `async def`",
        "step 'a': success is set but the action is a function",
        "saga 'empty': has no steps",
        "step 'c': unknown channel 'stok'",
    ):
        assert expected in text, expected
    looping = Topology("shop")
    looping.channel("orders")
    saga = looping.saga("order", channel="orders", start_on="order.placed")
    saga.step("a", action="a.do", success="b.do")
    saga.step("b", action="b.do")
    with pytest.raises(TopologyError, match=r"action 'b\.do' is also a topic the saga takes"):
        looping.validate()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'timout'.*'timeout'"):
        saga.step("b", action="b.do", timout=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'steps'"):
        topo.saga("c", channel="orders", start_on="go", steps=[])


HANDLERS = """
def price(data):
    return {"total": 3}

def unprice(data):
    pass
"""


def test_a_saga_declared_in_toml_runs(tmp_path: Path) -> None:
    (tmp_path / "saga_fns.py").write_text(HANDLERS)
    (tmp_path / "shop.toml").write_text(
        """
[channels.orders]

[sagas.order]
channel = "orders"
start_on = "order.placed"
max_attempts = 3
keep_finished = 50
retry = { min_s = 0.5, max_s = 2.0 }

[sagas.order.steps.price]
action = "saga_fns:price"
compensation = "saga_fns:unprice"

[sagas.order.steps.reserve]
action = "reserve.do"
compensation = "reserve.undo"
timeout = 5
success = "reserve.done"
"""
    )
    topo = Topology.from_toml(tmp_path / "shop.toml")
    saga = topo.sagas["order"]
    assert (saga.max_attempts, saga.keep_finished, saga.retry.min_s) == (3, 50, 0.5)
    assert [step.name for step in saga.steps] == ["price", "reserve"]
    assert saga.steps[1].success_topic == "reserve.done"
    topo.consumer(
        "stock",
        lambda e: e.reply({"held": True}, topic="reserve.done"),
        channel="orders",
        pattern="reserve.do",
    )
    with topo.start() as system:
        record = final(system, system.start_saga("order", {}))
    assert record.state == "completed"
    assert dict(record.data) == {"total": 3, "held": True}


def test_toml_saga_problems_are_reported_on_their_lines(tmp_path: Path) -> None:
    (tmp_path / "saga_fns.py").write_text(HANDLERS)
    (tmp_path / "bad.toml").write_text(
        """[channels.orders]

[sagas.order]
channel = "ordres"
start_on = "order..placed"
colour = 1

[sagas.order.steps.reserve]
action = "stock.reserve"
compensation = "saga_fns:nothere"
timeout = -1

[sagas.order.steps.ship]
compensation = "x"
"""
    )
    with pytest.raises(TopologyError) as caught:
        Topology.from_toml(tmp_path / "bad.toml")
    problems = caught.value.problems
    expected = [
        "bad.toml: line 4: saga 'order': unknown channel 'ordres'",
        "bad.toml: line 5: saga 'order': start_on: invalid topic",
        "bad.toml: line 6: sagas.order: unknown key 'colour'",
        "bad.toml: line 10: sagas.order.steps.reserve.compensation: cannot resolve",
        "bad.toml: line 11: saga 'order' step 'reserve': timeout must be",
        "bad.toml: line 13: sagas.order.steps.ship: missing required key 'action'",
    ]
    for start in expected:
        assert any(problem.startswith(start) for problem in problems), (start, problems)
    assert len(problems) == len(expected), problems


def test_the_dashboard_shows_saga_counts_and_a_stuck_saga() -> None:
    from rich.console import Console  # noqa: PLC0415 - only this test draws

    from reactor.faces.dashboard import Dashboard  # noqa: PLC0415

    def release(data: Any) -> None:
        raise ConnectionError("warehouse unreachable")

    clock = FakeClock()
    topo, _ = shop("memory", compensation=release, max_attempts=1)
    with topo.start(clock=clock) as system:
        system.start_saga("order", {})
        system.start_saga("order", {"fail": "charge"})
        wait_for(lambda: system.sagas("order", state="stuck") and system.sagas(state="completed"))
        wait_for(lambda: any(e.topic == lifecycle.SAGA_STUCK for e in system.recent_lifecycle()))
        console = Console(width=120, record=True)
        console.print(Dashboard(system).render())
        text = console.export_text()
    assert "order: 0 running 0 compensating 1 completed 0 compensated 1 stuck" in text
    assert "saga stuck order step reserve" in text


def test_prometheus_text_counts_saga_instances_by_state() -> None:
    from reactor.faces.export import prometheus_text  # noqa: PLC0415 - only this test exports

    topo, _ = shop("memory")
    with topo.start() as system:
        final(system, system.start_saga("order", {"fail": "ship"}))
        text = prometheus_text(system.metrics())
    assert (
        'reactor_saga_instances{system="shop",saga="order",channel="orders",state="compensated"} 1'
        in text
    )
    assert (
        'reactor_saga_instances{system="shop",saga="order",channel="orders",state="running"} 0'
        in text
    )


def test_reactor_graph_draws_a_saga() -> None:
    from rich.console import Console  # noqa: PLC0415 - only this test draws

    from reactor.faces.graph import graph_mermaid, graph_tree  # noqa: PLC0415

    topo, _ = shop("memory")
    console = Console(width=120, record=True)
    console.print(graph_tree(topo))
    assert (
        "order  ⇄ orders, starts on order.placed: reserve → charge → ship" in console.export_text()
    )
    assert '<-->|"order.placed"| s_order_' in graph_mermaid(topo)
