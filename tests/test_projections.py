"""Projections: folds on every backend, checkpoints, resume, rebuild, lag, failures, TOML.

Each fold here is a pure function of the events, so the state a test expects is
computed beforehand with ``functools.reduce`` over what it published.
"""

from __future__ import annotations

import contextlib
import functools
import io
import sqlite3
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import reactor
from reactor import Event, FrozenDict, Topology
from reactor.errors import NotDurableError, TopologyError, UnknownProjectionError
from reactor.testing import wait_for

# -- the read model of these tests: stock per sku, and the numbers folded in order -------


def stock(state: Any, event: Event) -> Any:
    sku = event.data["sku"]
    return {
        **state,
        sku: state.get(sku, 0) + event.data["qty"],
        "seen": (*state.get("seen", ()), event.data["n"]),
    }


def data(n: int) -> dict[str, Any]:
    return {"sku": f"sku-{n % 3}", "qty": 1 + n % 4, "n": n}


class _Event:
    """Just what ``stock`` reads of an event, to compute the expected state."""

    def __init__(self, n: int) -> None:
        self.data = data(n)


def expected(numbers: range | list[int]) -> Any:
    return reactor.freeze(functools.reduce(stock, [_Event(n) for n in numbers], {}))


def folded_once(state: Any, numbers: range | list[int]) -> bool:
    """Whether ``state`` folded each of ``numbers`` once, in whatever order."""
    want = expected(numbers)
    return sorted(state["seen"]) == sorted(numbers) and {
        key: value for key, value in state.items() if key != "seen"
    } == {key: value for key, value in want.items() if key != "seen"}


def topology(backend: str, apply: Callable[[Any, Event], Any] = stock, **options: Any) -> Topology:
    topo = Topology("shop")
    topo.channel("orders", backend=backend)
    topo.projection(
        "stock", apply, channel="orders", pattern="stock.#", initial=FrozenDict(), **options
    )
    return topo


def publish(system: reactor.System, numbers: range | list[int]) -> None:
    for n in numbers:
        system.publish("orders", "stock.moved", data(n), key=f"sku-{n % 3}")


# -- folding -------------------------------------------------------------------------


def test_a_projection_folds_the_events_of_its_pattern_on_every_backend(backend: str) -> None:
    with topology(backend).start() as system:
        publish(system, range(40))
        system.publish("orders", "price.changed", {"sku": "sku-1", "qty": 99, "n": -1})
        system.wait_idle()
        snapshot = system.projection("stock")
    assert snapshot.state == expected(range(40))
    assert isinstance(snapshot.state, FrozenDict)
    assert snapshot.folded == 40
    assert snapshot.lag == 0
    assert snapshot.name == "stock"
    assert snapshot.channel == "orders"


def test_the_decorator_form_declares_the_same_projection() -> None:
    topo = Topology("shop")
    topo.channel("orders")

    @topo.projection("count", channel="orders", initial=0)
    def count(state: int, event: Event) -> int:
        return state + 1

    with topo.start() as system:
        for n in range(5):
            system.publish("orders", "anything", {"n": n})
        system.wait_idle()
        assert system.projection("count").state == 5
    assert count(1, Event.create("x", {})) == 2


def test_an_unknown_projection_is_an_error_that_suggests_the_name() -> None:
    with topology("memory").start() as system:
        with pytest.raises(UnknownProjectionError, match=r"did you mean 'stock'\?"):
            system.projection("stok")
        with pytest.raises(LookupError):
            system.rebuild_projection("nope")


# -- checkpoints, resume, rebuild (backend backends) ----------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)
def test_a_restart_resumes_from_the_checkpoint_and_folds_nothing_twice(backend: str) -> None:
    calls: list[int] = []

    def counting(state: Any, event: Event) -> Any:
        calls.append(event.data["n"])
        return stock(state, event)

    with topology(backend, counting).start() as system:
        publish(system, range(30))
        system.wait_idle()
    assert sorted(calls) == list(range(30))
    calls.clear()
    with topology(backend, counting).start() as system:
        assert system.projection("stock").state == expected(range(30))  # before any event
        publish(system, range(30, 45))
        system.wait_idle()
        snapshot = system.projection("stock")
    assert sorted(calls) == list(range(30, 45))
    assert snapshot.state == expected(range(45))


def _checkpoint_row(backend: str) -> Callable[[], Any]:
    """Reads the projection's stored checkpoint, to put it back later (a crash's view)."""
    if backend.startswith("sqlite"):
        path = backend.removeprefix("sqlite:///")

        def read() -> Any:
            with contextlib.closing(sqlite3.connect(path)) as db:
                return db.execute(
                    "SELECT channel, name, position, above, state FROM reactor_projections"
                ).fetchone()

        return read
    import redis  # noqa: PLC0415 - the redis tests only

    url, _, query = backend.partition("?")
    prefix = dict(part.split("=") for part in query.split("&"))["prefix"]
    key = f"{prefix}:orders:projection:stock"

    def read_hash() -> Any:
        with redis.Redis.from_url(url) as client:
            return client.hgetall(key)

    return read_hash


def _restore(backend: str, row: Any) -> None:
    if backend.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(backend.removeprefix("sqlite:///"))) as db, db:
            db.execute("INSERT OR REPLACE INTO reactor_projections VALUES (?, ?, ?, ?, ?)", row)
        return
    import redis  # noqa: PLC0415 - the redis tests only

    url, _, query = backend.partition("?")
    prefix = dict(part.split("=") for part in query.split("&"))["prefix"]
    with redis.Redis.from_url(url) as client:
        client.hset(f"{prefix}:orders:projection:stock", mapping=row)


@pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)
def test_events_acked_after_the_last_checkpoint_are_folded_again_once_at_start(
    backend: str,
) -> None:
    # A crash after the channel acked events but before the projection checkpointed
    # them: the stored checkpoint is older than the group's position.
    read = _checkpoint_row(backend)
    with topology(backend, checkpoint_every=1).start() as system:
        publish(system, range(20))
        system.wait_idle()
        old = read()
        publish(system, range(20, 35))
        system.wait_idle()
    _restore(backend, old)
    calls: list[int] = []

    def counting(state: Any, event: Event) -> Any:
        calls.append(event.data["n"])
        return stock(state, event)

    with topology(backend, counting).start() as system:
        assert system.projection("stock").state == expected(range(35))
        publish(system, range(35, 40))
        system.wait_idle()
        snapshot = system.projection("stock")
    assert sorted(calls) == list(range(20, 40))
    assert snapshot.state == expected(range(40))


@pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)
def test_a_projection_rebuilt_by_replay_equals_the_one_built_live(backend: str) -> None:
    with topology(backend).start() as system:
        publish(system, range(60))
        system.publish("orders", "price.changed", {"sku": "sku-1", "qty": 9, "n": -1})
        system.wait_idle()
        live = system.projection("stock")
        rebuilt = system.rebuild_projection("stock")
        publish(system, range(60, 70))
        system.wait_idle()
        after = system.projection("stock")
    assert rebuilt.state == live.state == expected(range(60))
    assert rebuilt.position == live.position
    assert after.state == expected(range(70))


@pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)
def test_a_rebuild_folds_with_the_new_apply_and_is_checkpointed(backend: str) -> None:
    with topology(backend).start() as system:
        publish(system, range(10))
        system.wait_idle()

    def doubled(state: Any, event: Event) -> Any:
        return {**state, "total": state.get("total", 0) + 2 * event.data["qty"]}

    with topology(backend, doubled).start() as system:
        assert system.projection("stock").state == expected(range(10))  # the old read model
        rebuilt = system.rebuild_projection("stock")
    total = 2 * sum(data(n)["qty"] for n in range(10))
    assert rebuilt.state == {"total": total}
    with topology(backend, doubled).start() as system:
        assert system.projection("stock").state == {"total": total}


def test_a_rebuild_on_memory_says_there_is_no_log() -> None:
    with topology("memory").start() as system, pytest.raises(NotDurableError, match="no log"):
        system.rebuild_projection("stock")


# -- failures ----------------------------------------------------------------------------


def test_an_apply_that_raises_leaves_the_state_whole_and_the_event_is_retried(
    backend: str,
) -> None:
    failed: set[int] = set()

    def flaky(state: Any, event: Event) -> Any:
        n = event.data["n"]
        if n % 5 == 0 and n not in failed:
            failed.add(n)
            raise ConnectionError(f"lookup for {n} timed out")
        return stock(state, event)

    fast = reactor.Retry(min_s=0.01, max_s=0.01)
    with topology(backend, flaky, retry=fast).start() as system:
        publish(system, range(20))
        system.wait_idle()
        snapshot = system.projection("stock")
        metrics = system.metrics().projections[0]
    assert failed == {0, 5, 10, 15}
    # A failed event is folded when its retry succeeds, after later events of other keys.
    assert folded_once(snapshot.state, range(20))
    assert metrics.failed == 4
    assert metrics.folded == 20


def test_an_apply_that_always_raises_dead_letters_its_event_and_the_projection_goes_on(
    backend: str,
) -> None:
    def mutating(state: Any, event: Event) -> Any:
        if event.data["n"] == 3:
            state["seen"] = ()  # the state is frozen: this raises, and nothing changes
        return stock(state, event)

    fast = reactor.Retry(min_s=0.01, max_s=0.01)
    with topology(backend, mutating, retry=fast, max_deliveries=2).start() as system:
        publish(system, range(8))
        system.wait_idle()
        snapshot = system.projection("stock")
        letters = system.dead_letters("orders")
    # Event 6 (the key of 3) waited behind 3's retry: the order differs, not the sums.
    assert folded_once(snapshot.state, [0, 1, 2, 4, 5, 6, 7])
    assert [letter.event.data["n"] for letter in letters if letter.event is not None] == [3]
    assert letters[0].error_type == "TypeError"


# -- lag and reads ---------------------------------------------------------------------


def test_the_lag_is_what_the_channel_still_owes_the_projection(backend: str) -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow(state: Any, event: Event) -> Any:
        if event.data["n"] == 0:
            entered.set()
            release.wait(10)
        return stock(state, event)

    system = topology(backend, slow).start()
    try:
        publish(system, range(6))
        assert entered.wait(10)
        wait_for(lambda: system.projection("stock").lag == 6, 10, message="lag never reached 6")
        assert system.metrics().projections[0].lag == 6
        release.set()
        system.wait_idle()
        assert system.projection("stock").lag == 0
        assert system.metrics().projections[0].position == system.projection("stock").position
    finally:
        release.set()
        system.stop()


def test_snapshots_read_from_other_threads_are_whole_states() -> None:
    def count(state: Any, event: Event) -> Any:
        n = state["n"] + 1
        return {"n": n, "items": (*state["items"], event.data["n"]), "square": n * n}

    topo = Topology("shop")
    topo.channel("orders")
    topo.projection("count", count, channel="orders", initial={"n": 0, "items": (), "square": 0})
    bad: list[str] = []
    done = threading.Event()

    def read(system: reactor.System) -> None:
        last = 0
        while not done.is_set():
            snapshot = system.projection("count")
            state = snapshot.state
            if len(state["items"]) != state["n"] or state["square"] != state["n"] ** 2:
                bad.append(f"torn state {state!r}")
            if state["n"] < last or snapshot.folded < state["n"]:
                bad.append(f"went back: {last} -> {state['n']}")
            last = state["n"]

    with topo.start() as system:
        readers = [threading.Thread(target=read, args=(system,)) for _ in range(3)]
        for thread in readers:
            thread.start()
        try:
            for n in range(300):
                system.publish("orders", "tick", {"n": n})
            system.wait_idle()
        finally:
            done.set()
            for thread in readers:
                thread.join(10)
        assert system.projection("count").state["n"] == 300
    assert bad == []


# -- declarations ----------------------------------------------------------------------


def test_every_problem_of_a_projection_is_reported_at_once() -> None:
    topo = Topology("shop")
    topo.channel("orders")
    topo.consumer("audit", print, channel="orders")
    topo.projection("audit", stock, channel="orders")
    topo.projection("a", None, channel="ordres", checkpoint_every=0, initial=threading.Lock())
    topo.projection("b", stock, channel="orders", pattern="a..b", checkpoint_s=-1)
    with pytest.raises(TopologyError) as info:
        topo.validate()
    text = "\n".join(info.value.problems)
    assert "projection 'audit': the name is already used by a consumer" in text
    assert "projection 'a': unknown channel 'ordres'; did you mean 'orders'?" in text
    assert "projection 'a': has no apply function" in text
    assert "projection 'a': checkpoint_every must be a positive integer, got 0" in text
    assert "cannot make immutable" in text
    assert "projection 'b': checkpoint_s must be" in text
    assert "'a..b'" in text
    with pytest.raises(TypeError, match="did you mean 'checkpoint_every'"):
        topo.projection("c", stock, channel="orders", checkpoint_evry=5)


@pytest.fixture
def toml_file(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    (tmp_path / "stock_folds.py").write_text(
        "def add(state, event):\n"
        "    return {**state, 'total': state['total'] + event.data['qty']}\n"
    )

    def write(text: str) -> Path:
        path = tmp_path / "shop.toml"
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    yield write
    sys.modules.pop("stock_folds", None)


def test_a_projection_declared_in_toml_folds(toml_file: Callable[[str], Path]) -> None:
    path = toml_file(
        """
        [channels.orders]

        [projections.stock]
        channel = "orders"
        pattern = ["stock.#"]
        apply = "stock_folds:add"
        initial = { total = 0 }
        checkpoint_every = 10
        retry = { min_s = 0.01 }
        """
    )
    topo = Topology.from_toml(path)
    decl = topo.projections["stock"]
    assert decl.checkpoint_every == 10
    assert decl.retry.min_s == 0.01
    with topo.start() as system:
        for qty in (1, 2, 3):
            system.publish("orders", "stock.in", {"qty": qty})
        system.wait_idle()
        assert system.projection("stock").state == {"total": 6}


def test_toml_problems_of_projections_are_reported_on_their_lines(
    toml_file: Callable[[str], Path],
) -> None:
    path = toml_file(
        """
        [channels.orders]

        [projections.stock]
        channel = "ordres"
        apply = "stock_folds:ad"
        checkpoint_every = 0
        checkpint_s = 2

        [projections.empty]
        channel = "orders"
        """
    )
    with pytest.raises(TopologyError) as info:
        Topology.from_toml(path)
    problems = info.value.problems
    assert any("line 7:" in p and "'checkpint_s'" in p and "checkpoint_s" in p for p in problems)
    assert any("line 5:" in p and "has no attribute 'ad'" in p for p in problems)
    assert any("line 9:" in p and "missing required key 'apply'" in p for p in problems)
    assert any("line 4:" in p and "unknown channel 'ordres'" in p for p in problems)
    assert any(
        "line 6:" in p and "checkpoint_every must be a positive integer" in p for p in problems
    )


def test_reactor_graph_draws_each_projection() -> None:
    from rich.console import Console  # noqa: PLC0415 - the faces, for this test only

    from reactor.faces.graph import graph_mermaid, graph_tree  # noqa: PLC0415

    console = Console(record=True, width=100, file=io.StringIO())
    console.print(graph_tree(topology("memory")))
    assert "stock  ← orders [stock.#], a read model" in console.export_text()
    assert '-->|"stock.#"| r_stock' in graph_mermaid(topology("memory"))
