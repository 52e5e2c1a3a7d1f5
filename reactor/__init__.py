"""reactor: an event-driven runtime for Python on the actor model.

Producers, channels and consumers each run as an isolated actor and exchange
immutable events through mailboxes; supervisors restart what fails.

    >>> import reactor
    >>> topo = reactor.Topology("shop")
"""

from __future__ import annotations

import logging

from reactor import errors
from reactor.channels.backend import ChannelMetrics, DeadLetter, GroupMetrics
from reactor.channels.gate import Overflow
from reactor.channels.sagas import SagaInstance, SagaStep
from reactor.clock import Clock, SystemClock
from reactor.errors import *  # noqa: F403  (every error is public: errors.__all__ lists them once)
from reactor.messages.codecs import CloudEventsCodec, Codec, JsonCodec
from reactor.messages.control import ErrorInfo
from reactor.messages.event import Event
from reactor.messages.freeze import FrozenDict, freeze, thaw
from reactor.messages.topics import TopicPattern
from reactor.runtime.aio import AsyncSystem
from reactor.runtime.chaos import Chaos
from reactor.runtime.consumer import Delivery, current_delivery
from reactor.runtime.metrics import (
    ActorMetrics,
    Health,
    ProjectionMetrics,
    SagaMetrics,
    SystemMetrics,
)
from reactor.runtime.pool import PoolScaling
from reactor.runtime.projections import ProjectionSnapshot
from reactor.runtime.scheduling import Delayed
from reactor.runtime.system import System
from reactor.runtime.topology import Topology
from reactor.supervision.strategy import (
    Backoff,
    OneForAll,
    OneForOne,
    RestartType,
    RestForOne,
    Retry,
    Strategy,
)

__version__ = "0.1.0"

logging.getLogger("reactor").addHandler(logging.NullHandler())

__all__ = [
    "ActorMetrics",
    "AsyncSystem",
    "Backoff",
    "ChannelMetrics",
    "Chaos",
    "Clock",
    "CloudEventsCodec",
    "Codec",
    "DeadLetter",
    "Delayed",
    "Delivery",
    "ErrorInfo",
    "Event",
    "FrozenDict",
    "GroupMetrics",
    "Health",
    "JsonCodec",
    "OneForAll",
    "OneForOne",
    "Overflow",
    "PoolScaling",
    "ProjectionMetrics",
    "ProjectionSnapshot",
    "RestForOne",
    "RestartType",
    "Retry",
    "SagaInstance",
    "SagaMetrics",
    "SagaStep",
    "Strategy",
    "System",
    "SystemClock",
    "SystemMetrics",
    "TopicPattern",
    "Topology",
    "__version__",
    "current_delivery",
    "freeze",
    "thaw",
]
__all__ += errors.__all__
