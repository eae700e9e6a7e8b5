"""An Attribution saved with its factor, and loaded again without the passes over X.

``A.save(path)`` writes one uncompressed NumPy ``.npz`` file (no pickled objects: it opens with
``np.load(path, allow_pickle=False)`` in any NumPy program); ``rn.Attribution.load(path)``
builds the object again from it. Loading costs one pass z = X theta over X, which checks that
the data are those the factor was computed from (every sample's r_i and a_i, and the leverages
of 16 samples spread over X, which see X where theta does not), instead of the Hessian pass, the Cholesky
factorisation (p^3 / 3) and the leverage pass: a hundred times less work for n = 10 p.

Layout (p = d + fit_intercept; "kernel" arrays are in the kernel's centred parameters
theta~ = T theta, T = [I 0; c^T 1], when ``centre`` is not empty):

=====================  =========  ============================================================
key                    shape      meaning
=====================  =========  ============================================================
format                 ()         "rif-native attribution"
version                ()         1 (this layout)
rif_native_version     ()         the package version that wrote it
family                 ()         "logistic", "squared" or "poisson"
l2, fit_intercept      ()         the penalty and whether the last parameter is the intercept
n, d                   ()         samples and features
theta                  (p,)       the parameters the object was built at
y                      (n,)       labels
sample_weight          (n,)/(0,)  weights, or empty for all ones
centre                 (d,)/(0,)  c, the weighted column means X is centred on (intercept)
theta_kernel           (p,)       theta~
residuals, curvature   (n,)       r_i = w_i dloss/dz, a_i = w_i d2loss/dz2 at theta
leverage               (n,)       h_i = a_i x_i^T H^{-1} x_i
gradient               (p,)       grad F at theta~ (kernel parameters)
hessian_kernel         (p, p)     H~ = T^{-T} H T^{-1}, lower triangle (upper entries 0)
factor                 (p, p)     L with H~ = L L^T, lower triangular
X                      (n, d)     X itself, when saved (``include_x``; dense X)
X_data, X_indices,     (nnz,),    X as SciPy CSR arrays, when saved and X was sparse
X_indptr               (n + 1,)
param_names            (p,)       parameter names (when the object has labels)
sample_ids             (n,)       sample ids (when labelled by a DataFrame index; as strings
                                  unless numbers; a MultiIndex's tuples as their text)
precision              ()         "double" or "mixed": how H and the leverages were computed
                                  (``Attribution(precision=...)``); absent means "double"
kept_V, kept_U         (p, m)     the constructor's ``directions`` (the user's parameters) and
                                  U = H~^{-1} T^{-T} V with its columns' scales taken out,
                                  when the leverage pass kept their projections (else absent)
kept_scale             (m,)       the scales taken out before the solve ...
kept_scale_u           (m,)       ... and after it
kept_P                 (n, m)     P = X~ U, so that a loaded object's scores on these
                                  directions read X no more (checked on the 16 samples)
=====================  =========  ============================================================

X is saved when it is in memory (``include_x=None``); X read from files (``.npy``, shards,
Zarr, HDF5) is not, and is passed again to ``load(path, X)``. The file is written to a
temporary name and renamed, so it appears complete or not at all.

A MultinomialAttribution is saved in the same file with entries of its own (family
"multinomial"; see :mod:`rif_native._saved_multinomial`), in place of those of the table's
``theta_kernel`` to ``factor`` rows and ``precision``, and ``Attribution.load`` builds it again.

>>> A.save("attribution.npz")                          # doctest: +SKIP
>>> B = rn.Attribution.load("attribution.npz")        # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from . import _core, _frames, _memory, sources

FORMAT = "rif-native attribution"
VERSION = 1

_STATE = ("theta_kernel", "centre", "residuals", "curvature", "leverage", "gradient",
          "hessian_kernel", "factor")

#: The constructor's ``directions`` and their projections from the leverage pass, when it kept
#: some (all five or none): a loaded object's scores on them read X no more either.
_KEPT = ("kept_V", "kept_U", "kept_scale", "kept_scale_u", "kept_P")


def save(A: Any, path: Any, *, include_x: Optional[bool] = None) -> None:
    """Write Attribution A with its factor to ``path`` (see the module's docstring)."""
    from . import _saved_multinomial
    from ._api import Attribution
    from ._output import atomic_target
    from .multinomial import MultinomialAttribution

    if type(A) is Attribution:
        X, y, w = A._data
        family = {"y": np.asarray(y, dtype=np.float64), "precision": np.array(A.precision)}
        family.update(A._core.state())
    elif type(A) is MultinomialAttribution:
        X, y, w = A._pb.X, A._pb.y, A._pb.w
        family = {"y": y}
        family.update(_saved_multinomial.arrays(A))
    else:
        raise TypeError(f"only an Attribution (or a MultinomialAttribution) can be saved, not "
                        f"a {type(A).__name__}: pickle its arguments and build it again")
    arrays: dict = {
        "format": np.array(FORMAT), "version": np.array(VERSION),
        "rif_native_version": np.array(_core.build_info()["version"]),
        "family": np.array(A.family), "l2": np.array(A.l2),
        "fit_intercept": np.array(A.fit_intercept), "n": np.array(A.n),
        "d": np.array(A.n_features), "theta": A.theta,
        "sample_weight": np.zeros(0) if w is None else np.asarray(w, dtype=np.float64),
    }
    arrays.update(family)
    arrays.update(_x_arrays(X, include_x))
    labels = getattr(A, "_labels", None)
    if labels is not None:
        arrays["param_names"] = np.array(A.param_names, dtype=str)
        if labels.ids is not None:
            ids = np.asarray(labels.ids)
            arrays["sample_ids"] = (ids if ids.dtype.kind in "biuf"
                                    else np.array([str(i) for i in ids], dtype=str))
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"save: {path!r} must end in .npz (the file is a NumPy archive)")
    with atomic_target(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _x_arrays(X: Any, include_x: Optional[bool]) -> dict:
    """X's entries of the file: X itself in memory (dense or CSR), nothing for files."""
    sparse = isinstance(X, sources.Source) and X.csr is not None
    in_memory = sparse or (isinstance(X, np.ndarray) and not sources._file_backed(X))
    if include_x is None:
        include_x = in_memory
    if not include_x:
        return {}
    if X is None:
        raise ValueError("save: X is in GPU memory only; save with include_x=False and pass X "
                         "to load()")
    if sparse:
        indptr, indices, data = X.csr
        return {"X_data": data, "X_indices": indices, "X_indptr": indptr}
    if isinstance(X, sources.Source):
        raise ValueError(f"save: X is read from {X!r}; save with include_x=False (the default "
                         "for files) and pass X to load()")
    return {"X": np.asarray(X)}


def load(path: Any, X: Any = None, *, num_threads: Optional[int] = None,
         max_memory: _memory.MemorySize = None, progress: Optional[bool] = None,
         multinomial: Optional[bool] = None) -> Any:
    """The Attribution saved at ``path``, built again from its factor (one pass over X, which
    checks that X, y and the weights are the data it was saved from). X: the file's own when
    it holds one, else X as given to Attribution (an array, a path, shards, ...).
    ``multinomial``: True or False to refuse a file of the other kind before any work."""
    from ._api import Attribution, _as_design, _reading, _threads, _vectors

    stored = _read(path)
    _check_format(stored, path)
    family = str(stored["family"])
    if multinomial is not None and (family == "multinomial") != multinomial:
        raise ValueError(f"load: {path!r} holds a {family} attribution, not a "
                         f"{'multinomial' if multinomial else 'binary'} one: use "
                         f"rn.Attribution.load")
    n, d = int(stored["n"]), int(stored["d"])
    fit_intercept = bool(stored["fit_intercept"])
    w = stored["sample_weight"]
    X = _saved_x(stored, path) if X is None else X
    Xa = _as_design(X, fit_intercept)
    if tuple(Xa.shape) != (n, d):
        raise ValueError(f"load: X has shape {tuple(Xa.shape)}; {path!r} was saved for "
                         f"({n}, {d})")
    if str(stored["family"]) == "multinomial":
        from . import _saved_multinomial

        return _saved_multinomial.load(stored, path, Xa, _labels(stored, fit_intercept),
                                       num_threads=num_threads, max_memory=max_memory,
                                       progress=progress)
    ya, _, wa = _vectors(stored["y"], w if len(w) else None, stored["theta"], "theta", n, d,
                         fit_intercept)
    A = Attribution.__new__(Attribution)
    A._labels = _labels(stored, fit_intercept)
    A._num_threads, A._progress, A._max_memory = num_threads, progress, max_memory
    _memory.parse_size(max_memory)
    A._threads = _threads(num_threads) or int(_core.default_threads())
    A._device = None
    family, l2 = str(stored["family"]), float(stored["l2"])
    A._precision = str(stored["precision"]) if "precision" in stored else "double"
    with _reading(Xa, progress):
        A._core = _core.Attribution.restore(Xa, ya, l2, family, wa, fit_intercept, A._threads,
                                            {k: stored[k] for k in _STATE + ("theta",)
                                             + _kept_keys(stored, path)},
                                            precision=A._precision)
    if A._core.kept_directions:
        A._kept_v = stored["kept_V"]  # (p, m), pickled with the object
    A._finish("cpu", (Xa, ya, wa), n, d, family, l2, fit_intercept)
    return A


def _kept_keys(stored: dict, path: Any) -> tuple:
    present = [k for k in _KEPT if k in stored]
    if present and len(present) != len(_KEPT):
        raise ValueError(f"load: {path!r} lacks {sorted(set(_KEPT) - set(present))}: the file "
                         "is damaged")
    return tuple(present)


def _read(path: Any) -> dict:
    """The arrays of the .npz file at ``path``; a ValueError naming it for any other file (NumPy
    would say that it holds pickled data and suggest ``allow_pickle``, or give an array). The
    file is opened here, so that it is closed whatever NumPy makes of it."""
    import zipfile

    with open(os.fspath(path), "rb") as fh:
        try:
            f = np.load(fh, allow_pickle=False)
            if isinstance(f, np.lib.npyio.NpzFile):
                return {k: f[k] for k in f.files}
        except (ValueError, EOFError, zipfile.BadZipFile):
            pass
    raise ValueError(f"load: {path!r} is not a saved rif-native attribution (not a NumPy .npz "
                     "file)")


def _check_format(stored: dict, path: Any) -> None:
    from ._saved_multinomial import KEYS

    if "format" not in stored or str(stored["format"]) != FORMAT:
        raise ValueError(f"load: {path!r} is not a saved rif-native attribution")
    own = KEYS if "family" in stored and str(stored["family"]) == "multinomial" else _STATE
    missing = [k for k in ("format", "version", "family", "l2", "fit_intercept", "n", "d",
                           "theta", "y", "sample_weight") + own if k not in stored]
    if missing:
        raise ValueError(f"load: {path!r} lacks {missing}: the file is damaged")
    if int(stored["version"]) > VERSION:
        raise ValueError(f"load: {path!r} has layout version {int(stored['version'])}, newer "
                         f"than this rif-native reads ({VERSION}): upgrade rif-native")


def _saved_x(stored: dict, path: Any) -> Any:
    if "X" in stored:
        return stored["X"]
    if "X_data" in stored:
        from scipy import sparse

        n, d = int(stored["n"]), int(stored["d"])
        return sparse.csr_matrix((stored["X_data"], stored["X_indices"], stored["X_indptr"]),
                                 shape=(n, d))
    raise ValueError(f"load: {path!r} holds no X (it was read from files when saved): pass it, "
                     "rn.Attribution.load(path, X)")


def _labels(stored: dict, fit_intercept: bool) -> Optional[_frames.Labels]:
    if "param_names" not in stored:
        return None
    names = [str(s) for s in stored["param_names"]]
    features = names[:-1] if fit_intercept else names
    ids = None
    if "sample_ids" in stored:
        import pandas as pd

        ids = pd.Index(stored["sample_ids"])
    return _frames.Labels(features, ids)
