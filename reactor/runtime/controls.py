"""Acting on a running system by hand: what a presenter's keys (and tests) do.

:attr:`System.controls <reactor.System.controls>` crashes an actor, pauses and
resumes a producer, changes its rate and floods its channel. Each is what a live
demo needs to show supervision, backpressure and healing on demand; none of them
bypasses the runtime: a crash is reported to the supervisor like any other, a
flood goes through the channel's capacity like any other publish.

Thread-safety: every method may be called from any thread; a producer reads what
they set at its next pull or poll.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from reactor.errors import UnknownActorError, UsageError
from reactor.messages.control import Crash

if TYPE_CHECKING:
    from reactor.runtime.assembly import ActorEntry
    from reactor.runtime.producer import ProducerRuntime

__all__ = ["MAX_RATE", "MIN_RATE", "Controls"]

#: Bounds of a rate set by hand, in events per second.
MIN_RATE = 0.1
MAX_RATE = 1_000_000.0


class Controls:
    """The hand controls of one system (``system.controls``).

    Args:
        actors: the system's actors by name (read when a control is used).
        producers: the system's producers.
    """

    def __init__(
        self, actors: Mapping[str, ActorEntry], producers: Sequence[ProducerRuntime]
    ) -> None:
        self._actors = actors
        self._producers = producers

    # -- actors ----------------------------------------------------------------------

    def crash(self, actor: str, reason: str = "crashed on purpose") -> str:
        """Make ``actor`` crash as if its code had raised; its supervisor restarts it.

        A pool crashes one of its members. The crash is a consumer failure: it counts
        toward restart intensity, and what the actor held is delivered again.

        Returns:
            The name of the actor told to crash.

        Raises:
            UnknownActorError: no such actor, or one that cannot be crashed (a
                supervisor, or a pool with no member).
        """
        entry = self._actors.get(actor)
        target = actor
        if entry is not None and entry.kind == "pool":
            members = [
                name
                for name, member in list(self._actors.items())
                if member.supervisor == actor and member.address is not None
            ]
            if members:
                target = members[0]
                entry = self._actors[target]
        if entry is None or entry.address is None:
            crashable = sorted(
                name
                for name, item in list(self._actors.items())
                if item.address is not None or item.kind == "pool"
            )
            raise UnknownActorError(
                f"cannot crash {actor!r}: no consumer, pool or producer of that name "
                f"(crashable: {', '.join(crashable) or 'none'})"
            )
        entry.address.tell(Crash(reason))
        return target

    # -- producers -------------------------------------------------------------------

    def producers(self) -> tuple[str, ...]:
        """The names of the producers, in declaration order."""
        return tuple(producer.name for producer in self._producers)

    def pause(self, producer: str) -> None:
        """Stop ``producer`` from publishing until :meth:`resume`; what it sent stays sent."""
        self._producer(producer).paused = True

    def resume(self, producer: str) -> None:
        """Let a paused ``producer`` publish again."""
        self._producer(producer).paused = False

    def paused(self, producer: str) -> bool:
        """Whether ``producer`` is paused."""
        return self._producer(producer).paused

    def rate(self, producer: str) -> float | None:
        """The events per second ``producer`` is allowed; None when unlimited.

        A polled producer's rate is one event per ``interval`` (or its ``rate``, if lower).
        """
        runtime = self._producer(producer)
        rates = [runtime.rate] if runtime.rate is not None else []
        if runtime.poll is not None and runtime.interval:
            rates.append(1.0 / runtime.interval)
        return min(rates) if rates else None

    def set_rate(self, producer: str, rate: float) -> float:
        """Let ``producer`` publish ``rate`` events per second (bounded to 0.1..1e6).

        A polled producer is polled every ``1 / rate`` seconds; an iterable one gets
        ``rate`` as its cap.

        Returns:
            The rate set, after bounding.

        Raises:
            UsageError: ``rate`` is not a finite number.
        """
        runtime = self._producer(producer)
        if not isinstance(rate, int | float) or not math.isfinite(rate):
            raise UsageError(f"set_rate({producer!r}, {rate!r}): rate must be a finite number")
        rate = min(max(float(rate), MIN_RATE), MAX_RATE)
        if runtime.poll is not None:
            runtime.interval = 1.0 / rate
            if runtime.rate is not None:
                runtime.rate = max(runtime.rate, rate)
        else:
            runtime.rate = rate
        return rate

    def flood(self, producer: str, count: int) -> None:
        """Make ``producer`` publish ``count`` events at once, past its rate.

        The events go through its channel's capacity like any others: a ``block``
        channel fills and holds the producer back, a ``drop_*`` one drops.

        Raises:
            UsageError: ``count`` is not a positive integer.
        """
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            raise UsageError(f"flood({producer!r}, {count!r}): count must be a positive integer")
        self._producer(producer).burst += count

    def channel_of(self, producer: str) -> str:
        """The channel ``producer`` publishes into."""
        return self._producer(producer).channel

    def _producer(self, name: str) -> ProducerRuntime:
        for producer in self._producers:
            if producer.name == name:
                return producer
        known = ", ".join(p.name for p in self._producers) or "none"
        raise UnknownActorError(f"no producer named {name!r} (producers: {known})")
