"""A MultinomialAttribution saved with its Hessian's inverse, and loaded again without the
Hessian pass, the q x q inverse (q^3) and the leverage pass: the multinomial family's room of
:mod:`rif_native.saved`, which writes the file's common entries (format, version, family, l2,
fit_intercept, n, d, theta (K, p), y, sample_weight, X, param_names, sample_ids).

Its own entries (m = K - 1, q = m p, in the kernel's reduced coordinates of
:mod:`rif_native.multinomial`):

=====================  ================  =====================================================
key                    shape             meaning
=====================  ================  =====================================================
n_classes              ()                K
centre                 (d,)/(0,)         c, the centre of X's rows in H's coordinates (with
                                         an intercept, in memory: X's weighted column means)
hessian                (q, q)            H at theta, penalty included
inverse                (q, q)            H^{-1}
quadforms              (n, m (m + 1)/2)  x_i^T (H^{-1})_{kl} x_i, the leverage pass's output
probabilities          (n, K)            softmax at theta, compared at load
classes                (K,)              the classes' names, when the object has them
=====================  ================  =====================================================

Loading makes one pass over X (probabilities, gradient and loss at theta, without the Hessian)
and checks that X is the data the file was saved from: every sample's probabilities, and the
quadratic forms of 16 samples spread over X, which see X where theta does not.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from . import _core, _memory, _softmax

KEYS = ("n_classes", "centre", "hessian", "inverse", "quadforms", "probabilities")

_CHECKED = 16  # samples whose quadratic forms are computed again at load
_AGREE = 1e-9  # relative agreement of the recomputed values with the saved ones


def arrays(A: Any) -> dict:
    """The multinomial entries of A's file."""
    pb = A._pb
    out = {"n_classes": np.array(pb.K),
           "centre": np.zeros(0) if pb.c.centre is None else pb.c.centre,
           "hessian": A._H, "inverse": A._Hinv, "quadforms": A._S,
           "probabilities": A.probabilities}
    labels = getattr(A, "_labels", None)
    if labels is not None and labels.classes is not None:
        classes = np.asarray(labels.classes)
        out["classes"] = classes if classes.dtype.kind in "biuf" else classes.astype(str)
    return out


def load(stored: dict, path: Any, X: Any, labels: Any, *, num_threads: Optional[int],
         max_memory: _memory.MemorySize, progress: Optional[bool]) -> Any:
    """The MultinomialAttribution of a file's entries ``stored`` on X (checked against them)."""
    from .multinomial import MultinomialAttribution, _Problem

    w = stored["sample_weight"]
    pb = _Problem(X, stored["y"], w if len(w) else None, bool(stored["fit_intercept"]),
                  int(stored["n_classes"]), num_threads, float(stored["l2"]))
    if labels is not None and "classes" in stored:
        labels.classes = stored["classes"].tolist()
    A = MultinomialAttribution.__new__(MultinomialAttribution)
    A._labels = labels
    _check_shapes(stored, pb, path)
    centre = stored["centre"]  # H's coordinates, as saved (any centre near the data serves)
    pb.c = _softmax.Coordinates(pb.K, pb.d, pb.fit_intercept, centre if len(centre) else None)
    A._setup(pb, stored["theta"], progress, max_memory)
    t0 = time.perf_counter()
    out = pb.run(A._R, hessian=False, progress=progress)
    _check_data(stored, pb, out["P"], path)
    A._H, A._Hinv = stored["hessian"], stored["inverse"]
    A._gradient, A._loss, A._P = out["G"], float(out["loss"]), out["P"]
    A._per_sample(stored["quadforms"])
    A._timings = {"hessian": 0.0, "factor": 0.0, "leverage": 0.0,
                  "load": time.perf_counter() - t0}
    return A


def _check_shapes(stored: dict, pb: Any, path: Any) -> None:
    q, pairs = pb.q, pb.m * (pb.m + 1) // 2
    want = {"hessian": [(q, q)], "inverse": [(q, q)], "quadforms": [(pb.n, pairs)],
            "probabilities": [(pb.n, pb.K)], "centre": [(0,)] + [(pb.d,)] * pb.fit_intercept}
    wrong = [k for k, shapes in want.items() if stored[k].shape not in shapes]
    if wrong:
        raise ValueError(f"load: {path!r} has {wrong} of the wrong shape for n = {pb.n}, "
                         f"K = {pb.K}, p = {pb.p}: the file is damaged")
    bad = [k for k in ("centre", "hessian", "inverse", "quadforms", "probabilities")
           if not np.all(np.isfinite(stored[k]))]
    if bad:
        raise ValueError(f"load: {path!r} has non-finite entries in {bad}: the file is damaged")


def _check_data(stored: dict, pb: Any, P: np.ndarray, path: Any) -> None:
    """X against the file: every probability, and 16 samples' quadratic forms."""
    if np.abs(P - stored["probabilities"]).max(initial=0.0) > _AGREE:
        raise ValueError(f"load: the predicted probabilities on X differ from those {path!r} "
                         "was saved with: X (or y, theta) is not the data it was saved from")
    idx = np.unique(np.linspace(0, pb.n - 1, _CHECKED).astype(np.int64)) if pb.n else []
    if not len(idx):
        return
    S = _core.softmax_quadforms(_softmax.raw_rows(pb.X, idx), stored["inverse"], pb.m,
                                pb.fit_intercept, pb.c.centre, pb.threads)
    saved = stored["quadforms"][idx]
    if np.abs(S - saved).max() > _AGREE * max(np.abs(saved).max(), 1e-300):
        raise ValueError(f"load: X's rows differ from those {path!r} was saved from (the "
                         f"quadratic forms of samples {idx.tolist()} were checked): X is not "
                         "the data it was saved from")
