"""Progress bars for long steps: tqdm on stderr, silent when asked to be quiet."""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, total: Optional[int] = None,
             enabled: bool = True) -> Iterator[T]:
    """Iterate over items with a progress bar (disabled: a plain iteration)."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    with tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True) as bar:
        yield from bar
