"""Standard output whose reader may go away: ``rif attribute ... | head -2``.

A reader that closes the pipe early does not make the run fail: :class:`PipeGuard` stands in for
``sys.stdout`` while a command runs, and the first write or flush that meets the closed pipe
(``BrokenPipeError``) points the stream's file descriptor at the null device, so that the rest of
the output, the interpreter's own flush at exit included, goes nowhere without an error. The work
goes on and writes its files; the command then ends with the status of a command stopped by
SIGPIPE (:data:`EXIT_BROKEN_PIPE`), as ``yes | head -1`` reports for ``yes``.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from typing import Iterator, TextIO

__all__ = ["EXIT_BROKEN_PIPE", "PipeGuard", "guarded"]

#: 128 + SIGPIPE (141 on Linux and macOS): what a shell reports for a command its pipe stopped.
EXIT_BROKEN_PIPE = 128 + int(getattr(signal, "SIGPIPE", 13))


class PipeGuard:
    """A text stream in front of ``stream`` that drops what is written once its reader is gone
    (``broken`` then True); every other attribute is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def _drop(self) -> None:
        """The reader is gone: from now on, output (and what the stream still holds, flushed at
        exit) goes to the null device, so it cannot fail again."""
        self.broken = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            fd = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)


@contextlib.contextmanager
def guarded() -> Iterator[PipeGuard]:
    """sys.stdout behind a PipeGuard for the block; flushed at its end, so that a reader gone
    while the output sat in the buffer is found there (guard.broken), not at interpreter exit."""
    original = sys.stdout
    guard = PipeGuard(original)
    sys.stdout = guard
    try:
        yield guard
        guard.flush()
    finally:
        if sys.stdout is guard:
            sys.stdout = original
