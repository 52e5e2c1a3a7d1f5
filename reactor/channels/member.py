"""A member's side of the channel actor's protocol: the messages it sends its channel.

The channel actor (:class:`~reactor.channels.actor.GroupChannelActor`) answers them;
a consumer sends them through its :class:`MemberLink`, which names the member in each.
"""

from __future__ import annotations

from typing import Any

import attrs

from reactor.actors.address import Address, Answer
from reactor.messages.control import Ack, ErrorInfo, Join, Leave, Nack, Release

__all__ = ["MemberLink"]


@attrs.frozen(slots=True)
class MemberLink:
    """Sends one member's messages to its channel's actor.

    ``epoch`` is the sending incarnation's (the channel's answer to its join): the
    channel ignores what an incarnation it fenced off still sends.
    Thread-safety: any thread may send.
    """

    channel: Address
    group: str
    member: str

    def join(self, address: Address, demand: int) -> Answer[Any]:
        """(Re)join the group, taking ``demand`` events ahead; the answer is the new epoch."""
        return self.channel.ask_answer(Join(self.group, self.member, address, demand))

    def ack(self, epoch: int, seqs: tuple[int, ...]) -> None:
        """The handler returned for ``seqs``."""
        self.channel.tell(Ack(self.group, self.member, epoch, seqs))

    def release(self, epoch: int, seqs: tuple[int, ...]) -> None:
        """Give ``seqs`` back unhandled; no attempt is spent."""
        self.channel.tell(Release(self.group, self.member, epoch, seqs))

    def nack(
        self,
        epoch: int,
        seq: int,
        error: ErrorInfo,
        consumer: str,
        *,
        final: bool = False,
        delay: float = 0.0,
    ) -> None:
        """The handler failed on ``seq``: retried after ``delay``, or dead-lettered if ``final``."""
        self.channel.tell(
            Nack(self.group, self.member, epoch, seq, error, consumer, final=final, delay=delay)
        )

    def leave(self, epoch: int = 0) -> None:
        """Leave the group; what the member held goes to the others (epoch 0: any incarnation)."""
        self.channel.tell(Leave(self.group, self.member, epoch))
