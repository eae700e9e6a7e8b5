"""Robustness audits of multinomial models: a test point's predicted class and a total test
loss's side of a threshold, searched by RIF and IF and verified here by the float64 damped
Newton refit of test_multinomial (independent of the package's retraining); coefficient
targets refused; the rif audit command with --family multinomial."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rif_native as rn
from rif_native import audit as au
from rif_native.cli import main
from rif_native.multiclass_metrics import TestLoss
from test_multinomial import make_data, newton_fit_mn

KW = dict(l2=1.0, fit_intercept=True)


def _logits(X, theta):
    return np.c_[X, np.ones(len(X))] @ theta.T


def _test_loss(X, y, theta):
    Z = _logits(X, theta)
    top = Z.max(axis=1)
    return float(np.sum(top + np.log(np.exp(Z - top[:, None]).sum(axis=1))
                        - Z[np.arange(len(y)), y]))


def _problem(seed):
    rng = np.random.default_rng(seed)
    X, y, _, _ = make_data(rng, 200, 4, 3, fit_intercept=True, weighted=False, signal=1.0)
    theta, gn, g0 = newton_fit_mn(X, y, 3, **KW)
    assert gn <= 1e-10 * max(1.0, g0)
    return rng, X, y, theta, rn.MultinomialAttribution(X, y, theta, **KW)


def _check_verified(result, value_without):
    """The reported set flips f by the reference refit, and the one-shorter prefix of the
    search's order (known not to flip, by the bisection) does not."""
    assert result.flipped
    f = value_without(result.removed)
    assert f <= 0 and abs(f - result.value_after) <= 1e-7 * max(1.0, abs(f))
    if result.size > 1:
        assert value_without(result.removed[:-1]) > 0


def test_a_predicted_class_is_flipped_and_verified():
    rng, X, y, theta, A = _problem(3)
    Xt = rng.standard_normal((20, 4))
    Z = _logits(Xt, theta)
    top2 = np.sort(Z, axis=1)[:, -2:]
    i = int(np.argmin(top2[:, 1] - top2[:, 0]))  # the least confident point
    c = int(np.argmax(Z[i]))
    target = au.prediction(A, Xt[i])
    assert target.value(theta, A) == pytest.approx(top2[i, 1] - top2[i, 0], rel=1e-12)

    def margin_without(T):  # f: class c's logit over the largest other, at the refit
        z = _logits(Xt[i:i + 1], newton_fit_mn(X, y, 3, drop=T, **KW)[0])[0]
        return float(z[c] - np.delete(z, c).max())

    for result in A.audit(target, max_fraction=0.1).values():
        _check_verified(result, margin_without)


def test_a_test_loss_threshold_is_flipped_and_verified():
    rng, X, y, theta, A = _problem(4)
    Xt, yt = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    before = _test_loss(Xt, yt, theta)
    metric = TestLoss(Xt, yt, fit_intercept=True)
    assert metric.value(theta) == pytest.approx(before, rel=1e-12)
    target = au.metric_threshold(metric, before + 1.0)

    def below_threshold(T):  # f oriented: the loss below before + 1 (its side at theta_hat)
        return before + 1.0 - _test_loss(Xt, yt, newton_fit_mn(X, y, 3, drop=T, **KW)[0])

    for result in au.audit(A, target, max_fraction=0.1).values():
        _check_verified(result, below_threshold)


def test_coefficient_targets_are_refused():
    _, X, y, theta, A = _problem(5)
    with pytest.raises(ValueError, match="shift shared by every class row"):
        au.coefficient(A, 0)
    with pytest.raises(ValueError, match="shift shared by every class row"):
        au.significance(A, 0)


def test_the_command_audits_a_multinomial_test_loss(capsys, tmp_path):
    rng = np.random.default_rng(6)
    n = 250
    X = rng.standard_normal((n, 4))
    y = np.argmax(X @ rng.standard_normal((3, 4)).T + rng.gumbel(size=(n, 3)), axis=1)
    np.savez(tmp_path / "d.npz", X=X, y=y.astype(float))
    test = np.sort(np.random.default_rng(0).permutation(n)[:50])  # the CLI's split, seed 0
    train = np.setdiff1d(np.arange(n), test)
    theta = newton_fit_mn(X[train], y[train], 3, **KW)[0]
    before = _test_loss(X[test], y[test], theta)
    code = main(["audit", "--data", str(tmp_path / "d.npz"), "--family", "multinomial",
                 "--kind", "test-loss", "--threshold", f"{before + 1.0!r}", "--l2", "1",
                 "--seed", "0", "--out", str(tmp_path / "o"), "--quiet"])
    capsys.readouterr()
    assert code == 0
    got = json.loads((tmp_path / "o" / "audit.json").read_text())["rif"]
    assert got["flipped"]
    kept = np.ones(n, dtype=bool)
    kept[test] = False
    kept[got["removed_rows"]] = False
    refit = newton_fit_mn(X[kept], y[kept], 3, **KW)[0]
    after = _test_loss(X[test], y[test], refit)
    assert after >= before + 1.0
    code = main(["audit", "--data", str(tmp_path / "d.npz"), "--family", "multinomial",
                 "--kind", "sign", "--coef", "1", "--out", str(tmp_path / "s"), "--quiet"])
    assert code == 2 and "--kind prediction or test-loss" in capsys.readouterr().err
