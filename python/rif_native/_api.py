"""The public Python API: input checks and conversions, then calls into the compiled kernel.

Sign convention: every estimate is a removal effect ``theta_{-T} - theta_hat`` (positive means
"removing T increases this parameter"). Objective:
``F(theta) = sum_i w_i loss(y_i, x_i . theta) + (l2 / 2) ||theta||_P^2`` with the intercept, when
``fit_intercept=True``, stored last in ``theta`` and left unpenalised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import _core, _finite, _frames, _memory, sources
from ._device import device_matrix, is_device_array

NotPositiveDefiniteError = _core.NotPositiveDefiniteError
NotPositiveDefiniteError.__doc__ = (
    "The Hessian (or H_{-T}) is not positive definite; a subclass of numpy.linalg.LinAlgError. "
    "Attributes `column` (failing pivot's column) and `pivot` (its value)."
)

ArrayLike = Any
SetsLike = Union[ArrayLike, Sequence[ArrayLike]]

_METHODS = ("if", "rif", "ns")
_MAX_NAMED = 10
_HOST_COPY_LOCK = threading.Lock()


class SingularRemovalWarning(RuntimeWarning):
    """Removing the named sample(s) or set(s) makes the Hessian singular: the estimate is inf."""


class ConvergenceWarning(RuntimeWarning):
    """fit() stopped before reaching its gradient tolerance."""


def _short_repr(result: Any) -> str:
    """A result's repr that fits a line or two: arrays of more than 6 entries by shape, dtype
    and their first entries; floats to 4 significant digits."""

    def short(v: Any) -> str:
        if isinstance(v, np.ndarray):
            if v.size <= 6:
                return np.array2string(v, precision=4, separator=", ",
                                       max_line_width=10**6).replace("\n", "")
            head = ", ".join(f"{x:.4g}" if v.dtype.kind == "f" else str(x)
                             for x in v.reshape(-1)[:3])
            return f"<{' x '.join(map(str, v.shape))} {v.dtype}: {head}, ...>"
        if isinstance(v, np.generic):  # one set's fields: NumPy scalars
            v = v.item()
        if isinstance(v, float):
            return f"{v:.4g}"
        return repr(v)

    fields = ", ".join(f"{f.name}={short(getattr(result, f.name))}"
                       for f in dataclasses.fields(result))
    return f"{type(result).__name__}({fields})"


@dataclass(frozen=True)
class FitResult:
    """Result of :func:`fit`.

    Attributes:
        theta: fitted parameters (p,), the intercept last when ``fit_intercept=True``.
        grad_norm: Euclidean norm of the gradient of F at ``theta``.
        n_iter: Newton iterations taken (steps, chord steps included).
        converged: whether ``grad_norm <= tol * max(1, ||grad F(0)||)`` at a point that can be
            a minimiser: False, with a ConvergenceWarning, where the loss has no finite
            minimiser (logistic or poisson: an unpenalised intercept over one kind of label,
            or separated data with l2 = 0), since theta then met the tolerance on its way to
            infinity.
        loss: F(theta), penalty included.
        stalled: stopped early because the gradient norm could no longer decrease (it reached
            the rounding noise of the gradient): the tolerance cannot be met in float64.
        passes: for X read from a source, the passes made over X (else None).
        hessians: of the binary families' fit, the passes that also built the Hessian from
            every row (the others computed z, the loss and the gradient only; else None).
        sampled_hessians: the passes that built it from a sample of rows (far from the
            optimum, n >= 512 p; else None).
        lbfgs_steps: the L-BFGS steps taken before the Newton steps (``solver``; one
            pass over X each, two for a step whose full length fails the line search; else
            None).
    """

    theta: np.ndarray
    grad_norm: float
    n_iter: int
    converged: bool
    loss: float
    stalled: bool = False
    passes: Optional[float] = None
    hessians: Optional[int] = None
    sampled_hessians: Optional[int] = None
    lbfgs_steps: Optional[int] = None

    def __repr__(self) -> str:
        return _short_repr(self)


@dataclass(frozen=True)
class RetrainResult:
    """Result of :meth:`Attribution.retrain`: the exact refit without each set.

    One entry per set in each attribute; without the leading axis when one set was given.

    Attributes:
        theta: refitted parameters argmin F_{-T}.
        effect: the actual removal effect theta_{-T} - theta_hat.
        grad_norm: final ||grad F_{-T}(theta)||_2.
        tolerance: the target, tol * max(1, ||grad F_{-T}(0)||).
        n_iter: iterations taken.
        converged: grad_norm <= tolerance, at a point that can be a minimiser: False, with a
            ConvergenceWarning, where F_{-T} has no finite minimiser (as for :func:`fit`:
            the samples left all one kind of label for an unpenalised intercept, or separated
            with l2 = 0); theta is then where the iterations stopped.
        refreshed: whether the set needed fresh Hessians (full Newton) after the cheap phase.
        singular: whether removing the set leaves an unpenalised parameter (the intercept, or
            any parameter when l2 = 0) without data: the refit is not unique, so it is not
            attempted (converged False, theta = theta_hat).
    """

    theta: np.ndarray
    effect: np.ndarray
    grad_norm: np.ndarray
    tolerance: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    refreshed: np.ndarray
    singular: np.ndarray

    def __repr__(self) -> str:
        return _short_repr(self)


@dataclass(frozen=True)
class TopSamples:
    """Result of :meth:`Attribution.top`: sample indices and their scores, largest first.

    Attributes:
        increase: the samples whose removal increases the metric most (scores largest first).
        increase_scores: their scores.
        decrease: the samples whose removal decreases it most (scores smallest first).
        decrease_scores: their scores.
    """

    increase: np.ndarray
    increase_scores: np.ndarray
    decrease: np.ndarray
    decrease_scores: np.ndarray


def _top(S: np.ndarray, n: int, k: Any) -> TopSamples:
    """The k largest and k smallest scores of each column of S ((n,) or (n, m))."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    M = S.reshape(n, -1)
    k = min(k, n)
    cols = np.arange(M.shape[1])[None, :]
    up = np.argpartition(-M, k - 1, axis=0)[:k]
    up = np.take_along_axis(up, np.argsort(-M[up, cols], axis=0, kind="stable"), axis=0)
    down = np.argpartition(M, k - 1, axis=0)[:k]
    down = np.take_along_axis(down, np.argsort(M[down, cols], axis=0, kind="stable"), axis=0)
    shape = (k,) if S.ndim == 1 else (k, M.shape[1])
    return TopSamples(increase=up.reshape(shape), increase_scores=M[up, cols].reshape(shape),
                      decrease=down.reshape(shape), decrease_scores=M[down, cols].reshape(shape))


def cuda_available() -> bool:
    """True when this build has the CUDA backend and a CUDA device is usable."""
    return bool(_core.cuda_available())


_BACKENDS = ("cpu", "cuda", "auto", "dask")


def _backend_choice(backend: Optional[str]) -> str:
    """backend= (or the RIF_BACKEND environment variable when None), checked."""
    chosen = backend if backend is not None else os.environ.get("RIF_BACKEND", "auto")
    if chosen not in _BACKENDS:
        source = "backend" if backend is not None else "the RIF_BACKEND environment variable"
        raise ValueError(f"{source} must be one of 'cpu', 'cuda', 'auto', 'dask', got {chosen!r}")
    return chosen


def _on_dask(X: Any, backend: Optional[str]) -> bool:
    """Whether X runs on the Dask engine: a Dask array, unless backend 'cpu' or 'cuda' is asked
    for explicitly (then it is read on this machine, chunk by chunk); a stored source (.npy
    paths, Zarr, HDF5) with backend 'dask' (its workers then open it themselves)."""
    from ._dask import is_dask_array

    if is_dask_array(X):
        return backend in (None, "auto", "dask")
    if backend == "dask":  # a source the workers open themselves, or an explanation why not
        from ._dask_sources import check_stored

        check_stored(X)
        return True
    return False


def _use_cuda(backend: Optional[str]) -> bool:
    """Resolve backend= (or the RIF_BACKEND environment variable when None) to CUDA or not."""
    chosen = _backend_choice(backend)
    if chosen in ("cpu", "dask"):
        return False
    if chosen == "cuda":
        if not _core.cuda_available():
            detail = (_core.cuda_device() if build_info()["cuda"] else
                      "this build has no CUDA backend (rebuild with RIF_CUDA=ON)")
            raise RuntimeError(f"backend 'cuda' was asked for, but no CUDA device can be used: "
                               f"{detail}. Use backend='cpu' or 'auto'.")
        return True
    return bool(_core.cuda_available())


def build_info() -> dict:
    """What the compiled core was built with: version, compiler, flags, OpenMP, SIMD, Eigen, CUDA."""
    return dict(_core.build_info())


# ----------------------------------------------------------------------------- input handling


def _asarray(v: Any, name: str) -> np.ndarray:
    """np.asarray(v), with NumPy's own errors for ragged or odd input named after `name`."""
    try:
        return np.asarray(v)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a rectangular array of numbers, got "
                         f"{type(v).__name__} that NumPy cannot convert ({str(exc)[:60]})"
                         ) from None


def _check_numeric(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (float, int or bool), got dtype {arr.dtype}"
        )


def _as_design(X: ArrayLike, fit_intercept: bool) -> Any:
    """X as a 2-D C-contiguous float64 or float32 array, converting at most once; or, for a
    file, shards or a chunked store (rif_native.sources), a Source read block by block."""
    if hasattr(X, "tocsr") and hasattr(X, "nnz") and not sources.is_source_like(X):
        raise TypeError("X is a sparse matrix of an unknown kind: pass a SciPy sparse matrix "
                        "or a dense array")
    if sources.is_source_like(X):
        source = sources.open_source(X)
        _check_shape(source.shape[0], source.shape[1], fit_intercept)
        return source
    arr = _asarray(X, "X")
    _check_numeric(arr, "X")
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (n samples x d features), got shape {arr.shape}")
    if arr.dtype not in (np.float64, np.float32) or not arr.dtype.isnative:
        arr = arr.astype(np.float64)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    _check_shape(arr.shape[0], arr.shape[1], fit_intercept)
    return arr


def _as_vector(v: ArrayLike, name: str, length: int, what: str, hint: str = "") -> np.ndarray:
    if is_device_array(v):
        raise TypeError(f"{name} is in GPU memory: pass it as a NumPy array (only X is read on "
                        "the device; y, weights and theta are small)")
    arr = _asarray(v, name)
    _check_numeric(arr, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with {length} entries ({what}), got shape {arr.shape}")
    if arr.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries ({what}), got {arr.shape[0]}"
                         + hint)
    return np.ascontiguousarray(arr, dtype=np.float64)


def _data(X: ArrayLike, y: ArrayLike, sample_weight: Optional[ArrayLike], fit_intercept: bool,
          theta: Optional[ArrayLike], theta_name: str):
    """(X, y, theta, w, n, d) checked and converted once; theta None stays None."""
    if is_device_array(X):
        raise TypeError("X is in GPU memory: only Attribution and the one-call attribution "
                        "functions read it there (backend 'cuda'); pass a NumPy array here")
    Xa = _as_design(X, fit_intercept)
    n, d = Xa.shape
    ya, ta, wa = _vectors(y, sample_weight, theta, theta_name, n, d, fit_intercept)
    return Xa, ya, ta, wa, n, d


def _vectors(y: ArrayLike, sample_weight: Optional[ArrayLike], theta: Optional[ArrayLike],
             theta_name: str, n: int, d: int, fit_intercept: bool):
    """(y, theta, w) for X of shape (n, d), checked and converted; theta None stays None."""
    p = d + int(fit_intercept)
    ya = _as_vector(y, "y", n, "one label per row of X")
    ta = None if theta is None else _as_vector(
        theta, theta_name, p, f"{d} features" + (" + intercept, last" if fit_intercept else ""),
        hint=_intercept_hint(theta, d, fit_intercept))
    wa = None if sample_weight is None else _as_vector(
        sample_weight, "sample_weight", n, "one weight per row of X")
    return ya, ta, wa


def _intercept_hint(theta: ArrayLike, d: int, fit_intercept: bool) -> str:
    """For a theta of the wrong length: that fit_intercept decides it, and which value fits."""
    got = int(np.size(theta))
    if not fit_intercept and got == d + 1:
        return (". fit_intercept decides the length: with fit_intercept=True theta is d + 1 "
                "long, the intercept last")
    if fit_intercept and got == d:
        return ". fit_intercept decides the length: with fit_intercept=False theta is d long"
    return ""


def _check_shape(n: int, d: int, fit_intercept: bool) -> None:
    if n == 0:
        raise ValueError(f"X is empty: it needs at least one sample (row), got shape ({n}, {d})")
    if d == 0 and not fit_intercept:
        raise ValueError(f"X has no features (d = 0), got shape ({n}, {d})")


def _matvec(X: Any, theta: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """X theta (theta (p,) or (p, m), the intercept last) for an array or a Source."""
    if isinstance(X, sources.Source):
        return sources.matvec(X, theta, fit_intercept)
    d = X.shape[1]
    z = X @ theta[:d]
    if fit_intercept:
        z += theta[d]
    return z


def _reading(X: Any, progress: Optional[bool]) -> Any:
    """The context of a kernel call: a progress bar over the passes when X is a Source."""
    if isinstance(X, sources.Source):
        return X.show_progress(progress)
    return contextlib.nullcontext()


def _check_some_weight(w: Optional[np.ndarray], fit_intercept: bool, l2: float) -> None:
    """ValueError where every weight is 0 and something unpenalised is left without data (the
    intercept, or every parameter with l2 = 0); with l2 > 0 and no intercept, theta = 0 is the
    minimiser."""
    if w is not None and len(w) and not np.any(w > 0) and (fit_intercept or l2 == 0.0):
        raise ValueError("sample_weight is 0 for every sample: the "
                         + ("intercept" if fit_intercept else "model (l2 = 0)")
                         + " has no data to be fitted to")


def _finite_verdict(X: Any, y: np.ndarray, w: Optional[np.ndarray], result: "FitResult",
                    l2: float, family: str, fit_intercept: bool, tol: float,
                    num_threads: Optional[int]) -> tuple:
    """(why the fit's loss has no finite minimiser, or ""; a hint that it may have none, or "";
    the samples either names) for a fit that met its tolerance (rif_native._finite).
    z = X theta is read only where l2 = 0 needs it (for X from a source, a pass)."""
    none = np.empty(0, dtype=np.int64)
    if not result.converged or family not in ("logistic", "poisson"):
        return "", "", none
    live = _finite.live_samples(w, len(y))
    z = _matvec(X, result.theta, fit_intercept) if l2 == 0.0 else None
    why = _finite.why_infinite(y, family, fit_intercept, l2, z, live)
    if why or z is None:
        return why, "", none
    return _finite.quasi_verdict(X, y, w, result.theta, family, fit_intercept, z, live, tol,
                                 num_threads)


_EPS = float(np.finfo(np.float64).eps)


def _real(value: Any, name: str) -> float:
    """A real number argument as float, or a one-line TypeError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _flag(value: Any, name: str) -> bool:
    """A True / False argument as bool, or a one-line TypeError naming it (the string "False"
    would otherwise count as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_stopping(tol: float, max_iter: int, batch: int = 1) -> None:
    """fit's and retrain's tol and max_iter (and retrain's batch of sets), checked."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    tol = _real(tol, "tol")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    if tol < _EPS:
        raise ValueError(f"tol must be at least {_EPS:.3g} (machine precision: the gradient "
                         f"norm is relative to its scale and cannot go lower), got {tol!r}")


def _cores(threads: int) -> int:
    """The threads a call will use at most (the kernel clamps requests to the cores)."""
    cores = int(_core.build_info()["max_threads"])
    return min(threads, cores) if threads > 0 else cores


_FAMILY_NAMES = "'logistic', 'squared', 'poisson' or 'multinomial'"


def _family(family: Any) -> str:
    """A binary GLM family's name, checked; the message lists every family the public entry
    points take (the multinomial one is dispatched before this check)."""
    if not isinstance(family, str):
        raise TypeError(f"family must be a str ({_FAMILY_NAMES}), got {type(family).__name__}")
    if family not in ("logistic", "squared", "poisson"):
        raise ValueError(f"family must be {_FAMILY_NAMES}, got {family!r}")
    return family


def _threads(num_threads: Optional[int]) -> int:
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads}")
    return int(num_threads)


def _method(method: str, allowed: Sequence[str]) -> str:
    if method not in allowed:
        raise ValueError(f"method must be one of {', '.join(map(repr, allowed))}, got {method!r}")
    return method


def _one_set(s: ArrayLike, n: int, label: str) -> np.ndarray:
    arr = _asarray(s, label)
    if arr.ndim != 1:
        raise ValueError(f"{label} must be 1-D (indices or a boolean mask), got shape {arr.shape}")
    if arr.dtype == bool:
        if arr.shape[0] != n:
            raise ValueError(f"{label} is a boolean mask of length {arr.shape[0]}, expected {n}")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{label} must hold integer sample indices or be a boolean mask, "
                        f"got dtype {arr.dtype}")
    idx = arr.astype(np.int64)
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        raise ValueError(f"{label} holds index {idx[bad][0]}, outside [0, {n})")
    if np.unique(idx).size != idx.size:
        raise ValueError(f"{label} holds a sample index more than once")
    return idx


def _is_one_set(sets: Sequence[Any]) -> bool:
    """Whether a non-empty list or tuple is one set rather than a list of sets: all its entries
    scalars (integer indices or booleans; other scalars, such as floats, make one set of bad
    indices, refused as such)."""
    return all(isinstance(x, (numbers.Number, str, bytes, np.generic)) for x in sets)


def _parse_sets(sets: SetsLike, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(indices, offsets, single): sets as compressed lists; single when one set was given."""
    if isinstance(sets, np.ndarray) and sets.ndim == 2:
        parts = [_one_set(row, n, f"set {j}") for j, row in enumerate(sets)]
        single = False
    elif isinstance(sets, np.ndarray) or (
        isinstance(sets, (list, tuple)) and len(sets) > 0 and _is_one_set(sets)
    ):
        parts = [_one_set(sets, n, "the set")]
        single = True
    elif isinstance(sets, (list, tuple)):
        parts = [_one_set(s, n, f"set {j}") for j, s in enumerate(sets)]
        single = False
    else:
        raise TypeError("sets must be one set (indices or a boolean mask) or a list of sets, "
                        f"got {type(sets).__name__}")
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    indices = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return np.ascontiguousarray(indices, dtype=np.int64), offsets, single


def _check_overflow(out: np.ndarray, what: str, expected_inf: Any = None,
                    source: Optional[np.ndarray] = None) -> None:
    """A non-finite entry of `out` outside the rows that may be inf (singular removals) is a
    float64 overflow: a ValueError that says so, never a silent inf or NaN."""
    bad = ~np.isfinite(out)
    if expected_inf is not None:
        bad[expected_inf] = False
    if bad.any():
        scale = (f" (its largest entry is {float(np.abs(source).max()):.3g})"
                 if source is not None and source.size else "")
        raise ValueError(f"{what} overflows float64{scale}: rescale the input, or X")


def _naming(warning: Warning, samples: Any, rows: int) -> Warning:
    """``warning`` carrying the samples its text names (``.samples``: positions among the
    ``rows`` rows given, ``.rows``), so that a caller who passed a part of its data can name
    them as rows of the whole (the rif command does)."""
    warning.samples = np.asarray(samples, dtype=np.int64)  # type: ignore[attr-defined]
    warning.rows = int(rows)  # type: ignore[attr-defined]
    return warning


def _name_some(items: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in items[:_MAX_NAMED])
    return shown + (f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else "")


# ----------------------------------------------------------------------------- the object


class Attribution(_frames.Named):
    """Factor the Hessian once at ``theta``, then answer removal questions from the factor.

    Builds ``H = X^T diag(a) X + l2 P`` (P: identity, 0 on the intercept), its Cholesky factor and
    every sample's leverage ``h_i = a_i x_i^T H^{-1} x_i``. Every estimate it returns is a removal
    effect ``theta_{-T} - theta_hat``:

    * IF_i  = H^{-1} g_i with g_i = r_i x_i (first order);
    * RIF_i = IF_i / (1 - h_i) (the exact Newton step of leaving i out);
    * NS_T  = H_{-T}^{-1} sum_{i in T} g_i (the Newton step of leaving the set T out).

    Args:
        X: (n, d) features. float64 and float32 C-contiguous arrays are used without a copy
            (float32 values are used exactly, arithmetic in float64); other inputs are
            converted once. The object keeps a reference to X and reads it again for
            per-sample answers and retraining: do not modify X while the object is in use.
        y: (n,) labels: 0/1 for "logistic", real for "squared", counts >= 0 for "poisson".
        theta: (p,) parameters, p = d + fit_intercept, the intercept last. Usually a minimiser
            of F (see :func:`fit`); ``gradient_norm`` says how close it is.
        l2: ridge penalty in F = sum_i w_i loss_i + l2/2 ||theta||_P^2 (a sum, not a mean: the
            paper's mean-loss ``lambda`` is ``l2 = n * lambda``; scikit-learn's ``C`` is
            ``l2 = 1 / C``).
        family: "logistic", "squared" or "poisson".
        sample_weight: (n,) weights >= 0, default all ones.
        fit_intercept: treat X as having a trailing column of ones that the penalty skips.
        num_threads: threads for every computation of this object; None uses the cores that no
            other process keeps busy when the object is built (at least one).
        backend: "cpu", "cuda" (z, the Hessian, factor, leverages and ``scores`` on the GPU; a
            RuntimeError when this build or machine has none) or "auto" (CUDA when available).
            None reads the RIF_BACKEND environment variable, default "auto". With CUDA, host X
            crosses the bus once and stays in device memory while the object lives, when it
            fits (``RIF_CUDA_KEEP_X=0`` streams it again on every pass instead). "dask" runs
            on the current Dask client (the default for a Dask array X), and with X a ``.npy``
            path, shards, a Zarr array or an h5py dataset makes its workers open X themselves
            (:mod:`rif_native._dask_sources`).
        max_memory: the most memory (bytes, or a size such as "4G") this object's calls may
            allocate; None reads RIF_MAX_MEMORY, else what the machine (its cgroup, ``ulimit
            -v``) has available. A call that would need more raises MemoryError first, saying
            how much it needs.
        progress: for X read from a source (below), a progress bar over each pass of the
            kernel over X (stderr); None shows it when stderr is a terminal.
        solver: how the CPU path inverts H: "primal" (its p x p Cholesky factor), "dual" (the
            n x n Woodbury form G = Y Y^T + l2 I, for fewer samples than parameters; needs
            l2 > 0) or "auto" (the one of fewer operations: dual when n is below about p).
            On the dual path H and its factor are built only when a query needs them (Newton
            steps of large sets, retraining, ``hessian()``, ``save()``). ``A.solver`` says
            which ran.
        precision: "double" (default) or "mixed": the Hessian pass and the leverage pass form
            their p x p products in float32 (SGEMM rate, about 1.9x DGEMM here), each row
            block's sum added to H in float64, the factor float64; z, residuals, gradients,
            scores and every other answer stay float64. Their error is float32 rounding
            amplified by H's conditioning (measured in ``benchmarks/mixed_precision.py``); meant
            for float32 X on the dense primal CPU path. The dual path and sparse X compute in
            float64, and so does everything after a float32 H that does not factor (or
            overflows): ``A.precision`` says what ran. Backend "auto" runs "mixed" on the CPU;
            "cuda" refuses it.
        directions: metric gradients (p,) or (p, m) whose ``scores`` (IF and RIF) will be
            asked for. On the dense primal CPU path their projections x_i^T H^{-1} v
            (float64, also with ``precision="mixed"``) come from the leverage pass, so that
            ``scores`` with any of them reads X no more: for X on disk that saves a whole pass
            over the file. Elsewhere (the dual path, sparse X, the GPU, the multinomial family)
            they are checked and ``scores`` computes them as without them.
            ``A.kept_directions`` counts the directions kept.

    X may be larger than memory: a ``.npy`` path or memmap, a list of ``.npy`` shards, a Zarr
    array, an h5py dataset, a Dask array or any row-sliceable 2-D object is read block by block
    by every method (see :mod:`rif_native.sources`; backend "cpu"). Per-sample answers are
    n-vectors; the n x p IF / RIF matrix can be written block by block to a file (``out=``).

    X may also be a matrix already in GPU memory (CuPy, PyTorch, JAX, Numba: anything with
    ``__cuda_array_interface__`` or a CUDA DLPack export; C-contiguous float64 or float32): it is
    read in place with backend "cuda"; IF / RIF rows run there too, and group effects and Newton
    steps gather their sets' rows there. Retraining copies X to host memory once, on first use.
    """

    def __new__(cls, X: ArrayLike = None, *args: Any, **kwargs: Any) -> "Attribution":
        # The multinomial family has its own class (rif_native.multinomial).
        if cls is Attribution and kwargs.get("family") == "multinomial":
            from .multinomial import MultinomialAttribution

            return MultinomialAttribution(X, *args, **kwargs)  # type: ignore[return-value]
        # A Dask array X runs on the Dask engine: the same methods, in the subclass.
        if cls is Attribution and _on_dask(X, kwargs.get("backend")):
            from ._dask import DaskAttribution

            return super().__new__(DaskAttribution)
        return super().__new__(cls)

    def __init__(
        self,
        X: ArrayLike,
        y: ArrayLike,
        theta: ArrayLike,
        *,
        l2: float = 0.0,
        family: str = "logistic",
        sample_weight: Optional[ArrayLike] = None,
        fit_intercept: bool = False,
        num_threads: Optional[int] = None,
        backend: Optional[str] = None,
        max_memory: _memory.MemorySize = None,
        progress: Optional[bool] = None,
        solver: str = "auto",
        precision: str = "double",
        directions: Optional[ArrayLike] = None,
    ) -> None:
        fit_intercept = _flag(fit_intercept, "fit_intercept")
        X, y, sample_weight, self._labels = _frames.unwrap(X, y, sample_weight)
        self._solver = solver
        self._precision = _precision(precision)
        self._num_threads = num_threads  # as given (None: decided again where unpickled)
        self._progress = progress
        # None: the idle cores now, decided once, so that every method of this object runs
        # with the same count (and repeated calls give the same rounding)
        self._threads = _threads(num_threads) or int(_core.default_threads())
        self._max_memory = max_memory
        _memory.parse_size(max_memory)
        self._device = device_matrix(X)
        if self._device is None:
            use_cuda = _use_cuda(backend)
            Xa, ya, ta, wa, n, d = _data(X, y, sample_weight, fit_intercept, theta, "theta")
            if use_cuda and isinstance(Xa, sources.Source):
                if _backend_choice(backend) == "cuda":
                    raise ValueError("backend='cuda' reads X from one array in memory; X here is "
                                     f"read from a source ({Xa!r}): use backend='cpu'")
                use_cuda = False
            if use_cuda and self._precision != "double":
                if _backend_choice(backend) == "cuda":
                    raise ValueError("precision='mixed' is a CPU option; the cuda backend "
                                     "computes in float64: use backend='cpu'")
                use_cuda = False  # "auto" with mixed: the CPU, which has it
            V = (None if directions is None else
                 _direction_matrix(directions, d + int(fit_intercept), "directions"))
            if not use_cuda:
                need = (  # (and the kept projections: n doubles per direction)
                    _memory.attribution_bytes(n, d + int(fit_intercept), _cores(self._threads),
                                              self._precision)
                    + _memory.source_bytes(Xa) + 8.0 * n * (0 if V is None else len(V)))
                _memory.require(
                    need, f"an attribution with n = {n} samples and p = {d + int(fit_intercept)} "
                    "parameters", _memory.advice_for(Xa, need, _memory.advice_for_shape(
                        n, d + int(fit_intercept), _cores(self._threads), self._precision)),
                    max_memory)
            with _reading(Xa, progress):
                self._core = _core.Attribution(Xa, ya, ta, _real(l2, "l2"), _family(family), wa,
                                               fit_intercept, self._threads, use_cuda,
                                               solver=solver, precision=self._precision,
                                               directions=V)
            if V is not None and self._core.kept_directions:
                self._kept_v = V.T  # (p, m), pickled with the object: the copy keeps them
        else:
            if self._precision != "double":
                raise ValueError("precision='mixed' is a CPU option; X in GPU memory is "
                                 "computed in float64")
            if _backend_choice(backend) == "cpu":
                raise ValueError("X is in GPU memory, which the CPU backend cannot read: use "
                                 "backend='cuda' (or 'auto'), or pass X as a NumPy array")
            use_cuda = _use_cuda("cuda")
            Xa = None  # copied to host memory only if a CPU-side query asks for it
            dev = self._device
            n, d = dev.rows, dev.cols
            _check_shape(n, d, fit_intercept)
            ya, ta, wa = _vectors(y, sample_weight, theta, "theta", n, d, fit_intercept)
            if directions is not None:  # checked; the GPU's scores are a pass on the device
                _direction_matrix(directions, d + int(fit_intercept), "directions")
            self._core = _core.Attribution(None, ya, ta, _real(l2, "l2"), _family(family), wa,
                                           fit_intercept, self._threads, True,
                                           dev.as_tuple(), dev.owner)
        self._finish("cuda" if use_cuda else "cpu", (Xa, ya, wa), n, d, family, l2,
                     fit_intercept)

    def _finish(self, backend: str, data: tuple, n: int, d: int, family: str, l2: float,
                fit_intercept: bool) -> None:
        """The attributes every construction sets once self._core exists."""
        self.backend = backend
        self._data = data  # (X, y, w): references (no copies), for checks on refits
        self.n, self.n_features, self.n_params = n, d, d + int(fit_intercept)
        self.family, self.l2, self.fit_intercept = str(family), float(l2), fit_intercept
        self._leverage = self._frozen(self._core.leverage)
        self._rescale = self._frozen(self._core.rescale)

    def save(self, path: Any, *, include_x: Optional[bool] = None) -> None:
        """Write this object with its factor to ``path`` (an uncompressed ``.npz``), so that
        :meth:`load` builds it again without the Hessian pass or the factorisation; see
        :mod:`rif_native.saved` for the layout."""
        from .saved import save

        save(self, path, include_x=include_x)

    @classmethod
    def load(cls, path: Any, X: Optional[ArrayLike] = None, *,
             num_threads: Optional[int] = None, max_memory: _memory.MemorySize = None,
             progress: Optional[bool] = None) -> "Attribution":
        """An Attribution written by :meth:`save` (X from the file, or given when the file
        holds none); see :func:`rif_native.saved.load`."""
        from .saved import load

        return load(path, X, num_threads=num_threads, max_memory=max_memory, progress=progress)

    @classmethod
    def from_estimator(cls, estimator: Any, X: ArrayLike, y: ArrayLike, **kwargs: Any) -> "Attribution":
        """Build from a fitted scikit-learn LogisticRegression, Ridge, LinearRegression or
        PoissonRegressor and its training data (C -> l2 = 1/C, intercept handled); warns
        ConvergenceWarning when the estimator's theta is not a stationary point of F.
        See :func:`rif_native.sklearn.from_estimator` for the keywords."""
        from .sklearn import from_estimator

        return from_estimator(estimator, X, y, **kwargs)

    @staticmethod
    def _frozen(a: np.ndarray) -> np.ndarray:
        a.setflags(write=False)
        return a

    # -- per-sample quantities
    @property
    def theta(self) -> np.ndarray:
        """The parameters the object was built at (a copy)."""
        return self._core.theta

    @property
    def leverage(self) -> np.ndarray:
        """(n,) generalised leverages h_i = a_i x_i^T H^{-1} x_i, in [0, 1] (read-only)."""
        return self._leverage

    @property
    def rescale(self) -> np.ndarray:
        """(n,) RIF rescaling factors 1 / (1 - h_i); inf for singular removals (read-only)."""
        return self._rescale

    @property
    def residuals(self) -> np.ndarray:
        """(n,) r_i = w_i dloss/dz at theta, so the per-sample gradient is g_i = r_i x_i."""
        return self._core.residuals

    @property
    def curvature(self) -> np.ndarray:
        """(n,) a_i = w_i d2loss/dz2 at theta, so the per-sample Hessian is a_i x_i x_i^T."""
        return self._core.curvature

    @property
    def singular_samples(self) -> np.ndarray:
        """Indices i whose removal makes the Hessian singular (h_i within 1e-10 of 1)."""
        return np.flatnonzero(np.isinf(self._rescale))

    @property
    def _weights(self) -> Optional[np.ndarray]:
        """The sample weights this was built with (None: all 1), for the checks of metrics and
        trust that must count the same samples."""
        return self._data[2]

    @property
    def gradient_norm(self) -> float:
        """||grad F(theta)||_2: near 0 when theta is a minimiser, as the estimates assume."""
        return float(self._core.gradient_norm)

    @property
    def timings(self) -> dict:
        """Seconds spent building this object: "hessian", "cholesky" and "leverage" stages."""
        return dict(self._core.timings)

    def hessian(self) -> np.ndarray:
        """(p, p) H = X^T diag(a) X + l2 P at theta (with the ones column when fit_intercept)."""
        return self._core.hessian()

    def solve(self, v: ArrayLike) -> np.ndarray:
        """H^{-1} v for v of shape (p,) or (p, m), from the cached factor."""
        V = self._directions(v, "v")
        out = self._core.solve(V).T
        _check_overflow(out, "H^{-1} v", source=V)
        return out[:, 0] if np.ndim(v) == 1 else out

    # -- per-sample estimates (labelled: see rif_native._frames)
    @_frames.labelled("rows")
    def influence(self, indices: Optional[ArrayLike] = None, *,
                  out: Optional[Any] = None) -> np.ndarray:
        """Rows IF_i = H^{-1} g_i, removal effects of each sample, for `indices` (all if None).

        Returns (k, p). The full matrix is n x p: pass indices when n is large, or a path
        ``out`` ending in ``.npy`` or ``.zarr`` to write the rows there block by block (the
        file appears complete or not at all) and get it back opened read-only. An earlier
        output at ``out`` (a file, or a Zarr store) is replaced; refused before any work: a
        path that is, holds or lies inside a file or store X is read from, a folder that is
        not a Zarr store, a folder at a ``.npy`` path, a file at a ``.zarr`` path.
        """
        return self._rows(indices, rescaled=False, out=out)

    @_frames.labelled("rows")
    def rescaled_influence(self, indices: Optional[ArrayLike] = None, *,
                           out: Optional[Any] = None) -> np.ndarray:
        """Rows RIF_i = IF_i / (1 - h_i): the Newton step of removing sample i (a removal effect).

        Returns (k, p); rows of samples whose removal makes H singular are inf, with a
        SingularRemovalWarning naming them. ``out`` as for :meth:`influence`.
        """
        return self._rows(indices, rescaled=True, out=out)

    def audit(self, target: Any, **kwargs: Any) -> dict:
        """The fewest samples whose removal flips ``target`` (rif_native.audit's targets),
        by RIF and by IF, verified by exact retraining: see :func:`rif_native.audit.audit`."""
        from .audit import audit

        return audit(self, target, **kwargs)

    def table(self, directions: Any = None, *, diagnostics: bool = False) -> Any:
        """Every sample's id, label, weight, leverage, residual, rescale factor and IF / RIF
        scores for each direction (and the diagnostics when asked), as a SampleTable with
        ``to_frame()`` and ``write(path)``: see :mod:`rif_native.tables`."""
        from .tables import sample_table

        return sample_table(self, directions, diagnostics=diagnostics)

    def __reduce__(self) -> tuple:
        """Pickle the inputs (X, y, theta, weights, kept directions and options, with the
        labels of a DataFrame), not the factor: unpickling builds the object again (one
        factorisation)."""
        X, y, w = self._data
        if isinstance(X, sources.Source) and X.csr is not None:
            X = X._parts[0].original  # sparse X in memory: pickled as the caller gave it
        in_memory = isinstance(X, np.ndarray) or sources._is_sparse(X)
        if not in_memory or type(self) is not Attribution:
            raise TypeError("only an Attribution of X in memory (a NumPy array, DataFrame or "
                            "SciPy sparse matrix) can be pickled; for data on disk or on a "
                            "cluster, pickle the arguments and build it again")
        kwargs = dict(l2=self.l2, family=self.family, sample_weight=w,
                      fit_intercept=self.fit_intercept, num_threads=self._num_threads,
                      backend="cpu" if self.backend == "cpu" else "auto",
                      max_memory=self._max_memory, progress=self._progress,
                      solver=getattr(self, "_solver", "auto"),
                      precision=getattr(self, "_precision", "double"),
                      directions=getattr(self, "_kept_v", None))
        return (_unpickle, (X, y, self.theta, kwargs, getattr(self, "_labels", None)))

    def check_refit(self, removed: Sequence[int], theta_refit: ArrayLike, *,
                    method: str = "ns") -> Any:
        """Compare this object's estimate of removing ``removed`` with your own refit, and say
        whether that refit is converged enough to judge it: see
        :func:`rif_native.check_refit`."""
        from .refit_check import check_refit

        return check_refit(self, removed, theta_refit, method=method)

    def trust(self, sets: Optional[SetsLike] = None, *, warn: bool = True) -> dict:
        """How far to trust RIF here: n/p, leverage quantiles, the count above 0.5, the largest
        ``|RIF_i - IF_i| / |IF_i|``, and with ``sets`` each set's additivity gap (sum of RIF
        against the Newton step), a TrustWarning naming the sets above 20%: see
        :mod:`rif_native.trust`."""
        from .trust import trust

        return trust(self, sets, warn=warn)

    def diagnostics(self, names: Optional[Sequence[str]] = None,
                    direction: Optional[ArrayLike] = None) -> Any:
        """Per-sample regression diagnostics with statsmodels' ``summary_frame()`` columns
        (``dfb_<name>``, ``cooks_d``, ``standard_resid``, ``hat_diag``, ``dffits_internal``) and
        ``rif_norm`` (plus ``rif_score`` for a direction): see :mod:`rif_native.diagnostics`."""
        from .diagnostics import diagnostics

        return diagnostics(self, names=names, direction=direction)

    @_frames.labelled("scores")
    def scores(self, direction: ArrayLike, method: str = "rif") -> np.ndarray:
        """<direction, estimate_i> for every sample i: the linear removal effect on a metric.

        ``direction`` is the metric's gradient at theta_hat, shape (p,) or (p, m); the result is
        (n,) or (n, m). method "rif" gives r_i x_i^T H^{-1} v / (1 - h_i), "if" the same without
        the rescaling. Positive means removing sample i increases the metric.
        """
        rescaled = _method(method, ("if", "rif")) == "rif"
        V = self._directions(direction, "direction")
        with self._reading():
            out = self._core.scores(V, rescaled, self._threads)
        _check_overflow(out, "the scores <direction, estimate_i>",
                        np.isinf(self._rescale) if rescaled else None, source=V)
        if rescaled:
            self._warn_samples(self.singular_samples)
        return out[:, 0] if np.ndim(direction) == 1 else out

    def top(self, direction: ArrayLike, k: int = 10, method: str = "rif") -> "TopSamples":
        """The k samples whose removal most increases and most decreases the metric whose
        gradient is ``direction`` ((p,) or (p, m)), by :meth:`scores`: one pass over X, and
        nothing n x p is formed. Returns a TopSamples whose arrays are (k,) or (k, m), best
        first."""
        return _top(np.array(self.scores(direction, method), dtype=np.float64), self.n, k)

    # -- group estimates
    @_frames.labelled("effect")
    def group_effect(self, sets: SetsLike, method: str = "rif") -> np.ndarray:
        """Estimated removal effect theta_{-T} - theta_hat of each set T.

        Args:
            sets: one set (integer indices, or a boolean mask of length n) or a list of sets.
            method: "if" (sum of IF_i), "rif" (sum of RIF_i) or "ns" (Newton step of removing T
                together, through Woodbury on the cached factor: exact for squared loss).

        Returns:
            (p,) for one set, (m, p) for a list of m sets. Sets whose removal makes the Hessian
            singular get inf, with a SingularRemovalWarning naming them.
        """
        method = _method(method, _METHODS)
        indices, offsets, single = _parse_sets(sets, self.n)
        if method == "ns":
            self._require_sets(offsets, retrain=False)
            with self._reading():
                out, singular = self._core.newton_step(indices, offsets, self._threads)
            _check_overflow(out, "the Newton steps", np.asarray(singular, dtype=np.int64))
            if singular:
                warnings.warn(
                    f"removing set(s) {_name_some(np.asarray(singular))} makes the Hessian "
                    f"singular: their Newton step is inf. {self._singular_advice()}",
                    SingularRemovalWarning, stacklevel=2)
        else:
            out = self._core.group_sums(indices, offsets, method == "rif", self._threads)
            _check_overflow(out, "the group effects", np.isinf(out).all(axis=1))
            if method == "rif":
                self._warn_samples(np.intersect1d(indices, self.singular_samples))
        return out[0] if single else out

    def retrain(self, sets: SetsLike, *, tol: float = 1e-10, max_iter: int = 100,
                show_progress: bool = False, batch: int = 16) -> RetrainResult:
        """Refit exactly without each set T: argmin F_{-T}, warm-started from theta_hat.

        All sets iterate together: each iteration is one pass over X (two matrix products per
        row block for all sets) and a solve with the Hessian at theta_hat downdated by T
        (Woodbury on the cached factor, all small sets in one multi-column solve), each step
        Anderson-accelerated from the set's last five (``RIF_RETRAIN_ANDERSON=0`` turns that
        off). Sets that still converge slowly switch to Newton steps with fresh Hessians. Stops
        on ``||grad F_{-T}|| <= tol * max(1, ||grad F_{-T}(0)||)``, never on an iteration
        count alone, and reports the final norm; warns ConvergenceWarning for sets that did not
        get there (or whose problem without T has no positive-definite Hessian). ``max_iter``
        bounds the iterations of each set. ``show_progress`` shows a progress bar over batches
        of ``batch`` sets (an integer >= 1; each batch one call into the kernel).
        """
        _check_stopping(tol, max_iter, batch)
        indices, offsets, single = _parse_sets(sets, self.n)
        self._need_host()
        m = len(offsets) - 1
        step = int(batch) if show_progress else max(m, 1)
        parts = []
        from ._progress import progress

        for b in progress(range(0, max(m, 1), step), desc="retraining",
                          total=-(-m // step), enabled=show_progress and m > step):
            lo, hi = offsets[b], offsets[min(b + step, m)]
            self._require_sets(offsets[b:min(b + step, m) + 1], retrain=True)
            with self._reading():
                parts.append(self._core.retrain(indices[lo:hi],
                                                offsets[b:min(b + step, m) + 1] - lo,
                                                float(tol), int(max_iter), self._threads))
        out = {k: (np.concatenate([np.asarray(p_[k]) for p_ in parts]) if parts else
                   np.empty((0, self.n_params)) if k == "theta" else np.empty(0))
               for k in ("theta", "grad_norm", "tolerance", "n_iter", "converged", "refreshed",
                         "singular")}
        theta = out["theta"].reshape(-1, self.n_params)
        fields = dict(theta=theta, effect=theta - self._core.theta[None, :],
                      grad_norm=out["grad_norm"], tolerance=out["tolerance"],
                      n_iter=np.asarray(out["n_iter"], dtype=np.int64),
                      converged=np.asarray(out["converged"], dtype=bool),
                      refreshed=np.asarray(out["refreshed"], dtype=bool),
                      singular=np.asarray(out["singular"], dtype=bool))
        infinite = self._check_finite(fields, indices, offsets)
        empty = np.flatnonzero(fields["singular"])
        if len(empty):
            warnings.warn(
                f"removing set(s) {_name_some(empty)} leaves an unpenalised parameter (the "
                "intercept, or any parameter when l2 = 0) without data: the refit is not "
                "unique and was not attempted (converged False).",
                ConvergenceWarning, stacklevel=2)
        bad = np.flatnonzero(~fields["converged"] & ~fields["singular"] & ~infinite)
        if len(bad):
            warnings.warn(
                f"retrain of set(s) {_name_some(bad)} stopped with gradient norm "
                f"{float(fields['grad_norm'][bad].max()):.3g} above the tolerance; "
                f"{retrain_advice(self.l2, fields['n_iter'][bad], int(max_iter))}.",
                ConvergenceWarning, stacklevel=2)
        if single:
            fields = {k: v[0] for k, v in fields.items()}
        return RetrainResult(**fields)

    def _check_finite(self, fields: dict, indices: np.ndarray,
                      offsets: np.ndarray) -> np.ndarray:
        """The sets (a mask) whose refit has no finite minimiser, decided exactly (see
        _finite: one kind of label left for the intercept; with l2 = 0, complete separation of
        the logistic loss, and quasi-complete separation along a single feature where the
        refit saturates samples that moved and X is a dense array in memory): converged False,
        and a warning. theta is what the iterations reached on their way to infinity."""
        m = len(fields["theta"])
        infinite = np.zeros(m, dtype=bool)
        if self.family not in ("logistic", "poisson") or m == 0:
            return infinite
        X, y, w = self._data
        live_all = _finite.live_samples(w, self.n)
        found: dict = {}
        if self.fit_intercept:
            infinite = _finite.one_kind_sets(y, live_all, self.family, indices, offsets,
                                             fields["converged"])
            if infinite.any():
                found[_finite.one_kind_clause(self.family)] = list(np.flatnonzero(infinite))
        dense = _finite._in_memory(X)  # (quasi-complete separation is looked for there)
        if self.l2 == 0.0 and (self.family == "logistic" or dense):
            # separation: complete in O(n) per set, quasi-complete along a single feature
            Z = _matvec(X, fields["theta"].T, self.fit_intercept)  # every set's z, one pass
            z_hat = _matvec(X, self.theta, self.fit_intercept) if dense else None
            signs = _finite.LazySigns(X, y, self.family, live_all)
            for j in np.flatnonzero(fields["converged"] & ~infinite):
                removed = np.unique(indices[offsets[j]:offsets[j + 1]])
                live = live_all.copy()
                live[removed] = False
                why = _finite.why_infinite(y, self.family, False, 0.0, Z[:, j], live)
                if not why and dense:
                    why = _finite.refit_separated(signs, Z[:, j], z_hat, live, removed)
                if why:
                    found.setdefault(why, []).append(j)
                    infinite[j] = True
        fields["converged"][infinite] = False
        for why, sets in found.items():
            warnings.warn(_finite.no_finite_refit(_name_some(np.asarray(sets)), why),
                          ConvergenceWarning, stacklevel=3)
        return infinite

    @property
    def solver(self) -> str:
        """How H is inverted: "primal" (its Cholesky factor), "dual" (the n x n Woodbury form,
        rif/dual.hpp) or "cuda" (the factor on the GPU)."""
        if self.backend == "cuda":
            return "cuda"
        return "dual" if getattr(getattr(self, "_core", None), "dual", False) else "primal"

    @property
    def precision(self) -> str:
        """"mixed" when the Hessian and leverages came from the float32 passes, else
        "double" (also where "mixed" was asked but the path computes in float64: dual, sparse
        X, CUDA)."""
        return "mixed" if getattr(getattr(self, "_core", None), "mixed", False) else "double"

    @property
    def kept_directions(self) -> int:
        """How many of the constructor's ``directions`` the leverage pass projected (their
        ``scores`` then read X no more); 0 without them or where that path does not keep them."""
        return int(getattr(getattr(self, "_core", None), "kept_directions", 0))

    def __repr__(self) -> str:
        return (f"Attribution(n={self.n}, d={self.n_features}, family={self.family!r}, "
                f"l2={self.l2:g}, fit_intercept={self.fit_intercept}, backend={self.backend!r}, "
                f"solver={self.solver!r}, precision={self.precision!r}, "
                f"max_leverage={float(self._leverage.max()):.4g}, "
                f"n/p={self.n / self.n_params:.3g}, "
                f"leverage>0.5: {int(np.count_nonzero(self._leverage > 0.5))})")

    # -- helpers
    def _reading(self) -> Any:
        return _reading(self._data[0], self._progress)

    def _require_sets(self, offsets: np.ndarray, retrain: bool) -> None:
        sizes = np.diff(offsets).tolist()
        _memory.require(
            _memory.sets_bytes(self.n_params, sizes, max(1, self.n_params // 2), retrain,
                               _cores(self._threads)),
            f"{'retraining' if retrain else 'Newton steps for'} {len(sizes)} set(s) of "
            f"{sum(sizes)} samples in all at p = {self.n_params}", _memory.ADVICE_SETS,
            self._max_memory)

    def _need_host(self) -> None:
        """Queries that run on the CPU read X from host memory: for X in GPU memory, copy it
        there once, on the first such query."""
        if self._device is None or self._core.has_host_data:
            return
        with _HOST_COPY_LOCK:
            if not self._core.has_host_data:
                dev = self._device
                Xh = _core.copy_device_to_host(dev.ptr, dev.rows, dev.cols, dev.f32)
                self._core.attach_host(Xh)
                self._data = (Xh,) + self._data[1:]

    def _directions(self, v: ArrayLike, name: str) -> np.ndarray:
        return _direction_matrix(v, self.n_params, name)

    def _rows(self, indices: Optional[ArrayLike], rescaled: bool,
              out: Optional[Any] = None) -> np.ndarray:
        idx = (np.arange(self.n, dtype=np.int64) if indices is None
               else _one_set(indices, self.n, "indices"))
        if not self._core.rows_on_device:
            self._need_host()
        if out is not None:
            from ._targets import write_rows

            block = max(1, (16 << 20) // (8 * self.n_params))
            with self._reading():
                written = write_rows(out, len(idx), self.n_params, block,
                                     lambda a, b: self._row_block(idx[a:b], rescaled),
                                     reads=self._data[0])
        else:
            _memory.require(8.0 * len(idx) * self.n_params,
                            f"{len(idx)} influence rows of p = {self.n_params} entries",
                            _memory.ADVICE_ROWS, self._max_memory)
            with self._reading():
                written = self._row_block(idx, rescaled)
        if rescaled:
            self._warn_samples(np.intersect1d(idx, self.singular_samples))
        return written

    def _row_block(self, idx: np.ndarray, rescaled: bool) -> np.ndarray:
        rows = self._core.influence_rows(idx, rescaled, self._threads)
        _check_overflow(rows, "the influence rows", np.isinf(self._rescale[idx]) if rescaled
                        else None)
        return rows

    def _warn_samples(self, singular: np.ndarray) -> None:
        if len(singular):
            warnings.warn(_naming(SingularRemovalWarning(
                f"removing sample(s) {_name_some(singular)} makes the Hessian singular "
                f"(leverage 1): their RIF is inf. {self._singular_advice()}"), singular,
                self.n), stacklevel=3)

    def _singular_advice(self) -> str:
        return singular_advice(self.l2)


def retrain_advice(l2: float, n_iter: np.ndarray, max_iter: int) -> str:
    """What to do about refits that stopped above their tolerance, having taken `n_iter`
    iterations: more iterations where the limit stopped them; l2 > 0 only where l2 = 0 lets
    the problem without the set lack a minimiser or a positive-definite Hessian (every
    engine's retrain warning ends with this)."""
    advice = []
    if np.any(np.asarray(n_iter) >= max_iter):
        advice.append(f"raise max_iter (it was {max_iter})")
    if l2 == 0.0:
        advice.append("without these samples the problem may have no finite minimiser "
                      "(add l2 > 0)")
    elif np.any(np.asarray(n_iter) < max_iter):
        advice.append("the gradient norm may no longer decrease in float64 rounding "
                      "(raise tol)")
    return "; or ".join(advice)


def singular_advice(l2: float) -> str:
    """What to do about a removal that makes the Hessian singular: with l2 > 0 only the
    unpenalised intercept can be left without data (every engine's warnings end with this)."""
    if l2 > 0:
        return ("With l2 > 0 that leaves the unpenalised intercept without data: keep a "
                "sample of positive weight outside the set.")
    return "Add l2 > 0 to keep it invertible."


def _direction_matrix(v: ArrayLike, p: int, name: str) -> np.ndarray:
    """Directions (p,) or (p, m) as the kernel takes them: a C-contiguous float64 (m, p)."""
    arr = _asarray(v, name)
    _check_numeric(arr, name)
    if arr.ndim not in (1, 2) or arr.shape[0] != p:
        raise ValueError(f"{name} must have shape ({p},) or ({p}, m), got {arr.shape}")
    arr = arr.reshape(p, -1).T
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _unpickle(X: np.ndarray, y: np.ndarray, theta: np.ndarray, kwargs: dict,
              labels: Any) -> Attribution:
    A = Attribution(X, y, theta, **kwargs)
    A._labels = labels
    return A


# ----------------------------------------------------------------------------- functional API

_DOC_KEYWORDS = """
    The keywords are those of :class:`Attribution`: ``l2``, ``family``, ``sample_weight``,
    ``fit_intercept``, ``num_threads``, ``backend``, ``max_memory``, ``progress``,
    ``precision``. X may be a
    source larger than memory (a ``.npy`` path, shards, Zarr, HDF5, Dask: rif_native.sources)."""


def leverage(X: ArrayLike, y: ArrayLike, theta: ArrayLike, *, l2: float = 0.0,
             family: str = "logistic", sample_weight: Optional[ArrayLike] = None,
             fit_intercept: bool = False, num_threads: Optional[int] = None,
             backend: Optional[str] = None, max_memory: _memory.MemorySize = None,
             progress: Optional[bool] = None, precision: str = "double") -> np.ndarray:
    """(n,) generalised leverages h_i = a_i x_i^T H^{-1} x_i at theta."""
    return Attribution(X, y, theta, **_keywords(locals())).leverage.copy()


def influence(X: ArrayLike, y: ArrayLike, theta: ArrayLike, *, out: Optional[Any] = None,
              l2: float = 0.0, family: str = "logistic",
              sample_weight: Optional[ArrayLike] = None, fit_intercept: bool = False,
              num_threads: Optional[int] = None, backend: Optional[str] = None,
              max_memory: _memory.MemorySize = None,
              progress: Optional[bool] = None, precision: str = "double") -> np.ndarray:
    """(n, p) classic influence functions: row i is IF_i = H^{-1} g_i, the first-order removal
    effect theta_{-i} - theta_hat of sample i. ``out``: a ``.npy`` or ``.zarr`` path to write
    the rows to block by block (see :meth:`Attribution.influence`)."""
    _check_out(out, X)
    return Attribution(X, y, theta, **_keywords(locals())).influence(out=out)


def rescaled_influence(X: ArrayLike, y: ArrayLike, theta: ArrayLike, *,
                       out: Optional[Any] = None, l2: float = 0.0, family: str = "logistic",
                       sample_weight: Optional[ArrayLike] = None, fit_intercept: bool = False,
                       num_threads: Optional[int] = None, backend: Optional[str] = None,
                       max_memory: _memory.MemorySize = None,
                       progress: Optional[bool] = None, precision: str = "double") -> np.ndarray:
    """(n, p) rescaled influence functions: row i is RIF_i = IF_i / (1 - h_i), the Newton-step
    removal effect theta_{-i} - theta_hat of sample i. A drop-in replacement for influence()
    that stays accurate when d is comparable to n. ``out`` as for :func:`influence`."""
    _check_out(out, X)
    return Attribution(X, y, theta, **_keywords(locals())).rescaled_influence(out=out)


def _check_out(out: Optional[Any], X: ArrayLike) -> None:
    """Refuse a bad out= target before the attribution's passes over X, not after them."""
    if out is not None:
        from ._targets import check_target

        check_target(out, X)


def newton_step(X: ArrayLike, y: ArrayLike, theta: ArrayLike, sets: SetsLike, *,
                l2: float = 0.0, family: str = "logistic",
                sample_weight: Optional[ArrayLike] = None, fit_intercept: bool = False,
                num_threads: Optional[int] = None, backend: Optional[str] = None,
                max_memory: _memory.MemorySize = None,
                progress: Optional[bool] = None, precision: str = "double") -> np.ndarray:
    """Newton-step removal effect H_{-T}^{-1} sum_{i in T} g_i of each set T: (p,) for one set,
    (m, p) for a list of sets."""
    return Attribution(X, y, theta, **_keywords(locals())).group_effect(sets, method="ns")


_ATTRIBUTION_KEYWORDS = ("l2", "family", "sample_weight", "fit_intercept", "num_threads",
                         "backend", "max_memory", "progress", "precision")


def _keywords(args: dict) -> dict:
    """Attribution's keyword arguments among a one-call function's arguments."""
    return {k: args[k] for k in _ATTRIBUTION_KEYWORDS}


for _f in (leverage, influence, rescaled_influence, newton_step):
    _f.__doc__ = (_f.__doc__ or "") + "\n" + _DOC_KEYWORDS


def _precision(precision: Any) -> str:
    """The `precision` option, checked: "double" or "mixed"."""
    if precision not in ("double", "mixed"):
        raise ValueError(f"precision must be 'double' or 'mixed', got {precision!r}")
    return str(precision)


def fit(
    X: ArrayLike,
    y: ArrayLike,
    *,
    l2: float = 0.0,
    family: str = "logistic",
    sample_weight: Optional[ArrayLike] = None,
    fit_intercept: bool = False,
    tol: float = 1e-10,
    max_iter: int = 100,
    theta0: Optional[ArrayLike] = None,
    num_threads: Optional[int] = None,
    max_memory: _memory.MemorySize = None,
    progress: Optional[bool] = None,
    backend: Optional[str] = None,
    n_classes: Optional[int] = None,
    precision: str = "double",
    solver: str = "auto",
) -> FitResult:
    """Minimise F(theta) = sum_i w_i loss(y_i, x_i . theta) + l2/2 ||theta||_P^2 by Newton's method.

    Damped Newton steps with a backtracking line search, from ``theta0`` (zeros by default),
    until ``||grad F|| <= tol * max(1, ||grad F(0)||)``. The tolerance is absolute where
    ``||grad F(0)|| < 1``: with sample weights far below 1 (1e-10, say; weights summing to 1
    over thousands of samples are fine) theta can meet it far from the minimiser; scale the
    weights up (with l2 scaled alike, the minimiser does not change) or lower ``tol``.

    ``solver="auto"`` first takes L-BFGS steps (diagonally preconditioned, one pass over X
    each) where a Hessian costs many passes: dense X in memory with p >= 256 and n < 512 p,
    a logistic or Poisson loss. They aim at the tolerance, or at a hundredth of it when
    ``tol <= 1e-6`` (where Newton's last step usually lands), and stop there, or once they have cost as many passes as one Hessian
    (p / 32), or when they stop making progress; Newton's steps finish from there.
    ``"newton"`` takes Newton steps only; ``"lbfgs"`` starts with L-BFGS steps whatever the
    shape (up to 1000 passes, Newton's steps after). The tolerance the result meets is the
    same; ``lbfgs_steps`` counts the L-BFGS steps, which ``max_iter`` (Newton's iterations,
    ``n_iter``) does not limit. A singular problem (l2 = 0 with collinear columns: minimisers,
    none unique) can meet a loose tolerance by L-BFGS steps alone, where Newton's steps raise
    NotPositiveDefiniteError. Far from the optimum with n at least
    512 p, the steps' Hessians come from every k-th row (about 256 p rows: 1/k of the cost);
    near it (gradient norm below 1e-2 of its scale) steps reuse the last exact factor (chord
    steps: one gradient pass each) while each cuts the gradient norm at least tenfold. Only the
    steps change: the result meets the same gradient tolerance (``hessians`` and
    ``sampled_hessians`` count the passes that built a Hessian). Warns ConvergenceWarning when
    ``max_iter`` is reached first (e.g. separable data with l2 = 0, where no minimiser exists),
    or when the gradient norm stops decreasing above the tolerance (``stalled``). ``max_memory``
    caps the memory it may use (see :class:`Attribution`). Each iteration reads X once (z,
    loss, gradient and Hessian in one pass; a step that is not taken whole is shortened without
    reading X again). X may be a source larger than memory (rif_native.sources): ``passes``
    then says how often it was read, and ``progress`` draws a bar. A
    Dask array X is fitted on its cluster (rif_native._dask.fit: two distributed passes per
    iteration) unless ``backend="cpu"``; so is a stored X (``.npy`` paths, Zarr, HDF5) with
    ``backend="dask"``, its workers opening it themselves.

    ``precision="mixed"`` forms each iteration's Hessian in float32 (as
    :class:`Attribution`'s option does). Only the Newton steps change, not the gradient
    tolerance the result meets: a float32 Hessian that does not factor, a full step near the
    optimum that fails to halve the gradient norm, or a line search that finds no decrease
    switches the rest of the fit to float64.

    ``family="multinomial"`` (y integer classes 0..K-1, ``n_classes`` when not y.max() + 1)
    fits softmax regression: see :func:`rif_native.multinomial.fit`; theta is then (K, p).
    """
    fit_intercept = _flag(fit_intercept, "fit_intercept")
    precision = _precision(precision)
    if solver not in ("auto", "newton", "lbfgs"):
        raise ValueError(f"solver must be 'auto', 'newton' or 'lbfgs', got {solver!r}")
    X, y, sample_weight, _ = _frames.unwrap(X, y, sample_weight)
    if solver == "lbfgs" and (family == "multinomial" or _on_dask(X, backend)):
        raise ValueError("solver='lbfgs' is for the binary GLM families fitted in this process; "
                         "the multinomial and Dask fits take Newton steps")
    if family == "multinomial":
        if backend not in (None, "cpu", "auto") or max_memory is not None:
            raise ValueError("the multinomial fit runs on the CPU in memory: leave backend and "
                             "max_memory unset")
        if precision != "double":
            raise ValueError("precision='mixed' is for the binary GLM families; the multinomial "
                             "family computes in float64")
        from . import multinomial

        return multinomial.fit(X, y, l2=l2, sample_weight=sample_weight,
                               fit_intercept=fit_intercept, tol=tol, max_iter=max_iter,
                               theta0=theta0, num_threads=num_threads, progress=progress,
                               n_classes=n_classes)
    _family(family)
    if n_classes is not None and not (family == "logistic" and n_classes == 2 and isinstance(
            n_classes, (int, np.integer)) and not isinstance(n_classes, bool)):
        raise ValueError(f"n_classes is for family='multinomial' (got n_classes={n_classes!r} "
                         f"with family={family!r})")
    if backend is not None and _backend_choice(backend) == "cuda":
        raise ValueError("fit runs on the CPU (or on Dask); backend='cuda' is for Attribution")
    if _on_dask(X, backend):
        if precision != "double":
            raise ValueError("precision='mixed' is for fits in this process; the Dask engine "
                             "computes in float64 (or pass backend='cpu')")
        from . import _dask

        return _dask.fit(X, y, l2=l2, family=family, sample_weight=sample_weight,
                         fit_intercept=fit_intercept, tol=tol, max_iter=max_iter, theta0=theta0,
                         num_threads=num_threads, progress=progress)
    Xa, ya, t0, wa, n, d = _data(X, y, sample_weight, fit_intercept, theta0, "theta0")
    _check_some_weight(wa, fit_intercept, _real(l2, "l2"))
    if t0 is None:
        t0 = np.zeros(d + int(fit_intercept))
    _check_stopping(tol, max_iter)
    p = d + int(fit_intercept)
    cores = _cores(_threads(num_threads))
    need = _memory.fit_bytes(n, p, cores, precision) + _memory.source_bytes(Xa)
    advice = _memory.advice_for_shape(n, p, cores, precision)
    _memory.require(need, f"fitting n = {n} samples with p = {p} parameters",
                    _memory.advice_for(Xa, need, advice), max_memory)
    source = Xa if isinstance(Xa, sources.Source) else None
    before = source.passes if source else 0.0
    with _reading(Xa, progress):
        out = _core.fit(Xa, ya, t0, _real(l2, "l2"), _family(family), wa, fit_intercept,
                        float(tol), int(max_iter), _threads(num_threads), precision=precision,
                        solver=solver)
    result = FitResult(theta=out["theta"], grad_norm=float(out["grad_norm"]),
                       n_iter=int(out["n_iter"]), converged=bool(out["converged"]),
                       loss=float(out["loss"]), stalled=bool(out["stalled"]),
                       passes=source.passes - before if source else None,
                       hessians=int(out["hessians"]),
                       sampled_hessians=int(out["sampled_hessians"]),
                       lbfgs_steps=int(out["lbfgs_steps"]))
    why, hint, named = _finite_verdict(Xa, ya, wa, result, float(l2), family, fit_intercept,
                                       float(tol), num_threads)
    if why:
        result = dataclasses.replace(result, converged=False)
        warnings.warn(_naming(ConvergenceWarning(_finite.no_finite_fit(why)), named,
                              len(ya)), stacklevel=2)
    elif hint:
        warnings.warn(_naming(ConvergenceWarning(
            f"fit met its tolerance, but {hint}. Add l2 > 0 to be sure of a finite answer."),
            named, len(ya)), stacklevel=2)
    elif result.stalled and not result.converged:
        warnings.warn(
            f"fit stopped after {result.n_iter} iterations: the gradient norm "
            f"{result.grad_norm:.3g} no longer decreases (float64 rounding), above the tolerance "
            f"tol = {tol:g} times the gradient's scale; raise tol.",
            ConvergenceWarning, stacklevel=2)
    elif not result.converged:
        hint = ("with l2 = 0 the data may be separable (no finite minimiser): add l2 > 0 or "
                "raise max_iter" if float(l2) == 0.0 and family == "logistic"
                else f"raise max_iter (it was {int(max_iter)})")
        warnings.warn(
            f"fit stopped after {result.n_iter} iterations with gradient norm "
            f"{result.grad_norm:.3g} above the tolerance; {hint}.",
            ConvergenceWarning, stacklevel=2)
    return result
