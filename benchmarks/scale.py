"""Scale: start and stop N consumers in one process, per actor vs bare pykka actors.

Each measurement runs in a fresh child process (``python -m benchmarks scale
--child VARIANT N``), so one variant's freed heap and cached thread stacks do not
flatter the next one's RSS; the child prints one JSON line. Variants:

* ``pykka``: N bare ``pykka.ThreadingActor`` s, started with ``start()``, stopped
  with ``ActorRegistry.stop_all()``. The baseline.
* ``reactor``: a topology of one memory channel and N consumers, each in its own
  group (what ``topo.consumer`` declares), timed from ``topo.start()`` (validation,
  the supervision tree, every ``on_start`` and group join) to its return.
* ``reactor-group``: the same N consumers as members of one group (the worst case
  for the channel: every join and leave reshapes one group).

Start is seconds per actor; RSS is the growth of the process' resident set from
just before the start to just after it, per actor (the declarations are made
before, and are not counted). Stop is the whole ``system.stop()``, with the
count of threads left after it (must be 0).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from benchmarks._harness import describe_machine

TARGET_RATIO = 1.2
TARGET_STOP_S = 10.0
VARIANTS = ("pykka", "reactor", "reactor-group")


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def _run_pykka(count: int) -> dict[str, float]:
    import pykka  # noqa: PLC0415 - the child imports only what its variant needs

    class Bare(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            return message

    gc.collect()
    rss = _rss_kib()
    started = time.perf_counter()
    refs = [Bare.start() for _ in range(count)]
    start_s = time.perf_counter() - started
    rss_kib = _rss_kib() - rss
    assert refs[-1].ask("ping", timeout=60) == "ping"
    stopping = time.perf_counter()
    pykka.ActorRegistry.stop_all(block=True, timeout=60)
    stop_s = time.perf_counter() - stopping
    return {"start_s": start_s, "rss_kib": rss_kib, "stop_s": stop_s}


def _run_reactor(count: int, shared_group: bool) -> dict[str, float]:
    from reactor import Topology  # noqa: PLC0415

    def handle(event: Any) -> None:
        return None

    topo = Topology("bench-scale")
    topo.channel("c")
    group = {"group": "all"} if shared_group else {}
    for index in range(count):
        topo.consumer(f"c{index}", handle, channel="c", **group)
    gc.collect()
    rss = _rss_kib()
    started = time.perf_counter()
    system = topo.start()
    start_s = time.perf_counter() - started
    rss_kib = _rss_kib() - rss
    system.publish("c", "bench.ping", {})
    system.wait_idle(60)
    stopping = time.perf_counter()
    system.stop(timeout=60)
    stop_s = time.perf_counter() - stopping
    return {"start_s": start_s, "rss_kib": rss_kib, "stop_s": stop_s}


def _child(variant: str, count: int) -> int:
    if variant == "pykka":
        figures = _run_pykka(count)
    else:
        figures = _run_reactor(count, shared_group=variant == "reactor-group")
    figures["threads_left"] = threading.active_count() - 1
    print(json.dumps(figures))
    return 0


def _measure(variant: str, count: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "scale", "--child", variant, str(count)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} x {count} failed:\n{done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str]) -> int:
    """Start and stop 1,000 and 10,000 consumers: time and RSS per actor vs bare pykka."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks scale", description=__doc__)
    parser.add_argument(
        "--counts", type=int, nargs="+", default=[1000, 10000], help="actors (default 1000 10000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept (3)")
    parser.add_argument("--only", action="append", choices=VARIANTS, help="run just these")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        return _child(options.child[0], int(options.child[1]))
    variants = [v for v in VARIANTS if not options.only or v in options.only or v == "pykka"]
    print(f"scale: best of {options.repeat}, each run a fresh process; {describe_machine()}")
    verdicts: list[bool] = []
    for count in options.counts:
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for round_ in range(1, options.repeat + 1):
            for variant in variants:  # interleaved: load from elsewhere hurts all alike
                figures = _measure(variant, count)
                runs[variant].append(figures)
                print(
                    f"  {count:>6,} round {round_} {variant:<14}"
                    f" start {figures['start_s'] / count * 1e6:8.1f} us/actor"
                    f"  rss {figures['rss_kib'] / count:6.2f} KiB/actor"
                    f"  stop {figures['stop_s']:6.2f} s  threads left {figures['threads_left']:.0f}",
                    flush=True,
                )
        base_start = min(r["start_s"] for r in runs["pykka"])
        base_rss = min(r["rss_kib"] for r in runs["pykka"])
        print(f"{count:,} actors, best of {options.repeat}:")
        for variant in variants:
            start = min(r["start_s"] for r in runs[variant])
            rss = min(r["rss_kib"] for r in runs[variant])
            stop = min(r["stop_s"] for r in runs[variant])
            left = max(r["threads_left"] for r in runs[variant])
            line = (
                f"  {variant:<14} start {start / count * 1e6:8.1f} us/actor ({start / base_start:4.2f}x)"
                f"  rss {rss / count:6.2f} KiB/actor ({rss / base_rss:4.2f}x)"
                f"  stop {stop:6.2f} s  threads left {left:.0f}"
            )
            if variant != "pykka":
                met = (
                    start / base_start <= TARGET_RATIO
                    and rss / base_rss <= TARGET_RATIO
                    and stop <= TARGET_STOP_S
                    and left == 0
                )
                verdicts.append(met)
                line += "  meets" if met else "  MISSES"
            print(line)
    print(
        f"target: start and RSS per actor within {TARGET_RATIO}x of bare pykka, stop within "
        f"{TARGET_STOP_S:g} s, no thread left: {'met' if all(verdicts) else 'NOT met'}"
    )
    return 0
