"""Multinomial (softmax) logistic regression: exact generalised leverage, IF, RIF, NS and refits.

The model has K classes, labels y in {0, ..., K-1}, parameters ``theta`` (K, p) laid out as
scikit-learn's multinomial ``LogisticRegression`` (row k = class k's coefficients, the intercept
last: ``np.column_stack([coef_, intercept_])``), logits ``z_i = theta [x_i, 1]`` and

    F(theta) = sum_i w_i (logsumexp(z_i) - z_{i, y_i}) + l2/2 ||coefficients||^2

(intercepts unpenalised; scikit-learn's ``C`` is ``l2 = 1 / C``). With ``p_i = softmax(z_i)``,
sample i's gradient is ``g_i = w_i (p_i - e_{y_i}) x_i^T`` and its Hessian
``H_i = w_i A_i kron x_i x_i^T`` with ``A_i = diag(p_i) - p_i p_i^T`` (rank K - 1).

**The shift direction.** Adding one vector to every row of theta changes no probability, so F
is flat along those directions wherever the penalty does not reach them (always the intercepts;
every coefficient when l2 = 0). rif-native works exactly in the subspace S where theta's rows
sum to zero (rif_native._softmax): H restricted to S is positive definite (given data of full
rank), its inverse there is the pseudo-inverse ``H^+`` of the full Hessian, and every removal
effect below lies in S (its rows sum to zero). Metrics do not see the shift. A theta whose rows
do not sum to zero (scikit-learn's intercepts, say) is used as given: only its projection on S
matters, and refits are returned as ``theta + effect``.

**Estimates** (removal effects ``theta_{-T} - theta_hat``; positive: removing T increases it):

* IF_i = H^+ g_i;
* RIF_i = (H - H_i)^+ g_i, the exact Newton step of leaving i out, through a (K-1) x (K-1)
  Woodbury system per sample: the multiclass form of IF_i / (1 - h_i);
* NS_T = (H - sum_{i in T} H_i)^+ sum_{i in T} g_i, a (K-1)|T| Woodbury system (or a fresh
  factor when that is smaller);
* the generalised leverage of sample i is the K x K matrix
  ``M_i = w_i A_i^{1/2} (I kron x_i)^T H^+ (I kron x_i) A_i^{1/2}``, eigenvalues in [0, 1]
  (those of H^+ H_i); ``leverage`` is its largest eigenvalue (1: removing i leaves H singular).

**Cost** (n samples, p = d + fit_intercept, m = K - 1, q = m p): the Hessian pass builds the
m (m + 1) / 2 distinct p x p blocks as weighted symmetric rank updates (n p^2 flops each); the
inverse Hessian costs q^3; the leverage pass forms x_i^T (H^{-1})_{kl} x_i for all pairs by one
triangular product per pair (n p^2 flops each). In all ``m (m + 1) n p^2 + q^3``, against
``2 n p^2 + p^3 / 3`` for a binary model.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Optional

import numpy as np

from . import _core, _frames, _memory, _softmax
from ._api import (ConvergenceWarning, FitResult, RetrainResult, SingularRemovalWarning, TopSamples,
                   _as_design, _check_stopping, _cores, _method, _name_some, _naming, _parse_sets,
                   _flag, _reading, _real, _threads, _top, retrain_advice,
                   singular_advice)

__all__ = ["MultinomialAttribution", "fit"]

ArrayLike = Any
_SINGULAR = 1e-10  # leverage within this of 1: removing the sample leaves H singular
_BLOCK = 65536  # samples per block of the per-sample algebra
_ROW_DOUBLES = 2**21  # rows of X read at once by the per-set algebra (16 MiB of float64)


def _block_rows(width: int) -> int:
    """Rows of `width` values read at once by the per-set algebra (at most _ROW_DOUBLES)."""
    return max(1, _ROW_DOUBLES // max(width, 1))


_HESSIAN = "The multinomial Hessian at theta (in the subspace where the class rows sum to zero)"


class _Problem:
    """The data, in the kernel's coordinates, and one pass over them."""

    _ones: Optional[np.ndarray] = None  # weight()'s ones, made on first use

    def __init__(self, X: ArrayLike, y: ArrayLike, sample_weight: Optional[ArrayLike],
                 fit_intercept: bool, n_classes: Optional[int], num_threads: Optional[int],
                 l2: Any):
        self.l2 = _real(l2, "l2")
        if not (np.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2}")
        self.fit_intercept = _flag(fit_intercept, "fit_intercept")
        self.X = _as_design(X, self.fit_intercept)
        self.n, self.d = self.X.shape
        self.w = _softmax.weights(sample_weight, self.n)
        self.y, self.K = _softmax.labels(y, self.n, n_classes, self.w,
                                         empty_ok=self.l2 > 0 and not self.fit_intercept)
        self.threads = _threads(num_threads) or int(_core.default_threads())
        centre = None
        if self.fit_intercept and isinstance(self.X, np.ndarray) and self.n:
            total = self.n if self.w is None else float(self.w.sum())
            with np.errstate(invalid="ignore", over="ignore"):  # (named below)
                centre = (np.average(self.X, axis=0, weights=self.w).astype(np.float64)
                          if total > 0 else None)
            if centre is not None and not np.all(np.isfinite(centre)):
                self._check_finite()
        self.c = _softmax.Coordinates(self.K, self.d, self.fit_intercept, centre)
        self.p, self.m = self.c.p, self.c.m
        self.q = self.m * self.p

    def attribution_bytes(self) -> float:
        """An attribution's peak: the Hessian pass, or H and H^{-1} held through the leverage
        pass or through the per-sample algebra, whose blocks of _BLOCK samples take about
        6 m^2 + m doubles each while computed (measured with tracemalloc at K = 3 to 11:
        26 to 610 doubles; counted as 6 m^2 + 2 m + 2; not counted before 2026-12-06, which a build without OpenBLAS, with
        its smaller row blocks, showed: 43.0 MB at 200,000 x 50, K = 3, against 33.3 MB
        estimated); and the per-sample vectors."""
        cores = _cores(self.threads)
        held = _memory.softmax_quadforms_bytes(self.n, self.p, self.m, cores)
        algebra = 8.0 * min(self.n, _BLOCK) * (6 * self.m * self.m + 2 * self.m + 2)
        return (max(_memory.softmax_pass_bytes(self.n, self.p, self.m, cores),
                    8.0 * 2 * self.q * self.q + max(held, algebra))
                + _memory.source_bytes(self.X)
                + 8.0 * self.n * (2 * self.K + self.m * (self.m + 3)))

    def fit_bytes(self) -> float:
        """A fit's peak: a Hessian pass, or H, its inverse and the inverse's workspace; and the
        per-sample vectors, at most three n x K probabilities at once (a line search's trial
        pass while the last pass's are held: the kernel's and their NumPy copy)."""
        return (max(_memory.softmax_pass_bytes(self.n, self.p, self.m, _cores(self.threads)),
                    8.0 * 3 * self.q * self.q)
                + _memory.source_bytes(self.X) + 8.0 * self.n * (3 * self.K + self.m))

    def retrain_bytes(self, size: int) -> float:
        """Retraining a set of `size` distinct samples beyond what the attribution holds: the
        set's solver (Woodbury's panels, H^{-1} W with its transposed copy while built,
        q x k m, and three k m x k m matrices; or, for k m > q, H less the set's curvature and
        its inverse with workspace while built, the inverse held), then a Newton refresh's
        Hessian pass or inverse; with l2 = 0 the blocks of rows whose nonzeros are counted; the
        set's weights and three n x K probabilities (the pass kept, and a new pass's from the
        kernel with its NumPy copy). Not monotone in `size`: a set just below k m = q takes
        Woodbury's panels, larger than a fresh inverse."""
        q, km = self.q, size * self.m
        if km > q:  # (H less the curvature summed over blocks of rows: each row, as read and
            # scaled, its probabilities and curvature)
            rows = min(size, _block_rows(self.p))
            built = 4.0 * q * q + rows * (2 * self.p + 2 * self.K + 2 * self.m * self.m)
            held = 1.0 * q * q
        else:
            held = q * km + 3.0 * km * km + size * self.p
            built = held + q * km + km * km
        refresh = max(_memory.softmax_pass_bytes(self.n, self.p, self.m, _cores(self.threads)),
                      8.0 * 3 * q * q)
        support = 0.0
        if self.l2 == 0:  # (bytes per value: a block of X as read, its rows of positive
            # weight and their nonzero mask; then a block of the set's rows and its mask)
            step = _block_rows(self.d)
            support = max(17.0 * min(self.n, step), 9.0 * min(size, step)) * self.d
        return (max(8.0 * built, 8.0 * held + refresh, support)
                + _memory.source_bytes(self.X) + 8.0 * self.n * (3 * self.K + 2))

    def classes_without_minimiser(self, w: np.ndarray) -> np.ndarray:
        """The classes with no sample of positive weight under weights w, where that leaves F
        without a finite minimiser (an unpenalised intercept, or l2 = 0); none where every
        parameter is penalised."""
        if not (self.fit_intercept or self.l2 == 0):
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.bincount(self.y[w > 0], minlength=self.K) == 0)

    def weight(self) -> np.ndarray:
        """The sample weights; without any, n ones made once and read-only (callers that
        change weights copy them)."""
        if self.w is not None:
            return self.w
        if self._ones is None:
            self._ones = np.ones(self.n)
            self._ones.setflags(write=False)
        return self._ones

    def run(self, R: np.ndarray, hessian: bool, w: Optional[np.ndarray] = None,
            progress: Optional[bool] = None) -> dict:
        """One pass at reduced parameters R (m, p): P, G (m, p), loss and H (q, q) if asked."""
        with _reading(self.X, progress):
            out = _core.softmax_pass(self.X, self.y, self.w if w is None else w,
                                     np.ascontiguousarray(R.T), self.c.Q, self.l2,
                                     self.fit_intercept, self.c.centre, self.threads, hessian)
        if not np.isfinite(out["loss"]):
            self._check_finite()
        out["G"] = np.ascontiguousarray(out["G"].T)  # (m, p)
        return out

    def _check_finite(self) -> None:
        """ValueError naming X's first NaN or inf, as the binary kernel does (a read of X in
        blocks, made only once a pass's loss or X's column means have come out non-finite)."""
        step = _block_rows(self.d)
        for b in range(0, self.n, step):
            bad = ~np.isfinite(_softmax.rows(self.X, np.arange(b, min(b + step, self.n)), False,
                                             None))
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise ValueError(f"X contains NaN or inf (first at row {b + i}, column {j})")

    def user_norm(self, G: np.ndarray) -> float:
        """||grad F|| in the user's (K, p) parameters of a reduced gradient (m, p)."""
        return float(np.linalg.norm(self.c.dual_to_user(G)))


def _inverse(H: np.ndarray, threads: int, what: str = _HESSIAN) -> np.ndarray:
    return _core.spd_inverse(H, what, threads)


class MultinomialAttribution(_frames.Named):
    """Factor the multinomial Hessian once at ``theta``; answer removal questions from it.

    Args:
        X: (n, d) features (float64 or float32 arrays are read in place; ``.npy`` paths, shards
            and other sources of rif_native.sources are read block by block).
        y: (n,) integer class labels 0..K-1.
        theta: (K, p) parameters, p = d + fit_intercept, a row per class with the intercept
            last (scikit-learn: ``np.column_stack([coef_, intercept_])``). Usually the
            minimiser of F (:func:`fit`); ``gradient_norm`` says how close it is.
        l2: ridge penalty on the coefficients (not the intercepts); scikit-learn's ``C`` is
            ``l2 = 1 / C``.
        sample_weight: (n,) weights >= 0, default all ones.
        fit_intercept: X has a trailing column of ones, unpenalised.
        num_threads: threads for every computation (None: the idle cores now).
        n_classes: K, checked against y: labels must lie in 0..K-1, and every class needs
            samples of positive weight unless every parameter is penalised (l2 > 0 and no
            intercept; otherwise an error: such a class's intercept, or with l2 = 0 its
            coefficients, have no finite minimiser). Default ``y.max() + 1``.
        max_memory, progress: as for :class:`rif_native.Attribution`.

    Every estimate is a removal effect ``theta_{-T} - theta_hat`` of shape (K, p), lying in the
    subspace where the class rows sum to zero (see the module's docstring).
    """

    family = "multinomial"
    backend = "cpu"

    def __init__(self, X: ArrayLike, y: ArrayLike, theta: ArrayLike, *, l2: float = 0.0,
                 sample_weight: Optional[ArrayLike] = None, fit_intercept: bool = False,
                 num_threads: Optional[int] = None, n_classes: Optional[int] = None,
                 max_memory: _memory.MemorySize = None, progress: Optional[bool] = None,
                 family: str = "multinomial", backend: Optional[str] = None,
                 precision: str = "double", directions: Optional[ArrayLike] = None) -> None:
        if family != "multinomial":
            raise ValueError(f"MultinomialAttribution is the multinomial family, got {family!r}")
        from ._api import _precision

        if _precision(precision) != "double":
            raise ValueError("precision='mixed' is for the binary GLM families; the multinomial "
                             "family computes in float64")
        if backend not in (None, "cpu", "auto"):
            raise ValueError(f"the multinomial family runs on the CPU; backend={backend!r} is "
                             "not available for it")
        X, y, sample_weight, self._labels = _frames.unwrap(X, y, sample_weight)
        pb = _Problem(X, y, sample_weight, fit_intercept, n_classes, num_threads, l2)
        self._setup(pb, theta, progress, max_memory)
        if directions is not None:  # checked as for the binary families; each score is a pass
            self._directions(directions)
        t0 = time.perf_counter()
        out = pb.run(self._R, hessian=True, progress=progress)
        t1 = time.perf_counter()
        self._H = out["H"]
        self._gradient = out["G"]
        self._loss = float(out["loss"])
        self._P = out["P"]
        self._Hinv = _inverse(self._H, pb.threads)
        t2 = time.perf_counter()
        with _reading(pb.X, progress):
            S = _core.softmax_quadforms(pb.X, self._Hinv, pb.m, pb.fit_intercept, pb.c.centre,
                                        pb.threads)
        self._per_sample(S)
        self._timings = {"hessian": t1 - t0, "factor": t2 - t1,
                         "leverage": time.perf_counter() - t2}

    def _setup(self, pb: _Problem, theta: ArrayLike, progress: Optional[bool],
               max_memory: _memory.MemorySize) -> None:
        """The problem, theta and the options, once the memory an attribution holds is there
        (the constructor's first stage, and rif_native.saved's load)."""
        self._pb, self._progress, self._max_memory = pb, progress, max_memory
        self.n, self.n_features, self.n_params, self.n_classes = pb.n, pb.d, pb.p, pb.K
        self.l2, self.fit_intercept = pb.l2, pb.fit_intercept
        self._theta = _softmax.parameters(theta, pb.K, pb.p)
        self._theta.setflags(write=False)
        need = pb.attribution_bytes()
        _memory.require(need, f"a multinomial attribution with n = {pb.n}, K = {pb.K}, "
                        f"p = {pb.p} (H and its inverse: {pb.q} x {pb.q})",
                        _memory.advice_for(pb.X, need, _memory.ADVICE_FACTOR), max_memory)
        self._R = pb.c.point_to_kernel(self._theta)

    # -- the per-sample algebra
    def _per_sample(self, S: np.ndarray) -> None:
        """From the quadratic forms S: each sample's reduced residual r~_i, the Woodbury
        coefficients c_i = (I - w_i A~_i S_i)^{-1} r~_i (RIF_i = H^{-1} (c_i kron x_i)) and the
        leverage eigenvalues."""
        pb = self._pb
        n, m = pb.n, pb.m
        w = pb.weight()
        resid = self._P * w[:, None]
        resid[np.arange(n), pb.y] -= w
        self._resid = resid  # (n, K): w_i (p_i - e_{y_i})
        self._r = resid @ pb.c.Q  # (n, m)
        self._coef = np.empty((n, m))
        self._leverage = np.empty(n)
        self._S = S  # (n, m (m + 1) / 2) quadratic forms x_i^T (H^{-1})_{kl} x_i
        eye = np.eye(m)
        for b in range(0, n, _BLOCK):
            sl = slice(b, min(b + _BLOCK, n))
            A = _softmax.curvature(self._P[sl], pb.c.Q) * w[sl, None, None]
            Sm = _softmax.quadform_matrices(S[sl], m)
            root = _softmax.sqrtm_psd(A)
            M = root @ Sm @ root
            lam = np.linalg.eigvalsh(M)
            self._leverage[sl] = lam[:, -1]
            self._coef[sl] = np.linalg.solve(eye - A @ Sm, self._r[sl][..., None])[..., 0]
        singular = self._leverage >= 1.0 - _SINGULAR
        self._coef[singular] = np.inf
        self._singular = np.flatnonzero(singular)
        self._support: Optional[tuple] = None  # (support_counts,), once computed
        for a in (self._leverage, self._resid, self._P):
            a.setflags(write=False)

    # -- properties
    @property
    def theta(self) -> np.ndarray:
        """(K, p) the parameters the object was built at, as given."""
        return self._theta

    @property
    def probabilities(self) -> np.ndarray:
        """(n, K) predicted class probabilities at theta."""
        return self._P

    @property
    def residuals(self) -> np.ndarray:
        """(n, K) w_i (p_i - e_{y_i}): sample i's gradient is its outer product with x_i."""
        return self._resid

    @property
    def leverage(self) -> np.ndarray:
        """(n,) the largest eigenvalue of each sample's K x K generalised leverage M_i, in
        [0, 1]; for K = 2 the binary model's h_i."""
        return self._leverage

    @property
    def singular_samples(self) -> np.ndarray:
        """Samples whose removal leaves H singular (leverage 1): their RIF is inf."""
        return self._singular

    @property
    def gradient_norm(self) -> float:
        """||grad F|| (Frobenius, in the user's (K, p) parameters) at theta's projection on the
        subspace where the class rows sum to zero: the point every estimate is computed at,
        with theta's predictions. (With l2 > 0, a theta whose coefficient rows do not sum to
        zero is not itself a minimiser of F; its projection may be.)"""
        return self._pb.user_norm(self._gradient)

    @property
    def timings(self) -> dict:
        """Seconds of the construction's stages: hessian, factor (the inverse), leverage."""
        return dict(self._timings)

    def quadratic_form(self, delta: ArrayLike) -> np.ndarray:
        """0.5 delta^T H delta for each (K, p) delta of (s, K, p) (H at theta, penalty
        included): the second-order change of F along a removal effect."""
        D = np.asarray(delta, dtype=np.float64).reshape(-1, self.n_classes, self.n_params)
        V = self._pb.c.point_to_kernel(D).reshape(len(D), self._pb.q)
        return 0.5 * np.einsum("sq,sq->s", V @ self._H, V)

    @property
    def loss(self) -> float:
        """F(theta), penalty included."""
        return self._loss

    def leverage_matrices(self, indices: Optional[ArrayLike] = None) -> np.ndarray:
        """(k, K, K) generalised leverage matrices M_i (all samples when indices is None):
        ``w_i A_i^{1/2} (I kron x_i)^T H^+ (I kron x_i) A_i^{1/2}``, symmetric PSD, with the
        eigenvalues of H^+ H_i."""
        idx = self._indices(indices)
        pb = self._pb
        out = np.empty((len(idx), pb.K, pb.K))
        for b in range(0, len(idx), _BLOCK):
            part = idx[b:b + _BLOCK]
            A = _softmax.curvature(self._P[part], pb.c.Q) * pb.weight()[part, None, None]
            root = _softmax.sqrtm_psd(A)
            Mr = root @ _softmax.quadform_matrices(self._S[part], pb.m) @ root
            # in full coordinates A_i^{1/2} = Q A~_i^{1/2} Q^T on the subspace, so M_i = Q M~_i Q^T
            out[b:b + _BLOCK] = pb.c.Q @ Mr @ pb.c.Q.T
        return out

    # -- estimates
    @_frames.labelled("class_rows")
    def influence(self, indices: Optional[ArrayLike] = None, *,
                  out: Optional[Any] = None) -> np.ndarray:
        """(k, K, p) IF rows H^+ g_i of samples indices (all when None): removal effects.
        ``out``: a ``.npy`` or ``.zarr`` path to write them to block by block, as for
        :meth:`rif_native.Attribution.influence` (the file appears complete or not at all, and
        comes back opened read-only)."""
        return self._estimates(self._indices(indices), self._r, out)

    @_frames.labelled("class_rows")
    def rescaled_influence(self, indices: Optional[ArrayLike] = None, *,
                           out: Optional[Any] = None) -> np.ndarray:
        """(k, K, p) RIF rows (H - H_i)^+ g_i: the exact Newton step of leaving each sample
        out. Samples whose removal leaves H singular get inf rows (SingularRemovalWarning).
        ``out`` as for :meth:`influence`."""
        idx = self._indices(indices)
        written = self._estimates(idx, self._coef, out)
        self._warn_samples(np.intersect1d(idx, self._singular))
        return written

    def _estimates(self, idx: np.ndarray, coef: np.ndarray, out: Optional[Any]) -> np.ndarray:
        """The rows of samples idx from their Woodbury coefficients (IF's or RIF's), in memory
        or written to ``out`` block by block."""
        pb = self._pb
        if out is None:
            _memory.require(8.0 * len(idx) * pb.K * pb.p, f"{len(idx)} influence rows of "
                            f"K x p = {pb.K} x {pb.p} entries", _memory.ADVICE_ROWS,
                            self._max_memory)
            return self._rows(idx, coef[idx])
        from ._targets import write_rows

        block = max(1, (16 << 20) // (8 * pb.K * pb.p))
        with _reading(pb.X, self._progress):
            return write_rows(out, len(idx), (pb.K, pb.p), block,
                              lambda a, b: self._rows(idx[a:b], coef[idx[a:b]]), reads=pb.X)

    @_frames.labelled("class_solve")
    def solve(self, direction: ArrayLike) -> np.ndarray:
        """H^+ v for a gradient-like v (K, p) (or (k, K, p)) in the user's parameters."""
        D = self._directions(direction)
        pb = self._pb
        V = pb.c.dual_to_kernel(D).reshape(len(D), pb.q)
        U = (V @ self._Hinv).reshape(len(D), pb.m, pb.p)
        out = pb.c.point_to_user(U)
        return out[0] if np.ndim(direction) == 2 else out

    @_frames.labelled("class_scores")
    def scores(self, direction: ArrayLike, method: str = "rif") -> np.ndarray:
        """Each sample's estimated removal effect on a metric with gradient ``direction``
        ((K, p) at theta): ``<direction, RIF_i>`` (or IF_i): (n,), or (n, k) for k directions
        (k, K, p)."""
        method = _method(method, ("if", "rif"))
        D = self._directions(direction)
        pb = self._pb
        V = pb.c.dual_to_kernel(D).reshape(len(D), pb.q)
        A = (V @ self._Hinv).reshape(len(D), pb.m, pb.p)
        coef = self._coef if method == "rif" else self._r
        out = np.empty((pb.n, len(D)))
        with _reading(pb.X, self._progress):
            for j, Aj in enumerate(A):
                Z = _softmax.linear(pb.X, pb.c.predictor(Aj), pb.fit_intercept)  # (n, m)
                with np.errstate(invalid="ignore"):
                    out[:, j] = np.einsum("im,im->i", Z, coef)
        if method == "rif" and len(self._singular):
            out[self._singular] = np.inf
            self._warn_samples(self._singular)
        return out[:, 0] if np.ndim(direction) == 2 else out

    def top(self, direction: ArrayLike, k: int = 10, method: str = "rif") -> TopSamples:
        """The k samples whose removal increases (decreases) the metric most, by scores()."""
        return _top(np.asarray(self.scores(direction, method), dtype=np.float64), self.n, k)

    @_frames.labelled("class_effect")
    def group_effect(self, sets: Any, method: str = "rif") -> np.ndarray:
        """Estimated removal effect of each set T: (K, p) for one set, (s, K, p) for a list.

        method: "if" (sum of IF_i), "rif" (sum of RIF_i) or "ns" (the Newton step of removing
        T together: exact Woodbury on the held inverse, or a fresh factor of H - sum H_i when
        that system would be larger than H). Sets whose removal leaves H singular get inf.
        """
        method = _method(method, ("if", "rif", "ns"))
        indices, offsets, single = _parse_sets(sets, self.n)
        pb = self._pb
        out = np.empty((len(offsets) - 1, pb.K, pb.p))
        bad = []
        for j in range(len(offsets) - 1):
            T = indices[offsets[j]:offsets[j + 1]]
            if method == "ns":
                eff = self._newton_step(T)
                if not np.all(np.isfinite(eff)):
                    bad.append(j)
                out[j] = eff
            else:
                coef = self._coef[T] if method == "rif" else self._r[T]
                out[j] = self._sum_rows(T, coef)
        if method == "rif":
            self._warn_samples(np.intersect1d(indices, self._singular))
        if bad:
            warnings.warn(f"removing set(s) {_name_some(np.asarray(bad))} makes the Hessian "
                          f"singular: their Newton step is inf. {singular_advice(self.l2)}",
                          SingularRemovalWarning, stacklevel=2)
        return out[0] if single else out

    def retrain(self, sets: Any, *, tol: float = 1e-10, max_iter: int = 100,
                show_progress: bool = False, batch: int = 16) -> RetrainResult:
        """Refit exactly without each set T: argmin F_{-T} from theta, to
        ``||grad F_{-T}|| <= tol * max(1, ||grad F_{-T}(0)||)``.

        Each set iterates chord steps with its Hessian at theta (H - sum_{i in T} H_i, through
        Woodbury on the held inverse; one cheap pass over X per step, O(n d K)) and switches to
        Newton steps with fresh Hessians after three consecutive chord steps that each shrink
        the gradient norm by less than the factor 0.7. A set that takes every sample of some
        class (with an intercept or l2 = 0, that class's parameters then have no finite
        minimiser; with every parameter penalised they do, and the set is refitted), or whose
        removal leaves the Hessian singular (l2 = 0 and the remaining rows rank-deficient), is
        not refitted: ``singular`` True, ``converged`` False, with a warning. ``show_progress``
        draws a bar over the sets (``batch`` is accepted for the binary API's sake). The memory
        any set may need (its solver, a Newton step's Hessian pass and inverse) is checked
        first against the cap in force (the constructor's ``max_memory``, else
        ``RIF_MAX_MEMORY``, else what the machine has available): ``MemoryError`` before any
        work.
        """
        _check_stopping(tol, max_iter, batch)
        indices, offsets, single = _parse_sets(sets, self.n)
        distinct = [np.unique(indices[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
        sizes = {len(T) for T in distinct}
        _memory.require(max((self._pb.retrain_bytes(k) for k in sizes), default=0.0),
                        f"retraining sets of up to {max(sizes, default=0)} samples at "
                        f"n = {self.n}, K = {self.n_classes}, p = {self.n_params}",
                        _memory.ADVICE_SETS, self._max_memory)
        from ._multinomial_retrain import retrain_sets

        fields = retrain_sets(self, distinct, float(tol), int(max_iter), show_progress)
        why = np.asarray(fields.pop("why"))
        empty = np.flatnonzero(why == "class")
        if len(empty):
            warnings.warn(f"removing set(s) {_name_some(empty)} takes every sample of a class: "
                          "the refit has no finite minimiser and was not attempted "
                          "(converged False).", ConvergenceWarning, stacklevel=2)
        flat = np.flatnonzero(why == "hessian")
        if len(flat):
            warnings.warn(f"removing set(s) {_name_some(flat)} leaves the Hessian singular (no "
                          "unique minimiser): not refitted (converged False). Add l2 > 0.",
                          SingularRemovalWarning, stacklevel=2)
        bad = np.flatnonzero(~fields["converged"] & ~fields["singular"])
        if len(bad):
            warnings.warn(f"retrain of set(s) {_name_some(bad)} stopped with gradient norm "
                          f"{float(fields['grad_norm'][bad].max()):.3g} above the tolerance; "
                          f"{retrain_advice(self.l2, fields['n_iter'][bad], int(max_iter))}.",
                          ConvergenceWarning, stacklevel=2)
        if single:
            fields = {k: v[0] for k, v in fields.items()}
        return RetrainResult(**fields)

    def save(self, path: Any, *, include_x: Optional[bool] = None) -> None:
        """Write this object with H and its inverse to ``path`` (an uncompressed ``.npz``), so
        that :meth:`load` builds it again from one pass over X, without the Hessian and
        leverage passes or the inverse; see :mod:`rif_native.saved` and
        :mod:`rif_native._saved_multinomial` for the layout."""
        from .saved import save

        save(self, path, include_x=include_x)

    @classmethod
    def load(cls, path: Any, X: Optional[ArrayLike] = None, *,
             num_threads: Optional[int] = None, max_memory: _memory.MemorySize = None,
             progress: Optional[bool] = None) -> "MultinomialAttribution":
        """A MultinomialAttribution written by :meth:`save` (X from the file, or given when the
        file holds none); ``rn.Attribution.load`` reads it too."""
        from .saved import load

        return load(path, X, num_threads=num_threads, max_memory=max_memory, progress=progress,
                    multinomial=True)

    def audit(self, target: Any, **kwargs: Any) -> dict:
        """The fewest samples whose removal flips ``target`` (rif_native.audit's prediction or
        metric_threshold), by RIF and by IF, verified by exact retraining: see
        :func:`rif_native.audit.audit`."""
        from .audit import audit

        return audit(self, target, **kwargs)

    def check_refit(self, removed: Any, theta_refit: ArrayLike, *, method: str = "ns") -> Any:
        """Compare this object's estimate of removing ``removed`` with your own refit ((K, p)),
        and say whether that refit is converged enough to judge it: see
        :func:`rif_native.check_refit`."""
        from .refit_check import check_refit

        return check_refit(self, removed, theta_refit, method=method)

    def table(self, directions: Any = None) -> Any:
        """Every sample's id, class, weight, probability of its class, leverage, rescale factor
        and IF / RIF scores for each direction ((K, p), a metric of
        rif_native.multiclass_metrics, or {name: either}), as a SampleTable with ``to_frame()``
        and ``write(path)``: see :mod:`rif_native.tables`."""
        from .tables import sample_table

        return sample_table(self, directions)

    def trust(self, sets: Any = None, *, warn: bool = True) -> dict:
        """How far to trust RIF here (see rif_native.trust); p counts the K - 1 free class
        rows."""
        from .trust import trust

        return trust(self, sets, warn=warn)

    def __repr__(self) -> str:
        return (f"MultinomialAttribution(n={self.n}, d={self.n_features}, K={self.n_classes}, "
                f"l2={self.l2:g}, fit_intercept={self.fit_intercept}, "
                f"max_leverage={float(self._leverage.max()) if self.n else 0.0:.4g}, "
                f"n/p={self.n / (self.n_params * (self.n_classes - 1)):.3g}, "
                f"leverage>0.5: {int(np.count_nonzero(self._leverage > 0.5))})")

    # -- helpers
    def _indices(self, indices: Optional[ArrayLike]) -> np.ndarray:
        if indices is None:
            return np.arange(self.n)
        idx = np.asarray(indices).reshape(-1)
        if idx.dtype == bool:
            if idx.shape[0] != self.n:
                raise ValueError(f"a boolean mask of samples needs length {self.n}")
            return np.flatnonzero(idx)
        if len(idx) and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("indices must be integers (or a boolean mask)")
        idx = idx.astype(np.int64)
        if len(idx) and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"sample indices must lie in [0, {self.n})")
        return np.where(idx < 0, idx + self.n, idx)

    def _directions(self, v: ArrayLike) -> np.ndarray:
        D = np.asarray(v, dtype=np.float64)
        K, p = self.n_classes, self.n_params
        if D.ndim == 2:
            D = D[None]
        if D.ndim != 3 or D.shape[1:] != (K, p):
            raise ValueError(f"a direction must have shape (K, p) = ({K}, {p}) (or (k, {K}, "
                             f"{p}) for k of them), got {np.shape(v)}")
        if not np.all(np.isfinite(D)):
            raise ValueError("a direction has non-finite entries")
        return D

    def _rows(self, idx: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """H^{-1} (c_i kron x_i) for each i, in the user's (K, p) parameters."""
        pb = self._pb
        out = np.empty((len(idx), pb.K, pb.p))
        for b in range(0, len(idx), 1024):
            part = idx[b:b + 1024]
            Xr = _softmax.rows(pb.X, part, pb.fit_intercept, pb.c.centre)
            c = coef[b:b + 1024]
            G = (c[:, :, None] * Xr[:, None, :]).reshape(len(part), pb.q)
            finite = np.all(np.isfinite(c), axis=1)
            U = np.full((len(part), pb.q), np.inf)
            U[finite] = G[finite] @ self._Hinv
            out[b:b + 1024] = pb.c.point_to_user(U.reshape(len(part), pb.m, pb.p))
            out[b:b + 1024][~finite] = np.inf
        return out

    def _sum_rows(self, T: np.ndarray, coef: np.ndarray) -> np.ndarray:
        pb = self._pb
        if not np.all(np.isfinite(coef)):
            return np.full((pb.K, pb.p), np.inf)
        Xr = _softmax.rows(pb.X, T, pb.fit_intercept, pb.c.centre)
        g = (coef.T @ Xr).reshape(pb.q)
        return pb.c.point_to_user((g @ self._Hinv).reshape(pb.m, pb.p))

    def _set_panel(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For a set T (k samples): its rows Xr (k, p), W^T-products HW = H^{-1} W (q, k m)
        with W's column (i, a) = e_a kron x_i, E = blockdiag(w_i A~_i) (k m, k m) and
        S_T = W^T H^{-1} W."""
        pb = self._pb
        k, m, p = len(T), pb.m, pb.p
        Xr = _softmax.rows(pb.X, T, pb.fit_intercept, pb.c.centre)
        # H^{-1} W: column (i, a) is H^{-1}'s column block a applied to x_i
        HW = (self._Hinv.reshape(pb.q * m, p) @ Xr.T).reshape(pb.q, m, k)
        HW = np.ascontiguousarray(HW.transpose(0, 2, 1)).reshape(pb.q, k * m)
        # S_T = W^T H^{-1} W: row (i, a) is x_i against row block a of H^{-1} W
        blocks = HW.reshape(m, p, k * m)
        ST = np.stack([Xr @ blocks[a] for a in range(m)], axis=1).reshape(k * m, k * m)
        A = _softmax.curvature(self._P[T], pb.c.Q) * pb.weight()[T, None, None]
        E = np.zeros((k * m, k * m))
        for j in range(k):
            E[j * m:(j + 1) * m, j * m:(j + 1) * m] = A[j]
        return Xr, HW, E, ST

    def _structurally_singular(self, T: np.ndarray) -> bool:
        """Whether H - sum_{i in T} H_i is singular by counting (l2 = 0 only): see
        _multinomial_retrain.no_data_left."""
        from ._multinomial_retrain import no_data_left, support_counts

        if self._support is None:  # one pass over X, the first time it is needed
            self._support = (support_counts(self._pb),)
        return no_data_left(self._pb, np.asarray(T, dtype=np.int64), self._support[0])

    def _newton_step(self, T: np.ndarray) -> np.ndarray:
        pb = self._pb
        k, m = len(T), pb.m
        if k == 0:
            return np.zeros((pb.K, pb.p))
        if self._structurally_singular(T):
            return np.full((pb.K, pb.p), np.inf)
        rho = self._r[T].reshape(k * m)
        if k * m <= pb.q:
            Xr, HW, E, ST = self._set_panel(T)
            system = np.eye(k * m) - E @ ST
            try:
                cvec = np.linalg.solve(system, rho)
            except np.linalg.LinAlgError:
                return np.full((pb.K, pb.p), np.inf)
            if not _well_posed(system, E, ST):
                return np.full((pb.K, pb.p), np.inf)
            U = HW @ cvec
        else:
            U = self._fresh_solve(T, (rho.reshape(k, m).T @ _softmax.rows(
                pb.X, T, pb.fit_intercept, pb.c.centre)).reshape(pb.q))
            if U is None:
                return np.full((pb.K, pb.p), np.inf)
        return pb.c.point_to_user(U.reshape(m, pb.p))

    def _downdated(self, T: np.ndarray) -> np.ndarray:
        """H - sum_{i in T} H_i (q, q), reading T's rows in blocks of at most _ROW_DOUBLES."""
        pb = self._pb
        m, p = pb.m, pb.p
        w = pb.weight()
        D = np.zeros((m, p, m, p))
        step = _block_rows(p)
        for b in range(0, len(T), step):
            Tb = T[b:b + step]
            Xr = _softmax.rows(pb.X, Tb, pb.fit_intercept, pb.c.centre)
            A = _softmax.curvature(self._P[Tb], pb.c.Q) * w[Tb, None, None]
            # sum_i A_i kron x_i x_i^T: block (a, c) = X_T^T diag(A_ac) X_T, symmetric in (a, c)
            for a in range(m):
                for c in range(a, m):
                    block = Xr.T @ (A[:, a, c, None] * Xr)
                    D[a, :, c, :] += block
                    if c != a:
                        D[c, :, a, :] += block.T
        return self._H - D.reshape(pb.q, pb.q)

    def _fresh_solve(self, T: np.ndarray, g: np.ndarray) -> Optional[np.ndarray]:
        try:
            Hinv = _inverse(self._downdated(T), self._pb.threads,
                            "The Hessian without the removed set")
        except np.linalg.LinAlgError:
            return None
        return Hinv @ g

    def _warn_samples(self, singular: np.ndarray) -> None:
        if len(singular):
            warnings.warn(_naming(SingularRemovalWarning(
                f"removing sample(s) {_name_some(np.asarray(singular))} leaves the Hessian "
                f"singular (leverage 1): their RIF is inf. {singular_advice(self.l2)}"),
                singular, self.n),
                stacklevel=3)


def _well_posed(system: np.ndarray, E: np.ndarray, ST: np.ndarray) -> bool:
    """Whether I - E S_T is invertible beyond rounding: its eigenvalues are 1 - those of
    E^{1/2} S_T E^{1/2} (in [0, 1]); singular when the largest comes within _SINGULAR of 1."""
    root = _softmax.sqrtm_psd(E)
    lam = np.linalg.eigvalsh(root @ ST @ root)
    return bool(lam.size == 0 or lam[-1] < 1.0 - _SINGULAR)


def fit(X: ArrayLike, y: ArrayLike, *, l2: float = 0.0, sample_weight: Optional[ArrayLike] = None,
        fit_intercept: bool = False, tol: float = 1e-10, max_iter: int = 100,
        theta0: Optional[ArrayLike] = None, n_classes: Optional[int] = None,
        num_threads: Optional[int] = None, progress: Optional[bool] = None) -> FitResult:
    """Minimise the multinomial F by Newton's method in the subspace where the class rows sum
    to zero, from ``theta0`` (zeros by default), until
    ``||grad F|| <= tol * max(1, ||grad F(0)||)``. Each iteration is one Hessian pass over X
    (m (m + 1) / 2 rank updates), the inverse of the q x q reduced Hessian, and one gradient
    pass per line-search trial. Returns theta (K, p) with rows summing to zero.
    """
    from ._multinomial_retrain import line_search

    _check_stopping(tol, max_iter)
    pb = _Problem(X, y, sample_weight, fit_intercept, n_classes, num_threads, l2)
    need = pb.fit_bytes()
    _memory.require(need, f"fitting a multinomial model with n = {pb.n}, K = {pb.K}, "
                    f"p = {pb.p} (its Hessian and inverse: {pb.q} x {pb.q})",
                    _memory.advice_for(pb.X, need, _memory.ADVICE_FACTOR))
    R = (np.zeros((pb.m, pb.p)) if theta0 is None
         else pb.c.point_to_kernel(_softmax.parameters(theta0, pb.K, pb.p, "theta0")))
    target = float(tol) * max(1.0, pb.user_norm(
        pb.run(np.zeros((pb.m, pb.p)), hessian=False, progress=progress)["G"]))
    out = pb.run(R, hessian=True, progress=progress)
    it, converged, stalled = 0, False, False
    best = np.inf
    while True:
        norm = pb.user_norm(out["G"])
        if norm <= target:
            converged = True
            break
        if it >= max_iter:
            break
        if norm >= best and it > 3 and norm < 1e3 * target:
            stalled = True
            break
        best = min(best, norm)
        step = -(_inverse(out["H"], pb.threads) @ out["G"].reshape(pb.q)).reshape(pb.m, pb.p)
        t = line_search(pb, R, step, out)[0]  # (its pass at the new R is not kept)
        R = R + t * step
        it += 1
        out = None  # (the last pass's H and probabilities, before the next pass makes its own)
        out = pb.run(R, hessian=True, progress=progress)
    theta = pb.c.point_to_user(R)
    result = FitResult(theta=theta, grad_norm=pb.user_norm(out["G"]), n_iter=it,
                       converged=converged, loss=float(out["loss"]), stalled=stalled)
    if not converged:
        warnings.warn(f"multinomial fit stopped after {it} iterations with gradient norm "
                      f"{result.grad_norm:.3g} above the tolerance; with l2 = 0 the classes may "
                      "be separable (no finite minimiser): add l2 > 0 or raise max_iter.",
                      ConvergenceWarning, stacklevel=2)
    return result
