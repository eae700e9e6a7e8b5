"""pandas in and out: DataFrame X (and Series y, weights) become arrays plus their labels, and
the answers of an Attribution built from them carry those labels back.

X's column names become the parameter names (the intercept, last, is "const", as statsmodels
names it) and X's index the sample ids. Methods with a parameter axis (IF / RIF rows, group
effects) or a sample axis (scores) then return DataFrames or Series; sample arguments (indices,
sets) stay positions 0..n-1, as NumPy's, and ``A.sample_ids[positions]`` maps them to ids.
pandas is imported only when a pandas object is passed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

INTERCEPT = "const"


def is_pandas(v: Any) -> bool:
    return type(v).__module__.split(".")[0] == "pandas"


def _frame_array(X: Any) -> np.ndarray:
    """A DataFrame's values as one float array; ValueError naming the non-numeric columns."""
    from pandas.api.types import is_numeric_dtype

    bad = [str(c) for c, t in zip(X.columns, X.dtypes) if not is_numeric_dtype(t)]
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ValueError(
            f"X has {len(bad)} column(s) that are not numbers: {shown}. Encode categories first "
            "(pd.get_dummies(X, columns=[...], dtype=float), or rif --one-hot on the command "
            "line) and drop or embed text columns.")
    dtype = np.float32 if all(t == np.float32 for t in X.dtypes) else np.float64
    return np.ascontiguousarray(X.to_numpy(dtype=dtype, na_value=np.nan))


def aligned(v: Any, name: str, index: Any, numeric: bool = True) -> Any:
    """A Series (or one-column DataFrame) as an array, its index checked against X's; with
    ``numeric`` False (scikit-learn's labels) its values are left as they are."""
    if not is_pandas(v):
        return v
    if hasattr(v, "columns"):
        if v.shape[1] != 1:
            raise ValueError(f"{name} must be one column, got a DataFrame with {v.shape[1]}")
        v = v.iloc[:, 0]
    if index is not None and not v.index.equals(index):
        raise ValueError(f"{name}'s index does not match X's: align them first "
                         f"({name} = {name}.loc[X.index]), or pass {name}.to_numpy()")
    from pandas.api.types import is_numeric_dtype

    if not numeric:
        return v.to_numpy()
    if not is_numeric_dtype(v.dtype):
        raise ValueError(f"{name} must hold numbers, got dtype {v.dtype} (encode labels as "
                         "0/1 or 0..K-1 first)")
    return v.to_numpy(dtype=np.float64, na_value=np.nan)


def unique_names(columns: Any, what: str = "X") -> list:
    """Column names as strings; ValueError when two are the same (a name must pick one
    parameter). ``what`` starts the message."""
    names = [str(c) for c in columns]
    seen: set = set()
    repeated = [n for n in names if n in seen or seen.add(n)]
    if repeated:
        raise ValueError(f"{what} has repeated column names {sorted(set(repeated))[:5]}: rename "
                         "them so that each parameter has one name")
    return names


@dataclass
class Labels:
    """The names of X's columns and the ids of its rows (and, for a multinomial model, the
    names of its classes: None for 0..K-1)."""

    features: list
    ids: Any  # a pandas Index
    classes: Optional[list] = None

    def params(self, fit_intercept: bool) -> list:
        """The features' names, then the intercept's: "const", or "(intercept)" when a
        feature is already called "const"."""
        if not fit_intercept:
            return list(self.features)
        return self.features + ["(intercept)" if INTERCEPT in self.features else INTERCEPT]


def unwrap(X: Any, y: Any, sample_weight: Any) -> tuple:
    """(X, y, sample_weight, Labels or None): pandas inputs as arrays, with X's labels."""
    labels = None
    index = None
    if is_pandas(X) and hasattr(X, "columns"):
        labels = Labels(unique_names(X.columns), X.index)
        index = X.index
        X = _frame_array(X)
    return X, aligned(y, "y", index), aligned(sample_weight, "sample_weight", index), labels


def labels_from(names: Optional[Sequence[str]], ids: Any, d: int) -> Optional[Labels]:
    """Labels from feature names (length d, or None: x1..xd) and row ids (None: 0..n-1);
    None when there is neither."""
    if names is None and ids is None:
        return None
    features = [str(s) for s in names] if names is not None else [f"x{j + 1}" for j in range(d)]
    return Labels(features, ids)


def direction(v: Any, names: list) -> Any:
    """A pandas direction (a Series, or a DataFrame of several in columns) aligned by its index
    on the parameter names, in the parameters' order; an index 0..p-1 (pandas' default) is
    taken by position. ValueError for any other index that does not name the parameters."""
    if not is_pandas(v):
        return v
    index = [str(k) for k in v.index]
    if list(v.index) == list(range(len(names))):
        return v.to_numpy(dtype=np.float64)
    where = {k: i for i, k in enumerate(index)}
    missing = [n for n in names if n not in where]
    known = set(names)
    extra = [k for k in index if k not in known]
    if missing or extra or len(where) != len(index):
        raise ValueError(f"the direction's index must name the parameters {names[:5]}"
                         f"{' ...' if len(names) > 5 else ''} (or be 0..p-1); missing "
                         f"{missing[:5]}, unknown {extra[:5]}")
    return v.to_numpy(dtype=np.float64)[[where[n] for n in names]]


class Named:
    """param_names and sample_ids of an attribution object (its ``_labels``, when built from a
    DataFrame or an estimator that names its features)."""

    _labels: Optional[Labels] = None

    @property
    def param_names(self) -> list:
        """Names of theta's entries: X's column names for a DataFrame (else x1..xd), then
        "const" for the intercept."""
        labels = getattr(self, "_labels", None)  # not set on every engine's subclass
        if labels is not None:
            return labels.params(self.fit_intercept)  # type: ignore[attr-defined]
        return ([f"x{j + 1}" for j in range(self.n_features)]  # type: ignore[attr-defined]
                + ([INTERCEPT] if self.fit_intercept else []))  # type: ignore[attr-defined]

    @property
    def sample_ids(self) -> np.ndarray:
        """Each sample's id: X's index for a DataFrame, else 0..n-1. Sample arguments of every
        method are positions; ``sample_ids[positions]`` gives their ids."""
        labels = getattr(self, "_labels", None)
        if labels is not None and labels.ids is not None:
            return np.asarray(labels.ids)
        return np.arange(self.n)  # type: ignore[attr-defined]


def labelled(kind: str) -> Callable:
    """Decorate an Attribution method so that, for an object built from a DataFrame, its
    answer carries the labels: kind "rows" (rows of samples by parameters), "effect" (one set:
    a Series over parameters; several: a DataFrame), "scores" (a Series over samples, or a
    DataFrame for several directions). A Series direction is aligned by parameter name. For
    the multinomial family: "class_rows", "class_effect" (group effects), "class_solve" and
    "class_scores" (whose DataFrame directions are aligned by class and parameter name)."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            labels = getattr(self, "_labels", None)
            if labels is None:
                return method(self, *args, **kwargs)
            params = labels.params(self.fit_intercept)
            columns = None
            if kind == "scores":
                given = args[0] if args else kwargs.get("direction")
                if is_pandas(given) and hasattr(given, "columns"):
                    columns = list(given.columns)  # several directions: their names
                if args:
                    args = (direction(args[0], params),) + args[1:]
                elif "direction" in kwargs:
                    kwargs["direction"] = direction(kwargs["direction"], params)
            elif kind in ("class_scores", "class_solve"):
                classes = labels.classes if labels.classes is not None \
                    else list(range(self.n_classes))
                if args:
                    args = (class_direction(args[0], params, classes),) + args[1:]
                elif "direction" in kwargs:
                    kwargs["direction"] = class_direction(kwargs["direction"], params, classes)
            out = method(self, *args, **kwargs)
            if kind.startswith("class_"):
                rows = None
                if kind == "class_rows":  # the samples the method read, as it reads them
                    indices = args[0] if args else kwargs.get("indices")
                    rows = self._indices(indices)
                return _label_classes(kind, out, labels, params, self.n, self.n_classes, args,
                                      kwargs, rows)
            return _label(kind, out, labels, params, self.n, args, kwargs, columns)

        return call

    return wrap


def class_direction(v: Any, names: list, classes: list) -> Any:
    """A multinomial direction given as a DataFrame (a row per class, a column per parameter)
    with its rows put in the classes' order and its columns in the parameters' order, by name
    (an index 0..K-1 or columns 0..p-1 are taken by position); anything else unchanged."""
    if not (is_pandas(v) and hasattr(v, "columns")):
        return v
    out = v.to_numpy(dtype=np.float64)
    if list(v.columns) != list(range(len(names))):
        given = [str(c) for c in v.columns]
        missing = [n for n in names if n not in given]
        if missing or len(set(given)) != len(given) or len(given) != len(names):
            raise ValueError(f"the direction's columns must name the parameters {names[:5]}"
                             f"{' ...' if len(names) > 5 else ''}; missing {missing[:5]}")
        out = out[:, [given.index(n) for n in names]]
    index = list(v.index)
    if index != list(range(len(classes))):
        where = {str(c): j for j, c in enumerate(index)}
        if len(where) != len(index) or sorted(where) != sorted(str(c) for c in classes):
            raise ValueError(f"the direction's index must name the classes {classes} (or be "
                             f"0..{len(classes) - 1}), got {index[:5]}")
        out = out[[where[str(c)] for c in classes]]
    return out


def _label_classes(kind: str, out: Any, labels: Labels, params: list, n: int, K: int,
                   args: tuple, kwargs: dict, rows: Any = None) -> Any:
    """A multinomial answer with labels: rows (k, K, p), effects and solves ((K, p), or
    (s, K, p) by set or direction) as DataFrames indexed by (sample id, set or direction,
    class) and named by parameter; scores as for the binary family."""
    import pandas as pd

    classes = labels.classes if labels.classes is not None else list(range(K))
    ids = labels.ids if labels.ids is not None else pd.RangeIndex(n)
    if kind == "class_scores":
        return _label("scores", out, labels, params, n, args, kwargs)
    if kind in ("class_effect", "class_solve") and out.ndim == 2:
        return pd.DataFrame(out, index=pd.Index(classes, name="class"), columns=params)
    if kind == "class_rows":
        if kwargs.get("out") is not None:  # written to a file: returned as opened
            return out
        outer = ids[rows]
        name = labels.ids.name if labels.ids is not None and labels.ids.name else "sample"
    else:
        outer = pd.RangeIndex(out.shape[0])
        name = "direction" if kind == "class_solve" else "set"
    index = pd.MultiIndex.from_product([outer, classes], names=[name, "class"])
    return pd.DataFrame(out.reshape(-1, out.shape[-1]), index=index, columns=params)


def _label(kind: str, out: Any, labels: Labels, params: list, n: int, args: tuple,
           kwargs: dict, columns: Optional[list] = None) -> Any:
    import pandas as pd

    ids = labels.ids if labels.ids is not None else pd.RangeIndex(n)
    if kind == "rows":
        if kwargs.get("out") is not None:  # written to a file: returned as opened
            return out
        from ._api import _one_set  # the rows the method read: indices or a mask

        indices = args[0] if args else kwargs.get("indices")
        rows = ids if indices is None else ids[_one_set(indices, n, "indices")]
        return pd.DataFrame(out, index=rows, columns=params)
    if kind == "effect":
        if out.ndim == 1:
            return pd.Series(out, index=params)
        return pd.DataFrame(out, columns=params)
    if out.ndim == 1:
        return pd.Series(out, index=ids)
    return pd.DataFrame(out, index=ids, columns=columns)
