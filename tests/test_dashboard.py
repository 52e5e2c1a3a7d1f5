"""The dashboard shows what the metrics say; metrics export speaks JSON and Prometheus."""

from __future__ import annotations

import io
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, cast

import attrs
import pytest
import terminal
from rich.console import Console

import reactor
from reactor.actors.counters import LatencySnapshot
from reactor.faces.dashboard import Dashboard, sparkline
from reactor.faces.export import metrics_json, prometheus_text, serve_metrics
from reactor.testing import wait_for


class Boom(RuntimeError):
    """What the crashing consumer raises."""


@pytest.fixture
def system() -> Iterator[reactor.System]:
    """A system with a restart, a dead letter and a backlog to show.

    ``crashy`` fails on the event "boom" every time: two deliveries, two restarts
    (``failure_threshold=1``: each failure is also a consumer failure), then the
    event is dead-lettered. ``stuck`` holds its first event until the
    test ends, so the events behind it wait in the ``slow`` channel's backlog.
    """
    release = threading.Event()
    topo = reactor.Topology("dash")
    topo.channel("work", capacity=100)
    topo.channel("slow", capacity=10)

    def crashy(event: reactor.Event) -> None:
        if event.data == "boom":
            raise Boom("cannot handle boom")

    strategy = reactor.OneForOne(
        max_restarts=50, within_s=10, backoff=reactor.Backoff(min_s=0.01, max_s=0.02)
    )
    with topo.supervisor("workers", strategy) as sup:
        sup.consumer(
            "crashy",
            crashy,
            channel="work",
            pattern="job.#",
            max_deliveries=2,
            failure_threshold=1,
        )
        sup.pool(
            "helpers", lambda event: None, channel="work", pattern="job.#", min_size=2, max_size=2
        )

    def stuck(event: reactor.Event) -> None:
        release.wait(10)

    topo.consumer("stuck", stuck, channel="slow", prefetch=1)
    topo.consumer("dead", lambda event: None, channel="$system", pattern="$deadletter")
    running = topo.start()
    try:
        for n in range(5):
            running.publish("work", "job.ok", n)
        running.publish("work", "job.bad", "boom")
        for n in range(4):
            running.publish("slow", "slow.item", n)
        wait_for(
            lambda: running.metrics().channel("work").dead_lettered >= 1,
            message="the poison event was never dead-lettered",
        )
        wait_for(lambda: running.metrics().channel("slow").backlog >= 3, message="no backlog")
        yield running
    finally:
        release.set()
        running.stop(timeout=10)


def _text(
    dashboard: Dashboard, metrics: reactor.SystemMetrics, width: int, height: int | None = None
) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    dashboard.console = console
    console.print(dashboard.render(metrics, height=height))
    return console.export_text()


def _row(text: str, first: str) -> list[str]:
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == first:
            return words
    raise AssertionError(f"no row starting with {first!r} in:\n{text}")


def test_render_shows_restarts_backlog_and_dead_letters(system: reactor.System) -> None:
    metrics = system.metrics()
    crashy = metrics.actor("crashy")
    slow = metrics.channel("slow")
    assert crashy.restarts >= 1

    text = _text(Dashboard(system), metrics, 120)

    # The supervision tree, with the restart count the metrics report.
    assert "supervision" in text
    assert "$root" in text
    assert f"↻ {crashy.restarts} restarts" in text
    assert "helpers ×2" in text  # noqa: RUF001 - a pool shows its member count
    # The channel table's backlog column for "slow" is the figure from the metrics.
    row = _row(text, "slow")
    assert row[1:6] == [
        "memory",
        str(slow.published),
        str(slow.backlog),
        str(slow.scheduled),
        str(slow.in_flight),
    ]
    # Plain words: the unsettled events of the capacity, no "dlv", "mbr" or "fill".
    assert row[6] == f"{slow.unsettled}/{slow.capacity}"
    assert not re.search(r"\b(dlv|mbr|fill)\b", text)
    # A group row: its delivered count in the events column, under its channel.
    group = metrics.group("slow", "stuck")
    assert _row(text, "└")[0:3] == ["└", "crashy", str(metrics.group("work", "crashy").delivered)]
    assert f"└ stuck {group.delivered} {group.backlog}" in " ".join(text.split())
    # The dead letter: counted in the header and the table, listed in the events panel.
    assert f"dead letters {sum(c.dead_lettered for c in metrics.channels)}" in text
    work = metrics.channel("work")
    # Dead-lettered, and kept in the channel's store (the last two columns).
    assert _row(text, "work")[-2:] == [str(work.dead_lettered), str(work.stored_dead_letters)]
    assert work.stored_dead_letters == work.dead_lettered
    assert "☠ dead letter job.bad" in text
    assert "Boom: cannot handle boom" in text
    # ConsumerFailing names the error it gave up on first.
    assert "ConsumerFailing: 1 new event failed, last: Boom: cannot handle boom" in text


def test_render_fits_80_columns(system: reactor.System) -> None:
    dashboard = Dashboard(system)
    metrics = system.metrics()
    for width in (80, 100, 200):
        text = _text(dashboard, metrics, width)
        too_long = [line for line in text.splitlines() if len(line) > width]
        assert not too_long, f"lines wider than {width}: {too_long}"
        assert "supervision" in text
        assert "channels" in text


def test_a_short_terminal_keeps_the_important_sections(system: reactor.System) -> None:
    dashboard = Dashboard(system)
    metrics = system.metrics()
    full = _text(dashboard, metrics, 80).splitlines()
    assert "$root supervisor" in "\n".join(full)  # the whole tree, with room
    lines = _text(dashboard, metrics, 80, height=23).splitlines()
    assert len(lines) <= 23 < len(full)
    text = "\n".join(lines)
    # Header, problems and events, channels, consumers: in that order of priority.
    assert lines[0].startswith("dash  running")
    assert lines[1].startswith("restarts ")
    assert "problems and latest events" in text
    assert "☠ dead letter job.bad" in text
    assert _row(text, "work")[1] == "memory"
    assert "consumers and producers" in text
    # The tree gave way first: one summary line instead of a branch per actor.
    assert "$root supervisor" not in text
    assert re.search(r"^supervision  \d+ actors", text, re.M), text


def test_the_header_keeps_its_height_when_health_flips() -> None:
    healthy = reactor.Health("ok")
    sick = reactor.Health("degraded", ("consumer 'a' is restarting", "channel 'b' is full (9/9)"))
    system = cast(Any, _Stub(_snapshot(3)))
    heights = []
    for health in (healthy, sick):
        system.health_value = health
        text = _text(Dashboard(system, clock=lambda: 0.0), _snapshot(3), 80)
        lines = text.splitlines()
        heights.append(
            next(n for n, line in enumerate(lines) if line.startswith("problems and latest"))
        )
        assert lines[1].startswith("restarts 0")
    assert heights == [2, 2]
    assert "health degraded: 2 problems, first: consumer 'a' is" in text.splitlines()[1]
    assert "! channel 'b' is full (9/9)" in text  # every problem listed below the header


def test_user_text_is_shown_not_obeyed() -> None:
    event = reactor.Event.create(
        "$system.actor.failed",
        {
            "actor": "bad\x1b[2J",
            "error_type": "Boom",
            "message": "\x1b]8;;http://x\x07link\x1b[31m",
        },
    )
    system = cast(Any, _Stub(_snapshot(1), recent=(event,)))
    text = _text(Dashboard(system, clock=lambda: 0.0), _snapshot(1), 120)
    assert "\x1b" not in text
    assert "bad\\x1b[2J" in text
    assert "Boom: \\x1b]8;;http://x\\x07link" in text


def test_a_long_lifecycle_message_wraps_instead_of_being_cut() -> None:
    message = "the payment gateway said no " * 6 + "THE END"
    event = reactor.Event.create(
        "$system.actor.failed", {"actor": "payments", "error_type": "Declined", "message": message}
    )
    system = cast(Any, _Stub(_snapshot(1), recent=(event,)))
    text = _text(Dashboard(system, clock=lambda: 0.0), _snapshot(1), 80)
    assert "THE END" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_a_producer_only_worker_shows_what_it_published() -> None:
    snapshot = _snapshot(42, kind="producer", supervisor="$producers")
    system = cast(Any, _Stub(snapshot))
    text = _text(Dashboard(system, clock=lambda: 0.0), snapshot, 80)
    assert "published 42" in text.splitlines()[0]
    assert "handled" not in text.splitlines()[0]
    assert _row(text, "c")[:2] == ["c", "producer"]


def test_the_header_shows_each_projections_lag() -> None:
    snapshot = _snapshot(7)
    lagging = reactor.ProjectionMetrics(
        name="stock", channel="orders", position=9, folded=7, failed=0, lag=3, checkpoints=1
    )
    snapshot = attrs.evolve(snapshot, projections=(lagging,))
    text = _text(Dashboard(cast(Any, _Stub(snapshot)), clock=lambda: 0.0), snapshot, 80)
    assert "stock lag 3" in text.splitlines()[1]


def test_status_and_json_lines(system: reactor.System) -> None:
    dashboard = Dashboard(system)
    metrics = system.metrics()
    line = dashboard.status_line(metrics, system.health())
    assert "\n" not in line
    assert f"restarts {sum(a.restarts for a in metrics.actors)}" in line
    assert f"backlog {sum(c.backlog for c in metrics.channels)}" in line
    assert "dead letters 1" in line

    decoded = json.loads(dashboard.json_line(metrics))
    assert decoded["name"] == "dash"
    assert {channel["name"] for channel in decoded["channels"]} >= {"work", "slow", "$system"}
    crashy = next(actor for actor in decoded["actors"] if actor["name"] == "crashy")
    assert crashy["restarts"] == metrics.actor("crashy").restarts
    assert set(crashy["latency"]) >= {"p50", "p99"}


def test_run_lines_writes_one_json_snapshot_per_interval(system: reactor.System) -> None:
    buffer = io.StringIO()
    dashboard = Dashboard(system, console=Console(file=buffer, width=80))
    stop = threading.Event()
    runner = threading.Thread(
        target=dashboard.run_lines, args=(None, stop), kwargs={"json": True, "interval_s": 0.05}
    )
    runner.start()
    try:
        wait_for(lambda: buffer.getvalue().count("\n") >= 3, message="no JSON lines written")
    finally:
        stop.set()
        runner.join(5)
    assert not runner.is_alive()
    lines = buffer.getvalue().splitlines()
    assert all(json.loads(line)["name"] == "dash" for line in lines)


def test_live_run_stops_on_its_event(system: reactor.System) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, color_system=None)
    dashboard = Dashboard(system, console=console, refresh_per_second=50)
    assert dashboard.refresh_per_second == 10  # capped: drawing must stay cheap
    stop = threading.Event()
    runner = threading.Thread(target=dashboard.run, kwargs={"stop_event": stop})
    runner.start()
    wait_for(lambda: "supervision" in buffer.getvalue(), message="no frame drawn")
    stop.set()
    runner.join(5)
    assert not runner.is_alive()


# -- rates without a system ----------------------------------------------------------


def _snapshot(
    handled: int, *, kind: str = "consumer", supervisor: str = "$consumers"
) -> reactor.SystemMetrics:
    latency = LatencySnapshot(count=handled, window=0, p50=0.0, p99=0.0, max=0.0, mean=0.0)
    consumer = reactor.ActorMetrics(
        name="c", kind=kind, supervisor=supervisor, state="running", restarts=0,
        received=handled, handled=handled, failed=0, in_flight=0, mailbox=0, latency=latency,
    )  # fmt: skip
    return reactor.SystemMetrics(
        name="s", state="running", uptime_s=1.0, actors=(consumer,), channels=()
    )


class _Stub:
    """What a dashboard reads of a system, fixed: a snapshot, a health, lifecycle events."""

    def __init__(
        self, metrics: reactor.SystemMetrics, recent: tuple[reactor.Event, ...] = ()
    ) -> None:
        self.snapshot = metrics
        self.recent = recent
        self.health_value = reactor.Health("ok")

    def metrics(self) -> reactor.SystemMetrics:
        return self.snapshot

    def health(self) -> reactor.Health:
        return self.health_value

    def recent_lifecycle(self, limit: int) -> tuple[reactor.Event, ...]:
        return self.recent[-limit:]


def test_rates_come_from_successive_handled_counters() -> None:
    now = [100.0]
    dashboard = Dashboard(cast(Any, None), clock=lambda: now[0], history_s=5)
    for handled in (0, 10, 20, 30, 40):  # 10 events every half second: 20 ev/s
        dashboard.observe(_snapshot(handled))
        now[0] += 0.5
    assert dashboard.rate("c") == pytest.approx(20.0)
    assert dashboard.history("c") == (20.0,)  # one whole second so far; the next is open
    for _ in range(10):  # idle: the rate falls to zero, the history keeps 5 seconds
        dashboard.observe(_snapshot(40))
        now[0] += 0.5
    assert dashboard.rate("c") == 0.0
    assert len(dashboard.history("c")) == 5
    assert dashboard.rate("unknown") == 0.0


def test_sparkline() -> None:
    assert sparkline([], 4) == "    "
    assert sparkline([0, 0], 4) == "    "
    assert sparkline([1, 2, 4, 8], 4) == "▁▂▄█"
    assert sparkline([8, 1], 4) == "  █▁"
    assert len(sparkline([float(n) for n in range(60)], 20)) == 20


# -- export ----------------------------------------------------------------------------


def test_prometheus_text_format(system: reactor.System) -> None:
    metrics = system.metrics()
    text = prometheus_text(metrics)
    assert text.endswith("\n")
    work = metrics.channel("work")
    assert (
        f'reactor_channel_published_total{{system="dash",channel="work"}} {work.published}\n'
        in text
    )
    assert "# TYPE reactor_channel_published_total counter" in text
    assert "# TYPE reactor_channel_backlog gauge" in text
    assert (
        f'reactor_channel_backlog{{system="dash",channel="slow"}} {metrics.channel("slow").backlog}'
        in text
    )
    assert 'reactor_channel_dead_lettered_total{system="dash",channel="work"} 1' in text
    assert 'reactor_channel_stored_dead_letters{system="dash",channel="work"} 1' in text
    assert re.search(r'reactor_actor_restarts_total\{system="dash",actor="crashy",kind="consumer",'
                     r'supervisor="workers"\} [1-9]', text)  # fmt: skip
    assert 'reactor_handler_latency_seconds{system="dash",actor="crashy",quantile="0.99"}' in text
    # Every sample belongs to a family announced by HELP and TYPE lines.
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    for line in text.splitlines():
        if not line.startswith("#"):
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            assert name in families or re.sub(r"_(count|sum)$", "", name) in families, line


def test_prometheus_label_values_are_escaped() -> None:
    snapshot = _snapshot(1)
    odd = reactor.SystemMetrics(
        name='a "b"\\c\n', state="running", uptime_s=0.0, actors=snapshot.actors, channels=()
    )
    assert 'system="a \\"b\\"\\\\c\\n"' in prometheus_text(odd)


def test_metrics_served_over_http(system: reactor.System) -> None:
    server = serve_metrics(system, 0)
    try:
        assert server.thread.name == "reactor-metrics"
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = response.read().decode()
        assert 'reactor_channel_published_total{system="dash",channel="slow"} 4' in body
        base = server.url.rsplit("/", 1)[0]
        with urllib.request.urlopen(base + "/metrics.json", timeout=5) as response:
            assert json.loads(response.read())["name"] == "dash"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/nowhere", timeout=5)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.close()
    assert not server.thread.is_alive()


def test_metrics_json_is_one_line(system: reactor.System) -> None:
    line = metrics_json(system.metrics())
    assert "\n" not in line
    assert json.loads(line)["state"] == "running"


# -- under a real terminal -------------------------------------------------------------


def _sensors(duration: float) -> list[str]:
    return [sys.executable, "-m", "reactor", "demo", "sensors", "--duration", str(duration)]


def test_sensors_at_80x24_shows_every_section_and_the_header_stays_put() -> None:
    frames = []

    def check(screen: terminal.Screen) -> None:
        lines = screen.lines()
        # A whole frame (a chunk may end mid-frame): from the header to the key line.
        if lines[0].startswith("sensors  ") and any(
            line.startswith("keys tab select") for line in lines
        ):
            frames.append(lines)

    code, screen = terminal.run(_sensors(5), 80, 24, on_screen=check)
    assert code == 0
    assert screen.wrote_escapes, "not drawn as a live terminal view"
    assert frames, screen.text()
    for lines in frames:  # the header is two lines, whatever the health says
        assert lines[1].startswith("restarts "), lines
        assert lines[2].startswith("problems and latest events"), lines
    # The last whole frame (what the CLI says after the dashboard ends comes below it).
    lines = frames[-1]
    text = "\n".join(lines)
    assert re.search(r"^restarts [1-9]\d*  dead letters \d+  health", lines[1]), text
    assert "restarted detector" in text
    # Channels with their backend, consumers with producers, the tree in one line.
    assert re.search(r"^telemetry +memory +\d", text, re.M), text
    assert re.search(r"^ └ detector +\d", text, re.M), text
    assert "consumers and producers" in text
    assert re.search(r"^▸ detector +\d", text, re.M), text
    assert re.search(r"^supervision  10 actors", text, re.M), text


def test_sensors_at_160x50_has_room_for_the_whole_tree_beside_the_consumers() -> None:
    frames = []

    def check(screen: terminal.Screen) -> None:
        if screen.lines()[0].startswith("sensors  ") and "keys tab select" in screen.text():
            frames.append(screen.text())

    code, screen = terminal.run(_sensors(4), 160, 50, on_screen=check)
    assert code == 0
    assert frames, screen.text()
    text = frames[-1]
    assert re.search(r"^supervision +consumers and producers", text, re.M), text
    assert re.search(r"detector consumer ● \w+ +↻ [1-9]\d* restarts", text), text
    assert re.search(r"sensor-1 producer ● \w+ .*published \d+", text), text
    assert "more line" not in text  # nothing had to give way
    assert re.search(r"^\$system +memory +\d", text, re.M), text
