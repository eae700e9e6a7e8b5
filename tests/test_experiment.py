"""The validation experiment (run_experiment, summarise, write_outputs), the poisoning experiment,
the sweep, and the `rif experiment | poisoning | sweep` commands, against independent checks.

Every effect is a removal effect f(theta_{-T}) - f(theta_hat) (DESIGN.md section 2), with
F(theta) = sum_i loss_i + l2/2 ||theta||_P^2 (a sum; intercept last, unpenalised).

Independent pieces used here:
  * refits: rif_native.fit with sample_weight 0 on the set, tol 1e-12 (a different code path
    from Attribution.retrain, which the experiment uses), and for the poisoning experiment the
    NumPy Newton reference of conftest.py;
  * metric values written out in NumPy in this file (sigmoid sums, logistic losses, F);
  * statistics from scipy.stats.pearsonr / spearmanr and a NumPy slope through the origin.

Tolerances: 'actual' vs the independent refit: |diff| <= 1e-6 |ref| + 1e-10 (the experiment
retrains to tol 1e-10, the reference to 1e-12); summary statistics: 1e-10 relative (+1e-12
absolute); poisoning 'actual' / 'if' / 'rif' vs the reference: 1e-7 relative.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

import rif_native as rn
from rif_native import experiment as E
from rif_native import removal as R
from rif_native.cli import main

from conftest import Reference, newton_fit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
L2 = 1.0


# ------------------------------------------------------------------------------ data


def _logistic_data(seed, n, d, n_test, scale=2.0):
    rng = np.random.default_rng(seed)
    beta = scale * rng.standard_normal(d)

    def draw(m):
        X = rng.standard_normal((m, d)) * 3.0 / np.sqrt(d)
        z = X @ beta / np.sqrt(d) + 0.3
        return X, (rng.random(m) < 0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float64)

    X, y = draw(n)
    X_test, y_test = draw(n_test)
    return X, y, X_test, y_test


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _z(X, theta):
    return X @ theta[:-1] + theta[-1]  # fit_intercept=True: intercept last


def _metric_value(name, theta, X_sub, y_sub, X, y, l2):
    """The paper's metrics written out independently (fit_intercept=True, logistic)."""
    if name == "test_prediction":
        return float(np.sum(_sigmoid(_z(X_sub, theta))))
    if name == "test_loss":
        z = _z(X_sub, theta)
        return float(np.sum(np.logaddexp(0.0, z) - y_sub * z))
    if name == "self_loss":
        z = _z(X, theta)
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * theta[:-1] @ theta[:-1])
    raise AssertionError(name)


# ------------------------------------------------------------------------------ the experiment


@pytest.fixture(scope="module")
def experiment_run():
    """run_experiment on n = 300, d = 60, 120 test rows (subset of 100), 3 sizes, all
    strategies; the removal sets and the test subset it drew are captured by wrapping the
    removal module's functions (the experiment looks them up there at call time)."""
    X, y, X_test, y_test = _logistic_data(7, 300, 60, 120)
    cfg = E.ExperimentConfig(l2=L2, n_sizes=3, seed=3)
    captured = {}

    def make_sets(*args, **kwargs):
        sets = real_make_sets(*args, **kwargs)
        captured["sets"] = sets
        return sets

    def test_subset(*args, **kwargs):
        sub = real_test_subset(*args, **kwargs)
        captured["subset"] = sub
        return sub

    real_make_sets, real_test_subset = R.make_sets, R.test_subset
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(R, "make_sets", make_sets)
        mp.setattr(R, "test_subset", test_subset)
        res = E.run_experiment(X, y, X_test, y_test, cfg, name="synthetic", show_progress=False)
    return dict(res=res, X=X, y=y, X_test=X_test, y_test=y_test, cfg=cfg, **captured)


def test_experiment_rows_shape(experiment_run):
    """One row per (set, metric) with the documented keys; every strategy and metric appears;
    sizes lie in [0.1%, 5%] of n (at least 1); rows agree with the captured sets."""
    res, sets, n = experiment_run["res"], experiment_run["sets"], 300
    assert res.n == n and res.d == 60 and res.name == "synthetic"
    keys = {"set_id", "strategy", "size", "metric", "actual", "if", "rif", "ns", "if_linear",
            "rif_linear", "ns_linear", "retrain_grad_norm", "seconds"}
    assert len(res.rows) == len(sets) * 3
    for row in res.rows:
        assert keys <= set(row), keys - set(row)
        s = sets[row["set_id"]]
        assert row["strategy"] == s.strategy and row["size"] == s.size == len(s.indices)
        assert max(1, math.floor(0.001 * n)) <= row["size"] <= math.ceil(0.05 * n)
        assert all(math.isfinite(row[k]) for k in keys - {"set_id", "strategy", "size", "metric"})
        assert row["retrain_grad_norm"] >= 0 and row["seconds"] >= 0
    assert {r["metric"] for r in res.rows} == set(E.PAPER_METRICS)
    assert {r["strategy"] for r in res.rows} == set(R.STRATEGIES)
    sizes = sorted({r["size"] for r in res.rows})
    assert 1 < len(sizes) <= 3 and sizes[0] >= 1 and sizes[-1] == 15  # 5% of 300
    assert res.fit_info["converged"]
    for stage in ("training", "hessian", "cholesky", "leverage", "influence", "estimates",
                  "retrain"):
        assert res.runtime[stage] >= 0


def test_actual_equals_independent_refit(experiment_run):
    """Every row's 'actual' equals f(theta_{-T}) - f(theta_hat), with theta_{-T} from
    rif_native.fit (sample_weight 0 on T, tol 1e-12) and f written out in NumPy here.
    Also: the NS/IF/RIF columns are f(theta_hat + estimate) - f(theta_hat) for the
    Attribution's group_effect, and the self-loss effect is >= 0 (theta_hat minimises F)."""
    run = experiment_run
    X, y, X_test, y_test, res = run["X"], run["y"], run["X_test"], run["y_test"], run["res"]
    sub = run["subset"]
    assert sub.size == 100 and np.unique(sub).size == 100
    X_sub, y_sub = X_test[sub], y_test[sub]
    kw = dict(l2=L2, family="logistic", fit_intercept=True)
    theta_hat = rn.fit(X, y, tol=1e-12, **kw).theta
    A = rn.Attribution(X, y, theta_hat, **kw)
    by_set = {}
    for row in res.rows:
        by_set.setdefault(row["set_id"], {})[row["metric"]] = row
    checked = 0
    for set_id, rows in by_set.items():
        T = run["sets"][set_id].indices
        w = np.ones(X.shape[0])
        w[T] = 0.0
        theta_T = rn.fit(X, y, sample_weight=w, tol=1e-12, theta0=theta_hat, **kw).theta
        est = {m: A.group_effect(T, method=m) for m in ("if", "rif", "ns")}
        for name, row in rows.items():
            f = lambda th: _metric_value(name, th, X_sub, y_sub, X, y, L2)  # noqa: E731
            ref = f(theta_T) - f(theta_hat)
            assert abs(row["actual"] - ref) <= 1e-6 * abs(ref) + 1e-10, (
                f"set {set_id} ({row['strategy']}, size {row['size']}) {name}: "
                f"actual {row['actual']!r} vs independent {ref!r}")
            for m, delta in est.items():
                pred = f(theta_hat + delta) - f(theta_hat)
                assert abs(row[m] - pred) <= 1e-6 * abs(pred) + 1e-10, (set_id, name, m)
            if name == "self_loss":
                assert row["actual"] > 0
            checked += 1
    assert checked == len(res.rows)


def test_summary_matches_scipy(experiment_run):
    """summary rows: slope through the origin (NumPy here), Pearson and Spearman
    (scipy.stats), median relative error and n_sets, per metric and method (incl. _linear)."""
    res = experiment_run["res"]
    methods = ("if", "rif", "ns", "if_linear", "rif_linear", "ns_linear")
    assert {(s["metric"], s["method"]) for s in res.summary} == {
        (m, k) for m in E.PAPER_METRICS for k in methods}
    again = E.summarise(res.rows, "synthetic")
    assert again == res.summary
    for s in res.summary:
        assert s["dataset"] == "synthetic"
        rows = [r for r in res.rows if r["metric"] == s["metric"]]
        a = np.array([r["actual"] for r in rows])
        p = np.array([r[s["method"]] for r in rows])
        ok = np.isfinite(a) & np.isfinite(p)
        a, p = a[ok], p[ok]
        tag = (s["metric"], s["method"])
        assert s["n_sets"] == a.size == len(experiment_run["sets"]), tag
        assert s["slope"] == pytest.approx(float(a @ p / (a @ a)), rel=1e-10, abs=1e-12), tag
        assert s["pearson"] == pytest.approx(scipy.stats.pearsonr(a, p)[0], rel=1e-10,
                                             abs=1e-12), tag
        assert s["spearman"] == pytest.approx(scipy.stats.spearmanr(a, p)[0], rel=1e-10,
                                              abs=1e-12), tag
        nz = a != 0
        mre = float(np.median(np.abs(p[nz] - a[nz]) / np.abs(a[nz])))
        assert s["median_rel_error"] == pytest.approx(mre, rel=1e-10, abs=1e-12), tag


def test_ns_slope_closer_to_one_than_if(experiment_run):
    """On this high-dimensional problem (d/n = 0.2) IF underestimates; NS is nearly exact:
    |slope_NS - 1| < |slope_IF - 1| for every metric, and RIF sits in between."""
    slope = {(s["metric"], s["method"]): s["slope"] for s in experiment_run["res"].summary}
    for m in E.PAPER_METRICS:
        s_if, s_rif, s_ns = slope[m, "if"], slope[m, "rif"], slope[m, "ns"]
        assert abs(s_ns - 1) < abs(s_if - 1), (m, s_if, s_ns)
        assert abs(s_rif - 1) < abs(s_if - 1), (m, s_if, s_rif)
        assert 0 < s_if < 1, (m, s_if)  # the classic underestimate


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000, path


def _check_pdf(path: Path) -> None:
    data = path.read_bytes()
    assert data[:5] == b"%PDF-" and b"%%EOF" in data[-64:], path


def _read_csv(path: Path) -> list:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_write_outputs(experiment_run, tmp_path):
    """write_outputs creates estimates.csv/json, summary.csv/json, runtime.json,
    figure1.png/pdf and report.md, all parseable and consistent with the result."""
    res = experiment_run["res"]
    out = tmp_path / "new" / "folder"  # created if missing
    files = E.write_outputs(res, out)
    names = {"estimates.csv", "estimates.json", "summary.csv", "summary.json", "runtime.json",
             "figure1.png", "figure1.pdf", "report.md"}
    assert {Path(f).name for f in files} == names
    for name in names:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    est_csv = _read_csv(out / "estimates.csv")
    est_json = json.loads((out / "estimates.json").read_text())
    assert len(est_csv) == len(est_json) == len(res.rows)
    for got_c, got_j, row in zip(est_csv, est_json, res.rows):
        assert set(got_c) == set(row) == set(got_j)
        assert got_c["strategy"] == got_j["strategy"] == row["strategy"]
        assert int(got_c["size"]) == got_j["size"] == row["size"]
        for k in ("actual", "if", "rif", "ns", "ns_linear"):
            assert float(got_c[k]) == got_j[k] == row[k]  # repr round trip: exact
    sum_csv = _read_csv(out / "summary.csv")
    sum_json = json.loads((out / "summary.json").read_text())
    assert len(sum_csv) == len(sum_json) == len(res.summary)
    for got_c, got_j, s in zip(sum_csv, sum_json, res.summary):
        assert got_c["metric"] == got_j["metric"] == s["metric"]
        assert got_c["method"] == got_j["method"] == s["method"]
        assert float(got_c["slope"]) == got_j["slope"] == s["slope"]
        assert int(got_c["n_sets"]) == got_j["n_sets"] == s["n_sets"]
    runtime = json.loads((out / "runtime.json").read_text())
    assert runtime == pytest.approx(res.runtime)
    _check_png(out / "figure1.png")
    _check_pdf(out / "figure1.pdf")
    report = (out / "report.md").read_text()
    assert report.startswith("# Removal effects on synthetic")
    assert "n = 300" in report and "d = 60" in report and "figure1.png" in report
    for m in E.PAPER_METRICS:
        assert f"| {m} | ns |" in report and f"| {m} | ns_linear |" in report


def test_write_outputs_without_penalty(experiment_run, tmp_path):
    res = experiment_run["res"]
    unpenalised = dataclasses.replace(res, config=dataclasses.replace(res.config, l2=0.0))
    E.write_outputs(unpenalised, tmp_path / "l2zero")
    assert "l2 = 0" in (tmp_path / "l2zero" / "report.md").read_text()


def test_jsonable_non_finite_becomes_null(tmp_path):
    """NaN / inf in a table (an inf RIF of a singular removal) are written as JSON null, so the
    files stay strict JSON."""
    rows = [{"a": 1.0, "b": float("nan"), "c": float("inf"), "d": np.float64(2.5)}]
    E.write_table(tmp_path / "t", rows)
    text = (tmp_path / "t.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}")) == [
        {"a": 1.0, "b": None, "c": None, "d": 2.5}]


# ------------------------------------------------------------------------------ poisoning


@pytest.fixture(scope="module")
def poisoning_run():
    X, y, X_test, y_test = _logistic_data(11, 150, 40, 40)
    cfg = E.ExperimentConfig(l2=L2, seed=5)
    rows = E.run_poisoning(X, y, X_test, y_test, cfg, n_points=8, show_progress=False)
    return dict(rows=rows, X=X, y=y, X_test=X_test, y_test=y_test)


def test_poisoning_rows_against_reference(poisoning_run):
    """For every poisoned point t: 'actual' = logit(theta_hat) - logit(theta_poisoned), both
    refitted by the NumPy Newton reference (poisoned: the test point appended with its label
    flipped); 'if' / 'rif' / 'leverage' equal the dense reference at the poisoned optimum for
    the appended sample (1e-7 relative)."""
    run = poisoning_run
    X, y, X_test, y_test, rows = run["X"], run["y"], run["X_test"], run["y_test"], run["rows"]
    assert len(rows) == 8 and len({r["point"] for r in rows}) == 8
    kw = dict(l2=L2, family="logistic", fit_intercept=True)
    theta_hat, _ = newton_fit(X, y, **kw)
    n = X.shape[0]
    for row in rows[:3]:
        t = row["point"]
        assert row["label"] == y_test[t] and row["poison_label"] == 1.0 - y_test[t]
        Xp = np.vstack([X, X_test[t]])
        yp = np.append(y, 1.0 - y_test[t])
        theta_p, _ = newton_fit(Xp, yp, theta0=theta_hat, **kw)
        direction = np.append(X_test[t], 1.0)
        actual = direction @ theta_hat - direction @ theta_p
        assert row["actual"] == pytest.approx(actual, rel=1e-7, abs=1e-12), t
        ref = Reference(Xp, yp, theta_p, **kw)
        assert row["if"] == pytest.approx(ref.IF[n] @ direction, rel=1e-7), t
        assert row["rif"] == pytest.approx(ref.RIF[n] @ direction, rel=1e-7), t
        assert row["leverage"] == pytest.approx(ref.h[n], rel=1e-7), t
        # removing a flipped label moves the logit back towards the true label
        assert np.sign(row["actual"]) == (1.0 if y_test[t] == 1 else -1.0)


def test_poisoning_rif_beats_if(poisoning_run):
    """RIF is closer to the actual change than IF for most points (here: all but at most one),
    and the RIF / IF ratio is the rescaling 1 / (1 - h) of the poison."""
    rows = poisoning_run["rows"]
    better = sum(abs(r["rif"] - r["actual"]) < abs(r["if"] - r["actual"]) for r in rows)
    assert better >= len(rows) - 1, [(r["actual"], r["if"], r["rif"]) for r in rows]
    for r in rows:
        assert r["rif"] == pytest.approx(r["if"] / (1.0 - r["leverage"]), rel=1e-9)


def test_poisoning_needs_logistic():
    X, y, X_test, y_test = _logistic_data(1, 40, 5, 10)
    with pytest.raises(ValueError, match="logistic"):
        E.run_poisoning(X, y, X_test, y_test, E.ExperimentConfig(family="poisson"),
                        n_points=2, show_progress=False)


# ------------------------------------------------------------------------------ sweep


def test_run_sweep_rows():
    """run_sweep: one row per (run, metric, method), sweep in {"n", "l2"}, settings = the
    subsample sizes and the scaled penalties, no linear variants; finite slopes."""
    X, y, X_test, y_test = _logistic_data(13, 160, 30, 50)
    cfg = E.ExperimentConfig(l2=L2, n_sizes=2, seed=2,
                             strategies=("random", "l2_cluster", "top_if_test_loss_pos"))
    rows = E.run_sweep(X, y, X_test, y_test, cfg, n_fractions=(0.5, 1.0),
                       l2_factors=(1.0, 10.0), show_progress=False)
    assert {r["sweep"] for r in rows} == {"n", "l2"}
    assert sorted({r["setting"] for r in rows if r["sweep"] == "n"}) == [80.0, 160.0]
    assert sorted({r["setting"] for r in rows if r["sweep"] == "l2"}) == pytest.approx(
        [L2, 10 * L2])
    assert {r["method"] for r in rows} == {"if", "rif", "ns"}
    assert {r["metric"] for r in rows} == set(E.PAPER_METRICS)
    assert len(rows) == 4 * 3 * 3
    for r in rows:
        assert {"slope", "pearson", "spearman", "median_rel_error", "n_sets"} <= set(r)
        assert math.isfinite(r["slope"]) and r["n_sets"] > 0


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    X, y, X_test, y_test = _logistic_data(17, 200, 30, 60)
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    np.savez(path, X=X, y=y, X_test=X_test, y_test=y_test)
    return path


def _ok(capsys, argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, f"exit {code}; stderr: {out.err}"
    assert out.err == "", out.err
    return out.out


def test_cli_experiment(npz_path, tmp_path, capsys):
    out_dir = tmp_path / "exp"
    stdout = _ok(capsys, ["experiment", "--data", npz_path, "--out", out_dir, "--sizes", "2",
                          "--l2", "1", "--quiet"])
    assert "wrote" in stdout and "| metric | method |" in stdout
    for name in ("estimates.csv", "estimates.json", "summary.csv", "summary.json",
                 "runtime.json", "figure1.png", "figure1.pdf", "report.md", "config.json"):
        assert (out_dir / name).is_file(), name
    rows = _read_csv(out_dir / "estimates.csv")
    assert rows == [{k: str(v) for k, v in r.items()}
                    for r in json.loads((out_dir / "estimates.json").read_text())]
    assert {r["strategy"] for r in rows} == set(R.STRATEGIES)
    sizes = {int(r["size"]) for r in rows}
    assert len(sizes) == 2 and all(1 <= s <= 10 for s in sizes)  # 0.1% .. 5% of n = 200
    assert all(math.isfinite(float(r["actual"])) for r in rows)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert {s["method"] for s in summary} >= {"if", "rif", "ns"}
    config = json.loads((out_dir / "config.json").read_text())
    assert config["command"] == "experiment" and config["n_sizes"] == 2 and config["l2"] == 1.0
    assert set(json.loads((out_dir / "runtime.json").read_text())) >= {"training", "retrain"}
    _check_png(out_dir / "figure1.png")
    _check_pdf(out_dir / "figure1.pdf")
    assert (out_dir / "report.md").read_text().startswith("# Removal effects on toy")


def test_cli_poisoning(npz_path, tmp_path, capsys):
    out_dir = tmp_path / "poi"
    stdout = _ok(capsys, ["poisoning", "--data", npz_path, "--out", out_dir, "--points", "3",
                          "--l2", "1", "--quiet"])
    assert "own_logit" in stdout
    for name in ("poisoning.csv", "poisoning.json", "figure3.png", "figure3.pdf",
                 "summary.csv", "summary.json"):
        assert (out_dir / name).is_file(), name
    rows = _read_csv(out_dir / "poisoning.csv")
    assert len(rows) == 3 == len(json.loads((out_dir / "poisoning.json").read_text()))
    assert {"point", "actual", "if", "rif", "leverage"} <= set(rows[0])
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [s["method"] for s in summary] == ["if", "rif"]
    _check_png(out_dir / "figure3.png")
    _check_pdf(out_dir / "figure3.pdf")


def test_cli_sweep(npz_path, tmp_path, capsys):
    out_dir = tmp_path / "swp"
    stdout = _ok(capsys, ["sweep", "--data", npz_path, "--out", out_dir, "--sizes", "2",
                          "--n-fractions", "0.5,1", "--l2-factors", "1,10", "--l2", "1",
                          "--quiet"])
    assert "sweep over n" in stdout and "sweep over l2" in stdout
    for name in ("sweep.csv", "sweep.json", "figure2.png", "figure2.pdf"):
        assert (out_dir / name).is_file(), name
    rows = json.loads((out_dir / "sweep.json").read_text())
    assert len(_read_csv(out_dir / "sweep.csv")) == len(rows) == 4 * 3 * 3
    assert {r["sweep"] for r in rows} == {"n", "l2"}
    assert sorted({r["setting"] for r in rows if r["sweep"] == "n"}) == [100.0, 200.0]
    assert sorted({r["setting"] for r in rows if r["sweep"] == "l2"}) == [1.0, 10.0]
    _check_png(out_dir / "figure2.png")
    _check_pdf(out_dir / "figure2.pdf")


def _fails(capsys, argv, pattern):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 2, f"exit {code}; stdout {out.out!r}; stderr {out.err!r}"
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("rif: error: "), lines[0]
    assert pattern in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["experiment", "poisoning", "sweep"])
def test_cli_missing_data_file(command, tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    _fails(capsys, [command, "--data", missing, "--out", tmp_path / "o", "--quiet"],
           "not found")


@pytest.mark.parametrize("command", ["experiment", "poisoning", "sweep"])
def test_cli_out_is_a_file(command, npz_path, tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    _fails(capsys, [command, "--data", npz_path, "--out", target, "--quiet"],
           "not a folder")
    assert target.read_text() == "keep me"


def test_cli_poisoning_needs_logistic(npz_path, tmp_path, capsys):
    out_dir = tmp_path / "p"
    _fails(capsys, ["poisoning", "--data", npz_path, "--out", out_dir, "--family", "poisson",
                    "--quiet"], "logistic")
    assert not out_dir.exists()  # refused before anything is written


@pytest.mark.parametrize("argv, pattern", [
    (["sweep", "--n-fractions", "0.5,1.5"], "fractions in (0, 1]"),
    (["sweep", "--l2-factors", "1,-2"], "> 0"),
    (["experiment", "--sizes", "0"], "positive integer"),
    (["experiment", "--strategies", "bogus"], "invalid choice"),
])
def test_cli_bad_options(argv, pattern, npz_path, tmp_path, capsys):
    _fails(capsys, [*argv, "--data", npz_path, "--out", tmp_path / "o", "--quiet"], pattern)


# ------------------------------------------------------------------------------ search


def test_run_search_checks_each_chosen_set_by_retraining():
    X, y, X_test, y_test = _logistic_data(7, 300, 60, 100)
    cfg = E.ExperimentConfig(l2=1.0, test_subset=40)
    rows = E.run_search(X, y, X_test, y_test, cfg, ks=(3, 12), metric="test_loss",
                        show_progress=False)
    assert [(r["method"], r["k"]) for r in rows] == [("if", 3), ("if", 12), ("rif", 3),
                                                     ("rif", 12)]
    # Recompute the RIF k = 12 row independently: its set, scores and the actual effect.
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True, tol=1e-12).theta
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    losses = np.logaddexp(0.0, _z(X_test, theta)) - y_test * _z(X_test, theta)
    sub = R.test_subset(losses, 40, np.random.default_rng(cfg.seed))
    Xs, ys = X_test[sub], y_test[sub]
    r_sub = _sigmoid(_z(Xs, theta)) - ys
    grad = np.r_[Xs.T @ r_sub, r_sub.sum()]
    scores = A.scores(grad, method="rif")
    T = np.argsort(-scores, kind="stable")[:12]
    row = rows[3]
    assert row["predicted"] == pytest.approx(scores[T].sum(), rel=1e-9)
    w = np.ones(len(y))
    w[T] = 0.0
    refit = rn.fit(X, y, l2=1.0, fit_intercept=True, sample_weight=w, tol=1e-12).theta
    actual = _metric_value("test_loss", refit, Xs, ys, X, y, 1.0) - \
        _metric_value("test_loss", theta, Xs, ys, X, y, 1.0)
    assert row["actual"] == pytest.approx(actual, rel=1e-6, abs=1e-10)
    assert row["actual"] > 0  # removing the top-scored samples does raise the test loss
    assert 0 <= row["overlap_if_rif"] <= 12


def test_cli_search(npz_path, tmp_path, capsys):
    out_dir = tmp_path / "search"
    stdout = _ok(capsys, ["search", "--data", npz_path, "--out", out_dir, "--k", "2,5",
                          "--l2", "1", "--quiet"])
    assert "| rif | 5 |" in stdout
    rows = json.loads((out_dir / "search.json").read_text())
    assert len(rows) == 4 and {r["method"] for r in rows} == {"if", "rif"}
    assert len(_read_csv(out_dir / "search.csv")) == 4
    assert main(["search", "--data", str(npz_path), "--k", "100000", "--quiet"]) == 2
    assert "larger than" in capsys.readouterr().err


def test_a_bag_of_words_is_read_sparsely(monkeypatch):
    """The SMS bag of words (0.8% nonzero) runs the fit and the attribution on its nonzeros
    (said in the log); every row of the result equals the dense run's to 1e-8 (relative to the
    effects' scale), since only the order of additions differs. Both fits take Newton steps:
    the dense one would start with L-BFGS steps (p >= 256), which land elsewhere within the
    tolerance, so the effects would differ by what that tolerance allows, not by rounding."""
    import functools

    from rif_native import datasets, sources

    monkeypatch.setattr(E, "fit", functools.partial(E.fit, solver="newton"))

    D = datasets.load_sms_spam(max_features=300)
    X, y = D.X[:1200], D.y[:1200]
    X_test, y_test = D.X[1200:1500], D.y[1200:1500]
    cfg = E.ExperimentConfig(n_sizes=2, num_threads=1)
    said = []
    sparse = E.run_experiment(X, y, X_test, y_test, cfg, show_progress=False, log=said.append)
    assert any("nonzeros only" in s for s in said), said
    monkeypatch.setattr(sources, "SPARSE_DENSITY", 0.0)
    said.clear()
    dense = E.run_experiment(X, y, X_test, y_test, cfg, show_progress=False, log=said.append)
    assert not any("nonzeros only" in s for s in said)
    assert len(sparse.rows) == len(dense.rows) > 0
    for a, b in zip(sparse.rows, dense.rows):
        for key in ("actual", "if", "rif", "ns"):
            scale = max(abs(b["actual"]), abs(b["ns"]), 1e-12)
            assert abs(a[key] - b[key]) <= 1e-8 * scale, (key, a, b)


def test_a_set_without_an_exact_refit_is_no_actual_effect(monkeypatch):
    """A removal set holding every sample of class 1 leaves labels of one kind: the intercept
    runs to infinity, there is no refit to measure (retrain says converged False), so its
    'actual' is NaN and the agreement is over the other sets only; it was the refit's stopping
    point, which dragged the slopes of a small run (rif sweep at n = 5) towards 0. Same for
    run_search's sets."""
    X, y, X_test, y_test = _logistic_data(11, 40, 3, 30)
    ones = np.flatnonzero(y == 1)
    sets = [R.RemovalSet(ones, "custom", ones.size), R.RemovalSet(np.array([0, 1]), "custom", 2),
            R.RemovalSet(np.array([2, 5, 7]), "custom", 3)]
    monkeypatch.setattr(R, "make_sets", lambda *a, **k: sets)
    cfg = E.ExperimentConfig(l2=L2, n_sizes=1, seed=0)
    with pytest.warns(rn.ConvergenceWarning):
        res = E.run_experiment(X, y, X_test, y_test, cfg, show_progress=False)
    theta = rn.fit(X, y, l2=L2, fit_intercept=True, tol=1e-12).theta
    for row in res.rows:
        if row["set_id"] == 0:
            assert math.isnan(row["actual"]) and row["retrain_converged"] is False
            continue
        assert row["retrain_converged"] is True
        w = np.ones(len(y))
        w[sets[row["set_id"]].indices] = 0.0
        ref = rn.fit(X, y, l2=L2, fit_intercept=True, sample_weight=w, tol=1e-12).theta
        if row["metric"] == "test_loss":  # the experiment's subset is all 30 test points here
            expected = (_metric_value("test_loss", ref, X_test, y_test, X, y, L2)
                        - _metric_value("test_loss", theta, X_test, y_test, X, y, L2))
            assert abs(row["actual"] - expected) <= 1e-6 * abs(expected) + 1e-10
    for s in res.summary:
        sub = [r for r in res.rows if r["metric"] == s["metric"] and r["set_id"] > 0]
        a = np.array([r["actual"] for r in sub])
        p = np.array([r[s["method"]] for r in sub])
        assert s["n_sets"] == 2
        assert s["slope"] == pytest.approx(float(a @ p / (a @ a)), rel=1e-10)
    monkeypatch.setattr(R, "top_by_score", lambda scores, k, sign=1: ones[:k])
    with pytest.warns(rn.ConvergenceWarning):
        rows = E.run_search(X, y, X_test, y_test, cfg, ks=(ones.size, 2), show_progress=False)
    for row in rows:
        whole = row["k"] == ones.size
        assert row["retrain_converged"] is not whole and math.isnan(row["actual"]) is whole


def test_outputs_without_any_exact_refit(monkeypatch, tmp_path):
    """Every set leaves one kind of label: every actual is NaN. The tables and the report are
    written and say so; Figure 1, with nothing to plot, is left out (it raised, and the run
    failed after all its work)."""
    X, y, X_test, y_test = _logistic_data(12, 40, 3, 30)
    ones = np.flatnonzero(y == 1)
    sets = [R.RemovalSet(ones, "custom", ones.size),
            R.RemovalSet(np.flatnonzero(y == 0), "custom", int(np.count_nonzero(y == 0)))]
    monkeypatch.setattr(R, "make_sets", lambda *a, **k: sets)
    cfg = E.ExperimentConfig(l2=L2, n_sizes=1, seed=0)
    with pytest.warns(rn.ConvergenceWarning):
        res = E.run_experiment(X, y, X_test, y_test, cfg, show_progress=False)
    assert res.rows and all(math.isnan(r["actual"]) for r in res.rows)
    files = E.write_outputs(res, tmp_path / "o")
    assert not any(f.name.startswith("figure1") for f in files)
    assert not list((tmp_path / "o").glob("figure1*"))
    assert "no removal set has an exact refit" in (tmp_path / "o" / "report.md").read_text()
    assert (tmp_path / "o" / "estimates.csv").exists()
