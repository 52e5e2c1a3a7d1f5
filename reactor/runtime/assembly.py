"""Assembly: a topology turned into the child specs of a system's supervision tree.

Supervision tree of every system::

    $root (gives up at the first failure of a subtree)
    ├── $channels   one child per channel, $system included
    ├── $consumers  the topology's consumers, pools and nested supervisors
    └── $producers  one child per producer

:class:`Assembly` opens the channels and builds the specs; the spec factories it
returns run later, on the supervisors' threads. It also keeps the tables the
running :class:`~reactor.System` reads: every actor's counters (for metrics), the
producers (for idleness) and the channels.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ReactorActor
from reactor.actors.counters import ActorCounters
from reactor.channels.backend import (
    Channel,
    ChannelConfig,
    ChannelServices,
    DurableDedup,
    GroupSpec,
)
from reactor.channels.dedup import DedupWindow
from reactor.channels.registry import backend_for
from reactor.channels.sagas import KeepsSagas, MemorySagaStore, SagaStore
from reactor.clock import Clock
from reactor.errors import SupervisorEscalation, TopologyError
from reactor.messages import lifecycle
from reactor.messages.event import Event
from reactor.runtime.batching import Batching, batch_key_function
from reactor.runtime.consumer import ConsumerActor, ConsumerRuntime
from reactor.runtime.coroutines import CoroutineConsumerActor
from reactor.runtime.declarations import (
    ConsumerDecl,
    PoolDecl,
    ProducerDecl,
    SupervisorDecl,
    TopologyDecl,
)
from reactor.runtime.handling import is_async
from reactor.runtime.pool import Pool, PoolConfig
from reactor.runtime.producer import ProducerRuntime
from reactor.runtime.projections import Projection
from reactor.runtime.router import Router
from reactor.runtime.sagadecl import SagaDecl, saga_consumer
from reactor.runtime.sagas import SagaRunner
from reactor.supervision.strategy import OneForOne
from reactor.supervision.supervisor import ChildSpec, Supervisor, SupervisorConfig

__all__ = ["SYSTEM_CHANNEL_CAPACITY", "ActorEntry", "Assembly"]

SYSTEM_CHANNEL_CAPACITY = 10_000


class ActorEntry:
    """What the system knows of one actor: its kind, supervisor, counters and address."""

    __slots__ = ("address", "counters", "kind", "supervisor")

    def __init__(
        self, kind: str, supervisor: str, counters: ActorCounters, address: Address | None
    ) -> None:
        self.kind = kind
        self.supervisor = supervisor
        self.counters = counters
        self.address = address


# The options of a consumer's runtime that are its declaration's, under the same name.
_AS_DECLARED = (
    "name",
    "channel",
    "prefetch",
    "max_deliveries",
    "retry",
    "failure_threshold",
    "concurrency",
    "handler_timeout",
)


class Assembly:
    """Builds one system's channels and supervision tree from its topology.

    Args:
        topology: a validated topology.
        only: run just these consumers, pools, supervisors (with their subtree) and
            producers; None runs everything. Channels are always opened.
        clock: the system's clock.
        seed: seeds the supervisors' backoff jitter.
        router: where producers and consumers publish; it learns the channels.
        publish_system: publishes a ``$system`` event.
        notify_idle: told when a producer finishes or a gate empties.
        projections: the system's projections by name, filled in once the topology is
            valid; each is fed by a consumer under ``$consumers``, after the topology's own.

    Thread-safety: built on the thread that starts the system; the factories in
    its specs run on supervisor threads and only add to :attr:`actors`.
    """

    def __init__(
        self,
        topology: TopologyDecl,
        only: frozenset[str] | None,
        *,
        clock: Clock,
        seed: int | None,
        router: Router,
        publish_system: Callable[[Event], None],
        notify_idle: Callable[[], None],
        projections: Mapping[str, Projection] | None = None,
    ) -> None:
        self._topology = topology
        self._projections = projections if projections is not None else {}
        self._only = only
        self._clock = clock
        self._seed = seed
        self._router = router
        self._publish_system = publish_system
        self._notify_idle = notify_idle
        self.actors: dict[str, ActorEntry] = {}
        self.producers: list[ProducerRuntime] = []
        self.channels: dict[str, Channel] = {}
        self._dedup: dict[tuple[str, str], DedupWindow] = {}
        # Every saga's store (its channel's backend), opened with the channels.
        self.sagas: dict[str, SagaStore] = {}

    def root(self, on_escalate: Callable[[SupervisorEscalation], None]) -> SupervisorConfig:
        """The ``$root`` supervisor's config, its children built; call after :meth:`open_channels`."""
        children = (
            self._supervisor_spec(
                "$channels",
                [self._channel_spec(channel) for channel in self.channels.values()],
            ),
            self._consumer_tree_spec(self._topology.root, extra=self._projection_consumers()),
            self._supervisor_spec(
                "$producers",
                [
                    self._producer_spec(p)
                    for p in self._topology.producers
                    if self._selected(p.name)
                ],
            ),
        )
        self.actors["$root"] = ActorEntry("supervisor", "", ActorCounters(), None)
        return SupervisorConfig(
            "$root",
            OneForOne(max_restarts=0),
            children,
            publish_system=self._publish_system,
            on_escalate=on_escalate,
            seed=self._seed,
        )

    def open_channels(self) -> dict[str, Channel]:
        """Open every declared channel and ``$system``; on a failure, close those opened."""
        groups: dict[str, dict[str, GroupSpec]] = collections.defaultdict(dict)
        consumers = [*self._topology.consumers(), *self._projection_consumers()]
        for decl in consumers + self._saga_consumers():
            groups[decl.channel].setdefault(
                decl.group_name,
                GroupSpec(decl.group_name, decl.patterns, decl.max_deliveries, decl.start),
            )
        services = ChannelServices(self._clock, self._publish_system, self._notify_idle)
        configs = [
            ChannelConfig(
                decl.name,
                decl.backend,
                decl.capacity,
                decl.overflow,
                tuple(groups[decl.name].values()),
                decl.max_batch,
                decl.max_event_size,
            )
            for decl in self._topology.channels.values()
        ]
        configs.append(
            ChannelConfig(
                lifecycle.SYSTEM_CHANNEL,
                "memory",
                SYSTEM_CHANNEL_CAPACITY,
                "drop_oldest",
                tuple(groups[lifecycle.SYSTEM_CHANNEL].values()),
            )
        )
        try:
            for config in configs:
                self.channels[config.name] = backend_for(config.backend).open(config, services)
        except BaseException:
            # A durable channel holds a file lock: give back what was opened before the failure.
            for channel in self.channels.values():
                channel.close()
            self.channels.clear()
            raise
        for saga in self._topology.sagas.values():
            channel = self.channels[saga.channel]
            self.sagas[saga.name] = (
                channel.saga_store(saga.name)
                if isinstance(channel, KeepsSagas)
                else MemorySagaStore()
            )
        return self.channels

    def _projection_consumers(self) -> list[ConsumerDecl]:
        return [projection.decl.consumer(projection) for projection in self._projections.values()]

    def _saga_consumers(self) -> list[ConsumerDecl]:
        """The consumer that runs each saga: ``$saga.<name>`` on its channel, its handler
        a :class:`SagaRunner` made when the consumer's spec is."""
        return [
            ConsumerDecl(
                name=saga_consumer(saga.name),
                channel=saga.channel,
                pattern=saga.patterns(),
                handler=None,
                # The runner's own failures (a store or channel unreachable) are retried
                # for a while; the saga's rules are its own (max_attempts, retry).
                max_deliveries=20,
            )
            for saga in self._topology.sagas.values()
        ]

    def _saga_spec(self, saga: SagaDecl, decl: ConsumerDecl) -> ChildSpec:
        runner = SagaRunner(
            saga,
            self.sagas[saga.name],
            self._router,
            clock=self._clock,
            publish_system=self._publish_system,
            seed=f"{self._seed}/{decl.name}" if self._seed is not None else None,
        )
        return self._member_spec(attrs.evolve(decl, handler=runner), decl.name, "$consumers")

    def _register(
        self,
        name: str,
        kind: str,
        supervisor: str,
        counters: ActorCounters,
        address: Address | None,
    ) -> None:
        self.actors[name] = ActorEntry(kind, supervisor, counters, address)

    def _supervisor_spec(
        self,
        name: str,
        children: list[ChildSpec],
        strategy: Any = None,
        restart: Any = "permanent",
        parent: str = "$root",
    ) -> ChildSpec:
        counters = ActorCounters()
        self._register(name, "supervisor", parent, counters, None)
        config = SupervisorConfig(
            name,
            strategy if strategy is not None else OneForOne(),
            tuple(children),
            publish_system=self._publish_system,
            seed=self._seed,
        )
        return ChildSpec(
            name,
            lambda context: Supervisor.spawn(context, config),
            restart=restart,
            kind="supervisor",
            counters=counters,
            shutdown_s=60.0,  # a supervisor waits for its own children's timeouts
            start_timeout=None,  # each of its children's starts is bounded
        )

    def _channel_spec(self, channel: Channel) -> ChildSpec:
        counters = ActorCounters()
        self._register(channel.address.name, "channel", "$channels", counters, channel.address)
        return ChildSpec(
            channel.address.name,
            channel.start_actor,
            kind="channel",
            address=channel.address,
            counters=counters,
        )

    def _selected(self, name: str) -> bool:
        return self._only is None or name in self._only

    def check_only(self) -> None:
        """Raise :class:`TopologyError` naming each ``only`` name the topology lacks."""
        if self._only is None:
            return
        known = {p.name for p in self._topology.producers} | {
            d.name for d, _ in self._topology.walk()
        }
        known |= set(self._topology.projections)
        known |= set(self._topology.sagas)
        unknown = sorted(self._only - known)
        if unknown:
            raise TopologyError(
                [
                    f"--only names {name!r}, which is not a consumer, pool, supervisor, producer, "
                    "projection or saga "
                    f"of topology {self._topology.name!r}"
                    for name in unknown
                ],
                source=self._topology.source,
            )

    def _consumer_tree_spec(
        self,
        node: SupervisorDecl,
        parent: str = "$root",
        selected: bool = False,
        extra: Sequence[ConsumerDecl] = (),
    ) -> ChildSpec:
        selected = selected or self._selected(node.name)
        children = []
        for child in node.children:
            if not (
                selected or self._selected(child.name) or _contains_selected(child, self._selected)
            ):
                continue
            if isinstance(child, SupervisorDecl):
                children.append(self._consumer_tree_spec(child, node.name, selected))
            elif isinstance(child, PoolDecl):
                children.append(self._pool_spec(child, node))
            else:
                children.append(self._member_spec(child, child.name, node.name))
        for decl in extra:
            if self._selected(decl.name):
                children.append(self._member_spec(decl, decl.name, node.name))
        if node is self._topology.root:
            sagas = zip(self._topology.sagas.values(), self._saga_consumers(), strict=True)
            children += [
                self._saga_spec(saga, decl)
                for saga, decl in sagas
                if selected or self._selected(saga.name)
            ]
        return self._supervisor_spec(node.name, children, node.strategy, node.restart, parent)

    def _dedup_for(self, decl: ConsumerDecl) -> DedupWindow | None:
        if not decl.idempotent:
            return None
        key = (decl.channel, decl.group_name)
        window = self._dedup.get(key)
        if window is None:
            # A durable channel keeps the handled ids in its own store, so dedup survives restarts.
            channel = self.channels[decl.channel]
            if isinstance(channel, DurableDedup):
                window = channel.dedup_window(decl.group_name, decl.dedup_window)
            else:
                window = DedupWindow(decl.dedup_window)
            self._dedup[key] = window
        return window

    def _member_spec(self, decl: ConsumerDecl, member: str, supervisor: str) -> ChildSpec:
        counters = ActorCounters()
        address = Address(member)
        runtime = ConsumerRuntime(
            member=member,
            group=decl.group_name,
            channel_address=self.channels[decl.channel].address,
            output=decl.output_channel,
            handler=decl.handler
            if decl.chaos is None
            else decl.chaos.wrap(decl.handler, decl.name, self._clock.monotonic),
            router=self._router,
            dedup=self._dedup_for(decl),
            counters=counters,
            upcasters=self._topology.channel_upcasters(decl.channel),
            actor=CoroutineConsumerActor if is_async(decl.handler) else ConsumerActor,
            seed=f"{self._seed}/{member}" if self._seed is not None else None,
            **{option: getattr(decl, option) for option in _AS_DECLARED},
        )
        kind = "member" if member != decl.name else "consumer"
        self._register(member, kind, supervisor, counters, address)

        def removed() -> None:
            runtime.leave()
            if kind == "member":
                # A removed pool member's work stays counted, in its pool's counters.
                self.actors.pop(member, None)
                pool = self.actors.get(supervisor)
                if pool is not None:
                    pool.counters.received += counters.received
                    pool.counters.handled += counters.handled
                    pool.counters.failed += counters.failed
                    pool.counters.batches += counters.batches

        start: Callable[[ActorContext], ReactorActor] = runtime.start
        if decl.batch_size is not None:
            key = batch_key_function(decl.batch_key)
            start = Batching(decl.batch_size, decl.batch_timeout, key).starter(runtime)
        return ChildSpec(
            member,
            start,
            restart=decl.restart,
            shutdown_s=decl.shutdown_s,
            kind=kind,
            address=address,
            counters=counters,
            # A coroutine past its timeout is cancelled by its consumer, not abandoned.
            handler_timeout=None if is_async(decl.handler) else decl.handler_timeout,
            on_abandoned=runtime.abandon,
            on_removed=removed,
        )

    def _pool_spec(self, decl: PoolDecl, node: SupervisorDecl) -> ChildSpec:
        counters = ActorCounters()
        self._register(decl.name, "pool", node.name, counters, None)
        channel = self.channels[decl.channel]

        def group_stats() -> Any:
            for group in channel.stats().groups:
                if group.name == decl.group_name:
                    return group
            return None

        pool = PoolConfig(
            decl.min_size,
            decl.max_size,
            lambda index: self._member_spec(decl, f"{decl.name}-{index}", decl.name),
            group_stats,
            decl.scaling,
        )
        # Members restart under the strategy of the supervisor the pool was declared in.
        config = SupervisorConfig(
            decl.name, node.strategy, publish_system=self._publish_system, seed=self._seed
        )
        return ChildSpec(
            decl.name,
            lambda context: Pool.spawn(context, config, pool),
            kind="pool",
            counters=counters,
            shutdown_s=60.0,
            start_timeout=None,
        )

    def _producer_spec(self, decl: ProducerDecl) -> ChildSpec:
        counters = ActorCounters()
        address = Address(decl.name)
        source = decl.source
        is_iterable = isinstance(source, Iterable)
        runtime = ProducerRuntime(
            name=decl.name,
            channel=decl.channel,
            topic=decl.topic,
            router=self._router,
            iterator=iter(source) if is_iterable else None,
            poll=None if is_iterable else source,
            interval=decl.interval,
            rate=decl.rate,
            key=_key_function(decl.key),
            batch_size=decl.batch_size,
            on_finished=self._notify_idle,
        )
        self.producers.append(runtime)
        self._register(decl.name, "producer", "$producers", counters, address)
        return ChildSpec(
            decl.name,
            runtime.start,
            restart=decl.restart,
            kind="producer",
            address=address,
            counters=counters,
        )


def _contains_selected(decl: Any, selected: Any) -> bool:
    if not isinstance(decl, SupervisorDecl):
        return False
    return any(
        selected(child.name) or _contains_selected(child, selected) for child in decl.children
    )


def _key_function(key: Any) -> Any:
    if key is None or callable(key):
        return key
    field = key

    def by_field(data: Any) -> str | None:
        if isinstance(data, Mapping) and data.get(field) is not None:
            return str(data[field])
        return None

    return by_field
