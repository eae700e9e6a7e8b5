"""One table of per-sample answers, and files that read back equal.

``A.table(directions)`` (:func:`sample_table`) gathers what an Attribution (binary or
multinomial) knows about each sample: its id, label and weight, leverage, residual and RIF
rescale factor, and for each named direction (a metric's gradient) its IF and RIF scores; with
``diagnostics=True`` also the statsmodels-style columns of :mod:`rif_native.diagnostics`.

On disk (``SampleTable.write(path)`` / ``SampleTable.read(path)``, by the file's suffix):

* ``.csv``: a header line with the column names, then one line per sample; ``sample_id`` first.
  Numbers are written in the shortest form that reads back to the same double. A column reads
  back as integers when every cell is an integer written canonically ("7", not "007"), else as
  floats when every cell is a number, else as text; ``sample_id`` reads back as floats only when
  every cell is a float written so ("1.5", "nan"; not "1e3" or "007", which stay text). A CSV
  cannot tell the text "7" from the number 7: text ids that are all canonical numbers read back
  as numbers (JSON and Parquet keep their kind). The run's description (``meta``) is not in
  a CSV.
* ``.json``: ``{"format": "rif-native sample table", "version": 1, "meta": {...},
  "dtypes": {name: "int" | "float" | "bool" | "str"}, "columns": {name: [values, ...]}}``;
  in float columns inf and NaN are the strings "inf", "-inf", "nan".
* ``.parquet`` (needs pyarrow): the columns, with ``meta`` as JSON under the key
  ``rif_native`` in the file's schema metadata.

Sample ids that are neither numbers nor text (dates, tuples) are held, and written, as their
text.

Columns (n rows each): ``sample_id``, ``label``, ``weight``, ``leverage``, ``residual``
(r_i = w_i dloss/dz), ``rescale`` (1 / (1 - h_i)), then ``if_<name>`` and ``rif_<name>`` for
each direction, then the diagnostics' columns when asked. For the multinomial family:
``sample_id``, ``label`` (the class index), ``weight``, ``prob_label`` (the predicted
probability of the sample's class), ``leverage`` (the largest eigenvalue of the K x K
generalised leverage), ``rescale`` (1 / (1 - leverage)), then the score columns; ``meta`` also
holds the class names.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

__all__ = ["SampleTable", "sample_table"]

_FORMAT = "rif-native sample table"
_VERSION = 1


@dataclass
class SampleTable:
    """Per-sample answers as named columns of equal length (see the module's docstring).

    Attributes:
        columns: column name -> (n,) array, in order; ``sample_id`` first.
        meta: what produced them (family, l2, fit_intercept, n, p, directions).
    """

    columns: dict
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __repr__(self) -> str:
        return (f"SampleTable({len(self)} samples; columns {', '.join(self.columns)})")

    def to_frame(self) -> Any:
        """A pandas DataFrame indexed by ``sample_id``."""
        import pandas as pd

        frame = pd.DataFrame({k: v for k, v in self.columns.items() if k != "sample_id"})
        frame.index = pd.Index(self.columns["sample_id"], name="sample_id")
        frame.attrs["rif_native"] = dict(self.meta)
        return frame

    def write(self, path: Union[str, Path]) -> None:
        """Write to ``.csv``, ``.json`` or ``.parquet`` (by suffix), atomically."""
        writer = {".csv": self.to_csv, ".json": self.to_json, ".parquet": self.to_parquet}
        writer[_suffix(path)](path)

    def to_csv(self, path: Union[str, Path]) -> None:
        from ._output import atomic_target

        names = list(self.columns)
        cols = [self.columns[k] for k in names]
        with atomic_target(path) as tmp, open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(names)
            for i in range(len(self)):
                out.writerow([_cell(c[i]) for c in cols])

    def to_json(self, path: Union[str, Path]) -> None:
        from ._output import write_text

        kinds = {k: _kind(v) for k, v in self.columns.items()}
        payload = {"format": _FORMAT, "version": _VERSION, "meta": self.meta, "dtypes": kinds,
                   "columns": {k: [_json_value(x, kinds[k]) for x in v.tolist()]
                               for k, v in self.columns.items()}}
        write_text(path, json.dumps(payload))

    def to_parquet(self, path: Union[str, Path]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ._output import atomic_target

        table = pa.table({k: pa.array(v if _kind(v) != "str" else [str(x) for x in v])
                          for k, v in self.columns.items()})
        table = table.replace_schema_metadata({"rif_native": json.dumps(self.meta)})
        with atomic_target(path) as tmp:
            pq.write_table(table, tmp)

    @classmethod
    def read(cls, path: Union[str, Path]) -> "SampleTable":
        """Read a table written by :meth:`write` (by suffix)."""
        kind = _suffix(path)
        if kind == ".json":
            payload = json.loads(Path(path).read_text())
            if payload.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a {_FORMAT} (no 'format' entry saying so)")
            kinds = payload.get("dtypes", {})
            columns = {k: _typed(v, kinds.get(k)) for k, v in payload["columns"].items()}
            return cls(columns, payload.get("meta", {}))
        if kind == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(b"rif_native", b"{}"))
            return cls({k: table.column(k).to_numpy() for k in table.column_names}, meta)
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            raise ValueError(f"{path} is empty")
        names = rows[0]
        return cls({k: _array([r[j] for r in rows[1:]], exact=k == "sample_id")
                    for j, k in enumerate(names)}, {})


def _suffix(path: Union[str, Path]) -> str:
    kind = Path(path).suffix.lower()
    if kind not in (".csv", ".json", ".parquet"):
        raise ValueError(f"a sample table is written as .csv, .json or .parquet, not {path!r}")
    return kind


def _cell(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        return repr(float(x))  # shortest repr that reads back to the same double
    return str(x)


def _kind(v: np.ndarray) -> str:
    """A column's kind as the files record it."""
    return {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(np.asarray(v).dtype.kind,
                                                                     "str")


def _json_value(x: Any, kind: str) -> Any:
    if kind == "str":
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _typed(values: list, kind: Optional[str]) -> np.ndarray:
    """A JSON column back in its recorded kind."""
    if kind == "float":
        return np.array([float(x) for x in values], dtype=np.float64)
    if kind == "int":
        return _integers(values)
    if kind == "bool":
        return np.array(values, dtype=bool)
    if kind == "str":
        return np.array([str(x) for x in values], dtype=object)
    return _array([str(x) for x in values])


def _array(values: list, exact: bool = False) -> np.ndarray:
    """CSV cells (text) as integers when each is an integer written canonically, else as floats
    when each is a number (``exact``: a float written as ``_cell`` writes it, so that ids such
    as "007" or "1e3" are not merged into numbers), else as text."""
    try:
        if all(str(int(v)) == v for v in values):
            return _integers([int(v) for v in values])
    except ValueError:
        pass
    try:
        floats = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return np.array(values, dtype=object)
    if exact and any(repr(float(v)) != v for v in values):
        return np.array(values, dtype=object)
    return floats


def _integers(values: list) -> np.ndarray:
    """Python ints as int64, or as uint64 where they need it (ids such as 64-bit hashes); NumPy
    alone would make such a column float64 and merge neighbouring ids."""
    for dtype in (np.int64, np.uint64):
        try:
            return np.array(values, dtype=dtype)
        except OverflowError:
            pass
    return np.array(values, dtype=object)


def _ids(ids: Any) -> np.ndarray:
    """Sample ids as integers, floats or text: others (dates, tuples) as their text, which is
    what the files hold and read back."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iuf":
        return ids
    if ids.dtype.kind == "M":  # NumPy dates: the text pandas prints
        import pandas as pd

        return np.array([str(v) for v in pd.DatetimeIndex(ids)], dtype=object)
    return np.array([v if isinstance(v, str) else str(v) for v in ids.tolist()], dtype=object)


def sample_table(A: Any, directions: Optional[Union[Mapping[str, Any], Any]] = None, *,
                 diagnostics: bool = False) -> SampleTable:
    """Every sample's answers from Attribution A as a SampleTable.

    Args:
        directions: a metric's gradient ((p,), or (K, p) for the multinomial family), or
            {name: gradient} for several; a metric object of rif_native.metrics (or
            multiclass_metrics) is taken at A's theta. Each gives ``if_<name>`` and
            ``rif_<name>`` score columns (removal effects on that metric); one unnamed
            direction is named "score".
        diagnostics: add the columns of :func:`rif_native.diagnostics.diagnostics` (binary GLM
            families).
    """
    multinomial = getattr(A, "family", None) == "multinomial"
    if multinomial and diagnostics:
        raise ValueError("diagnostics=True covers the binary GLM families, not multinomial "
                         "(statsmodels' diagnostics are for one linear predictor)")
    if directions is None:
        directions = {}
    elif not isinstance(directions, Mapping):
        directions = {"score": directions}
    cols = {"sample_id": _ids(A.sample_ids)}
    cols.update(_multinomial_columns(A) if multinomial else _binary_columns(A))
    for name, v in directions.items():
        if hasattr(v, "gradient") and callable(v.gradient):
            v = v.gradient(A.theta)
        for method in ("if", "rif"):
            score = np.asarray(A.scores(v, method=method), dtype=np.float64)
            if score.ndim != 1:
                raise ValueError(f"direction {name!r} holds {score.shape[1]} directions: a "
                                 "table takes one per name; pass {name: direction} for each")
            cols[f"{method}_{name}"] = score
    if diagnostics:
        from .diagnostics import diagnostics as diag

        for name, values in diag(A).items():  # a DataFrame, or a dict without pandas
            cols[str(name)] = np.asarray(values, dtype=np.float64)
    meta = {"family": A.family, "l2": A.l2, "fit_intercept": A.fit_intercept, "n": A.n,
            "p": A.n_params, "param_names": list(A.param_names),
            "directions": list(directions)}
    if multinomial:
        labels = getattr(A, "_labels", None)
        classes = None if labels is None else labels.classes
        meta["classes"] = ([str(c) for c in classes] if classes is not None
                           else [str(k) for k in range(A.n_classes)])
    return SampleTable(cols, meta)


def _binary_columns(A: Any) -> dict:
    """label, weight, leverage, residual and rescale of a binary GLM family's Attribution."""
    X, y, w = A._data
    return {"label": np.asarray(y, dtype=np.float64),
            "weight": np.ones(A.n) if w is None else np.asarray(w, dtype=np.float64),
            "leverage": np.asarray(A.leverage, dtype=np.float64),
            "residual": np.asarray(A.residuals, dtype=np.float64),
            "rescale": np.asarray(A.rescale, dtype=np.float64)}


def _multinomial_columns(A: Any) -> dict:
    """A MultinomialAttribution's per-sample columns: the class index as ``label``, weight,
    ``prob_label`` (the predicted probability of the sample's own class), ``leverage`` (the
    largest eigenvalue of its K x K generalised leverage) and ``rescale``, 1 / (1 - leverage):
    the most that RIF's rescaling stretches IF in any direction."""
    pb = A._pb
    w = pb.weight()
    lev = np.asarray(A.leverage, dtype=np.float64)
    with np.errstate(divide="ignore"):
        rescale = 1.0 / (1.0 - lev)
    rescale[A.singular_samples] = np.inf  # (their RIF is inf)
    return {"label": np.asarray(pb.y, dtype=np.int64),
            "weight": np.asarray(w, dtype=np.float64),
            "prob_label": A.probabilities[np.arange(A.n), pb.y].astype(np.float64),
            "leverage": lev, "rescale": rescale}
