"""rif_native.audit: every reported change is checked against an independent exact refit (a
float64 Newton solver written here), and so is the claim that the set is the shortest flipping
prefix of the search's order; targets that cannot be flipped, targets already flipped, bad
input; the rif audit command."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

import rif_native as rn
from rif_native import audit as au
from rif_native.cli import main

from conftest import logistic_refit


def _design(X):
    return np.column_stack([X, np.ones(len(X))])


_refit = logistic_refit


def _z(X, y, w, theta, j, l2=0.0):
    Z = _design(X)
    s = 1 / (1 + np.exp(-(Z @ theta)))
    H = (Z * (w * s * (1 - s))[:, None]).T @ Z + np.diag(np.r_[np.full(X.shape[1], l2), 0.0])
    return theta[j] / np.sqrt(np.linalg.inv(H)[j, j])


def _data(rng, n=400, d=10):
    X = rng.standard_normal((n, d))
    beta = rng.standard_normal(d) * 0.4
    beta[0] = 0.35  # a modest effect: flippable by a few percent of the samples
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta)))).astype(np.float64)
    return X, y


def _without(w, removed):
    w = w.copy()
    w[list(removed)] = 0.0
    return w


@pytest.mark.parametrize("weighted", [False, True])
def test_sign_flip_is_verified_and_shortest(rng, weighted):
    X, y = _data(rng)
    w = rng.integers(1, 3, size=len(y)).astype(float) if weighted else np.ones(len(y))
    theta = _refit(X, y, w)
    A = rn.Attribution(X, y, theta, sample_weight=w if weighted else None, fit_intercept=True)
    results = au.audit(A, au.coefficient(A, 0), max_fraction=0.2)
    assert set(results) == {"rif", "if"}
    for m, r in results.items():
        assert r.flipped, m
        s = np.sign(theta[0])
        ref = _refit(X, y, _without(w, r.removed))
        assert s * ref[0] <= 0, f"{m}: the reported set does not flip the sign"
        assert abs(r.value_after - s * ref[0]) <= 1e-8 * abs(theta[0])
        shorter = _refit(X, y, _without(w, r.removed[:-1]))
        assert s * shorter[0] > 0, f"{m}: a shorter prefix flips too"
        assert r.size == len(r.removed) and r.fraction == r.size / len(y)
        assert np.isclose(r.weight_fraction, w[r.removed].sum() / w.sum())
        for q in r.rounds:  # every actual value in the trail is a refit's
            assert q["converged"]


def test_significance_recomputes_the_standard_error(rng):
    X, y = _data(rng)
    w = np.ones(len(y))
    theta = _refit(X, y, w)
    A = rn.Attribution(X, y, theta, fit_intercept=True)
    z0 = abs(_z(X, y, w, theta, 0))
    threshold = 0.6 * z0  # |z| must fall by 40%
    r = au.audit(A, au.significance(A, 0, threshold=threshold), max_fraction=0.2)["rif"]
    assert r.flipped
    assert abs(r.value_before - (z0 - threshold)) <= 1e-8 * z0
    ref = _refit(X, y, _without(w, r.removed))
    z1 = abs(_z(X, y, _without(w, r.removed), ref, 0))
    assert z1 <= threshold and abs(r.value_after - (z1 - threshold)) <= 1e-7 * z0


def test_prediction_target(rng):
    X, y = _data(rng)
    theta = _refit(X, y, np.ones(len(y)))
    A = rn.Attribution(X, y, theta, fit_intercept=True)
    x = rng.standard_normal(X.shape[1]) * 0.2  # a point near the boundary
    r = au.audit(A, au.prediction(A, x), max_fraction=0.2)["rif"]
    assert r.flipped
    ref = _refit(X, y, _without(np.ones(len(y)), r.removed))
    before, after = np.r_[x, 1] @ theta, np.r_[x, 1] @ ref
    assert np.sign(after) != np.sign(before)


def test_unflippable_target_is_reported(rng):
    """A coefficient with |z| far above its threshold cannot flip by dropping 2 samples."""
    X, y = _data(rng)
    X[:, 1] *= 1.0
    y = (X[:, 1] + 0.3 * rng.standard_normal(len(y)) > 0).astype(float)
    theta = _refit(X, y, np.ones(len(y)), l2=1.0)
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    results = A.audit(au.coefficient(A, 1), max_fraction=2 / len(y))
    for r in results.values():
        assert not r.flipped and r.removed == [] and r.max_removed == 2
    assert "no set of up to 2 samples" in au.report(results)
    # the threshold of a sign is zero, said as "0", not "-0" (-1 * 0.0)
    assert theta[1] > 0 and results["rif"].flips_when() == "x2 <= 0"
    assert "it flips at x2 <= 0)" in au.report(results)


def test_bad_input(rng):
    X, y = _data(rng, n=120, d=4)
    A = rn.Attribution(X, y, _refit(X, y, np.ones(len(y))), fit_intercept=True)
    with pytest.raises(ValueError, match="unknown coefficient"):
        au.coefficient(A, "nosuch", names=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="out of range"):
        au.coefficient(A, 9)
    with pytest.raises(ValueError, match="threshold"):
        au.significance(A, 0, threshold=-1.0)
    with pytest.raises(ValueError, match="margin"):
        au.coefficient(A, 0, margin=-0.1)
    with pytest.raises(ValueError, match="max_fraction"):
        au.audit(A, au.coefficient(A, 0), max_fraction=0.0)
    z0 = abs(_z(X, y, np.ones(len(y)), A.theta, 0))
    with pytest.raises(ValueError, match="already") as info:  # already at its threshold
        au.audit(A, au.significance(A, 0, threshold=z0 + 1.0))
    # said of |z| itself (it was f = |z| - threshold, "value -1", a negative |z|)
    said = re.search(r"\(\|z\| of x1 = (\S+), flipped at \|z\| of x1 <= (\S+)\)",
                     str(info.value))
    assert said, str(info.value)
    assert float(said.group(1)) == pytest.approx(z0, rel=1e-3)
    assert float(said.group(2)) == pytest.approx(z0 + 1.0, rel=1e-5)


def test_rif_audit_command(capsys, tmp_path, rng):
    X, y = _data(rng, n=300, d=10)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    out = tmp_path / "audit"
    code = main(["audit", "--data", str(path), "--coef", "x1", "--l2", "0", "--out", str(out),
                 "--quiet", "--max-fraction", "0.3"])
    text, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads((out / "audit.json").read_text())
    assert set(payload) == {"rif", "if"}
    for name in ("audit.csv", "audit.png", "report.md"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| search | samples dropped |" in report
    assert report.count("\n| RIF |") == len(payload["rif"]["rounds"])
    assert "flips 'sign of x1'" in text or "no set of up to" in text
    code = main(["audit", "--data", str(path), "--coef", "nosuch", "--out",
                 str(tmp_path / "bad")])
    _, err = capsys.readouterr()
    assert code == 2 and "unknown coefficient" in err


def _test_loss_setup(rng):
    """Data, its fit, the Attribution, the total test loss as a metric and as a float64
    function written here."""
    X, y = _data(rng)
    Xt, yt = _data(rng, n=100)
    theta = _refit(X, y, np.ones(len(y)))
    A = rn.Attribution(X, y, theta, fit_intercept=True)
    metric = rn.metrics.TestLoss(Xt, yt, fit_intercept=True)

    def loss(t):
        z = _design(Xt) @ t
        return float(np.sum(np.logaddexp(0, z) - yt * z))

    return X, y, theta, A, metric, loss


def test_metric_threshold_target(rng):
    """Raise the total test loss past 105% of its value: verified with the refit's test loss
    computed here."""
    X, y, theta, A, metric, loss = _test_loss_setup(rng)

    threshold = 1.05 * loss(theta)
    r = au.audit(A, au.metric_threshold(metric, threshold), max_fraction=0.2)["rif"]
    assert r.flipped
    ref = _refit(X, y, _without(np.ones(len(y)), r.removed))
    assert loss(ref) >= threshold
    assert loss(_refit(X, y, _without(np.ones(len(y)), r.removed[:-1]))) < threshold


def test_rif_audit_command_other_targets(capsys, tmp_path, rng):
    X, y = _data(rng, n=300, d=10)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    code = main(["audit", "--data", str(path), "--kind", "prediction", "--point", "0", "--out",
                 str(tmp_path / "p"), "--quiet", "--max-fraction", "0.3"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "predicted class" in text
    code = main(["audit", "--data", str(path), "--kind", "test-loss", "--out",
                 str(tmp_path / "t")])
    _, err = capsys.readouterr()
    assert code == 2 and "--threshold" in err
    code = main(["audit", "--data", str(path), "--kind", "prediction", "--point", "9999",
                 "--out", str(tmp_path / "q")])
    _, err = capsys.readouterr()
    assert code == 2 and "--point" in err


def test_significance_of_least_squares_uses_the_dispersion(rng):
    """family="squared", l2 = 0: |z| is OLS's |t| (se with the Pearson dispersion). The value
    before and after the reported removal is checked against statsmodels' OLS on the samples
    kept."""
    sm = pytest.importorskip("statsmodels.api")
    n, d = 200, 4
    X = rng.standard_normal((n, d))
    t0 = 0.0
    while t0 < 1.0:  # (an estimate near 0, |t| << 1, is no significance to take away: drawn again)
        y = X @ np.array([0.18, 1.0, -0.5, 0.3]) + 0.3 + 1.5 * rng.standard_normal(n)
        t0 = abs(sm.OLS(y, _design(X)).fit().tvalues[0])
    theta = np.linalg.lstsq(_design(X), y, rcond=None)[0]
    A = rn.Attribution(X, y, theta, family="squared", fit_intercept=True)
    threshold = 0.6 * t0  # |t| must fall by 40%
    r = au.audit(A, au.significance(A, 0, threshold=threshold), max_fraction=0.2)["rif"]
    assert r.value_before + threshold == pytest.approx(t0, rel=1e-9)
    assert r.flipped
    keep = np.setdiff1d(np.arange(n), r.removed)
    t1 = abs(sm.OLS(y[keep], _design(X)[keep]).fit().tvalues[0])
    assert r.value_after + threshold == pytest.approx(t1, rel=1e-8)
    assert t1 <= threshold


def test_significance_gradient_follows_the_sign_where_it_is_taken(rng):
    """d|theta_j|/se / dtheta_j is sign(theta_j)/se at the point asked, not at theta_hat: a
    central difference at a point where theta_j has the other sign."""
    X, y = _data(rng, n=150, d=4)
    A = rn.Attribution(X, y, _refit(X, y, np.ones(len(y))), fit_intercept=True)
    tgt = au.significance(A, 0)
    t = A.theta.copy()
    t[0] = -2.0 * A.theta[0]
    h = 1e-6 * abs(t[0])
    e = np.zeros_like(t)
    e[0] = h
    fd = (tgt.value(t + e, A) - tgt.value(t - e, A)) / (2 * h)
    assert tgt.gradient(t, A)[0] == pytest.approx(fd, rel=1e-6)


def test_a_refit_that_did_not_converge_verifies_nothing(rng, monkeypatch):
    """A flip seen only at a refit that did not converge is not reported as one."""
    import dataclasses

    X, y = _data(rng)
    A = rn.Attribution(X, y, _refit(X, y, np.ones(len(y))), fit_intercept=True)
    exact = au.audit(A, au.coefficient(A, 0), max_fraction=0.2, methods=("rif",))["rif"]
    assert exact.flipped and exact.stopped == "flipped"
    retrain = rn.Attribution.retrain
    monkeypatch.setattr(rn.Attribution, "retrain", lambda self, *a, **k: dataclasses.replace(
        retrain(self, *a, **k), converged=False))
    r = au.audit(A, au.coefficient(A, 0), max_fraction=0.2, methods=("rif",))["rif"]
    assert not r.flipped and r.removed == [] and r.stopped == "not_converged"
    assert not r.rounds[-1]["converged"]
    assert "did not converge" in au.report({"rif": r})
    assert "not converged" in au.table({"rif": r})


def test_metric_threshold_is_oriented_at_each_audits_theta_hat(rng):
    """The same metric_threshold target, evaluated first where the metric is on the other side
    (far from theta_hat the test loss is huge), then audited: oriented at theta_hat, below the
    threshold, the audit raises the test loss past it."""
    X, y, theta, A, metric, loss = _test_loss_setup(rng)

    threshold = 1.03 * loss(theta)
    tgt = au.metric_threshold(metric, threshold)
    assert tgt.value(np.zeros_like(theta) + 5.0, A) > 0  # far away: above the threshold
    r = au.audit(A, tgt, max_fraction=0.2)["rif"]
    assert r.value_before == pytest.approx(threshold - loss(theta), rel=1e-9)
    assert r.flipped
    assert loss(_refit(X, y, _without(np.ones(len(y)), r.removed))) >= threshold


def test_why_the_search_stopped_is_reported(rng):
    X, y = _data(rng)
    y = (X[:, 1] + 0.3 * rng.standard_normal(len(y)) > 0).astype(float)
    A = rn.Attribution(X, y, _refit(X, y, np.ones(len(y)), l2=1.0), l2=1.0, fit_intercept=True)
    r = A.audit(au.coefficient(A, 1), max_fraction=3 / len(y), methods=("rif",))["rif"]
    assert r.stopped == "max_removed" and r.rounds[-1]["size"] == 3
    assert "after dropping 3" in au.report({"rif": r})


def test_prediction_needs_a_logistic_model(rng, tmp_path, capsys):
    X, y = _data(rng, n=120, d=4)
    A = rn.Attribution(X, y, np.zeros(5), family="squared", fit_intercept=True)
    with pytest.raises(ValueError, match="family='logistic'"):
        au.prediction(A, X[0])
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    code = main(["audit", "--data", str(path), "--family", "squared", "--kind", "prediction",
                 "--point", "0", "--out", str(tmp_path / "p")])
    _, err = capsys.readouterr()
    assert code == 2 and "--family logistic" in err
    assert not (tmp_path / "p").exists()


def test_a_removal_that_leaves_h_singular_stops_a_significance_audit_unverified(rng,
                                                                                 monkeypatch):
    """Feature 2 lives in samples 0 and 1 only, so without both H (l2 = 0) is singular: the
    refit is not attempted, and there is no standard error either at it or at the Newton step
    (inf). The search stops unverified, as the README says, where building the Attribution for
    the standard error raised NotPositiveDefiniteError out of audit()."""
    n = 60
    X = rng.standard_normal((n, 3))
    X[:, 2] = 0.0
    X[:2, 2] = [1.0, 2.0]
    y = X[:, 0] + rng.standard_normal(n)
    A = rn.Attribution(X, y, rn.fit(X, y, family="squared", fit_intercept=True).theta,
                       family="squared", fit_intercept=True)
    H = A.hessian()
    keep = np.ones(n, dtype=bool)
    keep[:2] = False
    Z = _design(X[keep])
    assert np.linalg.matrix_rank(Z.T @ Z) < H.shape[0]  # singular without samples 0 and 1
    picked = np.where(np.arange(n) < 2, -1.0, 1.0)  # the search takes samples 0 and 1 first
    monkeypatch.setattr(rn.Attribution, "scores", lambda self, g, method="rif": picked)
    with pytest.warns(Warning):  # the retrain says it was not attempted
        results = au.audit(A, au.significance(A, 0), max_fraction=0.5)
    for r in results.values():
        assert not r.flipped and r.stopped == "not_converged" and r.removed == []
        assert r.rounds[-1]["size"] == 2 and not r.rounds[-1]["converged"]
        assert np.isnan(r.rounds[-1]["actual"]) and np.isnan(r.rounds[-1]["newton_step"])
    assert "did not converge" in au.report(results)


def _strict_json(text):
    """JSON as a strict parser (a browser's, jq's) reads it: no NaN or Infinity tokens."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("kind", ["sign", "significance"])
def test_audit_json_stays_json_when_a_removal_leaves_h_singular(rng, monkeypatch, tmp_path,
                                                                 capsys, kind):
    """The same singular removal through rif audit and audit.write: the Newton step there is
    inf (and the significance's value NaN), written as null, not as the NaN / Infinity tokens
    that json.dumps writes by default and JSON parsers refuse."""
    n = 60
    X = rng.standard_normal((n, 3))
    X[:, 2] = 0.0
    X[:2, 2] = [1.0, 2.0]
    y = X[:, 0] + rng.standard_normal(n)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y, X_test=X[:5], y_test=y[:5])  # every row trains, in this order
    picked = np.where(np.arange(n) < 2, -1.0, 1.0)
    monkeypatch.setattr(rn.Attribution, "scores", lambda self, g, method="rif": picked)
    out = tmp_path / "audit"
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the command shows them on stderr
        code = main(["audit", "--data", str(path), "--family", "squared", "--l2", "0",
                     "--kind", kind, "--coef", "0", "--max-fraction", "0.5", "--out", str(out),
                     "--quiet"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "rif: warning: SingularRemovalWarning: " in err
    payload = _strict_json((out / "audit.json").read_text())
    last = payload["rif"]["rounds"][-1]
    assert payload["rif"]["stopped"] == "not_converged" and last["size"] == 2
    assert last["newton_step"] is None
    A = rn.Attribution(X, y, rn.fit(X, y, family="squared", fit_intercept=True).theta,
                       family="squared", fit_intercept=True)
    target = au.coefficient(A, 0) if kind == "sign" else au.significance(A, 0)
    with pytest.warns(Warning):
        results = au.audit(A, target, max_fraction=0.5)
    au.write(results, str(tmp_path / "api.json"))
    assert _strict_json((tmp_path / "api.json").read_text())["if"]["rounds"][-1][
        "newton_step"] is None
