"""Files that stay valid whatever stops the program: appended and synced, or replaced.

`AppendFile` grows a new file by whole appends: a failed append (disk full) is cut
off again, so the file always ends where the last whole append did. `write_atomic`
replaces a file so that readers see either the old or the new one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

# opens a new file for unbuffered binary writing (mode "xb"); a stand-in in tests
Opener = Callable[[Path, str], BinaryIO]


def open_unbuffered(path: Path, mode: str) -> BinaryIO:
    """The default Opener: nothing stays in a buffer after a failed write."""
    return open(path, mode, buffering=0)


class AppendFile:
    """A new file written at its end, its first bytes rewritable (a header)."""

    def __init__(self, path: Path, opener: Opener = open_unbuffered) -> None:
        self.path = path
        self.size = 0
        self._file = opener(path, "xb")

    def append(self, data: bytes) -> None:
        """Write `data` at the end (to the OS, not yet synced); cut it off on error."""
        try:
            self._write_at(self.size, data)
        except OSError:
            self.cut(self.size)
            raise
        self.size += len(data)

    def rewrite(self, offset: int, data: bytes) -> None:
        """Overwrite bytes already written, from `offset`."""
        self._write_at(offset, data)

    def _write_at(self, offset: int, data: bytes) -> None:
        self._file.seek(offset)
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]

    def sync(self) -> None:
        """Make everything written so far durable (fsync; the GIL is released)."""
        os.fsync(self._file.fileno())

    def cut(self, size: int) -> None:
        """Shorten the file to `size` bytes after a failure, as far as possible."""
        self.size = min(self.size, size)
        try:
            self._file.truncate(size)
        except OSError:
            # the file's own header or format still says where the valid part ends
            pass

    def close(self) -> None:
        """Close the file (unbuffered: nothing is left to write)."""
        self._file.close()


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see either the old or the new file."""
    with replacing(path) as f:
        f.write(text)


@contextmanager
def replacing(path: Path) -> Iterator[TextIO]:
    """A text file to write that replaces `path` (atomically) when the block ends.

    Until then the old file, if any, stays; on an error the new one is removed.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
