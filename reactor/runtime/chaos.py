"""Chaos declared beside a consumer: failures, latency and an outage, on purpose.

A consumer (or pool) declared with ``chaos=Chaos(...)`` (in TOML, a ``chaos =
{ ... }`` table) has its handler wrapped so that a demo or a resilience test
shows the system healing without writing failing code:

* ``crash_rate``: that fraction of handler calls raises :class:`~reactor.errors.ChaosError`
  before the handler runs. Each is an event failure: the event is retried later and,
  the decision being made afresh for each attempt, usually succeeds. With
  ``failure_threshold = 1`` every one also restarts the consumer ("let it crash").
* ``latency_s``: every call waits that long first, as a slow dependency would.
* ``outage_after_s`` and ``outage_s``: a broker outage. From ``outage_after_s``
  seconds after the system set the consumer up (a pool member: after it was added), for ``outage_s`` seconds, every call
  raises :class:`~reactor.errors.ChaosOutage` (a ``ConnectionError``): the consumer
  waits the outage out (it pauses between attempts and ``health()`` says why), and
  picks up its backlog when the outage ends.

Whether a call fails is a pure function of the seed, the consumer, the event id and
the attempt (as in ``tests/test_chaos.py``), so a run can be predicted and repeated.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Callable
from typing import Any

import attrs

from reactor.errors import ChaosError, ChaosOutage
from reactor.messages.event import Event
from reactor.runtime.handling import current_delivery
from reactor.schema import option, seconds

__all__ = ["Chaos", "ChaosHandler"]


def _seconds(doc: str, *, max: float) -> Any:
    """A duration of chaos: off (0) by default, never negative, at most ``max`` seconds."""
    return seconds(0.0, doc, min=0, max=max, strict=True)


@attrs.frozen(slots=True)
class Chaos:
    """What goes wrong on purpose in one consumer; every option is off by default.

    Raises:
        ValueError: an option is out of its bounds (checked when the value is made).
    """

    crash_rate: float = option(
        0.0,
        kind="number",
        min=0,
        max=1,
        doc="fraction of handler calls that fail (0 to 1)",
        strict=True,
    )
    latency_s: float = _seconds("seconds added before every handler call", max=60)
    outage_after_s: float = _seconds("seconds after start when the outage begins", max=86_400)
    outage_s: float = _seconds("how long the outage lasts (0: no outage)", max=86_400)
    seed: int = option(
        0, kind="int", min=0, doc="seeds which calls fail, so runs repeat", strict=True
    )

    def fails(self, consumer: str, event_id: str, attempt: int) -> bool:
        """Whether this attempt of this event fails: a pure function of its arguments."""
        if self.crash_rate <= 0:
            return False
        draw = random.Random(f"{self.seed}/{consumer}/{event_id}/{attempt}").random()
        return draw < self.crash_rate

    def outage_left(self, since_start: float) -> float:
        """Seconds of the outage still to come at ``since_start`` seconds; 0 outside it."""
        if self.outage_s <= 0 or since_start < self.outage_after_s:
            return 0.0
        return max(0.0, self.outage_after_s + self.outage_s - since_start)

    def wrap(self, handler: Any, name: str, clock: Callable[[], float]) -> ChaosHandler:
        """``handler`` with this chaos around it, for consumer ``name``."""
        return ChaosHandler(handler, self, name, clock)


class ChaosHandler:
    """A consumer's handler with its declared chaos around each call.

    A handler class is instantiated afresh by each incarnation, as it would be
    without chaos; ``on_start`` and ``on_stop`` are passed on.

    Thread-safety: one consumer incarnation calls it at a time; the wrapper's own
    state is set before the consumer starts.
    """

    def __init__(self, handler: Any, chaos: Chaos, name: str, clock: Callable[[], float]) -> None:
        self.inner = handler
        self.chaos = chaos
        self.name = name
        self._clock = clock
        # The outage is timed from when the consumer was set up; restarts share this
        # wrapper, so a restart neither restarts nor skips the outage.
        self._started = clock()
        self._target: Any = None if inspect.isclass(handler) else handler
        self._pause = threading.Event()  # never set: waits out the latency

    def on_start(self) -> None:
        if inspect.isclass(self.inner):
            self._target = self.inner()
        hook = getattr(self._target, "on_start", None)
        if callable(hook) and callable(getattr(self._target, "handle", None)):
            hook()

    def on_stop(self) -> None:
        hook = getattr(self._target, "on_stop", None)
        if callable(hook) and callable(getattr(self._target, "handle", None)):
            hook()

    def handle(self, event: Event) -> Any:
        chaos = self.chaos
        left = chaos.outage_left(self._clock() - self._started)
        if left > 0:
            raise ChaosOutage(
                f"chaos: the broker of consumer {self.name!r} is unavailable "
                f"for {left:.1f}s more (declared outage)"
            )
        if chaos.latency_s > 0:
            self._pause.wait(chaos.latency_s)
        if chaos.fails(self.name, event.id, current_delivery().attempt):
            raise ChaosError(
                f"chaos: consumer {self.name!r} failed on purpose (crash_rate {chaos.crash_rate:g})"
            )
        target = self._target
        handle = getattr(target, "handle", None)
        return handle(event) if callable(handle) else target(event)

    def __repr__(self) -> str:
        return f"ChaosHandler({self.inner!r}, {self.chaos!r})"
