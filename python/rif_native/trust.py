"""How far to trust RIF here: the computable quantities behind the paper's accuracy theorem.

RIF_i is exactly the Newton step of leaving sample i out, so its error against exact retraining
comes from the loss's curvature changing along that step, and, for a set, from adding up steps
that interact. ``trust(A)`` reports what can be computed cheaply:

* ``n / p``: the regime (the paper's high-dimensional one is n / p of order 1), n counting
  the samples in the fit (of positive weight: ``n_fit``; ``n`` counts them all), as every
  number below does;
* leverage quantiles and the number of samples above 0.5: where RIF and IF part, since
  ``RIF_i - IF_i = IF_i h_i / (1 - h_i)``;
* ``max_rif_if_gap = max_i h_i / (1 - h_i)``: the largest ``|RIF_i - IF_i| / |IF_i|``;
* for sets, ``additivity_gap_T = ||sum_{i in T} RIF_i - NS_T|| / ||NS_T||`` (in parameters): how
  much the set's members interact. NS is the Newton step of removing T together, which the
  experiments show within a few percent of exact retraining where RIF's sum is not.

**Rule.** A set's additive RIF is flagged (``TrustWarning``) when its additivity gap exceeds
``ADDITIVITY_LIMIT`` = 0.2: its removal effect should then be taken from NS (``group_effect(T,
"ns")``) or an exact refit. ``tests/test_trust.py`` checks the rule against exact retraining.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

__all__ = ["ADDITIVITY_LIMIT", "TrustWarning", "trust"]

#: The additivity gap above which a set's summed RIF is flagged (the module docstring's rule).
ADDITIVITY_LIMIT = 0.2


class TrustWarning(UserWarning):
    """An estimate that the trust rules say not to rely on."""


def summary(A: Any) -> dict:
    """The per-attribution numbers (no sets), over the samples of positive weight: a sample
    of weight 0 is not in the fit (its leverage is 0)."""
    h = np.asarray(A.leverage, dtype=np.float64)
    p = A.n_params if getattr(A, "family", None) != "multinomial" else \
        A.n_params * (A.n_classes - 1)
    w = getattr(A, "_weights", None)  # (a multinomial attribution does not say: all kept)
    if w is not None:
        h = h[np.asarray(w, dtype=np.float64) > 0]
    finite = h[np.isfinite(h)]
    with np.errstate(divide="ignore"):
        gap = np.where(finite < 1, finite / np.maximum(1 - finite, 1e-300), np.inf)
    q = np.quantile(finite, [0.5, 0.9, 0.99]) if len(finite) else np.zeros(3)
    return {"n": int(A.n), "n_fit": int(h.size), "p": int(p), "n_over_p": h.size / p,
            "leverage_median": float(q[0]), "leverage_q90": float(q[1]),
            "leverage_q99": float(q[2]), "leverage_max": float(finite.max()) if len(finite) else 0.0,
            "above_half": int(np.count_nonzero(h > 0.5)),
            "max_rif_if_gap": float(gap.max()) if len(gap) else 0.0}


def trust(A: Any, sets: Optional[Any] = None, *, warn: bool = True) -> dict:
    """The trust numbers of Attribution A (see the module's docstring); with ``sets``, also
    each set's additivity gap and the indices of the sets the rule flags (with a TrustWarning
    naming them, unless ``warn`` is False)."""
    out = summary(A)
    if sets is None:
        return out
    from ._api import _parse_sets

    indices, offsets, single = _parse_sets(sets, A.n)
    lists = [indices[offsets[j]:offsets[j + 1]] for j in range(len(offsets) - 1)]
    rif = np.asarray(A.group_effect(lists, method="rif"), dtype=np.float64)
    ns = np.asarray(A.group_effect(lists, method="ns"), dtype=np.float64)
    gap = additivity_gaps(rif, ns)
    flagged = np.flatnonzero(gap > ADDITIVITY_LIMIT)
    out["additivity_gap"] = gap[0] if single else gap
    out["flagged_sets"] = flagged
    if warn and len(flagged):
        shown = ", ".join(map(str, flagged[:10])) + (" ..." if len(flagged) > 10 else "")
        warnings.warn(
            f"set(s) {shown}: the sum of their members' RIF differs from the Newton step of "
            f"removing them together by more than {ADDITIVITY_LIMIT:.0%} (rule: additivity "
            "gap): their members interact, so take their effect from group_effect(T, 'ns') or "
            "an exact refit, not from the additive RIF.", TrustWarning, stacklevel=3)
    return out


def additivity_gaps(rif: Any, ns: Any) -> np.ndarray:
    """``||sum RIF - NS|| / ||NS||`` of each set (rows of ``rif`` and ``ns``, one per set): 0
    where the two agree exactly (a set whose removal moves nothing, as one of samples of zero
    weight: 0 / 0), inf where they cannot be compared (a singular removal's inf)."""
    a = np.asarray(rif, dtype=np.float64).reshape(len(rif), -1)
    b = np.asarray(ns, dtype=np.float64).reshape(len(ns), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.linalg.norm(a - b, axis=1)
        gap = np.where(diff == 0, 0.0, diff / np.linalg.norm(b, axis=1))
    return np.where(np.isfinite(gap), gap, np.inf)


def line(A: Any) -> str:
    """One line for reports: n/p, leverage and the largest RIF/IF gap."""
    s = summary(A)
    return (f"n/p = {s['n_over_p']:.3g}; leverage median {s['leverage_median']:.3g}, "
            f"99% {s['leverage_q99']:.3g}, max {s['leverage_max']:.3g}, {s['above_half']} "
            f"above 0.5; largest |RIF - IF| / |IF| = {s['max_rif_if_gap']:.3g}")
