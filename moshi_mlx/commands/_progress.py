"""Progress bars for commands whose work reports (done, total)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """Show a rich bar named `label` while inside; yields the (done, total) callback."""
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


class FramesBar:
    """A rich bar of frames done out of total with the time left, and a text after it.

    It shows from its first `update` (after any model loading, which has its own
    status line) to the end of the `with` block.
    """

    def __init__(
        self,
        label: str,
        console: Console | None = None,
        transient: bool = True,
        text: bool = False,
    ) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} frames"),
            TimeRemainingColumn(),
        ]
        if text:
            columns.append(TextColumn("{task.fields[text]}", markup=False))
        self._label = label
        self._progress = Progress(*columns, console=console, transient=transient)
        self._task = None

    def __enter__(self) -> FramesBar:
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def update(self, done: int, total: int, text: str = "") -> None:
        """`done` of `total` frames processed; `text` shown after the bar."""
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=total, text=text)
        self._progress.update(self._task, completed=done, total=total, text=text)
