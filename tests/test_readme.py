"""The README's example is code: it must run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    match = re.search(r"## Example\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its example"
    exec(compile(match.group(1), str(README), "exec"), {})  # our own README, run as documentation
    out = capsys.readouterr().out
    assert "orders.billed" in out  # the audit consumer printed billed events
    assert "ChannelMetrics(name='orders'" in out
