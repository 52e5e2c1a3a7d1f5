"""Metrics for machines: JSON snapshots and the Prometheus text exposition format.

* :func:`metrics_dict` / :func:`metrics_json`: a :class:`~reactor.SystemMetrics`
  snapshot as plain data, for log shippers (``reactor run --json``).
* :func:`prometheus_text`: the same snapshot in Prometheus text format 0.0.4.
* :func:`serve_metrics`: a tiny HTTP server on loopback that answers
  ``GET /metrics`` (Prometheus), ``GET /metrics.json`` and ``GET /health``.

Nothing here prints: the server's request log, and a client that hangs up
mid-answer, go to the ``reactor`` logger at debug level.

Why the standard library's ``ThreadingHTTPServer`` and not ``prometheus-client``:
the exposition text is already written here from one :class:`SystemMetrics`
snapshot (``prometheus-client`` would need a custom collector translating the
same snapshot into its metric families, a second place for every metric name),
the server must also answer ``/metrics.json`` and ``/health``, which
``prometheus-client`` does not serve, and its ``start_http_server`` has no
per-connection timeout either, so the defence against a slow client would be
ours to write anyway. It would be one more dependency for none of that. So:
each connection is served in its own thread, with a socket timeout
(:data:`CLIENT_TIMEOUT_S`) so a client that sends half a request is dropped,
at most :data:`MAX_CONNECTIONS` at once (more are refused, so a flood cannot
pile up threads), and :meth:`MetricsServer.close` shuts the open connections
down instead of waiting for their clients.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from reactor.channels.sagas import SAGA_STATES
from reactor.runtime.metrics import SystemMetrics

if TYPE_CHECKING:
    from reactor.runtime.system import System

__all__ = [
    "CLIENT_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "PROMETHEUS_CONTENT_TYPE",
    "MetricsServer",
    "metrics_dict",
    "metrics_json",
    "prometheus_text",
    "serve_metrics",
]

logger = logging.getLogger("reactor")

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds a client may take to send its request or read the answer before it is dropped.
CLIENT_TIMEOUT_S = 5.0
#: Connections served at once; more are closed on arrival (a scraper needs one).
MAX_CONNECTIONS = 32

# Consumers and pool members are the actors whose handler latency means something;
# other kinds would only add series that stay at zero forever.
_HANDLER_KINDS = ("consumer", "member")


def metrics_dict(metrics: SystemMetrics) -> dict[str, Any]:
    """A snapshot as plain dicts, lists and scalars, ready for :func:`json.dumps`.

    Args:
        metrics: a snapshot from :meth:`System.metrics`.

    Returns:
        The snapshot's fields, recursively converted; tuples become lists.
    """
    return dict(metrics.to_dict())


def metrics_json(metrics: SystemMetrics) -> str:
    """A snapshot as one line of JSON (no newline inside), for JSON-lines logs.

    Non-finite floats are written as ``null`` so that strict parsers accept the line.
    """
    return json.dumps(_finite(metrics_dict(metrics)), separators=(",", ":"), default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# -- Prometheus ----------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Family:
    """One metric family: its HELP and TYPE lines, then its samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help_text = help_text
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add(self, labels: dict[str, str], value: float, suffix: str = "") -> None:
        self.samples.append((self.name + suffix, labels, value))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} {self.kind}"
        for name, labels, value in self.samples:
            yield f"{name}{_labels(labels)} {_number(value)}"


# One row a metric family, named reactor_{part}_{field} (a counter's ends in _total):
# (the part of the snapshot it counts, its field there, its type, its help text).
_FAMILIES = (
    ("channel", "published", "counter", "Events published into the channel."),
    ("channel", "delivered", "counter", "Deliveries to consumers, redeliveries included."),
    ("channel", "acked", "counter", "Deliveries acknowledged by a consumer."),
    ("channel", "dropped", "counter", "Events dropped by the overflow policy."),
    ("channel", "dead_lettered", "counter", "Events sent to $deadletter after max_deliveries."),
    ("channel", "stored_dead_letters", "gauge", "Dead letters the channel's store keeps now."),
    ("channel", "unrouted", "counter", "Events that matched no group's pattern."),
    ("channel", "backlog", "gauge", "Events waiting for a consumer."),
    ("channel", "scheduled", "gauge", "Delayed events waiting for their due time."),
    ("channel", "in_flight", "gauge", "Events delivered and not yet acknowledged."),
    (
        "channel",
        "unsettled",
        "gauge",
        "Events published and not yet settled (counts against capacity).",
    ),
    ("channel", "capacity", "gauge", "Most unsettled events the channel holds."),
    ("group", "delivered", "counter", "Deliveries to the group's members."),
    ("group", "acked", "counter", "Deliveries the group acknowledged."),
    ("group", "nacked", "counter", "Deliveries that failed in a handler."),
    ("group", "redelivered", "counter", "Deliveries made again after a failure or a crash."),
    ("group", "dead_lettered", "counter", "The group's events sent to $deadletter."),
    ("group", "backlog", "gauge", "Events waiting for one of the group's members."),
    ("group", "in_flight", "gauge", "Events the group's members hold."),
    ("group", "members", "gauge", "Members in the group."),
    ("actor", "restarts", "counter", "Times the actor was restarted by its supervisor."),
    ("actor", "received", "counter", "Events the actor received."),
    ("actor", "handled", "counter", "Events the actor handled (published, for a producer)."),
    ("actor", "failed", "counter", "Events whose handler raised."),
    ("actor", "in_flight", "gauge", "Events the actor holds right now."),
    ("actor", "mailbox", "gauge", "Messages waiting in the actor's mailbox."),
)


def prometheus_text(metrics: SystemMetrics) -> str:
    """A snapshot in the Prometheus text exposition format (version 0.0.4).

    Metric names start with ``reactor_``: ``reactor_channel_*{channel}``,
    ``reactor_group_*{channel,group}``, ``reactor_actor_*{actor,kind,supervisor}``,
    ``reactor_actor_state{actor,state}`` (1 for the current state) and
    ``reactor_handler_latency_seconds`` (a summary with quantiles 0.5 and 0.99
    over each consumer's last calls) and ``reactor_saga_instances{saga,channel,state}``.
    Every series carries a ``system`` label.

    Args:
        metrics: a snapshot from :meth:`System.metrics`.

    Returns:
        The exposition text, ending with a newline.
    """
    system = {"system": metrics.name}
    families: list[_Family] = []

    uptime = _Family("reactor_uptime_seconds", "gauge", "Seconds since the system started.")
    uptime.add(system, metrics.uptime_s)
    families.append(uptime)

    # The labelled snapshots of each part, for the rows of _FAMILIES.
    parts: dict[str, list[tuple[dict[str, str], Any]]] = {
        "channel": [({**system, "channel": c.name}, c) for c in metrics.channels],
        "group": [
            ({**system, "channel": c.name, "group": g.name}, g)
            for c in metrics.channels
            for g in c.groups
        ],
        "actor": [
            ({**system, "actor": a.name, "kind": a.kind, "supervisor": a.supervisor}, a)
            for a in metrics.actors
        ],
    }
    for part, field, kind, help_text in _FAMILIES:
        suffix = "_total" if kind == "counter" else ""
        family = _Family(f"reactor_{part}_{field}{suffix}", kind, help_text)
        for labels, snapshot in parts[part]:
            family.add(labels, getattr(snapshot, field))
        families.append(family)

    state = _Family("reactor_actor_state", "gauge", "1 for the state each actor is in right now.")
    for actor in metrics.actors:
        state.add({**system, "actor": actor.name, "state": actor.state}, 1)
    families.append(state)

    latency = _Family(
        "reactor_handler_latency_seconds",
        "summary",
        "Handler latency of each consumer; quantiles over its last 1024 calls.",
    )
    for actor in metrics.actors:
        if actor.kind not in _HANDLER_KINDS:
            continue
        labels = {**system, "actor": actor.name}
        snapshot = actor.latency
        latency.add({**labels, "quantile": "0.5"}, snapshot.p50)
        latency.add({**labels, "quantile": "0.99"}, snapshot.p99)
        latency.add(labels, snapshot.count, "_count")
        latency.add(labels, snapshot.mean * snapshot.count, "_sum")
    families.append(latency)

    if metrics.sagas:
        sagas = _Family("reactor_saga_instances", "gauge", "Instances of each saga in each state.")
        for saga in metrics.sagas:
            for saga_state in SAGA_STATES:
                labels = {**system, "saga": saga.name, "channel": saga.channel, "state": saga_state}
                sagas.add(labels, getattr(saga, saga_state))
        families.append(sagas)

    lines = [line for family in families for line in family.lines()]
    return "\n".join(lines) + "\n"


# -- HTTP ----------------------------------------------------------------------------


class MetricsServer(ThreadingHTTPServer):
    """An HTTP server answering metrics requests for one system, a thread per connection.

    Stop it with :meth:`close`, or use it as a context manager.

    Attributes:
        system: the system whose metrics are served.
        thread: the daemon thread, named ``reactor-metrics``, that accepts connections.
    """

    system: System
    thread: threading.Thread
    daemon_threads = True  # a connection's thread never keeps the process alive
    block_on_close = False  # close() ends the connections itself, it does not wait for clients

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._workers: set[threading.Thread] = set()

    @property
    def port(self) -> int:
        """The port actually bound (useful when asked for port 0)."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = self.server_address[0]
        return f"http://{host!s}:{self.port}/metrics"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            if len(self._open) >= MAX_CONNECTIONS:
                full = True
            else:
                full = False
                self._open.add(request)
        if full:
            logger.debug(
                "metrics server: %d connections open; refused %s", MAX_CONNECTIONS, client_address
            )
            self.shutdown_request(request)
            return
        worker = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="reactor-metrics-client",
            daemon=True,
        )
        with self._open_lock:
            self._workers.add(worker)
        worker.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
                self._workers.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal life for a server, not a
        # traceback on the user's terminal (socketserver prints one by default).
        logger.debug("metrics server: connection from %s failed", client_address, exc_info=True)

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, drop open connections, release the socket and join the threads.

        Returns within about ``timeout`` seconds whatever clients do: a connection
        still open (a client that sent half a request) is shut down, not waited for.
        """
        if self.thread.is_alive():
            self.shutdown()
        self.server_close()
        with self._open_lock:
            connections = list(self._open)
            workers = list(self._workers)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout)
        for worker in workers:
            worker.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = CLIENT_TIMEOUT_S  # the socket timeout of each connection (StreamRequestHandler)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        system = self.server.system
        if path in ("/", "/metrics"):
            self._reply(200, PROMETHEUS_CONTENT_TYPE, prometheus_text(system.metrics()))
        elif path == "/metrics.json":
            self._reply(200, "application/json", metrics_json(system.metrics()) + "\n")
        elif path == "/health":
            health = system.health()
            body = json.dumps({"status": health.status, "problems": list(health.problems)})
            # A load balancer only looks at the status code.
            self._reply(200 if health.status == "ok" else 503, "application/json", body + "\n")
        else:
            self._reply(
                404, "text/plain; charset=utf-8", "try /metrics, /metrics.json or /health\n"
            )

    def _reply(self, status: int, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request to stderr; library code never prints.
        logger.debug("metrics server: " + format, *args)


def serve_metrics(system: System, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``system``'s metrics over HTTP from a daemon thread named ``reactor-metrics``.

    ``GET /metrics`` answers Prometheus text, ``GET /metrics.json`` one JSON
    snapshot, ``GET /health`` the health (status 503 unless ``ok``). The server
    binds loopback by default: metrics name every actor and channel, so exposing
    them beyond the host is a decision for the caller.

    Args:
        system: the running system.
        port: TCP port; 0 picks a free one (read it back from ``server.port``).
        host: the address to bind.

    Returns:
        The running server. The caller must stop it: ``server.close()``.

    Raises:
        ValueError: ``port`` is not from 0 to 65535.
        OSError: the port could not be bound.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"metrics port {port!r} is not a TCP port; pass one from 0 to 65535")
    server = MetricsServer((host, port), _MetricsHandler)
    server.system = system
    server.thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name="reactor-metrics",
        daemon=True,
    )
    server.thread.start()
    return server
