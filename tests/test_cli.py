"""The ``reactor`` command line: exit codes, targets, graph output, run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactor
from reactor.faces.cli import main
from reactor.testing import wait_for

ROOT = Path(__file__).resolve().parents[1]
SHOP_TOML = ROOT / "demos" / "shop.toml"

APP = """
import reactor

def build():
    topo = reactor.Topology("shop")
    topo.channel("orders", capacity=500)
    topo.channel("mail", capacity=100)
    topo.producer("web", channel="orders", topic="orders.created", source=range(20), rate=200)
    with topo.supervisor("billing-tree", reactor.RestForOne(max_restarts=3, within_s=5)) as sup:
        sup.consumer("billing", bill, channel="orders", pattern="orders.created")
        sup.pool("mailer", send, channel="orders", pattern="orders.billed", output="mail",
                 min_size=1, max_size=3)
    topo.consumer("audit", record, channel="orders", pattern="orders.#", group="audit")
    topo.consumer("outbox", record, channel="mail", pattern="mail.#")
    return topo

def bill(event):
    return ("orders.billed", {"n": event.data})

def send(event):
    return ("mail.sent", {"n": event.data["n"]})

def record(event):
    return None

def explode(event):
    raise RuntimeError("this consumer always fails")

def doomed():
    topo = reactor.Topology("doomed", strategy=reactor.OneForOne(max_restarts=0))
    topo.channel("jobs")
    topo.producer("feed", channel="jobs", topic="jobs.new", source=[1])
    # failure_threshold=1: every failed event is a consumer failure (let it crash)
    topo.consumer("explode", explode, channel="jobs", failure_threshold=1)
    return topo

topology = build()
not_a_topology = 42
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module in the current directory; returns its (unique) name."""
    name = f"cliapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"reactor {reactor.__version__}"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["nonsense"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["demo", "sensors", "--duration", "soon"]) == 2
    assert "expected a number of seconds" in capsys.readouterr().err
    assert main(["demo", "no-such-demo"]) == 2
    assert "no demo named 'no-such-demo'" in capsys.readouterr().err
    assert main(["worker"]) == 2
    assert "TARGET" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_bad_toml_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[channels.orders\ncapacity = 10\n")
    assert main(["run", str(broken), "--duration", "0", "--no-dashboard"]) == 2
    assert "broken.toml" in capsys.readouterr().err
    assert main(["graph", str(broken)]) == 2
    assert "broken.toml" in capsys.readouterr().err


def test_invalid_topology_in_toml_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "wrong.toml"
    bad.write_text(
        textwrap.dedent(
            """
            [channels.orders]
            capacity = 10

            [consumers.billing]
            channel = "nowhere"
            handler = "json:dumps"
            """
        )
    )
    assert main(["graph", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "wrong.toml" in err
    assert "nowhere" in err


def test_missing_targets_exit_2(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "missing.toml"]) == 2
    assert "missing.toml" in capsys.readouterr().err
    assert main(["graph", "no_such_module_here:topology"]) == 2
    assert "no module named 'no_such_module_here'" in capsys.readouterr().err
    assert main(["graph", f"{app}:nothing"]) == 2
    assert "has no attribute 'nothing'" in capsys.readouterr().err
    assert main(["graph", f"{app}:not_a_topology"]) == 2
    assert "must be a reactor.Topology" in capsys.readouterr().err
    assert main(["graph", "just-a-word"]) == 2


def test_graph_tree(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", f"{app}:build"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "topology shop",
        "orders  memory, capacity 500",
        "web  → orders (orders.created)",
        "billing-tree  supervisor rest_for_one, max 3 restarts in 5s",
        "mailer  pool 1..3  ← orders [orders.billed] → mail",
        "audit  consumer  ← orders [orders.#] group audit",
    ):
        assert expected in out, f"{expected!r} not in:\n{out}"
    # The tree nests the pool under its supervisor.
    lines = out.splitlines()
    billing = next(i for i, line in enumerate(lines) if "billing-tree" in line)
    mailer = next(i for i, line in enumerate(lines) if "mailer" in line)
    assert mailer > billing
    assert lines[mailer].index("mailer") > lines[billing].index("billing-tree")


def test_graph_mermaid(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", f"{app}:topology", "--format", "mermaid"]) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "flowchart LR"
    assert any(
        line.startswith("subgraph sup_billing_tree") and "rest_for_one" in line for line in lines
    )
    assert lines.count("end") == 1
    assert any(
        line.startswith("p_web") and '-->|"orders.created"| ch_orders' in line for line in lines
    )
    assert any(line.startswith("ch_orders") and '-->|"orders.#"| c_audit' in line for line in lines)
    assert any(line.startswith("c_mailer") and "-.->|returns| ch_mail" in line for line in lines)


@pytest.mark.skipif(not SHOP_TOML.exists(), reason="demos/shop.toml is not in this checkout")
def test_graph_of_the_shop_toml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(SHOP_TOML)]) == 0
    out = capsys.readouterr().out
    assert "topology shop" in out
    assert "billing-tree" in out
    assert main(["graph", str(SHOP_TOML), "--format", "mermaid"]) == 0
    assert "subgraph" in capsys.readouterr().out


def test_run_module_attribute_for_a_duration(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", f"{app}:build", "--duration", "1", "--no-dashboard"]) == 0
    captured = capsys.readouterr()
    status = captured.out.strip().splitlines()
    assert status, "no status line written"
    assert status[-1].startswith("shop stopped")
    assert "handled" in status[-1]
    assert "draining" in captured.err


def test_run_json_lines(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", f"{app}:topology", "--duration", "0.5", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    snapshots = [json.loads(line) for line in lines]
    assert snapshots[-1]["name"] == "shop"
    assert snapshots[-1]["state"] == "stopped"


def test_escalation_exits_1(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", f"{app}:doomed", "--duration", "10", "--no-dashboard"]) == 1
    err = capsys.readouterr().err
    assert "exceeded its restart intensity" in err
    assert "this consumer always fails" in err


def test_sigint_drains_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "sigapp.py").write_text(APP)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "reactor", "run", "sigapp:build", "--no-dashboard"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                first.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert first.wait(20), "the CLI never wrote a status line"
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
        reader.join(5)
        assert process.stderr is not None
        assert "draining" in process.stderr.read()
        assert lines[-1].startswith("shop stopped")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_metrics_port_serves_prometheus_while_running(
    app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    codes: list[int] = []
    runner = threading.Thread(
        target=lambda: codes.append(
            main(
                ["run", f"{app}:build", "--duration", "3", "--no-dashboard", "--metrics-port", "0"]
            )
        )
    )
    runner.start()
    err = ""
    try:

        def announced() -> str | None:
            nonlocal err
            err += capsys.readouterr().err
            found = re.search(r"http://127\.0\.0\.1:\d+/metrics", err)
            return found.group(0) if found else None

        url = wait_for(announced, timeout=10, message="the metrics URL was never printed")
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert 'reactor_channel_published_total{system="shop",channel="orders"}' in body
    finally:
        runner.join(30)
    assert codes == [0]
    assert not [thread for thread in threading.enumerate() if thread.name == "reactor-metrics"]


def test_worker_runs_only_the_named_part(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["worker", f"{app}:build", "--only", "audit,outbox", "--duration", "0.3", "--json"])
        == 0
    )
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = {actor["name"] for actor in last["actors"]}
    assert {"audit", "outbox"} <= names
    assert not {"billing", "mailer", "web"} & names


def test_worker_with_an_unknown_name_exits_2(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", f"{app}:build", "--only", "biling", "--duration", "0.3"]) == 2
    assert "'biling'" in capsys.readouterr().err


HANG_APP = """
import pathlib
import signal
import threading

import reactor
from reactor.testing import wait_for

def hang(event):
    # Ready once the CLI's loop has installed its handler (the event may come first).
    wait_for(lambda: signal.getsignal(signal.SIGINT) is not signal.default_int_handler)
    pathlib.Path("handling").touch()
    threading.Event().wait()  # never returns: only a stop at once ends this run

def build():
    topo = reactor.Topology("hang")
    topo.channel("jobs")
    topo.producer("feed", channel="jobs", topic="jobs.new", source=[1])
    topo.consumer("hang", hang, channel="jobs")
    return topo
"""


LETTERS_APP = """
import os
import reactor

FLAG = {flag!r}
HANDLED = []

def work(event):
    if not os.path.exists(FLAG):
        raise ConnectionError("the ledger is down")
    HANDLED.append(event.data["n"])

def build():
    topo = reactor.Topology("letters")
    topo.channel("jobs", backend={url!r})
    topo.channel("mem")
    # One attempt each: the letters come at once; the command is what is tested.
    topo.consumer("worker", work, channel="jobs", pattern="job.#", max_deliveries=1)
    topo.consumer("memw", work, channel="mem")
    return topo
"""


@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_second_sigint_stops_at_once(command: str, tmp_path: Path) -> None:
    (tmp_path / "hangapp.py").write_text(HANG_APP)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "reactor", command, "hangapp:build", "--no-dashboard"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    err: list[str] = []

    def collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    readers = [
        threading.Thread(target=collect, args=(process.stdout, out)),
        threading.Thread(target=collect, args=(process.stderr, err)),
    ]
    for reader in readers:
        reader.start()
    try:
        wait_for((tmp_path / "handling").exists, timeout=20, message="never handled")
        process.send_signal(signal.SIGINT)
        # The drain would wait 24 s for the handler that never returns...
        wait_for(lambda: any("draining" in line for line in err), timeout=20)
        process.send_signal(signal.SIGINT)
        # ...the second Ctrl-C does not wait for it.
        assert process.wait(10) == 0
        for reader in readers:
            reader.join(5)
        assert any("stopping at once" in line for line in err)
        assert out[-1].startswith("hang stopped")  # the last snapshot: the state is final
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def letters_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module whose sqlite channel ``jobs`` holds two dead letters; returns (target, flag)."""
    name = f"lettersapp_{uuid.uuid4().hex[:8]}"
    flag = tmp_path / "fixed"
    url = f"sqlite:///{tmp_path}/jobs.db"
    (tmp_path / f"{name}.py").write_text(LETTERS_APP.format(flag=str(flag), url=url))
    monkeypatch.chdir(tmp_path)
    target = f"{name}:build"
    from reactor.faces.cli import load_target  # noqa: PLC0415

    with load_target(target).start() as system:
        for n in (1, 2):
            system.publish("jobs", "job.run", {"n": n})
        wait_for(lambda: len(system.dead_letters("jobs")) == 2, 10)
        system.wait_idle(10)
    yield target, flag
    sys.modules.pop(name, None)


def _listed(target: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["dead-letters", target, "list", "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_dead_letters_list_redrive_purge(
    letters_app: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target, flag = letters_app
    letters = _listed(target, capsys)
    assert [(v["channel"], v["group"], v["consumer"], v["attempts"]) for v in letters] == [
        ("jobs", "worker", "worker", 1)
    ] * 2
    assert [v["event"]["data"] for v in letters] == [{"n": 1}, {"n": 2}]  # type: ignore[index]
    assert all(v["error_type"] == "ConnectionError" for v in letters)

    assert main(["dead-letters", target, "list"]) == 0
    text = capsys.readouterr().out
    assert "ConnectionError: the ledger is down" in text
    assert str(letters[0]["id"]) in text

    assert main(["dead-letters", target, "redrive", "--id", str(letters[0]["id"])]) == 0
    assert capsys.readouterr().out.strip() == "jobs: 1 dead letter(s) redriven"
    assert [v["id"] for v in _listed(target, capsys)] == [letters[1]["id"]]

    # The redriven event is handled when the group's consumer runs, the handler fixed.
    flag.write_text("")
    from reactor.faces.cli import load_target  # noqa: PLC0415

    module = sys.modules[target.partition(":")[0]]
    with load_target(target).start() as system:
        system.wait_idle(10)
    assert module.HANDLED == [1]

    assert main(["dead-letters", target, "purge", "--channel", "jobs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"channel": "jobs", "purged": 1}
    assert _listed(target, capsys) == []


def test_dead_letters_of_a_topology_without_durable_channels_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mem.toml").write_text(
        '[topology]\nname = "mem"\n\n[channels.jobs]\n\n[consumers.worker]\n'
        'channel = "jobs"\nhandler = "builtins:print"\n'
    )
    assert main(["dead-letters", str(tmp_path / "mem.toml"), "list"]) == 2
    err = capsys.readouterr().err
    assert "topology 'mem' has no durable channel" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--channel", "nope"], "has no channel 'nope' (channels: jobs, mem)"),
        (["--channel", "mem"], "channel 'mem' keeps its dead letters in memory"),
        (["--group", "billing"], "channel 'jobs' has no group 'billing' (groups: worker)"),
        (["--id", "worker:99"], "channel 'jobs' has no dead letter with id 'worker:99'"),
    ],
)
def test_dead_letters_usage_errors_exit_2_naming_the_thing(
    letters_app: tuple[str, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    target, _ = letters_app
    assert main(["dead-letters", target, "purge", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(_listed(target, capsys)) == 2  # nothing was purged


# -- control sequences in user text are shown, not obeyed -----------------------------

HOSTILE = "\x1b[2J\x1b]0;title\x07\x1b]8;;http://evil.example\x07click\x1b]8;;\x07"

HOSTILE_APP = """
import reactor

def explode(event):
    raise RuntimeError({hostile!r})

def doomed():
    topo = reactor.Topology("doomed", strategy=reactor.OneForOne(max_restarts=0))
    topo.channel("jobs")
    topo.producer("feed", channel="jobs", topic="jobs.new", source=[1])
    topo.consumer("explode", explode, channel="jobs", failure_threshold=1)
    return topo

def lettered():
    topo = reactor.Topology("lettered")
    topo.channel("jobs", backend={url!r})
    topo.consumer("explode", explode, channel="jobs", max_deliveries=1)
    return topo
"""


@pytest.fixture
def hostile_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"hostile_{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path}/jobs.db"
    (tmp_path / f"{name}.py").write_text(HOSTILE_APP.format(hostile=HOSTILE, url=url))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_the_escalation_message_escapes_control_sequences(
    hostile_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{hostile_app}:doomed", "--duration", "10", "--no-dashboard"]) == 1
    err = capsys.readouterr().err
    assert "exceeded its restart intensity" in err
    assert "\x1b" not in err
    assert "\x07" not in err
    assert "\\x1b[2J" in err


def test_dead_letters_list_escapes_control_sequences(
    hostile_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from reactor.faces.cli import load_target  # noqa: PLC0415

    target = f"{hostile_app}:lettered"
    with load_target(target).start() as system:
        system.publish("jobs", "job.run", {"n": 1})
        wait_for(lambda: len(system.dead_letters("jobs")) == 1, 10)
        system.wait_idle(10)
    assert main(["dead-letters", target, "list"]) == 0
    out = capsys.readouterr().out
    assert "RuntimeError: \\x1b[2J" in out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert main(["dead-letters", target, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["message"] == HOSTILE  # JSON keeps the text, escaped by JSON itself


@pytest.mark.parametrize("command", ["worker", "demo"])
def test_worker_and_demo_serve_metrics_too(
    command: str, app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = "fanout" if command == "demo" else f"{app}:build"
    assert (
        main([command, target, "--duration", "0.5", "--no-dashboard", "--metrics-port", "0"]) == 0
    )
    assert re.search(
        r"serving Prometheus metrics on http://127\.0\.0\.1:\d+/metrics", capsys.readouterr().err
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("reactor-metrics")]
