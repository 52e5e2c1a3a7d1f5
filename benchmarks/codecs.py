"""``codecs``: encode + decode per event, each codec on each JSON library, vs. the stdlib's json.

For each codec (``json``, ``cloudevents``) the same ``N`` events are encoded to
bytes and decoded back to events, in one thread, with the codec's JSON written
by the standard library (``json="stdlib"``) and, when it is installed, by orjson
(``json="orjson"``). The baseline, in the same run, is ``json.dumps`` +
``json.loads`` (stdlib, default options) of the very dict the codec writes for
each event: the JSON work alone, with no event made or checked.

Targets (issue 13, target 4): each codec on the stdlib at most **1.5x** the
baseline; on orjson at least **2x** faster than on the stdlib. Rounds are
interleaved and each variant's best is kept. Times are the thread's CPU time,
so that load from other processes does not count (the "events/s" of each round
are per CPU second).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from benchmarks._harness import Result, best_of, describe_machine
from reactor import CloudEventsCodec, Event, JsonCodec

__all__ = ["main"]

# The thread's CPU time, not the wall clock: everything here runs in one thread,
# and on a shared machine the wall clock also counts the time others had the CPU.
cpu = time.thread_time

MAX_VS_STDLIB_JSON = 1.5
MIN_ORJSON_SPEEDUP = 2.0


def _events(count: int, nested: bool) -> list[Event]:
    def data(n: int) -> dict[str, Any]:
        flat = {"order": n, "customer": f"c-{n % 97}", "amount": n * 3 % 1000}
        if nested:
            flat["lines"] = [{"sku": f"s-{i}", "qty": i, "price": 9.5} for i in range(3)]
        return flat

    return [
        Event.create("orders.created", data(n), key=f"c-{n % 97}", source="bench")
        for n in range(count)
    ]


def _round_trips(
    encode: Callable[[Any], Any], decode: Callable[[Any], Any], items: list[Any]
) -> Callable[[int], float]:
    """A run: ``decode(encode(item))`` for the first ``count`` items, in CPU seconds."""

    def run(count: int) -> float:
        started = cpu()
        for item in items[:count]:
            decode(encode(item))
        return cpu() - started

    return run


def _libraries() -> list[str]:
    try:
        import orjson  # noqa: F401, PLC0415 - only to know whether it is there
    except ImportError:
        return ["stdlib"]
    return ["stdlib", "orjson"]


def main(argv: list[str]) -> int:
    """Codecs: encode + decode per event on the stdlib and on orjson, vs. json.dumps + json.loads."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks codecs", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant, best kept")
    parser.add_argument("--nested", action="store_true", help="add a list of 3 line items")
    args = parser.parse_args(argv)
    print(f"codecs: {args.events:,} events, best of {args.repeat}, nested={args.nested}")
    print(describe_machine())
    events = _events(args.events, args.nested)
    libraries = _libraries()
    verdicts: list[bool] = []
    for codec_type in (JsonCodec, CloudEventsCodec):
        name = codec_type.name
        stdlib_codec = codec_type(json="stdlib")
        dicts = [json.loads(stdlib_codec.encode(e)) for e in events]
        variants: dict[str, Callable[[int], float]] = {
            "json.dumps+loads": _round_trips(json.dumps, json.loads, dicts)
        }
        for library in libraries:
            codec = codec_type(json=library)
            variants[f"{name}/{library}"] = _round_trips(codec.encode, codec.decode, events)
        print(f"\n{name}")
        results = {r.name: r for r in best_of(variants, args.repeat, args.events)}
        verdicts += _report(name, results, libraries)
    print("\nall targets met" if all(verdicts) else "\nsome targets MISSED")
    return 0


def _report(name: str, results: dict[str, Result], libraries: list[str]) -> list[bool]:
    base = results["json.dumps+loads"]
    for r in results.values():
        print(f"  {r.name:<22} {1e6 * r.best_s / r.events:>7.2f} us per event")
    stdlib = results[f"{name}/stdlib"]
    ratio = stdlib.best_s / base.best_s
    met = ratio <= MAX_VS_STDLIB_JSON
    print(
        f"  {name} on the stdlib: {ratio:.2f}x json.dumps+loads "
        f"(target <= {MAX_VS_STDLIB_JSON}x: {'meets' if met else 'MISSES'})"
    )
    verdicts = [met]
    if "orjson" in libraries:
        fast = results[f"{name}/orjson"]
        speedup = stdlib.best_s / fast.best_s
        ok = speedup >= MIN_ORJSON_SPEEDUP
        print(
            f"  {name} on orjson: {speedup:.2f}x faster than on the stdlib "
            f"(target >= {MIN_ORJSON_SPEEDUP}x: {'meets' if ok else 'MISSES'}), "
            f"{fast.best_s / base.best_s:.2f}x json.dumps+loads"
        )
        verdicts.append(ok)
    else:
        print("  orjson is not installed: pip install orjson (or the redis extra) to measure it")
    return verdicts
