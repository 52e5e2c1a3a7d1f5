"""Topology.validate(): every problem of a builder-made topology, named, all at once."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest

from reactor import Backoff, Event, OneForOne, PoolScaling, Retry, Topology, TopologyError
from reactor.errors import ReactorError
from reactor.runtime.declarations import ChannelDecl, ConsumerDecl, PoolDecl, ProducerDecl
from reactor.schema import Option, options_of


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


def no_handle_class(topo: Topology) -> None:
    class NoHandle:
        pass

    topo.consumer("billing", NoHandle, channel="orders")


# Each row declares one mistake on the "shop" topology (a channel "orders") and gives the
# one problem validate() must report: the whole line, or (with "...") its beginning.
ONE_PROBLEM: list[tuple[str, Callable[[Topology], object], str]] = [
    (
        "unknown channel of a consumer",
        lambda t: t.consumer("billing", handle, channel="ordrs"),
        "consumer 'billing': unknown channel 'ordrs'; did you mean 'orders'? (channels: orders, $system); "
        "declare it with topology.channel('ordrs')",
    ),
    (
        "unknown channel of a pool",
        lambda t: t.pool("mailer", handle, channel="ordrs"),
        "pool 'mailer': unknown channel 'ordrs'; did you mean 'orders'? (channels: orders, $system)...",
    ),
    (
        "unknown channel of a producer",
        lambda t: t.producer("web", channel="ordrs", topic="orders.created", source=[]),
        "producer 'web': unknown channel 'ordrs'; did you mean 'orders'? (channels: orders, $system)...",
    ),
    (
        "unknown output channel",
        lambda t: t.consumer("billing", handle, channel="orders", output="ordrs"),
        "consumer 'billing' (output): unknown channel 'ordrs'; did you mean 'orders'? (channels: orders)...",
    ),
    (
        "duplicate channel",
        lambda t: t.channel("orders"),
        "channel 'orders' is declared twice",
    ),
    (
        "bad pattern",
        lambda t: t.consumer("billing", handle, channel="orders", pattern=["o.#", "o..paid"]),
        "consumer 'billing': invalid pattern 'o..paid'...",
    ),
    (
        "no pattern",
        lambda t: t.consumer("billing", handle, channel="orders", pattern=[]),
        "consumer 'billing': needs at least one pattern",
    ),
    (
        "bad producer topic",
        lambda t: t.producer("web", channel="orders", topic="orders.*", source=[]),
        "producer 'web': invalid topic 'orders.*'...",
    ),
    (
        "decorator never applied",
        lambda t: t.consumer("billing", channel="orders"),
        "consumer 'billing': has no handler; pass handler= or use it as a decorator",
    ),
    (
        "handler class without handle()",
        no_handle_class,
        "consumer 'billing': handler class NoHandle has no handle(event) or handle_batch(events) method",
    ),
    (
        "handler that is no function",
        lambda t: t.consumer("billing", 42, channel="orders"),
        "consumer 'billing': handler must be a function or have a handle(event) method, got int",
    ),
    (
        "bad overflow",
        lambda t: t.channel("audit", overflow="spill"),
        "channel 'audit': unknown overflow policy 'spill'; "
        "use one of block, drop_oldest, drop_newest, reject",
    ),
    (
        "bad capacity",
        lambda t: t.channel("audit", capacity=0),
        "channel 'audit': capacity must be a positive integer, got 0",
    ),
    (
        "bad backend",
        lambda t: t.channel("audit", backend="kafka"),
        "channel 'audit': unknown backend 'kafka'; use one of memory, ...",
    ),
    (
        "pool smaller at most than at least",
        lambda t: t.pool("mailer", handle, channel="orders", min_size=5, max_size=2),
        "pool 'mailer': needs 0 <= min_size <= max_size, got min_size=5, max_size=2",
    ),
    (
        "pool of fewer than no members",
        lambda t: t.pool("mailer", handle, channel="orders", min_size=-1),
        "pool 'mailer': min_size must be an integer >= 0, got -1",
    ),
    (
        "source of no kind",
        lambda t: t.producer("web", channel="orders", topic="t", source=42),
        "producer 'web': source must be an iterable or a callable, got int",
    ),
    (
        "callable source without interval",
        lambda t: t.producer("web", channel="orders", topic="t", source=lambda: None),
        "producer 'web': a callable source needs interval= (seconds between polls)",
    ),
    (
        "key of no kind",
        lambda t: t.producer("web", channel="orders", topic="t", source=[], key=3),
        "producer 'web': key must be a callable or a field name, got int",
    ),
    (
        "bad restart type",
        lambda t: t.consumer("billing", handle, channel="orders", restart="sometimes"),
        "consumer 'billing': unknown restart type 'sometimes'; "
        "use one of permanent, transient, temporary",
    ),
    (
        "bad supervisor strategy",
        lambda t: t.supervisor("tree", "rest_for_one"),
        "supervisor 'tree': strategy must be OneForOne, OneForAll or RestForOne, "
        "got 'rest_for_one'",
    ),
    (
        "empty group",
        lambda t: t.consumer("billing", handle, channel="orders", group=""),
        "consumer 'billing': group must be a non-empty string, got ''",
    ),
    (
        "idempotent of no truth value",
        lambda t: t.consumer("billing", handle, channel="orders", idempotent="yes"),
        "consumer 'billing': idempotent must be true or false, got 'yes'",
    ),
    (
        "start of no kind",
        lambda t: t.consumer("billing", handle, channel="orders", start="middle"),
        "consumer 'billing': start must be 'earliest', 'latest', an offset >= 0 or a datetime, "
        "got 'middle'",
    ),
    (
        "scaling of no kind",
        lambda t: t.pool("mailer", handle, channel="orders", scaling={"up_after": 1}),
        "pool 'mailer': scaling must be a reactor.PoolScaling, got dict",
    ),
    (
        "a scaling option",
        lambda t: t.pool("mailer", handle, channel="orders", scaling=PoolScaling(up_after=0)),
        "pool 'mailer': scaling.up_after must be a positive integer, got 0",
    ),
    (
        "pool member name taken",
        lambda t: (
            t.pool("mailer", handle, channel="orders", max_size=2),
            t.consumer("mailer-2", handle, channel="orders"),
        ),
        "consumer 'mailer-2': the name is taken by a member of pool 'mailer'; rename one of them",
    ),
    (
        "reserved channel name",
        lambda t: t.channel("$orders"),
        "channel '$orders': a channel name must be a non-empty string not starting with '$'",
    ),
    (
        "reserved consumer name",
        lambda t: t.consumer("$billing", handle, channel="orders"),
        "consumer '$billing': names starting with '$' are reserved for reactor",
    ),
    (
        "reserved producer name",
        lambda t: t.producer("$web", channel="orders", topic="t", source=[]),
        "producer '$web': names starting with '$' are reserved for reactor",
    ),
    (
        "reserved supervisor name",
        lambda t: t.supervisor("$consumers"),
        "supervisor '$consumers': names starting with '$' are reserved for reactor",
    ),
    (
        "group members subscribing differently",
        lambda t: (
            t.consumer("billing-1", handle, channel="orders", group="billing", pattern="o.#"),
            t.consumer("billing-2", handle, channel="orders", group="billing", pattern="o.paid"),
        ),
        "consumer 'billing-2': shares group 'billing' on channel 'orders' with 'billing-1' but "
        "declares a different pattern or max_deliveries; members of a group must subscribe alike",
    ),
    (
        "a problem deep in the tree",
        lambda t: t.supervisor("outer").supervisor("inner").consumer("deep", handle, channel="x"),
        "consumer 'deep': unknown channel 'x'...",
    ),
]


@pytest.mark.parametrize(
    ("declare", "expected"),
    [pytest.param(declare, expected, id=name) for name, declare, expected in ONE_PROBLEM],
)
def test_one_problem(declare: Callable[[Topology], object], expected: str) -> None:
    topo = shop()
    declare(topo)
    problem = only_problem(topo)
    if expected.endswith("..."):
        assert problem.startswith(expected.removesuffix("...")), problem
    else:
        assert problem == expected


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


def test_decorator_supplies_the_handler() -> None:
    topo = shop()

    @topo.consumer("billing", channel="orders")
    def bill(event: Event) -> None:
        return None

    topo.validate()
    assert topo.consumers()[0].handler is bill


def test_same_group_name_on_different_channels_is_fine() -> None:
    topo = shop()
    topo.channel("audit")
    topo.consumer("a", handle, channel="orders", group="g", pattern="orders.#")
    topo.consumer("b", handle, channel="audit", group="g", pattern="audit.#")
    topo.validate()


def test_problems_of_one_declaration_come_in_option_order() -> None:
    topo = shop()
    topo.consumer(
        "billing",
        handle,
        channel="orders",
        handler_timeout=0,
        restart="sometimes",
        max_deliveries=0,
    )
    assert problems_of(topo) == (
        "consumer 'billing': max_deliveries must be a positive integer, got 0",
        "consumer 'billing': unknown restart type 'sometimes'; "
        "use one of permanent, transient, temporary",
        "consumer 'billing': handler_timeout must be a positive number of seconds, "
        "at most 86400, got 0",
    )


def test_several_problems_reported_together() -> None:
    topo = Topology("shop")
    topo.channel("orders", overflow="spill")
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
        "pool 'billing': needs 0 <= min_size <= max_size",
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


# -- bounds of every duration and rate option, from the schema ----------------------------

DECLARE_WITH: dict[type, Callable[[Topology, dict[str, Any]], object]] = {
    ProducerDecl: lambda t, o: t.producer("web", channel="orders", topic="t", source=[], **o),
    ConsumerDecl: lambda t, o: t.consumer("billing", handle, channel="orders", **o),
    PoolDecl: lambda t, o: t.pool("mailer", handle, channel="orders", **o),
    PoolScaling: lambda t, o: t.pool("mailer", handle, channel="orders", scaling=PoolScaling(**o)),
}
SUBJECT = {
    ProducerDecl: "producer 'web': ",
    ConsumerDecl: "consumer 'billing': ",
    PoolDecl: "pool 'mailer': ",
    PoolScaling: "pool 'mailer': scaling.",
}
TIMED = [
    (cls, opt)
    for cls in (ChannelDecl, *DECLARE_WITH)
    for opt in options_of(cls)
    if opt.kind in ("seconds", "rate")
]
STRICT_TIMED = [
    (cls, opt)
    for cls in (OneForOne, Backoff, Retry)
    for opt in options_of(cls)
    if opt.kind == "seconds"
]


def bad_values(opt: Option) -> list[Any]:
    assert opt.maximum is not None, f"{opt.name} has no documented maximum"
    zero = [0] if opt.positive else []
    return [math.nan, math.inf, -math.inf, -1, *zero, opt.maximum * 2]


def test_every_duration_and_rate_option_is_bounded() -> None:
    names = {f"{cls.__name__}.{opt.name}" for cls, opt in TIMED + STRICT_TIMED}
    assert names >= {
        "ProducerDecl.interval",
        "ProducerDecl.rate",
        "ConsumerDecl.handler_timeout",
        "ConsumerDecl.shutdown_s",
        "PoolDecl.handler_timeout",
        "PoolDecl.shutdown_s",
        "PoolScaling.interval_s",
        "OneForOne.within_s",
        "Backoff.min_s",
        "Backoff.max_s",
        "Backoff.reset_after_s",
        "Retry.min_s",
        "Retry.max_s",
    }
    assert all(opt.maximum is not None for _, opt in TIMED + STRICT_TIMED)


@pytest.mark.parametrize(
    ("cls", "opt", "value"),
    [
        pytest.param(cls, opt, value, id=f"{cls.__name__}.{opt.name}={value!r}")
        for cls, opt in TIMED
        for value in bad_values(opt)
    ],
)
def test_bad_durations_and_rates_are_refused_naming_the_option(
    cls: type, opt: Option, value: float
) -> None:
    topo = shop()
    DECLARE_WITH[cls](topo, {opt.name: value})
    problem = only_problem(topo)
    assert problem.startswith(f"{SUBJECT[cls]}{opt.name} must be "), problem
    assert problem.endswith(f"at most {opt.maximum:.0f}, got {value!r}"), problem


@pytest.mark.parametrize(
    ("cls", "opt"), [pytest.param(cls, opt, id=f"{cls.__name__}.{opt.name}") for cls, opt in TIMED]
)
def test_the_maximum_itself_is_allowed(cls: type, opt: Option) -> None:
    topo = shop()
    DECLARE_WITH[cls](topo, {opt.name: opt.maximum})
    topo.validate()


@pytest.mark.parametrize(
    ("cls", "opt", "value"),
    [
        pytest.param(cls, opt, value, id=f"{cls.__name__}.{opt.name}={value!r}")
        for cls, opt in STRICT_TIMED
        for value in bad_values(opt)
    ],
)
def test_strategy_and_backoff_refuse_bad_durations_when_made(
    cls: type, opt: Option, value: float
) -> None:
    with pytest.raises(ValueError, match=f"^{opt.name} must be .*, got {re.escape(repr(value))}$"):
        cls(**{opt.name: value})


def test_backoff_factors_are_bounded() -> None:
    with pytest.raises(ValueError, match=r"^jitter must be a number >= 0, at most 1, got 1\.5$"):
        Backoff(jitter=1.5)
    with pytest.raises(ValueError, match=r"^multiplier must be .*, got nan$"):
        Backoff(multiplier=math.nan)
    with pytest.raises(ValueError, match=r"^max_restarts must be an integer >= 0, got -1$"):
        OneForOne(max_restarts=-1)


# -- the builder takes the schema's options, and nothing else -------------------------------


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda t: t.consumer("c", handle, channel="orders", patern="o.#"),
            "consumer() got an unexpected keyword argument 'patern'; did you mean 'pattern'?",
        ),
        (
            lambda t: t.pool("p", handle, channel="orders", restart="transient"),
            "pool() got an unexpected keyword argument 'restart'",
        ),
        (
            lambda t: t.channel("c", capacty=3),
            "channel() got an unexpected keyword argument 'capacty'; did you mean 'capacity'?",
        ),
        (
            lambda t: t.producer("w", channel="orders", topic="t", source=[], intervall=1),
            "producer() got an unexpected keyword argument 'intervall'; did you mean 'interval'?",
        ),
    ],
)
def test_builder_refuses_an_unknown_option(
    declare: Callable[[Topology], object], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        declare(shop())


def test_builder_defaults_are_the_schema_defaults() -> None:
    topo = shop()
    topo.consumer("c", handle, channel="orders")
    topo.pool("p", handle, channel="orders")
    topo.producer("w", channel="orders", topic="t", source=[])
    consumer, pool = topo.consumers()
    for decl in (consumer, pool, topo.producers[0], topo.channels["orders"]):
        for opt in options_of(type(decl)):
            if opt.has_default and opt.name != "handler":
                assert getattr(decl, opt.name) == opt.default, (type(decl).__name__, opt.name)
    # A pool's members prefetch less than a consumer: the documented difference.
    assert (consumer.prefetch, pool.prefetch) == (256, 64)
    assert "256" in next(o.doc for o in options_of(PoolDecl) if o.name == "prefetch")


def test_problems_are_structured() -> None:
    topo = shop()
    topo.consumer("billing", handle, channel="ordrs", prefetch=0)
    topo.pool("mailer", handle, channel="orders", scaling=PoolScaling(interval_s=-1))
    assert [(p.what, p.name, p.field, p.missing_channel) for p in topo.problems()] == [
        ("consumer", "billing", "channel", "ordrs"),
        ("consumer", "billing", "prefetch", None),
        ("pool", "mailer", "scaling", None),
    ]
    assert not shop().problems()
