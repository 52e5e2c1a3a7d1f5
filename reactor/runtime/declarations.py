"""What a topology declares, and how it is checked: the topology's schema.

One concept, in one module: the declaration classes (:class:`ChannelDecl`,
:class:`ProducerDecl`, :class:`ConsumerDecl`, :class:`PoolDecl`,
:class:`SupervisorDecl`) state every option once, with its kind, default,
bounds and one-line doc (:func:`reactor.schema.option`), and
:class:`TopologyDecl` holds the declared graph and checks it. The builder
(:class:`reactor.Topology`), the TOML loader and the README's option table
derive from these classes; a running system reads them and nothing else.

Validation reports every problem at once, each as a :class:`Problem` naming
what (``consumer``), which (its name) and which option, so that the TOML loader
can point at the line of the file without parsing messages.

Defaults worth knowing: a consumer's ``prefetch`` is 256, a pool member's 64.
A pool spreads one backlog over several members, some added only when the
backlog grows; a smaller prefetch leaves events in the channel for them
instead of queued at the first members.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from reactor.channels.gate import OVERFLOW_POLICIES, Overflow
from reactor.channels.registry import known_schemes, scheme_of
from reactor.channels.sizes import DEFAULT_MAX_EVENT_SIZE, MAX_EVENT_SIZE_LIMIT
from reactor.errors import InvalidTopicError, TopologyError
from reactor.messages import lifecycle
from reactor.messages.topics import TopicPattern, validate_topic
from reactor.messages.upcasting import Upcasters, upcaster_problems
from reactor.runtime.chaos import Chaos
from reactor.runtime.handling import is_async
from reactor.runtime.pool import PoolScaling
from reactor.runtime.sagadecl import SagaDecl, saga_problems
from reactor.schema import (
    Option,
    count,
    option,
    options_of,
    problems_of,
    seconds,
    string,
    table,
    time_limit,
)
from reactor.supervision.strategy import RESTART_TYPES, OneForOne, RestartType, Retry, Strategy
from reactor.text import did_you_mean, redact_url

if TYPE_CHECKING:
    from reactor.runtime.projections import ProjectionDecl

__all__ = [
    "DEFAULT_STRATEGY",
    "ChannelDecl",
    "ConsumerDecl",
    "PoolDecl",
    "Problem",
    "ProducerDecl",
    "SupervisorDecl",
    "TopologyDecl",
    "builder_options",
    "patterns_of",
    "patterns_option",
]

DEFAULT_STRATEGY = OneForOne()

_Decl = TypeVar("_Decl")


@attrs.frozen(slots=True)
class Problem:
    """One problem of a topology, found by :meth:`TopologyDecl.problems`.

    Attributes:
        what: the kind of declaration: ``channel``, ``producer``, ``consumer``,
            ``pool``, ``supervisor``, ``projection`` or ``saga`` (a saga step's
            option is field ``steps.<step>.<option>``).
        name: the declaration's name (as given, so possibly not a string).
        field: the option at fault, or ``None`` when the declaration as a whole is.
        text: the readable line, naming the declaration and what is wrong.
        missing_channel: the undeclared channel the problem refers to, if any: the
            remedy is to declare it (each face says how in its own words).
    """

    what: str
    name: Any
    field: str | None
    text: str
    missing_channel: str | None = None

    def __str__(self) -> str:
        if self.missing_channel is None:
            return self.text
        return f"{self.text}; declare it with topology.channel({self.missing_channel!r})"


# -- checks of single options --------------------------------------------------------


def _check_backend(value: Any) -> list[str]:
    backends = known_schemes()
    if isinstance(value, str) and scheme_of(value) in backends:
        return []
    shown = redact_url(value) if isinstance(value, str) else value
    return [f"unknown backend {shown!r}; use one of {', '.join(backends)}"]


def _check_topic(value: Any) -> list[str]:
    try:
        validate_topic(value)
    except InvalidTopicError as exc:
        return [str(exc)]
    return []


def _as_patterns(value: Any) -> Any:
    """A list or other iterable of patterns becomes a tuple; anything else stays for the check."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        return value
    return tuple(value)


def patterns_of(value: Any) -> tuple[Any, ...]:
    """A declared ``pattern`` as a tuple of patterns."""
    return value if isinstance(value, tuple) else (value,)


def _check_patterns(value: Any) -> list[str]:
    patterns = patterns_of(value)
    if not patterns:
        return ["needs at least one pattern"]
    problems = []
    for pattern in patterns:
        try:
            TopicPattern.compile(pattern)
        except InvalidTopicError as exc:
            problems.append(str(exc))
    return problems


def patterns_option(doc: str) -> Any:
    """The topic pattern(s) a declaration takes events of: one, or a list (kept as a tuple)."""
    return option(
        "#",
        kind="custom",
        toml="patterns",
        converter=_as_patterns,
        check=_check_patterns,
        doc=doc,
    )


def _has(handler: Any, method: str) -> bool:
    return callable(getattr(handler, method, None))


def _check_handler(handler: Any) -> list[str]:
    if handler is None:
        return ["has no handler; pass handler= or use it as a decorator"]
    if inspect.isclass(handler):
        if not (_has(handler, "handle") or _has(handler, "handle_batch")):
            return [
                f"handler class {handler.__name__} has no handle(event) or "
                "handle_batch(events) method"
            ]
        return []
    if _has(handler, "handle") or _has(handler, "handle_batch") or callable(handler):
        return []
    return [
        f"handler must be a function or have a handle(event) method, got {type(handler).__name__}"
    ]


def _field_or_callable(name: str) -> Callable[[Any], list[str]]:
    def check(key: Any) -> list[str]:
        if callable(key) or isinstance(key, str):
            return []
        return [f"{name} must be a callable or a field name, got {type(key).__name__}"]

    return check


def _check_scaling(scaling: Any) -> list[str]:
    if not isinstance(scaling, PoolScaling):
        return [f"scaling must be a reactor.PoolScaling, got {type(scaling).__name__}"]
    return [text for _, text in problems_of(scaling, "scaling.")]


def _check_retry(retry: Any) -> list[str]:
    if isinstance(retry, Retry):
        return []
    return [f"retry must be a reactor.Retry, got {type(retry).__name__}"]


def _check_chaos(chaos: Any) -> list[str]:
    if not isinstance(chaos, Chaos):
        return [f"chaos must be a reactor.Chaos, got {type(chaos).__name__}"]
    return [text for _, text in problems_of(chaos, "chaos.")]


def _check_upcasters(upcasters: Any) -> list[str]:
    return [message for _, message in upcaster_problems(upcasters)]


def _default_strategy(value: Any) -> Any:
    return DEFAULT_STRATEGY if value is None else value


def _check_strategy(strategy: Any) -> list[str]:
    if isinstance(strategy, Strategy):
        return []
    return [f"strategy must be OneForOne, OneForAll or RestForOne, got {strategy!r}"]


def _restart(default: RestartType, doc: str) -> Any:
    return option(default, kind="choice", choices=RESTART_TYPES, label="restart type", doc=doc)


# -- the declarations ------------------------------------------------------------------


@attrs.define(eq=False, repr=False)
class ChannelDecl:
    """A declared channel."""

    name: str
    backend: str = option(
        "memory",
        kind="custom",
        toml="str",
        check=_check_backend,
        doc="where the events live: `memory`, or a `sqlite://` or `redis://` URL",
    )
    capacity: int = count(10_000, "most published-but-unsettled events the channel holds")
    overflow: Overflow = option(
        "block",
        kind="choice",
        choices=OVERFLOW_POLICIES,
        label="overflow policy",
        doc="what `publish` does at capacity",
    )
    max_batch: int = count(128, "most events delivered to a consumer in one message")
    max_event_size: int = option(
        DEFAULT_MAX_EVENT_SIZE,
        kind="int",
        positive=True,
        max=MAX_EVENT_SIZE_LIMIT,
        doc="largest encoded event `publish` accepts, in bytes (1 MiB); pass a bigger "
        "blob by reference (its key or URL)",
    )
    upcasters: dict[str, dict[int, Any]] = option(
        kind="custom",
        factory=dict,
        toml="table",
        check=_check_upcasters,
        doc="per topic, `{version: function}` turning older data into the current "
        "version before consumers see it",
    )

    def __repr__(self) -> str:
        # A backend URL may carry a password; a repr ends up in logs and tracebacks.
        shown = []
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if field.name == "backend" and isinstance(value, str):
                value = redact_url(value)
            shown.append(f"{field.name}={value!r}")
        return f"ChannelDecl({', '.join(shown)})"


@attrs.define(eq=False)
class ProducerDecl:
    """A declared producer: an iterable source, or a callable polled every ``interval``."""

    name: str
    channel: str = string(doc="the channel it publishes into")
    topic: str = string(check=_check_topic, doc="the topic of the events it makes")
    source: Any = string(
        doc="an iterable (pulled until exhausted) or a callable polled every `interval`",
    )
    interval: float | None = seconds(
        None, "seconds between polls of a callable source", min=0, max=86_400, optional=True
    )
    rate: float | None = option(
        None,
        kind="rate",
        positive=True,
        max=1_000_000,
        optional=True,
        doc="most events per second",
    )
    key: Callable[[Any], str | None] | str | None = string(
        None,
        optional=True,
        check=_field_or_callable("key"),
        doc="the event key: a callable `key(data)`, or a field of dict data",
    )
    batch_size: int = count(128, "most events published in one message")
    restart: RestartType = _restart(
        "transient", "restart type; `transient`: an exhausted source is done"
    )


@attrs.define(eq=False)
class ConsumerDecl:
    """A declared consumer (also the member template of a pool)."""

    name: str
    channel: str = string(doc="the channel to consume from")
    pattern: str | tuple[str, ...] = patterns_option(
        "topic pattern(s): `*` one word, `#` zero or more words"
    )
    handler: Any = string(
        None,
        required=True,
        check=_check_handler,
        doc="a function `f(event)`, or a class or object with `handle(event)`",
    )
    group: str | None = option(
        None,
        kind="text",
        optional=True,
        doc="consumer group (default: the name); members of a group compete for events",
    )
    max_deliveries: int = count(5, "attempts before a failing event goes to `$deadletter`")
    idempotent: bool = option(
        False, kind="bool", doc="skip events whose id this group already handled"
    )
    dedup_window: int = count(100_000, "how many handled ids `idempotent` remembers")
    restart: RestartType = _restart(
        "permanent", "restart after any exit (`permanent`), after a failure only, or never"
    )
    output: str | None = string(
        None,
        optional=True,
        doc="channel for events the handler returns (default: `channel`)",
    )
    prefetch: int = count(256, "events the channel may hand this consumer ahead of time")
    handler_timeout: float | None = time_limit("seconds before a running handler counts as hung")
    shutdown_s: float = seconds(
        5.0, "how long a stop of this consumer may take", positive=True, max=3600
    )
    start: str | int | datetime = option(
        "earliest",
        kind="start",
        doc="where a group new to a durable channel begins: `earliest`, `latest`, an offset or a datetime",
    )

    retry: Retry = table(
        Retry,
        _check_retry,
        "when a failed event is tried again: a `reactor.Retry` (exponential delay with jitter)",
    )
    failure_threshold: int = count(
        10,
        "failures in a row, with no success between, after which the consumer itself "
        "counts as failed and is restarted",
    )
    concurrency: int = count(
        1, "events an `async def` handler runs at once (one key at a time, in order)", max=10_000
    )
    chaos: Chaos | None = option(
        None,
        kind="custom",
        toml="table",
        optional=True,
        check=_check_chaos,
        doc="failures, latency and an outage on purpose: a `reactor.Chaos` (demos, resilience tests)",
    )
    batch_size: int | None = count(
        None,
        "hand the handler up to this many events at once, `handle_batch(events)` "
        "(off: one at a time, `handle(event)`)",
        optional=True,
    )
    batch_timeout: float = seconds(
        1.0,
        "seconds a partial batch waits, from its first event, before it is handled",
        positive=True,
        max=3600,
    )
    batch_key: Callable[[Any], Any] | str | None = string(
        None,
        optional=True,
        check=_field_or_callable("batch_key"),
        doc="one batch per value of this field of dict data, or of a callable `batch_key(event)`",
    )

    @property
    def group_name(self) -> str:
        return self.group or self.name

    @property
    def patterns(self) -> tuple[str, ...]:
        return patterns_of(self.pattern)

    @property
    def output_channel(self) -> str:
        return self.output or self.channel


@attrs.define(eq=False)
class PoolDecl(ConsumerDecl):
    """A declared pool: ``min_size`` to ``max_size`` members of one group.

    Members restart as ``permanent``; a pool takes no ``restart`` option.
    """

    not_options: ClassVar[frozenset[str]] = frozenset({"restart"})

    prefetch: int = count(
        64,
        "events the channel may hand each member ahead of time (smaller than a "
        "consumer's 256, so a backlog is left for members added by scaling)",
    )
    min_size: int = option(
        1,
        kind="int",
        min=0,
        doc="members always running; 0: none while the group has nothing to do",
    )
    max_size: int = count(4, "most members, reached on backlog")
    scaling: PoolScaling = table(
        PoolScaling, _check_scaling, "when the pool grows and shrinks: a `reactor.PoolScaling`"
    )


@attrs.define(eq=False)
class SupervisorDecl:
    """A declared supervisor and its children, in start order."""

    name: str
    strategy: Strategy = option(
        DEFAULT_STRATEGY,
        kind="custom",
        converter=_default_strategy,
        toml=False,  # a TOML table writes the strategy's own options beside its kind
        check=_check_strategy,
        doc="`OneForOne`, `OneForAll` or `RestForOne`, with restart intensity and backoff",
    )
    restart: RestartType = _restart("permanent", "restart type of the supervisor itself")
    children: list[ConsumerDecl | SupervisorDecl] = attrs.field(factory=list)


_WHAT_OF = {ChannelDecl: "channel", ProducerDecl: "producer", SupervisorDecl: "supervisor"}


def what_of(decl: object) -> str:
    """``channel``, ``producer``, ``consumer``, ``pool`` or ``supervisor``."""
    if isinstance(decl, PoolDecl):
        return "pool"
    if isinstance(decl, ConsumerDecl):
        return "consumer"
    return _WHAT_OF[type(decl)]


def builder_options(cls: type) -> dict[str, Option]:
    """The options a builder method and a TOML table take for ``cls``, by name."""
    options = _BUILDER_OPTIONS.get(cls)
    if options is None:
        excluded: frozenset[str] = getattr(cls, "not_options", frozenset())
        options = {opt.name: opt for opt in options_of(cls) if opt.name not in excluded}
        _BUILDER_OPTIONS[cls] = options
    return dict(options)  # a copy: callers may change theirs


# Validation asks once per declaration: 10,000 consumers, 10,000 asks for one answer.
_BUILDER_OPTIONS: dict[type, dict[str, Option]] = {}


# -- the graph -----------------------------------------------------------------------


class TopologyDecl:
    """A declared graph: channels, producers, and the supervision tree of consumers.

    The builder :class:`reactor.Topology` adds the methods that declare; a running
    system reads only what is here.

    Attributes:
        name: the topology's name.
        channels: every declared channel, by name.
        producers: every producer, in declaration order.
        root: the supervisor of every consumer, pool and nested supervisor.
        source: the file it was loaded from, for error messages.
    """

    def __init__(self, name: str = "reactor", *, strategy: Strategy | None = None) -> None:
        self.name = name
        self.channels: dict[str, ChannelDecl] = {}
        self.producers: list[ProducerDecl] = []
        self.root = SupervisorDecl("$consumers", _default_strategy(strategy))
        self.source: str | None = None
        self.sagas: dict[str, SagaDecl] = {}
        self._problems: list[Problem] = []  # found while declaring: a channel declared twice
        # Read models folded from channels (reactor.runtime.projections), by name.
        self.projections: dict[str, ProjectionDecl] = {}

    def add_channel(self, decl: ChannelDecl) -> ChannelDecl:
        """Add a channel declaration; a second one of the same name replaces the first."""
        return self._declare("channel", decl.name, self.channels, decl)

    def add_projection(self, decl: ProjectionDecl) -> ProjectionDecl:
        """Add a projection declaration; a second one of the same name replaces the first."""
        return self._declare("projection", decl.name, self.projections, decl)

    def add_saga(self, decl: SagaDecl) -> SagaDecl:
        """Add a saga declaration; a second one of the same name replaces the first."""
        return self._declare("saga", decl.name, self.sagas, decl)

    def _declare(self, what: str, name: str, declared: dict[str, _Decl], decl: _Decl) -> _Decl:
        """Put ``decl`` in ``declared`` under ``name``; a second of a name is a problem."""
        if name in declared:
            self._problems.append(Problem(what, name, None, f"{what} {name!r} is declared twice"))
        declared[name] = decl
        return decl

    # -- reading ---------------------------------------------------------------------

    def channel_upcasters(self, channel: str) -> Upcasters | None:
        """The upcasters declared on ``channel``, for its consumers (None: none, or ``$system``)."""
        decl = self.channels.get(channel)
        return None if decl is None else Upcasters.of(channel, decl.upcasters)

    def consumers(self) -> list[ConsumerDecl]:
        """Every consumer and pool, in start order."""
        return [decl for decl, _ in self.walk() if isinstance(decl, ConsumerDecl)]

    def supervisors(self) -> list[SupervisorDecl]:
        """Every supervisor under the root, in start order."""
        return [decl for decl, _ in self.walk() if isinstance(decl, SupervisorDecl)]

    def walk(self) -> list[tuple[ConsumerDecl | SupervisorDecl, SupervisorDecl]]:
        """Every declaration under the root with its supervisor, depth first, in order."""
        found: list[tuple[ConsumerDecl | SupervisorDecl, SupervisorDecl]] = []

        def visit(node: SupervisorDecl) -> None:
            for child in node.children:
                found.append((child, node))
                if isinstance(child, SupervisorDecl):
                    visit(child)

        visit(self.root)
        return found

    # -- validation ------------------------------------------------------------------

    def validate(self) -> None:
        """Check the whole topology.

        Raises:
            TopologyError: listing every problem found.
        """
        problems = self.problems()
        if problems:
            raise TopologyError([str(problem) for problem in problems], source=self.source)

    def problems(self) -> list[Problem]:
        """Every problem of the topology, in declaration order; empty if it is valid."""
        problems = list(self._problems)
        for decl in self.channels.values():
            if not isinstance(decl.name, str) or not decl.name or decl.name.startswith("$"):
                problems.append(
                    _problem(
                        decl,
                        None,
                        "a channel name must be a non-empty string not starting with '$'",
                    )
                )
            problems += _option_problems(decl)
        problems += self._check_names()
        for producer in self.producers:
            problems += self._check_producer(producer)
        problems += self._check_consumers()
        for supervisor in [self.root, *self.supervisors()]:
            problems += _option_problems(supervisor)
        if self.projections:
            taken = {p.name: "producer" for p in self.producers}
            taken.update((decl.name, what_of(decl)) for decl, _ in self.walk())
            for projection in self.projections.values():
                problems += projection.problems(self, taken)
        for saga in self.sagas.values():
            problems += [
                Problem(
                    "saga",
                    saga.name,
                    field,
                    text,
                    missing_channel=saga.channel if field == "channel" else None,
                )
                for field, text in saga_problems(saga, self.channels)
            ]
        return problems

    def _check_names(self) -> list[Problem]:
        problems = []
        seen: dict[str, str] = {}
        entries: list[tuple[object, str, Any]] = [(p, "producer", p.name) for p in self.producers]
        entries += [(decl, what_of(decl), decl.name) for decl, _ in self.walk()]
        # Pool members are named "<pool>-<n>": those names are taken too.
        for decl in self.consumers():
            if isinstance(decl, PoolDecl) and isinstance(decl.max_size, int):
                entries += [
                    (decl, f"member of pool {decl.name!r}", f"{decl.name}-{n}")
                    for n in range(1, decl.max_size + 1)
                ]
        for owner, kind, name in entries:
            what = what_of(owner)
            if not isinstance(name, str) or not name:
                text = f"a {kind} has an empty or non-string name: {name!r}"
                problems.append(Problem(what, name, None, text))
                continue
            if name.startswith("$"):
                text = f"{kind} {name!r}: names starting with '$' are reserved for reactor"
                problems.append(Problem(what, name, None, text))
            if name in seen and kind.startswith("member of pool"):
                text = f"{seen[name]} {name!r}: the name is taken by a {kind}; rename one of them"
                problems.append(Problem(seen[name], name, None, text))
            elif name in seen:
                text = f"{kind} {name!r}: the name is already used by a {seen[name]}; names must be unique"
                problems.append(Problem(what, name, None, text))
            else:
                seen[name] = kind
        return problems

    def _check_channel(self, decl: ProducerDecl | ConsumerDecl, field: str) -> list[Problem]:
        name = getattr(decl, field)
        if name in self.channels or (field == "channel" and name == lifecycle.SYSTEM_CHANNEL):
            return []
        subject = f"{what_of(decl)} {decl.name!r}" + (" (output)" if field == "output" else "")
        if name == lifecycle.DEADLETTER:
            # A topic on $system, not a channel: declaring it would be refused ('$' names).
            text = (
                f"{subject}: {name!r} is a topic on channel {lifecycle.SYSTEM_CHANNEL!r}, not a "
                f"channel; subscribe with channel={lifecycle.SYSTEM_CHANNEL!r}, "
                f"pattern={lifecycle.DEADLETTER!r}"
            )
            return [Problem(what_of(decl), decl.name, field, text)]
        names = sorted(self.channels)
        if field == "channel":
            names.append(lifecycle.SYSTEM_CHANNEL)
        known = ", ".join(names) or "none declared"
        hint = did_you_mean(name, names) if isinstance(name, str) else ""
        text = f"{subject}: unknown channel {name!r}{hint} (channels: {known})"
        return [Problem(what_of(decl), decl.name, field, text, missing_channel=name)]

    def _check_producer(self, decl: ProducerDecl) -> list[Problem]:
        problems = self._check_channel(decl, "channel")
        source = decl.source
        if callable(source) and not isinstance(source, Iterable):
            if decl.interval is None:
                problems.append(
                    _problem(
                        decl, "source", "a callable source needs interval= (seconds between polls)"
                    )
                )
        elif not isinstance(source, Iterable):
            problems.append(
                _problem(
                    decl,
                    "source",
                    f"source must be an iterable or a callable, got {type(source).__name__}",
                )
            )
        return problems + _option_problems(decl)

    def _check_consumers(self) -> list[Problem]:
        problems = []
        groups: dict[tuple[str, str], ConsumerDecl] = {}
        for decl in self.consumers():
            problems += self._check_channel(decl, "channel")
            if decl.output is not None:
                problems += self._check_channel(decl, "output")
            own = _option_problems(decl)
            problems += own
            sizes_ok = not any(problem.field in ("min_size", "max_size") for problem in own)
            if isinstance(decl, PoolDecl) and sizes_ok and decl.min_size > decl.max_size:
                text = f"needs 0 <= min_size <= max_size, got min_size={decl.min_size!r}, max_size={decl.max_size!r}"
                problems.append(_problem(decl, "min_size", text))
            concurrency_ok = not any(problem.field == "concurrency" for problem in own)
            if concurrency_ok and decl.concurrency > 1 and not is_async(decl.handler):
                text = (
                    f"has concurrency={decl.concurrency} but a plain handler runs one event "
                    "at a time; make the handler `async def`, or use a pool for more threads"
                )
                problems.append(_problem(decl, "concurrency", text))
            if decl.chaos is not None and is_async(decl.handler):
                text = "chaos wraps plain handlers only; drop it or use a plain `def` handler"
                problems.append(_problem(decl, "chaos", text))
            problems += _check_batching(decl, own)
            other = groups.setdefault((decl.channel, decl.group_name), decl)
            if other is not decl and (
                set(other.patterns) != set(decl.patterns)
                or other.max_deliveries != decl.max_deliveries
            ):
                text = (
                    f"shares group {decl.group_name!r} on channel {decl.channel!r} with "
                    f"{other.name!r} but declares a different pattern or max_deliveries; "
                    "members of a group must subscribe alike"
                )
                problems.append(_problem(decl, "group", text))
        return problems


def _problem(decl: Any, field: str | None, message: str) -> Problem:
    what = what_of(decl)
    return Problem(what, decl.name, field, f"{what} {decl.name!r}: {message}")


def _check_batching(decl: ConsumerDecl, own: list[Problem]) -> list[Problem]:
    """Whether a consumer takes its events one at a time or in batches, its handler agrees."""
    if any(problem.field in ("batch_size", "prefetch", "handler") for problem in own):
        return []  # already reported
    handler = decl.handler
    name = getattr(handler, "__name__", type(handler).__name__)
    if decl.batch_size is None:
        if decl.batch_key is not None:
            text = "batch_key is set but batch_size is not; set batch_size to batch events"
            return [_problem(decl, "batch_key", text)]
        if _has(handler, "handle_batch") and not _has(handler, "handle"):
            text = (
                f"handler {name} has handle_batch(events) but batch_size is not set; set batch_size"
            )
            return [_problem(decl, "batch_size", text)]
        return []
    problems = []
    if is_async(handler) or inspect.iscoroutinefunction(getattr(handler, "handle_batch", None)):
        text = (
            f"batch_size is set but handler {name} is `async def`; batch handlers run in the "
            "consumer's thread: make handle_batch a plain function"
        )
        problems.append(_problem(decl, "handler", text))
    if decl.chaos is not None:
        text = "chaos wraps one-event handlers only; drop chaos or batch_size"
        problems.append(_problem(decl, "chaos", text))
    if decl.batch_size > decl.prefetch:
        text = (
            f"batch_size={decl.batch_size} is more than prefetch={decl.prefetch}, so a batch "
            "could never fill; raise prefetch or lower batch_size"
        )
        problems.append(_problem(decl, "batch_size", text))
    if _has(handler, "handle") and not _has(handler, "handle_batch"):
        text = (
            f"batch_size is set but handler {name} has handle(event) and no "
            "handle_batch(events); add handle_batch, or drop batch_size"
        )
        problems.append(_problem(decl, "handler", text))
    return problems


def _option_problems(decl: Any) -> list[Problem]:
    problems = []
    for opt in builder_options(type(decl)).values():
        for message in opt.problems(getattr(decl, opt.name)):
            problems.append(_problem(decl, opt.name, message))
    return problems
