"""The Dask engine: attribution, fitting and exact retraining for a Dask array X chunked by rows,
or for X left in its store and opened by the workers themselves (``backend="dask"`` with a
``.npy`` path, shards, Zarr or HDF5: :mod:`rif_native._dask_sources`).

Each pass over X is one task per row chunk, run where the chunk lives with the native per-chunk
kernels (``_core.chunk_hessian``, ``chunk_gradients``, ``chunk_leverage``); partial sums come
back through a tree reduction (at most eight per node), so only p x p matrices and p-vectors
travel. The client factors H once and broadcasts the factor once (``Client.scatter(...,
broadcast=True)`` on a distributed cluster); leverages, residuals, scores and IF / RIF rows stay
with their chunks as lazy Dask arrays. Sets' rows (group effects, Newton steps, retraining) are
gathered to the client, where the k x p and p x p algebra runs.

With an intercept the chunks share one centred parametrisation, as the in-memory kernel does
(X's weighted column means, one extra pass; see ``Design::set_centre``). Every task runs the
kernel on ``num_threads`` threads (default 1: Dask's workers supply the parallelism).

On a distributed cluster X is persisted on the workers (read from its store once, every later
pass reading the workers' memory) when it takes at most a share of their memory: the Dask
config key ``rif_native.persist-share`` (default 0.5 of the workers' summed ``memory_limit``; 0
never persists). A larger X is read from its store on every pass.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional

import numpy as np

from . import _core, _finite, _progress, sources
from ._api import (
    Attribution,
    ConvergenceWarning,
    FitResult,
    NotPositiveDefiniteError,
    RetrainResult,
    SingularRemovalWarning,
    _check_some_weight,
    _check_stopping,
    _flag,
    _family,
    _top,
    _method,
    _name_some,
    _one_set,
    _parse_sets,
    _real,
    _METHODS,
    retrain_advice,
    singular_advice,
)
from ._dask_sources import (TASK_BYTES, StoredRows, StoredSource, opened, row_arrays,
                            stored_instead)
from .metrics import _dloss  # (logistic: no overflow, no cancellation in 1 - sigma(z))

_SINGULAR = 1e-10  # rescale is inf when 1 - h_i is within this of 0 (the kernel's tolerance)
_FAN_IN = 8
_CHORD_ITERATIONS = 10  # chord steps before a set falls back to Newton with fresh Hessians
_PERSIST_SHARE = 0.5  # of the workers' memory that X may take to be persisted there
_NONFINITE = "X contains NaN or inf"  # how the kernels' messages about X's entries begin


def is_dask_array(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "to_delayed")


def _client() -> Any:
    """The distributed Client that dask.compute would use now, or None (Dask's local
    schedulers, or one chosen with dask.config.set(scheduler=...))."""
    try:
        from dask.base import get_scheduler
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return None
    return client if get_scheduler() == client.get else None


def _persists(X: Any, client: Any) -> bool:
    """Whether X fits in its share of the workers' memory (module docstring); False when a
    worker has no memory limit to go by."""
    import dask

    share = float(dask.config.get("rif_native.persist-share", _PERSIST_SHARE))
    limits = [w.get("memory_limit") or 0
              for w in client.scheduler_info().get("workers", {}).values()]
    if share <= 0 or not limits or not all(limits):
        return False
    return float(X.nbytes) <= share * float(sum(limits))


def _add(*parts: dict) -> dict:
    """The sum of partial sums; an overflow gives inf silently (the callers check for it)."""
    out = dict(parts[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for p in parts[1:]:
            for k, v in p.items():
                out[k] = out[k] + v
    return out


def _tree_sum(parts: list) -> Any:
    """The sum of delayed dicts of partial sums (or of futures holding them), as a tree of at
    most _FAN_IN per node: always a delayed object, also for one part."""
    from dask import delayed

    while True:
        parts = [delayed(_add, pure=True)(*parts[i:i + _FAN_IN])
                 for i in range(0, len(parts), _FAN_IN)]
        if len(parts) == 1:
            return parts[0]


def _check_labels(family: str, y: np.ndarray, w: Optional[np.ndarray]) -> None:
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or inf")
    if family == "logistic" and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("logistic labels y must be 0 or 1")
    if family == "poisson" and (y < 0).any():
        raise ValueError("poisson counts y must be >= 0")
    if w is not None and (not np.isfinite(w).all() or (w < 0).any()):
        raise ValueError("sample_weight must be finite and >= 0")


class _Chunks:
    """X's row chunks with y and w cut alike, kept on the workers; runs one task per chunk."""

    def __init__(self, X: Any, y: np.ndarray, w: Optional[np.ndarray], family: str,
                 fit_intercept: bool, threads: int, progress: bool = False) -> None:
        client = _client()
        self.progress, self.passes = progress, 0  # a bar per pass; passes made so far
        self.stored: Optional[StoredSource] = None
        self.source = X  # as given: the files an out= target may not touch (_targets)
        self.persisted = False
        if isinstance(X, StoredSource):  # the workers open it: each task carries its rows' range
            import dask
            from dask.utils import parse_bytes

            self.stored = X
            self.bounds = X.task_bounds(parse_bytes(dask.config.get("rif_native.task-bytes",
                                                                    TASK_BYTES)))
            self.blocks: list = [StoredRows(X, a, b)
                                 for a, b in zip(self.bounds[:-1], self.bounds[1:])]
        else:
            X = self._dask_rows(X, client)
            self.bounds = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
            self.blocks = list(X.to_delayed().ravel())
        self.X, self.family, self.fit_intercept, self.threads = X, family, fit_intercept, threads
        self.n, self.d = int(X.shape[0]), int(X.shape[1])
        self.y = y
        self.w = w
        self.client = client
        self.y_blocks = self.cut(y)  # labels and weights go to the workers once
        self.w_blocks = [None] * len(self.blocks) if w is None else self.cut(w)
        self.centre: Optional[np.ndarray] = None

    def cut(self, v: np.ndarray) -> list:
        """An n-vector in X's row chunks: scattered to the workers as futures on a distributed
        cluster (not embedded in every graph), slices otherwise."""
        pieces = [v[a:b] for a, b in zip(self.bounds[:-1], self.bounds[1:])]
        # (unhashed keys: equal pieces scattered again, e.g. the all-ones weights of the column
        # means, must not share a key with futures being released, which loses them)
        return self.client.scatter(pieces, hash=False) if self.client is not None else pieces

    def _dask_rows(self, X: Any, client: Any) -> Any:
        """A Dask array X with whole rows per chunk, float32 or float64, persisted on the
        workers when it fits (module docstring)."""
        if np.dtype(X.dtype).kind not in "biuf":
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})  # whole rows in each chunk
        if 0 in X.chunks[0]:  # empty row chunks dropped: every task has rows
            X = X.rechunk({0: tuple(c for c in X.chunks[0] if c)})
        if np.dtype(X.dtype) not in (np.float32, np.float64):
            X = X.astype(np.float64)
        self.persisted = client is not None and _persists(X, client)
        if self.persisted:  # read from its store once (in the background, chunk by chunk)
            X = X.persist()
        return X

    @property
    def reading(self) -> str:
        """How the tasks get X's rows (for repr)."""
        if self.stored is not None:
            return f"opened by the workers ({self.stored.describe()})"
        return "persisted on the workers" if self.persisted else "read from its store each pass"

    def map(self, fn: Callable, *args: Any, weights: Optional[list] = None) -> list:
        """One delayed fn(block, y, w, *args) per chunk."""
        from dask import delayed

        w_blocks = self.w_blocks if weights is None else weights
        return [delayed(fn, pure=True)(b, yb, wb, *args)
                for b, yb, wb in zip(self.blocks, self.y_blocks, w_blocks)]

    def weights_without(self, idx: np.ndarray) -> list:
        """The problem's weights with samples idx at 0, cut like X: only the chunks that hold
        them are sent again, the others are the problem's own."""
        idx = np.asarray(idx, dtype=np.int64)
        blocks = list(self.w_blocks)
        touched = np.unique(np.searchsorted(self.bounds, idx, side="right") - 1)
        pieces = []
        for c in touched:
            a, b = int(self.bounds[c]), int(self.bounds[c + 1])
            piece = np.ones(b - a) if self.w is None else self.w[a:b].copy()
            piece[idx[(idx >= a) & (idx < b)] - a] = 0.0
            pieces.append(piece)
        if pieces and self.client is not None:
            pieces = self.client.scatter(pieces, hash=False)
        for c, piece in zip(touched, pieces):
            blocks[c] = piece
        return blocks

    def column_means(self) -> np.ndarray:
        """X's (weighted) column means: weights the problem's, all 1 if it has none or they
        sum to 0."""
        weighted = self.w is not None and self.w.sum() > 0
        blocks = self.w_blocks if weighted else [None] * len(self.blocks)
        total = self.summed(self.map(_weighted_sum, weights=blocks), "column means")
        if not np.isfinite(total["s"]).all():
            raise self.nonfinite() or ValueError("X's column sums overflow float64: rescale X")
        return total["s"] / (float(self.w.sum()) if weighted else float(self.n))

    def nonfinite(self) -> Optional[ValueError]:
        """X's first NaN or inf named as the in-memory kernel names it (row and column of X,
        not of a chunk), found by one more pass; None if X has none."""
        import dask

        for begin, hit in zip(self.bounds, dask.compute(*self.map(_first_nonfinite))):
            if hit is not None:
                return ValueError(f"X contains NaN or inf (first at row {int(begin) + hit[0]}, "
                                  f"column {hit[1]})")
        return None

    def hessian(self, theta: np.ndarray, weights: Optional[list] = None) -> dict:
        """{H (no penalty), g = X^T r (no penalty), loss} at the kernel's theta, over all chunks."""
        parts = self.map(_chunk_hessian, theta, self.family, self.fit_intercept, self.centre,
                         self.threads, weights=weights)
        total = self.summed(parts, "Hessian")
        # (the Hessian kernel leaves z unchecked: a NaN or inf in X shows as a sum that is one)
        if not all(np.isfinite(v).all() for v in total.values()):
            found = self.nonfinite()
            if found is not None:
                raise found
        return total

    def gradients(self, thetas: np.ndarray, weights: Optional[list] = None) -> dict:
        """{G (m, p): X^T r(X theta_j), loss (m,)} for the rows theta_j (kernel's), no penalty."""
        parts = self.map(_chunk_gradients, np.ascontiguousarray(thetas), self.family,
                         self.fit_intercept, self.centre, self.threads, weights=weights)
        return self.summed(parts, "gradient" if len(thetas) == 1 else "line search")

    def summed(self, parts: list, what: str) -> dict:
        """The tree sum of the chunks' partial sums (delayed dicts), one pass."""
        import dask

        return self._run(parts, what, lambda ps: dask.compute(_tree_sum(ps))[0])

    def kept(self, parts: list, what: str) -> list:
        """The chunks' results (delayed), computed and kept where they are, one pass."""
        import dask

        return self._run(parts, what, lambda ps: list(dask.persist(*ps)))

    def _run(self, parts: list, what: str, compute: Callable[[list], Any]) -> Any:
        """_pass(...), where a chunk's NaN or inf, which its kernel names by its row in the
        chunk, is named by its row in X."""
        try:
            return self._pass(parts, what, compute)
        except ValueError as e:
            found = self.nonfinite() if str(e).startswith(_NONFINITE) else None
            if found is None:
                raise
            raise found from None

    def _pass(self, parts: list, what: str, compute: Callable[[list], Any]) -> Any:
        """compute(parts), under a progress bar of the chunk tasks done when self.progress: on
        a distributed cluster compute then gets their futures, once all are done."""
        self.passes += 1
        if not self.progress:
            return compute(parts)
        with _progress.bar(desc=f"Dask pass {self.passes} ({what})", total=len(parts),
                           unit="chunk") as bar:
            if self.client is None:  # Dask's local schedulers: told of every finished task
                from dask.callbacks import Callback

                keys = {p.key for p in parts}

                def tick(key: Any, *_: Any) -> None:
                    if key in keys:
                        bar.update(1)

                with Callback(posttask=tick):
                    return compute(parts)
            from distributed import as_completed

            held = self.client.compute(parts)  # the chunks' results, kept on their workers
            for _ in as_completed(held):
                bar.update(1)
        return compute(held)  # (a chunk that failed raises here)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """X's rows idx, gathered to the client (kernel's layout: centred, ones column)."""
        if len(idx) == 0:
            return np.empty((0, self.d + int(self.fit_intercept)))
        order = np.argsort(idx, kind="stable")
        got = np.asarray(self.stored.take(idx[order]) if self.stored is not None
                         else self.X[idx[order]].compute(), dtype=np.float64)
        raw = np.empty_like(got)
        raw[order] = got
        return self.kernel_rows(raw)

    def kernel_rows(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if not self.fit_intercept:
            return raw
        centred = raw - self.centre if self.centre is not None else raw
        return np.hstack([centred, np.ones((len(raw), 1))])


# -- the tasks (module-level functions: they are sent to the workers)

# (X is the chunk's rows, or StoredRows that the task opens where it runs: _task)

def _task(fn: Callable) -> Callable:
    """A chunk task fn(X, ...) whose X is opened where it runs, for the task's length."""
    @functools.wraps(fn)
    def run(X: Any, *args: Any) -> Any:
        with opened(X) as rows:
            return fn(rows, *args)
    return run


@_task
def _weighted_sum(X: Any, y: np.ndarray, w: Optional[np.ndarray]) -> dict:
    """{s: sum_i w_i x_i} over the chunk's rows (w None: all 1); an overflow gives inf
    silently (column_means checks for it)."""
    s, begin = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for rows in row_arrays(X):
            rows = np.asarray(rows, dtype=np.float64)
            s = s + (rows.sum(axis=0) if w is None
                     else np.asarray(w[begin:begin + len(rows)], dtype=np.float64) @ rows)
            begin += len(rows)
    return {"s": s}


@_task
def _first_nonfinite(X: Any, y: np.ndarray, w: Optional[np.ndarray]) -> Optional[tuple]:
    """(row, column) in the chunk of its first NaN or inf (row by row), or None."""
    begin = 0
    for rows in row_arrays(X):
        bad = ~np.isfinite(np.asarray(rows))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            return begin + int(i), int(j)
        begin += len(rows)
    return None


@_task
def _chunk_hessian(X, y, w, theta, family, fit_intercept, centre, threads) -> dict:
    return dict(_core.chunk_hessian(X, y, w, theta, family, fit_intercept, centre,
                                    threads))


@_task
def _chunk_gradients(X, y, w, thetas, family, fit_intercept, centre, threads) -> dict:
    return dict(_core.chunk_gradients(X, y, w, thetas, family, fit_intercept,
                                      centre, threads))


@_task
def _chunk_leverage(X, y, w, theta, family, fit_intercept, centre, factor, threads) -> dict:
    return dict(_core.chunk_leverage(X, y, w, theta, family, fit_intercept, centre,
                                     factor, threads))


_SCORE_ROWS = 4096  # rows converted to float64 at a time: a block that stays in cache


@_task
def _chunk_projection(X, U, centre, fit_intercept) -> np.ndarray:
    """x~_i . U for the chunk's rows (its scores before the per-sample factors: shared by the IF
    and RIF scores of the same directions, one read of the chunk for both)."""
    d = X.shape[1]
    Z = np.empty((X.shape[0], U.shape[1]))
    begin = 0
    for rows in row_arrays(X):
        for b in range(0, len(rows), _SCORE_ROWS):
            part = np.asarray(rows[b:b + _SCORE_ROWS], dtype=np.float64)
            Z[begin + b:begin + b + len(part)] = part @ U[:d]
        begin += len(rows)
    if fit_intercept:
        Z += U[d] - (centre @ U[:d] if centre is not None else 0.0)
    return Z


def _chunk_scores(Z, per_sample, rescaled) -> np.ndarray:
    """s_i = r_i x~_i . U (over 1 - h_i when rescaled) from the chunk's projections Z."""
    S = per_sample["r"][:, None] * Z
    if rescaled:
        S = S * _rescale(per_sample["h"])[:, None]
    return S


def _chunk_scores_by(Z, per_sample, flags) -> np.ndarray:
    """_chunk_scores for each rescaled flag, stacked: (len(flags), rows, m)."""
    return np.stack([_chunk_scores(Z, per_sample, rescaled) for rescaled in flags])


@_task
def _chunk_rows(X, per_sample, Hinv, centre, fit_intercept, rescaled) -> np.ndarray:
    """IF (or RIF) rows of the chunk in the user's parameters."""
    Xf = np.concatenate([np.asarray(rows, dtype=np.float64) for rows in row_arrays(X)])
    d = Xf.shape[1]
    if fit_intercept:
        Xk = np.hstack([Xf - centre if centre is not None else Xf, np.ones((len(Xf), 1))])
    else:
        Xk = Xf
    coef = per_sample["r"] * (_rescale(per_sample["h"]) if rescaled else 1.0)
    R = (Xk @ Hinv) * coef[:, None]
    if fit_intercept and centre is not None:
        R[:, d] -= R[:, :d] @ centre
    return R


def _write_chunks(out: Any, parts: list, bounds: np.ndarray, cols: int, reads: Any) -> Any:
    """Writes the chunks' rows (parts[c]: rows [bounds[c], bounds[c + 1]), a lazy array) to
    the out= target block by block, each chunk computed once (the last two kept)."""
    from ._targets import write_rows

    held: dict = {}

    def fill(a: int, b: int) -> np.ndarray:
        pieces = []
        for c in range(int(np.searchsorted(bounds, a, side="right")) - 1, len(parts)):
            if bounds[c] >= b:
                break
            if c not in held:
                held[c] = np.asarray(parts[c].compute())
                for old in [k for k in held if k < c - 1]:
                    del held[old]
            lo, hi = max(a, bounds[c]), min(b, bounds[c + 1])
            pieces.append(held[c][lo - bounds[c]:hi - bounds[c]])
        return np.concatenate(pieces)

    block = max(1, (16 << 20) // (8 * cols))
    return write_rows(out, int(bounds[-1]), cols, block, fill, reads=reads)


def _get(result: dict, key: str) -> np.ndarray:
    return result[key]


def _rescale(h: np.ndarray) -> np.ndarray:
    gap = 1.0 - h
    with np.errstate(divide="ignore"):
        return np.where(gap <= _SINGULAR, np.inf, 1.0 / np.maximum(gap, _SINGULAR))


# -- the parametrisation (as in design.hpp: theta~_b = theta_b + c . theta_beta)

class _Params:
    def __init__(self, d: int, centre: Optional[np.ndarray]) -> None:
        self.d, self.c = d, centre

    def point_to_kernel(self, v: np.ndarray) -> np.ndarray:
        v = np.array(v, dtype=np.float64)
        if self.c is not None:
            v[..., self.d] += v[..., :self.d] @ self.c
        return v

    def point_to_user(self, v: np.ndarray) -> np.ndarray:
        v = np.array(v, dtype=np.float64)
        if self.c is not None:
            v[..., self.d] -= v[..., :self.d] @ self.c
        return v

    def dual_to_kernel(self, g: np.ndarray) -> np.ndarray:
        g = np.array(g, dtype=np.float64)
        if self.c is not None:
            g[..., :self.d] -= g[..., self.d:self.d + 1] * self.c
        return g

    def dual_to_user(self, g: np.ndarray) -> np.ndarray:
        g = np.array(g, dtype=np.float64)
        if self.c is not None:
            g[..., :self.d] += g[..., self.d:self.d + 1] * self.c
        return g

    def user_norm(self, g: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.dual_to_user(g), axis=-1)


def _penalty(theta: np.ndarray, d: int, l2: float) -> np.ndarray:
    out = np.zeros_like(theta)
    out[..., :d] = l2 * theta[..., :d]
    return out


def _factor(H: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        raise NotPositiveDefiniteError(
            f"{what} is not positive definite: add a ridge penalty l2 > 0, or remove constant, "
            "duplicate or collinear features of X") from None


def _cho_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """H^{-1} B from the factor L of H (two triangular solves, through NumPy's solver)."""
    return np.linalg.solve(L.T, np.linalg.solve(L, B))


def _setup(X: Any, y: Any, theta: Any, sample_weight: Any, family: str, fit_intercept: bool,
           num_threads: Optional[int], theta_name: str, progress: Optional[bool],
           fit_l2: Optional[float] = None) -> tuple:
    """(the chunks, theta as given); for a fit (fit_l2 its l2), weights that leave it no data
    are refused before any pass over X."""
    sources.check_known_shape(X)
    # a source the workers open themselves, as is a Dask array straight from a Zarr store
    X = StoredSource(X) if not is_dask_array(X) else stored_instead(X)
    y = np.ascontiguousarray(np.asarray(y.compute() if is_dask_array(y) else y), dtype=np.float64)
    w = None
    if sample_weight is not None:
        sw = sample_weight.compute() if is_dask_array(sample_weight) else sample_weight
        w = np.ascontiguousarray(np.asarray(sw), dtype=np.float64)
    if len(X.shape) != 2:
        raise ValueError(f"X must be 2-D (n samples x d features), got shape {X.shape}")
    n, d = int(X.shape[0]), int(X.shape[1])
    if n == 0 or d == 0:
        raise ValueError(f"X must have at least one row and one column, got shape {(n, d)}")
    if y.shape != (n,):
        raise ValueError(f"y must have {n} entries (one label per row of X), got shape {y.shape}")
    if w is not None and w.shape != (n,):
        raise ValueError(f"sample_weight must have {n} entries, got shape {w.shape}")
    _check_labels(family, y, w)
    if fit_l2 is not None:
        _check_some_weight(w, fit_intercept, fit_l2)
    p = d + int(fit_intercept)
    t = None
    if theta is not None:
        t = np.ascontiguousarray(np.asarray(theta), dtype=np.float64)
        if t.shape != (p,):
            raise ValueError(f"{theta_name} must have {p} entries ({d} features"
                             f"{' + intercept, last' if fit_intercept else ''}), got {t.shape}")
        if not np.isfinite(t).all():
            raise ValueError(f"{theta_name} contains NaN or inf")
    threads = 1 if num_threads is None else int(num_threads)
    chunks = _Chunks(X, y, w, family, fit_intercept, threads, _progress.wanted(progress))
    if fit_intercept:
        chunks.centre = chunks.column_means()
    return chunks, t


class DaskAttribution(Attribution):
    """:class:`Attribution` for a Dask array X chunked by rows (made by ``Attribution(X, ...)``
    for such an X; ``backend="cpu"`` reads it on the client instead). Same methods; leverage,
    rescale, residuals, curvature, scores and IF / RIF rows are lazy Dask arrays, computed
    where X's chunks live (``directions`` are checked and keep nothing: each scores array is
    its own pass when computed). See :mod:`rif_native._dask` for what runs where."""

    def __init__(self, X: Any, y: Any, theta: Any, *, l2: float = 0.0, family: str = "logistic",
                 sample_weight: Any = None, fit_intercept: bool = False,
                 num_threads: Optional[int] = None, backend: Optional[str] = None,
                 max_memory: Any = None, progress: Optional[bool] = None,
                 precision: str = "double", directions: Any = None) -> None:
        import dask.array as da

        from ._api import _direction_matrix, _precision

        if _precision(precision) != "double":
            raise ValueError("precision='mixed' is for attributions in this process; the Dask "
                             "engine computes in float64 (or pass backend='cpu')")
        self.family, self.l2 = _family(family), _real(l2, "l2")
        if not self.l2 >= 0 or not np.isfinite(self.l2):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
        self.fit_intercept = _flag(fit_intercept, "fit_intercept")
        self.backend, self._progress, self._max_memory = "dask", progress, max_memory
        self._chunks, t = _setup(X, y, theta, sample_weight, self.family, self.fit_intercept,
                                 num_threads, "theta", progress)
        ch = self._chunks
        self._threads = ch.threads
        self.n, self.n_features = ch.n, ch.d
        self.n_params = ch.d + int(self.fit_intercept)
        if directions is not None:  # checked as in-process; the scores stay lazy chunk tasks
            _direction_matrix(directions, self.n_params, "directions")
        self._params = _Params(ch.d, ch.centre)
        self._user_theta = t
        self._theta = self._params.point_to_kernel(t)
        total = ch.hessian(self._theta)
        H = total["H"]
        H[np.arange(ch.d), np.arange(ch.d)] += self.l2
        self._H = H
        self._L = _factor(H, "The Hessian H = X^T diag(a) X + l2 P at theta")
        self._gradient = total["g"] + _penalty(self._theta, ch.d, self.l2)
        self._Hinv: Optional[np.ndarray] = None
        client = _client()
        factor = client.scatter(self._L, broadcast=True) if client is not None else self._L
        # one task per chunk, persisted: h, r, a stay where the chunk is
        passes = ch.map(_chunk_leverage, self._theta, self.family, self.fit_intercept, ch.centre,
                        factor, ch.threads)
        self._per_sample = ch.kept(passes, "leverage")
        sizes = np.diff(ch.bounds)

        def lazy(key: str) -> Any:
            from dask import delayed

            return da.concatenate([da.from_delayed(delayed(_get, pure=True)(r, key), (int(s),),
                                                   dtype=np.float64)
                                   for r, s in zip(self._per_sample, sizes)])
        self._lazy = lazy
        self._leverage = lazy("h")
        self._rescale = self._leverage.map_blocks(_rescale, dtype=np.float64)
        self._data = (None, ch.y, ch.w)

    # -- per-sample quantities (lazy)
    @property
    def theta(self) -> np.ndarray:
        return self._user_theta.copy()

    @property
    def residuals(self) -> Any:
        return self._lazy("r")

    @property
    def curvature(self) -> Any:
        return self._lazy("a")

    @property
    def singular_samples(self) -> np.ndarray:
        return np.flatnonzero(np.isinf(np.asarray(self._rescale.compute())))

    @property
    def gradient_norm(self) -> float:
        return float(self._params.user_norm(self._gradient))

    @property
    def timings(self) -> dict:
        return {}

    def hessian(self) -> np.ndarray:
        """H in the user's parameters (T^T H~ T)."""
        T = np.eye(self.n_params)
        if self._params.c is not None:
            T[self.n_features, :self.n_features] = self._params.c
        return T.T @ self._H @ T

    def solve(self, v: Any) -> np.ndarray:
        """H^{-1} v (user's parameters) for v of shape (p,) or (p, m)."""
        K = self._params.dual_to_kernel(self._directions(v, "v"))  # (m, p) kernel duals
        out = self._params.point_to_user(self._kernel_solve(K.T).T).T
        return out[:, 0] if np.ndim(v) == 1 else out

    def _kernel_solve(self, B: np.ndarray) -> np.ndarray:
        return _cho_solve(self._L, B)

    def _inverse(self) -> np.ndarray:
        if self._Hinv is None:
            self._Hinv = self._kernel_solve(np.eye(self.n_params))
        return self._Hinv

    # -- per-sample estimates (lazy)
    def scores(self, direction: Any, method: str = "rif") -> Any:
        """Lazy (n,) or (n, m) Dask array of <direction, estimate_i>; see Attribution.scores."""
        import dask.array as da
        from dask import delayed

        rescaled = _method(method, ("if", "rif")) == "rif"
        Z, m = self._projections(direction)
        parts = [da.from_delayed(delayed(_chunk_scores, pure=True)(z, r, rescaled),
                                 (int(s), m), dtype=np.float64)
                 for z, r, s in zip(Z, self._per_sample, np.diff(self._chunks.bounds))]
        out = da.concatenate(parts)
        return out[:, 0] if np.ndim(direction) == 1 else out

    def _projections(self, direction: Any) -> tuple:
        """(per chunk the delayed x~_i . U with U = H^{-1} V at the kernel point, (rows, m);
        m). The tasks are pure: the projections of the same directions have the same keys, so
        that IF and RIF scores computed together read each chunk once."""
        from dask import delayed

        V = self._directions(direction, "direction")  # (m, p)
        U = self._kernel_solve(self._params.dual_to_kernel(V).T)  # (p, m), kernel point
        ch = self._chunks
        return [delayed(_chunk_projection, pure=True)(b, U, ch.centre, self.fit_intercept)
                for b in ch.blocks], V.shape[0]

    def scores_now(self, direction: Any, methods: tuple = ("rif", "if")) -> list:
        """The scores of ``direction`` by each of ``methods``, as NumPy arrays, computed now on
        one pass over X (each chunk read once for all of them; a progress bar with
        ``progress``), where computing the lazy :meth:`scores` arrays one by one reads X once
        for each."""
        from dask import delayed

        if isinstance(methods, str):
            methods = (methods,)
        if len(methods) == 0:
            raise ValueError("scores_now needs at least one method ('rif' or 'if')")
        flags = tuple(_method(m, ("if", "rif")) == "rif" for m in methods)
        parts = [delayed(_chunk_scores_by, pure=True)(z, r, flags)
                 for z, r in zip(self._projections(direction)[0], self._per_sample)]
        import dask

        # (k, n, m); the parts delayed objects or futures
        done = self._chunks._run(
            parts, "scores", lambda ps: dask.compute(delayed(np.concatenate)(ps, axis=1))[0])
        return [S[:, 0] if np.ndim(direction) == 1 else S for S in done]

    def _rows(self, indices: Any, rescaled: bool, out: Any = None) -> Any:
        import dask.array as da
        from dask import delayed

        from ._targets import check_target, write_rows

        ch = self._chunks
        if out is not None:
            check_target(out, ch.source)  # (before any rows are read)
        Hinv = self._inverse()
        if indices is not None:
            idx = _one_set(indices, self.n, "indices")
            Xk = ch.rows(idx)
            r = np.asarray(self.residuals[idx].compute()) if len(idx) else np.empty(0)
            coef = r * (np.asarray(self._rescale[idx].compute()) if rescaled else 1.0)
            rows = self._params.point_to_user((Xk @ Hinv) * coef[:, None])
            if rescaled:
                self._warn_samples(idx[np.isinf(coef)])
            if out is None:
                return rows
            return write_rows(out, len(idx), self.n_params, max(1, len(idx)),
                              lambda a, b: rows[a:b], reads=ch.source)
        parts = [da.from_delayed(delayed(_chunk_rows, pure=True)(
            b, r, Hinv, ch.centre, self.fit_intercept, rescaled),
            (int(s), self.n_params), dtype=np.float64)
            for b, r, s in zip(ch.blocks, self._per_sample, np.diff(ch.bounds))]
        if out is None:
            return da.concatenate(parts)
        return _write_chunks(out, parts, ch.bounds, self.n_params, ch.source)

    def top(self, direction: Any, k: int = 10, method: str = "rif") -> Any:
        """As Attribution.top (the scores, an n-vector per direction, are computed)."""
        return _top(np.asarray(self.scores(direction, method).compute()), self.n, k)

    # -- group estimates (sets' rows gathered to the client)
    def group_effect(self, sets: Any, method: str = "rif") -> np.ndarray:
        method = _method(method, _METHODS)
        indices, offsets, single = _parse_sets(sets, self.n)
        Xk = self._chunks.rows(indices)
        per = self._sample_values(indices)
        out = np.empty((len(offsets) - 1, self.n_params))
        singular = []
        for j in range(len(offsets) - 1):
            sl = slice(offsets[j], offsets[j + 1])
            g = Xk[sl].T @ per["r"][sl]
            if method == "if":
                out[j] = self._kernel_solve(Xk[sl].T @ per["r"][sl])
            elif method == "rif":
                out[j] = self._kernel_solve(Xk[sl].T @ (per["r"][sl] * _rescale(per["h"][sl])))
            else:
                U = Xk[sl] * np.sqrt(per["a"][sl])[:, None]
                try:
                    out[j] = _cho_solve(np.linalg.cholesky(self._H - U.T @ U), g)
                except np.linalg.LinAlgError:
                    out[j] = np.inf
                    singular.append(j)
        out = self._params.point_to_user(out)
        if singular:
            warnings.warn(f"removing set(s) {_name_some(np.asarray(singular))} makes the Hessian "
                          f"singular: their Newton step is inf. {singular_advice(self.l2)}",
                          SingularRemovalWarning, stacklevel=2)
        return out[0] if single else out

    def _sample_values(self, idx: np.ndarray) -> dict:
        if len(idx) == 0:
            return {k: np.empty(0) for k in ("r", "a", "h")}
        import dask

        r, a, h = dask.compute(self.residuals[idx], self.curvature[idx], self._leverage[idx])
        return {"r": np.asarray(r), "a": np.asarray(a), "h": np.asarray(h)}

    def retrain(self, sets: Any, *, tol: float = 1e-10, max_iter: int = 100,
                show_progress: bool = False, batch: int = 16) -> RetrainResult:
        """Exact refits without each set, all sets together: chord steps with H_{-T} at theta_hat
        (one distributed gradient pass per iteration for all sets), then Newton steps with fresh
        distributed Hessians for sets still short of the tolerance after a few. Stops on
        ||grad F_{-T}|| <= tol * max(1, ||grad F_{-T}(0)||), as Attribution.retrain."""
        _check_stopping(tol, max_iter, batch)
        indices, offsets, single = _parse_sets(sets, self.n)
        result = _Retrain(self, indices, offsets, float(tol), int(max_iter)).run()
        infinite = self._one_kind_left(result, indices, offsets)
        if single:
            result = {k: v[0] for k, v in result.items()}
        bad = np.flatnonzero(~np.atleast_1d(result["converged"]) & ~infinite)
        if len(bad):
            n_iter = np.atleast_1d(result["n_iter"])[bad]
            warnings.warn(f"retrain of set(s) {_name_some(bad)} stopped above the tolerance; "
                          f"{retrain_advice(self.l2, n_iter, int(max_iter))}.",
                          ConvergenceWarning, stacklevel=2)
        return RetrainResult(**result)

    def _one_kind_left(self, result: dict, indices: np.ndarray,
                       offsets: np.ndarray) -> np.ndarray:
        """Sets (a mask) that leave an unpenalised intercept one kind of label: no finite refit
        (rif_native._finite), so converged False, with a warning. (The separation checks of
        l2 = 0 are the in-process engine's: they read X.)"""
        if not self.fit_intercept or self.family not in ("logistic", "poisson"):
            return np.zeros(len(offsets) - 1, dtype=bool)
        ch = self._chunks
        infinite = _finite.one_kind_sets(np.asarray(ch.y), _finite.live_samples(ch.w, self.n),
                                         self.family, indices, offsets, result["converged"])
        if infinite.any():
            result["converged"][infinite] = False
            warnings.warn(_finite.no_finite_refit(_name_some(np.flatnonzero(infinite)),
                                                  _finite.one_kind_clause(self.family)),
                          ConvergenceWarning, stacklevel=3)
        return infinite

    def __repr__(self) -> str:
        return (f"DaskAttribution(n={self.n}, d={self.n_features}, family={self.family!r}, "
                f"l2={self.l2:g}, fit_intercept={self.fit_intercept}, "
                f"chunks={len(self._chunks.blocks)}, X {self._chunks.reading})")


class _Retrain:
    """The distributed exact refit of m sets (see DaskAttribution.retrain)."""

    def __init__(self, A: DaskAttribution, indices: np.ndarray, offsets: np.ndarray, tol: float,
                 max_iter: int) -> None:
        self.A, self.tol, self.max_iter = A, tol, max_iter
        self.sets = [indices[offsets[j]:offsets[j + 1]] for j in range(len(offsets) - 1)]
        ch = A._chunks
        self.rows = [ch.rows(s) for s in self.sets]
        w = ch.w if ch.w is not None else np.ones(ch.n)
        self.weights = [w[s] for s in self.sets]

    def _set_gradients(self, thetas: np.ndarray, which: np.ndarray) -> np.ndarray:
        """sum_{i in T_j} w_i dloss/dz x~_i at theta (row k of thetas for set which[k])."""
        out = np.zeros_like(thetas)
        y = self.A._chunks.y
        for k, j in enumerate(which):
            s, Xk, w = self.sets[j], self.rows[j], self.weights[j]
            if len(s):
                out[k] = Xk.T @ (w * _dloss(self.A.family, y[s], Xk @ thetas[k]))
        return out

    def _gradients(self, thetas: np.ndarray, which: np.ndarray) -> np.ndarray:
        """grad F_{-T_j} (kernel's) at row k of thetas for set j = which[k]: one pass."""
        A = self.A
        G = A._chunks.gradients(thetas)["G"]
        return G - self._set_gradients(thetas, which) + _penalty(thetas, A.n_features, A.l2)

    def run(self) -> dict:
        A = self.A
        m, p, d = len(self.sets), A.n_params, A.n_features
        theta = np.tile(A._theta, (m, 1))
        scale = A._params.user_norm(self._gradients(np.zeros((m, p)), np.arange(m)))
        target = self.tol * np.maximum(1.0, scale)
        solvers = []
        for Xk, s in zip(self.rows, self.sets):
            a = np.asarray(A.curvature[s].compute()) if len(s) else np.empty(0)
            U = Xk * np.sqrt(a)[:, None]
            solvers.append(_factor_or_none(A._H - U.T @ U))
        n_iter = np.zeros(m, dtype=np.int64)
        # a set whose H_{-T} at theta_hat is not positive definite starts with fresh Hessians
        refreshed = np.array([L is None for L in solvers], dtype=bool)
        done = np.zeros(m, dtype=bool)
        singular = np.zeros(m, dtype=bool)
        norms = np.full(m, np.inf)
        for it in range(self.max_iter + 1):
            live = np.flatnonzero(~done & ~singular)
            if len(live) == 0:
                break
            G = self._gradients(theta[live], live)
            norms[live] = A._params.user_norm(G)
            for k, j in enumerate(live):
                if norms[j] <= target[j]:
                    done[j] = True
                    continue
                if it == self.max_iter:
                    continue
                if it >= _CHORD_ITERATIONS or solvers[j] is None:  # fresh H without the set
                    refreshed[j] = True
                    H = A._chunks.hessian(theta[j], A._chunks.weights_without(self.sets[j]))["H"]
                    H[np.arange(d), np.arange(d)] += A.l2
                    L = _factor_or_none(H)
                    if L is None:  # no positive-definite Hessian without T: not refitted
                        singular[j] = True
                        theta[j] = A._theta
                        continue
                else:
                    L = solvers[j]
                theta[j] -= _cho_solve(L, G[k])
                n_iter[j] += 1
        user = A._params.point_to_user(theta)
        return dict(theta=user, effect=user - A._user_theta[None, :], grad_norm=norms,
                    tolerance=target, n_iter=n_iter, converged=done, refreshed=refreshed,
                    singular=singular)


def _factor_or_none(H: np.ndarray) -> Optional[np.ndarray]:
    try:
        return np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None


def fit(X: Any, y: Any, *, l2: float = 0.0, family: str = "logistic", sample_weight: Any = None,
        fit_intercept: bool = False, tol: float = 1e-10, max_iter: int = 100,
        theta0: Any = None, num_threads: Optional[int] = None,
        progress: Optional[bool] = None) -> FitResult:
    """Newton's method on a Dask array X, as rif_native.fit: per iteration one distributed pass
    for H, the gradient and the loss, and one for the line search (all its step lengths in
    the same pass)."""
    family, l2 = _family(family), _real(l2, "l2")
    _check_stopping(tol, max_iter)
    ch, t0 = _setup(X, y, theta0, sample_weight, family, _flag(fit_intercept, "fit_intercept"),
                    num_threads, "theta0", progress, fit_l2=l2)
    d = ch.d
    p = d + int(fit_intercept)
    params = _Params(d, ch.centre)
    theta = params.point_to_kernel(np.zeros(p) if t0 is None else t0)
    passes = 1.0 if fit_intercept else 0.0
    g0 = ch.gradients(np.zeros((1, p)))["G"][0]
    passes += 1
    gtol = tol * max(1.0, float(params.user_norm(g0)))
    steps = 0.5 ** np.arange(8)
    best, without_progress, rounding = np.inf, 0, False
    converged = stalled = False
    total = ch.hessian(theta)
    passes += 1
    F = total["loss"] + 0.5 * l2 * theta[:d] @ theta[:d]
    it = 0
    while True:  # the kernel's fit (fit.cpp), with distributed passes
        g = total["g"] + _penalty(theta, d, l2)
        norm = float(params.user_norm(g))
        if norm <= gtol:
            converged = True
            break
        if norm <= 0.5 * best:
            without_progress = 0
        elif rounding:
            without_progress += 1
            if without_progress >= 3:
                stalled = True
                break
        best = min(best, norm)
        if it >= max_iter:
            break
        H = total["H"]
        H[np.arange(d), np.arange(d)] += l2
        step = -_cho_solve(_factor(H, f"The Hessian at Newton iteration {it}"), g)
        slope = float(g @ step)
        # near the optimum the decrease of F drowns in rounding: the full step there
        rounding = -slope <= 1e-13 * (1.0 + abs(F))
        accepted = rounding
        if rounding:
            theta = theta + step
        t = 1.0
        while not accepted and t > 1e-12:  # eight step lengths per pass
            ts = t * steps
            cands = theta[None, :] + ts[:, None] * step[None, :]
            losses = (ch.gradients(cands)["loss"] +
                      0.5 * l2 * np.sum(cands[:, :d] ** 2, axis=1))
            passes += 1
            ok = np.flatnonzero(losses <= F + 1e-4 * ts * slope)
            if len(ok):
                theta, accepted = cands[int(ok[0])], True
            t = ts[-1] * 0.5
        if not accepted:
            stalled = True
            break
        it += 1
        total = ch.hessian(theta)
        passes += 1
        F = total["loss"] + 0.5 * l2 * theta[:d] @ theta[:d]
    infinite = converged and fit_intercept and _finite.one_kind(
        np.asarray(ch.y), _finite.live_samples(ch.w, ch.n), family)
    result = FitResult(theta=params.point_to_user(theta), grad_norm=norm, n_iter=it,
                       converged=converged and not infinite, loss=float(F), stalled=stalled,
                       passes=passes)
    if infinite:
        warnings.warn(_finite.no_finite_fit(_finite.one_kind_clause(family)),
                      ConvergenceWarning, stacklevel=2)
    elif not converged:
        warnings.warn(f"fit stopped after {it} iterations with gradient norm {norm:.3g} above "
                      "the tolerance; add l2 > 0 or raise max_iter.", ConvergenceWarning,
                      stacklevel=2)
    return result
