"""The README's example is code: it must run as written."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from reactor import Backoff, Chaos, PoolScaling, Retry
from reactor.runtime.declarations import (
    ChannelDecl,
    ConsumerDecl,
    PoolDecl,
    ProducerDecl,
    SupervisorDecl,
)
from reactor.runtime.projections import ProjectionDecl
from reactor.runtime.sagadecl import SagaDecl, StepDecl
from reactor.schema import options_of
from reactor.supervision.strategy import Strategy

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    match = re.search(r"## Example\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its example"
    exec(compile(match.group(1), str(README), "exec"), {})  # our own README, run as documentation
    out = capsys.readouterr().out
    assert "orders.billed" in out  # the audit consumer printed billed events
    assert "ChannelMetrics(name='orders'" in out


def test_the_readme_service_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    section = re.search(r"## Embedding in a service\n(.*?)\n## ", README.read_text(), re.S)
    assert section, "README.md lost its section on embedding"
    code = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert code, "the embedding section lost its example"
    exec(compile(code.group(1), str(README), "exec"), {})  # our own README, run as documentation
    out = capsys.readouterr().out
    assert "accepted " in out
    assert "billing order 7" in out
    assert "quoted 42" in out


def test_the_readme_delayed_events_example_runs() -> None:
    section = re.search(r"### Delayed and scheduled events\n(.*?)\n### ", README.read_text(), re.S)
    assert section, "README.md lost its section on delayed events"
    code = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert code, "the delayed events section lost its example"
    exec(compile(code.group(1), str(README), "exec"), {})  # our own README, run as documentation


# -- the option table, derived from the schema -----------------------------------------------

START, END = "<!-- options: start -->\n", "<!-- options: end -->\n"


def _default(value: object) -> str:
    if value is attrs.NOTHING:
        return "required"
    if attrs.has(type(value)):
        return f"`{type(value).__name__}()`"
    return "off" if value is None else f"`{value!r}`"


def _rows(cls: type, skip: frozenset[str] = frozenset(), required: tuple[str, ...] = ()) -> str:
    lines = ["| option | default | allowed | meaning |", "|---|---|---|---|"]
    for opt in options_of(cls):
        if opt.name in skip or opt.name in getattr(cls, "not_options", ()):
            continue
        default = "required" if opt.name in required else _default(opt.default)
        allowed = "" if opt.kind == "custom" else opt.expected()
        lines.append(f"| `{opt.name}` | {default} | {allowed} | {opt.doc} |")
    return "\n".join(lines) + "\n"


def option_tables() -> str:
    """The README's option tables, as the schema states them."""
    consumer = {opt.name: opt.default for opt in options_of(ConsumerDecl)}
    pool_only = frozenset(
        opt.name
        for opt in options_of(PoolDecl)
        if opt.name in consumer and consumer[opt.name] == opt.default
    )
    sections = [
        ("`topo.channel(name, ...)`, `[channels.<name>]`", _rows(ChannelDecl)),
        ("`topo.producer(name, ...)`, `[producers.<name>]`", _rows(ProducerDecl)),
        (
            "`topo.consumer(name, handler, ...)`, `[consumers.<name>]`",
            _rows(ConsumerDecl, required=("handler",)),
        ),
        (
            "`topo.pool(name, handler, ...)`, `[pools.<name>]`: a consumer's options except "
            "`restart`, and",
            _rows(PoolDecl, skip=pool_only),
        ),
        ("`topo.supervisor(name, ...)`, `[supervisors.<name>]`", _rows(SupervisorDecl)),
        (
            "`topo.projection(name, apply, ...)`, `[projections.<name>]`",
            _rows(ProjectionDecl, required=("apply",)),
        ),
        (
            '`OneForOne`, `OneForAll`, `RestForOne` (in TOML: `strategy = "one_for_one"` and '
            "these keys, in `[topology]` for the root)",
            _rows(Strategy),
        ),
        ("`Backoff` (in TOML: `backoff = { ... }`)", _rows(Backoff)),
        ("`Retry` of a consumer (in TOML: `retry = { ... }`)", _rows(Retry)),
        ("`PoolScaling` of a pool (in TOML: `scaling = { ... }`)", _rows(PoolScaling)),
        ("`Chaos` of a consumer or pool (in TOML: `chaos = { ... }`)", _rows(Chaos)),
        ("`topo.saga(name, ...)`, `[sagas.<name>]`", _rows(SagaDecl)),
        (
            "`saga.step(name, ...)`, `[sagas.<name>.steps.<step>]`",
            _rows(StepDecl, required=("action",)),
        ),
    ]
    return "\n".join(f"{title}:\n\n{rows}" for title, rows in sections)


def test_the_readme_saga_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    section = re.search(r"### Sagas\n(.*?)\n## ", README.read_text(), re.S)
    assert section, "README.md lost its section on sagas"
    code = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert code, "the sagas section lost its example"
    exec(compile(code.group(1), str(README), "exec"), {})  # our own README, run as documentation
    out = capsys.readouterr().out
    assert "completed {'qty': 2, 'charged': 10, 'reserved': 2}" in out
    assert "refund 250" in out
    assert "compensated {'qty': 50, 'charged': 250}" in out
    assert "completed=1, compensated=1, stuck=0" in out


def test_the_readme_option_table_is_the_schema() -> None:
    text = README.read_text()
    assert START in text, "README.md lost its option table"
    assert END in text, "README.md lost the end of its option table"
    table = text.split(START, 1)[1].split(END, 1)[0]
    assert table == option_tables(), "regenerate it: python tests/test_readme.py"


if __name__ == "__main__":
    text = README.read_text()
    before, rest = text.split(START, 1)
    README.write_text(before + START + option_tables() + END + rest.split(END, 1)[1])


def test_the_readmes_dead_letter_subscription_runs() -> None:
    import threading  # noqa: PLC0415 - only this test waits for a handler

    import reactor  # noqa: PLC0415

    match = re.search(r"### Dead letters\n.*?```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its dead-letter subscription"
    topo = reactor.Topology("poison")
    topo.channel("orders")

    def fail(event: reactor.Event) -> None:
        raise ValueError("poison")

    topo.consumer("billing", fail, channel="orders", max_deliveries=2, retry=Retry(min_s=0.01))
    namespace: dict[str, object] = {"topo": topo, "Event": reactor.Event}
    exec(compile(match.group(1), str(README), "exec"), namespace)  # our README, as documentation
    seen: list[reactor.Event] = []
    arrived = threading.Event()
    handler = namespace["on_dead_letter"]

    def record(letter: reactor.Event) -> None:
        handler(letter)  # type: ignore[operator]
        seen.append(letter)
        arrived.set()

    # The snippet declared its consumer on $system; swap in a recording wrapper of it.
    (decl,) = [d for d in topo.consumers() if d.name == "dead-letters"]
    assert (decl.channel, decl.patterns) == ("$system", ("$deadletter",))
    decl.handler = record
    with topo.start() as system:
        system.publish("orders", "orders.created", {"id": 1})
        assert arrived.wait(10), "the README's subscriber got no dead letter"
    data = seen[0].data
    assert data["event"].data == {"id": 1}
    assert (data["error_type"], data["message"], data["attempts"]) == ("ValueError", "poison", 2)
    assert (data["consumer"], data["group"], data["channel"]) == ("billing", "billing", "orders")
    assert "Traceback" in data["traceback"]


def test_the_readmes_projection_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    match = re.search(r"### Projections\n.*?```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its projection example"
    monkeypatch.chdir(tmp_path)  # its sqlite file
    exec(compile(match.group(1), str(README), "exec"), {})  # our README, as documentation
    assert (tmp_path / "shop.db").exists()


def test_the_readme_and_the_redis_backend_name_one_redis_version() -> None:
    import reactor.channels.redis as backend  # noqa: PLC0415

    assert "Redis >= 6.2" in (backend.__doc__ or "")
    text = README.read_text()
    assert "Redis 6.2 or newer" in text
    assert "7.0 or newer" not in text


def test_the_readmes_small_versioned_events_example_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    section = re.search(r"## Small, versioned events\n(.*?)\n## ", README.read_text(), re.S)
    assert section, "README.md lost its section on small, versioned events"
    code = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert code, "the section lost its example"
    exec(compile(code.group(1), str(README), "exec"), {})  # our own README, run as documentation
    size, limit = capsys.readouterr().out.split(" > ")
    assert int(size) > 100_000  # the 100,000 characters and the envelope, encoded
    assert int(limit) == 64 * 1024
