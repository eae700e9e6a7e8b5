"""Judge an estimate against your own refit, and say when the refit is too loose to judge it.

A refit by an iterative solver stops at its tolerance, not at the minimiser. Leave-one-out
effects are small (often 1e-9 of theta in the regime n >> p), so a solver that stops 1e-6 from
the optimum reports an "actual" effect that is pure solver noise, and a correct estimate looks
wrong. (scikit-learn's ``lbfgs`` at ``tol=1e-10`` stops about 2.5e-6 from the optimum on
breast_cancer, where a typical sample's leave-one-out effect is 3e-9.)

``check_refit(A, removed, theta_refit)`` measures how far ``theta_refit`` is from the exact
minimiser of F without ``removed``: the Newton step from it,

    delta = -H_{-T}(theta_refit)^{-1} grad F_{-T}(theta_refit),

which is that distance up to terms of second order in it. ``theta_refit + delta`` is then the
exact refit to that order, and the check compares the estimate with both. The refit can judge the
estimate when ``||delta||`` is small against the effect (``judgeable``: at most 10% of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["RefitCheck", "check_refit"]

_JUDGEABLE = 0.1  # the solver's distance to the optimum, as a fraction of the effect


@dataclass(frozen=True)
class RefitCheck:
    """What :func:`check_refit` found (vectors of length p, removal effects from theta_hat).

    Attributes:
        method: the estimate compared ("if", "rif" or "ns").
        predicted: the estimate of theta_{-T} - theta_hat.
        reported: your refit's effect, theta_refit - theta_hat.
        solver_error: the Newton step from theta_refit to the exact refit: how far your solver
            stopped from the optimum (to second order).
        corrected: reported + solver_error, the exact effect to that order.
        noise: ||solver_error|| / ||corrected||.
        judgeable: noise <= 0.1: the refit resolves the effect.
        error_vs_reported, error_vs_corrected: ||predicted - reported|| and
            ||predicted - corrected||, relative to ||corrected||.
    """

    method: str
    predicted: np.ndarray
    reported: np.ndarray
    solver_error: np.ndarray
    corrected: np.ndarray
    noise: float
    judgeable: bool
    error_vs_reported: float
    error_vs_corrected: float

    def __str__(self) -> str:
        m = self.method.upper()
        size = float(np.linalg.norm(self.corrected))
        lines = [f"effect of the removal: ||theta_-T - theta_hat|| = {size:.3g}",
                 f"your refit stopped {float(np.linalg.norm(self.solver_error)):.3g} from the "
                 f"optimum ({100 * self.noise:.3g}% of the effect)"]
        if self.judgeable:
            lines.append(f"{m} against your refit: relative error {self.error_vs_reported:.3g} "
                         f"({self.error_vs_corrected:.3g} against the corrected refit)")
        else:
            lines.append(f"your refit is too loose to judge {m}: its error against it "
                         f"({self.error_vs_reported:.3g}) is mostly solver noise; against the "
                         f"refit corrected by one Newton step it is {self.error_vs_corrected:.3g}. "
                         "Tighten the solver's tolerance, or use Attribution.retrain.")
        return "\n".join(lines)


def check_refit(A: Any, removed: Sequence[int], theta_refit: Any, *,
                method: str = "ns") -> RefitCheck:
    """Compare A's estimate of removing ``removed`` with ``theta_refit`` (your refit of the
    model without those samples, same l2, family, weights and intercept), and measure how far
    that refit is from the exact one (see the module's docstring).

    Args:
        A: an Attribution at the fitted theta (binary GLM families, or multinomial).
        removed: the sample indices your refit left out.
        theta_refit: your refit's parameters, as A's theta: (p,) with the intercept last, or
            (K, p) for the multinomial family (whose effects are compared in the subspace where
            the class rows sum to zero, as it computes them: a shift of every class row by one
            vector, which changes no prediction, is not counted).
        method: the estimate: "ns" (the Newton step of the set; for one sample equal to RIF),
            "rif" (sum of RIF rows) or "if".
    """
    from ._api import _one_set

    T = np.unique(_one_set(removed, A.n, "removed"))  # indices, or a boolean mask
    if getattr(A, "family", None) == "multinomial":
        reported, solver_error = _multinomial_refit(A, T, theta_refit)
    else:
        reported, solver_error = _glm_refit(A, T, theta_refit)
    predicted = np.asarray(A.group_effect(T, method=method), dtype=np.float64)
    corrected = reported + solver_error
    size = float(np.linalg.norm(corrected))
    scale = size if size > 0 else 1.0
    noise = float(np.linalg.norm(solver_error)) / scale
    return RefitCheck(method=method, predicted=predicted, reported=reported,
                      solver_error=solver_error, corrected=corrected, noise=noise,
                      judgeable=noise <= _JUDGEABLE,
                      error_vs_reported=float(np.linalg.norm(predicted - reported)) / scale,
                      error_vs_corrected=float(np.linalg.norm(predicted - corrected)) / scale)


def _glm_refit(A: Any, T: np.ndarray, theta_refit: Any) -> tuple[np.ndarray, np.ndarray]:
    """A binary GLM's reported effect and the Newton step from theta_refit for F_{-T}."""
    from ._api import Attribution

    theta_refit = np.asarray(theta_refit, dtype=np.float64).reshape(-1)
    if theta_refit.shape != (A.n_params,):
        raise ValueError(f"theta_refit must have {A.n_params} entries (as A's theta), got "
                         f"{theta_refit.shape[0]}")
    if not np.all(np.isfinite(theta_refit)):
        raise ValueError("theta_refit contains NaN or inf")
    X, y, w = A._data
    w = np.ones(A.n) if w is None else np.array(w, dtype=np.float64)
    w[T] = 0.0
    B = Attribution(X, y, theta_refit, l2=A.l2, family=A.family, sample_weight=w,
                    fit_intercept=A.fit_intercept, num_threads=A._threads)
    # grad F_{-T} = sum_i g_i + l2 P theta, and sum_i H^{-1} g_i is the sum of B's IF rows
    step = B.group_effect(np.arange(A.n), method="if") + B.solve(_penalty(A) * theta_refit)
    return theta_refit - A.theta, -step


def _multinomial_refit(A: Any, T: np.ndarray, theta_refit: Any) -> tuple[np.ndarray, np.ndarray]:
    """The same for a MultinomialAttribution, in the subspace S where the class rows sum to
    zero: the reported effect projected on S, and the Newton step (H_{-T} inverted on S)."""
    from . import _softmax
    from .multinomial import MultinomialAttribution

    pb = A._pb
    theta_refit = _softmax.parameters(theta_refit, pb.K, pb.p, "theta_refit")
    w = np.array(pb.weight(), dtype=np.float64)
    w[T] = 0.0
    empty = pb.classes_without_minimiser(w)
    if len(empty):
        gone = ", ".join(str(k) for k in empty[:10])
        raise ValueError(f"the removed samples take every sample (of positive weight) of "
                         f"class(es) {gone}: without them the model has no finite minimiser "
                         "(with an intercept or l2 = 0), so no refit can be judged")
    B = MultinomialAttribution(pb.X, pb.y, theta_refit, l2=A.l2, sample_weight=w,
                               fit_intercept=A.fit_intercept, n_classes=pb.K,
                               num_threads=pb.threads, progress=A._progress,
                               max_memory=A._max_memory)
    step = B.group_effect(np.arange(A.n), method="if") + B.solve(_penalty(A) * theta_refit)
    reported = theta_refit - A.theta
    return reported - reported.mean(axis=0), -np.asarray(step, dtype=np.float64)


def _penalty(A: Any) -> np.ndarray:
    """l2 on each coefficient, 0 on the intercept (the last parameter)."""
    penalty = np.full(A.n_params, A.l2)
    if A.fit_intercept:
        penalty[-1] = 0.0
    return penalty
