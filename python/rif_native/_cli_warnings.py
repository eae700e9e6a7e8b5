"""How the rif command shows Python warnings: one line each on stderr, ``rif: warning:
Category: message``, without Python's file, line number and source line. The samples a warning
names (its ``samples``: positions among the rows the library was given, when those are the
training samples) are also named as rows of the data set, which is what the command's tables
and files show."""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any, Iterator, Optional

import numpy as np

#: The training samples' rows of the data set, once the running command has split its data.
_training_rows: Optional[np.ndarray] = None


def training_rows(rows: Any) -> None:
    """Tell the warnings of the running command which rows of the data set it trains on."""
    global _training_rows
    _training_rows = np.asarray(rows, dtype=np.int64)


def line(category: type, message: Any) -> str:
    """A warning as the command shows it (without the program's name)."""
    text = f"{category.__name__}: {message}"
    samples = getattr(message, "samples", None)
    rows = _training_rows
    # (only where the library was given the training rows: rif poisoning adds a point to
    # them, rif sweep takes subsets, and their numbers are not the training samples')
    if samples is not None and len(samples) and rows is not None \
            and getattr(message, "rows", None) == len(rows):
        from ._api import _name_some

        text += (f" [sample numbers count the {len(rows)} training samples; as rows of the "
                 f"data set: {_name_some(rows[np.asarray(samples)])}]")
    return text


@contextlib.contextmanager
def shown(prog: str, printable: Any) -> Iterator[None]:
    """Within: warnings that reach Python's display are shown as `line` says (printable: makes
    a line safe for a terminal); after: Python's display again, and no training rows."""
    global _training_rows

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None,
             source: Optional[str] = None) -> None:
        print(f"{prog}: warning: {printable(line(category, message))}",
              file=sys.stderr if file is None else file)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
        _training_rows = None
