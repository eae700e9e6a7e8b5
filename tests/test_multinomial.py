"""Multinomial (softmax) attribution against independent float64 references.

The references below are written from the API specification only (explicit Kp x Kp matrices,
no factorisation tricks, no code shared with the package):

    theta (K, p), class-major vec(theta) = theta.ravel(); x~_i = [x_i, 1] with an intercept
    F(theta) = sum_i w_i [logsumexp(z_i) - z_{i, y_i}] + l2/2 ||theta[:, :d]||_F^2
    z_i = theta x~_i (K logits)
    H   = sum_i w_i (A_i kron x~_i x~_i^T) + l2 (I_K kron P),   A_i = diag(p_i) - p_i p_i^T
    S   = {theta : theta.sum(axis=0) == 0},  U = Q kron I_p an orthonormal basis of S
          (Q: K x (K-1), orthonormal, orthogonal to 1_K);  H^+ = U (U^T H U)^{-1} U^T
    g_i = w_i (p_i - e_{y_i}) kron x~_i,   H_i = B_i B_i^T,
    B_i = sqrt(w_i) (I_K kron x~_i) A_i^{1/2}
    IF_i = H^+ g_i,  RIF_i = U (U^T (H - H_i) U)^{-1} U^T g_i,  NS_T likewise with sum over T
    M_i  = B_i^T H^+ B_i (K x K),  leverage_i = lambda_max(M_i)

Exact refits: damped Newton in the coordinates of S (removing T == giving it weight 0).

Tolerances (all stated where used):
  * float64 attribution quantities: max_i ||got_i - ref_i|| <= 1e-9 * max_i ||ref_i|| (rows:
    samples or sets); the problems are well conditioned (cond(H_S) < 1e5), so rounding gives
    ~1e-12.
  * two near-optimal points (exact refits, fits, scikit-learn): their distance must be below
    the a-posteriori bound 2 (||grad_S F(a)|| + ||grad_S F(b)||) / lambda_min(H_S), with the
    gradients recomputed by the NumPy reference (strong convexity on S near the optimum).
"""

from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import rif_native as rn  # noqa: E402
from conftest import DATA_DIR, sigmoid  # noqa: E402
from conftest import newton_fit as binary_newton_fit  # noqa: E402

TOL = 1e-9


# --------------------------------------------------------------------------------------------
# Independent dense float64 reference
# --------------------------------------------------------------------------------------------
def design(X, fit_intercept):
    X = np.asarray(X, dtype=np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1))]) if fit_intercept else X.copy()


def penalty_diag(p, fit_intercept):
    P = np.ones(p)
    if fit_intercept:
        P[-1] = 0.0
    return P


def softmax(Z):
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


def class_basis(K):
    """Q (K, K-1): orthonormal columns spanning {v : sum(v) = 0}."""
    C = np.eye(K) - 1.0 / K
    Uc, s, _ = np.linalg.svd(C)
    assert np.allclose(s[:K - 1], 1.0) and abs(s[K - 1]) < 1e-12
    return Uc[:, :K - 1]


def subspace_basis(K, p):
    """U (Kp, (K-1)p): orthonormal basis of S in class-major vec coordinates."""
    return np.kron(class_basis(K), np.eye(p))


def project_S(theta):
    theta = np.asarray(theta, dtype=np.float64)
    return theta - theta.mean(axis=0, keepdims=True)


def sqrtm_psd(A):
    lam, V = np.linalg.eigh(A)
    return (V * np.sqrt(np.clip(lam, 0.0, None))) @ V.T


def weights(n, sample_weight):
    return np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)


def mn_objective(Xt, y, theta, w, l2, pen):
    Z = Xt @ theta.T
    m = Z.max(axis=1)
    lse = m + np.log(np.exp(Z - m[:, None]).sum(axis=1))
    return float(np.sum(w * (lse - Z[np.arange(len(y)), y])) + 0.5 * l2 * np.sum(pen * theta**2))


def mn_gradient(Xt, y, theta, w, l2, pen):
    """Full (K, p) gradient of F."""
    K = theta.shape[0]
    R = w[:, None] * (softmax(Xt @ theta.T) - np.eye(K)[y])
    return R.T @ Xt + l2 * theta * pen


def mn_hessian(Xt, theta, w, l2, pen):
    """Full Kp x Kp Hessian in class-major coordinates (kron form)."""
    K, p = theta.shape
    Pr = softmax(Xt @ theta.T)
    A = Pr[:, :, None] * np.eye(K)[None] - Pr[:, :, None] * Pr[:, None, :]
    H = np.einsum("ikl,ij,im->kjlm", w[:, None, None] * A, Xt, Xt, optimize=True)
    return H.reshape(K * p, K * p) + l2 * np.kron(np.eye(K), np.diag(pen))


class DenseMultinomial:
    """Every quantity of the spec, densely, with the inverse of H restricted to S."""

    def __init__(self, X, y, theta, *, l2=0.0, sample_weight=None, fit_intercept=False):
        self.Xt = design(X, fit_intercept)
        self.n, self.p = self.Xt.shape
        self.theta = np.array(theta, dtype=np.float64)
        self.K = K = self.theta.shape[0]
        assert self.theta.shape == (K, self.p)
        self.y = np.asarray(y, dtype=np.intp)
        self.w = weights(self.n, sample_weight)
        self.l2 = float(l2)
        self.pen = penalty_diag(self.p, fit_intercept)
        n, p, q = self.n, self.p, K * self.p
        self.prob = softmax(self.Xt @ self.theta.T)
        self.R = self.w[:, None] * (self.prob - np.eye(K)[self.y])
        self.G = self.R[:, :, None] * self.Xt[:, None, :]                 # (n, K, p)
        self.A = (self.prob[:, :, None] * np.eye(K)[None]
                  - self.prob[:, :, None] * self.prob[:, None, :])          # (n, K, K)
        self.H = mn_hessian(self.Xt, self.theta, self.w, self.l2, self.pen)
        self.grad = mn_gradient(self.Xt, self.y, self.theta, self.w, self.l2, self.pen)
        self.U = subspace_basis(K, p)
        HS = self.U.T @ self.H @ self.U
        self.HS = 0.5 * (HS + HS.T)
        HSinv = np.linalg.inv(self.HS)
        self.HSinv = 0.5 * (HSinv + HSinv.T)
        self.Hplus = self.U @ self.HSinv @ self.U.T
        self.GS = self.G.reshape(n, q) @ self.U                           # g_i in S coordinates
        self.IF = (self.GS @ self.HSinv @ self.U.T).reshape(n, K, p)
        # B_i = sqrt(w_i) (I_K kron x~_i) A_i^{1/2}: B[i, k*p + j, l] = x~_ij (A_i^{1/2})_kl
        Asq = np.array([sqrtm_psd(a) for a in self.A]) * np.sqrt(self.w)[:, None, None]
        self.B = np.einsum("ij,ikl->ikjl", self.Xt, Asq).reshape(n, q, K)
        self.C = self.U.T @ self.B                                        # U^T B_i (n, m, K)
        M = self.C.transpose(0, 2, 1) @ (self.HSinv @ self.C)
        self.M = 0.5 * (M + M.transpose(0, 2, 1))
        self.leverage = np.linalg.eigvalsh(self.M)[:, -1]

    @property
    def RIF(self):
        """(H - H_i)^+ g_i by a direct solve per sample (n small solves of size (K-1) p)."""
        if not hasattr(self, "_RIF"):
            self._RIF = np.array([self.ns([i]) for i in range(self.n)])
        return self._RIF

    def rif_woodbury(self):
        """RIF_i = IF_i + H^+ B_i (I - M_i)^{-1} B_i^T IF_i (K x K systems; equal to RIF, as
        test_reference_self_consistency checks): fast for the larger real-data problems."""
        ifs = self.GS @ self.HSinv                                        # IF_i in S coordinates
        t = np.einsum("imk,im->ik", self.C, ifs)
        s = np.linalg.solve(np.eye(self.K)[None] - self.M, t[:, :, None])
        corr = (self.HSinv @ (self.C @ s))[:, :, 0]
        return ((ifs + corr) @ self.U.T).reshape(self.n, self.K, self.p)

    def H_T(self, T):
        """sum_{i in T} H_i in full coordinates, straight from the kron formula."""
        T = np.asarray(T, dtype=np.intp)
        WA = self.w[T, None, None] * self.A[T]
        H = np.einsum("ikl,ij,im->kjlm", WA, self.Xt[T], self.Xt[T], optimize=True)
        return H.reshape(self.K * self.p, self.K * self.p)

    def ns(self, T):
        """(H - sum_T H_i)^+ sum_T g_i by a direct solve in S (no Woodbury)."""
        T = np.asarray(T, dtype=np.intp)
        CT = self.C[T]
        HT = self.HS - np.einsum("imk,irk->mr", CT, CT)
        return (self.U @ np.linalg.solve(HT, self.GS[T].sum(axis=0))).reshape(self.K, self.p)

    def group(self, T, method):
        T = np.asarray(T, dtype=np.intp)
        if method == "if":
            return self.IF[T].sum(axis=0)
        if method == "rif":
            return self.RIF[T].sum(axis=0)
        return self.ns(T)

    def scores(self, D, method="rif"):
        est = self.RIF if method == "rif" else self.IF
        D = np.asarray(D, dtype=np.float64)
        if D.ndim == 2:
            return np.einsum("ikp,kp->i", est, D)
        return np.einsum("ikp,mkp->im", est, D)


# --------------------------------------------------------------------------------------------
# Independent Newton solver on S
# --------------------------------------------------------------------------------------------
def newton_fit_mn(X, y, K, *, l2, sample_weight=None, fit_intercept=False, theta0=None,
                  drop=None, rtol=1e-13, max_iter=100):
    """argmin over S of F (without the samples in ``drop``: weight 0) by damped Newton.

    Returns (theta in S, ||grad F(theta)||, ||grad F(0)||)."""
    Xt = design(X, fit_intercept)
    n, p = Xt.shape
    y = np.asarray(y, dtype=np.intp)
    w = weights(n, sample_weight).copy()
    if drop is not None:
        w[np.asarray(drop, dtype=np.intp)] = 0.0
    pen = penalty_diag(p, fit_intercept)
    U = subspace_basis(K, p)
    theta = np.zeros((K, p)) if theta0 is None else project_S(theta0)
    g0 = float(np.linalg.norm(mn_gradient(Xt, y, np.zeros((K, p)), w, l2, pen)))
    scale = max(1.0, g0)
    g = mn_gradient(Xt, y, theta, w, l2, pen)
    prev = np.inf
    for _ in range(max_iter):
        gn = float(np.linalg.norm(g))
        if gn <= rtol * scale or (gn <= 1e-8 * scale and gn >= 0.5 * prev):
            break  # converged, or the gradient reached its rounding noise
        prev = gn
        HS = U.T @ mn_hessian(Xt, theta, w, l2, pen) @ U
        step = (U @ np.linalg.solve(HS, U.T @ g.ravel())).reshape(K, p)
        t = 1.0
        if gn > 1e-6 * scale:
            f = mn_objective(Xt, y, theta, w, l2, pen)
            slope = float(np.sum(g * step))
            while t > 1e-12 and (mn_objective(Xt, y, theta - t * step, w, l2, pen)
                                 > f - 1e-4 * t * slope):
                t *= 0.5
        theta = project_S(theta - t * step)
        g = mn_gradient(Xt, y, theta, w, l2, pen)
    return theta, float(np.linalg.norm(g)), g0


def grad_S_norm(X, y, theta, *, l2, sample_weight=None, fit_intercept=False, drop=None):
    """||projection onto S of grad F(theta)|| (theta need not lie in S)."""
    Xt = design(X, fit_intercept)
    w = weights(Xt.shape[0], sample_weight).copy()
    if drop is not None:
        w[np.asarray(drop, dtype=np.intp)] = 0.0
    g = mn_gradient(Xt, np.asarray(y, dtype=np.intp), np.asarray(theta, float), w, l2,
                    penalty_diag(Xt.shape[1], fit_intercept))
    return float(np.linalg.norm(project_S(g)))


def distance_bound(X, y, theta_a, theta_b, *, l2, sample_weight=None, fit_intercept=False,
                   drop=None):
    """2 (||grad_S F(a)|| + ||grad_S F(b)||) / lambda_min(H_S(b)): bounds ||P_S (a - b)||
    for two points near the minimiser of a strongly convex F on S."""
    w = weights(np.asarray(X).shape[0], sample_weight).copy()
    if drop is not None:
        w[np.asarray(drop, dtype=np.intp)] = 0.0
    kw = dict(l2=l2, sample_weight=w, fit_intercept=fit_intercept)
    Xt = design(X, fit_intercept)
    theta_b = project_S(theta_b)
    U = subspace_basis(*theta_b.shape)
    H = mn_hessian(Xt, theta_b, w, l2, penalty_diag(Xt.shape[1], fit_intercept))
    lam = float(np.linalg.eigvalsh(U.T @ H @ U)[0])
    assert lam > 0, "H_S is not positive definite: the refit is not unique"
    return 2.0 * (grad_S_norm(X, y, theta_a, **kw) + grad_S_norm(X, y, theta_b, **kw)) / lam


# --------------------------------------------------------------------------------------------
# Comparisons and data
# --------------------------------------------------------------------------------------------
def assert_rows(got, ref, tol, what):
    """max_i ||got_i - ref_i|| <= tol * max_i ||ref_i|| over the first axis."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    g = got.reshape(got.shape[0], -1)
    r = ref.reshape(ref.shape[0], -1)
    scale = float(np.linalg.norm(r, axis=1).max())
    err = float(np.linalg.norm(g - r, axis=1).max())
    assert scale > 0, f"{what}: the reference is zero"
    assert err <= tol * scale, (f"{what}: max row error {err:.3e} = {err / scale:.2e} x max row "
                                f"norm {scale:.3e} > {tol:.0e}")


def make_data(rng, n, d, K, *, fit_intercept, weighted, signal=2.0):
    """Random softmax data with every class present and a theta near the truth, in S."""
    X = rng.standard_normal((n, d)) / np.sqrt(d) * 1.5
    W = signal * rng.standard_normal((K, d))
    b = 0.4 * rng.standard_normal(K) if fit_intercept else np.zeros(K)
    Pr = softmax(X @ W.T + b)
    y = (Pr.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    y[rng.choice(n, K, replace=False)] = np.arange(K)
    w = rng.uniform(0.3, 3.0, n) if weighted else None
    theta = W + 0.2 * rng.standard_normal((K, d))
    if fit_intercept:
        theta = np.column_stack([theta, b + 0.1 * rng.standard_normal(K)])
    return X, y.astype(np.int64), w, project_S(theta)


def removal_sets(rng, n, p):
    sizes = [1, 2, 5, p, 3 * p, n // 2]
    return [np.sort(rng.choice(n, size=k, replace=False)) for k in sizes]


# --------------------------------------------------------------------------------------------
# The reference itself
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_reference_self_consistency(l2):
    """The dense reference agrees with finite differences, the Moore-Penrose pseudo-inverse,
    Woodbury and the leverage identities: a wrong reference cannot pass silently."""
    rng = np.random.default_rng(101)
    X, y, w, theta = make_data(rng, 70, 4, 4, fit_intercept=True, weighted=True)
    R = DenseMultinomial(X, y, theta, l2=l2, sample_weight=w, fit_intercept=True)
    K, p, q = R.K, R.p, R.K * R.p
    # gradient and Hessian against central differences (step 1e-6: error ~1e-9 relative)
    h = 1e-6
    E = rng.standard_normal((K, p))
    fd = (mn_objective(R.Xt, R.y, theta + h * E, R.w, l2, R.pen)
          - mn_objective(R.Xt, R.y, theta - h * E, R.w, l2, R.pen)) / (2 * h)
    assert abs(fd - np.sum(R.grad * E)) <= 1e-6 * np.linalg.norm(R.grad) * np.linalg.norm(E)
    fdH = (mn_gradient(R.Xt, R.y, theta + h * E, R.w, l2, R.pen)
           - mn_gradient(R.Xt, R.y, theta - h * E, R.w, l2, R.pen)) / (2 * h)
    HE = (R.H @ E.ravel()).reshape(K, p)
    assert np.linalg.norm(fdH - HE) <= 1e-6 * np.linalg.norm(HE)
    # sum_i g_i + l2 theta P is the gradient
    assert np.allclose(R.G.sum(axis=0) + l2 * theta * R.pen, R.grad, rtol=0, atol=1e-12 * R.n)
    # H maps S to S, so H^+ g = pinv(H) g for g in S; with l2 = 0, H^+ is pinv(H) itself
    pinv = np.linalg.pinv(R.H, rcond=1e-12, hermitian=True)
    assert_rows(R.G.reshape(R.n, q) @ pinv, R.IF.reshape(R.n, q), 1e-10, "pinv(H) g_i")
    if l2 == 0:
        assert np.linalg.norm(pinv - R.Hplus) <= 1e-10 * np.linalg.norm(R.Hplus)
    # B_i B_i^T = w_i A_i kron x~_i x~_i^T
    for i in (0, 7, 33):
        assert np.allclose(R.B[i] @ R.B[i].T, R.H_T([i]), rtol=0, atol=1e-13)
    # Woodbury: RIF_i = IF_i + H^+ B_i (I - M_i)^{-1} B_i^T IF_i
    for i in range(0, R.n, 9):
        Bi = R.B[i]
        corr = R.Hplus @ Bi @ np.linalg.solve(np.eye(K) - R.M[i], Bi.T @ R.IF[i].ravel())
        assert_rows((R.IF[i].ravel() + corr)[None], R.RIF[i].ravel()[None], 1e-11, "Woodbury")
    assert_rows(R.rif_woodbury(), R.RIF, 1e-11, "vectorised Woodbury RIF")
    # eigenvalues of M_i = nonzero eigenvalues of H^+ H_i, in [0, 1)
    for i in (3, 40):
        ev = np.sort(np.linalg.eigvals(R.Hplus @ R.H_T([i])).real)[-K:]
        assert np.allclose(ev, np.linalg.eigvalsh(R.M[i]), rtol=0, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(R.M) >= -1e-13) and np.all(R.leverage < 1)
    # sum_i tr M_i = tr(H^+ (H - l2 I kron P)) = (K-1) p - l2 tr(H^+ (I kron P))
    trace = (K - 1) * p - l2 * np.trace(R.Hplus @ np.kron(np.eye(K), np.diag(R.pen)))
    assert abs(np.trace(R.M, axis1=1, axis2=2).sum() - trace) <= 1e-11 * q
    # IF, RIF, NS lie in S
    assert np.abs(R.RIF.sum(axis=1)).max() <= 1e-13 * np.abs(R.RIF).max() * K


def test_reference_newton_is_a_minimiser():
    """The reference Newton solver reaches a stationary point that beats random neighbours."""
    rng = np.random.default_rng(102)
    X, y, w, _ = make_data(rng, 90, 5, 3, fit_intercept=True, weighted=True)
    theta, gn, g0 = newton_fit_mn(X, y, 3, l2=0.3, sample_weight=w, fit_intercept=True)
    assert gn <= 1e-11 * max(1, g0)
    assert np.abs(theta.sum(axis=0)).max() <= 1e-12
    Xt, pen = design(X, True), penalty_diag(6, True)
    f = mn_objective(Xt, y, theta, w, 0.3, pen)
    for _ in range(5):
        E = project_S(rng.standard_normal(theta.shape)) * 1e-3
        assert mn_objective(Xt, y, theta + E, w, 0.3, pen) > f


# --------------------------------------------------------------------------------------------
# Attribution quantities against the dense reference
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K", [3, 5])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [False, True], ids=["nointercept", "intercept"])
@pytest.mark.parametrize("l2", [0.0, 0.8])
def test_attribution_matches_dense_reference(K, weighted, fit_intercept, l2):
    """leverage, leverage_matrices, IF, RIF, scores, top and group effects vs the reference
    (tolerance 1e-9 of the largest reference row)."""
    seed = 1000 + 100 * K + 10 * weighted + 2 * fit_intercept + int(l2 > 0)
    rng = np.random.default_rng(seed)
    n, d = 120, 7
    X, y, w, theta = make_data(rng, n, d, K, fit_intercept=fit_intercept, weighted=weighted)
    kw = dict(l2=l2, sample_weight=w, fit_intercept=fit_intercept)
    R = DenseMultinomial(X, y, theta, **kw)
    p = R.p
    A = rn.MultinomialAttribution(X, y, theta, **kw)

    assert isinstance(rn.Attribution(X, y, theta, family="multinomial", **kw),
                      rn.MultinomialAttribution)
    assert (A.n, A.n_features, A.n_params, A.n_classes) == (n, d, p, K)
    assert A.family == "multinomial" and A.l2 == l2 and A.fit_intercept is fit_intercept
    np.testing.assert_array_equal(A.theta, theta)
    assert_rows(A.probabilities, R.prob, TOL, "probabilities")
    assert_rows(A.residuals, R.R, TOL, "residuals w_i (p_i - e_yi)")
    gscale = np.linalg.norm(R.G.reshape(n, -1), axis=1).sum() + l2 * np.linalg.norm(theta)
    assert abs(A.gradient_norm - np.linalg.norm(R.grad)) <= TOL * gscale, "gradient_norm"

    assert_rows(A.leverage, R.leverage, TOL, "leverage")
    assert np.all(A.leverage >= 0) and np.all(A.leverage < 1)
    assert_rows(A.leverage_matrices(), R.M, TOL, "leverage_matrices()")
    idx = np.array([17, 3, 42, 0])
    assert_rows(A.leverage_matrices(idx), R.M[idx], TOL, "leverage_matrices(indices)")

    assert_rows(A.influence(), R.IF, TOL, "influence()")
    assert_rows(A.rescaled_influence(), R.RIF, TOL, "rescaled_influence()")
    assert_rows(A.influence(idx), R.IF[idx], TOL, "influence(indices)")
    assert_rows(A.rescaled_influence(list(idx)), R.RIF[idx], TOL, "rescaled_influence(list)")
    # every removal effect lies in S
    assert np.abs(A.rescaled_influence().sum(axis=1)).max() <= 1e-12 * np.abs(R.RIF).max() * K

    D = rng.standard_normal((K, p))
    Dm = rng.standard_normal((3, K, p))
    for method in ("rif", "if"):
        s = A.scores(D, method=method)
        assert s.shape == (n,)
        assert_rows(s, R.scores(D, method), TOL, f"scores (K,p) {method}")
        sm = A.scores(Dm, method=method)
        assert sm.shape == (n, 3)
        assert_rows(sm.T, R.scores(Dm, method).T, TOL, f"scores (m,K,p) {method} per column")
    assert_rows(A.scores(D), R.scores(D, "rif"), TOL, "scores default = rif")

    top = A.top(D, k=5)
    ref_s = R.scores(D, "rif")
    scale = np.abs(ref_s).max()
    assert np.allclose(ref_s[np.asarray(top.increase)], np.sort(ref_s)[::-1][:5],
                       rtol=0, atol=TOL * scale), "top.increase is not the 5 largest scores"
    assert np.allclose(ref_s[np.asarray(top.decrease)], np.sort(ref_s)[:5],
                       rtol=0, atol=TOL * scale), "top.decrease is not the 5 smallest scores"

    sets = removal_sets(rng, n, p)
    for method in ("if", "rif", "ns"):
        got = A.group_effect(sets, method=method)
        assert got.shape == (len(sets), K, p)
        assert_rows(got, np.array([R.group(T, method) for T in sets]), TOL,
                    f"group_effect {method}")
        one = A.group_effect([int(i) for i in sets[3]], method=method)
        assert one.shape == (K, p)
        assert_rows(one[None], R.group(sets[3], method)[None], TOL, f"group_effect one {method}")
    assert_rows(A.group_effect(sets), np.array([R.group(T, "rif") for T in sets]), TOL,
                "group_effect default = rif")
    # NS of a singleton is the RIF row
    assert_rows(A.group_effect([[5]], method="ns"), A.rescaled_influence([5]), 1e-11,
                "NS({5}) vs RIF_5")

    # one thread gives the default result to rounding
    A1 = rn.MultinomialAttribution(X, y, theta, num_threads=1, **kw)
    assert_rows(A1.rescaled_influence(), A.rescaled_influence(), 1e-12, "1 thread vs default")


def test_zero_weight_sample_has_no_effect():
    """A sample of weight 0 has zero leverage, IF, RIF (its class keeps other samples)."""
    rng = np.random.default_rng(7)
    X, y, w, theta = make_data(rng, 80, 5, 4, fit_intercept=True, weighted=True)
    w[11] = 0.0
    kw = dict(l2=0.5, sample_weight=w, fit_intercept=True)
    R = DenseMultinomial(X, y, theta, **kw)
    A = rn.MultinomialAttribution(X, y, theta, **kw)
    assert A.leverage[11] == 0.0
    assert np.all(A.rescaled_influence([11]) == 0.0) and np.all(A.influence([11]) == 0.0)
    assert_rows(A.rescaled_influence(), R.RIF, TOL, "RIF with a zero weight")
    assert_rows(A.leverage_matrices(), R.M, TOL, "M_i with a zero weight")


# --------------------------------------------------------------------------------------------
# Exact refits
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fit_intercept,l2", [(True, 0.0), (True, 0.7), (False, 0.7)],
                         ids=["intercept-l2=0", "intercept-l2>0", "nointercept-l2>0"])
def test_retrain_matches_independent_newton_refit(fit_intercept, l2):
    """retrain(sets) theta/effect vs the reference Newton refit (within the a-posteriori
    distance bound), and NS_T == one Newton step of F_{-T} from theta_hat (1e-9)."""
    rng = np.random.default_rng(2000 + 10 * fit_intercept + int(l2 > 0))
    n, d, K = 150, 4, 3
    X, y, w, _ = make_data(rng, n, d, K, fit_intercept=fit_intercept, weighted=True,
                           signal=1.0)
    kw = dict(l2=l2, sample_weight=w, fit_intercept=fit_intercept)
    theta_hat, gn, g0 = newton_fit_mn(X, y, K, **kw)
    assert gn <= 1e-10 * max(1.0, g0), f"reference fit not converged: {gn:.2e}"
    A = rn.MultinomialAttribution(X, y, theta_hat, **kw)
    R = DenseMultinomial(X, y, theta_hat, **kw)
    sets = [np.array([int(np.argmax(R.leverage))]), np.sort(rng.choice(n, 3, replace=False)),
            np.sort(rng.choice(n, 20, replace=False))]

    res = A.retrain(sets)
    assert np.asarray(res.theta).shape == (len(sets), K, R.p)
    assert np.all(res.converged), f"retrain did not converge: {res.grad_norm}"
    ns = A.group_effect(sets, method="ns")
    for j, T in enumerate(sets):
        ref_theta, gref, g0T = newton_fit_mn(X, y, K, theta0=theta_hat, drop=T, **kw)
        assert gref <= 1e-10 * max(1.0, g0T), f"reference refit {j} not converged"
        effect = ref_theta - theta_hat
        bound = distance_bound(X, y, res.theta[j], ref_theta, drop=T, **kw)
        assert bound <= 1e-6 * np.linalg.norm(effect), "bound too loose to test anything"
        err = np.linalg.norm(project_S(res.theta[j]) - ref_theta)
        assert err <= bound, f"set {j} (|T|={len(T)}): ||theta - ref|| {err:.2e} > {bound:.2e}"
        assert np.linalg.norm(res.effect[j] - effect) <= bound + 1e-12 * np.linalg.norm(effect)
        assert np.allclose(res.effect[j], res.theta[j] - theta_hat, rtol=0, atol=1e-14)
        assert np.abs(res.effect[j].sum(axis=0)).max() <= 1e-10 * np.abs(effect).max()
        # one Newton step of F_{-T} from theta_hat, by the reference: -(H_{-T})^+ grad F_{-T}
        wT = weights(n, w).copy()
        wT[T] = 0.0
        gT = mn_gradient(R.Xt, R.y, theta_hat, wT, l2, R.pen)
        HT = R.U.T @ (R.H - R.H_T(T)) @ R.U
        step = -(R.U @ np.linalg.solve(HT, R.U.T @ gT.ravel())).reshape(K, R.p)
        assert_rows(ns[j][None], step[None], TOL, f"NS vs one Newton step of the refit, set {j}")

    one = A.retrain(sets[0])
    assert np.asarray(one.theta).shape == (K, R.p)
    assert_rows(one.effect[None], res.effect[0][None], 1e-8, "retrain of one set")


# --------------------------------------------------------------------------------------------
# Fitting and scikit-learn
# --------------------------------------------------------------------------------------------
def test_fit_matches_reference_newton():
    """rn.fit(family='multinomial') reaches the reference optimum (distance bound), in S."""
    rng = np.random.default_rng(3001)
    X, y, w, _ = make_data(rng, 160, 6, 4, fit_intercept=True, weighted=True)
    kw = dict(l2=0.4, sample_weight=w, fit_intercept=True)
    fr = rn.fit(X, y, family="multinomial", **kw)
    theta = np.asarray(fr.theta)
    assert theta.shape == (4, 7)
    assert np.abs(theta.sum(axis=0)).max() <= 1e-10 * np.abs(theta).max(), "theta not in S"
    ref, gn, g0 = newton_fit_mn(X, y, 4, **kw)
    assert gn <= 1e-10 * max(1, g0)
    bound = distance_bound(X, y, theta, ref, **kw)
    assert bound <= 1e-6 * np.linalg.norm(ref)
    assert np.linalg.norm(theta - ref) <= bound


def test_fit_probabilities_match_sklearn():
    """rn.fit(l2=1/C) probabilities == LogisticRegression(C).predict_proba, to the accuracy
    both solutions resolve: |dp_ik| <= ||x~_i|| * (distance bound of the two thetas)."""
    rng = np.random.default_rng(3002)
    K, C = 4, 0.5
    X, y, _, _ = make_data(rng, 200, 5, K, fit_intercept=True, weighted=False)
    lr = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-10, max_iter=200).fit(X, y)
    theta_sk = np.column_stack([lr.coef_, lr.intercept_])
    fr = rn.fit(X, y, family="multinomial", l2=1.0 / C, fit_intercept=True)
    theta = np.asarray(fr.theta)
    kw = dict(l2=1.0 / C, fit_intercept=True)
    bound = distance_bound(X, y, theta_sk, theta, **kw)
    assert bound <= 1e-6, f"sklearn and rn.fit do not resolve the optimum: bound {bound:.2e}"
    assert np.linalg.norm(project_S(theta_sk) - theta) <= bound
    P = rn.MultinomialAttribution(X, y, theta, **kw).probabilities
    xmax = np.linalg.norm(design(X, True), axis=1).max()
    diff = np.abs(P - lr.predict_proba(X)).max()
    assert diff <= xmax * bound + 1e-14, f"probabilities differ by {diff:.2e}"


def test_from_estimator_multiclass_logistic_regression():
    """from_estimator(lr) for a multiclass lr (labels not 0..K-1) is a MultinomialAttribution
    with l2 = 1/C, theta = [coef_, intercept_], y mapped to classes_ order (reference 1e-9)."""
    rng = np.random.default_rng(3003)
    K, C = 4, 2.0
    X, yi, _, _ = make_data(rng, 150, 5, K, fit_intercept=True, weighted=False)
    classes = np.array([-3, 2, 7, 40])
    labels = classes[yi]
    lr = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-10, max_iter=200)
    lr.fit(X, labels)
    np.testing.assert_array_equal(lr.classes_, classes)
    A = rn.Attribution.from_estimator(lr, X, labels)
    assert isinstance(A, rn.MultinomialAttribution)
    assert A.n_classes == K and A.fit_intercept is True
    assert abs(A.l2 - 1.0 / C) <= 1e-15
    theta_sk = np.column_stack([lr.coef_, lr.intercept_])
    np.testing.assert_array_equal(A.theta, theta_sk)
    assert np.abs(A.probabilities - lr.predict_proba(X)).max() <= 1e-12
    R = DenseMultinomial(X, yi, theta_sk, l2=1.0 / C, fit_intercept=True)
    assert_rows(A.leverage, R.leverage, TOL, "from_estimator leverage")
    assert_rows(A.rescaled_influence(), R.RIF, TOL, "from_estimator RIF")


# --------------------------------------------------------------------------------------------
# K = 2 is the binary logistic family
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fit_intercept", [False, True], ids=["nointercept", "intercept"])
def test_two_classes_equal_binary_logistic(fit_intercept):
    """theta = [-theta_b/2, theta_b/2], l2 = 2 l2_b: leverage, IF, RIF, scores, NS and the
    fit map onto the binary family's (1e-9 of the largest row)."""
    rng = np.random.default_rng(4000 + fit_intercept)
    n, d, l2b = 100, 6, 0.6
    X, y, w, _ = make_data(rng, n, d, 2, fit_intercept=fit_intercept, weighted=True)
    p = d + fit_intercept
    theta_b = rng.standard_normal(p)
    lift = lambda v: np.stack([-v / 2, v / 2], axis=-2)  # noqa: E731  (..., p) -> (..., 2, p)
    kwb = dict(l2=l2b, sample_weight=w, fit_intercept=fit_intercept)
    kwm = dict(l2=2 * l2b, sample_weight=w, fit_intercept=fit_intercept)
    Ab = rn.Attribution(X, y.astype(np.float64), theta_b, family="logistic", **kwb)
    Am = rn.MultinomialAttribution(X, y, lift(theta_b), **kwm)
    assert_rows(Am.probabilities[:, 1], sigmoid(design(X, fit_intercept) @ theta_b), TOL,
                "P(class 1)")
    assert_rows(Am.leverage, Ab.leverage, TOL, "leverage")
    assert_rows(np.trace(Am.leverage_matrices(), axis1=1, axis2=2), Ab.leverage, TOL,
                "trace M_i = h_i (M_i has rank 1)")
    assert_rows(Am.influence(), lift(Ab.influence()), TOL, "IF")
    assert_rows(Am.rescaled_influence(), lift(Ab.rescaled_influence()), TOL, "RIF")
    D = rng.standard_normal((2, p))
    assert_rows(Am.scores(D), Ab.scores((D[1] - D[0]) / 2), TOL, "scores")
    sets = removal_sets(rng, n, p)
    assert_rows(Am.group_effect(sets, method="ns"), lift(Ab.group_effect(sets, method="ns")),
                TOL, "NS")
    # the multinomial fit with l2 is the lifted binary optimum with l2 / 2 (independent fitter)
    tb, gnb = binary_newton_fit(X, y.astype(np.float64), family="logistic", **kwb)
    fr = rn.fit(X, y, family="multinomial", **kwm)
    bound = distance_bound(X, y, fr.theta, lift(tb), **kwm)
    assert bound <= 1e-6 * np.linalg.norm(tb)
    assert np.linalg.norm(np.asarray(fr.theta) - lift(tb)) <= bound


# --------------------------------------------------------------------------------------------
# Invariance to the null direction
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_shift_of_all_class_rows_changes_nothing(l2):
    """theta + 1_K u^T: same probabilities, leverage, M_i, IF/RIF rows, scores and NS (1e-9)."""
    rng = np.random.default_rng(5000 + int(l2 > 0))
    X, y, w, theta = make_data(rng, 90, 5, 4, fit_intercept=True, weighted=True)
    kw = dict(l2=l2, sample_weight=w, fit_intercept=True)
    u = 3.0 * rng.standard_normal(theta.shape[1])
    shifted = theta + u[None, :]
    A = rn.MultinomialAttribution(X, y, theta, **kw)
    B = rn.MultinomialAttribution(X, y, shifted, **kw)
    np.testing.assert_array_equal(B.theta, shifted)
    assert_rows(B.probabilities, A.probabilities, TOL, "probabilities")
    assert_rows(B.leverage, A.leverage, TOL, "leverage")
    assert_rows(B.leverage_matrices(), A.leverage_matrices(), TOL, "leverage_matrices")
    assert_rows(B.influence(), A.influence(), TOL, "IF rows")
    assert_rows(B.rescaled_influence(), A.rescaled_influence(), TOL, "RIF rows")
    D = rng.standard_normal(theta.shape)
    assert_rows(B.scores(D), A.scores(D), TOL, "scores")
    sets = removal_sets(rng, 90, theta.shape[1])
    assert_rows(B.group_effect(sets, method="ns"), A.group_effect(sets, method="ns"), TOL, "NS")
    # and the shifted object still matches the reference built at the shifted theta
    R = DenseMultinomial(X, y, shifted, **kw)
    assert_rows(B.rescaled_influence(), R.RIF, TOL, "RIF at shifted theta vs reference")
    if l2 == 0:  # F itself is invariant, so is its gradient
        assert abs(B.gradient_norm - A.gradient_norm) <= TOL * A.gradient_norm


def test_gradient_norm_is_taken_at_the_projection_on_S():
    """gradient_norm is ||grad F|| at theta's projection on S (the model the attribution
    works at, with theta's predictions); for theta outside S with l2 > 0 this differs from
    ||grad F(theta)||, whose penalty term l2 theta P has a component outside S."""
    rng = np.random.default_rng(5002)
    X, y, w, theta = make_data(rng, 90, 5, 4, fit_intercept=True, weighted=True)
    kw = dict(l2=0.5, sample_weight=w, fit_intercept=True)
    shifted = theta + 3.0 * rng.standard_normal(theta.shape[1])[None, :]
    R = DenseMultinomial(X, y, shifted - shifted.mean(axis=0), **kw)
    in_S = np.linalg.norm(R.grad)
    full = np.linalg.norm(DenseMultinomial(X, y, shifted, **kw).grad)
    assert abs(full - in_S) > 0.01 * full  # the two readings differ here
    got = rn.MultinomialAttribution(X, y, shifted, **kw).gradient_norm
    assert abs(got - in_S) <= TOL * in_S, \
        f"gradient_norm {got!r}: at the projection {in_S!r}, at theta itself {full!r}"


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
def test_bad_input_raises_value_error():
    """Labels outside 0..K-1, non-integer labels, an empty class, a wrong theta shape."""
    rng = np.random.default_rng(6000)
    n, d, K = 40, 3, 3
    X, y, _, theta = make_data(rng, n, d, K, fit_intercept=True, weighted=False)
    kw = dict(l2=0.5, fit_intercept=True)
    MA = rn.MultinomialAttribution
    bad = y.copy()
    bad[4] = K
    with pytest.raises(ValueError, match="(?i)label|class"):
        MA(X, bad, theta, n_classes=K, **kw)
    bad[4] = -1
    with pytest.raises(ValueError, match="(?i)label|class"):
        MA(X, bad, theta, **kw)
    with pytest.raises(ValueError, match="(?i)label|class|integer"):
        MA(X, y + 0.5, theta, **kw)
    with pytest.raises(ValueError, match="(?i)label|class|integer"):
        rn.fit(X, y + 0.5, family="multinomial", **kw)
    # class 1 has no samples: K = y.max() + 1 = 3, and with n_classes = 4 class 3 is empty
    gap = np.where(y == 1, 0, y)
    with pytest.raises(ValueError, match="(?i)class|sample|empty"):
        MA(X, gap, theta, **kw)
    with pytest.raises(ValueError, match="(?i)class|sample|empty"):
        MA(X, y, np.vstack([theta, np.zeros(d + 1)]), n_classes=K + 1, **kw)
    with pytest.raises(ValueError, match="(?i)class|sample|empty"):
        rn.fit(X, gap, family="multinomial", **kw)
    # theta of the wrong shape
    for wrong in (theta[:, :-1], theta[:-1], np.zeros(d + 1), np.zeros((K, d + 2))):
        with pytest.raises(ValueError, match="(?i)theta|shape"):
            MA(X, y, wrong, **kw)


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------
def _pca(X, k):
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    X = (X[:, sd > 0] - X[:, sd > 0].mean(axis=0)) / sd[sd > 0]
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    Z = X @ Vt[:k].T
    return Z / Z.std(axis=0)


def load_arrhythmia_multiclass():
    """UCI arrhythmia, 452 x 279, '?' -> column medians; the 13 classes present -> 0..12."""
    path = DATA_DIR / "arrhythmia" / "arrhythmia.data"
    if not path.is_file():
        pytest.skip(f"real dataset not found at {path}")
    raw = np.genfromtxt(path, delimiter=",", missing_values="?", filling_values=np.nan)
    X, cls = raw[:, :-1], raw[:, -1]
    med = np.nanmedian(X, axis=0)
    X = np.where(np.isnan(X), np.where(np.isnan(med), 0.0, med)[None, :], X)
    _, y = np.unique(cls, return_inverse=True)
    return X, y.astype(np.int64)


def _real_data_check(X, y, K, l2, refit_idx):
    kw = dict(l2=l2, fit_intercept=True)
    theta, gn, g0 = newton_fit_mn(X, y, K, **kw)
    assert gn <= 1e-10 * max(1, g0)
    fr = rn.fit(X, y, family="multinomial", **kw)
    bound = distance_bound(X, y, fr.theta, theta, **kw)
    assert np.linalg.norm(np.asarray(fr.theta) - theta) <= bound <= 1e-6 * np.linalg.norm(theta)
    A = rn.MultinomialAttribution(X, y, theta, **kw)
    R = DenseMultinomial(X, y, theta, **kw)
    assert_rows(A.leverage, R.leverage, TOL, "leverage")
    assert_rows(A.leverage_matrices(), R.M, TOL, "leverage_matrices")
    assert_rows(A.influence(), R.IF, TOL, "IF")
    assert_rows(A.rescaled_influence(), R.rif_woodbury(), TOL, "RIF (all rows, Woodbury form)")
    T = [np.array([int(np.argmax(R.leverage))])] + [np.array([i]) for i in refit_idx]
    direct = np.array([R.ns(t) for t in T])  # (H - H_i)^+ g_i by direct solves
    assert_rows(A.rescaled_influence(np.concatenate(T)), direct, TOL, "RIF (direct solves)")
    res = A.retrain(T, tol=1e-12)  # tight: the distance bound below must resolve the effect
    assert np.all(res.converged)
    for j, t in enumerate(T):
        ref, gref, g0T = newton_fit_mn(X, y, K, theta0=theta, drop=t, **kw)
        assert gref <= 1e-10 * max(1, g0T)
        b = distance_bound(X, y, res.theta[j], ref, drop=t, **kw)
        assert b <= 1e-6 * np.linalg.norm(ref - theta)
        err = np.linalg.norm(res.effect[j] - (ref - theta))
        assert err <= b + 1e-12 * np.linalg.norm(theta), f"refit of sample {t}: {err:.2e} > {b:.2e}"


def test_digits_subset_rif_and_exact_refits():
    """load_digits: 300 samples, 10 classes, 20 PCA features, l2 = 1: RIF / leverage vs the
    dense reference (1e-9) and three exact leave-one-out refits vs the reference Newton."""
    rng = np.random.default_rng(7000)
    dig = load_digits()
    idx = rng.choice(dig.data.shape[0], 300, replace=False)
    X, y = _pca(dig.data[idx], 20), dig.target[idx].astype(np.int64)
    assert set(np.unique(y)) == set(range(10))
    _real_data_check(X, y, 10, 1.0, refit_idx=rng.choice(300, 2, replace=False))


def test_arrhythmia_multiclass_rif_and_exact_refits():
    """UCI arrhythmia, 13 classes (some with 2-5 samples), 8 PCA features, l2 = 1: as digits,
    refitting also without one sample of the smallest class."""
    X, y = load_arrhythmia_multiclass()
    K = int(y.max()) + 1
    assert X.shape == (452, 279) and K == 13
    X = _pca(X, 8)
    counts = np.bincount(y, minlength=K)
    rare = int(np.flatnonzero(y == np.argmin(counts))[0])
    _real_data_check(X, y, K, 1.0, refit_idx=[rare, 100])


def test_repeated_passes_give_the_same_bits(rng):
    """The softmax pass adds its per-thread sums in a fixed order (each thread a fixed range of
    row blocks): with the same thread count, the Hessian and the gradient norm come out the
    same bits on every call, however the threads are scheduled."""
    n, d, K = 6000, 12, 3
    X = rng.standard_normal((n, d))
    y = rng.integers(0, K, n)
    theta = 0.3 * rng.standard_normal((K, d))
    first = rn.MultinomialAttribution(X, y, theta, l2=1.0, num_threads=2)
    for _ in range(12):
        again = rn.MultinomialAttribution(X, y, theta, l2=1.0, num_threads=2)
        np.testing.assert_array_equal(again._H, first._H)
        assert again.gradient_norm == first.gradient_norm


def test_retrain_without_every_sample_of_a_class():
    """Removing every sample of a class: with every parameter penalised (l2 > 0, no intercept)
    F_{-T} is strongly convex and has one finite minimiser, which retrain finds (it was refused
    as having none), equal to the reference Newton refit within its a-posteriori distance
    bound; with an unpenalised intercept that class's intercept runs off to -inf, and the set
    is still not refitted (ConvergenceWarning, singular True)."""
    rng = np.random.default_rng(2100)
    n, d, K = 60, 3, 3
    X = rng.standard_normal((n, d))
    y = np.r_[rng.integers(0, 2, n - 2), 2, 2]
    T = np.array([n - 2, n - 1])  # every sample of class 2
    kw = dict(l2=1.0, fit_intercept=False)
    theta_hat, gn, g0 = newton_fit_mn(X, y, K, **kw)
    assert gn <= 1e-10 * max(1.0, g0)
    res = rn.MultinomialAttribution(X, y, theta_hat, **kw).retrain([T])
    assert res.converged[0] and not res.singular[0]
    ref_theta, gref, g0T = newton_fit_mn(X, y, K, theta0=theta_hat, drop=T, **kw)
    assert gref <= 1e-10 * max(1.0, g0T)
    bound = distance_bound(X, y, res.theta[0], ref_theta, drop=T, **kw)
    assert bound <= 1e-6 * np.linalg.norm(ref_theta - theta_hat)
    assert np.linalg.norm(project_S(res.theta[0]) - ref_theta) <= bound

    kw = dict(l2=1.0, fit_intercept=True)
    theta_hat, _, _ = newton_fit_mn(X, y, K, **kw)
    A = rn.MultinomialAttribution(X, y, theta_hat, **kw)
    with pytest.warns(rn.ConvergenceWarning, match="every sample of a class"):
        res = A.retrain([T])
    assert res.singular[0] and not res.converged[0]


def test_class_metrics_check_their_class_indices():
    """ClassProbability and LogitMargin: values and gradients against NumPy softmax (1e-12) and
    central differences (1e-7) for classes of theta; a negative class (it read the last class's
    probability, and the gradient failed on a broadcast) or one beyond theta's K (an IndexError
    from NumPy) is a ValueError naming the argument."""
    from rif_native.multiclass_metrics import ClassProbability, LogitMargin

    rng = np.random.default_rng(2200)
    K, d = 4, 3
    X = rng.standard_normal((7, d))
    theta = rng.standard_normal((K, d + 1))
    P = softmax(design(X, True) @ theta.T)
    Z = design(X, True) @ theta.T
    for metric, value in ((ClassProbability(X, 2, fit_intercept=True), P[:, 2].sum()),
                          (LogitMargin(X[3], 3, 1, fit_intercept=True), Z[3, 3] - Z[3, 1])):
        assert abs(metric.value(theta) - value) <= 1e-12 * max(1.0, abs(value))
        fd = np.zeros_like(theta)
        for idx in np.ndindex(*theta.shape):
            e = np.zeros_like(theta)
            e[idx] = 1e-6
            fd[idx] = (metric.value(theta + e) - metric.value(theta - e)) / 2e-6
        np.testing.assert_allclose(metric.gradient(theta), fd, rtol=0, atol=1e-7)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a class index"):
            ClassProbability(X, bad)
    with pytest.raises(ValueError, match="l must be a class index"):
        LogitMargin(X[0], 0, -2)
    for metric in (ClassProbability(X, K, fit_intercept=True),
                   LogitMargin(X[0], 0, K + 1, fit_intercept=True)):
        for call in (metric.value, metric.gradient):
            with pytest.raises(ValueError, match=f"is not a class of theta, which has {K}"):
                call(theta)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_nonfinite_x_and_l2_are_named(tmp_path, fit_intercept):
    """NaN or inf in X (in memory, float32, or a .npy read in blocks) is a ValueError naming
    its first entry, as for the binary families, and l2 = inf one naming l2: both were reported
    as a Hessian that is not positive definite ('pivot nan ... add a ridge penalty l2 > 0')."""
    rng = np.random.default_rng(2300)
    X = rng.standard_normal((50, 4))
    y = np.r_[0, 1, 2, rng.integers(0, 3, 47)]
    X[31, 3], X[12, 2] = np.inf, np.nan
    i, j = np.argwhere(~np.isfinite(X))[0]  # the first in row-major order: (12, 2)
    np.save(tmp_path / "x.npy", X)
    theta = np.zeros((3, 4 + fit_intercept))
    kw = dict(l2=1.0, fit_intercept=fit_intercept)
    for data in (X, X.astype(np.float32), str(tmp_path / "x.npy")):
        with pytest.raises(ValueError, match=rf"X contains NaN or inf \(first at row {i}, "
                                             rf"column {j}\)"):
            rn.MultinomialAttribution(data, y, theta, **kw)
    with pytest.raises(ValueError, match=rf"first at row {i}, column {j}"):
        rn.fit(X, y, family="multinomial", **kw)
    sparse = pytest.importorskip("scipy.sparse")
    # sparse X: the same error, without NumPy's RuntimeWarning first (filterwarnings=error)
    with pytest.raises(ValueError, match="NaN or inf"):
        rn.MultinomialAttribution(sparse.csr_matrix(X), y, theta, **kw)
    for call in (lambda: rn.fit(np.nan_to_num(X), y, family="multinomial", l2=np.inf),
                 lambda: rn.MultinomialAttribution(np.nan_to_num(X), y, theta, l2=np.inf,
                                                   fit_intercept=fit_intercept)):
        with pytest.raises(ValueError, match="l2 must be a finite number >= 0, got inf"):
            call()
