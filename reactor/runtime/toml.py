"""Topologies declared in a TOML file.

:meth:`reactor.Topology.from_toml` (the one public way in) reads a file,
builds the same declarations the builder API would, validates them, and reports every problem of the file at once in one
:class:`~reactor.errors.TopologyError`: syntax errors, unknown keys, values of
the wrong type, handlers that cannot be imported, unknown or cyclic supervisor
parents, and everything :meth:`Topology.validate` finds. Problems carry the
file name and, when it can be found, the line (``shop.toml: line 12: ...``).

One concept, so one module despite its length: the TOML form of a topology (the
format, documented here in full, and its reading into declarations); the options
themselves are defined once, in :mod:`reactor.runtime.declarations`.

The format
----------

Every table is optional except the ones a declaration refers to. Names of
channels, producers, supervisors, consumers and pools are the table keys. The
keys of each table, their value types, defaults and bounds are the options of
the declaration classes in :mod:`reactor.runtime.declarations` (and of
:class:`~reactor.Strategy`, :class:`~reactor.Backoff` and :class:`~reactor.PoolScaling`),
listed in the README's option table; ``supervisor`` and ``parent`` place a
declaration in the supervision tree.

.. code-block:: toml

    [topology]
    name = "shop"                 # default: the file name without .toml
    strategy = "one_for_one"      # root strategy: one_for_one | one_for_all | rest_for_one
    max_restarts = 10             # restart intensity of the root of the consumer tree
    within_s = 10
    backoff = { min_s = 0.01, max_s = 5.0 }

    [channels.orders]
    capacity = 10000
    overflow = "block"            # block | drop_oldest | drop_newest | reject
    backend = "memory"
    max_batch = 128
    max_event_size = 1048576      # bytes; a bigger event is refused at publish

    [channels.orders.upcasters."order.placed"]  # old versions of a topic's data, step by step
    1 = "shop_handlers:v1_to_v2"  # version 1 -> 2; references as for handlers
    2 = "shop_handlers:v2_to_v3"  # version 2 -> 3: consumers see version 3

    [channels.audit]

    [producers.web]
    channel = "orders"            # required
    topic = "orders.created"      # required
    source = "shop_handlers:orders"   # required; see "References" below
    interval = 0.1                # seconds between polls of a callable source
    rate = 100                    # most events per second
    key = "customer"              # the event key: this field of dict data
    batch_size = 128
    restart = "transient"

    [supervisors.billing-tree]
    strategy = "rest_for_one"
    max_restarts = 3
    within_s = 5
    backoff = { min_s = 0.01, max_s = 2.0, multiplier = 2.0, jitter = 0.2, reset_after_s = 10 }
    restart = "permanent"

    [supervisors.notify]
    parent = "billing-tree"       # default: the top level; parents may come before or after

    [consumers.billing]
    channel = "orders"            # required
    pattern = "orders.created"    # or a list: ["orders.created", "orders.updated"]
    handler = "shop_handlers:bill"    # required
    supervisor = "billing-tree"   # default: the top level
    group = "billing"             # default: the consumer's name
    max_deliveries = 5
    idempotent = true
    dedup_window = 100000
    restart = "permanent"         # permanent | transient | temporary
    output = "orders"             # channel for returned events (default: channel)
    prefetch = 256
    handler_timeout = 2.0
    shutdown_s = 5.0
    retry = { min_s = 0.1, max_s = 5.0, multiplier = 2.0, jitter = 0.2 }
    failure_threshold = 10
    chaos = { crash_rate = 0.05, latency_s = 0.01, outage_after_s = 5, outage_s = 3, seed = 1 }

    [pools.mailer]                # every consumer key except restart, plus:
    channel = "orders"
    pattern = "orders.paid"
    handler = "shop_handlers:send_mail"
    supervisor = "notify"
    output = "audit"
    min_size = 1
    max_size = 8
    scaling = { interval_s = 0.25, scale_up_backlog = 100, up_after = 2, down_after = 8 }

    [consumers.auditor]
    channel = "audit"
    handler = "shop_handlers:record"  # called with a list: batch_size makes it a batch consumer
    batch_size = 100              # handle_batch(events) with up to 100 events at a time
    batch_timeout = 1.0           # ...or fewer, one second after the first of them arrived
    batch_key = "region"          # one batch per value of this field of dict data

    [projections.revenue]         # a read model: state = apply(state, event), checkpointed
    channel = "orders"
    pattern = "orders.paid"
    apply = "shop_handlers:add_revenue"   # required: apply(state, event) -> new state
    initial = { total = 0 }       # any TOML value; default: an empty table
    checkpoint_every = 100        # checkpoint after this many events (durable channels) ...
    checkpoint_s = 1.0            # ... or at the first event this long after the last one

    [sagas.order]                 # a saga (reactor.runtime.sagadecl)
    channel = "orders"            # required: its commands and replies go there
    start_on = "orders.created"   # required: the topic that starts an instance
    max_attempts = 5              # attempts of a compensation before the saga is stuck
    keep_finished = 10000         # finished instances kept (the oldest-started deleted)
    retry = { min_s = 0.1, max_s = 5.0 }

    [sagas.order.steps.charge]    # its steps, in file order
    action = "shop_handlers:charge"   # "module:function": a function step
    compensation = "shop_handlers:refund"

    [sagas.order.steps.reserve]
    action = "stock.reserve"      # a topic: a command sent on the saga's channel
    compensation = "stock.release"
    timeout = 5                   # seconds a command waits for its reply
    success = "stock.reserved"    # default: stock.reserve.reply
    failure = "stock.refused"     # default: stock.reserve.failed

Children of a supervisor (consumers, pools and nested supervisors) start in the
order their tables appear in the file and stop in reverse order.

References
----------

``handler``, ``source`` and ``apply`` are ``"module:attribute"`` references (the attribute
may be dotted, ``"module:Class.method"``). The module is imported normally
first; if no such module is importable, ``<module>.py`` (or the package
``<module>/``) next to the TOML file is loaded, so a file and its handlers can
sit together in a folder that is not a package. While the module is imported,
that folder is searched too (by the importing thread only, see
:mod:`reactor.runtime.imports`), so the handler module can import its siblings.

A ``source`` may name:

* an iterable: its events are published until it is exhausted;
* a generator function (or any function taking no arguments) and no
  ``interval``: it is called to get the iterable; a generator function is
  called afresh each time the topology is started;
* a callable and an ``interval``: it is polled every ``interval`` seconds and
  returns ``None``, an event, or event data.

One concept, so one module despite its length: reading a topology file (its
format, references and every problem it can have); where things are in its
text is :mod:`reactor.runtime.tomltext`.

Thread-safety: :func:`load` may run in any thread; imports of handler
modules from a TOML file's folder are serialised.
"""

from __future__ import annotations

import datetime
import importlib
import inspect
import os
import re
import sys
import threading
import tomllib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from reactor.errors import TopologyError
from reactor.messages.upcasting import upcaster_problems
from reactor.runtime.chaos import Chaos
from reactor.runtime.declarations import (
    ChannelDecl,
    ConsumerDecl,
    PoolDecl,
    Problem,
    ProducerDecl,
    SupervisorDecl,
    TopologyDecl,
    builder_options,
)
from reactor.runtime.imports import exec_file, import_module
from reactor.runtime.pool import PoolScaling
from reactor.runtime.projections import ProjectionDecl
from reactor.runtime.sagadecl import SagaDecl, StepDecl
from reactor.runtime.tomltext import Locator, Where, dotted, syntax_problem
from reactor.schema import options_of
from reactor.supervision.strategy import (
    Backoff,
    OneForAll,
    OneForOne,
    RestForOne,
    Retry,
    Strategy,
)
from reactor.text import did_you_mean

# Internal: the public way to read a file is reactor.Topology.from_toml.
__all__: list[str] = []

T = TypeVar("T", bound=TopologyDecl)

_STRATEGIES: dict[str, type[Strategy]] = {
    "one_for_one": OneForOne,
    "one_for_all": OneForAll,
    "rest_for_one": RestForOne,
}

_SECTIONS = (
    "topology",
    "channels",
    "producers",
    "supervisors",
    "consumers",
    "pools",
    "projections",
    "sagas",
)
_DECLARATIONS: dict[str, type] = {
    "channels": ChannelDecl,
    "producers": ProducerDecl,
    "supervisors": SupervisorDecl,
    "consumers": ConsumerDecl,
    "pools": PoolDecl,
    "projections": ProjectionDecl,
    "sagas": SagaDecl,
    "steps": StepDecl,
}


def _schema_keys(cls: type) -> dict[str, str]:
    """The TOML keys of a declaration class and their value types, from its schema."""
    return {opt.name: opt.toml for opt in builder_options(cls).values() if opt.toml is not None}


# Allowed keys of each kind of table, with the type each value must have: the schema's,
# plus the keys that place a declaration in the tree and a strategy's kind.
_STRATEGY_KEYS = {"strategy": "str", **_schema_keys(Strategy)}
_KEYS: dict[str, dict[str, str]] = {
    "topology": {"name": "str", **_STRATEGY_KEYS},
    "channels": _schema_keys(ChannelDecl),
    "producers": _schema_keys(ProducerDecl),
    "supervisors": {**_STRATEGY_KEYS, **_schema_keys(SupervisorDecl), "parent": "str"},
    "consumers": {**_schema_keys(ConsumerDecl), "supervisor": "str"},
    "pools": {**_schema_keys(PoolDecl), "supervisor": "str"},
    "projections": _schema_keys(ProjectionDecl),
    "backoff": _schema_keys(Backoff),
    "retry": _schema_keys(Retry),
    "scaling": _schema_keys(PoolScaling),
    "chaos": _schema_keys(Chaos),
    "sagas": {**_schema_keys(SagaDecl), "steps": "table"},
    "steps": _schema_keys(StepDecl),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    section: tuple(
        opt.name
        for opt in builder_options(cls).values()
        if opt.toml is not None and (opt.required or not opt.has_default)
    )
    for section, cls in _DECLARATIONS.items()
}
_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "table": "a table",
    "patterns": "a pattern string or an array of pattern strings",
    "start": "'earliest', 'latest', an offset (integer) or a date-time",
}
# Keys the loader interprets itself instead of passing them to the declaration.
_LOADER_KEYS = frozenset(
    {"handler", "source", "supervisor", "parent", "scaling", "retry", "chaos", "apply"}
)
# The table of each kind of declaration a Problem names.
_SECTION_OF = {
    "channel": "channels",
    "producer": "producers",
    "consumer": "consumers",
    "pool": "pools",
    "supervisor": "supervisors",
    "projection": "projections",
    "saga": "sagas",
}

# A version key of an upcasters table ([channels.<name>.upcasters."<topic>"]): 1 = "m:f".
_VERSION_KEY = re.compile(r"[+-]?[0-9]+")

# Serialises imports from TOML files' folders, so one _from_folder entry is set at a time.
_import_lock = threading.Lock()
# Modules this loader executed from a TOML file's folder, by module name. Such a
# module sits in sys.modules, but must not hide a same-named module beside a
# different TOML file, so it does not count as "importable normally".
_from_folder: dict[str, ModuleType] = {}


def load(path: str | os.PathLike[str], factory: Callable[..., T], *, import_code: bool = True) -> T:
    """Read a topology from a TOML file and validate it (behind ``Topology.from_toml``).

    Args:
        path: the TOML file; see the module documentation for its format.
        factory: makes the empty topology, ``factory(name, strategy=...)``.
        import_code: import the modules that handlers and sources name; when
            False (``reactor graph``), no user code runs and each reference
            stands in for what it names (the topology can be drawn, not run).

    Returns:
        The validated topology, with ``source`` set to ``path``.

    Raises:
        TopologyError: the file is missing, unreadable or invalid. ``problems``
            lists every problem found, each naming the file, table and key
            (and the line, when it can be found) and what to do.

    Thread-safety: safe; handler modules are imported under a lock.
    """
    file = Path(path)
    source = str(path)
    if not file.exists():
        raise TopologyError(
            f"topology file {source!r} does not exist; check the path "
            f"(relative paths start from {os.getcwd()!r})",
            source=source,
        )
    if not file.is_file():
        raise TopologyError(
            f"topology file {source!r} is not a file; pass the path of a .toml file", source=source
        )
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TopologyError(
            f"cannot read topology file {source!r}: {exc.strerror or exc}; check its permissions",
            source=source,
        ) from exc
    except UnicodeDecodeError as exc:
        raise TopologyError(
            f"{file.name}: byte {exc.start}: the file is not UTF-8 text ({exc.reason}); "
            "save it as UTF-8",
            source=source,
        ) from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(syntax_problem(file.name, text, exc), source=source) from exc
    return _Loader(file, text, import_code).load(document, factory)


class _Unresolved:
    """Stands in for a handler or source that could not be resolved.

    The loader always raises when one is left in the topology; it exists so that
    :meth:`Topology.validate` still checks the rest of the declaration without
    reporting the missing handler a second time.
    """

    def __call__(self, event: Any) -> None:
        raise RuntimeError("unresolved handler from a topology file that failed to load")

    def __iter__(self) -> Iterator[Any]:
        return iter(())


_UNRESOLVED = _Unresolved()


class Reference:
    """A handler or source named in a file but not imported (``import_code=False``).

    It is callable and iterable so the topology validates; it refuses to run,
    since a topology loaded this way is for drawing (``reactor graph``).
    """

    def __init__(self, reference: str) -> None:
        self.reference = reference

    def __call__(self, *args: Any) -> None:
        raise RuntimeError(
            f"{self.reference} was not imported (the topology was loaded without running "
            "code); load it with Topology.from_toml(path) to run it"
        )

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __repr__(self) -> str:
        return f"<not imported: {self.reference}>"


class _FreshIterable:
    """An iterable that calls a generator function anew on every ``iter()``.

    A topology can be started more than once; each start gets a fresh generator
    instead of one exhausted by the previous run.
    """

    def __init__(self, function: Callable[[], Iterable[Any]], reference: str) -> None:
        self.function = function
        self.reference = reference

    def __iter__(self) -> Iterator[Any]:
        return iter(self.function())

    def __repr__(self) -> str:
        return f"<source {self.reference}>"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        text = repr(value)
        return f"an array {text if len(text) <= 60 else text[:57] + '...'}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return repr(value)
    return f"a {type(value).__name__} ({value})"


def _type_ok(kind: str, value: Any) -> bool:  # noqa: PLR0911 - one early return per kind reads best
    if kind == "any":  # a value of the user's own (a projection's initial state)
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "table":
        return isinstance(value, dict)
    if kind == "start":
        if isinstance(value, datetime.datetime):
            return True
        return value in ("earliest", "latest") or (
            isinstance(value, int) and not isinstance(value, bool)
        )
    if kind == "patterns":
        return isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        )
    raise AssertionError(f"unknown value kind {kind!r}")


def _options(settings: dict[str, Any], cls: type) -> dict[str, Any]:
    """The values of ``settings`` that ``cls`` takes as they are (the loader resolves the rest)."""
    allowed = _schema_keys(cls)
    return {
        key: value for key, value in settings.items() if key in allowed and key not in _LOADER_KEYS
    }


def _suggest(word: str, choices: Iterable[str]) -> str:
    return did_you_mean(word, choices)


class _Loader:
    """Turns one parsed TOML document into a Topology, collecting every problem."""

    def __init__(self, file: Path, text: str, import_code: bool = True) -> None:
        self.file = file
        self.import_code = import_code
        self.folder = file.resolve().parent
        self.locator = Locator(text)
        self.problems: list[tuple[int, str]] = []  # (line or sys.maxsize, problem)
        self.modules: dict[str, ModuleType | str] = {}  # module name -> module or error text
        # Start order of each declaration among its supervisor's siblings.
        self.order: dict[int, tuple[int, int]] = {}
        self.sequence = 0

    # -- reporting -------------------------------------------------------------------

    def report(self, line: int | None, message: str) -> None:
        where = f"line {line}: " if line is not None else ""
        self.problems.append((line or sys.maxsize, f"{self.file.name}: {where}{message}"))

    def report_at(self, where: Where, key: str | None, message: str) -> None:
        line = self.locator.table_line(where) if key is None else self.locator.key_line(where, key)
        self.report(line, message)

    # -- reading tables ----------------------------------------------------------------

    def table(self, where: Where, kind: str, value: Any) -> dict[str, Any] | None:
        """Check one table's keys and value types; return the well-typed values."""
        if not isinstance(value, dict):
            self.report_at(
                where[:-1], where[-1], f"{dotted(where)} must be a table, got {_describe(value)}"
            )
            return None
        allowed = _KEYS[kind]
        good: dict[str, Any] = {}
        for key, item in value.items():
            if key not in allowed:
                self.report_at(
                    where,
                    key,
                    f"{dotted(where)}: unknown key {key!r}{_suggest(key, allowed)} "
                    f"(allowed: {', '.join(allowed)})",
                )
                continue
            expected = allowed[key]
            if not _type_ok(expected, item):
                self.report_at(
                    where,
                    key,
                    f"{dotted((*where, key))} must be {_EXPECTED[expected]}, got {_describe(item)}",
                )
                continue
            good[key] = item
        for key in _REQUIRED.get(kind, ()):
            if key not in value:
                self.report_at(
                    where, None, f"{dotted(where)}: missing required key {key!r}; add {key} = ..."
                )
        return good

    def section(self, document: dict[str, Any], name: str) -> dict[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            self.report_at(
                (),
                name,
                f"{name} must be a table of [{name}.<name>] tables, got {_describe(value)}",
            )
            return {}
        return value

    def place(self, decl: ConsumerDecl | SupervisorDecl, where: Where) -> None:
        """Remember where ``decl`` appears in the file, to start siblings in file order."""
        line = self.locator.table_line(where)
        self.sequence += 1
        self.order[id(decl)] = (line if line is not None else sys.maxsize, self.sequence)

    # -- the document ------------------------------------------------------------------

    def load(self, document: dict[str, Any], factory: Callable[..., T]) -> T:
        for key, value in document.items():
            if key not in _SECTIONS:
                hint = _suggest(key, _SECTIONS)
                if not hint and not isinstance(value, dict) and key in _KEYS["topology"]:
                    hint = "; did you mean to put it under [topology]?"
                self.report_at(
                    (), key, f"unknown table {key!r}{hint} (allowed: {', '.join(_SECTIONS)})"
                )

        settings = self.table(("topology",), "topology", document.get("topology", {})) or {}
        name = settings.get("name", self.file.stem)
        topology = factory(name, strategy=self.strategy(("topology",), settings))
        topology.source = str(self.file)

        for channel, value in self.section(document, "channels").items():
            where = ("channels", channel)
            options = self.table(where, "channels", value)
            if options is not None:
                if "upcasters" in options:
                    options["upcasters"] = self.upcasters(
                        (*where, "upcasters"), options["upcasters"]
                    )
                topology.add_channel(ChannelDecl(channel, **options))

        supervisors = self.supervisors(topology, self.section(document, "supervisors"))
        for kind in ("consumers", "pools"):
            for consumer, value in self.section(document, kind).items():
                self.consumer(topology, supervisors, kind, consumer, value)
        self.sort(topology.root)

        for producer, value in self.section(document, "producers").items():
            self.producer(topology, producer, value)

        for projection, value in self.section(document, "projections").items():
            self.projection(topology, projection, value)

        for saga, value in self.section(document, "sagas").items():
            self.saga(topology, saga, value)

        # The file's own problems in file order, then what the builder's checks find.
        problems = [problem for _, problem in sorted(self.problems, key=lambda item: item[0])]
        problems += [self.locate(problem) for problem in topology.problems()]
        if problems:
            raise TopologyError(problems, source=str(self.file))
        return topology

    def strategy(self, where: Where, settings: dict[str, Any]) -> Strategy:
        kind = settings.get("strategy", "one_for_one")
        cls = _STRATEGIES.get(kind)
        if cls is None:
            self.report_at(
                where,
                "strategy",
                f"{dotted((*where, 'strategy'))}: unknown strategy "
                f"{kind!r}{_suggest(kind, _STRATEGIES)} "
                f"(use one of {', '.join(_STRATEGIES)})",
            )
            cls = OneForOne
        options = self.bounded(where, Strategy, settings)
        if "backoff" in settings:
            backoff = self.table((*where, "backoff"), "backoff", settings["backoff"])
            if backoff:
                options["backoff"] = Backoff(**self.bounded((*where, "backoff"), Backoff, backoff))
        try:
            return cls(**options)
        except (TypeError, ValueError) as exc:
            self.report_at(where, None, f"{dotted(where)}: {exc}")
            return cls()

    def bounded(self, where: Where, cls: type, settings: dict[str, Any]) -> dict[str, Any]:
        """The options of ``cls`` in ``settings`` that are within bounds; report the others.

        For frozen values (a strategy, a backoff) that refuse a bad option when made.
        """
        good = {}
        for opt in options_of(cls):
            if opt.name not in settings or opt.toml == "table":
                continue
            problems = opt.problems(settings[opt.name], prefix=dotted(where) + ".")
            for problem in problems:
                self.report_at(where, opt.name, problem)
            if not problems:
                good[opt.name] = settings[opt.name]
        return good

    def supervisors(
        self, topology: TopologyDecl, section: dict[str, Any]
    ) -> dict[str, SupervisorDecl]:
        """Declare every supervisor, then nest them by ``parent``, refusing cycles."""
        nodes: dict[str, SupervisorDecl] = {}
        parents: dict[str, str | None] = {}
        for name, value in section.items():
            where = ("supervisors", name)
            settings = self.table(where, "supervisors", value)
            if settings is None:
                continue
            node = SupervisorDecl(
                name, self.strategy(where, settings), **_options(settings, SupervisorDecl)
            )
            nodes[name] = node
            parents[name] = settings.get("parent")
            self.place(node, where)

        for name, parent in parents.items():
            if parent is not None and parent not in nodes:
                known = ", ".join(nodes) or "none declared"
                self.report_at(
                    ("supervisors", name),
                    "parent",
                    f"supervisors.{dotted((name,))}.parent: unknown supervisor {parent!r}"
                    f"{_suggest(parent, nodes)} (supervisors: {known}); declare "
                    f"[supervisors.{dotted((parent,))}] or remove the parent key",
                )
                parents[name] = None

        in_cycle: set[str] = set()
        for start in parents:
            chain: list[str] = []
            current: str | None = start
            while current is not None and current not in chain and current not in in_cycle:
                chain.append(current)
                current = parents[current]
            if current is not None and current in chain:
                cycle = chain[chain.index(current) :]
                if cycle[0] == start:  # report each cycle once, from its first member in file order
                    loop = " -> ".join([*cycle, cycle[0]])
                    self.report_at(
                        ("supervisors", start),
                        "parent",
                        f"supervisors.{dotted((start,))}.parent: supervisors form a cycle "
                        f"({loop}); a supervisor cannot be its own ancestor, remove one of "
                        "these parent keys",
                    )
                in_cycle.update(cycle)

        for name, node in nodes.items():
            parent = parents[name]
            # A supervisor in a cycle goes to the top level, so its children still get validated.
            holder = topology.root if parent is None or name in in_cycle else nodes[parent]
            holder.children.append(node)
        return nodes

    def consumer(
        self,
        topology: TopologyDecl,
        supervisors: dict[str, SupervisorDecl],
        kind: str,
        name: str,
        value: Any,
    ) -> None:
        where = (kind, name)
        settings = self.table(where, kind, value)
        if settings is None or "channel" not in settings:
            return
        node = topology.root
        supervisor = settings.get("supervisor")
        if supervisor is not None:
            if supervisor in supervisors:
                node = supervisors[supervisor]
            else:
                known = ", ".join(supervisors) or "none declared"
                self.report_at(
                    where,
                    "supervisor",
                    f"{dotted((*where, 'supervisor'))}: unknown supervisor {supervisor!r}"
                    f"{_suggest(supervisor, supervisors)} (supervisors: {known}); declare "
                    f"[supervisors.{dotted((supervisor,))}] or remove the supervisor key",
                )
        handler: Any = _UNRESOLVED
        if "handler" in settings:
            resolved = self.resolve(where, "handler", settings["handler"])
            if resolved is not None:
                handler = resolved
        options = _options(settings, PoolDecl if kind == "pools" else ConsumerDecl)
        if "retry" in settings:
            retry = self.table((*where, "retry"), "retry", settings["retry"])
            if retry:
                options["retry"] = Retry(**self.bounded((*where, "retry"), Retry, retry))
        if "chaos" in settings:
            chaos = self.table((*where, "chaos"), "chaos", settings["chaos"])
            if chaos is not None:
                options["chaos"] = Chaos(**self.bounded((*where, "chaos"), Chaos, chaos))
        decl: ConsumerDecl
        if kind == "pools":
            if "scaling" in settings:
                scaling = self.table((*where, "scaling"), "scaling", settings["scaling"])
                if scaling is not None:
                    options["scaling"] = PoolScaling(**scaling)
            decl = PoolDecl(name=name, handler=handler, **options)
        else:
            decl = ConsumerDecl(name=name, handler=handler, **options)
        node.children.append(decl)
        self.place(decl, where)

    def projection(self, topology: TopologyDecl, name: str, value: Any) -> None:
        where = ("projections", name)
        settings = self.table(where, "projections", value)
        if settings is None or "channel" not in settings:
            return
        apply: Any = _UNRESOLVED
        if "apply" in settings:
            resolved = self.resolve(where, "apply", settings["apply"])
            if resolved is not None:
                apply = resolved
        options = _options(settings, ProjectionDecl)
        if "retry" in settings:
            retry = self.table((*where, "retry"), "retry", settings["retry"])
            if retry:
                options["retry"] = Retry(**self.bounded((*where, "retry"), Retry, retry))
        topology.add_projection(ProjectionDecl(name, apply=apply, **options))

    def producer(self, topology: TopologyDecl, name: str, value: Any) -> None:
        where = ("producers", name)
        settings = self.table(where, "producers", value)
        if settings is None or not all(key in settings for key in _REQUIRED["producers"]):
            return
        source: Any = _UNRESOLVED
        resolved = self.resolve(where, "source", settings["source"])
        if resolved is not None:
            source = self.source(where, settings, resolved) if self.import_code else resolved
        options = _options(settings, ProducerDecl)
        topology.producers.append(ProducerDecl(name=name, source=source, **options))

    def source(  # noqa: PLR0911 - one exit per kind of source, each explained where it is
        self, where: Where, settings: dict[str, Any], value: Any
    ) -> Any:
        """Turn a resolved ``source`` into what ProducerDecl expects."""
        reference = settings["source"]
        if isinstance(value, Iterable) or not callable(value) or "interval" in settings:
            return value  # Topology.validate explains what is wrong with it, if anything
        try:
            signature = inspect.signature(value)
        except (TypeError, ValueError):
            return value
        required = [
            parameter
            for parameter in signature.parameters.values()
            if parameter.default is inspect.Parameter.empty
            and parameter.kind
            in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        ]
        if required:
            self.report_at(
                where,
                "source",
                f"{dotted((*where, 'source'))}: {reference!r} is a callable taking arguments; "
                "add interval = <seconds> to poll it, or name an iterable or a function "
                "taking no arguments",
            )
            return _UNRESOLVED
        if inspect.isgeneratorfunction(value):
            return _FreshIterable(value, reference)
        try:
            produced = value()
        except Exception as exc:
            self.report_at(
                where,
                "source",
                f"{dotted((*where, 'source'))}: calling {reference!r} to get the events "
                f"raised {type(exc).__name__}: {exc}; fix the function, or add interval = "
                "<seconds> to poll it instead",
            )
            return _UNRESOLVED
        if not isinstance(produced, Iterable):
            self.report_at(
                where,
                "source",
                f"{dotted((*where, 'source'))}: {reference!r} returned "
                f"{type(produced).__name__}, not an iterable of events; return an iterable, "
                "or add interval = <seconds> to poll it",
            )
            return _UNRESOLVED
        return produced

    def saga(self, topology: TopologyDecl, name: str, value: Any) -> None:
        """Declare the saga of ``[sagas.<name>]`` and its ``[sagas.<name>.steps.<step>]``."""
        where = ("sagas", name)
        settings = self.table(where, "sagas", value)
        if settings is None or not all(key in settings for key in _REQUIRED["sagas"]):
            return
        options = _options(settings, SagaDecl)
        if "retry" in settings:
            retry = self.table((*where, "retry"), "retry", settings["retry"])
            if retry:
                options["retry"] = Retry(**self.bounded((*where, "retry"), Retry, retry))
        decl = topology.add_saga(SagaDecl(name=name, **options))
        for step, table in settings.get("steps", {}).items():
            place = (*where, "steps", step)
            step_settings = self.table(place, "steps", table)
            if step_settings is None or "action" not in step_settings:
                continue
            step_options = _options(step_settings, StepDecl)
            for key in ("action", "compensation"):
                # A topic has no ':'; "module:function" names a function the saga runs.
                target = step_settings.get(key)
                if isinstance(target, str) and ":" in target:
                    resolved = self.resolve(place, key, target)
                    step_options[key] = _UNRESOLVED if resolved is None else resolved
            decl.steps.append(StepDecl(name=step, **step_options))

    def upcasters(self, where: Where, value: dict[str, Any]) -> dict[str, dict[Any, Any]]:
        """A channel's upcasters table, resolved; each problem reported on its own line.

        The chains with a problem are left out of the declaration, which would
        otherwise report them a second time, without their lines.
        """
        declared: dict[str, dict[Any, Any]] = {}
        for topic, steps in value.items():
            if not isinstance(steps, dict):
                self.report_at(
                    where,
                    topic,
                    f"{dotted((*where, topic))} must be a table of version = "
                    f'"module:function" (1 = "shop:v1_to_v2"), got {_describe(steps)}',
                )
                continue
            chain: dict[Any, Any] = {}
            for key, reference in steps.items():
                version = int(key) if _VERSION_KEY.fullmatch(key) else key
                if not isinstance(reference, str):
                    self.report_at(
                        (*where, topic),
                        key,
                        f"{dotted((*where, topic, key))} must be a 'module:function' "
                        f"reference, got {_describe(reference)}",
                    )
                    continue
                # A key that is no version is reported as such below, not resolved too.
                resolved = (
                    self.resolve((*where, topic), key, reference)
                    if isinstance(version, int)
                    else None
                )
                chain[version] = _UNRESOLVED if resolved is None else resolved
            declared[topic] = chain
        faulty = set()
        for path, message in upcaster_problems(declared):
            if len(path) == 2:
                self.report_at((*where, path[0]), str(path[1]), f"{dotted(where)}: {message}")
            else:
                self.report_at((*where, *path), None, f"{dotted(where)}: {message}")
            faulty.add(path[0] if path else None)
        return {topic: chain for topic, chain in declared.items() if topic not in faulty}

    def sort(self, node: SupervisorDecl) -> None:
        """Order each supervisor's children as their tables appear in the file."""
        node.children.sort(key=lambda child: self.order.get(id(child), (sys.maxsize, 0)))
        for child in node.children:
            if isinstance(child, SupervisorDecl):
                self.sort(child)

    def locate(self, problem: Problem) -> str:
        """Give a problem found by the topology's validation a file, line and TOML wording."""
        text = problem.text
        if problem.missing_channel is not None:
            text += f"; add a [channels.{dotted((problem.missing_channel,))}] table"
        section = _SECTION_OF.get(problem.what)
        line = None
        if section is not None and isinstance(problem.name, str):
            where = (section, problem.name)
            # A field's own line: its key, or its [table] when it is a table of its own.
            # A saga step's option is ``steps.<step>.<option>``: a table of its own.
            field = () if problem.field is None else tuple(problem.field.split("."))
            line = self.locator.table_line((*where, *field))
        prefix = f"line {line}: " if line is not None else ""
        return f"{self.file.name}: {prefix}{text}"

    # -- references ------------------------------------------------------------------

    def resolve(self, where: Where, key: str, reference: str) -> Any:
        """Resolve ``"module:attribute"``; report and return None when it cannot be."""
        label = dotted((*where, key))
        module_name, colon, attribute = reference.partition(":")
        module_name, attribute = module_name.strip(), attribute.strip()
        if not colon or not module_name or not attribute:
            guess = reference.rsplit(".", 1)
            example = (
                f"{guess[0]}:{guess[1]}"
                if len(guess) == 2 and guess[0] and guess[1]
                else "module:function"
            )
            self.report_at(
                where,
                key,
                f"{label}: {reference!r} is not a 'module:attribute' reference; "
                f"write it like {example!r}",
            )
            return None
        if not self.import_code:
            return Reference(f"{module_name}:{attribute}")
        module = self.module(module_name)
        if isinstance(module, str):
            self.report_at(where, key, f"{label}: cannot resolve {reference!r}: {module}")
            return None
        value: Any = module
        for part in attribute.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                owner = (
                    module_name
                    if value is module
                    else f"{module_name}:{attribute.rsplit('.', 1)[0]}"
                )
                names = [name for name in dir(value) if not name.startswith("_")]
                self.report_at(
                    where,
                    key,
                    f"{label}: cannot resolve {reference!r}: {owner!r} has no attribute "
                    f"{part!r}{_suggest(part, names)}",
                )
                return None
        return value

    def module(self, name: str) -> ModuleType | str:
        """Import ``name``, or load it from the TOML file's folder; an error text if neither."""
        cached = self.modules.get(name)
        if cached is None:
            cached = self.modules[name] = self._import(name)
        return cached

    def _import(  # noqa: PLR0911 - one exit per way an import can end
        self, name: str
    ) -> ModuleType | str:
        local = self._local_file(name)
        previous = sys.modules.get(name)
        loaded_here = previous is not None and _from_folder.get(name) is previous
        if not (loaded_here and local is not None):
            try:
                return importlib.import_module(name)
            except ModuleNotFoundError as exc:
                missing = exc.name or ""
                if not (name == missing or name.startswith(missing + ".")):
                    return f"importing module {name!r} failed: {type(exc).__name__}: {exc}"
            except Exception as exc:  # the user's module may raise anything at import
                return f"importing module {name!r} failed: {type(exc).__name__}: {exc}"
        if local is None:
            return (
                f"no module named {name!r}: it is not importable and there is no "
                f"{name.replace('.', '/')}.py in {str(self.folder)!r}; check the name, "
                "install the module, or put it next to the TOML file"
            )
        if (
            loaded_here
            and previous is not None
            and getattr(previous, "__file__", None) == str(local)
        ):
            return previous
        try:
            return self._load_local(name, local)
        except Exception as exc:
            return f"importing {str(local)!r} failed: {type(exc).__name__}: {exc}"

    def _local_file(self, name: str) -> Path | None:
        base = self.folder.joinpath(*name.split("."))
        for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def _load_local(self, name: str, file: Path) -> ModuleType:
        folder = str(self.folder)
        with _import_lock:
            # The module and the siblings it imports are found in the folder.
            module = import_module(name, folder) if "." in name else exec_file(name, file)
            _from_folder[name] = module
        return module
