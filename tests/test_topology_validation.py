"""Topology.validate(): every problem of a builder-made topology, named, all at once."""

from __future__ import annotations

from typing import Any

import pytest

from reactor import Event, PoolScaling, Topology, TopologyError
from reactor.errors import ReactorError


def handle(event: Event) -> None:
    return None


def problems_of(topo: Topology) -> tuple[str, ...]:
    with pytest.raises(TopologyError) as info:
        topo.validate()
    return info.value.problems


def only_problem(topo: Topology) -> str:
    problems = problems_of(topo)
    assert len(problems) == 1, problems
    return problems[0]


def shop() -> Topology:
    topo = Topology("shop")
    topo.channel("orders")
    return topo


def test_a_valid_topology_passes() -> None:
    topo = shop()
    topo.channel("audit", overflow="drop_oldest")
    topo.producer("web", channel="orders", topic="orders.created", source=[{"id": 1}])
    topo.consumer("billing", handle, channel="orders", pattern="orders.#", output="audit")
    topo.consumer("watch", handle, channel="$system", pattern="$system.#")
    with topo.supervisor("tree") as sup:
        sup.pool("mailer", handle, channel="orders", pattern="orders.paid", min_size=1, max_size=3)
    topo.validate()


def test_error_is_a_reactor_error_and_a_value_error() -> None:
    topo = shop()
    topo.consumer("billing", handle, channel="nowhere")
    with pytest.raises(TopologyError) as info:
        topo.validate()
    assert isinstance(info.value, ReactorError)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("invalid topology: consumer 'billing': unknown channel")


@pytest.mark.parametrize(
    ("declare", "subject"),
    [
        (lambda t: t.consumer("billing", handle, channel="ordrs"), "consumer 'billing'"),
        (lambda t: t.pool("mailer", handle, channel="ordrs"), "pool 'mailer'"),
        (
            lambda t: t.producer("web", channel="ordrs", topic="orders.created", source=[]),
            "producer 'web'",
        ),
        (
            lambda t: t.consumer("billing", handle, channel="orders", output="ordrs"),
            "consumer 'billing' (output)",
        ),
    ],
)
def test_unknown_channel(declare: Any, subject: str) -> None:
    topo = shop()
    declare(topo)
    problem = only_problem(topo)
    assert problem.startswith(f"{subject}: unknown channel 'ordrs' (channels: orders)")
    assert "topology.channel('ordrs')" in problem


def test_duplicate_channel() -> None:
    topo = shop()
    topo.channel("orders")
    assert only_problem(topo) == "channel 'orders' is declared twice"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("consumer", "consumer"),
        ("consumer", "pool"),
        ("producer", "consumer"),
        ("supervisor", "pool"),
    ],
)
def test_duplicate_names(first: str, second: str) -> None:
    topo = shop()
    declare = {
        "consumer": lambda: topo.consumer("billing", handle, channel="orders"),
        "pool": lambda: topo.pool("billing", handle, channel="orders", group="other"),
        "producer": lambda: topo.producer(
            "billing", channel="orders", topic="orders.created", source=[]
        ),
        "supervisor": lambda: topo.supervisor("billing"),
    }
    declare[first]()
    declare[second]()
    problems = problems_of(topo)
    assert (
        f"{second} 'billing': the name is already used by a {first}; names must be unique"
        in problems
    )


def test_bad_pattern() -> None:
    topo = shop()
    topo.consumer("billing", handle, channel="orders", pattern=["orders.#", "orders..paid"])
    problem = only_problem(topo)
    assert problem.startswith("consumer 'billing': invalid pattern 'orders..paid'")
    assert "word 2 is empty" in problem


def test_bad_producer_topic() -> None:
    topo = shop()
    topo.producer("web", channel="orders", topic="orders.*", source=[])
    problem = only_problem(topo)
    assert problem.startswith("producer 'web': invalid topic 'orders.*'")


def test_missing_handler_when_decorator_never_applied() -> None:
    topo = shop()
    topo.consumer("billing", channel="orders")  # returns a decorator that is never used
    problem = only_problem(topo)
    assert problem == "consumer 'billing': has no handler; pass handler= or use it as a decorator"


def test_decorator_supplies_the_handler() -> None:
    topo = shop()

    @topo.consumer("billing", channel="orders")
    def bill(event: Event) -> None:
        return None

    topo.validate()
    assert topo.consumers()[0].handler is bill


def test_handler_class_without_handle() -> None:
    class NoHandle:
        pass

    topo = shop()
    topo.consumer("billing", NoHandle, channel="orders")
    assert (
        only_problem(topo)
        == "consumer 'billing': handler class NoHandle has no handle(event) method"
    )


def test_bad_overflow() -> None:
    topo = Topology()
    topo.channel("orders", overflow="spill")  # type: ignore[arg-type]
    problem = only_problem(topo)
    assert problem.startswith("channel 'orders': unknown overflow policy 'spill'")
    assert "block, drop_oldest, drop_newest, reject" in problem


def test_bad_channel_backend_and_capacity() -> None:
    topo = Topology()
    topo.channel("orders", backend="kafka", capacity=0)
    backend, capacity = problems_of(topo)
    assert backend.startswith("channel 'orders': unknown backend 'kafka'; use one of ")
    assert {"memory", "sqlite"} <= set(backend.rsplit("use one of ", 1)[1].split(", "))
    assert capacity == "channel 'orders': capacity must be a positive integer, got 0"


def test_group_members_with_different_patterns() -> None:
    topo = shop()
    topo.consumer("billing-1", handle, channel="orders", group="billing", pattern="orders.#")
    topo.consumer("billing-2", handle, channel="orders", group="billing", pattern="orders.paid")
    problem = only_problem(topo)
    assert problem.startswith("consumer 'billing-2': shares group 'billing' on channel 'orders'")
    assert "'billing-1'" in problem
    assert "members of a group must subscribe alike" in problem


def test_same_group_name_on_different_channels_is_fine() -> None:
    topo = shop()
    topo.channel("audit")
    topo.consumer("a", handle, channel="orders", group="g", pattern="orders.#")
    topo.consumer("b", handle, channel="audit", group="g", pattern="audit.#")
    topo.validate()


@pytest.mark.parametrize(("min_size", "max_size"), [(5, 2), (0, 2), (1, 0)])
def test_pool_sizes(min_size: int, max_size: int) -> None:
    topo = shop()
    topo.pool("mailer", handle, channel="orders", min_size=min_size, max_size=max_size)
    problem = only_problem(topo)
    assert problem == (
        f"pool 'mailer': needs 1 <= min_size <= max_size, got min_size={min_size}, "
        f"max_size={max_size}"
    )


@pytest.mark.parametrize(
    ("source", "interval", "expected"),
    [
        (42, None, "producer 'web': source must be an iterable or a callable, got int"),
        (
            lambda: None,
            None,
            "producer 'web': a callable source needs interval= (seconds between polls)",
        ),
        (lambda: None, -1.0, "producer 'web': interval must be a number >= 0, got -1.0"),
    ],
)
def test_bad_producer_source(source: Any, interval: float | None, expected: str) -> None:
    topo = shop()
    topo.producer("web", channel="orders", topic="orders.created", source=source, interval=interval)
    assert only_problem(topo) == expected


def test_bad_producer_rate_and_key() -> None:
    topo = shop()
    topo.producer("web", channel="orders", topic="t", source=[], rate=0, key=3)  # type: ignore[arg-type]
    assert problems_of(topo) == (
        "producer 'web': rate must be a positive number of events per second, got 0",
        "producer 'web': key must be a callable or a field name, got int",
    )


@pytest.mark.parametrize(
    ("declare", "expected"),
    [
        (
            lambda t: t.channel("$orders"),
            "channel '$orders': a channel name must be a non-empty string not starting with '$'",
        ),
        (
            lambda t: t.consumer("$billing", handle, channel="orders"),
            "consumer '$billing': names starting with '$' are reserved for reactor",
        ),
        (
            lambda t: t.pool("$mailer", handle, channel="orders"),
            "pool '$mailer': names starting with '$' are reserved for reactor",
        ),
        (
            lambda t: t.producer("$web", channel="orders", topic="t", source=[]),
            "producer '$web': names starting with '$' are reserved for reactor",
        ),
        (
            lambda t: t.supervisor("$consumers"),
            "supervisor '$consumers': names starting with '$' are reserved for reactor",
        ),
    ],
)
def test_reserved_dollar_names(declare: Any, expected: str) -> None:
    topo = shop()
    declare(topo)
    assert expected in problems_of(topo)


def test_bad_restart_and_numbers() -> None:
    topo = shop()
    topo.consumer(
        "billing",
        handle,
        channel="orders",
        restart="sometimes",  # type: ignore[arg-type]
        max_deliveries=0,
        handler_timeout=0,
    )
    problems = problems_of(topo)
    assert problems == (
        "consumer 'billing': max_deliveries must be a positive integer, got 0",
        "consumer 'billing': unknown restart type 'sometimes'; "
        "use one of permanent, transient, temporary",
        "consumer 'billing': handler_timeout must be a positive number of seconds, got 0",
    )


def test_bad_supervisor_strategy() -> None:
    topo = shop()
    topo.supervisor("tree", "rest_for_one")  # type: ignore[arg-type]
    problem = only_problem(topo)
    assert problem.startswith(
        "supervisor 'tree': strategy must be OneForOne, OneForAll or RestForOne"
    )


def test_nested_supervisors_are_checked() -> None:
    topo = shop()
    with topo.supervisor("outer") as outer, outer.supervisor("inner") as inner:
        inner.consumer("deep", handle, channel="nowhere")
    assert only_problem(topo).startswith("consumer 'deep': unknown channel 'nowhere'")


def test_several_problems_reported_together() -> None:
    topo = Topology("shop")
    topo.channel("orders", overflow="spill")  # type: ignore[arg-type]
    topo.channel("orders")
    topo.producer("web", channel="ordrs", topic="orders.created", source=42)
    topo.consumer("billing", channel="orders", pattern="orders.#x")
    topo.pool("billing", handle, channel="orders", min_size=3, max_size=1)
    topo.consumer("$spy", handle, channel="orders")

    with pytest.raises(TopologyError) as info:
        topo.validate()
    problems = info.value.problems
    expected = [
        "channel 'orders' is declared twice",
        "producer 'web': unknown channel 'ordrs'",
        "producer 'web': source must be an iterable or a callable, got int",
        "consumer 'billing': invalid pattern 'orders.#x'",
        "consumer 'billing': has no handler",
        "pool 'billing': the name is already used by a consumer",
        "pool 'billing': needs 1 <= min_size <= max_size",
        # Same name, so same group as the consumer, with another pattern.
        "pool 'billing': shares group 'billing' on channel 'orders' with 'billing'",
        "consumer '$spy': names starting with '$' are reserved",
    ]
    for fragment in expected:
        assert sum(fragment in problem for problem in problems) == 1, (fragment, problems)
    # The channel was redeclared with the default overflow, so 'spill' is gone.
    assert len(problems) == len(expected)
    message = str(info.value)
    assert message.startswith(f"invalid topology, {len(expected)} problems:\n  - ")


def test_start_refuses_an_invalid_topology_and_starts_nothing() -> None:
    topo = shop()
    topo.consumer("billing", channel="orders")
    with pytest.raises(TopologyError, match="consumer 'billing': has no handler"):
        topo.start()


def test_validation_covers_pool_member_names_scaling_and_option_types() -> None:
    topo = Topology("more")
    topo.channel("c")
    topo.pool("mailer", lambda e: None, channel="c", max_size=3, scaling=PoolScaling(interval_s=0))
    topo.consumer("mailer-2", lambda e: None, channel="c")
    topo.consumer("odd", lambda e: None, channel="c", pattern=5, shutdown_s=0, group="")  # type: ignore[arg-type]
    with pytest.raises(TopologyError) as caught:
        topo.validate()
    text = str(caught.value)
    assert "'mailer-2': the name is taken by a member of pool 'mailer'" in text
    assert "scaling.interval_s must be a positive number" in text
    assert "pattern must be a str, got int" in text
    assert "shutdown_s must be a positive number" in text
    assert "group must be a non-empty string" in text
