"""A running topology: start, publish, observe, drain and stop.

Supervision tree of every system::

    $root (gives up at the first failure of a subtree)
    ├── $channels   one child per channel, $system included
    ├── $consumers  the topology's consumers, pools and nested supervisors
    └── $producers  one child per producer

Started in that order and stopped in reverse, so consumers are ready before
producers emit, and channels outlive everyone who talks to them.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from reactor.actors.address import Address
from reactor.actors.base import ActorContext
from reactor.actors.counters import ActorCounters
from reactor.channels.backend import (
    Channel,
    ChannelConfig,
    ChannelServices,
    DurableDedup,
    GroupSpec,
    Replayable,
    ReportsProblems,
)
from reactor.channels.dedup import DedupWindow
from reactor.channels.registry import backend_for
from reactor.clock import Clock, SystemClock
from reactor.errors import (
    IdleTimeout,
    InvalidPositionError,
    NotDurableError,
    ReactorError,
    SupervisorEscalation,
    SystemStoppedError,
    TopologyError,
    UnknownGroupError,
)
from reactor.messages import lifecycle
from reactor.messages.event import Event
from reactor.runtime.consumer import ConsumerRuntime
from reactor.runtime.metrics import ActorMetrics, Health, SystemMetrics
from reactor.runtime.pool import Pool, PoolConfig
from reactor.runtime.producer import ProducerRuntime
from reactor.runtime.router import Router
from reactor.runtime.serve import serve
from reactor.runtime.topology import ConsumerDecl, PoolDecl, ProducerDecl, SupervisorDecl, Topology
from reactor.supervision.strategy import OneForOne
from reactor.supervision.supervisor import ChildSpec, StopChildren, Supervisor, SupervisorConfig

__all__ = ["System"]

logger = logging.getLogger("reactor")

SYSTEM_CHANNEL_CAPACITY = 10_000
_RECENT_LIFECYCLE = 200
_STOP_STEP_S = 0.1


class _ActorEntry:
    __slots__ = ("address", "counters", "kind", "supervisor")

    def __init__(
        self, kind: str, supervisor: str, counters: ActorCounters, address: Address | None
    ) -> None:
        self.kind = kind
        self.supervisor = supervisor
        self.counters = counters
        self.address = address


class System:
    """A running topology. Create one with :meth:`Topology.start`, the one way.

    ``reactor.System`` is exported for annotations; ``Topology.start`` builds one
    with the same options and starts it.

    Thread-safety: every public method may be called from any thread.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        only: Iterable[str] | None = None,
    ) -> None:
        self.topology = topology
        # Run just these consumers, pools, supervisors (with their subtree) and producers:
        # a worker process runs part of a topology whose channels live on a broker.
        self.only: frozenset[str] | None = frozenset(only) if only is not None else None
        self.name = topology.name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._owns_clock = clock is None
        self._seed = seed
        self._state = "created"
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._done = threading.Event()
        self._failure: SupervisorEscalation | None = None
        self._started_at = 0.0
        self._channels: dict[str, Channel] = {}
        self._router = Router({})
        self._actors: dict[str, _ActorEntry] = {}
        self._producers: list[ProducerRuntime] = []
        self._dedup: dict[tuple[str, str], DedupWindow] = {}
        self._recent: collections.deque[Event] = collections.deque(maxlen=_RECENT_LIFECYCLE)
        self._root: Supervisor | None = None
        self._threads: list[threading.Thread] = []
        self._stop_deadline = 0.0
        self._hurried = False  # a stop at once arrived while a drain was running

    # -- start -----------------------------------------------------------------------

    def start(self) -> System:
        """Validate the topology and start it: channels, then consumers, then producers.

        Raises:
            TopologyError: the topology is invalid; nothing was started.
            SupervisorEscalation: a child kept failing to start.
        """
        with self._lock:
            if self._state != "created":
                raise SystemStoppedError(
                    f"system {self.name!r} was already started; build a new one"
                )
            self.topology.validate()
            self._check_only()
            self._state = "starting"
        self._open_channels()
        children = (
            self._supervisor_spec(
                "$channels",
                [self._channel_spec(channel) for channel in self._channels.values()],
            ),
            self._consumer_tree_spec(self.topology.root),
            self._supervisor_spec(
                "$producers",
                [self._producer_spec(p) for p in self.topology.producers if self._selected(p.name)],
            ),
        )
        config = SupervisorConfig(
            "$root",
            OneForOne(max_restarts=0),
            children,
            publish_system=self._publish_system,
            on_escalate=self._escalated,
            seed=self._seed,
        )
        root_counters = ActorCounters()
        self._actors["$root"] = _ActorEntry("supervisor", "", root_counters, None)
        self._started_at = time.monotonic()
        context = ActorContext(
            Address("$root"), self.clock, counters=root_counters, threads=self._threads
        )
        root = Supervisor.spawn(context, config)
        self._root = root
        try:
            root.actor_started.get(timeout=60)
        except BaseException:
            root.join(10)
            self._finish()
            raise
        with self._lock:
            if self._state == "starting":
                self._state = "running"
        return self

    def _open_channels(self) -> None:
        groups: dict[str, dict[str, GroupSpec]] = collections.defaultdict(dict)
        for decl in self.topology.consumers():
            groups[decl.channel].setdefault(
                decl.group_name,
                GroupSpec(decl.group_name, decl.patterns, decl.max_deliveries, decl.start),
            )
        services = ChannelServices(self.clock, self._publish_system, self._notify_idle)
        configs = [
            ChannelConfig(
                decl.name,
                decl.backend,
                decl.capacity,
                decl.overflow,
                tuple(groups[decl.name].values()),
                decl.max_batch,
            )
            for decl in self.topology.channels.values()
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
                self._channels[config.name] = backend_for(config.backend).open(config, services)
        except BaseException:
            # A durable channel holds a file lock: give back what was opened before the failure.
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            raise
        self._router.channels.update(self._channels)

    # -- child specs -----------------------------------------------------------------

    def _register(
        self,
        name: str,
        kind: str,
        supervisor: str,
        counters: ActorCounters,
        address: Address | None,
    ) -> None:
        self._actors[name] = _ActorEntry(kind, supervisor, counters, address)

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
        return self.only is None or name in self.only

    def _check_only(self) -> None:
        if self.only is None:
            return
        known = {p.name for p in self.topology.producers} | {
            d.name for d, _ in self.topology.walk()
        }
        unknown = sorted(self.only - known)
        if unknown:
            raise TopologyError(
                [
                    f"--only names {name!r}, which is not a consumer, pool, supervisor or producer "
                    f"of topology {self.topology.name!r}"
                    for name in unknown
                ],
                source=self.topology.source,
            )

    def _consumer_tree_spec(
        self, node: SupervisorDecl, parent: str = "$root", selected: bool = False
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
        return self._supervisor_spec(node.name, children, node.strategy, node.restart, parent)

    def _dedup_for(self, decl: ConsumerDecl) -> DedupWindow | None:
        if not decl.idempotent:
            return None
        key = (decl.channel, decl.group_name)
        window = self._dedup.get(key)
        if window is None:
            # A durable channel keeps the handled ids in its own store, so dedup survives restarts.
            channel = self._channels[decl.channel]
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
            name=decl.name,
            member=member,
            group=decl.group_name,
            channel=decl.channel,
            channel_address=self._channels[decl.channel].address,
            output=decl.output_channel,
            handler=decl.handler,
            router=self._router,
            prefetch=decl.prefetch,
            dedup=self._dedup_for(decl),
            counters=counters,
            max_deliveries=decl.max_deliveries,
            retry=decl.retry,
            failure_threshold=decl.failure_threshold,
            rng=random.Random(f"{self._seed}/{member}")
            if self._seed is not None
            else random.Random(),
        )
        kind = "member" if member != decl.name else "consumer"
        self._register(member, kind, supervisor, counters, address)

        def removed() -> None:
            runtime.leave()
            if kind == "member":
                # A removed pool member's work stays counted, in its pool's counters.
                self._actors.pop(member, None)
                pool = self._actors.get(supervisor)
                if pool is not None:
                    pool.counters.received += counters.received
                    pool.counters.handled += counters.handled
                    pool.counters.failed += counters.failed

        return ChildSpec(
            member,
            runtime.start,
            restart=decl.restart,
            shutdown_s=decl.shutdown_s,
            kind=kind,
            address=address,
            counters=counters,
            handler_timeout=decl.handler_timeout,
            on_abandoned=runtime.abandon,
            on_removed=removed,
        )

    def _pool_spec(self, decl: PoolDecl, node: SupervisorDecl) -> ChildSpec:
        counters = ActorCounters()
        self._register(decl.name, "pool", node.name, counters, None)
        channel = self._channels[decl.channel]

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
        self._producers.append(runtime)
        self._register(decl.name, "producer", "$producers", counters, address)
        return ChildSpec(
            decl.name,
            runtime.start,
            restart=decl.restart,
            kind="producer",
            address=address,
            counters=counters,
        )

    # -- publishing ------------------------------------------------------------------

    def publish(
        self,
        channel: str,
        topic: str | Event,
        data: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
    ) -> Event:
        """Publish one event; returns it (with its id) once it is in the channel.

        ``topic`` may also be a ready-made :class:`~reactor.Event`.

        Raises:
            SystemStoppedError: the system is not running.
            UnknownChannelError: no such channel.
            InvalidTopicError / ImmutableMessageError: bad topic or payload; nothing published.
            BackpressureTimeout: ``block`` channel still full after ``timeout`` seconds.
            ChannelFull: ``reject`` channel is full.
        """
        event = (
            topic
            if isinstance(topic, Event)
            else Event.create(topic, data, key=key, headers=headers)
        )
        self._check_running()
        self._router.publish(channel, (event,), timeout=timeout)
        return event

    def publish_many(
        self, channel: str, events: Iterable[Event], *, timeout: float | None = 30.0
    ) -> int:
        """Publish ready-made events in order, in as few messages as capacity allows.

        Returns:
            How many entered the channel (fewer only under ``drop_newest``).
        """
        self._check_running()
        return self._router.publish(channel, list(events), timeout=timeout)

    def replay(self, channel: str, group: str, from_: Any = "earliest") -> int:
        """Rewind ``group`` on a durable ``channel`` so it gets every event from ``from_`` on again.

        Args:
            channel: a channel with a log (``sqlite``).
            group: a group declared on it.
            from_: ``"earliest"``, ``"latest"``, an offset, or a ``datetime``.

        Returns:
            The first offset the group will be given.

        Raises:
            UnknownChannelError: no such channel.
            NotDurableError: the channel's backend keeps no log (``memory``).
            UnknownGroupError: no such group (also a ``LookupError``).
            InvalidPositionError: bad ``from_`` (also a ``ValueError``).
        """
        self._check_running()
        handle = self._router.channel(channel)
        if not isinstance(handle, Replayable):
            raise NotDurableError(
                f"channel {channel!r} (backend {handle.config.backend!r}) keeps no log to replay; "
                "declare it with a durable backend such as backend='sqlite:///path.db'"
            )
        try:
            return int(handle.replay(group, from_))
        except ReactorError:
            raise
        # The channel's own message names the channel, the group or the position.
        except LookupError as exc:
            raise UnknownGroupError(str(exc)) from exc
        except ValueError as exc:
            raise InvalidPositionError(str(exc)) from exc

    def _check_running(self) -> None:
        if self._state not in ("running", "starting"):
            raise SystemStoppedError(
                f"system {self.name!r} is {self._state}; it accepts no more events"
            )

    def _publish_system(self, event: Event) -> None:
        if event.topic != lifecycle.EVENT_DROPPED or len(self._recent) < _RECENT_LIFECYCLE:
            self._recent.append(event)
        self._router.publish_system(event)

    # -- observing -------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``created``, ``starting``, ``running``, ``stopping``, ``stopped`` or ``failed``."""
        return self._state

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._channels)

    def recent_lifecycle(self, limit: int = 50) -> tuple[Event, ...]:
        """The latest ``$system`` and ``$deadletter`` events, oldest first."""
        events = list(self._recent)
        return tuple(events[-limit:])

    def metrics(self) -> SystemMetrics:
        """A frozen snapshot of every actor and channel; never blocks an actor."""
        actors = []
        for name, entry in list(self._actors.items()):
            counters = entry.counters
            actors.append(
                ActorMetrics(
                    name=name,
                    kind=entry.kind,
                    supervisor=entry.supervisor,
                    state=counters.state,
                    restarts=counters.restarts,
                    received=counters.received,
                    handled=counters.handled,
                    failed=counters.failed,
                    event_failures=counters.event_failures,
                    in_flight=counters.in_flight,
                    mailbox=entry.address.depth() if entry.address is not None else 0,
                    latency=counters.latency.snapshot(),
                )
            )
        return SystemMetrics(
            name=self.name,
            state=self._state,
            uptime_s=(time.monotonic() - self._started_at) if self._started_at else 0.0,
            actors=tuple(actors),
            channels=tuple(channel.stats() for channel in self._channels.values()),
        )

    def health(self) -> Health:
        """``ok``, or what is wrong: restarting or failed actors, full channels."""
        if self._state == "failed":
            return Health("failed", (str(self._failure),))
        if self._state in ("stopped", "stopping"):
            return Health("stopped")
        if self._state in ("created", "starting"):
            return Health("starting")
        problems = []
        for name, entry in list(self._actors.items()):
            state = entry.counters.state
            if state in ("restarting", "failed", "starting"):
                problems.append(f"{entry.kind} {name!r} is {state}")
            elif entry.counters.problem is not None:
                problems.append(f"{entry.kind} {name!r} {entry.counters.problem}")
        for channel in self._channels.values():
            gate = channel.gate
            if gate.used >= gate.capacity:
                problems.append(f"channel {channel.name!r} is full ({gate.used}/{gate.capacity})")
            if isinstance(channel, ReportsProblems):
                problems += [
                    f"channel {channel.name!r}: {problem}" for problem in channel.problems()
                ]
        return Health("degraded" if problems else "ok", tuple(problems))

    def is_idle(self, *, producers: bool = True) -> bool:
        """True when no channel holds an unsettled event and (with ``producers``)
        every finite producer is done."""
        if producers and any(p.finite and not p.finished.is_set() for p in self._producers):
            return False
        return all(channel.gate.used == 0 for channel in self._channels.values())

    def wait_idle(self, timeout: float | None = 10.0, *, producers: bool = True) -> None:
        """Wait until everything published has been handled or dead-lettered.

        Producers polling a callable never finish, so they are not waited for: only
        what they already published is. With ``producers=False`` finite producers
        are not waited for either.

        Raises:
            IdleTimeout: still busy after ``timeout`` seconds; names what is busy.
            SupervisorEscalation: the system failed; nothing will get idle any more.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_idle(deadline, timeout, producers=producers, hurry=False)

    def _wait_idle(
        self, deadline: float | None, timeout: float | None, *, producers: bool, hurry: bool
    ) -> None:
        with self._idle:
            while not self.is_idle(producers=producers):
                if self._failure is not None:
                    raise self._failure
                if hurry and self._hurried:
                    return  # a stop at once cut the drain short
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise IdleTimeout(self._busy_report(timeout))
                # Notified when a gate empties, a producer finishes or a stop hurries;
                # the cap is a safety net.
                self._idle.wait(0.1 if remaining is None else min(0.1, remaining))

    def _busy_report(self, timeout: float | None) -> str:
        busy = [
            f"channel {c.name!r} holds {c.gate.used} unsettled event(s)"
            for c in self._channels.values()
            if c.gate.used
        ]
        busy += [
            f"producer {p.name!r} is still producing"
            for p in self._producers
            if p.finite and not p.finished.is_set()
        ]
        return f"system {self.name!r} not idle after {timeout}s: " + "; ".join(busy)

    def _notify_idle(self) -> None:
        with self._idle:
            self._idle.notify_all()

    # -- stopping --------------------------------------------------------------------

    def stop(self, timeout: float = 10.0, *, drain: bool = True) -> None:
        """Stop producers, drain what is in flight, then stop consumers and channels.

        Always returns within ``timeout`` seconds. With ``drain=False`` in-flight
        events are not waited for. A handler still running at the deadline is
        abandoned (threads cannot be killed): its thread ends when it returns.

        Called while another thread is stopping the system, it waits for that stop
        (at most ``timeout`` seconds); with ``drain=False`` it also cuts that stop's
        drain short and brings its deadline forward to ``timeout`` from now, which
        is how a second Ctrl-C stops at once.
        """
        now = time.monotonic()
        with self._lock:
            first = self._state in ("running", "starting")
            if first:
                self._state = "stopping"
                self._stop_deadline = now + timeout
            elif self._state == "stopping" and not drain:
                self._stop_deadline = min(self._stop_deadline, now + timeout)
                self._hurried = True
        if not first:
            self._notify_idle()  # wakes a drain to see the hurry
            self._done.wait(timeout)
            return
        root = self._root
        assert root is not None
        try:
            root.actor_address.ask(
                StopChildren(frozenset({"$producers"})), timeout=self._stop_left()
            )
            if drain:
                left = self._stop_left() * 0.8
                try:
                    self._wait_idle(time.monotonic() + left, left, producers=False, hurry=True)
                except IdleTimeout as exc:
                    logger.warning("stopping without a full drain: %s", exc)
                    self._report_abandoned()
        except Exception:
            logger.exception("system %r: error while stopping producers", self.name)
        root.request_stop()
        # Joined in short steps: a hurried stop may bring the deadline forward meanwhile.
        while not root.join(min(_STOP_STEP_S, self._stop_left())):
            if self._stop_left() <= 0:
                root.fence()
                logger.warning(
                    "system %r: actors still running at the stop deadline were abandoned",
                    self.name,
                )
                break
        self._finish(self._stop_deadline)

    def _stop_left(self) -> float:
        with self._lock:
            return _left(self._stop_deadline)

    def _report_abandoned(self) -> None:
        """Say, per consumer group, how many events the drain deadline left unhandled."""
        for stats in self.metrics().channels:
            if stats.name == lifecycle.SYSTEM_CHANNEL:
                continue
            for group in stats.groups:
                left = group.backlog + group.in_flight
                if not left:
                    continue
                logger.warning(
                    "system %r: the drain deadline passed with %d events of channel %r not "
                    "handled by consumer group %r; a durable channel delivers them again at the "
                    "next start, a memory channel loses them",
                    self.name,
                    left,
                    stats.name,
                    group.name,
                    extra={"reactor_channel": stats.name, "reactor_consumer": group.name},
                )
                self._publish_system(
                    lifecycle.lifecycle(
                        lifecycle.DRAIN_ABANDONED,
                        group.name,
                        channel=stats.name,
                        group=group.name,
                        events=left,
                    )
                )

    def _finish(self, deadline: float | None = None) -> None:
        # Nothing drains the channels any more: wake every publisher still waiting.
        for channel in self._channels.values():
            channel.gate.close()
        # Reap every actor thread we started, within what is left of the deadline.
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(_left(deadline) if deadline is not None else 1.0)
        if self._owns_clock and isinstance(self.clock, SystemClock):
            self.clock.close()
        for channel in self._channels.values():
            channel.close()
        with self._lock:
            if self._state != "failed":
                self._state = "stopped"
        self._done.set()
        self._notify_idle()

    def _escalated(self, escalation: SupervisorEscalation) -> None:
        # Runs in the root's thread, after it stopped every child.
        self._failure = escalation
        with self._lock:
            self._state = "failed"
        logger.error("system %r failed: %s", self.name, escalation)
        threading.Thread(
            target=self._finish, args=(time.monotonic() + 10.0,), name="reactor:finish", daemon=True
        ).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the system has stopped; True if it did within ``timeout``.

        Raises:
            SupervisorEscalation: the root supervisor gave up; carries the chain of causes.
        """
        stopped = self._done.wait(timeout)
        if self._failure is not None:
            raise self._failure
        return stopped

    def run_forever(
        self,
        *,
        drain_timeout: float = 30.0,
        on_stopping: Callable[[bool], None] | None = None,
    ) -> None:
        """Run until SIGINT or SIGTERM, then drain and stop; a second signal stops at once.

        Signals are handled only when called from the main thread; elsewhere it runs
        until :meth:`stop`. The loop is :func:`reactor.runtime.serve.serve`, the same
        one ``reactor run`` and ``reactor worker`` use. When it returns the system
        is ``stopped``.

        Args:
            drain_timeout: how long the graceful stop may take.
            on_stopping: told ``False`` when the graceful stop begins and ``True``
                when a second signal stops at once.

        Raises:
            SupervisorEscalation: the root supervisor gave up.
        """
        serve(self, drain_timeout=drain_timeout, on_stopping=on_stopping)
        self.wait(0)  # raises the escalation if the root gave up

    def __enter__(self) -> System:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(drain=exc_type is None)

    def __repr__(self) -> str:
        return f"<System {self.name!r} {self._state}>"


def _contains_selected(decl: Any, selected: Any) -> bool:
    if not isinstance(decl, SupervisorDecl):
        return False
    return any(
        selected(child.name) or _contains_selected(child, selected) for child in decl.children
    )


def _left(deadline: float | None) -> float:
    if deadline is None:
        return 0.0
    return max(0.0, deadline - time.monotonic())


def _key_function(key: Any) -> Any:
    if key is None or callable(key):
        return key
    field = key

    def by_field(data: Any) -> str | None:
        if isinstance(data, Mapping) and data.get(field) is not None:
            return str(data[field])
        return None

    return by_field
