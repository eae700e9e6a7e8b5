"""Exact refits of a multinomial model without sets of samples (MultinomialAttribution.retrain).

Each set T iterates chord steps with the Hessian at theta_hat less the removed samples'
H - sum_{i in T} H_i (Woodbury on the attribution's inverse, a (K-1)|T| system; a fresh inverse
when that would be larger than H), one gradient pass over X per step, Anderson-accelerated; after
_STALLS consecutive steps that each shrink the gradient norm by less than the factor _CHORD_RATE,
the set continues with Newton steps at fresh Hessians (one Hessian pass each, with a
backtracking line search).

A set whose removal leaves no sample of some class (with an intercept or l2 = 0; with every
parameter penalised, that class's rows are held by the penalty and are refitted), or leaves the
Hessian singular (l2 = 0 and the remaining rows rank-deficient: no unique minimiser), is not
refitted: ``singular``, with ``converged`` False.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from . import _softmax, sources

_CHORD_RATE = 0.7  # a chord step that shrinks the gradient less than this is a stall
_STALLS = 3  # consecutive stalls before the set switches to Newton steps
_DEPTH = 5  # Anderson's history


class _Anderson:
    """Anderson acceleration of the chord iteration x <- x + f(x) (type II, last _DEPTH
    steps): the next point is x + f - (dX + dF) gamma with gamma the least-squares fit of f by
    the recent differences of f."""

    def __init__(self) -> None:
        self.x: list = []
        self.f: list = []

    @property
    def size(self) -> int:
        return max(len(self.x) - 1, 0)

    def clear(self) -> None:
        self.x, self.f = [], []

    def next(self, x: np.ndarray, f: np.ndarray) -> np.ndarray:
        self.x.append(x.reshape(-1).copy())
        self.f.append(f.reshape(-1).copy())
        if len(self.x) > _DEPTH + 1:
            self.x.pop(0)
            self.f.pop(0)
        if len(self.x) < 2:
            return x + f
        dX = np.diff(np.array(self.x), axis=0).T
        dF = np.diff(np.array(self.f), axis=0).T
        gamma, *_ = np.linalg.lstsq(dF, f.reshape(-1), rcond=None)
        return (x.reshape(-1) + f.reshape(-1) - (dX + dF) @ gamma).reshape(x.shape)


def line_search(pb: Any, R: np.ndarray, step: np.ndarray, at: dict,
                w: Any = None) -> tuple[float, dict]:
    """Backtracking from R along step (at: the pass at R): the first t = 1, 1/2, ... whose point
    meets Armijo's condition on F, or, where the predicted decrease t |slope| is within F's
    rounding, whose gradient is smaller (near the optimum F no longer resolves the steps)."""
    slope = float(np.vdot(at["G"], step))
    norm = pb.user_norm(at["G"])
    noise = 1e-12 * max(1.0, abs(at["loss"]))
    t = 1.0
    while True:
        nxt = pb.run(R + t * step, hessian=False, w=w)
        if nxt["loss"] <= at["loss"] + 1e-4 * t * slope:
            return t, nxt
        if t * abs(slope) <= noise and pb.user_norm(nxt["G"]) < norm:
            return t, nxt
        if t < 1e-10:
            return t, nxt
        t *= 0.5
        del nxt  # (its probabilities, n x K, before the next pass makes its own)


def _chord_solver(att: Any, T: np.ndarray) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """g (m, p) -> (H - sum_{i in T} H_i)^{-1} g at theta_hat; None when that matrix is
    singular."""
    from .multinomial import _inverse, _well_posed

    pb = att._pb
    if len(T) == 0 or len(T) * pb.m > pb.q:  # H itself, or a fresh inverse of H_{-T}
        try:
            Hinv = att._Hinv if len(T) == 0 else _inverse(
                att._downdated(T), pb.threads, "The Hessian without the removed set")
        except np.linalg.LinAlgError:  # NotPositiveDefiniteError included
            return None
        return lambda g: (Hinv @ g.reshape(pb.q)).reshape(pb.m, pb.p)
    Xr, HW, E, ST = att._set_panel(T)
    system = np.eye(len(E)) - E @ ST
    if not _well_posed(system, E, ST):
        return None
    middle = np.linalg.solve(system, E)

    def solve(g: np.ndarray) -> np.ndarray:
        u = att._Hinv @ g.reshape(pb.q)
        t = (Xr @ u.reshape(pb.m, pb.p).T).reshape(-1)  # W^T u, ordered (sample, class)
        return (u + HW @ (middle @ t)).reshape(pb.m, pb.p)

    return solve


def support_counts(pb: Any) -> Optional[np.ndarray]:
    """With l2 = 0: per feature, how many samples of positive weight have it nonzero in the
    data as stored (centring would hide its zeros); None when the features are penalised."""
    if pb.l2 != 0 or pb.d == 0:
        return None
    from .multinomial import _block_rows

    live = pb.weight() > 0
    counts = np.zeros(pb.d, dtype=np.int64)
    step = _block_rows(pb.d)
    blocks = (pb.X.blocks(step) if isinstance(pb.X, sources.Source)
              else ((b, pb.X[b:b + step]) for b in range(0, pb.n, step)))
    for begin, rows in blocks:
        keep = live[begin:begin + len(rows)]
        counts += np.count_nonzero(np.asarray(rows)[keep], axis=0)
    return counts


def no_data_left(pb: Any, T: np.ndarray, counts: Optional[np.ndarray]) -> bool:
    """Structurally singular H_{-T} with unpenalised features (l2 = 0; counts from
    support_counts): fewer samples of positive weight left than parameters per class, or a
    feature that is zero on every one of them."""
    from .multinomial import _block_rows

    if counts is None:
        return False
    w = pb.weight()
    if np.count_nonzero(w > 0) - np.count_nonzero(w[T] > 0) < pb.p:
        return True
    live = T[w[T] > 0]
    left = counts.copy()
    step = _block_rows(pb.d)
    for b in range(0, len(live), step):  # the set's rows as stored, a block at a time
        left -= np.count_nonzero(_softmax.rows(pb.X, live[b:b + step], False, None), axis=0)
    return bool(np.any(left == 0))


def _refit(att: Any, T: np.ndarray, tol: float, max_iter: int) -> dict:
    from .multinomial import _inverse

    pb = att._pb
    w = pb.weight().copy()
    w[T] = 0.0
    R0 = att._R
    out = {"refreshed": False, "singular": False, "why": ""}

    def not_refitted(why: str) -> dict:
        out.update(R=R0, grad_norm=np.nan, tolerance=np.nan, n_iter=0, converged=False,
                   singular=True, why=why)
        return out

    # a class without samples: its unpenalised intercept (or, with l2 = 0, its coefficients)
    # runs off to -inf; with every parameter penalised, F_{-T} still has a unique minimiser
    if len(pb.classes_without_minimiser(w)):
        return not_refitted("class")
    if att._structurally_singular(T):
        return not_refitted("hessian")
    solve = _chord_solver(att, T)
    if solve is None:
        return not_refitted("hessian")
    start = pb.run(np.zeros((pb.m, pb.p)), hessian=False, w=w)["G"]
    target = tol * max(1.0, pb.user_norm(start))
    R = R0.copy()
    cur = pb.run(R, hessian=False, w=w)
    norm = pb.user_norm(cur["G"])
    it = 0
    newton = False
    history = _Anderson()
    stalls = 0
    while norm > target and it < max_iter:
        it += 1
        if not newton:
            f = -solve(cur["G"])  # the chord step: residual of the fixed-point map
            R_new = history.next(R, f)
            nxt = pb.run(R_new, hessian=False, w=w)
            new_norm = pb.user_norm(nxt["G"])
            if new_norm > norm and history.size:  # the extrapolation overshot: plain step
                history.clear()
                R_new = R + f
                nxt = None  # (before the next pass makes its own)
                nxt = pb.run(R_new, hessian=False, w=w)
                new_norm = pb.user_norm(nxt["G"])
            stalls = stalls + 1 if new_norm > _CHORD_RATE * norm else 0
            if new_norm < norm:
                R, cur, norm = R_new, nxt, new_norm
            nxt = None  # (a rejected pass: dropped before the next pass makes its own)
            if stalls < _STALLS:
                continue
            newton = out["refreshed"] = True
        cur = None  # (the Newton step starts from its own pass at R)
        full = pb.run(R, hessian=True, w=w)
        try:
            Hinv = _inverse(full["H"], pb.threads, "The Hessian without the removed set")
        except np.linalg.LinAlgError:  # singular at R though not at theta_hat: give up here
            break
        step = -(Hinv @ full["G"].reshape(pb.q)).reshape(pb.m, pb.p)
        del Hinv
        full["H"] = None  # (the line search reads the gradient and loss)
        t, nxt = line_search(pb, R, step, full, w)
        R = R + t * step
        cur, norm = nxt, pb.user_norm(nxt["G"])
        full = nxt = None
    out.update(R=R, grad_norm=norm, tolerance=target, n_iter=it, converged=norm <= target)
    return out


def retrain_sets(att: Any, sets: list, tol: float, max_iter: int,
                 show_progress: bool = False) -> dict:
    """RetrainResult's fields for every set (leading axis: the sets), each set its distinct
    sample indices in increasing order."""
    pb = att._pb
    s = len(sets)
    theta = np.empty((s, pb.K, pb.p))
    effect = np.empty((s, pb.K, pb.p))
    cols = {k: [] for k in ("grad_norm", "tolerance", "n_iter", "converged", "refreshed",
                            "singular", "why")}
    from ._progress import progress

    for j in progress(range(s), desc="retraining", total=s, enabled=show_progress and s > 1):
        T = sets[j]
        r = _refit(att, T, tol, max_iter)
        effect[j] = pb.c.point_to_user(r["R"] - att._R)
        theta[j] = att.theta + effect[j]
        for k in cols:
            cols[k].append(r[k])
    return dict(theta=theta, effect=effect,
                grad_norm=np.asarray(cols["grad_norm"], dtype=np.float64),
                tolerance=np.asarray(cols["tolerance"], dtype=np.float64),
                n_iter=np.asarray(cols["n_iter"], dtype=np.int64),
                converged=np.asarray(cols["converged"], dtype=bool),
                refreshed=np.asarray(cols["refreshed"], dtype=bool),
                singular=np.asarray(cols["singular"], dtype=bool), why=cols["why"])
