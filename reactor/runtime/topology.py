"""The builder of a topology: channels, producers, consumers, pools and supervisors.

A :class:`Topology` only records declarations; nothing runs until
:meth:`Topology.start`. :meth:`Topology.validate` checks the whole graph and
reports every problem at once in one :class:`~reactor.errors.TopologyError`.

Every keyword option of the builder methods is declared once, on the
declaration classes of :mod:`reactor.runtime.declarations` (its kind, default,
bounds and doc); the methods take them as keyword arguments and refuse any
other name at the call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from reactor.errors import TopologyError
from reactor.messages.upcasting import upcaster_name
from reactor.runtime import toml
from reactor.runtime.declarations import (
    DEFAULT_STRATEGY,
    ChannelDecl,
    ConsumerDecl,
    PoolDecl,
    ProducerDecl,
    SupervisorDecl,
    TopologyDecl,
    builder_options,
)
from reactor.runtime.projections import ProjectionDecl
from reactor.runtime.sagadecl import SagaDecl
from reactor.schema import check_keywords
from reactor.supervision.strategy import Strategy

if TYPE_CHECKING:
    from reactor.clock import Clock
    from reactor.runtime.system import System

__all__ = [
    "ChannelDecl",
    "ConsumerDecl",
    "PoolDecl",
    "ProducerDecl",
    "ProjectionDecl",
    "SupervisorDecl",
    "SupervisorScope",
    "Topology",
]

H = TypeVar("H")


def _options(method: str, cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """``given``, after refusing any keyword that is not an option of ``cls``."""
    check_keywords(method, given, builder_options(cls))
    return given


def _documented(cls: type, exclude: tuple[str, ...] = ()) -> Callable[[H], H]:
    """Append the options of ``cls`` (from the schema) to a builder method's docstring."""

    def document(method: H) -> H:
        lines = [
            f"            {opt.name}: {opt.doc.replace('`', '``')} (default: {opt.default!r})"
            if opt.has_default
            else f"            {opt.name}: {opt.doc.replace('`', '``')} (required)"
            for opt in builder_options(cls).values()
            if opt.name not in exclude
        ]
        text = "\n\n        Options (keyword arguments; bounds are checked by validate()):\n"
        method.__doc__ = (method.__doc__ or "").rstrip() + text + "\n".join(lines) + "\n"
        return method

    return document


class _Scope:
    """Where declarations land: the topology itself or a ``with`` supervisor block."""

    def __init__(self, topology: Topology, node: SupervisorDecl) -> None:
        self._topology = topology
        self._node = node

    @_documented(ConsumerDecl, exclude=("channel", "handler"))
    def consumer(self, name: str, handler: H | None = None, *, channel: str, **options: Any) -> Any:
        """Declare a consumer; use it plainly or as a decorator.

        Args:
            name: unique name of the consumer (and its group, unless ``group`` is given).
            handler: a function ``f(event)``, or a class / object with ``handle(event)``.
            channel: the channel to consume from.
            **options: the options below.

        Returns:
            The handler when used as ``consumer(name, handler, ...)``, or a decorator.

        Raises:
            TypeError: an option that consumers do not have.
        """
        return self._add(ConsumerDecl, name, handler, channel=channel, options=options)

    @_documented(PoolDecl, exclude=("channel", "handler"))
    def pool(self, name: str, handler: H | None = None, *, channel: str, **options: Any) -> Any:
        """Declare a pool of ``min_size`` to ``max_size`` members in one group.

        Takes the options of :meth:`consumer` except ``restart`` (members are
        ``permanent``), plus ``min_size``, ``max_size`` and ``scaling``; the
        members' ``prefetch`` default is smaller than a consumer's.

        Raises:
            TypeError: an option that pools do not have.
        """
        return self._add(PoolDecl, name, handler, channel=channel, options=options)

    def _add(
        self,
        cls: type[ConsumerDecl],
        name: str,
        handler: Any,
        *,
        channel: str,
        options: dict[str, Any],
    ) -> Any:
        """Declare a consumer or a pool here; the handler back, or a decorator without one."""
        options = _options("pool" if issubclass(cls, PoolDecl) else "consumer", cls, options)
        decl = cls(name=name, channel=channel, handler=handler, **options)
        self._node.children.append(decl)
        return _decorator(decl) if handler is None else handler

    @_documented(SupervisorDecl, exclude=("strategy",))
    def supervisor(
        self, name: str, strategy: Strategy | None = None, **options: Any
    ) -> SupervisorScope:
        """Declare a nested supervisor; declare its children inside ``with ... as sup:``.

        Args:
            name: unique name of the supervisor.
            strategy: ``OneForOne`` (the default), ``OneForAll`` or ``RestForOne``, with
                restart intensity and backoff.
            **options: the options below.

        Raises:
            TypeError: an option that supervisors do not have.
        """
        options = _options("supervisor", SupervisorDecl, options)
        node = SupervisorDecl(name, strategy or DEFAULT_STRATEGY, **options)
        self._node.children.append(node)
        return SupervisorScope(self._topology, node)


def _decorator(decl: ConsumerDecl) -> Callable[[H], H]:
    def register(handler: H) -> H:
        decl.handler = handler
        return handler

    return register


class SupervisorScope(_Scope):
    """A supervisor block: ``with topology.supervisor("name") as sup: sup.consumer(...)``."""

    def __enter__(self) -> SupervisorScope:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    @property
    def name(self) -> str:
        return self._node.name


class Topology(TopologyDecl, _Scope):
    """A declared graph of channels, producers, consumers, pools and supervisors.

    Example:
        >>> topo = Topology("shop")
        >>> topo.channel("orders")
        >>> topo.consumer("audit", print, channel="orders", pattern="orders.#")

    Thread-safety: build a topology from one thread; a started system does not
    see later changes.
    """

    def __init__(self, name: str = "reactor", *, strategy: Strategy | None = None) -> None:
        TopologyDecl.__init__(self, name, strategy=strategy)
        _Scope.__init__(self, self, self.root)

    @_documented(ChannelDecl)
    def channel(self, name: str, **options: Any) -> ChannelDecl:
        """Declare a channel.

        Args:
            name: the channel's name.
            **options: the options below.

        Raises:
            TypeError: an option that channels do not have.
        """
        return self.add_channel(ChannelDecl(name, **_options("channel", ChannelDecl, options)))

    def upcaster(self, channel: str, topic: str, version: int) -> Callable[[H], H]:
        """Declare, as a decorator, how ``topic``'s data goes from ``version`` to ``version + 1``.

        The same as an entry of the channel's ``upcasters`` option. Consumers of
        ``channel`` are handed events of older versions upcast, step by step, to
        the current one (see :mod:`reactor.messages.upcasting`).

        Example:
            >>> topo = Topology("shop")
            >>> topo.channel("orders")
            >>> @topo.upcaster("orders", "order.placed", version=1)
            ... def add_currency(data):
            ...     return {**data, "currency": "EUR"}

        Args:
            channel: a channel declared before.
            topic: the topic whose data it upcasts.
            version: the version it takes (an int >= 1); it returns version + 1's data.

        Returns:
            A decorator that registers the function and returns it unchanged.

        Raises:
            TopologyError: ``channel`` is not declared yet, or ``topic`` has an
                upcaster for ``version`` already.
        """
        decl = self.channels.get(channel)
        if decl is None:
            known = ", ".join(sorted(self.channels)) or "none declared"
            raise TopologyError(
                f"upcaster of topic {topic!r} (version {version!r}): unknown channel "
                f"{channel!r} (channels: {known}); declare it with topology.channel("
                f"{channel!r}) before its upcasters"
            )

        def register(function: H) -> H:
            steps = dict(decl.upcasters.get(topic, {}))
            if version in steps:
                raise TopologyError(
                    f"channel {channel!r}: topic {topic!r} has an upcaster for version "
                    f"{version!r} already ({upcaster_name(steps[version])}); each version "
                    "has one upcaster, turning it into the next"
                )
            steps[version] = function
            decl.upcasters[topic] = steps
            return function

        return register

    @_documented(ProducerDecl, exclude=("channel", "topic", "source"))
    def producer(
        self, name: str, *, channel: str, topic: str, source: Any, **options: Any
    ) -> ProducerDecl:
        """Declare a producer.

        Args:
            name: unique name of the producer.
            channel: the channel it publishes into.
            topic: the topic of the events it makes.
            source: an iterable (pulled until exhausted) or a callable (polled every
                ``interval`` seconds, returning ``None``, an event, or event data).
            **options: the options below.

        Raises:
            TypeError: an option that producers do not have.
        """
        options = _options("producer", ProducerDecl, options)
        decl = ProducerDecl(name, channel, topic, source, **options)
        self.producers.append(decl)
        return decl

    @_documented(ProjectionDecl, exclude=("channel", "apply"))
    def projection(self, name: str, apply: H | None = None, *, channel: str, **options: Any) -> Any:
        """Declare a projection: a read model folded from ``channel``; plainly or as a decorator.

        Example:
            >>> topo = Topology("shop")
            >>> topo.channel("orders")
            >>> @topo.projection("totals", channel="orders", pattern="order.paid", initial={})
            ... def add(state, event):
            ...     total = state.get(event.data["customer"], 0) + event.data["amount"]
            ...     return {**state, event.data["customer"]: total}

        Args:
            name: unique name of the projection (and of the consumer that feeds it).
            apply: ``apply(state, event) -> new state``; ``state`` is frozen.
            channel: the channel whose events it folds.
            **options: the options below.

        Returns:
            ``apply`` when given, or a decorator.

        Raises:
            TypeError: an option that projections do not have.
        """
        decl = ProjectionDecl(
            name, channel=channel, apply=apply, **_options("projection", ProjectionDecl, options)
        )
        self.add_projection(decl)
        if apply is not None:
            return apply

        def register(function: H) -> H:
            decl.apply = function
            return function

        return register

    @_documented(SagaDecl, exclude=("channel", "start_on"))
    def saga(self, name: str, *, channel: str, start_on: str, **options: Any) -> SagaDecl:
        """Declare a saga; add its steps in order with ``.step(name, action=..., ...)``.

        Example:
            >>> topo = Topology("shop")
            >>> topo.channel("orders")
            >>> saga = topo.saga("order", channel="orders", start_on="order.placed")
            >>> saga.step("reserve", action="stock.reserve", compensation="stock.release")

        Args:
            name: the saga's name (one word); its consumer is ``$saga.<name>``.
            channel: where its commands go and its replies come back.
            start_on: the topic of the events that start an instance (also
                started by :meth:`reactor.System.start_saga`).
            **options: the options below.

        Raises:
            TypeError: an option that sagas do not have.
        """
        return self.add_saga(
            SagaDecl(name, channel, start_on, **_options("saga", SagaDecl, options))
        )

    # -- running ---------------------------------------------------------------------

    def start(
        self,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        only: Iterable[str] | None = None,
    ) -> System:
        """Validate, then start every channel, consumer and producer.

        Args:
            clock: the clock for timers, backoff and intensity (tests pass a FakeClock).
            seed: seeds the supervisors' backoff jitter, for repeatable runs.
            only: start just these consumers, pools, supervisors (with everything
                under them) and producers; channels are always opened. For worker
                processes that share a topology over a broker.

        Returns:
            The running :class:`~reactor.System`; use it as a context manager to stop it.

        Raises:
            TopologyError: the topology is invalid (nothing was started).
        """
        # system.py depends on the declarations only, so this import is not a circle: the
        # builder sits above the runtime, which must not import it.
        from reactor.runtime.system import System  # noqa: PLC0415 - see above

        return System(self, clock=clock, seed=seed, only=only).start()

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], *, import_code: bool = True) -> Topology:
        """Load a topology from a TOML file and validate it.

        The one way to read a topology file; the format is described in
        :mod:`reactor.runtime.toml`.

        Args:
            path: the TOML file.
            import_code: import the handler and source modules the file names.
                False runs no user code (what ``reactor graph`` does): the
                topology can be drawn and validated, not started.

        Returns:
            A validated topology with ``source`` set to ``path``.

        Raises:
            TopologyError: the file is missing, unreadable or invalid. ``problems``
                lists every problem found, each naming the file, table and key (and
                the line, when it can be found) and what to do.

        Thread-safety: safe; handler modules are imported under a lock.
        """
        return toml.load(path, cls, import_code=import_code)
