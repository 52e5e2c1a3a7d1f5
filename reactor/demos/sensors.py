"""Sensors: a topology that heals itself while you watch.

::

    sensor-1..3 ──telemetry.reading──▶ [telemetry] ─▶ detector ──telemetry.anomaly──▶ [telemetry]
                                                  └▶ alerter ──alert.raised──▶ [alerts] ─▶ alert-log
    [$system] ──$deadletter──▶ dead-letters

* Three simulated sensors are callables polled every 100 ms.
* Now and then a sensor sends a *garbled* frame: the detector crashes on it, its
  supervisor restarts it, and the redelivered frame decodes on the second try.
* Once in a while a *poison* reading (``temp: "ERR"``) fails every attempt and
  ends on ``$deadletter``, where the ``dead-letters`` consumer collects it.
* Readings above a threshold become ``telemetry.anomaly`` events, which the
  ``alerter`` processor turns into ``alert.raised`` events on the ``alerts`` channel.
"""

from __future__ import annotations

import math
import random
import threading
from typing import Any

from reactor.demos.crashing import quick_restarts
from reactor.messages.event import Event
from reactor.runtime.topology import Topology

__all__ = ["DESCRIPTION", "AnomalyDetector", "MalformedReading", "SensorFeed", "build"]

DESCRIPTION = "sensors, a detector that crashes and heals, alerts, poison in $deadletter"

THRESHOLD_C = 30.0
POLL_INTERVAL_S = 0.1


class MalformedReading(ValueError):
    """A reading the detector cannot decode."""


class SensorFeed:
    """A simulated temperature sensor, polled by a producer every interval.

    Args:
        sensor: the sensor's name (also the events' key, so its readings stay in order).
        seed: seeds the noise, so runs look alike.
        glitch_every: every n-th reading is a garbled frame (0: never).
        first_glitch: the sequence number of the first garbled frame.
        poison_every: every n-th reading is poison (0: never).
        first_poison: the sequence number of the first poison reading.
    """

    def __init__(
        self,
        sensor: str,
        *,
        seed: int,
        glitch_every: int = 0,
        first_glitch: int = 0,
        poison_every: int = 0,
        first_poison: int = 0,
    ) -> None:
        self.sensor = sensor
        self.seq = 0
        self._rng = random.Random(seed)
        self._glitch = (glitch_every, first_glitch)
        self._poison = (poison_every, first_poison)

    @staticmethod
    def _due(seq: int, every: int, first: int) -> bool:
        return bool(every or first) and (
            seq == first or (every > 0 and seq > first and (seq - first) % every == 0)
        )

    def __call__(self) -> dict[str, Any]:
        self.seq += 1
        seq = self.seq
        reading: dict[str, Any] = {"sensor": self.sensor, "seq": seq}
        if self._due(seq, *self._poison):
            reading["temp"] = "ERR"  # a broken sensor: no retry will decode this
        elif self._due(seq, *self._glitch):
            reading["frame"] = "#\x00garbled"
        else:
            wave = 22.0 + 4.0 * math.sin(seq / 15.0)
            spike = 12.0 if self._rng.random() < 0.04 else 0.0
            reading["temp"] = round(wave + spike + self._rng.gauss(0.0, 0.8), 2)
        return reading


class AnomalyDetector:
    """Validates readings and flags the hot ones as ``telemetry.anomaly`` events.

    A garbled frame raises :class:`MalformedReading` the first time it is seen.
    The detector is declared with ``failure_threshold=1`` ("let it crash": after
    an error its state is suspect), so that failure also restarts the consumer;
    the frame, redelivered, is then read as a retransmission and skipped. A poison
    reading raises every time, so it ends on ``$deadletter`` after
    ``max_deliveries`` attempts.

    Thread-safety: one consumer uses it at a time; it survives restarts because
    the same instance is reused (which is how it remembers what it retried).
    """

    def __init__(self) -> None:
        self._retried: set[str] = set()
        self._lock = threading.Lock()

    def handle(self, event: Event) -> tuple[str, dict[str, Any]] | None:
        reading = event.data
        if "frame" in reading:
            with self._lock:
                first = event.id not in self._retried
                self._retried.add(event.id)
            if first:
                raise MalformedReading(
                    f"garbled frame from {reading['sensor']} (seq {reading['seq']})"
                )
            return None
        temp = reading.get("temp")
        if not isinstance(temp, int | float):
            raise MalformedReading(f"{reading['sensor']} sent temp={temp!r}, expected a number")
        if temp > THRESHOLD_C:
            return (
                "telemetry.anomaly",
                {"sensor": reading["sensor"], "seq": reading["seq"], "temp": temp},
            )
        return None


def raise_alert(event: Event) -> tuple[str, dict[str, Any]]:
    """The processor: an anomaly becomes an alert on the ``alerts`` channel."""
    temp = event.data["temp"]
    severity = "critical" if temp > THRESHOLD_C + 8 else "warning"
    return ("alert.raised", {"sensor": event.data["sensor"], "temp": temp, "severity": severity})


class Tally:
    """Counts what it handles (the alert log and the dead-letter sink).

    Thread-safety: safe.
    """

    def __init__(self) -> None:
        self.count = 0
        self.last: Event | None = None
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.count += 1
            self.last = event


def build() -> Topology:
    """The sensors topology: three sensors, a crashing detector, alerts, dead letters."""
    topo = Topology("sensors")
    topo.channel("telemetry", capacity=1_000)
    topo.channel("alerts", capacity=1_000)
    feeds = (
        SensorFeed("sensor-1", seed=1, glitch_every=40, first_glitch=5),
        SensorFeed(
            "sensor-2", seed=2, glitch_every=55, first_glitch=30, poison_every=150, first_poison=12
        ),
        SensorFeed(
            "sensor-3", seed=3, glitch_every=70, first_glitch=50, poison_every=220, first_poison=90
        ),
    )
    for feed in feeds:
        topo.producer(
            feed.sensor,
            channel="telemetry",
            topic="telemetry.reading",
            source=feed,
            interval=POLL_INTERVAL_S,
            key="sensor",
        )
    # Generous intensity: the demo crashes on purpose, and must not escalate.
    strategy = quick_restarts(max_restarts=100)
    with topo.supervisor("detection", strategy) as sup:
        sup.consumer(
            "detector",
            AnomalyDetector(),
            channel="telemetry",
            pattern="telemetry.reading",
            max_deliveries=3,
            prefetch=16,
            failure_threshold=1,  # every error restarts it: the demo shows supervision
        )
        sup.consumer(
            "alerter",
            raise_alert,
            channel="telemetry",
            pattern="telemetry.anomaly",
            output="alerts",
        )
    topo.consumer("alert-log", Tally(), channel="alerts", pattern="alert.#")
    topo.consumer("dead-letters", Tally(), channel="$system", pattern="$deadletter")
    return topo
