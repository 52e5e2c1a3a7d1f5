"""A running topology: start, publish, observe, drain and stop.

The supervision tree is built by :mod:`reactor.runtime.assembly`: ``$channels``,
``$consumers`` and ``$producers`` under ``$root``, started in that order and
stopped in reverse, so consumers are ready before producers emit, and channels
outlive everyone who talks to them. :class:`System` is the facade over it.

One concept, the running system's facade, which is why this module may pass 500
lines: what is not the facade (assembly, the run loop) lives beside it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ActorThreads
from reactor.channels.backend import (
    CarriesReplies,
    DeadLetter,
    DeadLetters,
    Replayable,
    ReportsProblems,
)
from reactor.channels.sagas import SAGA_STATES, SagaInstance
from reactor.clock import Clock, SystemClock
from reactor.errors import (
    IdleTimeout,
    NotDurableError,
    SupervisorEscalation,
    SystemStoppedError,
    UnknownProjectionError,
    UnknownSagaError,
    UsageError,
)
from reactor.messages import lifecycle
from reactor.messages.event import REPLY_TO, Event
from reactor.runtime.assembly import Assembly
from reactor.runtime.controls import Controls
from reactor.runtime.metrics import (
    Health,
    ProjectionMetrics,
    SagaMetrics,
    SystemMetrics,
    actor_metrics,
)
from reactor.runtime.projections import Projection, ProjectionSnapshot
from reactor.runtime.replies import ReplyFuture, no_reply
from reactor.runtime.router import Router
from reactor.runtime.sagadecl import SagaDecl
from reactor.runtime.scheduling import due_time
from reactor.runtime.serve import serve
from reactor.supervision.supervisor import StopChildren, Supervisor
from reactor.text import did_you_mean, names_or_none, redact_url

if TYPE_CHECKING:
    from reactor.runtime.topology import Topology

__all__ = ["System"]

logger = logging.getLogger("reactor")

_RECENT_LIFECYCLE = 200
_STOP_STEP_S = 0.1
# The states in which publish() takes events.
_ACCEPTING = frozenset({"running", "starting"})
# How long start() waits for the whole tree: a base, plus a share per actor, since a
# topology of 10,000 consumers takes seconds to start on a busy machine.
_START_S = 60.0
_START_PER_ACTOR_S = 0.01


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
        self._router = Router({}, self.clock)
        # The projections, made once the topology is valid (start()); the assembly feeds them.
        self._projections: dict[str, Projection] = {}
        self._assembly = Assembly(
            topology,
            self.only,
            clock=self.clock,
            seed=seed,
            router=self._router,
            publish_system=self._publish_system,
            notify_idle=self._notify_idle,
            projections=self._projections,
        )
        # The assembly's tables, read here for metrics, health and idleness.
        self._channels = self._assembly.channels
        self._actors = self._assembly.actors
        self._producers = self._assembly.producers
        #: Hand controls: crash an actor, pause, resume, rate and flood a producer.
        self.controls = Controls(self._actors, self._producers)
        self._recent: collections.deque[Event] = collections.deque(maxlen=_RECENT_LIFECYCLE)
        self._root: Supervisor | None = None
        self._threads = ActorThreads()
        self._stop_deadline = 0.0
        self._hurried = False  # a stop at once arrived while a drain was running
        self._abandoned = 0  # events the drain deadline left unhandled
        self._start_error = ""  # why start() raised, for health()

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
            self._assembly.check_only()
            self._projections.update(
                (name, Projection(decl, self.clock))
                for name, decl in self.topology.projections.items()
                if self.only is None or name in self.only
            )
            self._state = "starting"
        try:
            self._router.channels.update(self._assembly.open_channels())
            # Each projection resumes from its checkpoint before anything is delivered.
            for projection in self._projections.values():
                channel = projection.decl.channel
                projection.attach(self._channels[channel], self.topology.channel_upcasters(channel))
        except BaseException as exc:
            self._start_failed(exc)
            raise
        config = self._assembly.root(on_escalate=self._escalated)
        self._started_at = time.monotonic()
        context = ActorContext(
            Address("$root"),
            self.clock,
            counters=self._actors["$root"].counters,
            threads=self._threads,
        )
        root = Supervisor.spawn(context, config)
        self._root = root
        try:
            root.actor_started.get(timeout=_START_S + _START_PER_ACTOR_S * len(self._actors))
        except BaseException as exc:
            root.join(10)
            self._start_failed(exc)
            raise
        with self._lock:
            if self._state == "starting":
                self._state = "running"
        return self

    def _start_failed(self, error: BaseException) -> None:
        # A start that raised leaves nothing running: stop() and wait() return at once,
        # and the state and health say the start failed instead of staying "starting".
        with self._lock:
            self._state = "failed"
            self._start_error = f"start failed: {type(error).__name__}: {error}"
        self._finish()

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
        delay: float | None = None,
        at: datetime | None = None,
        version: int | None = None,
    ) -> Event:
        """Publish one event; returns it (with its id) once it is in the channel.

        ``topic`` may also be a ready-made :class:`~reactor.Event`. ``version`` is the
        schema version of ``data`` (:attr:`Event.version`; 1 when not given).

        With ``delay`` (seconds) or ``at`` (a timezone-aware ``datetime``) the event
        waits in the channel's scheduled area and enters the channel at that time
        (wall time of the system's clock); it returns once the event is scheduled
        (stored, on ``sqlite`` and ``redis``). See "Delayed and scheduled events"
        in the README.

        Raises:
            SystemStoppedError: the system is not running.
            UnknownChannelError: no such channel.
            InvalidTopicError / ImmutableMessageError: bad topic or payload; nothing published.
            EventTooLargeError: the event is bigger, encoded, than the channel's
                ``max_event_size``; nothing published.
            ScheduleError: bad ``delay`` / ``at`` (negative, naive, both given).
            BackpressureTimeout: ``block`` channel (or memory scheduled area) still full
                after ``timeout`` seconds.
            ChannelFull: ``reject`` channel (or memory scheduled area) is full.
        """
        event = (
            topic
            if isinstance(topic, Event)
            else Event.create(topic, data, key=key, headers=headers, version=version)
        )
        if self._state not in _ACCEPTING:
            self._check_running()
        if delay is None and at is None:
            self._router.publish_one(channel, event, timeout=timeout)
        else:
            due = due_time(self.clock, delay, at)
            self._router.schedule(channel, (event,), due=due, timeout=timeout)
        return event

    def publish_many(
        self,
        channel: str,
        events: Iterable[Event],
        *,
        timeout: float | None = 30.0,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> int:
        """Publish ready-made events in order, in as few messages as capacity allows.

        ``delay`` / ``at``: all of them later, as :meth:`publish` does one (events
        due at the same time enter the channel in the order given).

        Returns:
            How many entered the channel, or were scheduled (fewer only under
            ``drop_newest``).

        Raises:
            NotAnEventError: an item is not an :class:`~reactor.Event`; every item is
                checked first, so nothing was published and no capacity was taken.
            ScheduleError: bad ``delay`` / ``at``.
            EventTooLargeError: an event is bigger, encoded, than the channel's
                ``max_event_size``; nothing was published.
        """
        self._check_running()
        if delay is None and at is None:
            return self._router.publish(channel, list(events), timeout=timeout)
        due = due_time(self.clock, delay, at)
        return self._router.schedule(channel, list(events), due=due, timeout=timeout)

    def request(
        self,
        channel: str,
        topic: str,
        data: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Event:
        """Publish a request and wait for its reply: the event a handler returned as
        ``event.reply(data)``.

        ``timeout`` covers both the publish (on a full channel) and the wait. Over a
        ``redis`` channel the consumer may run in another process (``reactor worker``).

        Raises:
            RequestTimeout: no reply within ``timeout``; a reply that comes later is
                dropped and counted in ``metrics().late_replies``.
            (and what :meth:`publish` raises)
        """
        deadline = time.monotonic() + timeout
        request = Event.create(topic, data, key=key, headers=headers)
        future = self.submit_request(channel, request, timeout=timeout)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise no_reply(future.request, channel, timeout) from None

    def submit_request(
        self, channel: str, request: Event, *, timeout: float | None = 30.0
    ) -> ReplyFuture:
        """Publish ``request`` as a request and return a future of its reply, for
        callers that wait their own way (:class:`~reactor.AsyncSystem` awaits it).

        The request goes out with a ``reactor-reply-to`` header added; the future's
        ``request`` is that event. Cancel the future to stop waiting; a reply that
        comes later is dropped and counted.

        Raises:
            what :meth:`publish` raises (``timeout`` is the publish's).
        """
        replies = self._router.replies
        request = attrs.evolve(request, headers={**request.headers, REPLY_TO: replies.inbox})
        self._check_running()
        handle = self._router.channel(channel)
        if isinstance(handle, CarriesReplies):
            handle.open_inbox(replies.inbox, replies.deliver)
        future = replies.expect(request)
        try:
            self._router.publish(channel, (request,), timeout=timeout)
        except BaseException:
            future.cancel()
            raise
        return future

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
            TopologyError: bad ``from_`` (also a ``ValueError``).
        """
        handle: Replayable = self._channel_that(
            channel,
            Replayable,
            "keeps no log to replay; "
            "declare it with a durable backend such as backend='sqlite:///path.db'",
        )
        return int(handle.replay(group, from_))

    # -- projections -----------------------------------------------------------------

    def projection(self, name: str) -> ProjectionSnapshot:
        """The read model of projection ``name`` now: its state, position and lag.

        Thread-safety: may be called from any thread, as often as wanted; it never
        waits for a fold (it reads the last one's frozen result).

        Raises:
            UnknownProjectionError: no such projection (also a ``LookupError``).
        """
        projection = self._projection(name)
        state, position, folded = projection.view()
        return ProjectionSnapshot(
            name, projection.decl.channel, state, position, folded, self._lag(projection)
        )

    def rebuild_projection(self, name: str) -> ProjectionSnapshot:
        """Fold projection ``name`` again from the start of its channel's log, and checkpoint it.

        Its consumer waits meanwhile; the rebuilt state replaces the live one (see
        :mod:`reactor.runtime.projections`).

        Raises:
            UnknownProjectionError: no such projection.
            NotDurableError: its channel keeps no log (``memory``).
        """
        self._check_running()
        self._projection(name).rebuild()
        return self.projection(name)

    def _projection(self, name: str) -> Projection:
        projection = self._projections.get(name)
        if projection is None:
            raise UnknownProjectionError(
                f"system {self.name!r} has no projection {name!r}"
                f"{did_you_mean(name, self._projections)} "
                f"(projections: {names_or_none(self._projections)})"
            )
        return projection

    def _lag(self, projection: Projection) -> int:
        """Events the channel still owes ``projection``: its group's backlog and in flight."""
        channel = self._channels.get(projection.decl.channel)
        if channel is None:
            return 0
        for group in channel.stats().groups:
            if group.name == projection.name:
                return group.backlog + group.in_flight
        return 0

    # -- sagas ---------------------------------------------------------------------------

    def start_saga(self, name: str, data: Any = None, *, timeout: float | None = 30.0) -> str:
        """Start an instance of the saga ``name`` with ``data``; returns the instance id.

        Publishes the saga's ``start_on`` event on its channel (so a durable channel
        keeps the start across a crash); the instance id is that event's id.

        Raises:
            UnknownSagaError: no such saga.
            (and what :meth:`publish` raises)
        """
        saga = self._saga(name)
        return self.publish(saga.channel, saga.start_on, data, timeout=timeout).id

    def sagas(self, name: str | None = None, state: str | None = None) -> tuple[SagaInstance, ...]:
        """The instances of saga ``name`` (of every saga if None), oldest first.

        Args:
            name: a declared saga, or None for all of them.
            state: only instances in this state: ``running``, ``compensating``,
                ``completed``, ``compensated`` or ``stuck``.

        Raises:
            UnknownSagaError: no such saga.
            UsageError: no such state (also a ``ValueError``).
        """
        if state is not None and state not in SAGA_STATES:
            raise UsageError(
                f"unknown saga state {state!r}{did_you_mean(state, SAGA_STATES)}; "
                f"use one of {', '.join(SAGA_STATES)}"
            )
        names = [self._saga(name).name] if name is not None else list(self.topology.sagas)
        stores = self._assembly.sagas
        return tuple(record for n in names if n in stores for record in stores[n].instances(state))

    def _saga(self, name: str) -> SagaDecl:
        saga = self.topology.sagas.get(name)
        if saga is None:
            sagas = self.topology.sagas
            raise UnknownSagaError(
                f"system {self.name!r} has no saga named {name!r}{did_you_mean(name, sagas)} "
                f"(sagas: {names_or_none(sagas)}); declare it with topology.saga()"
            )
        return saga

    def _saga_metrics(self) -> tuple[SagaMetrics, ...]:
        found = []
        for name, store in list(self._assembly.sagas.items()):
            counts = store.counts()
            found.append(
                SagaMetrics(
                    name,
                    self.topology.sagas[name].channel,
                    **{state: counts.get(state, 0) for state in SAGA_STATES},
                )
            )
        return tuple(found)

    # -- dead letters (the channel's DeadLetters capability) ------------------------------

    def dead_letters(
        self, channel: str, group: str | None = None, *, limit: int | None = None
    ) -> tuple[DeadLetter, ...]:
        """The dead letters ``channel`` stores (of ``group`` only, if given), oldest first.

        Every backend stores them: ``memory`` the latest 10,000 per channel in this
        process, ``sqlite`` in its log file, ``redis`` in a stream beside the channel's
        (every worker's). Needs a started system (its channels open).

        Raises:
            UnknownChannelError: no such channel. UnknownGroupError: no such group on it.
            SystemStoppedError: the system is not running.
        """
        return tuple(self._letters(channel).dead_letters(group, limit))

    def redrive(
        self, channel: str, ids: Collection[str] | None = None, *, group: str | None = None
    ) -> int:
        """Deliver dead letters again, each to the group that gave up on it, with fresh attempts.

        Only that group gets the event again (other groups of the channel do not),
        and the letters leave the store. Letters whose bytes are no event stay
        (purge them). Needs a running system: its channel actors queue the events.

        Args:
            channel: the channel the letters are stored on.
            ids: the letters' ids (see :attr:`DeadLetter.id`); None: all of them.
            group: only the letters of this group.

        Returns:
            How many letters were redriven.

        Raises:
            UnknownChannelError, UnknownGroupError: no such channel or group.
            UnknownDeadLetterError: an id names no stored letter; nothing was redriven.
            SystemStoppedError: the system is not running.
        """
        return int(self._letters(channel).redrive(ids, group))

    def purge(
        self, channel: str, ids: Collection[str] | None = None, *, group: str | None = None
    ) -> int:
        """Delete dead letters of ``channel`` (all, those of ``group``, or ``ids``); returns how many.

        Raises:
            UnknownChannelError, UnknownGroupError: no such channel or group.
            UnknownDeadLetterError: an id names no stored letter; nothing was purged.
            SystemStoppedError: the system is not running.
        """
        return int(self._letters(channel).purge(ids, group))

    def _letters(self, channel: str) -> DeadLetters:
        letters: DeadLetters = self._channel_that(
            channel, DeadLetters, "does not store dead letters"
        )
        return letters

    def _channel_that(self, channel: str, capability: type, lacks: str) -> Any:
        """The handle of ``channel`` if it has ``capability`` (a channel protocol).

        Raises:
            SystemStoppedError: the system is not running. UnknownChannelError: no such channel.
            NotDurableError: its backend has no such capability; ``lacks`` says what it does not do.
        """
        self._check_running()
        handle = self._router.channel(channel)
        if not isinstance(handle, capability):
            raise NotDurableError(
                f"channel {channel!r} (backend {redact_url(handle.config.backend)!r}) {lacks}"
            )
        return handle

    def _check_running(self) -> None:
        if self._state not in _ACCEPTING:
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
        actors = [
            actor_metrics(
                name,
                entry.kind,
                entry.supervisor,
                entry.counters,
                mailbox=entry.address.depth() if entry.address is not None else 0,
            )
            for name, entry in list(self._actors.items())
        ]
        return SystemMetrics(
            name=self.name,
            state=self._state,
            uptime_s=(time.monotonic() - self._started_at) if self._started_at else 0.0,
            actors=tuple(actors),
            channels=tuple(channel.stats() for channel in self._channels.values()),
            requests_waiting=self._router.replies.waiting(),
            late_replies=self._router.replies.late,
            projections=tuple(
                ProjectionMetrics(
                    name=name,
                    channel=projection.decl.channel,
                    position=projection.view()[1],
                    folded=projection.view()[2],
                    failed=projection.failed,
                    lag=self._lag(projection),
                    checkpoints=projection.checkpoints,
                )
                for name, projection in self._projections.items()
            ),
            sagas=self._saga_metrics(),
        )

    def health(self) -> Health:
        """``ok``, or what is wrong: restarting or failed actors, full channels."""
        if self._state == "failed":
            reason = str(self._failure) if self._failure is not None else self._start_error
            return Health("failed", (reason,))
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
        are not waited for either. Delayed events not yet due (``publish(delay=)``)
        are not waited for; once due, they are like any event.

        Raises:
            IdleTimeout: still busy after ``timeout`` seconds; names what is busy.
            SupervisorEscalation: the system failed; nothing will get idle any more.
            SystemStoppedError: the system is stopped (at once), or stopped while
                this waited: nothing will settle any more.
        """
        if self._state == "stopped":
            # Nothing will settle any more: waiting out the timeout would only hide that.
            raise SystemStoppedError(
                f"system {self.name!r} is stopped; wait_idle() before stop(), or start a new system"
            )
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
                if not hurry and self._state == "stopped":
                    raise SystemStoppedError(
                        f"system {self.name!r} stopped while wait_idle() waited, with events "
                        "unsettled; call wait_idle() before stop()"
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    busy = "; ".join(self.busy(producers=producers))
                    raise IdleTimeout(f"system {self.name!r} not idle after {timeout}s: {busy}")
                # Notified when a gate empties, a producer finishes or a stop hurries;
                # the cap is a safety net.
                self._idle.wait(0.1 if remaining is None else min(0.1, remaining))

    def busy(self, *, producers: bool = True) -> tuple[str, ...]:
        """What keeps the system from being idle, one phrase each; empty when idle.

        Each names a channel and how many unsettled events it holds, or a finite
        producer still producing (with ``producers``).
        """
        busy = [
            f"channel {c.name!r} holds {c.gate.used} unsettled event(s)"
            for c in self._channels.values()
            if c.gate.used
        ]
        if producers:
            busy += [
                f"producer {p.name!r} is still producing"
                for p in self._producers
                if p.finite and not p.finished.is_set()
            ]
        return tuple(busy)

    def _notify_idle(self) -> None:
        with self._idle:
            self._idle.notify_all()

    # -- stopping --------------------------------------------------------------------

    def stop(self, timeout: float = 10.0, *, drain: bool = True) -> None:
        """Stop producers, drain what is in flight, then stop consumers and channels.

        Always returns within ``timeout`` seconds. With ``drain=False`` in-flight
        events are not waited for. Delayed events not yet due are not drained: a
        durable channel keeps them stored for the next start, a memory channel
        loses them (logged as a warning with their count). A handler still running at the deadline is
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

    @property
    def abandoned(self) -> int:
        """Events the graceful stop's drain deadline left unhandled (0 if it finished).

        A durable channel delivers them again at the next start; a memory channel
        has lost them. ``reactor run`` reports them in its exit status.
        """
        return self._abandoned

    def unreachable(self) -> tuple[str, ...]:
        """Why each channel that cannot reach its broker takes no events now (empty if none).

        Thread-safety: may be called from any thread.
        """
        return tuple(
            f"channel {channel.name!r} {channel.gate.suspended}"
            for channel in list(self._channels.values())
            if channel.gate.suspended is not None
        )

    def _report_abandoned(self) -> None:
        """Say, per consumer group, how many events the drain deadline left unhandled."""
        for stats in self.metrics().channels:
            if stats.name == lifecycle.SYSTEM_CHANNEL:
                continue
            for group in stats.groups:
                left = group.backlog + group.in_flight
                if not left:
                    continue
                self._abandoned += left
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
        for projection in self._projections.values():
            try:
                projection.close()  # its last checkpoint, while its channel is open
            except Exception:
                logger.exception("projection %r: its last checkpoint failed", projection.name)
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


def _left(deadline: float | None) -> float:
    if deadline is None:
        return 0.0
    return max(0.0, deadline - time.monotonic())
