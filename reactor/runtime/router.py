"""Getting events into channels: credits first, then the channel's mailbox.

Delayed events take another way in, :meth:`Router.schedule`: into the channel's
scheduled area, without credits, until their due time (see
:mod:`reactor.runtime.scheduling`). It is the one entry point for runtime code
that schedules events (a saga's step timeouts)::

    router.schedule(channel, [event], due=due_time(router.clock, delay=30), timeout=None)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from reactor.channels.backend import CarriesReplies, Channel
from reactor.clock import Clock, SystemClock
from reactor.errors import BackpressureTimeout, ChannelFull, NotAnEventError, UnknownChannelError
from reactor.messages import lifecycle
from reactor.messages.event import REPLY_TO, Event
from reactor.runtime.replies import Replies
from reactor.text import did_you_mean, names_or_none

__all__ = ["Router"]

logger = logging.getLogger("reactor")

_EVENT_TYPE = frozenset({Event})
# Blocking waits are cut into slices this long so a stop request is noticed.
_SLICE_S = 0.05


class Router:
    """Publishes events into the system's channels, applying each one's overflow policy.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, channels: Mapping[str, Channel], clock: Clock | None = None) -> None:
        self.channels = dict(channels)
        self.replies = Replies()
        # The system's clock: due times of scheduled events are its wall time.
        self.clock: Clock = clock if clock is not None else SystemClock()

    def reply(self, channel_name: str, reply: Event) -> None:
        """Send ``reply`` (it carries ``reactor-reply-to``) back to its requester.

        ``channel_name`` is the channel the request came through: across processes
        its broker carries the reply. A reply with nowhere to go is dropped, logged.
        """
        inbox = reply.headers[REPLY_TO]
        if inbox == self.replies.inbox:
            self.replies.deliver(reply)
            return
        channel = self.channel(channel_name)
        if isinstance(channel, CarriesReplies):
            channel.send_reply(inbox, reply)
        else:
            logger.warning(
                "channel %r: the reply %s has no way back to its requester (another "
                "process, and a %r channel carries no replies between processes); dropped",
                channel_name,
                reply.id,
                channel.config.backend,
            )

    def channel(self, name: str) -> Channel:
        channel = self.channels.get(name)
        if channel is None:
            if name == lifecycle.DEADLETTER:
                raise UnknownChannelError(
                    f"{name!r} is a topic on channel {lifecycle.SYSTEM_CHANNEL!r}, not a channel; "
                    f"subscribe to dead letters with channel={lifecycle.SYSTEM_CHANNEL!r}, "
                    f"pattern={lifecycle.DEADLETTER!r}"
                )
            raise UnknownChannelError(
                f"no channel named {name!r} in this system{did_you_mean(name, self.channels)} "
                f"(channels: {names_or_none(self.channels)}); publish to one of them, or "
                "declare it with topology.channel()"
            )
        return channel

    def publish(
        self,
        channel_name: str,
        events: Sequence[Event],
        *,
        timeout: float | None,
        overdraft: bool = False,
        cancelled: Callable[[], bool] | None = None,
    ) -> int:
        """Publish ``events`` in order; return how many entered the channel.

        Fewer than ``len(events)`` only under ``drop_newest`` (the rest are counted
        and reported as dropped) or when ``cancelled()`` turned true while waiting.

        Raises:
            UnknownChannelError: no such channel.
            NotAnEventError: an item is not an :class:`Event` (nothing was published).
            EventTooLargeError: an event is bigger, encoded, than the channel's
                ``max_event_size`` (nothing was published).
            BackpressureTimeout: ``block`` channel still full after ``timeout``.
            ChannelFull: ``reject`` channel without room for the events.
        """
        channel = self.channel(channel_name)
        # Every item is checked before the first credit is taken: a bad one found half
        # way would leave the credits taken, and the events before it published.
        if set(map(type, events)) - _EVENT_TYPE:  # one C loop for the usual batch
            for index, event in enumerate(events):
                if not isinstance(event, Event):
                    raise NotAnEventError(channel_name, index, type(event))
        gate = channel.gate
        total = len(events)
        if total and gate.try_take(total):
            # Room for all at once (acquire's own first try): one send, which checks sizes.
            try:
                channel.send(tuple(events))
            except BaseException:
                gate.release(total)  # nothing entered the channel: give the credits back
                raise
            return total
        if total > 1:
            # The publish may be split into several sends by capacity: sizes are checked
            # first, so that a refusal leaves nothing of it in the channel.
            channel.check_sizes(events)
        sent = 0
        while sent < total:
            if cancelled is None:
                granted = gate.acquire(total - sent, timeout, overdraft=overdraft)
            else:
                granted = self._acquire_cancellable(
                    channel, total - sent, timeout, overdraft, cancelled
                )
                if granted < 0:
                    return sent
            if granted == 0:
                self._dropped(channel, events[sent:])
                return sent
            try:
                channel.send(tuple(events[sent : sent + granted]))
            except BaseException:
                gate.release(granted)  # nothing entered the channel: give the credits back
                raise
            sent += granted
        return sent

    def publish_one(self, channel_name: str, event: Event, *, timeout: float | None) -> None:
        """:meth:`publish` of one event the caller made (so no check that it is one).

        While the channel has room, this is the whole path of ``System.publish``:
        one credit, one hand-off.

        Raises:
            The errors of :meth:`publish`.
        """
        channel = self.channels.get(channel_name)
        if channel is None or not channel.gate.try_take(1):
            self.publish(channel_name, (event,), timeout=timeout)
            return
        try:
            channel.send((event,))
        except BaseException:
            channel.gate.release(1)  # nothing entered the channel: give the credit back
            raise

    def schedule(
        self,
        channel_name: str,
        events: Sequence[Event],
        *,
        due: float | None,
        timeout: float | None,
        overdraft: bool = False,
    ) -> int:
        """Publish ``events`` at wall time ``due`` (``self.clock.wall()`` seconds).

        They wait in the channel's scheduled area (stored before this returns, on a
        durable channel) and enter the channel when due. A ``due`` of None, or not
        later than now, publishes them at once through :meth:`publish` (with
        ``overdraft``, as a handler publishing into its own channel needs).

        Returns:
            How many were scheduled (or published): fewer only under ``drop_newest``.

        Raises:
            UnknownChannelError: no such channel.
            NotAnEventError: an item is not an :class:`Event` (nothing was scheduled).
            EventTooLargeError: an event is bigger, encoded, than the channel's
                ``max_event_size`` (nothing was scheduled).
            BackpressureTimeout / ChannelFull: a full scheduled area (memory), by the
                channel's overflow policy.
        """
        if due is None or due <= self.clock.wall():
            return self.publish(channel_name, events, timeout=timeout, overdraft=overdraft)
        channel = self.channel(channel_name)
        for index, event in enumerate(events):
            if not isinstance(event, Event):
                raise NotAnEventError(channel_name, index, type(event))
        if not events:
            return 0
        return channel.schedule(tuple(events), due, timeout)

    def publish_system(self, event: Event) -> None:
        """Publish a ``$system`` event; never blocks (the channel evicts the oldest).

        A report on ``$system`` itself (see :func:`lifecycle.reports_on_system`) is
        only logged: publishing it there could feed itself without end.
        """
        channel = self.channels.get(lifecycle.SYSTEM_CHANNEL)
        if channel is None:
            return
        if lifecycle.reports_on_system(event):
            logger.debug("not reported on $system, which it is about: %s", event.topic)
            return
        try:
            channel.gate.acquire(1, None, overdraft=True)
        except ChannelFull:
            # $system is two capacities behind: its actor cannot keep up. A report dropped
            # here is counted; one more wait here would stall whoever reports.
            channel.gate.count_dropped(1)
            return
        channel.send((event,))

    def _acquire_cancellable(
        self,
        channel: Channel,
        count: int,
        timeout: float | None,
        overdraft: bool,
        cancelled: Callable[[], bool],
    ) -> int:
        waited = 0.0
        while True:
            slice_s = _SLICE_S if timeout is None else min(_SLICE_S, max(0.0, timeout - waited))
            try:
                return channel.gate.acquire(count, slice_s, overdraft=overdraft)
            except BackpressureTimeout:
                waited += slice_s
                if cancelled():
                    return -1
                if timeout is not None and waited >= timeout:
                    raise

    def _dropped(self, channel: Channel, events: Sequence[Event]) -> None:
        channel.gate.count_dropped(len(events))
        for event in events:
            self.publish_system(
                lifecycle.dropped(event, channel=channel.name, policy="drop_newest")
            )
