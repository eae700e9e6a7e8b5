"""Whether a binary GLM's data are separated, decided by a linear programme (SciPy's HiGHS).

With l2 = 0 the logistic and poisson losses have no finite minimiser exactly when some
direction v of the parameters lowers some samples' losses without end and raises none:

* logistic: x_i . v >= 0 where y_i = 1 and <= 0 where y_i = 0, not all 0;
* poisson: x_i . v <= 0 where y_i = 0 and = 0 where y_i > 0 (a count's loss rises both ways),
  not all 0.

(x_i with a 1 appended for the intercept.) The programme maximises the samples' signed margins,
each over its row's l1 norm, subject to those signs and -1 <= v <= 1: an optimum of 0 says no
such direction exists (a finite minimiser), a positive one gives one. Complete separation,
where every margin is positive, is read off z = X theta more cheaply (_finite.separated); this
decides the quasi-complete case, where some samples stay on the boundary.

The solver works to a feasibility tolerance, so its direction is checked here in float64: the
margins must keep their signs to within TOL_SIGN of their rows' norms and some must reach
TOL_MARGIN. Where they do not, or SciPy is missing, or the programme is larger than MAX_ENTRIES,
nothing is decided (None) and the caller falls back on its hint.

For many refits, where a programme each would cost far more than the refits, FeatureSigns
decides the case of a single feature (v = +-e_j) exactly, from per-feature counts of the signs
of s_i x_ij made once: O(set size x d) per removal set.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

#: The largest programme (samples times parameters) solved, about 3 s with HiGHS on a 2-core
#: machine; beyond it, nothing is decided.
MAX_ENTRIES = 2_000_000
#: A margin below this share of its row's l1 norm counts as 0.
TOL_MARGIN = 1e-6
#: A margin of the wrong sign by more than this share of its row's l1 norm voids the direction.
TOL_SIGN = 1e-9


def separated_samples(X: np.ndarray, y: np.ndarray, family: str, fit_intercept: bool,
                      live: np.ndarray) -> Optional[np.ndarray]:
    """With l2 = 0: the live samples (indices) a direction of no finite minimiser separates
    (their margins positive, every other live sample's 0), an empty array if the programme
    shows that no such direction exists, None where it cannot tell (see the module's
    docstring)."""
    try:
        from scipy.optimize import linprog
    except ImportError:
        return None
    rows = np.flatnonzero(live)
    Xl = np.asarray(X[rows], dtype=np.float64)
    if fit_intercept:
        Xl = np.hstack([Xl, np.ones((len(rows), 1))])
    if Xl.size == 0 or Xl.size > MAX_ENTRIES:
        return None
    sign = _signs(y[rows], family)
    norm = np.abs(Xl).sum(axis=1)
    scaled = Xl / np.where(norm > 0, norm, 1.0)[:, None]
    one_sided = sign != 0
    signed = scaled[one_sided] * sign[one_sided, None]
    if not one_sided.any():
        return np.empty(0, dtype=np.int64)
    result = linprog(-signed.sum(axis=0), A_ub=-signed, b_ub=np.zeros(len(signed)),
                     A_eq=scaled[~one_sided] if (~one_sided).any() else None,
                     b_eq=np.zeros(int((~one_sided).sum())) if (~one_sided).any() else None,
                     bounds=(-1.0, 1.0), method="highs")
    if result.status != 0:
        return None
    margins = scaled @ result.x * np.where(one_sided, sign, 1.0)
    apart = one_sided & (margins >= TOL_MARGIN)
    if not apart.any():  # the optimum is 0: no direction separates
        return np.empty(0, dtype=np.int64)
    # every margin of the right sign (the two-sided ones 0), checked in float64
    wrong = np.where(one_sided, -margins, np.abs(margins))
    return rows[apart] if wrong.max() <= TOL_SIGN else None


class FeatureSigns:
    """Per feature, how many live samples have a signed entry s_i x_ij > 0, < 0, and a nonzero
    entry where the loss rises both ways (a count > 0), counted once in O(n d), so that whether
    a feature separates the samples left without a set T costs O(|T| d)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, family: str, live: np.ndarray) -> None:
        self.X, self.y, self.family, self.live = X, y, family, live
        rows = np.flatnonzero(live)
        d = X.shape[1]
        self.counts = np.zeros((3, d), dtype=np.int64)
        step = max(1, (1 << 22) // max(d, 1))
        for b in range(0, len(rows), step):
            self.counts += self._count(rows[b:b + step])

    def _count(self, rows: np.ndarray) -> np.ndarray:
        """(3, d): positive and negative signed entries, nonzero two-sided ones, of `rows`."""
        block = np.asarray(self.X[rows], dtype=np.float64)
        s = _signs(self.y[rows], self.family)
        signed = block * s[:, None]
        return np.stack([(signed > 0).sum(axis=0), (signed < 0).sum(axis=0),
                         ((block != 0) & (s == 0)[:, None]).sum(axis=0)])

    def separating_without(self, T: np.ndarray) -> Optional[tuple]:
        """(a feature j, the samples it separates) where the direction +e_j or -e_j alone
        lowers some of the live samples outside T (distinct indices) without end and raises
        none (a 0/1 feature that is 1 only on positives, say), else None: exact, but blind to
        directions that combine features (separated_samples sees those)."""
        gone = T[self.live[T]]
        pos, neg, two = self.counts - (self._count(gone) if len(gone) else 0)
        apart = (two == 0) & ((pos > 0) != (neg > 0))
        if not apart.any():
            return None
        j = int(np.flatnonzero(apart)[0])
        left = self.live.copy()
        left[gone] = False
        return j, np.flatnonzero(left & (np.asarray(self.X[:, j]) != 0))


def _signs(y: np.ndarray, family: str) -> np.ndarray:
    """+1 where a sample's loss falls as its linear predictor rises without end, -1 where it
    falls as it sinks, 0 where it rises both ways."""
    if family == "logistic":
        return np.where(y == 1, 1.0, -1.0)
    return np.where(y == 0, -1.0, 0.0)


def clause(samples: np.ndarray, describe: Any) -> str:
    """The warning's clause for the samples a direction separates (describe: names some)."""
    return ("the data are quasi-completely separated (a linear programme found a direction "
            f"that lowers the losses of some samples (among them sample(s) {describe(samples)}) "
            "without end and raises none), so with l2 = 0 the loss has no finite minimiser")
