"""Sagas: ordered steps whose state is stored, so a restart resumes them.

A saga (declared with :meth:`reactor.Topology.saga`, see
:mod:`reactor.runtime.sagadecl`) runs as one consumer on its channel, named and
grouped ``$saga.<name>``, whose handler is a :class:`SagaRunner`. It takes the
events that start an instance, the replies to its commands and its own timer
events; each moves one instance (keyed by the instance id, so one instance's
events come in order) from one stored :class:`~reactor.channels.sagas.SagaInstance`
to the next. Because the runner is a consumer, an event it was handling when the
process died is delivered again on a durable channel.

**Intent before action.** Before a step's command is sent (or its function run)
the instance is saved with the step ``acting`` and the command's id, not yet
``sent``; once the command is in the channel it is saved ``sent``. A restart (or a
redelivered event) that finds an action or compensation recorded but not known
sent cannot tell whether it went out: it sends it again once, *with the same
event id* (an ``idempotent=True`` participant skips the copy), runs a function
again, and says so: a warning on the ``reactor`` logger, a
``$system.saga.resent`` event and the step's ``resent`` count. Otherwise a
resumed saga never takes an action twice.

**Failure.** An error reply or a raising function fails the step; no reply
within the step's ``timeout`` fails it as ``timed_out``, and since it may have
acted, it is compensated too. The completed steps are then compensated in
reverse order. A compensation that fails (error reply, exception, timeout) is
tried again after the saga's ``retry`` delay, up to ``max_attempts`` attempts;
then the saga ends ``stuck``: the runner records it (with the id of the event it
was handling, the instance's ``letter``), publishes ``$system.saga.stuck`` and
raises :class:`~reactor.errors.SagaStuck`, which makes its consumer dead-letter
that event at once; the letter (error type ``SagaStuck``, its message naming the
saga, instance and step) is stored by the channel for the group ``$saga.<name>``.
That event coming again, redriven or redelivered after a crash before its letter
was stored, tries the stuck compensation again with fresh attempts: it succeeds,
or the saga is stuck again with a new letter; no letter is lost. A saga stuck
while resuming at start (no event in hand) schedules a timer event that carries
its letter.

**Timers.** Timeouts and retries are delayed events of topic
``reactor.saga.<name>.timeout`` / ``.retry`` that the runner schedules on its
channel (:meth:`Router.schedule <reactor.runtime.router.Router.schedule>`, see
:mod:`reactor.runtime.scheduling`): on ``sqlite`` and ``redis`` they are stored
with the channel's events before the step is recorded as sent, so a restart
neither loses nor fires them early. A scheduled event cannot be taken back: the
timer of an attempt already settled is ignored when it comes (it names the
command it was armed for).

Thread-safety: a :class:`SagaRunner` is called by its consumer's thread only
(``on_start``, ``handle``). A saga runs in one process: do not start its consumer
in two workers.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from reactor.channels.sagas import ACTIVE_STATES, SagaInstance, SagaStep, SagaStore
from reactor.clock import Clock
from reactor.errors import SagaStuck
from reactor.messages import lifecycle
from reactor.messages.event import FAILURE_CHANNEL, FAILURE_TOPIC, Event, new_event_id
from reactor.runtime.router import Router
from reactor.runtime.sagadecl import SagaDecl, StepDecl, saga_consumer, saga_topic

__all__ = ["SAGA_HEADER", "STEP_HEADER", "SagaRunner"]

logger = logging.getLogger("reactor")

# Headers of every command a saga sends: which saga and which step sent it.
SAGA_HEADER = "reactor-saga"
STEP_HEADER = "reactor-saga-step"


class SagaRunner:
    """The handler of a saga's consumer: the state machine of its instances.

    Args:
        decl: the saga.
        store: where its instances are kept (the backend of its channel).
        router: publishes its commands and schedules its timer events.
        clock: the wall time of records and of due times.
        publish_system: publishes ``$system.saga.*`` events and dead letters.
        seed: seeds the jitter of compensation retries.
    """

    def __init__(
        self,
        decl: SagaDecl,
        store: SagaStore,
        router: Router,
        *,
        clock: Clock,
        publish_system: Callable[[Event], None],
        seed: str | None = None,
    ) -> None:
        self.decl = decl
        self.store = store
        self._router = router
        self._clock = clock
        self._publish_system = publish_system
        self._rng = random.Random(seed)
        self._name = decl.name
        self._consumer = saga_consumer(decl.name)
        self._timeout_topic = saga_topic(decl.name, "timeout")
        self._retry_topic = saga_topic(decl.name, "retry")
        self._handling: Event | None = None  # the event being handled, if any

    # -- the consumer's hooks -----------------------------------------------------------

    def on_start(self) -> None:
        """Resume every active instance: settle what it left recorded but unconfirmed.

        A store that cannot be read now (its broker unreachable) does not keep the
        consumer from starting: the events it was handling come again, and each
        settles its own instance then.
        """
        try:
            for state in sorted(ACTIVE_STATES):
                for record in self.store.instances(state):
                    self._settle(record, None)
            for record in self.store.instances("stuck"):
                if record.letter is None:  # stopped before its letter was on its way
                    self._letter_later(record)
        except Exception:
            logger.warning(
                "saga %r: could not resume its active instances at start; each resumes when "
                "its next event comes",
                self._name,
                exc_info=True,
            )

    def handle(self, event: Event) -> None:
        """Move the instance ``event`` is about; ignore what concerns no waiting step.

        Raises:
            SagaStuck: the instance is stuck now: dead-letter ``event``.
        """
        self._handling = event
        try:
            self._handle(event)
        finally:
            self._handling = None

    def _handle(self, event: Event) -> None:
        topic = event.topic
        if topic in (self._timeout_topic, self._retry_topic):
            self._woken(event)
            return
        if topic == self.decl.start_on and self.store.load(event.id) is None:
            self._start(event)
            return
        instance = event.id if topic == self.decl.start_on else event.correlation_id
        record = self.store.load(instance) if instance is not None else None
        if record is not None and record.state == "stuck" and record.letter == event.id:
            self._unstick(record, event)
            return
        if record is None or record.state not in ACTIVE_STATES:
            logger.debug("saga %r: %s concerns no active instance; ignored", self._name, event)
            return
        record = self._settle(record, event)
        self._reply(record, event)

    # -- starting and advancing -----------------------------------------------------------

    def _start(self, event: Event) -> None:
        data = event.data if isinstance(event.data, Mapping) else {"data": event.data}
        now = self._clock.wall()
        record = SagaInstance(
            saga=self._name,
            id=event.id,
            state="running",
            position=0,
            data=data,
            steps=tuple(SagaStep(step.name) for step in self.decl.steps),
            started=now,
            updated=now,
        )
        self._publish_system(lifecycle.saga_event(lifecycle.SAGA_STARTED, self._name, event.id))
        self._begin(record, 0, "action", event.id)

    def _begin(self, record: SagaInstance, index: int, kind: str, cause: str | None) -> None:
        """Record the intent to take step ``index``'s action or compensation, then take it."""
        step = record.steps[index]
        changes: dict[str, Any] = {"command": new_event_id(), "sent": False, "due": None}
        if kind == "action":
            changes.update(status="acting", attempts=step.attempts + 1)
        else:
            changes.update(status="compensating", compensations=step.compensations + 1)
        record = attrs.evolve(record.with_step(index, **changes), position=index)
        self._save(record)
        self._perform(record, kind, cause)

    def _perform(self, record: SagaInstance, kind: str, cause: str | None) -> None:
        """Send the command (or run the function) recorded as step ``position``'s intent."""
        index = record.position
        decl = self.decl.steps[index]
        target = decl.action if kind == "action" else decl.compensation
        step = record.steps[index]
        if isinstance(target, str):
            failure = decl.failure_topic if kind == "action" else f"{target}.failed"
            self._send(record, index, target, failure, cause)
            due = None if decl.timeout is None else self._clock.wall() + decl.timeout
            if due is not None:
                self._arm(record.id, index, self._timeout_topic, step.command, due)
            self._save(record.with_step(index, sent=True, due=due))
            return
        assert target is not None
        try:
            result = target(record.data)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if kind == "action":
                self._fail(record, index, "failed", error)
            else:
                self._undo_failed(record, error)
            return
        if kind == "action":
            self._done(record, index, result)
        else:
            self._compensated(record, index)

    def _send(
        self, record: SagaInstance, index: int, topic: str, failure: str, cause: str | None
    ) -> None:
        """Send step ``index``'s command; a participant that dead-letters it answers ``failure``."""
        step = record.steps[index]
        assert step.command is not None
        command = Event.create(
            topic,
            record.data,
            key=record.id,
            source=self._consumer,
            headers={
                SAGA_HEADER: self._name,
                STEP_HEADER: step.name,
                FAILURE_TOPIC: failure,
                FAILURE_CHANNEL: self.decl.channel,
            },
            correlation_id=record.id,
            causation_id=cause,
            id=step.command,
        )
        channel = self.decl.steps[index].channel or self.decl.channel
        # Overdraft: the saga consumes from its channel; waiting for room would wait on itself.
        sent = self._router.publish(channel, (command,), timeout=None, overdraft=True)
        if sent < 1:
            raise RuntimeError(
                f"saga {self._name!r}: command {topic!r} of instance {record.id} was dropped by "
                f"channel {channel!r} (its overflow policy); it is sent again on retry"
            )

    def _done(self, record: SagaInstance, index: int, result: Any) -> None:
        """Step ``index`` completed with ``result`` (reply data or the function's return)."""
        if isinstance(result, Mapping):
            record = attrs.evolve(record, data={**record.data, **result})
        elif result is not None:
            record = attrs.evolve(record, data={**record.data, record.steps[index].name: result})
        record = record.with_step(index, status="done", sent=True, due=None, error=None)
        if index + 1 < len(record.steps):
            self._begin(record, index + 1, "action", None)
            return
        record = attrs.evolve(record, state="completed", updated=self._clock.wall())
        self._save(record)
        self._publish_system(lifecycle.saga_event(lifecycle.SAGA_COMPLETED, self._name, record.id))
        self._prune()

    # -- failing and compensating -------------------------------------------------------------

    def _fail(self, record: SagaInstance, index: int, status: str, error: str) -> None:
        """Step ``index`` failed (``failed``) or got no reply (``timed_out``): compensate."""
        name = record.steps[index].name
        record = record.with_step(index, status=status, sent=True, due=None, error=error)
        record = attrs.evolve(record, state="compensating", error=f"step {name!r}: {error}")
        # A step that timed out may have acted: it is undone with the completed ones.
        self._compensate_from(record, index if status == "timed_out" else index - 1)

    def _compensate_from(self, record: SagaInstance, start: int) -> None:
        for index in range(start, -1, -1):
            step = record.steps[index]
            if step.status in ("done", "timed_out") and self.decl.steps[index].compensation:
                self._begin(record, index, "compensation", None)
                return
        record = attrs.evolve(record, state="compensated", updated=self._clock.wall())
        self._save(record)
        self._publish_system(
            lifecycle.saga_event(
                lifecycle.SAGA_COMPENSATED, self._name, record.id, error=record.error
            )
        )
        self._prune()

    def _prune(self) -> None:
        """Keep the latest ``keep_finished`` finished instances: one has just finished."""
        try:
            self.store.prune(self.decl.keep_finished)
        except Exception:
            # Not the instance's failure: the next one to finish prunes again.
            logger.warning(
                "saga %r: could not delete its oldest finished instances", self._name, exc_info=True
            )

    def _compensated(self, record: SagaInstance, index: int) -> None:
        record = record.with_step(index, status="compensated", sent=True, due=None)
        self._compensate_from(record, index - 1)

    def _undo_failed(self, record: SagaInstance, error: str) -> None:
        """The compensation of step ``position`` failed: retry it later, or the saga is stuck."""
        index = record.position
        step = record.steps[index]
        if step.compensations < self.decl.max_attempts:
            due = self._clock.wall() + self.decl.retry.delay(step.compensations, self._rng)
            # Scheduled before it is recorded: a crash between them leaves the event that
            # failed the compensation unacked, and handling it again schedules it again.
            self._arm(record.id, index, self._retry_topic, step.command, due)
            self._save(record.with_step(index, status="retrying", sent=True, due=due, error=error))
            return
        record = record.with_step(index, status="stuck", sent=True, due=None, error=error)
        handling = self._handling
        letter = handling.id if handling is not None else None
        record = attrs.evolve(record, state="stuck", letter=letter, updated=self._clock.wall())
        self._save(record)
        logger.error("%s", self._stuck_message(record))
        self._publish_system(
            lifecycle.saga_event(
                lifecycle.SAGA_STUCK,
                self._name,
                record.id,
                step=record.steps[index].name,
                error=error,
            )
        )
        if letter is None:
            self._letter_later(record)
            return
        raise SagaStuck(self._stuck_message(record))

    def _stuck_message(self, record: SagaInstance) -> str:
        step = record.steps[record.position]
        return (
            f"saga {self._name!r} instance {record.id}: the compensation of step "
            f"{step.name!r} failed {step.compensations} times (last: {step.error}); the saga is "
            "stuck: undo that step by hand and purge this letter, or fix what the compensation "
            "needs and redrive this letter to try it again"
        )

    def _letter_later(self, record: SagaInstance) -> None:
        """Stuck with no event in hand: a timer event due now carries its dead letter."""
        step = record.steps[record.position]
        self._arm(record.id, record.position, self._retry_topic, step.command, self._clock.wall())

    def _unstick(self, record: SagaInstance, event: Event) -> None:
        """The letter of a stuck instance came again: try its compensation again, afresh."""
        index = record.position
        step = record.steps[index]
        logger.warning(
            "saga %r instance %s: its dead letter %s came again; trying the compensation of "
            "step %r again (%d attempts)",
            self._name,
            record.id,
            event.id,
            step.name,
            self.decl.max_attempts,
        )
        record = attrs.evolve(
            record.with_step(index, compensations=0), state="compensating", letter=None
        )
        self._begin(record, index, "compensation", event.id)

    # -- replies and timers -------------------------------------------------------------------

    def _reply(self, record: SagaInstance, event: Event) -> None:
        index = record.position
        decl = self.decl.steps[index]
        step = record.steps[index]
        if step.status == "acting" and decl.command is not None:
            if event.topic == decl.success_topic:
                self._done(record, index, event.data)
            elif event.topic == decl.failure_topic:
                self._fail(record, index, "failed", f"error reply {event.topic!r}: {event.data!r}")
            return
        compensation = decl.compensation
        if step.status == "compensating" and isinstance(compensation, str):
            if event.topic == f"{compensation}.reply":
                self._compensated(record, index)
            elif event.topic == f"{compensation}.failed":
                self._undo_failed(record, f"error reply {event.topic!r}: {event.data!r}")

    def _woken(self, event: Event) -> None:
        data = event.data
        record = self.store.load(str(data["instance"]))
        if record is not None and record.state == "stuck":
            if record.letter == event.id:
                self._unstick(record, event)
            elif record.letter is None and record.steps[record.position].command == data["command"]:
                # The timer of _letter_later: it carries the letter.
                self._save(attrs.evolve(record, letter=event.id))
                raise SagaStuck(self._stuck_message(record))
            return
        if record is None or record.state not in ACTIVE_STATES:
            return
        index = int(data["step"])
        step = record.steps[index]
        if record.position != index or step.command != data["command"]:
            return  # a timer of an attempt that is settled already
        timeout = self.decl.steps[index].timeout
        if event.topic == self._retry_topic and step.status == "retrying":
            self._begin(record, index, "compensation", event.id)
        elif event.topic == self._timeout_topic and step.status == "acting":
            self._fail(record, index, "timed_out", f"no reply within {timeout}s")
        elif event.topic == self._timeout_topic and step.status == "compensating":
            self._undo_failed(record, f"no reply within {timeout}s")

    def _arm(self, instance: str, index: int, topic: str, command: str | None, due: float) -> None:
        """Schedule the event that wakes step ``index`` of ``instance`` at wall time ``due``."""
        wake = Event.create(
            topic,
            {"instance": instance, "step": index, "command": command},
            key=instance,
            source=self._consumer,
            correlation_id=instance,
        )
        # Overdraft: the saga consumes from this channel; waiting for room would wait on itself.
        self._router.schedule(self.decl.channel, (wake,), due=due, timeout=None, overdraft=True)

    # -- resuming ---------------------------------------------------------------------------------

    def _settle(self, record: SagaInstance, cause: Event | None) -> SagaInstance:
        """Send again (once) an action or compensation recorded but not known to be sent.

        Returns the record as stored afterwards (unchanged when nothing was unsettled).
        """
        index = record.position
        step = record.steps[index]
        if step.sent or step.status not in ("acting", "compensating"):
            return record
        kind = "action" if step.status == "acting" else "compensation"
        decl = self.decl.steps[index]
        if cause is not None and cause.topic in _replies(decl, kind):
            return record  # its reply is here: it was sent
        logger.warning(
            "saga %r instance %s: the %s of step %r was recorded but not known to be sent "
            "when the saga stopped; sending it again (same command id %s)",
            self._name,
            record.id,
            kind,
            step.name,
            step.command,
        )
        self._publish_system(
            lifecycle.saga_event(
                lifecycle.SAGA_RESENT,
                self._name,
                record.id,
                step=step.name,
                kind=kind,
                command=step.command,
            )
        )
        record = record.with_step(index, resent=step.resent + 1)
        self._save(record)
        self._perform(record, kind, None)
        stored = self.store.load(record.id)
        return stored if stored is not None else record

    def _save(self, record: SagaInstance) -> None:
        self.store.save(attrs.evolve(record, updated=self._clock.wall()))


def _replies(decl: StepDecl, kind: str) -> tuple[str, ...]:
    """The reply topics of step ``decl``'s ``action`` or ``compensation`` command."""
    if kind == "action":
        return (decl.success_topic, decl.failure_topic) if decl.command is not None else ()
    compensation = decl.compensation
    if isinstance(compensation, str):
        return (f"{compensation}.reply", f"{compensation}.failed")
    return ()
