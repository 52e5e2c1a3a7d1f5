"""The supervisor actor: starts, watches and restarts children with OTP semantics.

A supervisor owns an ordered list of children. It starts them one by one, in
declaration order, each counting as started once its ``on_start`` returned. When a
child exits it applies its strategy (``one_for_one``, ``one_for_all``,
``rest_for_one``) and the child's restart type (``permanent``, ``transient``,
``temporary``). More than ``max_restarts`` restarts within ``within_s`` seconds
and the supervisor stops its children in reverse order and fails to its own
parent, which applies *its* strategy: escalation climbs the tree.

Children keep their :class:`~reactor.actors.address.Address` (and so their
mailbox) and their counters across restarts.

A handler cannot be interrupted, so a child whose handler runs longer than its
``handler_timeout`` is *abandoned*: fenced (its late results are ignored, it will
exit as soon as its handler returns) and replaced by a new incarnation.

One concept, so one module despite its length: the supervisor actor (with the
messages that change its children while it runs); the strategies and backoff it
applies are plain values in :mod:`reactor.supervision.strategy`.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ReactorActor
from reactor.actors.counters import ActorCounters
from reactor.errors import SupervisorEscalation
from reactor.messages import lifecycle
from reactor.messages.control import ChildExited, ErrorInfo, ExitReason, Tick
from reactor.messages.event import Event
from reactor.supervision.strategy import OneForOne, RestartType, Strategy

__all__ = ["ChildSpec", "Supervisor", "SupervisorConfig"]

logger = logging.getLogger("reactor")

_START_TIMEOUT_S = 30.0
# The token of every restart timer. Each pending child carries its own due time, so a
# timer only says "look again": an early or stale one (even one left in the mailbox by
# an earlier incarnation of this supervisor) starts nothing that is not due.
_RESTART = "restart"


@attrs.frozen(slots=True, eq=False)
class ChildSpec:
    """How to start, restart and stop one child.

    Attributes:
        name: unique in the system; also the child's address name.
        start: starts one incarnation on the given context and returns it.
        restart: ``permanent``, ``transient`` or ``temporary``.
        shutdown_s: how long a stop may take before the child is abandoned.
        start_timeout: how long its start (``on_start``) may take before it counts as
            a failed start; None waits as long as it takes, for a supervisor, whose
            own children's starts are each bounded (its subtree may hold thousands).
        kind: what the child is (``consumer``, ``producer``, ``channel``, ``supervisor``...).
        address: the child's stable address (made from ``name`` when omitted).
        counters: the child's counters, kept across restarts.
        handler_timeout: seconds a handler may run before the child is abandoned.
        on_abandoned: called (in the supervisor) with what a hung incarnation was on
            (its counters' ``current``) when it is abandoned, to settle that event.
        on_removed: called when the child exits for good (not restarted), to hand
            back anything it held.
    """

    name: str
    start: Callable[[ActorContext], ReactorActor]
    restart: RestartType = "permanent"
    shutdown_s: float = 5.0
    start_timeout: float | None = _START_TIMEOUT_S
    kind: str = "worker"
    address: Address | None = None
    counters: ActorCounters = attrs.field(factory=ActorCounters)
    handler_timeout: float | None = None
    on_abandoned: Callable[[tuple[int, int, float]], None] | None = None
    on_removed: Callable[[], None] | None = None


@attrs.frozen(slots=True, eq=False)
class SupervisorConfig:
    """A supervisor's own settings."""

    name: str
    strategy: Strategy = attrs.field(factory=OneForOne)
    children: tuple[ChildSpec, ...] = ()
    publish_system: Callable[[Event], None] | None = None
    on_escalate: Callable[[SupervisorEscalation], None] | None = None
    seed: int | None = None


class _Child:
    __slots__ = (
        "actor",
        "address",
        "consecutive",
        "handled_at_start",
        "incarnation",
        "last_start",
        "restart_at",
        "spec",
    )

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.address = spec.address if spec.address is not None else Address(spec.name)
        self.actor: ReactorActor | None = None
        self.incarnation = 0
        self.consecutive = 0  # restarts in a row, for backoff
        self.last_start = 0.0
        self.handled_at_start = 0  # the child's handled count when last started
        # While pending a restart: when it falls due (clock time). None means "with the
        # next restart": a child that waits for an earlier one that failed to start.
        self.restart_at: float | None = None

    @property
    def counters(self) -> ActorCounters:
        return self.spec.counters


class Supervisor(ReactorActor):
    """Supervises an ordered list of children; see the module docstring.

    Messages from outside: :class:`AddChild`, :class:`RemoveChild`,
    :class:`StopChildren` (all asks). Thread-safety: talk to it only through its
    address.
    """

    def __init__(self, context: ActorContext, config: SupervisorConfig) -> None:
        super().__init__(context)
        self.config = config
        self.strategy = config.strategy
        self.children: list[_Child] = [_Child(spec) for spec in config.children]
        self._restarts: deque[float] = deque()
        self._rng = random.Random(config.seed)
        self._pending_restart: list[_Child] = []
        self._watchdog_token: object | None = None
        self._giving_up = False

    # -- lifecycle -------------------------------------------------------------------

    def on_start(self) -> None:
        self.actor_counters.state = "running"
        self._start_children(list(self.children))
        self._arm_watchdog()

    def on_stop(self) -> None:
        self._stop_children(list(self.children))
        self.actor_counters.state = "stopped"

    def on_crash(self, reason: ExitReason) -> None:
        # Whatever made us fail, our children must not outlive us.
        self._stop_children(list(self.children))
        self.actor_counters.state = "failed"
        exc = reason.exception
        if self.actor_context.parent is None and self.config.on_escalate is not None:
            if not isinstance(exc, SupervisorEscalation):
                exc = SupervisorEscalation(self.config.name, (self.config.name,), exc)
            self.config.on_escalate(exc)

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is ChildExited:
            self._child_exited(message)
        elif kind is Tick:
            self._tick(message.token)
        elif kind is AddChild:
            return self._add_child(message.spec)
        elif kind is RemoveChild:
            return self._remove_child(message.name)
        elif kind is StopChildren:
            self._stop_children([c for c in self.children if c.spec.name in message.names])
        else:
            return super().on_receive(message)
        return None

    # -- starting and stopping children --------------------------------------------

    def _start_children(self, children: list[_Child]) -> None:
        for index, child in enumerate(children):
            if self.actor_stopping:
                # Stopped or abandoned (fenced) while starting: start nothing more. The
                # children started so far are stopped when this incarnation ends.
                return
            reason = self._start_child(child)
            if reason is None:
                continue
            # Start order is kept: the rest wait for this child. Its failure is handled
            # like a crash, which may restart it (and, by strategy, the ones after it).
            rest = [c for c in children[index + 1 :] if c not in self._pending_restart]
            for later in rest:
                later.restart_at = None  # due with the next restart, which is this child's
                self._pending_restart.append(later)
            self._handle_exit(child, reason)
            waiting = [c for c in rest if c in self._pending_restart and c.restart_at is None]
            if child in self._pending_restart:
                # Its restart is delayed (backoff): the rest start with it, not before.
                for later in waiting:
                    later.restart_at = child.restart_at
            elif child.actor is None and waiting:
                # It is not coming back (a temporary child): nothing left to wait for.
                for later in waiting:
                    self._pending_restart.remove(later)
                self._start_children(waiting)
            return

    def _start_child(self, child: _Child) -> ExitReason | None:
        child.incarnation += 1
        child.last_start = self.actor_clock.monotonic()
        counters = child.counters
        child.handled_at_start = counters.handled
        context = ActorContext(
            child.address,
            self.actor_clock,
            parent=self.actor_address,
            incarnation=child.incarnation,
            counters=counters,
            threads=self.actor_context.threads,
        )
        counters.state = "starting"
        try:
            actor = child.spec.start(context)
            child.actor = actor
            actor.actor_started.get(timeout=child.spec.start_timeout)
        except BaseException as exc:
            if child.actor is not None:
                child.actor.fence()
            child.actor = None
            counters.state = "failed"
            return ExitReason("crash", ErrorInfo.from_exception(exc), exc)
        counters.state = "running"
        self._emit(lifecycle.ACTOR_STARTED, child, incarnation=child.incarnation)
        return None

    def _stop_children(self, children: list[_Child]) -> None:
        for child in reversed(children):
            self._stop_child(child)

    def _stop_child(self, child: _Child) -> None:
        actor = child.actor
        if child in self._pending_restart:
            self._pending_restart.remove(child)
        if actor is None:
            if child.counters.state in ("restarting", "starting"):
                child.counters.state = "stopped"
            return
        child.actor = None
        child.counters.state = "stopping"
        actor.request_stop()
        data: dict[str, Any] = {"incarnation": child.incarnation}
        if not actor.join(child.spec.shutdown_s):
            actor.fence()
            logger.warning(
                "%s did not stop within %ss; abandoned its thread",
                child.spec.name,
                child.spec.shutdown_s,
            )
            data["reason"] = "timeout"
        else:
            # Its exit report will be ignored (we no longer hold it), so an abnormal end
            # (on_stop raised, or a crash raced the stop) is told here, as OTP reports a
            # shutdown_error.
            reason = actor.actor_exit_reason
            if reason is not None and reason.abnormal and reason.error is not None:
                logger.warning(
                    "%s ended abnormally while being stopped: %s: %s",
                    child.spec.name,
                    reason.error.type,
                    reason.error.message,
                )
                data.update(
                    reason=reason.kind, error_type=reason.error.type, message=reason.error.message
                )
        child.counters.state = "stopped"
        self._emit(lifecycle.ACTOR_STOPPED, child, **data)

    # -- exits -----------------------------------------------------------------------

    def _child_exited(self, message: ChildExited) -> None:
        child = self._find(message.name)
        actor = child.actor if child is not None else None
        if child is None or actor is None or child.incarnation != message.incarnation:
            return  # a stale report: that incarnation was already stopped or replaced
        if not actor.actor_stopped.is_set():
            # The incarnation we hold is alive, so this report is from another actor with
            # the same name and number: a child of an earlier incarnation of this
            # supervisor, stopped by it, whose report waited in our (shared) mailbox.
            return
        actor.join(1.0)  # it is past its last line; reap the thread
        child.actor = None
        # The actor's own record is the truth even if a stale report came first.
        reason = actor.actor_exit_reason if actor.actor_exit_reason is not None else message.reason
        self._handle_exit(child, reason)

    def _handle_exit(self, child: _Child, reason: ExitReason) -> None:
        spec = child.spec
        counters = child.counters
        if reason.abnormal:
            counters.failed += 1
            counters.state = "failed"
            logger.warning(
                "%s %r failed (%s): %s",
                spec.kind,
                spec.name,
                reason.kind,
                f"{reason.error.type}: {reason.error.message}" if reason.error else reason.kind,
                extra={"reactor_actor": spec.name, "reactor_supervisor": self.config.name},
            )
            self._emit(
                lifecycle.ACTOR_FAILED,
                child,
                error_type=reason.error.type if reason.error else reason.kind,
                message=reason.error.message if reason.error else "",
                reason=reason.kind,
                incarnation=child.incarnation,
            )
        else:
            counters.state = "stopped"
            self._emit(lifecycle.ACTOR_STOPPED, child, incarnation=child.incarnation)
        if spec.restart == "temporary" or (spec.restart == "transient" and not reason.abnormal):
            self._removed(child)
            return
        self._restart(child, reason)

    def _removed(self, child: _Child) -> None:
        if child.spec.on_removed is not None:
            child.spec.on_removed()

    def _restart(self, child: _Child, reason: ExitReason) -> None:
        now = self.actor_clock.monotonic()
        window = self.strategy.within_s
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > window:
            self._restarts.popleft()
        if len(self._restarts) > self.strategy.max_restarts:
            self._escalate(reason)
            return
        index = self.children.index(child)
        kind = self.strategy.kind
        if kind == "one_for_all":
            group = list(self.children)
        elif kind == "rest_for_one":
            group = self.children[index:]
        else:
            group = [child]
        siblings = [c for c in group if c is not child]
        self._stop_children(siblings)
        for sibling in siblings:
            if sibling.spec.restart == "temporary":
                # Never restarted, not even when a sibling's restart sweeps it away.
                self._removed(sibling)
        group = [c for c in group if c is child or c.spec.restart != "temporary"]
        progressed = child.counters.handled > child.handled_at_start
        if progressed or now - child.last_start >= self.strategy.backoff.reset_after_s:
            child.consecutive = 0
        child.consecutive += 1
        due = now + self.strategy.backoff.delay(child.consecutive, self._rng)
        # A group restarts together, in start order, so it waits for the member whose
        # own backoff ends last; other pending children keep their own due times.
        for member in group:
            if member in self._pending_restart and member.restart_at is not None:
                due = max(due, member.restart_at)
        for member in group:
            member.counters.state = "restarting"
            # Swept siblings count too: metrics say how often each actor was restarted.
            member.counters.restarts += 1
            member.restart_at = due
            if member not in self._pending_restart:
                self._pending_restart.append(member)
        self._pending_restart.sort(key=self.children.index)
        logger.warning(
            "%s restarts %r in %.2fs (restart %d in a row)%s",
            self.config.name,
            child.spec.name,
            due - now,
            child.consecutive,
            f", with {[m.spec.name for m in group if m is not child]}" if len(group) > 1 else "",
            extra={"reactor_actor": child.spec.name, "reactor_supervisor": self.config.name},
        )
        self._emit(
            lifecycle.ACTOR_RESTARTED,
            child,
            attempt=child.consecutive,
            backoff_s=due - now,
            incarnation=child.incarnation + 1,
            group=[member.spec.name for member in group],
        )
        if due > now:
            address = self.actor_address
            self.actor_clock.call_later(due - now, lambda: address.tell(Tick(_RESTART)))
        else:
            self._restart_due()

    def _restart_due(self) -> None:
        """Start, in start order, every pending child whose restart is due."""
        now = self.actor_clock.monotonic()
        due = [c for c in self._pending_restart if c.restart_at is None or c.restart_at <= now]
        if not due:
            return
        self._pending_restart = [c for c in self._pending_restart if c not in due]
        self._start_children(due)

    def _escalate(self, reason: ExitReason) -> None:
        cause = reason.exception
        if isinstance(cause, SupervisorEscalation):
            chain = (*cause.chain, self.config.name)
            cause = cause.reason
        else:
            chain = (self.config.name,)
        escalation = SupervisorEscalation(self.config.name, chain, cause)
        self._emit_raw(
            lifecycle.SUPERVISOR_ESCALATED,
            self.config.name,
            chain=list(chain),
            error_type=type(cause).__name__ if cause is not None else reason.kind,
            message=str(cause) if cause is not None else "",
        )
        logger.error(
            "supervisor %r exceeded its restart intensity (%d restarts in %ss) and gives up: %s",
            self.config.name,
            self.strategy.max_restarts,
            self.strategy.within_s,
            escalation,
            extra={"reactor_actor": self.config.name, "reactor_supervisor": self.config.name},
        )
        self._giving_up = True
        raise escalation

    # -- timers ----------------------------------------------------------------------

    def _tick(self, token: Any) -> None:
        if token == _RESTART:
            self._restart_due()
        elif token is not None and token is self._watchdog_token:
            self._watchdog()
            self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        timeouts = [c.spec.handler_timeout for c in self.children if c.spec.handler_timeout]
        if not timeouts:
            return
        token = object()
        self._watchdog_token = token
        period = max(0.005, min(timeouts) / 4)
        self.actor_clock.call_later(period, lambda: self.actor_address.tell(Tick(token)))

    def _watchdog(self) -> None:
        now = self.actor_clock.monotonic()
        for child in list(self.children):
            timeout = child.spec.handler_timeout
            current = child.counters.current  # one read: what it is on, and since when
            if timeout is None or current is None or child.actor is None:
                continue
            if now - current[-1] <= timeout:
                continue
            actor, child.actor = child.actor, None
            actor.fence()
            if child.counters.current is current:
                child.counters.current = None
            if child.spec.on_abandoned is not None:
                child.spec.on_abandoned(current)
            logger.warning(
                "%s: handler ran longer than %ss; abandoned it", child.spec.name, timeout
            )
            error = ErrorInfo(
                "HandlerTimeout",
                f"handler of {child.spec.name} ran longer than its handler_timeout of {timeout}s",
                "",
            )
            self._handle_exit(child, ExitReason("timeout", error))

    # -- dynamic children (pools) ----------------------------------------------------

    def _add_child(self, spec: ChildSpec) -> bool:
        if self._find(spec.name) is not None:
            raise ValueError(f"supervisor {self.config.name!r} already has a child {spec.name!r}")
        child = _Child(spec)
        self.children.append(child)
        reason = self._start_child(child)
        if reason is not None:
            self._handle_exit(child, reason)
            return False
        self._arm_watchdog()
        return True

    def _remove_child(self, name: str) -> bool:
        child = self._find(name)
        if child is None:
            return False
        self._stop_child(child)
        self.children.remove(child)
        self._removed(child)
        return True

    def _find(self, name: str) -> _Child | None:
        for child in self.children:
            if child.spec.name == name:
                return child
        return None

    # -- $system events --------------------------------------------------------------

    def _emit(self, topic: str, child: _Child, **data: Any) -> None:
        self._emit_raw(
            topic, child.spec.name, kind=child.spec.kind, supervisor=self.config.name, **data
        )

    def _emit_raw(self, topic: str, actor: str, **data: Any) -> None:
        publish = self.config.publish_system
        if publish is None:
            return
        try:
            publish(lifecycle.lifecycle(topic, actor, **data))
        except Exception:  # observability must never take the supervisor down
            logger.exception("could not publish %s for %s", topic, actor)


@attrs.frozen(slots=True, eq=False)
class AddChild:
    """Start a new child at the end of the supervisor's list (an ask)."""

    spec: ChildSpec


@attrs.frozen(slots=True)
class RemoveChild:
    """Stop a child for good and forget it (an ask)."""

    name: str


@attrs.frozen(slots=True)
class StopChildren:
    """Stop the named children, in reverse start order, without restarting them."""

    names: frozenset[str]
