"""The command line as a newcomer meets it: a mistake is one line and exit code 2.

Each test runs ``python -m reactor`` in a fresh process, as a shell would, and
asserts the exit code and what stderr says: one line naming the thing and what
to do, no traceback (unless ``--debug``).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HANDLERS = """
def handle(event):
    return None

def items():
    for n in range(3):
        yield {"n": n}
"""


def reactor_cli(
    *args: str, cwd: Path, timeout: float = 60, pythonpath: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            filter(None, [*pythonpath, str(ROOT), os.environ.get("PYTHONPATH")])
        ),
        COLUMNS="300",  # one message is one line: no wrapping by rich
    )
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def topology_file(
    folder: Path, backend: str, *, name: str = "t.toml", producer: bool = False
) -> str:
    (folder / "handlers.py").write_text(HANDLERS)
    text = f"""
        [topology]
        name = "t"
        [channels.orders]
        backend = "{backend}"
        [consumers.c]
        channel = "orders"
        pattern = "#"
        handler = "handlers:handle"
    """
    if producer:
        text += """
        [producers.p]
        channel = "orders"
        topic = "a.b"
        source = "handlers:items"
        """
    (folder / name).write_text(textwrap.dedent(text))
    return name


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a failed command, checked to be one line without a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- errors raised while a channel opens --------------------------------------------------


def test_a_redis_url_option_typo_is_one_line_with_did_you_mean(tmp_path: Path) -> None:
    target = topology_file(tmp_path, "redis://:hunter2@127.0.0.1:1/0?prefx=shop")
    result = reactor_cli("run", target, "--duration", "0.2", "--no-dashboard", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert "channel 'orders'" in line
    assert "unknown redis option 'prefx'" in line
    assert "did you mean 'prefix'?" in line
    assert "hunter2" not in line


def test_the_redis_extra_missing_is_one_line(tmp_path: Path) -> None:
    # A sitecustomize that makes `import redis` fail, as without the extra.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['redis'] = None\n")
    target = topology_file(tmp_path, "redis://127.0.0.1:1/0")
    result = reactor_cli(
        "run", target, "--duration", "0.2", "--no-dashboard", cwd=tmp_path, pythonpath=(str(hide),)
    )
    assert result.returncode == 2
    line = one_line(result)
    assert "redis package is not installed" in line
    assert "pip install" in line


@pytest.mark.parametrize(
    "command",
    [("run", "--duration", "0.2"), ("worker", "--duration", "0.2"), ("dead-letters", "list")],
)
def test_a_missing_sqlite_folder_is_one_line(command: tuple[str, ...], tmp_path: Path) -> None:
    target = topology_file(tmp_path, "sqlite:///no/such/folder/log.db")
    name, *rest = command
    result = reactor_cli(name, target, *rest, cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert "folder does not exist" in line or "does not exist" in line
    assert "no/such/folder" in line
    assert "create it" in line


def test_a_corrupt_sqlite_log_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "log.db").write_bytes(b"this is not a database, it is a grocery list" * 100)
    target = topology_file(tmp_path, "sqlite:///log.db")
    result = reactor_cli("run", target, "--duration", "0.2", "--no-dashboard", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert "log.db" in line
    assert "corrupted" in line


def test_a_locked_sqlite_log_is_one_line(tmp_path: Path) -> None:
    import fcntl  # noqa: PLC0415 - only this test holds a log's lock as another process would

    target = topology_file(tmp_path, "sqlite:///log.db")
    fd = os.open(tmp_path / "log.db.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242")
        result = reactor_cli("run", target, "--duration", "0.2", "--no-dashboard", cwd=tmp_path)
    finally:
        os.close(fd)
    assert result.returncode == 2
    line = one_line(result)
    assert "already open for writing by another process" in line
    assert "pid 4242" in line


@pytest.mark.parametrize("command", ["run", "worker", "demo"])
def test_a_metrics_port_out_of_range_is_a_usage_error(command: str, tmp_path: Path) -> None:
    target = "sensors" if command == "demo" else topology_file(tmp_path, "memory")
    result = reactor_cli(
        command, target, "--metrics-port", "99999", "--duration", "0", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "port 99999 is out of range" in one_line(result)


@pytest.mark.parametrize("before", [True, False])
def test_debug_shows_the_traceback(before: bool, tmp_path: Path) -> None:
    target = topology_file(tmp_path, "sqlite:///no/such/folder/log.db")
    command = ["run", target, "--duration", "0.2", "--no-dashboard"]
    command = ["--debug", *command] if before else [*command, "--debug"]
    result = reactor_cli(*command, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "ChannelOpenError" in result.stderr


# -- unreachable Redis, drains that cannot finish ---------------------------------------


def test_an_unreachable_redis_says_why_and_exits_3_after_the_connect_timeout(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    target = topology_file(tmp_path, f"redis://:hunter2@127.0.0.1:{port}/0", producer=True)
    result = reactor_cli(
        "run", target, "--no-dashboard", "--connect-timeout", "1", cwd=tmp_path, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in result.stderr
    assert "--connect-timeout 1s" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_a_run_that_ends_before_redis_was_reached_exits_3(tmp_path: Path) -> None:
    port = free_port()
    target = topology_file(tmp_path, f"redis://127.0.0.1:{port}/0")
    result = reactor_cli(
        "run", target, "--json", "--duration", "0.3", "--drain-timeout", "1", cwd=tmp_path
    )
    assert result.returncode == 3, result.stderr
    assert "cannot reach Redis" in result.stderr


HUNG = """
import threading
import reactor

topology = reactor.Topology("hung")
topology.channel("jobs")
topology.producer("feed", channel="jobs", topic="jobs.new", source=[1, 2])
_never = threading.Event()

@topology.consumer("stuck", channel="jobs", pattern="#", handler_timeout=600)
def stuck(event):
    _never.wait(30)
"""


def test_a_drain_that_cannot_finish_names_what_it_waits_for_and_exits_4(tmp_path: Path) -> None:
    (tmp_path / "hung.py").write_text(HUNG)
    result = reactor_cli(
        "run",
        "hung.py",
        "--no-dashboard",
        "--duration",
        "0.5",
        "--drain-timeout",
        "3",
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "waiting for: consumer 'stuck' holds" in result.stderr
    assert "did not finish within --drain-timeout 3s" in result.stderr
    assert "left unhandled" in result.stderr


# -- targets, logs -------------------------------------------------------------------


APP = """
import reactor

def record(event):
    return None

topology = reactor.Topology("app")
topology.channel("jobs")
topology.producer("feed", channel="jobs", topic="jobs.new", source=[1, 2, 3])
topology.consumer("worker", record, channel="jobs", pattern="#")
"""


def test_run_a_python_file_loads_its_topology(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    result = reactor_cli("run", "app.py", "--json", "--duration", "0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"name":"app"' in result.stdout


def test_run_a_python_file_without_a_topology_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    result = reactor_cli("run", "empty.py", "--duration", "0", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert "defines no reactor.Topology" in line
    assert "empty.py:build" in line


def test_run_a_python_file_with_two_topologies_says_how_to_pick(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(
        "import reactor\nfirst = reactor.Topology('a')\nsecond = reactor.Topology('b')\n"
    )
    result = reactor_cli("run", "two.py", "--duration", "0", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert "several topologies (first, second)" in line
    assert "two.py:first" in line


CRASHY = """
import reactor

def explode(event):
    raise RuntimeError("\\x1b]0;pwned\\x07boom")

topology = reactor.Topology("crashy")
topology.channel("jobs")
topology.producer("feed", channel="jobs", topic="jobs.new", source=[1])
topology.consumer("explode", explode, channel="jobs", pattern="#", failure_threshold=1)
"""


def test_crashes_are_logged_on_stderr_at_the_log_level(tmp_path: Path) -> None:
    (tmp_path / "crashy.py").write_text(CRASHY)
    loud = reactor_cli("run", "crashy.py", "--json", "--duration", "1", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "reactor: warning:" in loud.stderr
    assert "explode" in loud.stderr
    # The exception message's control sequences are shown, not obeyed.
    assert "\x1b" not in loud.stderr
    assert "\x07" not in loud.stderr
    quiet = reactor_cli(
        "run", "crashy.py", "--json", "--duration", "1", "--log-level", "error", cwd=tmp_path
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "reactor: warning:" not in quiet.stderr


def test_a_bad_log_level_is_a_usage_error(tmp_path: Path) -> None:
    result = reactor_cli("version", "--log-level", "loud", cwd=tmp_path)
    assert result.returncode == 2
    assert "--log-level" in result.stderr


# -- safe output -----------------------------------------------------------------------


def test_graph_runs_no_handler_code_and_hides_passwords(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "def handle(event):\n    return None\n"
    )
    (tmp_path / "t.toml").write_text(
        textwrap.dedent(
            """
            [topology]
            name = "t"
            [channels.orders]
            backend = "redis://admin:hunter2@127.0.0.1:6379/0"
            [consumers.c]
            channel = "orders"
            pattern = "#"
            handler = "evil:handle"
            """
        )
    )
    for form in ("tree", "mermaid"):
        result = reactor_cli("graph", "t.toml", "--format", form, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "hunter2" not in result.stdout
        assert not marker.exists(), "reactor graph ran a handler module"
    tree = reactor_cli("graph", "t.toml", cwd=tmp_path)
    assert "redis://admin:***@127.0.0.1:6379/0" in tree.stdout


def test_an_unknown_scheme_error_hides_the_password(tmp_path: Path) -> None:
    target = topology_file(tmp_path, "bogus://admin:hunter2@host/0")
    result = reactor_cli("run", target, "--duration", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
    assert "bogus://admin:***@host/0" in result.stderr


def test_a_new_sqlite_log_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    target = topology_file(tmp_path, "sqlite:///log.db", producer=True)
    old = os.umask(0o022)
    try:
        result = reactor_cli("run", target, "--json", "--duration", "0.3", cwd=tmp_path)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    files = [tmp_path / "log.db", tmp_path / "log.db.lock"]
    files += [path for path in tmp_path.glob("log.db-*")]  # -wal, -shm if still there
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"


def test_the_readmes_shop_command_runs_from_the_repository_root() -> None:
    result = reactor_cli("run", "demos/shop.toml", "--json", "--duration", "1", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert '"name":"shop"' in result.stdout


def test_a_running_sqlite_logs_files_are_private_too(tmp_path: Path) -> None:
    import reactor  # noqa: PLC0415 - this one runs in process, to look while it runs

    topo = reactor.Topology("private")
    topo.channel("orders", backend=f"sqlite:///{tmp_path}/log.db")
    topo.consumer("c", lambda event: None, channel="orders")
    old = os.umask(0o022)
    try:
        with topo.start() as system:
            system.publish("orders", "orders.created", {"secret": "card number"})
            system.wait_idle(10)
            files = sorted(tmp_path.glob("log.db*"))
            assert {path.name for path in files} >= {"log.db", "log.db.lock", "log.db-wal"}
            for path in files:
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"
    finally:
        os.umask(old)


def test_a_demo_logs_errors_only_unless_asked(tmp_path: Path) -> None:
    # The sensors demo dead-letters poison readings on purpose: retries are its show.
    quiet = reactor_cli("demo", "sensors", "--duration", "3", "--json", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "WARNING" not in quiet.stderr.upper()
    loud = reactor_cli(
        "demo", "sensors", "--duration", "3", "--json", "--log-level", "warning", cwd=tmp_path
    )
    assert loud.returncode == 0, loud.stderr
    assert "failed on attempt" in loud.stderr
