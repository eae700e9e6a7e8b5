"""Progress bars for long steps: tqdm on stderr, silent when asked to be quiet."""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

_open_bars = 0  # bars drawn and not yet closed (then a message must start on a new line)


def bar_open() -> bool:
    """Whether a progress bar is on the terminal's current line now."""
    return _open_bars > 0


def progress(items: Iterable[T], *, desc: str, total: Optional[int] = None,
             enabled: bool = True) -> Iterator[T]:
    """Iterate over items with a progress bar (disabled: a plain iteration)."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    global _open_bars
    with tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True) as bar:
        _open_bars += 1
        try:
            yield from bar
        finally:
            _open_bars -= 1
