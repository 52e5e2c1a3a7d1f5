"""Shared helpers: timing, best-of-R, gated sources and the report table."""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TypeVar

__all__ = ["Result", "best_of", "describe_machine", "gated_source", "median_ratio", "now"]

T = TypeVar("T")


class Result:
    """One variant's best run: events handled and the seconds they took."""

    __slots__ = ("events", "name", "runs")

    def __init__(self, name: str, events: int, runs: list[float]) -> None:
        self.name = name
        self.events = events
        self.runs = runs  # seconds, one per repeat

    @property
    def best_s(self) -> float:
        return min(self.runs)

    @property
    def rate(self) -> float:
        """Events per second of the best run."""
        return self.events / self.best_s


def gated_source(items: Iterable[T], go: threading.Event) -> Iterator[T]:
    """Yield ``items``, but only once ``go`` is set.

    Every variant pulls from one of these, so the clock can start after the
    variant is fully built and started: the first ``next()`` blocks until the
    benchmark reads the start time and sets ``go``.
    """
    go.wait()
    yield from items


def best_of(
    variants: Mapping[str, Callable[[int], float]],
    repeat: int,
    events: int,
    *,
    verbose: bool = True,
) -> list[Result]:
    """Run every variant ``repeat`` times, interleaved, and keep each one's runs.

    ``variants`` maps a name to ``run_once(events) -> seconds``. Rounds are
    interleaved (A B C, A B C, ...) rather than grouped (A A A, B B B) so that a
    burst of load from elsewhere on the machine hurts every variant alike.
    ``verbose`` prints each run as it ends.
    """
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(1, repeat + 1):
        for name, run_once in variants.items():
            gc.collect()  # start each run from the same heap, not the last run's garbage
            seconds = run_once(events)
            runs[name].append(seconds)
            if not verbose:
                continue
            print(
                f"  round {round_}  {name:<12} {events / seconds:>12,.0f} events/s"
                f"  ({seconds:.3f} s)",
                flush=True,
            )
    return [Result(name, events, seconds) for name, seconds in runs.items()]


def median_ratio(baseline_s: list[float], variant_s: list[float]) -> float:
    """The median over rounds of variant rate / baseline rate (``baseline_s[i] / variant_s[i]``).

    Round ``i`` of both ran back to back (interleaved), so each round's ratio
    shares that moment's load; the median drops the rounds the host disturbed.
    """
    return statistics.median(b / v for b, v in zip(baseline_s, variant_s, strict=True))


def describe_machine() -> str:
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, python {platform.python_version()} "
        f"({sys.implementation.name}), {os.cpu_count()} cores, "
        f"{platform.system()} {platform.machine()}"
    )


def now() -> float:
    """The benchmark clock: monotonic, highest resolution."""
    return time.perf_counter()


def parser(name: str, doc: str | None, *, events: int, repeat: int) -> argparse.ArgumentParser:
    """The command line every throughput benchmark starts from: ``--events`` and ``--repeat``."""
    parsed = argparse.ArgumentParser(
        prog=f"python -m benchmarks {name}",
        description=doc,
        epilog="See benchmarks/README.md for what is timed in each variant.",
    )
    parsed.add_argument(
        "--events", type=int, default=events, help="events per run (default %(default)s)"
    )
    parsed.add_argument(
        "--repeat",
        type=int,
        default=repeat,
        help="runs per variant; the best counts (default %(default)s)",
    )
    return parsed
