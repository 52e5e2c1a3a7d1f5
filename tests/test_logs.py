"""The command line's log: one printable line per record, held while the dashboard draws."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from reactor.faces import logs


def console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, color_system=None), buffer


def test_records_are_one_printable_line_each() -> None:
    out, buffer = console()
    handler = logs.install(out, "warning")
    try:
        logger = logging.getLogger("reactor")
        logger.info("not shown at warning")
        logger.warning("consumer %r failed: %s", "bill", "\x1b[2Jcleared")
        try:
            raise ValueError("bad\x07value")
        except ValueError:
            logger.exception("monitor failed")
    finally:
        logs.uninstall(handler)
    lines = buffer.getvalue().splitlines()
    assert lines == [
        "reactor: warning: consumer 'bill' failed: \\x1b[2Jcleared",
        "reactor: error: monitor failed: ValueError: bad\\x07value (--debug shows the traceback)",
    ]


def test_debug_writes_tracebacks() -> None:
    out, buffer = console()
    handler = logs.install(out, "debug", tracebacks=True)
    try:
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("reactor").exception("monitor failed")
    finally:
        logs.uninstall(handler)
    assert "Traceback (most recent call last)" in buffer.getvalue()


def test_records_are_held_while_the_dashboard_draws() -> None:
    out, buffer = console()
    handler = logs.install(out, "warning")
    logger = logging.getLogger("reactor")
    try:
        with handler.held():
            logger.warning("during")
            assert buffer.getvalue() == ""
        assert buffer.getvalue() == "reactor: warning: during\n"
    finally:
        logs.uninstall(handler)


def test_uninstall_gives_the_logger_its_level_back() -> None:
    logger = logging.getLogger("reactor")
    before = logger.level
    handler = logs.install(console()[0], "debug")
    assert logger.level == logging.DEBUG
    logs.uninstall(handler)
    assert logger.level == before
    assert handler not in logger.handlers


def test_only_the_latest_records_are_held_and_the_rest_are_counted() -> None:
    out, buffer = console()
    handler = logs.install(out, "warning")
    logger = logging.getLogger("reactor")
    try:
        with handler.held():
            for n in range(logs.HELD_RECORDS + 5):
                logger.warning("line %d", n)
    finally:
        logs.uninstall(handler)
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("reactor: 5 earlier log line(s) not kept")
    assert lines[1] == "reactor: warning: line 5"
    assert len(lines) == logs.HELD_RECORDS + 1
