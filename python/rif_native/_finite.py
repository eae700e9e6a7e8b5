"""Whether a binary GLM's loss has a finite minimiser at all.

Where it has none, a fit or refit still meets its gradient tolerance (the gradient vanishes on
the way to infinity), so the tolerance alone cannot tell. The squared loss always has one; the
logistic and poisson losses lose it in two ways:

* An unpenalised intercept whose samples of positive weight are all of one kind: logistic
  labels all 0 or all 1, poisson counts all 0. The intercept runs to -inf or +inf, whatever
  l2 is. Decided exactly, from the labels (why_infinite).
* With l2 = 0, separation: a direction along which no sample's loss rises and some fall.
  Complete separation (logistic: every z on its label's side) is decided exactly from z
  (why_infinite). Quasi-complete separation (some samples on the boundary) is first suspected:
  the samples it separates have curvature that falls as fast as their gradient, so a Newton
  step from the returned theta keeps moving their linear predictors by about 1 (exactly 1 in
  the limit, for both losses' exponential tails), while the others, on the boundary, stay
  where they are (step_moves). But a finite minimiser whose saturated samples sit far out
  (|z| of 15 or more) looks the same from a point short of it: the step there is the gradient
  over a tiny curvature. So a fit's suspicion is decided by a linear programme over the
  samples (_separation, with SciPy; quasi_verdict), at any tolerance; where the programme
  cannot run (no SciPy, a programme too large) it is given as a hint for tight tolerances
  (at most TIGHT), where a minimiser is rarely that far, and leaves ``converged`` alone. Both
  need X as a dense array in memory. A refit, where the Newton step or the programme would
  cost many times the refit itself, is checked for separation along a single feature only
  (refit_separated).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

#: A Newton step that moves a linear predictor by this much or more suggests separation.
STEP_Z = 0.1
#: Curvature (a_i / w_i) below this share of the largest marks a sample as saturated.
SATURATED = 1e-4


def live_samples(w: Optional[np.ndarray], n: int) -> np.ndarray:
    """The samples of positive weight (a mask; all without weights)."""
    return np.ones(n, dtype=bool) if w is None else np.asarray(w) > 0


def one_kind(y: np.ndarray, live: np.ndarray, family: str) -> bool:
    """Whether the samples `live` (a mask) leave an unpenalised intercept no finite value:
    logistic labels all 0 or all 1, poisson counts all 0 (none live: False)."""
    return LabelCounts(y, live, family).one_kind_without(np.empty(0, dtype=np.int64))


def one_kind_sets(y: np.ndarray, live: np.ndarray, family: str, indices: np.ndarray,
                  offsets: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The sets (a mask over len(offsets) - 1) among `candidates` (a mask) whose removal leaves
    the live samples one kind of label, at O(set size) each."""
    counts = LabelCounts(y, live, family)
    out = np.zeros(len(offsets) - 1, dtype=bool)
    for j in np.flatnonzero(candidates):
        out[j] = counts.one_kind_without(np.unique(indices[offsets[j]:offsets[j + 1]]))
    return out


def separated(z: np.ndarray, y: np.ndarray, live: Any) -> bool:
    """Whether logistic linear predictors z put every `live` sample on its label's side (z > 0
    exactly where y = 1): the data are then linearly separable, and with l2 = 0 no finite
    minimiser exists."""
    return bool(np.all((z[live] > 0) == (y[live] == 1)))


def saturated(z: np.ndarray, live: np.ndarray, family: str) -> np.ndarray:
    """The live samples (a mask) whose curvature per unit weight is below SATURATED of the
    largest among them (logistic mu (1 - mu); poisson mu = e^z)."""
    out = np.zeros(len(z), dtype=bool)
    if not live.any():
        return out
    zl = z[live]
    if family == "logistic":
        mu = 0.5 * (1.0 + np.tanh(0.5 * zl))  # sigma(z) without overflow
        a = mu * (1.0 - mu)
    else:
        a = np.exp(np.minimum(zl - zl.max(), 0.0))  # relative to the largest: no overflow
    out[live] = a < SATURATED * a.max()
    return out


def step_moves(X: Any, y: np.ndarray, w: Optional[np.ndarray], theta: np.ndarray,
               family: str, fit_intercept: bool, sat: np.ndarray, live: np.ndarray,
               num_threads: Optional[int]) -> np.ndarray:
    """With l2 = 0, the saturated samples `sat` whose linear predictor one Newton step from
    theta moves by at least STEP_Z while no other live sample's does (else none: a finite
    minimiser, or no telling: see the module's docstring)."""
    from ._api import Attribution, NotPositiveDefiniteError, _matvec

    try:
        A = Attribution(X, y, theta, l2=0.0, family=family, sample_weight=w,
                        fit_intercept=fit_intercept, num_threads=num_threads)
    except NotPositiveDefiniteError:
        return np.empty(0, dtype=np.int64)
    r = A.residuals
    g = np.asarray(X.T @ r, dtype=np.float64).reshape(-1)
    if fit_intercept:
        g = np.append(g, r.sum())
    moves = np.abs(_matvec(X, A.solve(g), fit_intercept)) >= STEP_Z
    if np.any(moves & live & ~sat):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(moves & sat)


def one_kind_clause(family: str) -> str:
    """The warning's clause for an intercept over one kind of label."""
    kind = "counts are all 0" if family == "poisson" else "labels are all one class"
    return (f"the samples' {kind}, so the unpenalised intercept has no finite value (it runs "
            "to infinity whatever l2 is)")


def _advice(why: str) -> str:
    """What to do, for the reason `why` (a clause of this module)."""
    if why in (one_kind_clause("logistic"), one_kind_clause("poisson")):
        return "Keep samples of both kinds, or fit without the intercept."
    return "Add l2 > 0."


def no_finite_fit(why: str) -> str:
    """The warning of a fit whose loss has no finite minimiser, for the reason `why`."""
    return (f"fit has no finite answer: {why}. The returned theta only met the gradient "
            f"tolerance on its way to infinity (converged False). {_advice(why)}")


def no_finite_refit(sets: str, why: str) -> str:
    """The warning of refits (the sets named by `sets`) without a finite minimiser."""
    return (f"without set(s) {sets} {why}: there is no finite refit, and the returned theta "
            f"only met the gradient tolerance on its way to infinity (converged False). "
            f"{_advice(why)}")


class LabelCounts:
    """The kinds of label among the samples of positive weight, counted once, so that whether
    a removal set leaves one kind costs O(len(set)), not O(n)."""

    def __init__(self, y: np.ndarray, live: np.ndarray, family: str) -> None:
        self.y, self.live, self.family = y, live, family
        self.count = int(np.count_nonzero(live))
        self.marked = int(np.count_nonzero(live & self._mark(y)))

    def _mark(self, y: np.ndarray) -> np.ndarray:
        """Logistic: y = 1; poisson: y != 0."""
        return y == 1 if self.family == "logistic" else y != 0

    def one_kind_without(self, T: np.ndarray) -> bool:
        """one_kind() of the live samples outside T (distinct indices)."""
        if self.family not in ("logistic", "poisson"):
            return False
        gone = T[self.live[T]]
        left = self.count - len(gone)
        marked = self.marked - int(np.count_nonzero(self._mark(self.y[gone])))
        if left == 0:
            return False
        return marked == 0 or (self.family == "logistic" and marked == left)


def why_infinite(y: np.ndarray, family: str, fit_intercept: bool, l2: float,
                 z: Optional[np.ndarray], live: np.ndarray) -> str:
    """Why the loss of the samples `live` has no finite minimiser, decided exactly (an
    intercept over one kind of label; with l2 = 0 and the logistic loss, complete separation,
    which needs z = X theta), as a clause for a warning; "" when neither holds."""
    if family not in ("logistic", "poisson") or not live.any():
        return ""
    if fit_intercept and one_kind(y, live, family):
        return one_kind_clause(family)
    if l2 == 0.0 and family == "logistic" and z is not None and separated(z, y, live):
        return ("the logistic data are linearly separable, so with l2 = 0 the loss has no "
                "finite minimiser")
    return ""


#: The loosest fit tolerance at which the hint (no programme to decide) speaks.
TIGHT = 1e-8


def _hint(moved: np.ndarray) -> str:
    """The hint's clause, for the samples one more Newton step would move (step_moves)."""
    from ._api import _name_some

    return (f"one more Newton step would still move the linear predictors of sample(s) "
            f"{_name_some(moved)} by {STEP_Z:g} or more, and no other sample's: the data look "
            "quasi-separated, and with l2 = 0 the loss may then have no finite minimiser")


def quasi_verdict(X: Any, y: np.ndarray, w: Optional[np.ndarray], theta: np.ndarray,
                  family: str, fit_intercept: bool, z: np.ndarray, live: np.ndarray,
                  tol: float, num_threads: Optional[int] = None) -> tuple:
    """With l2 = 0 and no complete separation: (why the loss has no finite minimiser, decided
    by the linear programme, or ""; the Newton step's hint where the programme cannot run, or
    ""; the samples either names). The programme runs, at any tolerance, where one more
    Newton step would move only saturated samples (step_moves: about one attribution's work,
    where the programme can cost 50 of them) or, poisson, every live count is 0."""
    none = np.empty(0, dtype=np.int64)
    if family not in ("logistic", "poisson") or not _in_memory(X):
        return "", "", none
    moved = none
    sat = saturated(z, live, family)
    if sat.any():
        moved = step_moves(X, y, w, theta, family, fit_intercept, sat, live, num_threads)
    if len(moved) or _no_counts(y, live, family):
        decided = _programme(X, y, family, fit_intercept, live)
        if decided is not None:
            return decided[0], "", decided[1]
    if tol > TIGHT or not len(moved):
        return "", "", none
    return "", _hint(moved), moved


def _no_counts(y: np.ndarray, live: np.ndarray, family: str) -> bool:
    """Poisson counts of the samples `live` all 0 (LabelCounts' rule)."""
    return family == "poisson" and one_kind(y, live, family)


class LazySigns:
    """The _separation.FeatureSigns of the samples `live`, counted (a pass over X) the first
    time a refit needs them."""

    def __init__(self, X: Any, y: np.ndarray, family: str, live: np.ndarray) -> None:
        self.args, self.y, self.family, self._signs = (X, y, family, live), y, family, None

    def separating_without(self, removed: np.ndarray) -> Optional[tuple]:
        if self._signs is None:
            from ._separation import FeatureSigns

            self._signs = FeatureSigns(*self.args)
        return self._signs.separating_without(removed)


def refit_separated(signs: LazySigns, z: np.ndarray, z_hat: np.ndarray, live: np.ndarray,
                    removed: np.ndarray) -> str:
    """With l2 = 0, a refit (z = X theta) that met its tolerance on the samples `live`: why its
    loss has no finite minimiser where a single feature separates some samples (a 0/1 feature
    left with positives only, say; signs: the fit's samples' feature signs, from which the set
    `removed` costs O(|set| d)), as a clause for a warning; "" otherwise. Directions that
    combine features are not looked for: per set, the Newton step or the linear programme
    would cost many times the refit. It runs only where the refit has some live sample
    saturated that moved by 1 or more from the fit's z_hat (the samples a removal separates
    run off to infinity)."""
    family = signs.family
    if family not in ("logistic", "poisson"):
        return ""
    moved = saturated(z, live, family) & (np.abs(z - z_hat) >= 1.0)
    if not moved.any() and not _no_counts(signs.y, live, family):
        return ""
    from ._api import _name_some

    found = signs.separating_without(removed)
    if found is None:
        return ""
    j, apart = found
    return (f"feature {j} alone separates sample(s) {_name_some(apart)} from the rest (their "
            "losses fall without end along its coefficient, and no other sample's rises), so "
            "with l2 = 0 the loss has no finite minimiser")


def _programme(X: Any, y: np.ndarray, family: str, fit_intercept: bool,
               live: np.ndarray) -> Optional[tuple]:
    """(the clause of no finite minimiser or "", the separated samples) by the linear
    programme (_separation); None where it cannot run."""
    from . import _separation
    from ._api import _name_some

    apart = _separation.separated_samples(X, y, family, fit_intercept, live)
    if apart is None:
        return None
    if not len(apart):
        return "", apart
    return _separation.clause(apart, _name_some), apart


def _in_memory(X: Any) -> bool:
    """X as a NumPy array (the Newton step's extra passes are cheap; sparse X and sources are
    left out)."""
    return isinstance(X, np.ndarray)
