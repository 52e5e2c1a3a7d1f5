"""What the dashboard draws, and how it fits the terminal it has.

A frame is a stack of sections. Each is rendered at the frame's width into lines;
when they do not all fit the terminal's height, the least important give way
first, in this order of priority (highest first):

1. the header (always two lines, whatever the health, so nothing below moves);
2. the presenter's key line, when keys are on;
3. problems and the latest lifecycle events (dead letters, failures, restarts),
   newest first, each wrapped rather than cut;
4. channels and their groups;
5. consumers and producers;
6. extra panels (a demo's read model);
7. the supervision tree, which collapses to a one-line summary first.

Giving way means: a section with a summary is replaced by it (lowest priority
first); then sections are cut to fewer rows, lowest priority first, each cut
section ending with a line saying how many rows it left out.

Everything a user wrote (names, event data, error messages) goes through
:func:`reactor.text.printable`, so an escape sequence in an exception message is
shown, not obeyed; a backend URL goes through :func:`reactor.text.redact_url`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import attrs
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

__all__ = ["Frame", "Section", "fit", "table"]

Lines = list[list[Segment]]

_DIM = Style(dim=True)
# Side by side (the tree beside the consumers) from this width on.
SIDE_BY_SIDE = 150


@attrs.define
class Section:
    """One part of a frame.

    Attributes:
        name: what it is, for tests and the "rows left out" line.
        body: the full renderable.
        summary: a shorter renderable (one line) to use when space is short, or None.
        min_lines: fewest lines it is cut to before a higher section gives way.
        max_lines: most lines it takes even when there is room (None: no limit), so
            a long list does not push everything else off a short terminal.
    """

    name: str
    body: RenderableType
    summary: RenderableType | None = None
    min_lines: int = 1
    max_lines: int | None = None


def fit(
    heights: Sequence[int], summaries: Sequence[int | None], mins: Sequence[int], room: int
) -> tuple[list[int], list[bool]]:
    """How many lines each section gets, sections given highest priority first.

    Args:
        heights: each section's full height.
        summaries: each section's summary height, or None if it has none.
        mins: the fewest lines each is cut to in the second pass.
        room: the lines available.

    Returns:
        The lines each section gets (0: left out) and whether it shows its summary.
    """
    sizes = list(heights)
    summarised = [False] * len(sizes)
    over = sum(sizes) - room
    for index in reversed(range(len(sizes))):
        short = summaries[index]
        if over <= 0:
            break
        if short is not None and short < sizes[index]:
            over -= sizes[index] - short
            sizes[index] = short
            summarised[index] = True
    for floor in (mins, [1] * len(sizes), [0] * len(sizes)):
        for index in reversed(range(len(sizes))):
            if over <= 0:
                break
            cut = min(over, max(0, sizes[index] - min(floor[index], sizes[index])))
            sizes[index] -= cut
            over -= cut
    return sizes, summarised


class Frame:
    """A frame's sections (highest priority first) in display order, fitted to a height.

    Args:
        sections: highest priority first.
        order: the names of the sections, top to bottom.
        height: the lines available; None draws everything.
        wide: the sections to put side by side at wide widths (a left and a right).
    """

    def __init__(
        self,
        sections: Sequence[Section],
        order: Sequence[str],
        height: int | None,
        wide: tuple[str, str] | None = None,
    ) -> None:
        self.sections = list(sections)
        self.order = list(order)
        self.height = height
        self.wide = wide
        # Lines of each renderable drawn in this frame: the side-by-side attempt and
        # the layout measure the same sections, and rich renders are the frame's cost.
        self._rendered: dict[tuple[int, int], Lines] = {}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        sections = self.sections
        if self.wide is not None and width >= SIDE_BY_SIDE:
            side = self._side_by_side(console, options)
            if side is not None:
                sections = side
        lines = self.lines(console, options.update(height=None), sections)
        for line in lines:
            yield from line
            yield Segment.line()

    def _side_by_side(self, console: Console, options: ConsoleOptions) -> list[Section] | None:
        assert self.wide is not None
        left_name, right_name = self.wide
        by_name = {section.name: section for section in self.sections}
        left, right = by_name.get(left_name), by_name.get(right_name)
        if left is None or right is None:
            return None
        grid = Table.grid(padding=(0, 2))
        grid.add_column(ratio=2)
        grid.add_column(ratio=3)
        grid.add_row(left.body, right.body)
        merged = attrs.evolve(right, body=grid)
        sections = [merged if s is right else s for s in self.sections if s is not left]
        if self.height is not None:
            total = sum(len(self._render(console, options, s.body)) for s in sections)
            if total > self.height:
                return None  # stacked, the tree can collapse
        self.order = [right_name if name == left_name else name for name in self.order]
        self.order = list(dict.fromkeys(self.order))
        return sections

    def lines(
        self, console: Console, options: ConsoleOptions, sections: Sequence[Section]
    ) -> Lines:
        """The frame's lines: every section fitted, in display order."""
        full = [
            _cut(
                self._render(console, options, s.body),
                s.max_lines or sys.maxsize,
                options.max_width,
            )
            for s in sections
        ]
        short = [
            self._render(console, options, s.summary) if s.summary is not None else None
            for s in sections
        ]
        if self.height is None:
            sizes, summarised = [len(lines) for lines in full], [False] * len(full)
        else:
            sizes, summarised = fit(
                [len(lines) for lines in full],
                [len(lines) if lines is not None else None for lines in short],
                [s.min_lines for s in sections],
                self.height,
            )
        fitted: dict[str, Lines] = {}
        for index, section in enumerate(sections):
            chosen = short[index] if summarised[index] else full[index]
            assert chosen is not None
            fitted[section.name] = _cut(chosen, sizes[index], options.max_width)
        out: Lines = []
        for name in self.order:
            out += fitted.get(name, [])
        return out

    def _render(
        self, console: Console, options: ConsoleOptions, renderable: RenderableType
    ) -> Lines:
        key = (id(renderable), options.max_width)
        lines = self._rendered.get(key)
        if lines is None:
            lines = self._rendered[key] = console.render_lines(renderable, options, pad=False)
        return lines


def _cut(lines: Lines, size: int, width: int) -> Lines:
    """The first ``size`` lines, the last saying how many were left out."""
    if size >= len(lines):
        return lines
    if size <= 0:
        return []
    left_out = len(lines) - size + 1
    more = f"  … {left_out} more line{'s' if left_out != 1 else ''}"[:width]
    return [*lines[: size - 1], [Segment(more, _DIM)]]


def table(title: str, *, legend: str = "") -> Table:
    """A dashboard table: a bold title (and a dim legend on its line), no borders."""
    heading = Text(title, style="bold")
    if legend:
        heading.append(f"  {legend}", style="dim")
    return Table(
        title=heading,
        title_justify="left",
        box=None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        header_style="bold",
        expand=False,
    )


# -- lifecycle messages ----------------------------------------------------------------

# ConsumerFailing says which error it gave up on inside a long sentence; shown first,
# so an 80-column line says what actually failed.
_FAILING = re.compile(
    r"failed (?P<count>\d+) new events in a row with no success between "
    r"\(last: (?P<last>.*)\); restarting it"
)


def consumer_failing(message: str) -> str:
    """A ConsumerFailing message with its underlying error first; others unchanged."""
    match = _FAILING.search(message)
    if match is None:
        return message
    count = int(match.group("count"))
    runs = "1 new event failed" if count == 1 else f"{count} new events failed in a row"
    return f"{runs}, last: {match.group('last')}"
