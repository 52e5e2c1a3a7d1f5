"""The declared graph: channels, producers, consumers, pools and supervisors.

A :class:`Topology` only records declarations; nothing runs until
:meth:`Topology.start`. :meth:`Topology.validate` checks the whole graph and
reports every problem at once in one :class:`~reactor.errors.TopologyError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from reactor.channels.gate import OVERFLOW_POLICIES, Overflow
from reactor.channels.registry import known_schemes, scheme_of
from reactor.errors import InvalidTopicError, TopologyError
from reactor.messages import lifecycle
from reactor.messages.topics import TopicPattern, validate_topic
from reactor.runtime.pool import PoolScaling
from reactor.supervision.strategy import RESTART_TYPES, OneForOne, RestartType, Retry, Strategy

if TYPE_CHECKING:
    from reactor.clock import Clock
    from reactor.runtime.system import System

__all__ = [
    "ChannelDecl",
    "ConsumerDecl",
    "PoolDecl",
    "ProducerDecl",
    "SupervisorDecl",
    "Topology",
]

H = TypeVar("H")

DEFAULT_STRATEGY = OneForOne()


@attrs.define(eq=False)
class ChannelDecl:
    """A declared channel."""

    name: str
    backend: str = "memory"
    capacity: int = 10_000
    overflow: Overflow = "block"
    max_batch: int = 128


@attrs.define(eq=False)
class ProducerDecl:
    """A declared producer: an iterable source, or a callable polled every ``interval``."""

    name: str
    channel: str
    topic: str
    source: Any
    interval: float | None = None
    rate: float | None = None
    key: Callable[[Any], str | None] | str | None = None
    batch_size: int = 128
    restart: RestartType = "transient"


@attrs.define(eq=False)
class ConsumerDecl:
    """A declared consumer (also the member template of a pool)."""

    name: str
    channel: str
    handler: Any = None
    pattern: str | tuple[str, ...] = "#"
    group: str | None = None
    max_deliveries: int = 5
    idempotent: bool = False
    dedup_window: int = 100_000
    restart: RestartType = "permanent"
    output: str | None = None
    prefetch: int = 256
    handler_timeout: float | None = None
    shutdown_s: float = 5.0
    start: str | int | datetime = "earliest"
    retry: Retry = attrs.field(factory=Retry)
    failure_threshold: int = 10

    @property
    def group_name(self) -> str:
        return self.group or self.name

    @property
    def patterns(self) -> tuple[str, ...]:
        if isinstance(self.pattern, str):
            return (self.pattern,)
        if isinstance(self.pattern, Iterable):
            return tuple(self.pattern)
        return (self.pattern,)  # not a str: validate() reports it

    @property
    def output_channel(self) -> str:
        return self.output or self.channel


@attrs.define(eq=False)
class PoolDecl(ConsumerDecl):
    """A declared pool: ``min_size`` to ``max_size`` members of one group."""

    min_size: int = 1
    max_size: int = 4
    scaling: PoolScaling = attrs.field(factory=PoolScaling)


@attrs.define(eq=False)
class SupervisorDecl:
    """A declared supervisor and its children, in start order."""

    name: str
    strategy: Strategy = DEFAULT_STRATEGY
    restart: RestartType = "permanent"
    children: list[ConsumerDecl | SupervisorDecl] = attrs.field(factory=list)


class _Scope:
    """Where declarations land: the topology itself or a ``with`` supervisor block."""

    def __init__(self, topology: Topology, node: SupervisorDecl) -> None:
        self._topology = topology
        self._node = node

    def consumer(
        self,
        name: str,
        handler: H | None = None,
        *,
        channel: str,
        pattern: str | Iterable[str] = "#",
        group: str | None = None,
        max_deliveries: int = 5,
        idempotent: bool = False,
        dedup_window: int = 100_000,
        restart: RestartType = "permanent",
        output: str | None = None,
        prefetch: int = 256,
        handler_timeout: float | None = None,
        shutdown_s: float = 5.0,
        start: str | int | datetime = "earliest",
        retry: Retry | None = None,
        failure_threshold: int = 10,
    ) -> Any:
        """Declare a consumer; use it plainly or as a decorator.

        Args:
            name: unique name of the consumer (and its group, unless ``group`` is given).
            handler: a function ``f(event)``, or a class / object with ``handle(event)``.
            channel: the channel to consume from.
            pattern: topic pattern(s): ``*`` one word, ``#`` zero or more words.
            group: consumer group; members of one group compete for events.
            max_deliveries: attempts before a failing event goes to ``$deadletter``.
            idempotent: skip events whose id this group already handled.
            dedup_window: how many handled ids ``idempotent`` remembers.
            restart: ``permanent``, ``transient`` or ``temporary``.
            output: channel for events the handler returns (default: ``channel``).
            prefetch: events the channel may hand this consumer ahead of time.
            handler_timeout: seconds before a running handler counts as hung.
            retry: when a failed event is tried again (a :class:`Retry`: exponential
                delay with jitter, 0.1 s doubling up to 5 s by default).
            failure_threshold: failures in a row, with no success between, after
                which the consumer itself counts as failed and is restarted.
            shutdown_s: how long a stop of this consumer may take.
            start: where a group new to a durable channel begins: ``"earliest"``
                (default), ``"latest"``, an offset (``sqlite``), or a ``datetime``. A
                group the log or stream knows resumes where it left off; ``memory``
                ignores it.

        Returns:
            The handler when used as ``consumer(name, handler, ...)``, or a decorator.
        """
        decl = ConsumerDecl(
            name=name,
            channel=channel,
            handler=handler,
            pattern=pattern
            if isinstance(pattern, str) or not isinstance(pattern, Iterable)
            else tuple(pattern),
            group=group,
            max_deliveries=max_deliveries,
            idempotent=idempotent,
            dedup_window=dedup_window,
            restart=restart,
            output=output,
            prefetch=prefetch,
            handler_timeout=handler_timeout,
            shutdown_s=shutdown_s,
            start=start,
            retry=retry if retry is not None else Retry(),
            failure_threshold=failure_threshold,
        )
        self._node.children.append(decl)
        return _decorator(decl) if handler is None else handler

    def pool(
        self,
        name: str,
        handler: H | None = None,
        *,
        channel: str,
        pattern: str | Iterable[str] = "#",
        group: str | None = None,
        min_size: int = 1,
        max_size: int = 4,
        scaling: PoolScaling | None = None,
        max_deliveries: int = 5,
        idempotent: bool = False,
        dedup_window: int = 100_000,
        output: str | None = None,
        prefetch: int = 64,
        handler_timeout: float | None = None,
        shutdown_s: float = 5.0,
        start: str | int | datetime = "earliest",
        retry: Retry | None = None,
        failure_threshold: int = 10,
    ) -> Any:
        """Declare a pool of ``min_size`` to ``max_size`` members in one group.

        Takes the arguments of :meth:`consumer`, plus ``min_size``, ``max_size`` and
        ``scaling`` (a :class:`~reactor.runtime.pool.PoolScaling`).
        """
        decl = PoolDecl(
            name=name,
            channel=channel,
            handler=handler,
            pattern=pattern
            if isinstance(pattern, str) or not isinstance(pattern, Iterable)
            else tuple(pattern),
            group=group,
            max_deliveries=max_deliveries,
            idempotent=idempotent,
            dedup_window=dedup_window,
            output=output,
            prefetch=prefetch,
            handler_timeout=handler_timeout,
            shutdown_s=shutdown_s,
            start=start,
            retry=retry if retry is not None else Retry(),
            failure_threshold=failure_threshold,
            min_size=min_size,
            max_size=max_size,
            scaling=scaling if scaling is not None else PoolScaling(),
        )
        self._node.children.append(decl)
        return _decorator(decl) if handler is None else handler

    def supervisor(
        self, name: str, strategy: Strategy | None = None, *, restart: RestartType = "permanent"
    ) -> SupervisorScope:
        """Declare a nested supervisor; declare its children inside ``with ... as sup:``."""
        node = SupervisorDecl(name, strategy if strategy is not None else DEFAULT_STRATEGY, restart)
        self._node.children.append(node)
        return SupervisorScope(self._topology, node)


def _decorator(decl: ConsumerDecl) -> Callable[[H], H]:
    def register(handler: H) -> H:
        decl.handler = handler
        return handler

    return register


class SupervisorScope(_Scope):
    """A supervisor block: ``with topology.supervisor("name") as sup: sup.consumer(...)``."""

    def __enter__(self) -> SupervisorScope:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @property
    def name(self) -> str:
        return self._node.name


class Topology(_Scope):
    """A declared graph of channels, producers, consumers, pools and supervisors.

    Example:
        >>> topo = Topology("shop")
        >>> topo.channel("orders")
        >>> topo.consumer("audit", print, channel="orders", pattern="orders.#")

    Thread-safety: build a topology from one thread; a started system does not
    see later changes.
    """

    def __init__(self, name: str = "reactor", *, strategy: Strategy | None = None) -> None:
        self.name = name
        self.channels: dict[str, ChannelDecl] = {}
        self.producers: list[ProducerDecl] = []
        self.root = SupervisorDecl(
            "$consumers", strategy if strategy is not None else DEFAULT_STRATEGY
        )
        self.source: str | None = None  # the file it was loaded from, for error messages
        self._problems: list[str] = []
        super().__init__(self, self.root)

    # -- declarations ----------------------------------------------------------------

    def channel(
        self,
        name: str,
        *,
        backend: str = "memory",
        capacity: int = 10_000,
        overflow: Overflow = "block",
        max_batch: int = 128,
    ) -> ChannelDecl:
        """Declare a channel.

        Args:
            name: the channel's name.
            backend: ``memory`` (the default).
            capacity: most published-but-unsettled events the channel holds.
            overflow: what ``publish`` does at capacity: ``block``, ``drop_oldest``,
                ``drop_newest`` or ``reject``.
            max_batch: most events delivered to a consumer in one message.
        """
        if name in self.channels:
            self._problems.append(f"channel {name!r} is declared twice")
        decl = ChannelDecl(name, backend, capacity, overflow, max_batch)
        self.channels[name] = decl
        return decl

    def producer(
        self,
        name: str,
        *,
        channel: str,
        topic: str,
        source: Any,
        interval: float | None = None,
        rate: float | None = None,
        key: Callable[[Any], str | None] | str | None = None,
        batch_size: int = 128,
        restart: RestartType = "transient",
    ) -> ProducerDecl:
        """Declare a producer.

        Args:
            name: unique name of the producer.
            channel: the channel it publishes into.
            topic: the topic of the events it makes.
            source: an iterable (pulled until exhausted) or a callable (polled every
                ``interval`` seconds, returning ``None``, an event, or event data).
            interval: seconds between polls of a callable source.
            rate: most events per second.
            key: the event key: a callable ``key(data)``, or the name of a field of
                dict data.
            batch_size: most events published in one message.
            restart: restart type; ``transient`` means an exhausted source is done.
        """
        decl = ProducerDecl(name, channel, topic, source, interval, rate, key, batch_size, restart)
        self.producers.append(decl)
        return decl

    # -- reading ---------------------------------------------------------------------

    def consumers(self) -> list[ConsumerDecl]:
        """Every consumer and pool, in start order."""
        return [decl for decl, _ in self.walk() if isinstance(decl, ConsumerDecl)]

    def supervisors(self) -> list[SupervisorDecl]:
        return [decl for decl, _ in self.walk() if isinstance(decl, SupervisorDecl)]

    def walk(self) -> list[tuple[ConsumerDecl | SupervisorDecl, SupervisorDecl]]:
        """Every declaration under the root with its supervisor, depth first, in order."""
        found: list[tuple[ConsumerDecl | SupervisorDecl, SupervisorDecl]] = []

        def visit(node: SupervisorDecl) -> None:
            for child in node.children:
                found.append((child, node))
                if isinstance(child, SupervisorDecl):
                    visit(child)

        visit(self.root)
        return found

    # -- validation ------------------------------------------------------------------

    def validate(self) -> None:
        """Check the whole topology.

        Raises:
            TopologyError: listing every problem found.
        """
        problems = list(self._problems)
        problems += self._check_channels()
        problems += self._check_names()
        problems += self._check_producers()
        problems += self._check_consumers()
        problems += self._check_supervisors()
        if problems:
            raise TopologyError(problems, source=self.source)

    def _check_channels(self) -> list[str]:
        problems = []
        for decl in self.channels.values():
            what = f"channel {decl.name!r}"
            if not isinstance(decl.name, str) or not decl.name or decl.name.startswith("$"):
                problems.append(
                    f"{what}: a channel name must be a non-empty string not starting with '$'"
                )
            backends = known_schemes()
            if not isinstance(decl.backend, str) or scheme_of(decl.backend) not in backends:
                problems.append(
                    f"{what}: unknown backend {decl.backend!r}; use one of {', '.join(backends)}"
                )
            if not _positive_int(decl.capacity):
                problems.append(
                    f"{what}: capacity must be a positive integer, got {decl.capacity!r}"
                )
            if decl.overflow not in OVERFLOW_POLICIES:
                problems.append(
                    f"{what}: unknown overflow policy {decl.overflow!r}; use one of {', '.join(OVERFLOW_POLICIES)}"
                )
            if not _positive_int(decl.max_batch):
                problems.append(
                    f"{what}: max_batch must be a positive integer, got {decl.max_batch!r}"
                )
        return problems

    def _check_names(self) -> list[str]:
        problems = []
        seen: dict[str, str] = {}
        entries: list[tuple[str, str]] = [(p.name, "producer") for p in self.producers]
        for decl, _ in self.walk():
            kind = (
                "supervisor"
                if isinstance(decl, SupervisorDecl)
                else "pool"
                if isinstance(decl, PoolDecl)
                else "consumer"
            )
            entries.append((decl.name, kind))
        # Pool members are named "<pool>-<n>": those names are taken too.
        for decl, _ in self.walk():
            if isinstance(decl, PoolDecl) and isinstance(decl.max_size, int):
                entries += [
                    (f"{decl.name}-{n}", f"member of pool {decl.name!r}")
                    for n in range(1, decl.max_size + 1)
                ]
        for name, kind in entries:
            if not isinstance(name, str) or not name:
                problems.append(f"a {kind} has an empty or non-string name: {name!r}")
                continue
            if name.startswith("$"):
                problems.append(
                    f"{kind} {name!r}: names starting with '$' are reserved for reactor"
                )
            if name in seen and kind.startswith("member of pool"):
                problems.append(
                    f"{seen[name]} {name!r}: the name is taken by a {kind}; rename one of them"
                )
            elif name in seen:
                problems.append(
                    f"{kind} {name!r}: the name is already used by a {seen[name]}; names must be unique"
                )
            else:
                seen[name] = kind
        return problems

    def _known_channel(self, name: str) -> bool:
        return name in self.channels or name == lifecycle.SYSTEM_CHANNEL

    def _unknown_channel(self, what: str, name: str) -> str:
        known = ", ".join(sorted(self.channels)) or "none declared"
        return f"{what}: unknown channel {name!r} (channels: {known}); declare it with topology.channel({name!r})"

    def _check_producers(self) -> list[str]:
        problems = []
        for decl in self.producers:
            what = f"producer {decl.name!r}"
            if not self._known_channel(decl.channel):
                problems.append(self._unknown_channel(what, decl.channel))
            try:
                validate_topic(decl.topic)
            except InvalidTopicError as exc:
                problems.append(f"{what}: {exc}")
            source = decl.source
            if callable(source) and not isinstance(source, Iterable):
                if decl.interval is None:
                    problems.append(
                        f"{what}: a callable source needs interval= (seconds between polls)"
                    )
            elif not isinstance(source, Iterable):
                problems.append(
                    f"{what}: source must be an iterable or a callable, got {type(source).__name__}"
                )
            if decl.interval is not None and not _non_negative(decl.interval):
                problems.append(f"{what}: interval must be a number >= 0, got {decl.interval!r}")
            if decl.rate is not None and not (_non_negative(decl.rate) and decl.rate > 0):
                problems.append(
                    f"{what}: rate must be a positive number of events per second, got {decl.rate!r}"
                )
            if decl.restart not in RESTART_TYPES:
                problems.append(
                    f"{what}: unknown restart type {decl.restart!r}; use one of {', '.join(RESTART_TYPES)}"
                )
            if not _positive_int(decl.batch_size):
                problems.append(
                    f"{what}: batch_size must be a positive integer, got {decl.batch_size!r}"
                )
            if decl.key is not None and not (callable(decl.key) or isinstance(decl.key, str)):
                problems.append(
                    f"{what}: key must be a callable or a field name, got {type(decl.key).__name__}"
                )
        return problems

    def _check_consumers(self) -> list[str]:
        problems = []
        groups: dict[tuple[str, str], ConsumerDecl] = {}
        for decl in self.consumers():
            kind = "pool" if isinstance(decl, PoolDecl) else "consumer"
            what = f"{kind} {decl.name!r}"
            if not self._known_channel(decl.channel):
                problems.append(self._unknown_channel(what, decl.channel))
            if decl.output is not None and decl.output not in self.channels:
                problems.append(self._unknown_channel(f"{what} (output)", decl.output))
            for pattern in decl.patterns:
                try:
                    TopicPattern.compile(pattern)
                except InvalidTopicError as exc:
                    problems.append(f"{what}: {exc}")
            if not decl.patterns:
                problems.append(f"{what}: needs at least one pattern")
            if decl.group is not None and (not isinstance(decl.group, str) or not decl.group):
                problems.append(f"{what}: group must be a non-empty string, got {decl.group!r}")
            if not isinstance(decl.idempotent, bool):
                problems.append(
                    f"{what}: idempotent must be true or false, got {decl.idempotent!r}"
                )
            if not (_non_negative(decl.shutdown_s) and decl.shutdown_s > 0):
                problems.append(
                    f"{what}: shutdown_s must be a positive number of seconds, got {decl.shutdown_s!r}"
                )
            if isinstance(decl, PoolDecl):
                problems += _check_scaling(what, decl.scaling)
            problems += _check_handler(what, decl.handler)
            if not _positive_int(decl.max_deliveries):
                problems.append(
                    f"{what}: max_deliveries must be a positive integer, got {decl.max_deliveries!r}"
                )
            if not _positive_int(decl.prefetch):
                problems.append(
                    f"{what}: prefetch must be a positive integer, got {decl.prefetch!r}"
                )
            if not _positive_int(decl.dedup_window):
                problems.append(
                    f"{what}: dedup_window must be a positive integer, got {decl.dedup_window!r}"
                )
            if decl.restart not in RESTART_TYPES:
                problems.append(
                    f"{what}: unknown restart type {decl.restart!r}; use one of {', '.join(RESTART_TYPES)}"
                )
            if not (
                decl.start in ("earliest", "latest")
                or isinstance(decl.start, datetime)
                or (
                    isinstance(decl.start, int)
                    and not isinstance(decl.start, bool)
                    and decl.start >= 0
                )
            ):
                problems.append(
                    f"{what}: start must be 'earliest', 'latest', an offset >= 0 or a datetime, got {decl.start!r}"
                )
            if decl.handler_timeout is not None and not (
                _non_negative(decl.handler_timeout) and decl.handler_timeout > 0
            ):
                problems.append(
                    f"{what}: handler_timeout must be a positive number of seconds, got {decl.handler_timeout!r}"
                )
            if isinstance(decl, PoolDecl) and not (
                _positive_int(decl.min_size)
                and _positive_int(decl.max_size)
                and decl.min_size <= decl.max_size
            ):
                problems.append(
                    f"{what}: needs 1 <= min_size <= max_size, got min_size={decl.min_size!r}, max_size={decl.max_size!r}"
                )
            key = (decl.channel, decl.group_name)
            other = groups.get(key)
            if other is None:
                groups[key] = decl
            elif (
                set(other.patterns) != set(decl.patterns)
                or other.max_deliveries != decl.max_deliveries
            ):
                problems.append(
                    f"{what}: shares group {decl.group_name!r} on channel {decl.channel!r} with "
                    f"{other.name!r} but declares a different pattern or max_deliveries; members of a "
                    "group must subscribe alike"
                )
        return problems

    def _check_supervisors(self) -> list[str]:
        problems = []
        for decl in [self.root, *self.supervisors()]:
            if not isinstance(decl.strategy, Strategy):
                problems.append(
                    f"supervisor {decl.name!r}: strategy must be OneForOne, OneForAll or RestForOne, "
                    f"got {decl.strategy!r}"
                )
            if decl.restart not in RESTART_TYPES:
                problems.append(f"supervisor {decl.name!r}: unknown restart type {decl.restart!r}")
        return problems

    # -- running ---------------------------------------------------------------------

    def start(
        self,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        only: Iterable[str] | None = None,
    ) -> System:
        """Validate, then start every channel, consumer and producer.

        Args:
            clock: the clock for timers, backoff and intensity (tests pass a FakeClock).
            seed: seeds the supervisors' backoff jitter, for repeatable runs.
            only: start just these consumers, pools, supervisors (with everything
                under them) and producers; channels are always opened. For worker
                processes that share a topology over a broker.

        Returns:
            The running :class:`~reactor.System`; use it as a context manager to stop it.

        Raises:
            TopologyError: the topology is invalid (nothing was started).
        """
        from reactor.runtime.system import System  # noqa: PLC0415 - system imports topology

        return System(self, clock=clock, seed=seed, only=only).start()

    @classmethod
    def from_toml(cls, path: str) -> Topology:
        """Load a topology from a TOML file; see :mod:`reactor.runtime.toml`."""
        from reactor.runtime.toml import load_topology  # noqa: PLC0415 - toml imports topology

        return load_topology(path)


def _check_handler(what: str, handler: Any) -> list[str]:
    if handler is None:
        return [f"{what}: has no handler; pass handler= or use it as a decorator"]
    if inspect.isclass(handler):
        if not callable(getattr(handler, "handle", None)):
            return [f"{what}: handler class {handler.__name__} has no handle(event) method"]
        return []
    if callable(getattr(handler, "handle", None)) or callable(handler):
        return []
    return [
        f"{what}: handler must be a function or have a handle(event) method, got {type(handler).__name__}"
    ]


def _check_scaling(what: str, scaling: Any) -> list[str]:
    if not isinstance(scaling, PoolScaling):
        return [f"{what}: scaling must be a reactor.PoolScaling, got {type(scaling).__name__}"]
    problems = []
    if not (_non_negative(scaling.interval_s) and scaling.interval_s > 0):
        problems.append(
            f"{what}: scaling.interval_s must be a positive number, got {scaling.interval_s!r}"
        )
    for field in ("scale_up_backlog", "up_after", "down_after"):
        if not _positive_int(getattr(scaling, field)):
            problems.append(
                f"{what}: scaling.{field} must be a positive integer, got {getattr(scaling, field)!r}"
            )
    return problems


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
