"""Every demo runs: from the CLI, as a script, under a terminal, and does what it says."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import terminal

from reactor.demos import DEMOS
from reactor.faces.cli import main
from reactor.runtime.topology import Topology
from reactor.testing import wait_for

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\r")


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


def test_demo_lists_every_demo_on_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(DEMOS)
    assert set(DEMOS) == {"sensors", "orders", "fanout"}


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_runs_for_a_duration(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", name, "--duration", "2", "--no-dashboard"]) == 0
    status = capsys.readouterr().out.strip().splitlines()
    assert status[-1].startswith(f"{name} stopped")


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_script_runs(name: str) -> None:
    script = ROOT / "demos" / f"{name}.py"
    result = subprocess.run(
        [sys.executable, str(script), "--duration", "0.5", "--no-dashboard"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{name} stopped" in result.stdout


def test_sensors_demo_under_a_terminal_shows_the_tree_and_restarts() -> None:
    master, slave = os.openpty()
    # A known window size: rich reads it from the terminal.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    env = _env()
    env["TERM"] = "xterm-256color"
    for variable in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(variable, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "reactor", "demo", "sensors", "--duration", "3"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    output = bytearray()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        os.close(master)
    screen = ANSI.sub("", output.decode("utf-8", "replace"))
    assert "\x1b" in output.decode("utf-8", "replace"), "not drawn as a live terminal view"
    assert "supervision" in screen
    assert "$root" in screen
    assert "detection supervisor" in screen
    assert re.search(r"detector consumer ● \w+ +↻ [1-9]\d* restarts", screen), screen[-3000:]
    assert "↻ restarted detector" in screen


# -- what each demo shows --------------------------------------------------------------


def test_sensors_restart_alert_and_dead_letter() -> None:
    system = DEMOS["sensors"].build().start()
    try:
        wait_for(lambda: system.metrics().actor("detector").restarts >= 1, timeout=10)
        wait_for(lambda: system.metrics().channel("telemetry").dead_lettered >= 1, timeout=10)
        wait_for(lambda: system.metrics().actor("dead-letters").handled >= 1, timeout=10)
        assert system.metrics().channel("telemetry").published > 0
    finally:
        system.stop(timeout=10)


def test_orders_saga_ships_compensates_and_keeps_the_read_model() -> None:
    system = DEMOS["orders"].build().start()
    panels = DEMOS["orders"].panels
    assert panels is not None
    try:
        ((title, render),) = panels(system)

        def counts() -> Any:
            return system.projection("order-view").state.get("counts", {})

        wait_for(lambda: counts().get("shipped", 0) >= 1, timeout=10, message="nothing shipped")
        wait_for(lambda: counts().get("cancelled", 0) >= 1, timeout=10, message="no compensation")
        wait_for(lambda: system.metrics().actor("payments").restarts >= 1, timeout=10)
        (sagas,) = system.metrics().sagas
        assert sagas.completed >= 1
        assert sagas.compensated >= 1
        assert "projection" in title
        assert render() is not None
    finally:
        system.stop(timeout=10)
    assert system.projection("order-view").state["mismatched"] == 0, "a saga lost its correlation"


def test_the_orders_read_model_survives_a_restart_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    args = ["demo", "orders", "--backend", url, "--duration", "1", "--no-dashboard"]
    totals = []
    for _ in range(2):
        assert main(args) == 0
        with DEMOS["orders"].build(backend=url).start() as system:
            totals.append(sum(system.projection("order-view").state["counts"].values()))
    assert 0 < totals[0] < totals[1], totals  # the second run went on from the first
    assert main(["demo", "sensors", "--backend", url]) == 2
    assert "--backend is for: orders" in capsys.readouterr().err


def test_the_orders_demo_killed_mid_saga_resumes_and_ends_its_sagas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    command = [sys.executable, "-m", "reactor", "demo", "orders", "--backend", url, "--json"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=_env(), text=True
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # one metrics snapshot per second
            sagas = json.loads(line)["sagas"]
            if sagas and sagas[0]["running"] >= 1 and sagas[0]["completed"] >= 3:
                break
        process.send_signal(signal.SIGKILL)  # mid-saga: one is open at least
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
    system = DEMOS["orders"].build(backend=url).start()
    try:
        ((_, view),) = DEMOS["orders"].panels(system)
        before = str(view.summary())
        assert before.startswith("resumed "), before
        ended = ("completed", "compensated")

        def all_ended() -> bool:
            line = str(view.summary()).split("orders:")[0]
            return "…" not in line and any(word in line for word in ended)

        wait_for(all_ended, timeout=20, message=f"the resumed sagas never ended: {before}")
        assert sum(system.projection("order-view").state["counts"].values()) > 0
    finally:
        system.stop(timeout=10)


def test_fanout_pool_scales_up_under_a_burst() -> None:
    system = DEMOS["fanout"].build().start()
    try:

        def members() -> int:
            return sum(1 for actor in system.metrics().actors if actor.kind == "member")

        wait_for(lambda: members() >= 2, timeout=10, message="the pool never scaled up")
        groups = {group.name for group in system.metrics().channel("feed").groups}
        assert groups == {"indexer", "workers", "forwarder"}
    finally:
        system.stop(timeout=15)


def test_a_presenter_drives_the_sensors_demo_with_keys() -> None:
    def shows(pattern: str) -> Callable[[terminal.Screen], bool]:
        return lambda screen: re.search(pattern, screen.text(), re.M) is not None

    def flooded(screen: terminal.Screen) -> bool:
        match = re.search(r"^telemetry +memory +([\d.]+)(k?)", screen.text(), re.M)
        return match is not None and float(match.group(1)) * (1000 if match.group(2) else 1) >= 1500

    steps = [
        (shows(r"^▸ detector"), "c"),
        (shows(r"CrashRequested: detector: crashed by a key press"), "\t\t\t\t"),
        (shows(r"^▸ sensor-1 producer"), "p"),
        (shows(r"^▸ sensor-1 paused"), "p"),
        (shows(r"^» resumed sensor-1"), "+"),
        (shows(r"^» sensor-1: 20 events/s"), "-"),
        (shows(r"^» sensor-1: 10 events/s"), "f"),
        (shows(r"^» flooding telemetry: sensor-1 sends 1500 events at once"), ""),
        (flooded, "q"),
    ]
    headers: set[str] = set()
    argv = [sys.executable, "-m", "reactor", "demo", "sensors"]
    code, screen = terminal.run(
        argv, 100, 40, steps=steps, timeout=90, on_screen=lambda s: headers.add(s.lines()[0])
    )
    assert code == 0, screen.text()
    # q drained, then stopped: the header said so before the dashboard ended.
    assert any(h.startswith(("sensors  draining…", "sensors  stopped")) for h in headers)


def test_the_shop_demo_heals_from_its_declared_chaos() -> None:
    """demos/shop.toml at full speed: billing crashes and heals, the mailer pool scales."""
    try:
        topology = Topology.from_toml(ROOT / "demos" / "shop.toml")
        orders = sys.modules["shop_handlers"].ORDERS
    finally:
        sys.modules.pop("shop_handlers", None)
    for producer in topology.producers:
        producer.rate = None
    for consumer in topology.consumers():
        if consumer.name == "auditor":
            consumer.chaos = (
                None  # its outage starts at 5 s: tested in tests/test_chaos_declared.py
            )
    system = topology.start()
    members = 0
    try:

        def settled() -> bool:
            nonlocal members
            metrics = system.metrics()
            members = max(members, sum(1 for a in metrics.actors if a.kind == "member"))
            return system.is_idle()

        wait_for(settled, timeout=60, message="the shop never settled")
        metrics = system.metrics()
    finally:
        system.stop(timeout=10)
    assert metrics.actor("billing").restarts >= 1, "billing never crashed"
    assert members >= 2, "the mailer pool never scaled up"
    assert metrics.channel("orders").published == 2 * orders
    assert metrics.channel("audit").acked == orders
    assert metrics.channel("orders").dead_lettered == 0
