"""The metrics endpoint under clients that misbehave: slow, silent, or gone.

One connection that sends half a request must not block ``/metrics`` or
``/health`` for the others, nor ``close()``; a client that hangs up, or a
request that fails, is logged at debug level, never printed as a traceback.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest

import reactor
from reactor.faces import export
from reactor.faces.export import MetricsServer, serve_metrics
from reactor.testing import wait_for


@pytest.fixture
def system() -> Iterator[reactor.System]:
    topo = reactor.Topology("metered")
    topo.channel("orders")
    with topo.start() as running:
        yield running


@pytest.fixture
def server(system: reactor.System) -> Iterator[MetricsServer]:
    running = serve_metrics(system, 0)
    try:
        yield running
    finally:
        running.close()


def half_request(server: MetricsServer) -> socket.socket:
    """A connection that sends the start of a request and then nothing."""
    client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    client.sendall(b"GET /metr")
    return client


def get(server: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:  # /health answers 503 when not ok
        return error.code, error.read().decode()


def test_a_client_sending_half_a_request_does_not_block_the_others(
    server: MetricsServer,
) -> None:
    slow = [half_request(server) for _ in range(3)]
    try:
        status, body = get(server, "/metrics")
        assert status == 200
        assert 'reactor_channel_published_total{system="metered",channel="orders"}' in body
        status, body = get(server, "/health")
        assert status == 200
        assert '"status": "ok"' in body
    finally:
        for client in slow:
            client.close()


def test_close_does_not_wait_for_a_silent_client(system: reactor.System) -> None:
    server = serve_metrics(system, 0)
    slow = half_request(server)
    try:
        wait_for(
            lambda: any(t.name == "reactor-metrics-client" for t in threading.enumerate()),
            message="the server never took the connection",
        )
        closer = threading.Thread(target=server.close)
        closer.start()
        # The client's 5 s socket timeout is not waited for: close() shuts it down.
        closer.join(export.CLIENT_TIMEOUT_S / 2)
        assert not closer.is_alive(), "close() waited for a client that sends nothing"
        assert slow.recv(1024) == b"", "the silent client's connection was left open"
        assert not [t for t in threading.enumerate() if t.name.startswith("reactor-metrics")]
    finally:
        slow.close()


def test_a_silent_client_is_dropped_after_the_socket_timeout(
    system: reactor.System, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export._MetricsHandler, "timeout", 0.2)
    with serve_metrics(system, 0) as server:
        slow = half_request(server)
        try:
            slow.settimeout(10)
            assert slow.recv(1024) == b"", "the server kept a silent client"
        finally:
            slow.close()


def test_connections_past_the_limit_are_refused_not_piled_up(
    system: reactor.System, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "MAX_CONNECTIONS", 2)
    with serve_metrics(system, 0) as server:
        slow = [half_request(server) for _ in range(2)]
        try:
            wait_for(
                lambda: sum(t.name == "reactor-metrics-client" for t in threading.enumerate()) == 2,
                message="the server never took both connections",
            )
            third = half_request(server)
            third.settimeout(10)
            assert third.recv(1024) == b""
            third.close()
        finally:
            for client in slow:
                client.close()
        # Once they are gone the server answers again.
        wait_for(
            lambda: not any(t.name == "reactor-metrics-client" for t in threading.enumerate()),
            message="the slow clients' threads never ended",
        )
        assert get(server, "/metrics")[0] == 200


def test_a_failing_request_or_a_hang_up_prints_no_traceback(
    server: MetricsServer,
    system: reactor.System,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    def broken() -> None:
        raise RuntimeError("metrics exploded")

    monkeypatch.setattr(system, "metrics", broken)
    client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.recv(1024) == b""  # the handler failed: the connection is closed
    client.close()
    # A client that hangs up at once, mid-request.
    gone = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    gone.sendall(b"GET /health HTTP/1.1\r\n")
    gone.close()
    wait_for(
        lambda: not any(t.name == "reactor-metrics-client" for t in threading.enumerate()),
        message="the connections' threads never ended",
    )
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "metrics exploded" not in err


def test_a_port_out_of_range_is_a_value_error(system: reactor.System) -> None:
    with pytest.raises(ValueError, match="99999 is not a TCP port"):
        serve_metrics(system, 99999)
