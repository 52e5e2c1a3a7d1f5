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
from reactor.runtime import toml as toml_loader
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
        Topology.from_toml(path)
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
    assert mailer.prefetch == 64  # a pool member's default, smaller than a consumer's

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
    topo = Topology.from_toml(path)
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
    topo = Topology.from_toml(path)
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
    (ticker,) = Topology.from_toml(path).producers
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
    topo = Topology.from_toml(path)

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
    assert [child.name for child in Topology.from_toml(path).root.children] == ["a", "p", "b"]


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
        (billing,) = Topology.from_toml(path).consumers()
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
        topologies.append(Topology.from_toml(path))
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
    assert Topology.from_toml(path).consumers()[0].handler is json.dumps


def test_demo_shop_runs() -> None:
    try:
        topo = Topology.from_toml(DEMOS / "shop.toml")
        orders = sys.modules["shop_handlers"].ORDERS
        for producer in topo.producers:
            producer.rate = None  # as fast as it goes: the demo's pace is for watching
        for consumer in topo.consumers():
            consumer.chaos = None  # tests/test_demos.py runs it with its chaos
        with topo.start() as system:
            system.wait_idle(20)
            stats = {channel.name: channel for channel in system.metrics().channels}
    finally:
        sys.modules.pop("shop_handlers", None)
    assert stats["orders"].published == 2 * orders  # created + paid
    assert stats["audit"].acked == orders
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


# Each row is a file (``{m}`` stands for a handler module beside it, which has the
# attributes of HANDLERS) with one mistake, and the one problem the loader reports for it:
# where (after the file name) and fragments it must contain.
ONE_PROBLEM: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "syntax error",
        '[topology]\nname = "x"\nstrategy = \n',
        "line 3, column 12: ",
        ("Invalid value", "fix the TOML syntax there"),
    ),
    (
        "unknown key",
        '[channels.orders]\n[consumers.billing]\nchannel = "orders"\npatern = "o.#"\n'
        'handler = "json:dumps"\n',
        "line 4: consumers.billing: unknown key 'patern'",
        ("did you mean 'pattern'?", "allowed: channel, pattern, handler, group"),
    ),
    (
        "string for an integer",
        '[channels.orders]\ncapacity = "lots"\n',
        "line 2: channels.orders.capacity must be an integer, got 'lots'",
        (),
    ),
    (
        "bool for an integer",
        "[channels.orders]\ncapacity = true\n",
        "line 2: channels.orders.capacity must be an integer, got true",
        (),
    ),
    (
        "number for a string",
        "[channels.orders]\noverflow = 3\n",
        "line 2: channels.orders.overflow must be a string, got 3",
        (),
    ),
    (
        "string for a bool",
        '[channels.orders]\n[consumers.c]\nchannel = "orders"\nhandler = "json:dumps"\n'
        'idempotent = "yes"\n',
        "line 5: consumers.c.idempotent must be true or false, got 'yes'",
        (),
    ),
    (
        "string for a duration",
        '[channels.orders]\n[consumers.c]\nchannel = "orders"\nhandler = "json:dumps"\n'
        'handler_timeout = "2s"\n',
        "line 5: consumers.c.handler_timeout must be a number, got '2s'",
        (),
    ),
    (
        "array with a number for patterns",
        '[channels.orders]\n[consumers.c]\nchannel = "orders"\nhandler = "json:dumps"\n'
        'pattern = ["a", 1]\n',
        "line 5: consumers.c.pattern must be a pattern string or an array",
        (),
    ),
    (
        "number for a table",
        "[supervisors.s]\nbackoff = 5\n",
        "line 2: supervisors.s.backoff must be a table, got 5",
        (),
    ),
    (
        "unknown start position",
        '[channels.orders]\n[consumers.c]\nchannel = "orders"\nhandler = "json:dumps"\n'
        'start = "middle"\n',
        "line 5: consumers.c.start must be 'earliest', 'latest', an offset",
        (),
    ),
    (
        "unimportable module",
        '[channels.orders]\n[consumers.billing]\nchannel = "orders"\n'
        'handler = "no_such_module_xyz:bill"\n',
        "line 4: consumers.billing.handler: cannot resolve 'no_such_module_xyz:bill'",
        ("no module named 'no_such_module_xyz'", "{dir}", "put it next to the TOML file"),
    ),
    (
        "unknown attribute",
        '[channels.orders]\n[producers.web]\nchannel = "orders"\ntopic = "orders.created"\n'
        'source = "{m}:ordrs"\n',
        "line 5: producers.web.source: cannot resolve '{m}:ordrs'",
        ("has no attribute 'ordrs'; did you mean 'orders'?",),
    ),
    (
        "reference without a colon",
        '[channels.orders]\n[consumers.c]\nchannel = "orders"\n'
        'handler = "reactor.testing.Recorder"\n',
        "line 4: consumers.c.handler: 'reactor.testing.Recorder' is not a 'module:attribute'",
        ("write it like 'reactor.testing:Recorder'",),
    ),
    (
        "source taking arguments",
        '[channels.orders]\n[producers.web]\nchannel = "orders"\ntopic = "orders.created"\n'
        'source = "{m}:needs_args"\n',
        "line 5: producers.web.source: '{m}:needs_args' is a callable taking arguments",
        ("add interval = <seconds> to poll it",),
    ),
    (
        "source returning no iterable",
        '[channels.orders]\n[producers.web]\nchannel = "orders"\ntopic = "orders.created"\n'
        'source = "{m}:returns_number"\n',
        "line 5: producers.web.source: '{m}:returns_number' returned int, not an iterable",
        (),
    ),
    (
        "unknown supervisor parent",
        '[supervisors.billing]\nparent = "biling-root"\n[supervisors.billing-root]\n',
        "line 2: supervisors.billing.parent: unknown supervisor 'biling-root'; "
        "did you mean 'billing-root'?",
        (),
    ),
    (
        "unknown supervisor of a consumer",
        '[channels.orders]\n[consumers.c]\nchannel = "orders"\nhandler = "json:dumps"\n'
        'supervisor = "ghost"\n',
        "line 5: consumers.c.supervisor: unknown supervisor 'ghost' (supervisors: none declared)",
        ("declare [supervisors.ghost]",),
    ),
    (
        "supervisor its own parent",
        '[supervisors.a]\nparent = "a"\n',
        "line 2: supervisors.a.parent: supervisors form a cycle (a -> a)",
        ("remove one of these parent keys",),
    ),
    (
        "two supervisors each other's parent",
        '[supervisors.a]\nparent = "b"\n[supervisors.b]\nparent = "a"\n',
        "line 2: supervisors.a.parent: supervisors form a cycle (a -> b -> a)",
        (),
    ),
    (
        "a cycle of three beside a good supervisor",
        '[supervisors.x]\n[supervisors.a]\nparent = "c"\n[supervisors.b]\nparent = "a"\n'
        '[supervisors.c]\nparent = "b"\n',
        "line 3: supervisors.a.parent: supervisors form a cycle (a -> c -> b -> a)",
        (),
    ),
    # What the topology's validation finds, at the line of the key at fault.
    (
        "unknown overflow policy",
        '[channels.orders]\noverflow = "spill"\n',
        "line 2: channel 'orders': unknown overflow policy 'spill'",
        ("use one of block, drop_oldest, drop_newest, reject",),
    ),
    (
        "unknown channel",
        '[channels.orders]\n[consumers.c]\nhandler = "json:dumps"\nchannel = "ordrs"\n',
        "line 4: consumer 'c': unknown channel 'ordrs'; did you mean 'orders'? (channels: orders, $system)",
        ("; add a [channels.ordrs] table",),
    ),
    (
        "pool of fewer than no members",
        '[channels.orders]\n[pools.p]\nchannel = "orders"\nhandler = "json:dumps"\nmin_size = -1\n',
        "line 5: pool 'p': min_size must be an integer >= 0, got -1",
        (),
    ),
    (
        "a problem of the table, not of a key",
        '[channels.orders]\n[consumers.c]\nchannel = "orders"\nhandler = "json:dumps"\n'
        '[consumers.d]\nchannel = "orders"\nhandler = "json:dumps"\ngroup = "c"\n'
        'pattern = "x.#"\n',
        "line 8: consumer 'd': shares group 'c' on channel 'orders' with 'c'",
        (),
    ),
    # Durations and rates: nan, inf, negative, zero where meaningless, past the maximum.
    *[
        (
            f"handler_timeout = {value}",
            '[channels.orders]\n[consumers.c]\nchannel = "orders"\nhandler = "json:dumps"\n'
            f"handler_timeout = {value}\n",
            f"line 5: consumer 'c': handler_timeout must be a positive number of seconds, "
            f"at most 86400, got {shown}",
            (),
        )
        for value, shown in [
            ("nan", "nan"),
            ("inf", "inf"),
            ("-1.5", "-1.5"),
            ("0", "0"),
            ("1e9", "1000000000.0"),
        ]
    ],
    (
        "interval = inf",
        '[channels.orders]\n[producers.web]\nchannel = "orders"\ntopic = "t"\n'
        'source = "{m}:poll"\ninterval = inf\n',
        "line 6: producer 'web': interval must be a number of seconds >= 0, at most 86400, got inf",
        (),
    ),
    (
        "rate = 0",
        '[channels.orders]\n[producers.web]\nchannel = "orders"\ntopic = "t"\n'
        'source = "{m}:ORDERS"\nrate = 0\n',
        "line 6: producer 'web': rate must be a positive number of events per second, "
        "at most 1000000, got 0",
        (),
    ),
    (
        "shutdown_s = -inf",
        '[channels.orders]\n[pools.p]\nchannel = "orders"\nhandler = "json:dumps"\n'
        "shutdown_s = -inf\n",
        "line 5: pool 'p': shutdown_s must be a positive number of seconds, at most 3600, got -inf",
        (),
    ),
    (
        "scaling.interval_s = nan",
        '[channels.orders]\n[pools.p]\nchannel = "orders"\nhandler = "json:dumps"\n'
        "scaling = { interval_s = nan }\n",
        "line 5: pool 'p': scaling.interval_s must be a positive number of seconds, "
        "at most 3600, got nan",
        (),
    ),
    (
        "scaling in its own table",
        '[channels.orders]\n[pools.p]\nchannel = "orders"\nhandler = "json:dumps"\n'
        "[pools.p.scaling]\nup_after = 0\n",
        "line 5: pool 'p': scaling.up_after must be a positive integer, got 0",
        (),
    ),
    (
        "within_s = inf",
        "[topology]\nwithin_s = inf\n",
        "line 2: topology.within_s must be a number of seconds >= 0, at most 86400, got inf",
        (),
    ),
    (
        "max_restarts = -1",
        "[supervisors.s]\nmax_restarts = -1\n",
        "line 2: supervisors.s.max_restarts must be an integer >= 0, got -1",
        (),
    ),
    (
        "backoff.reset_after_s past the maximum",
        "[supervisors.s]\nbackoff = { reset_after_s = 1e6 }\n",
        "line 2: supervisors.s.backoff.reset_after_s must be a number of seconds >= 0, "
        "at most 86400, got 1000000.0",
        (),
    ),
    (
        "backoff in its own table",
        "[supervisors.s]\n[supervisors.s.backoff]\nmax_s = nan\n",
        "line 3: supervisors.s.backoff.max_s must be a number of seconds >= 0, at most 3600, "
        "got nan",
        (),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(case[1:], id=case[0]) for case in ONE_PROBLEM])
def test_one_problem(
    write: Callable[..., Path],
    tmp_path: Path,
    module_name: str,
    case: tuple[str, str, tuple[str, ...]],
) -> None:
    text, where, fragments = case
    write(f"{module_name}.py", HANDLERS)

    def fill(template: str) -> str:
        return template.replace("{m}", module_name).replace("{dir}", str(tmp_path))

    problem = only_problem(write("t.toml", fill(text)))
    assert problem.startswith(f"t.toml: {fill(where)}"), problem
    for fragment in fragments:
        assert fill(fragment) in problem, problem


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
    # Each at the line of its key, in the order of the topology's validation.
    assert problems[0].startswith(
        "valid.toml: line 2: channel 'orders': unknown overflow policy 'spill'"
    )
    assert problems[1].startswith("valid.toml: line 5: consumer 'c': unknown channel 'ordrs'")
    assert "add a [channels.ordrs] table" in problems[1]  # TOML wording, not the builder's
    assert "topology.channel" not in problems[1]
    assert problems[2].startswith("valid.toml: line 6: consumer 'c': invalid pattern 'orders.*x'")


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
    assert problems[1] == (
        "strategy.toml: line 5: supervisors.s.max_restarts must be an integer >= 0, got -1"
    )
    assert problems[2].startswith(
        "strategy.toml: line 6: supervisors.s.backoff: unknown key 'maxs'"
    )
    assert "did you mean 'max_s'?" in problems[2]
    assert problems[3] == (
        "strategy.toml: line 6: supervisors.s.backoff.min_s must be a number of seconds >= 0, "
        "at most 3600, got -1"
    )


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
        Topology.from_toml(path)
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
    )
    try:
        topo = Topology.from_toml(str(path))
    finally:
        sys.modules.pop("start_handlers", None)
    starts = {decl.name: decl.start for decl in topo.consumers()}
    assert starts["a"] == "latest"
    assert starts["b"] == 42
    assert starts["c"].year == 2026


def test_the_documented_format_is_a_valid_file(write: Callable[..., Path]) -> None:
    doc = toml_loader.__doc__ or ""
    example = textwrap.dedent(doc.split(".. code-block:: toml\n", 1)[1].split("\nChildren", 1)[0])
    write(
        "shop_handlers.py",
        "ORDERS = []\n\ndef bill(event):\n    pass\n\n"
        "def send_mail(event):\n    pass\n\ndef record(event):\n    pass\n\n"
        "def orders():\n    return []\n\n"
        "def add_revenue(state, event):\n    return state\n"
        "def charge(data):\n    pass\n\ndef refund(data):\n    pass\n\n"
        "def v1_to_v2(data):\n    return data\n\ndef v2_to_v3(data):\n    return data\n",
    )
    try:
        topo = Topology.from_toml(write("shop.toml", example))
    finally:
        sys.modules.pop("shop_handlers", None)
    assert {decl.name for decl in topo.consumers()} == {"billing", "mailer", "auditor"}
    assert list(topo.projections) == ["revenue"]
    assert [step.name for step in topo.sagas["order"].steps] == ["charge", "reserve"]
    assert topo.sagas["order"].keep_finished == 10000
    assert set(topo.channels["orders"].upcasters["order.placed"]) == {1, 2}
