"""The multinomial family on X that is not one array in memory (a .npy path read block by block,
shards, float32): the same results as the in-memory path, to rounding (1e-10 of scale)."""

from __future__ import annotations

import numpy as np
import pytest

import rif_native as rn


def _problem(rng, n=240, d=7, K=4):
    X = rng.standard_normal((n, d)) + 2.0  # off-centre: the in-memory path centres, sources not
    W = rng.standard_normal((K, d))
    Z = X @ W.T
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return X, y


def _close(a, b, what):
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-10 * scale, what


@pytest.mark.parametrize("form", ["npy path", "shards", "float32 npy"])
def test_sources_equal_in_memory(tmp_path, form):
    rng = np.random.default_rng(77)
    X, y = _problem(rng)
    kw = dict(family="multinomial", l2=0.7, fit_intercept=True)
    if form == "float32 npy":
        X = X.astype(np.float32)
    if form == "shards":
        parts = [X[:100], X[100:101], X[101:]]
        source = []
        for j, part in enumerate(parts):
            np.save(tmp_path / f"part-{j}.npy", part)
            source.append(str(tmp_path / f"part-{j}.npy"))
    else:
        np.save(tmp_path / "X.npy", X)
        source = str(tmp_path / "X.npy")
    fit_mem = rn.fit(X, y, **kw)
    fit_src = rn.fit(source, y, **kw)
    _close(fit_src.theta, fit_mem.theta, "fit")
    A = rn.Attribution(X, y, fit_mem.theta, **kw)
    B = rn.Attribution(source, y, fit_mem.theta, **kw)
    _close(B.leverage, A.leverage, "leverage")
    _close(B.rescaled_influence([0, 5, 239]), A.rescaled_influence([0, 5, 239]), "RIF rows")
    D = np.random.default_rng(1).standard_normal(fit_mem.theta.shape)
    _close(B.scores(D), A.scores(D), "scores")
    sets = [[1, 2, 3], list(range(40, 60))]
    _close(B.group_effect(sets, method="ns"), A.group_effect(sets, method="ns"), "NS")
    _close(B.retrain(sets, tol=1e-12).effect, A.retrain(sets, tol=1e-12).effect, "retrain")
