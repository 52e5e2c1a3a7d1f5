"""``python -m benchmarks NAME [options]``: run one benchmark; ``list`` shows them all.

A benchmark is a function ``main(argv) -> exit status`` registered in
:data:`BENCHMARKS`; its docstring's first line is what ``list`` prints.
Add one by writing a module beside ``pipeline.py`` and one line below.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks import (
    batching,
    codecs,
    coldstart,
    dashboard,
    failures,
    pipeline,
    publish,
    redis,
    scale,
    sqlite,
    supervision,
)

Benchmark = Callable[[list[str]], int]

BENCHMARKS: dict[str, Benchmark] = {
    "pipeline": pipeline.main,
    "publish": publish.main,
    "supervision": supervision.main,
    "sqlite": sqlite.main,
    "redis": redis.main,
    "dashboard": dashboard.main,
    "failures": failures.main,
    "coldstart": coldstart.main,
    "codecs": codecs.main,
    "scale": scale.main,
    "batching": batching.main,
}

USAGE = "usage: python -m benchmarks {list | NAME [--help] [options]}"


def summary(benchmark: Benchmark) -> str:
    doc = benchmark.__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def list_benchmarks() -> int:
    width = max(len(name) for name in BENCHMARKS)
    for name, benchmark in BENCHMARKS.items():
        print(f"{name:<{width}}  {summary(benchmark)}")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("benchmarks:")
        list_benchmarks()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "list":
        return list_benchmarks()
    benchmark = BENCHMARKS.get(name)
    if benchmark is None:
        print(f"unknown benchmark {name!r}; known: list, {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return benchmark(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
