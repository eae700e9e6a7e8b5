"""The main job: how well do IF, RIF and NS predict the true effect of removing data?

For a fitted GLM and many removal sets T (random, clustered, and chosen by influence; sizes from
0.1% to 5% of n, DESIGN.md section 2), compare each estimate's predicted effect on the paper's
metrics with the actual effect measured by exact retraining. Everything is a removal effect:
``f(theta_{-T}) - f(theta_hat)``; "linear" variants use ``<grad f(theta_hat), delta>``.
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _stats, metrics as _metrics, removal as _removal, sources as _sources
from . import trust as _trust
from ._api import Attribution, _use_cuda, fit
from ._markdown import markdown_table
from ._output import atomic_target, write_text
from ._progress import progress

METHODS = ("if", "rif", "ns")
PAPER_METRICS = ("test_prediction", "test_loss", "self_loss")


@dataclass
class ExperimentConfig:
    """Settings of one validation experiment (defaults reproduce the paper's protocol)."""

    l2: float = 0.1
    family: str = "logistic"
    fit_intercept: bool = True
    n_sizes: int = 8                 # sizes linear from 0.1% to 5% of n
    strategies: Sequence[str] = tuple(_removal.STRATEGIES)
    metrics: Sequence[str] = PAPER_METRICS
    test_subset: int = 100           # half highest-loss, half random test points
    seed: int = 0
    tol: float = 1e-10               # retrain / fit gradient tolerance (relative)
    num_threads: Optional[int] = None
    backend: Optional[str] = None    # "cpu", "cuda", "auto" (None: RIF_BACKEND, else auto)
    batch: int = 16                  # sets retrained per call (progress granularity)


@dataclass
class ExperimentResult:
    name: str
    n: int
    d: int
    config: ExperimentConfig
    rows: list = field(default_factory=list)       # one per (set, metric)
    summary: list = field(default_factory=list)    # one per (metric, method)
    runtime: dict = field(default_factory=dict)    # seconds per stage (the paper's Table 2)
    fit_info: dict = field(default_factory=dict)


def summarise(rows: list, name: str = "") -> list:
    """Agreement of each method with the actual effect, per metric (and linear variants)."""
    out = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        sub = [r for r in rows if r["metric"] == metric]
        actual = np.array([r["actual"] for r in sub], dtype=float)
        for method in METHODS + tuple(f"{m}_linear" for m in METHODS):
            if method not in sub[0]:
                continue
            predicted = np.array([r[method] for r in sub], dtype=float)
            out.append({"dataset": name, "metric": metric, "method": method,
                        **_stats.agreement(actual, predicted)})
    return out


def _paper_metrics(X, y, X_test, y_test, cfg: ExperimentConfig, rng, A: Attribution) -> list:
    """The paper's three metrics on its test subset (half highest-loss, half random test points
    at the attribution's theta)."""
    test_losses = _metrics.TestLoss(X_test, y_test, fit_intercept=cfg.fit_intercept,
                                    family=cfg.family).per_sample(A.theta)
    sub = _removal.test_subset(test_losses, min(cfg.test_subset, len(y_test)), rng)
    return _metrics.paper_metrics(X_test[sub], y_test[sub], X, y, attribution=A, l2=cfg.l2,
                                  family=cfg.family, fit_intercept=cfg.fit_intercept)


def _multiclass_metrics(X, y, X_test, y_test, cfg: ExperimentConfig, rng, A) -> list:
    """The paper's three metrics for a multinomial model (rif_native.multiclass_metrics), on
    the same kind of test subset."""
    from . import multiclass_metrics

    yt = np.asarray(y_test).astype(np.int64)
    losses = multiclass_metrics.TestLoss(X_test, yt, fit_intercept=cfg.fit_intercept
                                         ).per_sample(A.theta)
    sub = _removal.test_subset(losses, min(cfg.test_subset, len(yt)), rng)
    return multiclass_metrics.paper_metrics(X_test[sub], yt[sub], X, y, attribution=A, l2=cfg.l2,
                                            fit_intercept=cfg.fit_intercept)


def _metrics_for(X, y, X_test, y_test, cfg: ExperimentConfig, rng, A) -> list:
    """The paper's three metrics for the configured family."""
    if cfg.family == "multinomial":
        return _multiclass_metrics(X, y, X_test, y_test, cfg, rng, A)
    return _paper_metrics(X, y, X_test, y_test, cfg, rng, A)


def _kernel_view(X: np.ndarray, cfg: ExperimentConfig,
                 log: Callable[[str], None] = lambda s: None) -> Any:
    """X as fit and Attribution read it: a bag of words is mostly zeros, so the passes read
    only its nonzeros (sources.as_sparse) unless the GPU takes X; the removal sets and the
    metrics keep X as it is."""
    if cfg.family == "multinomial" or _use_cuda(cfg.backend) or not _sources.sparse_enough(X):
        return X
    log(f"X is {np.count_nonzero(X) / X.size:.2%} nonzero: fit and attribution read its "
        "nonzeros only")
    return _sources.as_sparse(X)


def run_experiment(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    config: ExperimentConfig = ExperimentConfig(),
    *,
    name: str = "data",
    show_progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> ExperimentResult:
    """Fit, attribute, build removal sets, retrain each, and compare IF / RIF / NS with the truth."""
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    n, d = X.shape
    res = ExperimentResult(name=name, n=n, d=d, config=cfg)
    kw = dict(l2=cfg.l2, family=cfg.family, fit_intercept=cfg.fit_intercept)

    # A bag of words is mostly zeros: fit and attribution then read only its nonzeros (the
    # removal sets and the metrics keep X as it is).
    t0 = time.perf_counter()
    Xk = _kernel_view(X, cfg, log)
    fitted = fit(Xk, y, tol=cfg.tol, num_threads=cfg.num_threads, **kw)
    res.runtime["training"] = time.perf_counter() - t0
    res.fit_info = {"grad_norm": fitted.grad_norm, "n_iter": fitted.n_iter,
                    "converged": fitted.converged}
    theta = fitted.theta
    log(f"fit: {fitted.n_iter} Newton iterations, ||grad F|| = {fitted.grad_norm:.2e} "
        f"({res.runtime['training']:.2f} s)")

    A = Attribution(Xk, y, theta, num_threads=cfg.num_threads, backend=cfg.backend, **kw)
    res.runtime.update({k: v for k, v in A.timings.items()})
    log(f"attribution: {A!r}")

    every = _metrics_for(X, y, X_test, y_test, cfg, rng, A)
    mets = [m for m in every if m.name in cfg.metrics]
    if not mets:
        raise ValueError(f"metrics must name at least one of {', '.join(PAPER_METRICS)}")

    t0 = time.perf_counter()
    # IF scores on the test metrics choose the "top" removal sets, whichever metrics are reported.
    if_scores = {m.name: A.scores(m.gradient(theta), method="if") for m in every
                 if m.name in ("test_loss", "test_prediction")}
    res.runtime["influence"] = time.perf_counter() - t0

    sizes = _removal.removal_sizes(n, cfg.n_sizes)
    sets = _removal.make_sets(X, sizes, rng, strategies=cfg.strategies, scores=if_scores)
    log(f"{len(sets)} removal sets, sizes {sizes.min()}..{sizes.max()} "
        f"({', '.join(dict.fromkeys(s.strategy for s in sets))})")
    index_lists = [s.indices for s in sets]

    t0 = time.perf_counter()
    estimates = {m: A.group_effect(index_lists, method=m) for m in METHODS}
    res.runtime["estimates"] = time.perf_counter() - t0
    gaps = _trust.additivity_gaps(estimates["rif"], estimates["ns"])
    res.fit_info["trust"] = _trust.line(A)
    res.fit_info["flagged_sets"] = int(np.count_nonzero(gaps > _trust.ADDITIVITY_LIMIT))

    t0 = time.perf_counter()
    retrained = A.retrain(index_lists, tol=cfg.tol, show_progress=show_progress,
                          batch=cfg.batch)
    theta_T, grad_norms = retrained.theta, retrained.grad_norm
    converged = np.asarray(retrained.converged, dtype=bool).reshape(-1)
    res.runtime["retrain"] = time.perf_counter() - t0
    per_set = res.runtime["retrain"] / max(len(sets), 1)
    log(f"retrained {len(sets)} sets in {res.runtime['retrain']:.2f} s "
        f"(max final ||grad|| {grad_norms.max():.2e})")
    if not converged.all():
        log(f"{int(np.count_nonzero(~converged))} set(s) have no converged refit (the "
            "retraining warnings say why): their actual effect is NaN, left out of the "
            "agreement")

    for m in mets:
        # a refit that did not converge (theta on its way to infinity, or theta_hat itself
        # where the refit was not attempted) measures nothing: NaN, skipped by the statistics
        actual = np.where(converged, m.removal_effect(theta_T, theta), np.nan)
        pred = {k: m.removal_effect(theta[None, :] + e, theta) for k, e in estimates.items()}
        lin = {f"{k}_linear": m.linear_effect(e, theta) for k, e in estimates.items()}
        for j, s in enumerate(sets):
            row = {"set_id": j, "strategy": s.strategy, "size": int(s.size), "metric": m.name,
                   "actual": float(actual[j])}
            row.update({k: float(v[j]) for k, v in pred.items()})
            row.update({k: float(v[j]) for k, v in lin.items()})
            row["retrain_grad_norm"] = float(grad_norms[j])
            row["retrain_converged"] = bool(converged[j])
            row["additivity_gap"] = float(gaps[j])
            row["seconds"] = per_set
            res.rows.append(row)
    res.summary = summarise(res.rows, name)
    return res


# ----------------------------------------------------------------------------- output


def _write_csv(path: Path, rows: list) -> None:
    """rows as CSV, written atomically (a temporary name in the same folder, then os.replace)."""
    with atomic_target(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def write_json(path: Path, payload) -> None:
    """payload as JSON (non-finite floats as null), written atomically."""
    write_text(path, json.dumps(_jsonable(payload), indent=2))


def write_table(path_stem: Path, rows: list) -> list:
    """rows as path_stem.csv and path_stem.json."""
    csv_path, json_path = path_stem.with_suffix(".csv"), path_stem.with_suffix(".json")
    _write_csv(csv_path, rows)
    write_json(json_path, rows)
    return [csv_path, json_path]


RUNTIME_STAGES = (("training", "training (Newton fit)"), ("hessian", "Hessian"),
                  ("cholesky", "factorisation"), ("influence", "influence (IF scores, 2 metrics)"),
                  ("leverage", "rescaling (leverages)"), ("estimates", "IF/RIF/NS for all sets"),
                  ("retrain", "exact retraining, all sets"))


def runtime_markdown(runtime: dict) -> str:
    return markdown_table(["stage", "seconds"], ["---", "---:"],
                          ([label, f"{runtime[key]:.3f}"] for key, label in RUNTIME_STAGES
                           if key in runtime))


def summary_markdown(summary: list) -> str:
    return markdown_table(
        ["metric", "method", "slope", "Pearson", "Spearman", "median rel. error", "sets"],
        ["---", "---"] + ["---:"] * 5,
        ([s["metric"], s["method"], f"{s['slope']:.3g}", f"{s['pearson']:.3g}",
          f"{s['spearman']:.3g}", f"{s['median_rel_error']:.3g}", s["n_sets"]] for s in summary))


def write_outputs(res: ExperimentResult, outdir: Path) -> list:
    """Tables (CSV + JSON), Figure 1 (PNG + PDF), runtime table and a Markdown report."""
    from . import plots

    outdir.mkdir(parents=True, exist_ok=True)
    files = write_table(outdir / "estimates", res.rows)
    files += write_table(outdir / "summary", res.summary)
    write_json(outdir / "runtime.json", res.runtime)
    files.append(outdir / "runtime.json")
    # no set with an exact refit (each one's actual NaN): nothing to plot, the rest is written
    plotted = any(np.isfinite(r["actual"]) for r in res.rows)
    if plotted:
        files += plots.figure1(res.rows, outdir / "figure1",
                               title=f"{res.name}: n={res.n}, d={res.d}, l2={res.config.l2:g}")
    report = [
        f"# Removal effects on {res.name}",
        "",
        f"n = {res.n} training samples, d = {res.d} features, family {res.config.family}, "
        f"l2 = {res.config.l2:g} (F is a sum over samples; "
        + (f"scikit-learn C = {1 / res.config.l2:g}" if res.config.l2 > 0 else "no penalty")
        + f"), intercept {'yes' if res.config.fit_intercept else 'no'}.",
        f"Fit: {res.fit_info.get('n_iter')} Newton iterations, final ||grad F|| = "
        f"{res.fit_info.get('grad_norm', float('nan')):.2e}.",
        f"{len({r['set_id'] for r in res.rows})} removal sets, seed {res.config.seed}. "
        "Effects are removal effects f(theta_{-T}) - f(theta_hat); 'actual' is exact retraining "
        "(NaN, and left out, for a set whose refit did not converge: retrain_converged False).",
        "",
        f"Trust: {res.fit_info.get('trust', 'n/a')}. {res.fit_info.get('flagged_sets', 0)} "
        "sets have an additivity gap above 20% (the sum of their members' RIF differs from "
        "their joint Newton step: they interact, and NS is the estimate to use for them).",
        "",
        "## Agreement with exact retraining",
        "",
        "Slope of predicted on actual through the origin (1 is perfect), correlations, median "
        "relative error.",
        "",
        summary_markdown([s for s in res.summary if not s["method"].endswith("_linear")]),
        "",
        "Linear variants (<grad f(theta_hat), delta>):",
        "",
        summary_markdown([s for s in res.summary if s["method"].endswith("_linear")]),
        "",
        "## Runtime (this run)",
        "",
        runtime_markdown(res.runtime),
        "",
        "![Figure 1](figure1.png)" if plotted else
        "No Figure 1: no removal set has an exact refit to compare with.",
        "",
    ]
    write_text(outdir / "report.md", "\n".join(report))
    files.append(outdir / "report.md")
    return files


def config_dict(cfg: ExperimentConfig) -> dict:
    d = asdict(cfg)
    d["strategies"] = list(cfg.strategies)
    return d


# ----------------------------------------------------------------------------- Figure 3


def run_poisoning(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    config: ExperimentConfig = ExperimentConfig(),
    *,
    n_points: int = 20,
    show_progress: bool = True,
) -> list:
    """Data poisoning (the paper's Figure 3): add one test point with its label flipped to the
    training set, refit, and predict the change of that point's own logit when it is removed
    again, by IF and RIF. The actual change is exact: removing the poison gives back theta_hat.
    Needs 0/1 labels (logistic family)."""
    cfg = config
    if cfg.family != "logistic":
        raise ValueError("poisoning flips 0/1 labels: it needs family='logistic'")
    rng = np.random.default_rng(cfg.seed)
    kw = dict(l2=cfg.l2, family=cfg.family, fit_intercept=cfg.fit_intercept)
    theta = fit(X, y, tol=cfg.tol, num_threads=cfg.num_threads, **kw).theta
    n = X.shape[0]
    points = rng.choice(len(y_test), size=min(n_points, len(y_test)), replace=False)
    rows = []
    for t in progress(points, desc="poisoning", enabled=show_progress):
        x = X_test[t]
        Xp = np.vstack([X, x[None, :]])
        yp = np.append(y, 1.0 - y_test[t])
        poisoned = fit(Xp, yp, tol=cfg.tol, theta0=theta, num_threads=cfg.num_threads, **kw)
        A = Attribution(Xp, yp, poisoned.theta, num_threads=cfg.num_threads,
                        backend=cfg.backend, **kw)
        direction = np.r_[x, 1.0] if cfg.fit_intercept else x
        logit = lambda th: float(direction @ th)  # noqa: E731 - the point's own logit
        rows.append({
            "point": int(t),
            "label": float(y_test[t]),
            "poison_label": float(yp[-1]),
            "leverage": float(A.leverage[n]),
            "actual": logit(theta) - logit(poisoned.theta),
            "if": float(A.influence([n])[0] @ direction),
            "rif": float(A.rescaled_influence([n])[0] @ direction),
        })
    return rows


# ----------------------------------------------------------------------------- Figure 2


def run_sweep(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    config: ExperimentConfig = ExperimentConfig(),
    *,
    n_fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    l2_factors: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
    show_progress: bool = True,
) -> list:
    """The experiment while subsampling n for fixed d, and while scaling l2 (the paper's
    Figure 2). Rows: sweep ("n" or "l2"), setting, metric, method, slope, pearson, ..."""
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    runs = [("n", f) for f in n_fractions] + [("l2", f) for f in l2_factors]
    rows = []
    for kind, value in progress(runs, desc="sweep", enabled=show_progress):
        if kind == "n":
            keep = np.sort(rng.choice(len(y), size=max(2, int(round(value * len(y)))),
                                      replace=False))
            Xs, ys, sub = X[keep], y[keep], cfg
            setting = float(len(keep))
        else:
            Xs, ys = X, y
            sub = ExperimentConfig(**{**asdict(cfg), "l2": cfg.l2 * value})
            setting = sub.l2
        res = run_experiment(Xs, ys, X_test, y_test, sub, show_progress=False)
        for s in res.summary:
            if not s["method"].endswith("_linear"):
                rows.append({"sweep": kind, "setting": setting, **s})
    return rows


# ----------------------------------------------------------------------------- search


def run_search(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    config: ExperimentConfig = ExperimentConfig(),
    *,
    ks: Sequence[int] = (10, 50, 100),
    metric: str = "test_loss",
    sign: int = +1,
    show_progress: bool = True,
) -> list:
    """Search for the k training samples whose removal changes a metric most (in the direction
    ``sign``), by IF and by RIF scores, and check each chosen set by exact retraining. Rows:
    method, k, predicted, ns (Newton step of the set), actual (NaN where the set has no exact
    refit: retrain_converged False), the overlap of the IF and RIF
    choices, and ``chosen``: the set, as positions in X (ordered by decreasing score).

    For the test metrics a sample's score is its first-order effect ``<grad f, IF_i>`` (RIF_i)
    and ``predicted`` is the sum of the set's scores (additivity). The self-loss's gradient
    vanishes at theta_hat, so there a sample's score is its second-order effect
    ``0.5 delta_i^T H delta_i`` (delta_i its IF or RIF row, as the experiment's self-loss
    "linear" estimates), and ``predicted`` is that of the set's summed rows: removing samples
    can only raise the self-loss, so ``sign`` must be +1 for it."""
    cfg = config
    if metric not in PAPER_METRICS:
        raise ValueError(f"metric must be one of {', '.join(PAPER_METRICS)}, got {metric!r}")
    if metric == "self_loss" and sign < 0:
        raise ValueError(f"sign=-1 with metric='self_loss': {SELF_LOSS_ONLY_RISES}")
    rng = np.random.default_rng(cfg.seed)
    kw = dict(l2=cfg.l2, family=cfg.family, fit_intercept=cfg.fit_intercept)
    Xk = _kernel_view(X, cfg)
    theta = fit(Xk, y, tol=cfg.tol, num_threads=cfg.num_threads, **kw).theta
    A = Attribution(Xk, y, theta, num_threads=cfg.num_threads, backend=cfg.backend, **kw)
    (m,) = [q for q in _metrics_for(X, y, X_test, y_test, cfg, rng, A) if q.name == metric]
    scores = {meth: _search_scores(A, m, theta, meth) for meth in ("if", "rif")}
    chosen = {(meth, k): _removal.top_by_score(scores[meth], k, sign=sign)
              for meth in ("if", "rif") for k in ks}
    keys = list(chosen)
    sets = [chosen[key] for key in keys]
    ns = A.group_effect(sets, method="ns")
    retrained = A.retrain(sets, tol=cfg.tol, show_progress=show_progress, batch=cfg.batch)
    converged = np.asarray(retrained.converged, dtype=bool).reshape(-1)
    actual = np.where(converged, m.removal_effect(retrained.theta, theta), np.nan)  # as above
    ns_effect = m.removal_effect(theta[None, :] + ns, theta)
    rows = []
    for j, (meth, k) in enumerate(keys):
        T = chosen[(meth, k)]
        other = chosen[("rif" if meth == "if" else "if", k)]
        rows.append({"metric": metric, "method": meth, "k": int(k), "sign": int(sign),
                     "predicted": _search_prediction(A, m, theta, meth, T, scores[meth]),
                     "ns": float(ns_effect[j]), "actual": float(actual[j]),
                     "overlap_if_rif": int(np.intersect1d(T, other).size),
                     "retrain_grad_norm": float(retrained.grad_norm[j]),
                     "retrain_converged": bool(converged[j]),
                     "chosen": [int(i) for i in T]})
    return rows


#: Why a search cannot lower the self-loss (theta_hat minimises it over all samples).
SELF_LOSS_ONLY_RISES = (
    "the self-loss cannot decrease: theta_hat minimises the training objective over all "
    "samples, so removing any set can only raise it")

#: Rows of IF / RIF estimates built at once by _second_order_scores (each (block, p)).
_SCORE_BLOCK = 1024


def _search_scores(A, m, theta: np.ndarray, method: str) -> np.ndarray:
    """Each sample's predicted removal effect on metric m: first order (<grad m, row_i>), or
    for the self-loss, whose gradient vanishes at theta_hat, second order."""
    if m.name == "self_loss":
        return _second_order_scores(A, m, theta, method)
    return np.asarray(A.scores(m.gradient(theta), method=method), dtype=np.float64)


def _second_order_scores(A, m, theta: np.ndarray, method: str) -> np.ndarray:
    """m.linear_effect (0.5 delta^T H delta for the self-loss) of each sample's IF or RIF row,
    built a block of rows at a time; a singular sample's RIF row (inf) scores NaN, which
    top_by_score ranks last (the refit without it would have nothing to fit)."""
    rows = A.rescaled_influence if method == "rif" else A.influence
    out = np.empty(A.n)
    with warnings.catch_warnings():  # singular samples: inf rows, said by the inf score
        warnings.simplefilter("ignore", RuntimeWarning)
        for begin in range(0, A.n, _SCORE_BLOCK):
            idx = np.arange(begin, min(begin + _SCORE_BLOCK, A.n))
            out[idx] = m.linear_effect(np.asarray(rows(idx)), theta)
    return np.where(np.isfinite(out), out, np.nan)


def _search_prediction(A, m, theta: np.ndarray, method: str, T: np.ndarray,
                       scores: np.ndarray) -> float:
    """The method's prediction for the set T: the sum of its scores, or for the self-loss the
    second-order effect of the sum of its rows (the quadratic is not additive)."""
    if m.name == "self_loss":
        delta = np.asarray(A.group_effect([T], method=method))
        return float(np.atleast_1d(m.linear_effect(delta, theta))[0])
    return float(scores[T].sum())
