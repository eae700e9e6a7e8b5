"""Robustness audits: can dropping a few samples flip a conclusion?

A *target* is a conclusion drawn from the fitted model: the sign of a coefficient (optionally by a
margin), the significance of a coefficient (its z statistic above a threshold), the predicted
class of a point, or a metric above a threshold. Each is written as ``f(theta) > 0``; the audit
looks for the smallest set of training samples whose removal makes ``f <= 0``, and proves it by
exact retraining.

The search (``method="rif"``, or ``"if"``: the same search driven by plain influence functions,
as Broderick, Giordano & Meager's approximate maximum influence perturbation does) runs in rounds:

1. at the current point (theta_hat, then the exact refit without the samples chosen so far) it
   scores every remaining sample by its estimated removal effect on f (``<grad f, RIF_i>``) and
   adds the most negative ones until their sum predicts ``f <= 0``;
2. it refits exactly without the set so far and records f there (and the Newton-step
   prediction of the set from theta_hat);
3. if f is still positive, it re-linearises at the refit (a new Attribution on the data
   without the set) and goes on, up to ``max_fraction`` of the samples.

A flipping set found, it bisects over the order in which samples were added for the shortest
prefix that still flips, each candidate checked by an exact refit: the reported set is the
smallest verified one along that order (not a global minimum, which is a hard combinatorial
problem). Every "actual" value in the result comes from an exact refit.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ._api import Attribution, SingularRemovalWarning

__all__ = ["AuditResult", "Target", "audit", "coefficient", "metric_threshold", "prediction",
           "significance"]


@dataclass
class Target:
    """A conclusion ``f(theta) > 0``: ``value(theta, A)`` (A an Attribution at theta on the
    data in use, for standard errors) and ``gradient(theta, A)``. With ``oriented`` False the
    audit takes the conclusion to be the side of zero f is on at theta_hat (it flips f's sign
    when f < 0 there).

    f is a quantity the user names, oriented and shifted: ``quantity`` names it (the
    coefficient ``"b"``, ``"|z| of b"``, ...) and ``quantity = scale * f + offset`` gives it
    back, so that reports show the coefficient itself, not f (the coefficient b < 0 is audited
    as f = -b)."""

    name: str
    value: Callable[[np.ndarray, Any], float]
    gradient: Callable[[np.ndarray, Any], np.ndarray]
    needs_attribution: bool = False
    oriented: bool = True
    quantity: str = "f"
    scale: float = 1.0
    offset: float = 0.0

    def at(self, A: Any) -> "Target":
        """The oriented target: f > 0 at A's theta (a Target with ``oriented`` already True
        is itself)."""
        if self.oriented:
            return self
        s = 1.0 if self.value(A.theta, A) >= 0 else -1.0
        value, gradient = self.value, self.gradient
        return Target(name=self.name, value=lambda t, B: s * value(t, B),
                      gradient=lambda t, B: s * np.asarray(gradient(t, B)),
                      needs_attribution=self.needs_attribution, quantity=self.quantity,
                      scale=s * self.scale, offset=self.offset)


def _labels(A: Attribution, names: Optional[Sequence[str]]) -> list:
    labels = list(names) if names is not None else A.param_names[:A.n_features]
    if len(labels) != A.n_features:
        raise ValueError(f"names must name the {A.n_features} features, got {len(labels)}")
    return labels + ([A.param_names[-1]] if A.fit_intercept else [])


def _index(A: Attribution, which: Union[int, str], names: Optional[Sequence[str]]) -> int:
    p = A.n_params
    if isinstance(which, (int, np.integer)) and not isinstance(which, bool):
        j = int(which)
        if not -p <= j < p:
            raise ValueError(f"coefficient index {j} is out of range for {p} parameters")
        return j % p
    if isinstance(which, str):
        labels = _labels(A, names)
        if which not in labels:
            raise ValueError(f"unknown coefficient {which!r}; names are {labels[:10]}"
                             f"{' ...' if len(labels) > 10 else ''}")
        return labels.index(which)
    raise TypeError(f"a coefficient is an index or a name, got {type(which).__name__}")


def _unit(p: int, j: int, sign: float) -> np.ndarray:
    g = np.zeros(p)
    g[j] = sign
    return g


def coefficient(A: Attribution, which: Union[int, str], *, margin: float = 0.0,
                names: Optional[Sequence[str]] = None) -> Target:
    """The sign of coefficient ``which`` (index, or name among ``names``; the intercept is
    "const"): flipped when it crosses zero by ``margin`` >= 0 (``s theta_j <= -margin`` with s
    its sign at theta_hat)."""
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    _one_predictor(A, "a coefficient's sign")
    j = _index(A, which, names)
    s = 1.0 if A.theta[j] >= 0 else -1.0
    label = _labels(A, names)[j]
    return Target(name=f"sign of {label}" + (f" by {margin:g}" if margin else ""),
                  value=lambda t, _A: float(s * t[j] + margin),
                  gradient=lambda t, _A: _unit(len(t), j, s),
                  quantity=label, scale=s, offset=-s * margin + 0.0)  # + 0.0: not -0


def significance(A: Attribution, which: Union[int, str], *, threshold: float = 1.96,
                 names: Optional[Sequence[str]] = None) -> Target:
    """Significance of coefficient ``which``: ``|theta_j| / se_j > threshold`` with
    ``se_j = sqrt(phi [H^{-1}]_jj)`` (for an unpenalised fit the usual standard error; phi the
    dispersion: 1 for logistic and Poisson, the Pearson estimate for squared loss, as in
    rif_native.diagnostics), recomputed at every refit on the samples left. Flipped when ``|z|``
    falls to the threshold. The search's gradient holds se fixed (the refits do not)."""
    from .diagnostics import _dispersion

    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    _one_predictor(A, "a coefficient's significance")
    j = _index(A, which, names)
    _dispersion(A)  # squared loss with no degrees of freedom left: refused here

    def se(B: Any) -> float:
        return float(np.sqrt(_dispersion(B) * B.solve(_unit(B.n_params, j, 1.0))[j]))

    label = _labels(A, names)[j]
    return Target(name=f"|z| of {label} above {threshold:g}",
                  value=lambda t, B: float(abs(t[j]) / se(B) - threshold),
                  gradient=lambda t, B: _unit(len(t), j, (1.0 if t[j] >= 0 else -1.0) / se(B)),
                  needs_attribution=True, quantity=f"|z| of {label}", offset=threshold)


def _one_predictor(A: Any, what: str) -> None:
    """Coefficient targets need one linear predictor: a multinomial model's coefficients are
    identified only up to a shift shared by the classes, so their signs are not conclusions."""
    if A.family == "multinomial":
        raise ValueError(f"{what} is audited for the binary GLM families; a multinomial model's "
                         "coefficients change with the shift shared by every class row (audit "
                         "a prediction or a metric_threshold of rif_native.multiclass_metrics)")


def prediction(A: Attribution, x: Any) -> Target:
    """The predicted class of point x: binary logistic, the sign of its logit; multinomial,
    the margin of its class's logit over the largest other one (the other class taken afresh
    at each point the search linearises at)."""
    if A.family == "multinomial":
        return _class_prediction(A, x)
    if A.family != "logistic":
        raise ValueError(f"a predicted class needs family='logistic', not {A.family!r} (for "
                         "other families audit a metric with metric_threshold)")
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] != A.n_features:
        raise ValueError(f"x must have {A.n_features} features, got {x.shape[0]}")
    xt = np.r_[x, 1.0] if A.fit_intercept else x
    s = 1.0 if xt @ A.theta >= 0 else -1.0
    return Target(name="predicted class of the point", value=lambda t, _A: float(s * (xt @ t)),
                  gradient=lambda t, _A: s * xt, quantity="logit of the point", scale=s)


def _class_prediction(A: Any, x: Any) -> Target:
    """f = z_c - max_{k != c} z_k at point x, c its class at theta_hat."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] != A.n_features:
        raise ValueError(f"x must have {A.n_features} features, got {x.shape[0]}")
    xt = np.r_[x, 1.0] if A.fit_intercept else x
    c = int(np.argmax(A.theta @ xt))

    def runner_up(t: np.ndarray) -> int:
        z = t @ xt
        z[c] = -np.inf
        return int(np.argmax(z))

    def value(t: np.ndarray, _A: Any) -> float:
        z = t @ xt
        return float(z[c] - z[runner_up(t)])

    def gradient(t: np.ndarray, _A: Any) -> np.ndarray:
        g = np.zeros_like(t, dtype=np.float64)
        g[c] += xt
        g[runner_up(t)] -= xt
        return g

    return Target(name=f"predicted class ({c}) of the point", value=value, gradient=gradient,
                  quantity=f"margin of class {c}'s logit over the next")


def metric_threshold(metric: Any, threshold: float) -> Target:
    """A metric (rif_native.metrics) on the side of ``threshold`` it is on at theta_hat (the
    audit orients it there: see Target.at)."""
    threshold = float(threshold)
    return Target(name=f"{getattr(metric, 'name', 'metric')} vs {threshold:g}",
                  value=lambda t, _A: float(metric.value(t) - threshold),
                  gradient=lambda t, _A: np.asarray(metric.gradient(t), dtype=np.float64),
                  oriented=False, quantity=getattr(metric, "name", "metric"), offset=threshold)


@dataclass
class AuditResult:
    """What an audit found for one method ("rif" or "if").

    Attributes:
        target, method: what was audited and how the search was driven.
        flipped: whether a verified set flips the target.
        removed: the smallest verified flipping set found (sample indices, in the order added);
            empty when none was found.
        size, fraction, weight_fraction: its size, as a fraction of n and of the total weight.
        value_before, value_after: f at theta_hat and at the exact refit without the set.
        predicted: the method's additive prediction of f after removing the set, from
            theta_hat; newton_step: the Newton-step prediction from theta_hat.
        predicted_size: the size the method's additive scores at theta_hat predict is needed
            (what an unverified, one-shot search would report; None: they never predict a
            flip within max_removed).
        rounds: the trail, one dict per refit checked: size, predicted, newton_step, actual,
            converged (a refit that did not converge, or that was not attempted because the
            removal leaves H singular, verifies nothing).
        max_removed: the most samples the search could drop.
        stopped: why the search ended: "flipped"; "max_removed" (it dropped max_removed
            samples without a flip); "no_candidates" (no sample left is predicted to move f
            towards the threshold); "max_rounds"; "not_converged" (the refit of the last set
            tried did not converge: unverified).
        curve: f0 + the running sum of the method's scores at theta_hat along the order in
            which the search added samples (its additive prediction for each prefix).
        quantity, quantity_scale, quantity_offset: what f is about, as the user names it (the
            coefficient "b", ...), and how to get it back: quantity = scale * f + offset
            (:meth:`quantity_of`, :meth:`in_quantity`). Every value above is of f.
    """

    target: str
    method: str
    flipped: bool
    removed: list
    size: int
    fraction: float
    weight_fraction: float
    value_before: float
    value_after: Optional[float]
    predicted: Optional[float]
    newton_step: Optional[float]
    predicted_size: Optional[int] = None
    rounds: list = field(default_factory=list)
    max_removed: int = 0
    curve: list = field(default_factory=list)
    stopped: str = ""
    quantity: str = "f"
    quantity_scale: float = 1.0
    quantity_offset: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def quantity_of(self, f: Optional[float]) -> Optional[float]:
        """The audited quantity (the coefficient itself, ...) where the target's f is f."""
        return None if f is None else self.quantity_scale * f + self.quantity_offset

    def flips_when(self) -> str:
        """f <= 0 said of the quantity: "b >= 0" for a coefficient b < 0 at theta_hat."""
        return _flips_when(self.quantity, self.quantity_scale, self.quantity_offset)

    def in_quantity(self) -> dict:
        """to_dict() with every value of f (before, after, predictions, rounds, curve) given as
        the quantity itself, f's own values before and after as f_before and f_after, and
        when the quantity counts as flipped (flips_when)."""
        q = self.quantity_of
        rounds = [{**r, **{k: q(r[k]) for k in ("predicted", "newton_step", "actual")}}
                  for r in self.rounds]
        return {**self.to_dict(), "value_before": q(self.value_before),
                "value_after": q(self.value_after), "predicted": q(self.predicted),
                "newton_step": q(self.newton_step), "rounds": rounds,
                "curve": [q(v) for v in self.curve], "f_before": self.value_before,
                "f_after": self.value_after, "flips_when": self.flips_when()}


def _flips_when(quantity: str, scale: float, offset: float) -> str:
    """Where ``quantity = scale * f + offset`` has f <= 0: "b >= 0" for scale < 0."""
    return f"{quantity} {'<=' if scale > 0 else '>='} {offset:.6g}"


class _Auditor:
    def __init__(self, A: Attribution, target: Target, max_fraction: float, tol: float):
        self.multinomial = getattr(A, "family", None) == "multinomial"
        X, y, w = (A._pb.X, A._pb.y, A._pb.w) if self.multinomial else A._data
        if w is None:
            w = np.ones(A.n)
        self.A, self.X, self.y, self.w = A, X, y, np.asarray(w, float)
        self.target = target.at(A)
        self.tol = tol
        self.max_remove = max(1, int(np.floor(max_fraction * A.n)))
        self.cache: dict = {}

    def _attribution(self, theta: np.ndarray, removed: Sequence[int]) -> Attribution:
        w = self.w.copy()
        w[list(removed)] = 0.0
        A = self.A
        if self.multinomial:
            from .multinomial import MultinomialAttribution

            return MultinomialAttribution(self.X, self.y, theta, l2=A.l2, sample_weight=w,
                                          fit_intercept=A.fit_intercept, n_classes=A.n_classes,
                                          num_threads=A._pb.threads)
        return Attribution(self.X, self.y, theta, l2=A.l2, family=A.family, sample_weight=w,
                           fit_intercept=A.fit_intercept, num_threads=A._threads)

    def _value(self, theta: np.ndarray, removed: Sequence[int]) -> float:
        """f at theta on the data without `removed`; NaN where it has none: a removal that
        leaves H singular (a Newton step of inf, or no standard error for a significance)."""
        if not np.all(np.isfinite(theta)):
            return float("nan")
        if not self.target.needs_attribution:
            return self.target.value(theta, None)
        try:
            B = self._attribution(theta, removed)
        except np.linalg.LinAlgError:  # H without `removed` is singular
            return float("nan")
        return self.target.value(theta, B)

    def refit(self, removed: Sequence[int]) -> dict:
        """The exact refit without `removed`: theta, f there, and NS's prediction."""
        key = tuple(sorted(removed))
        if key in self.cache:
            return self.cache[key]
        A, tgt = self.A, self.target
        res = A.retrain(list(removed), tol=self.tol)
        theta = res.theta
        ns_theta = A.theta + np.asarray(A.group_effect(list(removed), method="ns"))
        out = {"theta": theta, "actual": self._value(theta, removed),
               "newton_step": self._value(ns_theta, removed), "converged": bool(res.converged)}
        self.cache[key] = out
        return out

    def run(self, method: str, max_rounds: int = 10) -> AuditResult:
        A, tgt = self.A, self.target
        f0 = tgt.value(A.theta, A)
        if not f0 > 0:
            raise ValueError(f"the target '{tgt.name}' is already at or past its threshold at "
                             f"theta_hat ({tgt.quantity} = {tgt.scale * f0 + tgt.offset:.4g}, "
                             "flipped at "
                             f"{_flips_when(tgt.quantity, tgt.scale, tgt.offset)}): nothing "
                             "to flip")
        order: list = []
        rounds: list = []
        theta, B, f_cur = A.theta, A, f0
        first_prediction = None
        predicted_size = None
        stopped = "max_rounds"
        for _ in range(max_rounds):
            g = tgt.gradient(theta, B)
            with warnings.catch_warnings():  # samples of leverage 1 score inf: never chosen
                warnings.simplefilter("ignore", SingularRemovalWarning)
                scores = np.array(B.scores(g, method=method), dtype=np.float64)  # a copy
            scores[order] = np.inf
            scores[~np.isfinite(scores)] = np.inf
            cand = np.argsort(scores, kind="stable")
            cand = cand[scores[cand] < 0][:self.max_remove - len(order)]
            if len(cand) == 0:
                stopped = "no_candidates"
                break
            cum = f_cur + np.cumsum(scores[cand])
            hit = np.flatnonzero(cum <= 0)
            k = int(hit[0]) + 1 if len(hit) else len(cand)
            predicted = float(cum[k - 1])
            if first_prediction is None:
                first_prediction = (scores, cand)
                predicted_size = k if len(hit) else None
            order += [int(i) for i in cand[:k]]
            ref = self.refit(order)
            rounds.append({"size": len(order), "predicted": predicted,
                           "newton_step": ref["newton_step"], "actual": ref["actual"],
                           "converged": ref["converged"]})
            if not ref["converged"]:
                stopped = "not_converged"
                break
            f_cur = ref["actual"]
            if f_cur <= 0:
                stopped = "flipped"
                break
            if len(order) >= self.max_remove:
                stopped = "max_removed"
                break
            theta = ref["theta"]
            B = self._attribution(theta, order)
        flipped = stopped == "flipped"
        size = len(order)
        if flipped:
            lo = rounds[-2]["size"] if len(rounds) > 1 else 0  # known not to flip
            hi = size
            while hi - lo > 1:
                mid = (lo + hi) // 2
                ref = self.refit(order[:mid])
                rounds.append({"size": mid, "predicted": None,
                               "newton_step": ref["newton_step"], "actual": ref["actual"],
                               "converged": ref["converged"], "bisection": True})
                if ref["converged"] and ref["actual"] <= 0:  # a verified flip
                    hi = mid
                else:
                    lo = mid
            size = hi
        removed = order[:size] if flipped else []
        pred = None
        if flipped and first_prediction is not None:
            s0, _ = first_prediction
            total = s0[removed]
            pred = float(f0 + total[np.isfinite(total)].sum())
        final = self.refit(removed) if flipped else None
        curve = []
        if first_prediction is not None:
            s0 = np.where(np.isfinite(first_prediction[0]), first_prediction[0], 0.0)
            curve = (f0 + np.cumsum(s0[order])).tolist()
        wsum = float(self.w.sum())
        return AuditResult(
            target=tgt.name, method=method, flipped=flipped, removed=removed, size=len(removed),
            fraction=len(removed) / A.n,
            weight_fraction=float(self.w[removed].sum()) / wsum if wsum > 0 else 0.0,
            value_before=f0, value_after=None if final is None else final["actual"],
            predicted=pred, newton_step=None if final is None else final["newton_step"],
            predicted_size=predicted_size, rounds=rounds, max_removed=self.max_remove,
            curve=curve, stopped=stopped, quantity=tgt.quantity, quantity_scale=tgt.scale,
            quantity_offset=tgt.offset)


def audit(A: Attribution, target: Target, *, max_fraction: float = 0.05,
          methods: Sequence[str] = ("rif", "if"), tol: float = 1e-10) -> dict:
    """Search for the smallest set of samples whose removal flips ``target`` (see the module's
    docstring), by RIF and by IF, each candidate verified by exact retraining.

    Args:
        A: an Attribution at the fitted theta (binary GLM families, or multinomial: a
            prediction or a metric_threshold of rif_native.multiclass_metrics).
        target: from :func:`coefficient`, :func:`significance`, :func:`prediction` or
            :func:`metric_threshold`.
        max_fraction: the most samples the search may drop, as a fraction of n.
        methods: which searches to run.
        tol: the refits' gradient tolerance.

    Returns:
        {method: AuditResult}. ``flipped`` False says that no set the search tried, up to
        ``max_fraction`` of n, flips the target.
    """
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    auditor = _Auditor(A, target, max_fraction, tol)
    return {m: auditor.run(m) for m in methods}


def report(results: dict, A: Any = None) -> str:
    """A short Markdown report of audit() results (with the trust line of Attribution A)."""
    lines = []
    if A is not None:
        from .trust import line

        lines.append(f"- trust: {line(A)}")
    for m, r in results.items():
        q = r.quantity_of
        if r.flipped:
            lines.append(
                f"- **{m.upper()}**: dropping {r.size} samples ({100 * r.fraction:.2f}% of n, "
                f"{100 * r.weight_fraction:.2f}% of the weight) flips '{r.target}': "
                f"{r.quantity} = {q(r.value_before):.4g} -> {q(r.value_after):.4g} by exact "
                f"refit (additive {m.upper()} prediction {q(r.predicted):.4g}, Newton step "
                f"{q(r.newton_step):.4g}); its scores at theta_hat alone predicted "
                + (f"{r.predicted_size} samples." if r.predicted_size else "no flip."))
        else:
            lines.append(f"- **{m.upper()}**: " + _not_flipped(r))
    return "\n".join(lines)


def _not_flipped(r: AuditResult) -> str:
    """Why a search found no flipping set, in words, with f where it stopped."""
    name, q = r.quantity, r.quantity_of
    f = f"({name} = {q(r.value_before):.4g} at theta_hat; it flips at {r.flips_when()})"
    last = r.rounds[-1] if r.rounds else None
    size = last["size"] if last else 0
    if r.stopped == "max_removed":
        return (f"no set of up to {r.max_removed} samples found by the search flips "
                f"'{r.target}' {f}; {name} = {q(last['actual']):.4g} after dropping {size}.")
    if r.stopped == "not_converged":
        return (f"the search stopped unverified at {size} samples: the exact refit without "
                "them did not converge (or the removal leaves H singular, with nothing to "
                f"fit) {f}.")
    if r.stopped == "no_candidates":
        where = f"after dropping {size} samples ({name} = {q(last['actual']):.4g})" if last else \
            "at theta_hat"
        return (f"the search stopped {where}: no sample left is predicted to move "
                f"'{r.target}' towards its threshold {f}.")
    return (f"the search stopped after {len(r.rounds)} rounds at {size} samples without a "
            f"flip of '{r.target}' {f}.")


def table(results: dict) -> str:
    """Every refit the searches checked, as a Markdown table (sorted by method and size): the
    method's additive prediction from theta_hat for that many samples (along the search's
    order), the Newton step's, and the actual value after the refit, each of the audited
    quantity (the coefficient itself, ...; named in the header)."""
    from ._markdown import markdown_table

    def fmt(r: AuditResult, v: Any) -> str:
        return "" if v is None else f"{r.quantity_of(v):.4g}"

    rows = []
    for m, r in results.items():
        for q in sorted(r.rounds, key=lambda q: q["size"]):
            additive = r.curve[q["size"] - 1] if 0 < q["size"] <= len(r.curve) else None
            verdict = ("not converged" if not q.get("converged", True)
                       else "flips" if q["actual"] <= 0 else "")
            rows.append([m.upper(), q["size"], fmt(r, additive), fmt(r, q["newton_step"]),
                         fmt(r, q["actual"]), verdict])
    name = next(iter(results.values())).quantity if results else "f"
    return markdown_table(["search", "samples dropped", f"{name}: additive from theta_hat",
                           f"{name}: Newton step", f"{name}: actual (refit)", ""],
                          ["---", "---:", "---:", "---:", "---:", "---"], rows)


def write(results: dict, path: str) -> None:
    """The results as JSON (written atomically; NaN and inf, where a refit or Newton step
    left H singular, as null)."""
    from ._output import write_text
    from .experiment import _jsonable

    write_text(path, json.dumps(_jsonable({m: r.to_dict() for m, r in results.items()}),
                                indent=1, allow_nan=False))


def plot(results: dict, path: Optional[str] = None) -> Any:
    """Target value against the number of samples dropped: each method's predictions (its
    additive sum in the first round, the Newton step) and the verified actual values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {"rif": "tab:blue", "if": "tab:orange"}
    for m, r in results.items():
        rows = sorted(r.rounds, key=lambda q: q["size"])
        sizes = [0] + [q["size"] for q in rows]
        start = r.quantity_of(r.value_before)
        ax.plot(sizes, [start] + [r.quantity_of(q["actual"]) for q in rows], "o-",
                color=colours.get(m), label=f"{m.upper()} search: actual (refit)")
        ax.plot(sizes, [start] + [r.quantity_of(q["newton_step"]) for q in rows], "x:",
                color=colours.get(m), label=f"{m.upper()} search: Newton step")
        if r.curve:
            ax.plot(range(len(r.curve) + 1), [start] + [r.quantity_of(v) for v in r.curve],
                    "-", lw=1, alpha=0.6, color=colours.get(m),
                    label=f"{m.upper()} additive prediction from theta_hat")
        if r.flipped:
            ax.axvline(r.size, color=colours.get(m), alpha=0.3)
    first = next(iter(results.values()))
    ax.axhline(first.quantity_offset, color="k", lw=0.8)
    ax.set_xlabel("samples dropped")
    ax.set_ylabel(f"{first.quantity} (flipped at {first.flips_when()})")
    ax.set_title(first.target)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        from ._output import atomic_target

        with atomic_target(path) as tmp:
            fig.savefig(tmp, dpi=150, format=str(path).rsplit(".", 1)[-1])
        plt.close(fig)
    return fig
