"""Removal sets for validating estimates against retraining (Appendix C.2), and related searches.

Set sizes spread linearly from 0.1% to 5% of n (:func:`removal_sizes`). For each size k:

* ``random``: k distinct samples drawn uniformly;
* ``feature_cluster``: a random anchor sample and a random (non-constant) feature; the k samples
  whose value of that feature is nearest the anchor's;
* ``l2_cluster``: a random anchor sample; the k samples nearest to it in Euclidean distance
  (computed over row blocks, never as an n x n matrix);
* ``top_if_<metric>_pos`` / ``top_if_<metric>_neg``: the 2k samples with the largest
  (``pos``) or smallest (``neg``) IF score on the metric, of which a random half (k) is kept.
  The paper uses the metrics ``test_loss`` and ``test_prediction``; the scores are supplied by the
  caller, e.g. ``attribution.scores(metric.gradient(theta_hat), method="if")``.

Scores follow the package's sign: a score is the predicted removal effect of one sample on the
metric, so ``pos`` sets are the ones predicted to raise it most when removed.

Everything is deterministic given the random generator (or seed) passed in. Ties in distances are
broken at random (from that generator), so repeated values do not favour low indices.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    "STRATEGIES",
    "RemovalSet",
    "feature_cluster_sets",
    "l2_cluster_sets",
    "l2_distances",
    "make_sets",
    "random_sets",
    "removal_sizes",
    "search",
    "test_subset",
    "top_by_score",
    "top_influence_sets",
]

ArrayLike = Any
RngLike = Union[np.random.Generator, int, np.random.SeedSequence, None]

#: The removal-set strategies (see the module's docstring), in the experiment's order.
STRATEGIES: tuple[str, ...] = (
    "random",
    "feature_cluster",
    "l2_cluster",
    "top_if_test_loss_pos",
    "top_if_test_loss_neg",
    "top_if_test_prediction_pos",
    "top_if_test_prediction_neg",
)
_GEOMETRIC = ("random", "feature_cluster", "l2_cluster")
_BLOCK = 4096  # rows per block for distance computations


@dataclass
class RemovalSet:
    """One set T of training samples to remove.

    Attributes:
        indices: sorted distinct sample indices (int64).
        strategy: how it was chosen (a name from :data:`STRATEGIES`, or a custom top-IF name).
        size: ``len(indices)``.
        anchor: the anchor sample of a cluster strategy (None otherwise).
        feature: the feature of ``feature_cluster`` (None otherwise).
    """

    indices: np.ndarray
    strategy: str
    size: int
    anchor: Optional[int] = None
    feature: Optional[int] = None

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        if self.indices.ndim != 1 or self.indices.shape[0] != self.size:
            raise ValueError(f"RemovalSet of size {self.size} got indices of shape "
                             f"{self.indices.shape}")

    def __len__(self) -> int:
        return self.size


# ----------------------------------------------------------------------------- checks


def _generator(rng: RngLike) -> np.random.Generator:
    """A Generator as is, or a new one seeded by an int / SeedSequence (None: fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, np.random.RandomState):
        raise TypeError("rng must be a numpy.random.Generator or a seed, not a legacy RandomState")
    return np.random.default_rng(rng)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value)


def _sizes(sizes: Union[int, Iterable[int]], n: int, what: str = "") -> np.ndarray:
    """sizes as an int64 array, each in [1, n]."""
    arr = np.atleast_1d(np.asarray(sizes))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"sizes must be an int or a non-empty 1-D list of ints, got {sizes!r}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"sizes must be integers, got {arr.tolist()!r}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 1) | (arr > n)]
    if bad.size:
        raise ValueError(f"set size {int(bad[0])} is impossible: sizes must lie in [1, n] with "
                         f"n = {n} samples{what}")
    return arr


def _sign(sign: Any) -> int:
    if isinstance(sign, bool) or sign not in (1, -1):
        raise ValueError(f"sign must be +1 (largest scores) or -1 (smallest scores), got {sign!r}")
    return int(sign)


def _scores(scores: ArrayLike, name: str, n: Optional[int] = None) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (one score per sample), "
                         f"got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have one entry per training sample ({n}), "
                         f"got {arr.shape[0]}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (sample {int(np.flatnonzero(np.isnan(arr))[0])})")
    return arr


def _matrix(X: ArrayLike) -> np.ndarray:
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"X must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError("X must be 2-D with at least one row and one column, "
                         f"got shape {arr.shape}")
    return arr


def _nearest(dist: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The k indices of smallest ``dist``, ties broken at random; returned sorted."""
    order = np.lexsort((rng.random(dist.shape[0]), dist))
    return np.sort(order[:k]).astype(np.int64)


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, in decreasing order (ties: lower index first)."""
    return np.argsort(-values, kind="stable")[:k].astype(np.int64)


# ----------------------------------------------------------------------------- sizes, test subset


def removal_sizes(n: int, count: int, lo: float = 0.001, hi: float = 0.05) -> np.ndarray:
    """Set sizes spread linearly from ``lo * n`` to ``hi * n`` (default 0.1% to 5% of n).

    ``count`` points of ``linspace(lo * n, hi * n)``, rounded to the nearest int, at least 1; sizes
    that coincide after rounding appear once, so fewer than ``count`` come back when n is small.

    Returns:
        sorted unique int64 array of sizes in [1, n].
    """
    n = _count(n, "n")
    count = _count(count, "count")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    lo, hi = float(lo), float(hi)
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(f"need 0 < lo <= hi <= 1 (fractions of n), got lo={lo}, hi={hi}")
    raw = np.linspace(lo * n, hi * n, count)
    return np.unique(np.clip(np.rint(raw), 1, n).astype(np.int64))


def test_subset(losses: ArrayLike, size: int, rng: RngLike) -> np.ndarray:
    """A fixed test subset: the ``size // 2`` highest-loss test points plus random others.

    The paper's metrics are evaluated on such a balanced mix of hard and typical test points.
    The rest (``size - size // 2`` points) are drawn uniformly from the test points not already
    taken. Ties in loss: lower index first.

    Args:
        losses: (n_test,) per-point test losses at theta_hat.
        size: subset size, 1 <= size <= n_test.
        rng: numpy Generator or seed.

    Returns:
        sorted int64 indices into the test set.
    """
    loss = _scores(losses, "losses")
    n_test = loss.shape[0]
    size = _count(size, "size")
    if not 1 <= size <= n_test:
        raise ValueError(f"size must lie in [1, {n_test}] (the number of test points), got {size}")
    gen = _generator(rng)
    top = _top(loss, size // 2)
    rest = np.setdiff1d(np.arange(n_test, dtype=np.int64), top, assume_unique=True)
    others = gen.choice(rest, size - top.size, replace=False)
    return np.sort(np.concatenate([top, others])).astype(np.int64)


test_subset.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


# ----------------------------------------------------------------------------- strategies


def random_sets(n: int, sizes: Union[int, Iterable[int]], rng: RngLike) -> list[RemovalSet]:
    """One uniformly random set of k distinct samples per k in ``sizes`` (strategy "random")."""
    n = _count(n, "n")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ks = _sizes(sizes, n)
    gen = _generator(rng)
    return [RemovalSet(np.sort(gen.choice(n, int(k), replace=False)).astype(np.int64),
                       "random", int(k)) for k in ks]


def feature_cluster_sets(X: ArrayLike, sizes: Union[int, Iterable[int]],
                         rng: RngLike) -> list[RemovalSet]:
    """Clusters along one feature (strategy "feature_cluster"), one set per size.

    For each k: a random anchor sample a and a random feature j among the non-constant ones (all
    features when every one is constant); the set is the k samples with the smallest
    ``abs(X[i, j] - X[a, j])``, ties broken at random. ``anchor`` and ``feature`` are recorded.
    """
    Xa = _matrix(X)
    n, d = Xa.shape
    ks = _sizes(sizes, n)
    gen = _generator(rng)
    varying = np.flatnonzero(np.ptp(Xa, axis=0) > 0)
    features = varying if varying.size else np.arange(d)
    out = []
    for k in ks:
        a = int(gen.integers(n))
        j = int(features[gen.integers(features.size)])
        col = np.asarray(Xa[:, j], dtype=np.float64)
        idx = _nearest(np.abs(col - col[a]), int(k), gen)
        out.append(RemovalSet(idx, "feature_cluster", int(k), anchor=a, feature=j))
    return out


def l2_distances(X: ArrayLike, anchor: int) -> np.ndarray:
    """(n,) Euclidean distances ``||x_i - x_anchor||``, over row blocks in float64."""
    Xa = _matrix(X)
    n = Xa.shape[0]
    anchor = _count(anchor, "anchor")
    if not 0 <= anchor < n:
        raise ValueError(f"anchor must lie in [0, {n}), got {anchor}")
    xa = np.asarray(Xa[anchor], dtype=np.float64)
    sq = np.empty(n)
    for start in range(0, n, _BLOCK):
        diff = np.asarray(Xa[start:start + _BLOCK], dtype=np.float64) - xa
        sq[start:start + _BLOCK] = np.einsum("ij,ij->i", diff, diff)
    return np.sqrt(sq)


def l2_cluster_sets(X: ArrayLike, sizes: Union[int, Iterable[int]],
                    rng: RngLike) -> list[RemovalSet]:
    """Euclidean clusters (strategy "l2_cluster"), one set per size.

    For each k: a random anchor sample; the set is the k samples nearest to it in Euclidean
    distance (the anchor included), ties broken at random. Distances take O(n d) time per set and
    O(n) memory plus one row block. ``anchor`` is recorded.
    """
    Xa = _matrix(X)
    n = Xa.shape[0]
    ks = _sizes(sizes, n)
    gen = _generator(rng)
    out = []
    for k in ks:
        a = int(gen.integers(n))
        idx = _nearest(l2_distances(Xa, a), int(k), gen)
        out.append(RemovalSet(idx, "l2_cluster", int(k), anchor=a))
    return out


def top_influence_sets(scores: ArrayLike, sizes: Union[int, Iterable[int]], rng: RngLike,
                       sign: int = +1, name: Optional[str] = None) -> list[RemovalSet]:
    """Top-percentile sets by influence score, one per size.

    For each k: the ``min(2k, n)`` samples with the largest ``sign * score`` (ties: lower index
    first), of which k are kept uniformly at random.

    Args:
        scores: (n,) per-sample scores, e.g. IF scores ``attribution.scores(grad, method="if")``
            (predicted removal effects on a metric).
        sizes: set size(s) k, each in [1, n].
        rng: numpy Generator or seed.
        sign: +1 for the samples predicted to raise the metric most when removed, -1 for those
            predicted to lower it most.
        name: strategy name recorded in the sets (default "top_if_pos" / "top_if_neg").
    """
    s = _scores(scores, "scores")
    sign = _sign(sign)
    n = s.shape[0]
    ks = _sizes(sizes, n)
    gen = _generator(rng)
    strategy = name if name is not None else ("top_if_pos" if sign > 0 else "top_if_neg")
    out = []
    for k in ks:
        pool = _top(sign * s, min(2 * int(k), n))
        idx = np.sort(gen.choice(pool, int(k), replace=False)).astype(np.int64)
        out.append(RemovalSet(idx, strategy, int(k)))
    return out


def _parse_top(strategy: str) -> Optional[tuple[str, int]]:
    """("test_loss", +1) for "top_if_test_loss_pos"; None when not a top-IF strategy."""
    if not strategy.startswith("top_if_"):
        return None
    body = strategy[len("top_if_"):]
    for suffix, sign in (("_pos", +1), ("_neg", -1)):
        if body.endswith(suffix) and len(body) > len(suffix):
            return body[: -len(suffix)], sign
    return None


def _child(base: int, strategy: str) -> np.random.Generator:
    """A generator for one strategy: the same for a given base seed whatever else is built."""
    return np.random.default_rng([base, zlib.crc32(strategy.encode())])


def make_sets(X: ArrayLike, sizes: Union[int, Iterable[int]], rng: RngLike,
              strategies: Optional[Sequence[str]] = None,
              scores: Optional[Mapping[str, ArrayLike]] = None) -> list[RemovalSet]:
    """Every requested strategy at every size: a list of RemovalSet, strategy by strategy.

    Args:
        X: (n, d) training features (for the cluster strategies and n).
        sizes: set sizes, e.g. ``removal_sizes(n, 10)``.
        rng: numpy Generator or seed. One draw from it seeds each strategy's own generator
            (derived from the strategy name), so a strategy's sets do not depend on which other
            strategies are requested.
        strategies: names from :data:`STRATEGIES`, or ``top_if_<key>_pos|neg`` for any key of
            ``scores``. Default (None): "random", "feature_cluster", "l2_cluster" and both signs of
            ``top_if_<key>`` for every key of ``scores`` (so all of STRATEGIES when scores has
            "test_loss" and "test_prediction").
        scores: metric name -> (n,) IF scores, e.g.
            ``{m.name: A.scores(m.gradient(theta_hat), method="if") for m in metrics}``.

    Returns:
        list of RemovalSet, ordered by strategy (in the order given), then by size.
    """
    Xa = _matrix(X)
    n = Xa.shape[0]
    ks = _sizes(sizes, n)
    scores = {} if scores is None else dict(scores)
    if strategies is None:
        strategies = list(_GEOMETRIC) + [f"top_if_{key}_{s}" for key in scores
                                         for s in ("pos", "neg")]
    elif isinstance(strategies, str):
        strategies = [strategies]
    strategies = list(strategies)
    if len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies lists a name more than once: {strategies!r}")
    checked: dict[str, np.ndarray] = {}
    for strategy in strategies:
        top = _parse_top(strategy)
        if strategy in _GEOMETRIC:
            continue
        if top is None:
            raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)} "
                             "or top_if_<scores key>_pos / _neg")
        key = top[0]
        if key not in scores:
            have = ", ".join(map(repr, scores)) or "none"
            raise ValueError(f"strategy {strategy!r} needs scores[{key!r}] (the IF scores of the "
                             f"metric {key!r}); scores given: {have}")
        checked[key] = _scores(scores[key], f"scores[{key!r}]", n)
    base = int(_generator(rng).integers(2**63))
    out: list[RemovalSet] = []
    for strategy in strategies:
        gen = _child(base, strategy)
        if strategy == "random":
            out += random_sets(n, ks, gen)
        elif strategy == "feature_cluster":
            out += feature_cluster_sets(Xa, ks, gen)
        elif strategy == "l2_cluster":
            out += l2_cluster_sets(Xa, ks, gen)
        else:
            key, sign = _parse_top(strategy)  # type: ignore[misc]
            out += top_influence_sets(checked[key], ks, gen, sign=sign, name=strategy)
    return out


# ----------------------------------------------------------------------------- search


def search(attribution: Any, direction: Any, k: int, method: str = "rif",
           sign: int = +1) -> np.ndarray:
    """The k samples whose removal is predicted to change a metric most in the direction ``sign``.

    Scores are ``attribution.scores(direction, method)``: the predicted removal effect of each
    single sample on the metric (positive: removing it increases the metric).

    Args:
        attribution: an :class:`rif_native.Attribution` at theta_hat.
        direction: the metric's gradient at theta_hat, (p,), or a metric object with a
            ``gradient`` method (evaluated at ``attribution.theta``).
        k: how many samples, 1 <= k <= n.
        method: "rif" (default) or "if".
        sign: +1 for the largest scores, -1 for the smallest.

    Returns:
        (k,) int64 indices ordered by decreasing ``sign * score`` (ties: lower index first; NaN
        scores, from singular removals with a zero numerator, rank last).
    """
    sign = _sign(sign)
    if method not in ("rif", "if"):
        raise ValueError(f"method must be 'rif' or 'if', got {method!r}")
    n = int(attribution.n)
    k = _count(k, "k")
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, n] with n = {n} samples, got {k}")
    if hasattr(direction, "gradient") and callable(direction.gradient):
        direction = direction.gradient(attribution.theta)
    direction = np.asarray(direction)
    if direction.ndim != 1:
        raise ValueError(f"direction must be one gradient of shape (p,), got {direction.shape}")
    return top_by_score(np.asarray(attribution.scores(direction, method=method)), k, sign)


def top_by_score(scores: ArrayLike, k: int, sign: int = +1) -> np.ndarray:
    """The k samples with the largest ``sign * score``: what :func:`search` returns, from scores
    computed already (one ``attribution.scores`` call can then serve several k).

    Returns (k,) int64 indices ordered by decreasing ``sign * score`` (ties: lower index first;
    NaN scores rank last).
    """
    sign = _sign(sign)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be one score per sample, shape (n,), got {s.shape}")
    k = _count(k, "k")
    if not 1 <= k <= s.size:
        raise ValueError(f"k must lie in [1, n] with n = {s.size} samples, got {k}")
    key = np.where(np.isnan(s), -np.inf, sign * s)
    return _top(key, k)
