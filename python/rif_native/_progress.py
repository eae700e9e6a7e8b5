"""Progress bars for long steps: tqdm on stderr, silent when asked to be quiet.

A bar never shares a line with what is printed after it: on a terminal it is cleared when it
closes; on anything else (a log file, a pipe, a CI log), where a carriage return does not take
it back, it is left in its final state and its line is ended. What was printed before it is
flushed first, so that stdout and stderr going to one file stay in order.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

_open_bars = 0  # bars drawn and not yet closed (then a message must start on a new line)
_bars: list[Any] = []  # the bars progress() has open, innermost last


def bar_open() -> bool:
    """Whether a progress bar is on the terminal's current line now."""
    return _open_bars > 0


def _terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _flush(stream) -> None:
    try:
        stream.flush()
    except (AttributeError, ValueError, OSError):
        pass


def wanted(enabled: Optional[bool]) -> bool:
    """Whether to draw bars: as asked, or (None) when stderr is a terminal."""
    return _terminal(sys.stderr) if enabled is None else bool(enabled)


def progress(items: Iterable[T], *, desc: str, total: Optional[int] = None,
             enabled: bool = True) -> Iterator[T]:
    """Iterate over items with a progress bar (disabled: a plain iteration)."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    global _open_bars
    stream = sys.stderr
    _flush(sys.stdout)
    with tqdm(items, desc=desc, total=total, file=stream, leave=not _terminal(stream),
              dynamic_ncols=True) as bar:
        _bars.append(bar)
        _open_bars += 1
        try:
            yield from bar
        finally:
            if bar in _bars:  # not yet closed by close_bars()
                _bars.remove(bar)
                _open_bars -= 1


@contextlib.contextmanager
def bar(*, desc: str, total: int, unit: str = "it", unit_scale: bool = False) -> Iterator[Any]:
    """A bar the caller moves (``update``, ``reset``), under the rules of progress(): cleared
    on a terminal, its line ended elsewhere, closed by close_bars() too."""
    from tqdm.auto import tqdm

    global _open_bars
    stream = sys.stderr
    _flush(sys.stdout)
    b = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=stream,
             leave=not _terminal(stream), dynamic_ncols=True)
    _bars.append(b)
    _open_bars += 1
    try:
        yield b
    finally:
        if b in _bars:  # not yet closed by close_bars()
            _bars.remove(b)
            _open_bars -= 1
            b.close()


def close_bars() -> None:
    """Close the bars progress() has open now, innermost first (each cleared, or ended with a
    newline where the stream is no terminal). For KeyboardInterrupt: the interrupted loop's
    generator, and with it its bar, lives on in the traceback until it is dropped."""
    global _open_bars
    while _bars:
        bar = _bars.pop()
        _open_bars -= 1
        bar.close()


