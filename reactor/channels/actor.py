"""The group-channel actor: the one protocol between a channel and its groups' members.

Every backend's channel actor speaks the same protocol with consumers: a member
``Join``\\ s with its demand, gets ``Deliver`` batches, answers with ``Ack`` or
``Nack``, and ``Leave``\\ s. :class:`GroupChannelActor` holds that protocol once:
the message switch, dispatching queued seqs to members (over the bookkeeping of
:mod:`reactor.channels.groups`), settling acks and nacks, dead-lettering, and
membership. What differs between backends is behind the :class:`GroupLog`
protocol: where events live and how a group's progress is stored (the memory
table, the sqlite log and its watermarks, the redis streams and pending entries).

Nack handling and dead-lettering each live in one method here
(:meth:`GroupChannelActor.nacked` and :meth:`GroupChannelActor.dead_letter`);
a backend only stores or settles what they decide, through
:meth:`GroupLog.keep_dead_letter`, :meth:`GroupLog.retrying` and
:meth:`GroupLog.settle`.

A nack carries the delay its consumer asks for the retry: the group keeps the seq
aside until then (later events of its key wait behind it, see
:meth:`Group.nack <reactor.channels.groups.Group.nack>`), and one clock timer per
actor, armed for the earliest such retry, queues them again when they fall due.

Delayed events (:mod:`reactor.runtime.scheduling`) wait in the backend's
*scheduled area*; a handle that schedules one tells the actor its due time
(:class:`Due`), and a second timer, armed for the earliest due time (wall time,
of the injected clock), has the backend move what is due into the channel
(:meth:`GroupLog.release_due`), from where it flows like any published event.
The actor looks once as it starts, so what fell due while no process ran enters
at once, and what is not due yet waits for its time.

One concept, so one module despite its length: the protocol every backend's
channel actor speaks.

Thread-safety: everything here runs on the channel actor's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Protocol, TypeVar

import attrs

from reactor.actors.base import ActorContext, ReactorActor
from reactor.channels import groups as membership
from reactor.channels.backend import ChannelConfig, ChannelParts, ChannelServices
from reactor.channels.groups import Counters, Group, Member, find_member
from reactor.channels.sizes import EventSizes
from reactor.messages import lifecycle
from reactor.messages.control import (
    Ack,
    Deliver,
    Encoded,
    ErrorInfo,
    Join,
    Leave,
    Nack,
    Release,
    Tick,
    decoded,
)
from reactor.messages.event import Event

if TYPE_CHECKING:
    from reactor.channels.dedup import DedupWindow

__all__ = ["Doomed", "Due", "GroupChannelActor", "GroupLog", "abandoned"]

logger = logging.getLogger("reactor")

# Each round of a dispatch delivers or refills, or the dispatch stops; the cap is a
# safety net against a backend whose refill keeps claiming progress.
_DISPATCH_ROUNDS = 1024
_RETRY = "retry"  # the token of the delayed-retry timer
_RELEASE = "release"  # the token of the scheduled-release timer


def abandoned(group: str, spent: int) -> ErrorInfo:
    """The error of an event whose every delivery ended with its process (or worker) gone.

    A durable backend learns of such deliveries after a restart; rather than loop
    on a poison event forever, the actor dead-letters it with this error.
    """
    return ErrorInfo(
        "DeliveryAbandoned",
        f"delivered {spent} time(s) to group {group!r} without being acked or nacked: "
        "the process handling it stopped while it was in flight each time",
        "",
    )


@attrs.frozen(slots=True)
class Due:
    """The channel's scheduled area holds an event due at wall time ``due`` (sent by its handle)."""

    due: float


@attrs.frozen(slots=True)
class Doomed:
    """What the actor dead-letters: one seq of a group, and why.

    Attributes:
        seq: the seq in the group.
        item: the event, or its stored form (bytes that may be no event).
        error: why its last attempt failed.
        attempts: the attempts it spent.
        consumer: the consumer whose attempt was the last ("" if a crash ended it).
    """

    seq: int
    item: Event | Encoded
    error: ErrorInfo
    attempts: int
    consumer: str


class GroupLog(Protocol):
    """What a backend keeps for its channel actor: events, groups, progress.

    The group-channel actor calls these hooks; a backend subclasses this protocol
    explicitly to inherit the defaults (which do nothing; their bodies say
    ``return None`` so that they are not abstract) of the hooks it does not need.
    ``groups`` and ``counters`` survive restarts of the actor, like the mailbox.

    Attributes:
        channel: the channel's name.
        publish_system: publishes a ``$system`` or ``$deadletter`` event; never blocks.
        groups: the declared groups, by name.
        counters: the channel's running totals.
        refills: whether :meth:`refill` can add queued seqs, so that serving the
            members once more after a delivery may deliver more.
        abandons: whether seqs may come back with every attempt spent (a durable
            log learns of deliveries a crash spent), to be dead-lettered by
            :meth:`GroupChannelActor.fill` instead of delivered.
        dedup: the dedup window of each idempotent group whose window the backend
            keeps (:class:`~reactor.channels.backend.DurableDedup`): an event whose
            id it holds was handled, so it is settled rather than dead-lettered.
    """

    channel: str
    publish_system: Callable[[Event], None]
    groups: Mapping[str, Group[Any]]
    counters: Counters
    refills: ClassVar[bool] = False
    abandons: ClassVar[bool] = False
    dedup: Mapping[str, DedupWindow] = MappingProxyType({})

    def bind(self, actor: GroupChannelActor) -> Mapping[type, Callable[[Any], Any]]:
        """A new incarnation of the actor starts; return the handlers of the backend's messages."""
        return {}

    def settle(self, group: Group[Any], seqs: Sequence[int]) -> None:
        """``group`` is done with ``seqs`` (acked, dead-lettered, dropped): free or record them."""
        return None

    def deliver(self, member: Member, deliver: Deliver) -> None:
        """Send ``deliver`` to ``member`` (a durable log records it first)."""
        member.address.tell(deliver)

    def where(self, seq: int) -> dict[str, Any]:
        """Where the backend keeps ``seq``, for a dead letter of stored bytes (offset, entry id)."""
        return {}

    def keep_dead_letter(self, group: Group[Any], letter: Doomed) -> None:
        """Store a dead letter the actor is about to publish, where the backend keeps them.

        Every backend stores them (see :class:`~reactor.channels.backend.DeadLetters`),
        letters of ``$system`` events too, which are never published.
        """
        return None

    def retrying(self, group: Group[Any], seq: int, attempt: int) -> None:
        """A nack spent ``attempt`` on ``seq``, which is queued again."""
        return None

    def refill(self, group: Group[Any]) -> bool:
        """Queue more of ``group``'s events before its members are served; True if any were."""
        return False

    def dispatched(self, group: Group[Any]) -> None:
        """The members of ``group`` were served (a broker asks for more on their behalf)."""
        return None

    def owned(self, group: Group[Any], member: Member, seqs: Sequence[int]) -> Sequence[int]:
        """The seqs of ``member``'s ack or nack that count; the rest only give demand back."""
        return seqs

    def incarnation_ended(self, group: Group[Any], member: str) -> None:
        """``member`` rejoined or left: it owes nothing for what it held before."""
        return None

    def release_due(self, now: float) -> float | None:
        """Move the scheduled events due at wall time ``now`` into the channel, in due order.

        Returns:
            The wall time to look again (the next due time, or sooner for a backend
            that other processes schedule into), or None when nothing waits.
        """
        return None

    def started(self) -> None:
        """The actor started (after :meth:`bind`)."""
        return None

    def stopped(self) -> None:
        """The actor stops: write what is still buffered."""
        return None

    def crashed(self) -> None:
        """The actor crashed: cancel what :meth:`started` scheduled."""
        return None

    def end_of_message(self) -> None:
        """The actor handled one message (a log flushes what is due)."""
        return None


class _Serve:
    """The channel actor's note to itself: serve the groups due once the mailbox is read."""

    __slots__ = ()


_SERVE: Final = _Serve()


class GroupChannelActor(ReactorActor):
    """The channel actor of every backend: members, delivery, acks, nacks, dead letters.

    Args:
        context: the actor's context.
        log: the backend's side of the channel.
        max_batch: the most events in one ``Deliver``.
    """

    def __init__(self, context: ActorContext, log: GroupLog, max_batch: int) -> None:
        super().__init__(context)
        self.log = log
        self.groups = log.groups
        self.counters = log.counters
        self.max_batch = max_batch
        handlers: dict[type, Callable[[Any], Any]] = {
            Ack: self.acked,
            Nack: self.nacked,
            Join: self.joined,
            Leave: self.left,
            Release: self.released,
            Due: self.due,
        }
        handlers.update(log.bind(self))
        # The retry timer's ticks are the actor's; any other tick is the backend's.
        self._log_tick = handlers.get(Tick)
        handlers[Tick] = self.ticked
        self._handlers = handlers
        # A backend with nothing to do after a message costs no call per message.
        self._end_of_message = (
            log.end_of_message if type(log).end_of_message is not GroupLog.end_of_message else None
        )
        self._retry_at: float | None = None  # when the armed retry timer fires
        self._release_at: float | None = None  # the wall time the release timer is armed for
        # Groups to serve once the messages queued now are handled (see dispatch()).
        self._due: dict[Group[Any], None] = {}
        self._serve_queued = False  # a _Serve is in the mailbox
        self._inbox_empty = self.actor_inbox.empty

    def on_start(self) -> None:
        self.log.started()
        self._arm_retries()  # retries delayed under an earlier incarnation
        self._release_due()  # due while nothing ran, and the timer for the rest
        # Groups an earlier incarnation left to serve (it crashed before it did).
        for group in self.groups.values():
            if group.order:
                self.dispatch(group)
        self._serve_due()

    def on_stop(self) -> None:
        self.log.stopped()

    def on_crash(self, reason: Any) -> None:
        self.log.crashed()

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            if type(message) is _Serve:
                self._serve_queued = False
                self._serve_due()
                if self._end_of_message is not None:
                    self._end_of_message()
                return None
            return super().on_receive(message)
        reply = handler(message)
        if self._due:
            if self._inbox_empty():
                self._serve_due()
            elif not self._serve_queued:
                # More messages wait (publishes one event each, acks): serve the groups
                # once after them, in one batch per member, instead of after each one.
                # The _Serve queued behind them bounds the wait: mailbox order is FIFO.
                self._serve_queued = True
                self.actor_address.tell(_SERVE)
        if self._end_of_message is not None:
            self._end_of_message()
        return reply

    # -- delivery ------------------------------------------------------------------

    def dispatch(self, group: Group[Any]) -> None:
        """Serve ``group``'s members once the message being handled is done.

        If more messages wait in the mailbox, once they are handled too (see
        :meth:`on_receive`), so that a run of small messages is served in full batches.
        """
        self._due[group] = None

    def _serve_due(self) -> None:
        due = self._due
        while due:
            group = next(iter(due))
            del due[group]
            self._serve(group)

    def _serve(self, group: Group[Any]) -> None:
        """Serve ``group``'s members that have demand, from what it has queued."""
        log = self.log
        for _ in range(_DISPATCH_ROUNDS):
            refilled = log.refill(group)
            progressed = False
            for member in group.turn():
                if (
                    member.demand > 0
                    and (member.keyed or group.shared)
                    and self.fill(group, member)
                ):
                    progressed = True
            if not (refilled or (progressed and log.refills)):
                break
        log.dispatched(group)

    def fill(self, group: Group[Any], member: Member) -> bool:
        """Send ``member`` its next batch; True if anything was delivered or dead-lettered."""
        log = self.log
        spent: list[tuple[int, int]] | None = [] if log.abandons else None
        deliver = group.fill(member, self.max_batch, spent)
        if spent:
            for seq, attempts in spent:
                # Delivered that many times before and never settled: the process
                # stopped each time (a poison event?). Dead-letter it rather than loop.
                item = group.events[seq]
                self.dead_letter(
                    group, Doomed(seq, item, abandoned(group.name, attempts), attempts, "")
                )
        if deliver is None:
            return bool(spent)
        self.counters.delivered += len(deliver.seqs)
        log.deliver(member, deliver)
        return True

    # -- settlement ----------------------------------------------------------------

    def acked(self, ack: Ack) -> None:
        """A member handled ``ack.seqs``: settle them and serve the group again."""
        found = find_member(self.groups, ack.group, ack.member, ack.epoch)
        if found is None:
            return
        group, member = found
        settled = group.ack(member, self.log.owned(group, member, ack.seqs))
        self.counters.acked += len(settled)
        self.log.settle(group, settled)
        self.dispatch(group)

    def nacked(self, nack: Nack) -> None:
        """A member's handler failed on ``nack.seq``: retry it, or dead-letter it when spent."""
        found = find_member(self.groups, nack.group, nack.member, nack.epoch)
        if found is None:
            return
        group, member = found
        if not self.log.owned(group, member, (nack.seq,)):
            self.dispatch(group)
            return
        delay = nack.delay
        attempt, item = group.nack(
            member,
            nack.seq,
            final=nack.final,
            due=self.actor_clock.monotonic() + delay if delay > 0 else None,
            error=nack.error,
        )
        if not attempt:
            return
        if item is not None:
            if nack.final or attempt >= group.max_deliveries:
                self.dead_letter(group, Doomed(nack.seq, item, nack.error, attempt, nack.consumer))
            else:
                self.log.retrying(group, nack.seq, attempt)
                if delay > 0:
                    # Only this group's earliest retry can be earlier than the timer now.
                    self._arm_retries(group.next_due())
        if not member.in_flight or nack.delay <= 0:
            # A member still busy with others gets its next batch with its next ack: one
            # event per failure, sent at once, would cost a message round trip each.
            self.dispatch(group)

    def released(self, release: Release) -> None:
        """A member gives back seqs it never handled (behind a failed event of their key)."""
        group = membership.give_back(self.groups, release)
        if group is not None:
            self.dispatch(group)

    # -- delayed retries -------------------------------------------------------------

    def ticked(self, tick: Tick) -> None:
        if tick.token == _RELEASE:
            self._release_at = None
            self._release_due()
            return
        if tick.token != _RETRY:
            if self._log_tick is not None:
                self._log_tick(tick)
            return
        self._retry_at = None
        now = self.actor_clock.monotonic()
        for group in self.groups.values():
            if group.release_due(now):
                self.dispatch(group)
        self._arm_retries()

    def _arm_retries(self, due: float | None = None) -> None:
        """Make sure the timer fires when the earliest delayed retry falls due.

        ``due``: the earliest retry that can have changed (None: look at every group).
        """
        if due is None:
            dues = [d for group in self.groups.values() if (d := group.next_due()) is not None]
            if not dues:
                return
            due = min(dues)
        if self._retry_at is not None and self._retry_at <= due:
            return
        self._retry_at = due
        address = self.actor_address
        # Due already (the clocks read at different moments): fire at once, never "before now".
        self.actor_clock.call_later(
            max(0.0, due - self.actor_clock.monotonic()), lambda: address.tell(Tick(_RETRY))
        )

    # -- scheduled events --------------------------------------------------------------

    def due(self, due: Due) -> None:
        """An event was scheduled for ``due.due``: make sure the timer fires by then."""
        self._arm_release(due.due)

    def _release_due(self) -> None:
        again = self.log.release_due(self.actor_clock.wall())
        if again is not None:
            self._arm_release(again)

    def _arm_release(self, due: float) -> None:
        # An earlier timer stands: it looks again when it fires, and re-arms for the rest.
        if self._release_at is not None and self._release_at <= due:
            return
        self._release_at = due
        address = self.actor_address
        clock = self.actor_clock
        # The timer waits on the monotonic clock; the backend checks wall time when it
        # fires, so a wall clock set back meanwhile releases nothing early.
        clock.call_later(max(0.0, due - clock.wall()), lambda: address.tell(Tick(_RELEASE)))

    def dead_letter(self, group: Group[Any], letter: Doomed) -> None:
        """Dead-letter ``seq`` of ``group``: store, publish, then settle it.

        The only place a channel dead-letters an event. The letter is published
        before the seq is settled: if anything goes wrong in between, a duplicate
        is possible but a loss is not.

        An event whose id the group's durable dedup window holds is never
        dead-lettered: its handler returned, and only its ack was lost (with a
        process that died before sending or storing it). It is settled as acked.
        """
        log = self.log
        seq, item, error = letter.seq, letter.item, letter.error
        window = log.dedup.get(group.name) if log.dedup else None
        if window is not None:
            event = decoded(item)
            if event is not None and event.id in window:
                logger.info(
                    "channel %r group %r: event %s was handled already (its id is in the "
                    "dedup window); settled instead of dead-lettered (%s)",
                    log.channel,
                    group.name,
                    event.id,
                    error.type,
                    extra={"reactor_channel": log.channel, "reactor_event_id": event.id},
                )
                group.acked += 1
                self.counters.acked += 1
                log.settle(group, (seq,))
                return
        group.dead_lettered += 1
        self.counters.dead_lettered += 1
        log.keep_dead_letter(group, letter)
        log.publish_system(
            lifecycle.dead_letter(
                item,
                error,
                where=log.where(seq),
                attempts=letter.attempts,
                consumer=letter.consumer,
                group=group.name,
                channel=log.channel,
            )
        )
        log.settle(group, (seq,))

    # -- membership ----------------------------------------------------------------

    def joined(self, join: Join) -> int:
        """A member (or a new incarnation of one) joins; returns its epoch."""
        group, member = membership.join(self.groups, join, self.log.channel)
        self.log.incarnation_ended(group, member.name)
        self.dispatch(group)
        return member.epoch

    def left(self, leave: Leave) -> None:
        """A member leaves; what it held goes back to the group."""
        group = membership.leave(self.groups, leave)
        if group is not None:
            self.log.incarnation_ended(group, leave.member)
            self.dispatch(group)


_Log = TypeVar("_Log", bound=GroupLog)


class GroupChannel(Generic[_Log]):
    """The handle side shared by every backend whose actor is a :class:`GroupChannelActor`.

    It holds the channel's declaration, gate and address (opened by
    :meth:`ChannelParts.open`) and starts the actor over the backend's ``log``,
    which the subclass sets in its ``__init__``.
    """

    log: _Log

    def __init__(self, config: ChannelConfig, services: ChannelServices) -> None:
        self.parts = ChannelParts.open(config, services)
        self.name = config.name
        self.config = config
        self.gate = self.parts.gate
        self.address = self.parts.address
        # Measured in JsonCodec bytes unless the backend stores another encoding.
        self.sizes = EventSizes(config.name, config.max_event_size)

    def check_sizes(self, events: Sequence[Event]) -> None:
        """Refuse events bigger than the channel's ``max_event_size`` (see ``Channel``)."""
        self.sizes.check(events)

    def start_actor(self, context: ActorContext) -> ReactorActor:
        return GroupChannelActor.spawn(context, self.log, self.config.max_batch)
