"""Benchmarks for reactor: not tests (STYLE.md rule 12).

Each benchmark compares reactor against a baseline measured in the same run and
prints ratios. Run them from the repository root::

    python -m benchmarks list
    python -m benchmarks pipeline --events 200000 --repeat 3

See ``benchmarks/README.md`` for what each one measures.
"""
