"""``--until-settled``: a finite topology drains and exits once its sources are spent."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import terminal

from reactor.faces.cli import main
from reactor.faces.settle import StopRequests

HANDLERS = """
def orders():
    for n in range(50):
        yield {"id": n}

def ticks():
    return {"tick": 1}

def handle(event):
    return None
"""


def _toml(folder: Path, source: str, extra: str = "") -> Path:
    module = folder / f"settle_handlers_{folder.name}.py"
    module.write_text(HANDLERS)
    path = folder / "finite.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [channels.work]

            [producers.web]
            channel = "work"
            topic = "orders.created"
            source = "{module.stem}:{source}"
            rate = 200
            {extra}

            [consumers.worker]
            channel = "work"
            handler = "{module.stem}:handle"
            """
        )
    )
    return path


def test_a_finite_topology_exits_once_settled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _toml(tmp_path, "orders")
    assert main(["run", str(path), "--until-settled", "--no-dashboard"]) == 0
    captured = capsys.readouterr()
    last = captured.out.strip().splitlines()[-1]
    assert last.startswith("finite stopped"), captured.out
    assert "handled 50 " in last
    assert "draining" in captured.err


def test_a_polled_source_never_settles_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _toml(tmp_path, "ticks", extra="interval = 0.1")
    assert main(["run", str(path), "--until-settled", "--no-dashboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "producer 'web' polls a callable" in err[0]
    assert "--duration" in err[0]


def test_the_dashboard_shows_the_settled_run_and_exits(tmp_path: Path) -> None:
    path = _toml(tmp_path, "orders")
    argv = [sys.executable, "-m", "reactor", "run", str(path), "--until-settled", "--dashboard"]
    code, screen = terminal.run(argv, 80, 24, cwd=tmp_path)
    assert code == 0, screen.text()
    text = screen.text()
    assert screen.lines()[0].startswith("finite  stopped"), text
    assert re.search(r"^ └ worker +50 ", text, re.M), text


def test_a_request_before_the_loop_listens_is_not_lost() -> None:
    class NoSignals:
        def install(self, on_signal: Callable[[], None]) -> Callable[[], None]:
            return lambda: None

    requests = StopRequests(NoSignals())
    requests.request()  # settled before serve() installed its handler
    heard: list[str] = []
    remove = requests.install(lambda: heard.append("stop"))
    assert heard == ["stop"]
    requests.request()
    assert heard == ["stop", "stop"]
    remove()
    requests.request()
    assert heard == ["stop", "stop"]
