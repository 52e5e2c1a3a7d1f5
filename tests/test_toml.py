"""Topologies loaded from TOML files: the format, the runtime result, and every error."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reactor import Backoff, OneForOne, PoolScaling, RestForOne, Topology, TopologyError
from reactor.runtime.toml import load_topology
from reactor.runtime.topology import ConsumerDecl, PoolDecl, SupervisorDecl
from reactor.testing import Recorder

DEMOS = Path(__file__).resolve().parent.parent / "demos"

HANDLERS = """
from reactor.testing import Recorder

seen = Recorder()
mailed = Recorder()
ORDERS = [{"id": 1, "customer": "c1"}, {"id": 2, "customer": "c2"}]

def bill(event):
    seen(event)

def send_mail(event):
    mailed(event)

def orders():
    yield {"id": 10, "customer": "c10"}
    yield {"id": 11, "customer": "c11"}

def poll():
    return None

def needs_args(a, b):
    return None

def returns_number():
    return 42
"""


@pytest.fixture
def module_name() -> Iterator[str]:
    """A fresh handler module name, removed from sys.modules afterwards."""
    name = f"toml_handlers_{uuid.uuid4().hex[:8]}"
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a dedented file into tmp_path (or a subfolder) and return its path."""

    def write_file(name: str, text: str, folder: Path | None = None) -> Path:
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write_file


def problems_of(path: Path) -> tuple[str, ...]:
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert info.value.source == str(path)
    return info.value.problems


def only_problem(path: Path) -> str:
    problems = problems_of(path)
    assert len(problems) == 1, problems
    return problems[0]


# -- a valid file ------------------------------------------------------------------------


def full_file(module: str) -> str:
    return f"""
        [topology]
        name = "shop"
        strategy = "one_for_one"
        max_restarts = 7
        within_s = 3

        [channels.orders]
        capacity = 500
        overflow = "block"
        backend = "memory"
        max_batch = 16

        [channels.audit]
        overflow = "drop_oldest"

        [producers.web]
        channel = "orders"
        topic = "orders.created"
        source = "{module}:ORDERS"
        rate = 1000
        key = "customer"
        batch_size = 8

        [supervisors.billing-tree]
        strategy = "rest_for_one"
        max_restarts = 3
        within_s = 5
        backoff = {{ min_s = 0.01, max_s = 2.0 }}

        [consumers.billing]
        channel = "orders"
        pattern = "orders.#"
        handler = "{module}:bill"
        supervisor = "billing-tree"
        max_deliveries = 4
        idempotent = true
        restart = "transient"
        output = "audit"
        handler_timeout = 2.0

        [pools.mailer]
        channel = "orders"
        pattern = ["orders.paid", "orders.refunded"]
        handler = "{module}:send_mail"
        min_size = 2
        max_size = 6
        supervisor = "billing-tree"
        scaling = {{ interval_s = 0.5, up_after = 3 }}
    """


def test_valid_file_round_trip(write: Callable[..., Path], module_name: str) -> None:
    write(f"{module_name}.py", HANDLERS)
    path = write("shop.toml", full_file(module_name))

    topo = Topology.from_toml(str(path))

    assert topo.name == "shop"
    assert topo.source == str(path)
    assert topo.root.strategy == OneForOne(max_restarts=7, within_s=3)
    orders, audit = topo.channels["orders"], topo.channels["audit"]
    assert (orders.capacity, orders.overflow, orders.backend, orders.max_batch) == (
        500,
        "block",
        "memory",
        16,
    )
    assert audit.overflow == "drop_oldest"
    assert audit.capacity == 10_000  # the builder's default

    (web,) = topo.producers
    handlers = sys.modules[module_name]
    assert (web.channel, web.topic, web.rate, web.key, web.batch_size) == (
        "orders",
        "orders.created",
        1000,
        "customer",
        8,
    )
    assert web.source is handlers.ORDERS

    (tree,) = topo.root.children
    assert isinstance(tree, SupervisorDecl)
    assert tree.name == "billing-tree"
    assert tree.strategy == RestForOne(
        max_restarts=3, within_s=5, backoff=Backoff(min_s=0.01, max_s=2.0)
    )
    billing, mailer = tree.children
    assert isinstance(billing, ConsumerDecl)
    assert not isinstance(billing, PoolDecl)
    assert billing.handler is handlers.bill
    assert (billing.pattern, billing.max_deliveries, billing.idempotent) == ("orders.#", 4, True)
    assert (billing.restart, billing.output, billing.handler_timeout) == ("transient", "audit", 2.0)
    assert isinstance(mailer, PoolDecl)
    assert mailer.patterns == ("orders.paid", "orders.refunded")
    assert (mailer.min_size, mailer.max_size) == (2, 6)
    assert mailer.scaling == PoolScaling(interval_s=0.5, up_after=3)
    assert mailer.prefetch == 64  # the builder's pool default, not the ConsumerDecl one

    with topo.start() as system:
        system.publish("orders", "orders.paid", {"id": 3}, key="c3")
        system.wait_idle(5)
        recorder: Recorder = handlers.seen
        mailed: Recorder = handlers.mailed
        assert sorted(event.data["id"] for event in recorder.events) == [1, 2, 3]
        assert [event.data["id"] for event in mailed.events] == [3]
        assert {event.key for event in recorder.events} == {"c1", "c2", "c3"}


def test_handler_may_be_a_callable_object(write: Callable[..., Path], module_name: str) -> None:
    write(f"{module_name}.py", HANDLERS)
    path = write(
        "t.toml",
        f"""
        [channels.orders]
        [consumers.watch]
        channel = "orders"
        handler = "{module_name}:seen"
        """,
    )
    topo = load_topology(path)
    assert topo.name == "t"  # the file name, when [topology] has no name
    with topo.start() as system:
        system.publish("orders", "orders.created", {"id": 1})
        system.wait_idle(5)
    assert sys.modules[module_name].seen.data() == [{"id": 1}]


def test_generator_function_source_runs_afresh_each_start(
    write: Callable[..., Path], module_name: str
) -> None:
    write(f"{module_name}.py", HANDLERS)
    path = write(
        "gen.toml",
        f"""
        [channels.orders]
        [producers.web]
        channel = "orders"
        topic = "orders.created"
        source = "{module_name}:orders"
        key = "customer"
        [consumers.billing]
        channel = "orders"
        handler = "{module_name}:bill"
        """,
    )
    topo = load_topology(path)
    recorder: Recorder = sys.modules[module_name].seen
    for run in (1, 2):
        with topo.start() as system:
            system.wait_idle(5)
        assert len(recorder) == 2 * run
    assert [event.key for event in recorder.events] == ["c10", "c11"] * 2


def test_callable_source_with_interval_is_polled(
    write: Callable[..., Path], module_name: str
) -> None:
    write(f"{module_name}.py", HANDLERS)
    path = write(
        "poll.toml",
        f"""
        [channels.orders]
        [producers.ticker]
        channel = "orders"
        topic = "ticks"
        source = "{module_name}:needs_args"
        interval = 0.5
        """,
    )
    (ticker,) = load_topology(path).producers
    assert ticker.source is sys.modules[module_name].needs_args
    assert ticker.interval == 0.5


def test_nesting_two_levels_deep_parents_in_any_order(
    write: Callable[..., Path], module_name: str
) -> None:
    write(f"{module_name}.py", HANDLERS)
    path = write(
        "nest.toml",
        f"""
        [channels.orders]

        [supervisors.inner]          # declared before its parent
        parent = "middle"
        strategy = "one_for_all"

        [consumers.first]
        channel = "orders"
        pattern = "a.#"
        handler = "{module_name}:bill"
        supervisor = "outer"

        [supervisors.outer]
        strategy = "rest_for_one"

        [pools.deep]
        channel = "orders"
        pattern = "c.#"
        handler = "{module_name}:bill"
        supervisor = "inner"

        [supervisors.middle]
        parent = "outer"

        [consumers.top]
        channel = "orders"
        pattern = "d.#"
        handler = "{module_name}:bill"

        [consumers.second]
        channel = "orders"
        pattern = "b.#"
        handler = "{module_name}:bill"
        supervisor = "middle"
        """,
    )
    topo = load_topology(path)

    tree = [(decl.name, parent.name) for decl, parent in topo.walk()]
    # Children start in the order their tables appear in the file.
    assert tree == [
        ("outer", "$consumers"),
        ("first", "outer"),
        ("middle", "outer"),
        ("inner", "middle"),
        ("deep", "inner"),
        ("second", "middle"),
        ("top", "$consumers"),
    ]
    inner = next(s for s in topo.supervisors() if s.name == "inner")
    assert inner.strategy.kind == "one_for_all"

    with topo.start() as system:
        for topic in ("a.x", "b.x", "c.x", "d.x"):
            system.publish("orders", topic, {"topic": topic})
        system.wait_idle(5)
        metrics = {actor.name: actor for actor in system.metrics().actors}
    assert metrics["deep"].supervisor == "inner"
    assert metrics["inner"].supervisor == "middle"
    assert metrics["middle"].supervisor == "outer"
    handled = sorted(event.topic for event in sys.modules[module_name].seen.events)
    assert handled == ["a.x", "b.x", "c.x", "d.x"]


def test_children_interleaved_across_tables_keep_file_order(
    write: Callable[..., Path], module_name: str
) -> None:
    write(f"{module_name}.py", HANDLERS)
    path = write(
        "order.toml",
        f"""
        [channels.orders]
        [consumers.a]
        channel = "orders"
        handler = "{module_name}:bill"
        [pools.p]
        channel = "orders"
        handler = "{module_name}:bill"
        [consumers.b]
        channel = "orders"
        handler = "{module_name}:bill"
        """,
    )
    assert [child.name for child in load_topology(path).root.children] == ["a", "p", "b"]


def test_module_beside_the_file_may_import_its_siblings(
    write: Callable[..., Path], tmp_path: Path, module_name: str
) -> None:
    sibling = f"{module_name}_models"
    write(f"{sibling}.py", "PREFIX = 'billed'\n")
    write(
        f"{module_name}.py",
        f"""
        from {sibling} import PREFIX

        def bill(event):
            return None

        bill.prefix = PREFIX
        """,
    )
    path = write(
        "t.toml",
        f"""
        [channels.orders]
        [consumers.billing]
        channel = "orders"
        handler = "{module_name}:bill"
        """,
    )
    path_before = list(sys.path)
    try:
        (billing,) = load_topology(path).consumers()
    finally:
        sys.modules.pop(sibling, None)
    assert billing.handler.prefix == "billed"
    assert sys.path == path_before  # the folder was on sys.path only while importing
    assert str(tmp_path) not in sys.path


def test_same_module_name_in_two_folders(
    write: Callable[..., Path], tmp_path: Path, module_name: str
) -> None:
    topologies = []
    for folder in ("one", "two"):
        write(
            f"{module_name}.py", f"def handle(event):\n    return {folder!r}\n", tmp_path / folder
        )
        path = write(
            "t.toml",
            f"""
            [channels.orders]
            [consumers.c]
            channel = "orders"
            handler = "{module_name}:handle"
            """,
            tmp_path / folder,
        )
        topologies.append(load_topology(path))
    assert [topo.consumers()[0].handler(None) for topo in topologies] == ["one", "two"]


def test_normally_importable_modules_win(write: Callable[..., Path]) -> None:
    write("json.py", "def dumps(event):\n    return 'shadow'\n")
    path = write(
        "t.toml",
        """
        [channels.orders]
        [consumers.c]
        channel = "orders"
        handler = "json:dumps"
        """,
    )
    assert load_topology(path).consumers()[0].handler is json.dumps


def test_demo_shop_runs() -> None:
    try:
        topo = load_topology(DEMOS / "shop.toml")
        with topo.start() as system:
            system.wait_idle(10)
            stats = {channel.name: channel for channel in system.metrics().channels}
    finally:
        sys.modules.pop("shop_handlers", None)
    assert stats["orders"].published == 40  # 20 created + 20 paid
    assert stats["audit"].acked == 20
    assert stats["orders"].dead_lettered == 0


# -- errors ------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    problem = only_problem(path)
    assert str(path) in problem
    assert "does not exist" in problem


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    problem = only_problem(tmp_path)
    assert "is not a file" in problem
    assert ".toml" in problem


def test_syntax_error_keeps_line_and_column(write: Callable[..., Path]) -> None:
    path = write("syntax.toml", '[topology]\nname = "x"\nstrategy = \n')
    problem = only_problem(path)
    assert problem.startswith("syntax.toml: line 3, column 12: ")
    assert "Invalid value" in problem


def test_unknown_key_suggests_and_lists_allowed(write: Callable[..., Path]) -> None:
    path = write(
        "keys.toml",
        """
        [channels.orders]

        [consumers.billing]
        channel = "orders"
        patern = "orders.#"
        handler = "json:dumps"
        """,
    )
    problem = only_problem(path)
    assert problem.startswith("keys.toml: line 5: consumers.billing: unknown key 'patern'")
    assert "did you mean 'pattern'?" in problem
    assert "allowed: channel, pattern, handler" in problem


def test_unknown_table_and_top_level_key(write: Callable[..., Path]) -> None:
    path = write(
        "tables.toml",
        """
        name = "shop"

        [consumer.billing]
        channel = "orders"
        """,
    )
    first, second = problems_of(path)
    assert first.startswith("tables.toml: line 1: unknown table 'name'")
    assert "under [topology]" in first
    assert second.startswith("tables.toml: line 3: unknown table 'consumer'")
    assert "did you mean 'consumers'?" in second


@pytest.mark.parametrize(
    ("table", "key", "value", "expected"),
    [
        (
            "channels.orders",
            "capacity",
            '"lots"',
            "channels.orders.capacity must be an integer, got 'lots'",
        ),
        (
            "channels.orders",
            "capacity",
            "true",
            "channels.orders.capacity must be an integer, got true",
        ),
        ("channels.orders", "overflow", "3", "channels.orders.overflow must be a string, got 3"),
        (
            "consumers.c",
            "idempotent",
            '"yes"',
            "consumers.c.idempotent must be true or false, got 'yes'",
        ),
        ("consumers.c", "handler_timeout", '"2s"', "consumers.c.handler_timeout must be a number"),
        (
            "consumers.c",
            "pattern",
            '["a", 1]',
            "consumers.c.pattern must be a pattern string or an array",
        ),
        ("supervisors.s", "backoff", "5", "supervisors.s.backoff must be a table, got 5"),
    ],
)
def test_wrong_value_types(
    write: Callable[..., Path], table: str, key: str, value: str, expected: str
) -> None:
    tables = {
        "channels.orders": "",
        "consumers.c": 'channel = "orders"\nhandler = "json:dumps"\n',
        "supervisors.s": "",
    }
    text = "".join(
        f"[{name}]\n{body}" + (f"{key} = {value}\n" if name == table else "")
        for name, body in tables.items()
    )
    path = write("types.toml", text)
    problem = only_problem(path)
    assert expected in problem
    line = text.splitlines().index(f"{key} = {value}") + 1
    assert problem.startswith(f"types.toml: line {line}: ")


def test_missing_required_keys(write: Callable[..., Path]) -> None:
    path = write(
        "required.toml",
        """
        [channels.orders]
        [producers.web]
        channel = "orders"
        [consumers.c]
        channel = "orders"
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 3
    assert "producers.web: missing required key 'topic'" in problems[0]
    assert "producers.web: missing required key 'source'" in problems[1]
    assert problems[2].startswith(
        "required.toml: line 4: consumers.c: missing required key 'handler'"
    )


def test_unresolvable_module(write: Callable[..., Path], tmp_path: Path) -> None:
    path = write(
        "mods.toml",
        """
        [channels.orders]
        [consumers.billing]
        channel = "orders"
        handler = "no_such_module_xyz:bill"
        """,
    )
    problem = only_problem(path)
    assert problem.startswith("mods.toml: line 4: consumers.billing.handler: ")
    assert "'no_such_module_xyz:bill'" in problem
    assert "no module named 'no_such_module_xyz'" in problem
    assert str(tmp_path) in problem


def test_unresolvable_attribute_suggests(write: Callable[..., Path], module_name: str) -> None:
    write(f"{module_name}.py", HANDLERS)
    path = write(
        "attr.toml",
        f"""
        [channels.orders]
        [producers.web]
        channel = "orders"
        topic = "orders.created"
        source = "{module_name}:ordrs"
        """,
    )
    problem = only_problem(path)
    assert f"producers.web.source: cannot resolve '{module_name}:ordrs'" in problem
    assert "has no attribute 'ordrs'; did you mean 'orders'?" in problem


def test_module_that_fails_to_import(write: Callable[..., Path], module_name: str) -> None:
    write(f"{module_name}.py", "import no_such_dependency_xyz\n")
    path = write(
        "broken.toml",
        f"""
        [channels.orders]
        [consumers.c]
        channel = "orders"
        handler = "{module_name}:bill"
        """,
    )
    problem = only_problem(path)
    assert f"consumers.c.handler: cannot resolve '{module_name}:bill'" in problem
    assert "ModuleNotFoundError" in problem
    assert "no_such_dependency_xyz" in problem
    assert module_name not in sys.modules


def test_reference_without_colon(write: Callable[..., Path]) -> None:
    path = write(
        "ref.toml",
        """
        [channels.orders]
        [consumers.c]
        channel = "orders"
        handler = "reactor.testing.Recorder"
        """,
    )
    problem = only_problem(path)
    assert "consumers.c.handler: 'reactor.testing.Recorder' is not a 'module:attribute'" in problem
    assert "'reactor.testing:Recorder'" in problem


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("needs_args", "is a callable taking arguments; add interval"),
        ("returns_number", "returned int, not an iterable"),
    ],
)
def test_bad_sources(
    write: Callable[..., Path], module_name: str, attribute: str, expected: str
) -> None:
    write(f"{module_name}.py", HANDLERS)
    path = write(
        "src.toml",
        f"""
        [channels.orders]
        [producers.web]
        channel = "orders"
        topic = "orders.created"
        source = "{module_name}:{attribute}"
        """,
    )
    problem = only_problem(path)
    assert problem.startswith("src.toml: line 5: producers.web.source: ")
    assert expected in problem


def test_unknown_supervisor_parent(write: Callable[..., Path]) -> None:
    path = write(
        "parent.toml",
        """
        [supervisors.billing]
        parent = "biling-root"
        [supervisors.billing-root]
        """,
    )
    problem = only_problem(path)
    assert problem.startswith("parent.toml: line 2: supervisors.billing.parent: ")
    assert "unknown supervisor 'biling-root'; did you mean 'billing-root'?" in problem


def test_unknown_consumer_supervisor(write: Callable[..., Path]) -> None:
    path = write(
        "sup.toml",
        """
        [channels.orders]
        [consumers.c]
        channel = "orders"
        handler = "json:dumps"
        supervisor = "ghost"
        """,
    )
    problem = only_problem(path)
    assert (
        "consumers.c.supervisor: unknown supervisor 'ghost' (supervisors: none declared)" in problem
    )
    assert "declare [supervisors.ghost]" in problem


@pytest.mark.parametrize(
    ("parents", "loop"),
    [
        ({"a": "a"}, "a -> a"),
        ({"a": "b", "b": "a"}, "a -> b -> a"),
        ({"x": None, "a": "c", "b": "a", "c": "b"}, "a -> c -> b -> a"),
    ],
)
def test_supervisor_cycles(
    write: Callable[..., Path], parents: dict[str, str | None], loop: str
) -> None:
    text = "".join(
        f"[supervisors.{name}]\n" + (f'parent = "{parent}"\n' if parent else "")
        for name, parent in parents.items()
    )
    problem = only_problem(write("cycle.toml", text))
    assert f"supervisors form a cycle ({loop})" in problem
    assert "remove one of these parent keys" in problem


def test_validation_problems_are_merged_with_lines(write: Callable[..., Path]) -> None:
    path = write(
        "valid.toml",
        """
        [channels.orders]
        overflow = "spill"

        [consumers.c]
        channel = "ordrs"
        pattern = "orders.*x"
        handler = "json:dumps"
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 3
    assert problems[0].startswith(
        "valid.toml: line 1: channel 'orders': unknown overflow policy 'spill'"
    )
    assert problems[1].startswith("valid.toml: line 4: consumer 'c': unknown channel 'ordrs'")
    assert "add a [channels.ordrs] table" in problems[1]  # TOML wording, not the builder's
    assert problems[2].startswith("valid.toml: line 4: consumer 'c': invalid pattern 'orders.*x'")


def test_bad_strategy_values(write: Callable[..., Path]) -> None:
    path = write(
        "strategy.toml",
        """
        [topology]
        strategy = "one_for_al"

        [supervisors.s]
        max_restarts = -1
        backoff = { min_s = -1, maxs = 2 }
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 4
    assert problems[0].startswith("strategy.toml: line 2: topology.strategy: unknown strategy")
    assert "'one_for_al'; did you mean 'one_for_all'?" in problems[0]
    assert problems[1] == "strategy.toml: line 5: supervisors.s.max_restarts must be >= 0, got -1"
    assert problems[2].startswith(
        "strategy.toml: line 6: supervisors.s.backoff: unknown key 'maxs'"
    )
    assert "did you mean 'max_s'?" in problems[2]
    assert problems[3] == "strategy.toml: line 6: supervisors.s.backoff: min_s must be >= 0, got -1"


def test_four_problems_in_one_error(write: Callable[..., Path]) -> None:
    path = write(
        "four.toml",
        """
        [channels.orders]
        capacity = "lots"

        [supervisors.tree]
        parent = "tree"

        [consumers.billing]
        channel = "orders"
        patern = "orders.#"
        handler = "no_such_module_xyz:bill"
        supervisor = "tree"
        """,
    )
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    error = info.value
    assert len(error.problems) == 4
    message = str(error)
    assert f"invalid topology in {path}, 4 problems:" in message
    for expected in (
        "line 2: channels.orders.capacity must be an integer, got 'lots'",
        "line 5: supervisors.tree.parent: supervisors form a cycle (tree -> tree)",
        "line 9: consumers.billing: unknown key 'patern'; did you mean 'pattern'?",
        "line 10: consumers.billing.handler: cannot resolve 'no_such_module_xyz:bill'",
    ):
        assert sum(expected in problem for problem in error.problems) == 1, expected


def test_consumers_take_a_start_position(tmp_path: Path) -> None:
    module = tmp_path / "start_handlers.py"
    module.write_text("def handle(event):\n    return None\n")
    path = tmp_path / "start.toml"
    path.write_text(
        "[channels.log]\nbackend = 'memory'\n"
        "[consumers.a]\nchannel = 'log'\nhandler = 'start_handlers:handle'\nstart = 'latest'\n"
        "[consumers.b]\nchannel = 'log'\nhandler = 'start_handlers:handle'\nstart = 42\n"
        "[consumers.c]\nchannel = 'log'\nhandler = 'start_handlers:handle'\n"
        "start = 2026-01-01T00:00:00Z\n"
        "[consumers.d]\nchannel = 'log'\nhandler = 'start_handlers:handle'\nstart = 'middle'\n"
    )
    with pytest.raises(TopologyError) as caught:
        Topology.from_toml(str(path))
    assert len(caught.value.problems) == 1
    assert "consumers.d.start must be 'earliest', 'latest', an offset" in caught.value.problems[0]
    path.write_text(path.read_text().rsplit("[consumers.d]", 1)[0])
    topo = Topology.from_toml(str(path))
    starts = {decl.name: decl.start for decl in topo.consumers()}
    assert starts["a"] == "latest"
    assert starts["b"] == 42
    assert starts["c"].year == 2026
