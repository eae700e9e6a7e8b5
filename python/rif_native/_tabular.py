"""Tables by column name: CSV, TSV and Parquet read with pandas, the label and the sample ids
taken from named columns, categorical columns one-hot encoded on request, and every change said.

This is what ``rif ... --label COLUMN --id COLUMN --one-hot`` (and a ``.parquet`` file) reads;
:func:`rif_native.datasets.load_table` is its public name. pandas is needed (and pyarrow for
Parquet); the plain ``.csv`` reader of :func:`rif_native.datasets.load_dataset` needs neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

SUFFIXES = (".csv", ".tsv", ".parquet")


def _pandas(what: str) -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ValueError(f"{what} needs pandas: pip install pandas") from None
    return pd


def _read(path: Path, id_column: Optional[str] = None) -> Any:
    pd = _pandas("reading a table by column name (--label, --id, --one-hot, .parquet)")
    kind = path.suffix.lower()
    if kind not in SUFFIXES:
        raise ValueError(f"{path}: a table is read from .csv, .tsv or .parquet, not {kind!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if kind == ".parquet":
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise ValueError("reading .parquet needs pyarrow: pip install pyarrow") from None
    text = {} if id_column is None else {id_column: str}  # ids as written: "007" stays "007"
    try:
        return pd.read_csv(path, sep="\t" if kind == ".tsv" else ",", skipinitialspace=True,
                           dtype=text)
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable {kind[1:].upper()} table "
                         f"({str(exc).splitlines()[0][:120]})") from None


def _column(frame: Any, name: str, option: str, path: Path) -> str:
    columns = [str(c) for c in frame.columns]
    if name not in columns:
        shown = ", ".join(repr(c) for c in columns[:12]) + (" ..." if len(columns) > 12 else "")
        raise ValueError(f"{path}: {option} {name!r} is not a column; the columns are {shown}")
    return frame.columns[columns.index(name)]


def _labels(values: Any, family: str, name: str, path: Path, notes: list) -> tuple:
    """(y float64, target names or None): numbers as they are; text classes numbered in sorted
    order, a categorical column's in its categories' order (numbers by value: 10 before 100;
    two classes for the binary families, any number for multinomial), the numbering noted."""
    from pandas import CategoricalDtype
    from pandas.api.types import is_numeric_dtype

    missing = np.flatnonzero(values.isna().to_numpy())
    if len(missing):
        raise ValueError(f"{path}: the label column {name!r} is empty on {len(missing)} row(s), "
                         f"the first data row {int(missing[0]) + 1}")
    if is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype=np.float64), None
    present = {str(v) for v in values.astype(str).unique()}
    classes = ([str(c) for c in values.cat.categories if str(c) in present]
               if isinstance(values.dtype, CategoricalDtype) else sorted(present))
    if family != "multinomial" and len(classes) != 2:
        raise ValueError(f"{path}: the label column {name!r} holds {len(classes)} distinct text "
                         f"values ({', '.join(classes[:5])}{' ...' if len(classes) > 5 else ''}); "
                         "a binary model needs two (or numbers): use --family multinomial, or "
                         "encode the labels as numbers")
    code = {c: float(k) for k, c in enumerate(classes)}
    notes.append(f"labels of {name!r}: " + ", ".join(f"{c!r} -> {k:g}" for c, k in code.items()))
    return values.astype(str).map(code).to_numpy(dtype=np.float64), tuple(classes)


def _encode(X: Any, one_hot: bool, path: Path, notes: list) -> Any:
    """X with its non-numeric columns one-hot encoded (first level dropped, as the reference)
    when asked; else a ValueError naming them."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    pd = _pandas("one-hot encoding")
    text = [c for c in X.columns if not (is_numeric_dtype(X[c].dtype) or is_bool_dtype(X[c]))]
    if text and not one_hot:
        shown = ", ".join(repr(str(c)) for c in text[:8]) + (" ..." if len(text) > 8 else "")
        raise ValueError(f"{path}: column(s) {shown} are not numbers: pass --one-hot to encode "
                         "them as 0/1 columns, or drop them")
    for c in text:
        if X[c].isna().any():
            raise ValueError(f"{path}: column {str(c)!r} has empty cells; fill them (e.g. with "
                             "a value 'missing') before one-hot encoding")
        levels = sorted(str(v) for v in X[c].astype(str).unique())
        notes.append(f"one-hot {str(c)!r}: {len(levels)} values, {len(levels) - 1} columns "
                     f"({levels[0]!r} is the reference, all zeros)")
    if text:
        X = pd.get_dummies(X.astype({c: str for c in text}), columns=text, drop_first=True,
                           dtype=np.float64, prefix_sep="=")
    return X


def load_table(path: Any, *, label: Optional[str] = None, id_column: Optional[str] = None,
               one_hot: bool = False, family: str = "logistic") -> Any:
    """A Dataset from a table, by column name.

    Args:
        path: a ``.csv``, ``.tsv`` or ``.parquet`` file with a header line (column names).
        label: the label column (default: the last column).
        id_column: a column of sample ids (kept as ``Dataset.sample_ids``, not a feature).
        one_hot: encode non-numeric columns as 0/1 columns ``name=value``, the first value in
            sorted order dropped (the reference); without it they are an error that names them.
        family: "multinomial" numbers any number of text classes; the other families need
            numbers or two text classes (numbered 0 and 1 in sorted order; a categorical
            column, as Parquet keeps it, in its categories' order).

    ``Dataset.description`` lists every change made (labels numbered, columns encoded).
    """
    from .datasets import Dataset

    path = Path(path)
    frame = _read(path, id_column)
    if frame.shape[1] < 2:
        raise ValueError(f"{path}: needs at least 2 columns (features and a label), found "
                         f"{frame.shape[1]}")
    if len(frame) == 0:
        raise ValueError(f"{path}: the table has no data rows")
    notes: list = []
    ycol = frame.columns[-1] if label is None else _column(frame, label, "--label", path)
    drop = [ycol]
    ids = None
    if id_column is not None:
        icol = _column(frame, id_column, "--id", path)
        if icol == ycol:
            raise ValueError(f"{path}: --id and --label name the same column {id_column!r}")
        blank = np.flatnonzero(frame[icol].isna().to_numpy())
        if len(blank):
            raise ValueError(f"{path}: the --id column {id_column!r} is empty on {len(blank)} "
                             f"row(s), the first data row {int(blank[0]) + 1}")
        ids = frame[icol].to_numpy()
        if len(set(ids.tolist())) != len(ids):
            raise ValueError(f"{path}: the --id column {id_column!r} repeats ids: they must be "
                             "unique")
        drop.append(icol)
    y, target_names = _labels(frame[ycol], family, str(ycol), path, notes)
    X = _encode(frame.drop(columns=drop), one_hot, path, notes)
    from ._frames import unique_names

    names = unique_names(X.columns, f"{path}: the table (after one-hot encoding)")
    values = np.ascontiguousarray(X.to_numpy(dtype=np.float64, na_value=np.nan))
    bad = np.flatnonzero(~np.isfinite(values).all(axis=0))
    if len(bad):
        names = [str(X.columns[j]) for j in bad[:5]]
        raise ValueError(f"{path}: column(s) {', '.join(map(repr, names))} have empty or "
                         "non-finite cells; fill or drop them")
    if values.shape[1] == 0:
        raise ValueError(f"{path}: no feature columns are left besides the label and ids")
    description = (f"{path.name}: {len(y)} rows, {values.shape[1]} features, label "
                   f"{str(ycol)!r}" + (f", ids {id_column!r}" if ids is not None else ""))
    if notes:
        description += "; " + "; ".join(notes)
    return Dataset(X=values, y=y, texts=None, feature_names=names,
                   name=path.name, description=description, target_names=target_names,
                   sample_ids=ids, notes=notes)
