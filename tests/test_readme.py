"""The README's Python example runs as written and its numbers mean what it says."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_agrees_with_numpy():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    env: dict = {}
    exec(compile(code, str(README), "exec"), env)
    X, y, res, A, rif, v, s = (env[k] for k in ("X", "y", "res", "A", "rif", "v", "s"))
    assert res.converged
    # RIF rows and scores against a float64 NumPy reference (explicit inverse), 1e-9 relative.
    Xt = np.hstack([X, np.ones((len(y), 1))])
    z = Xt @ res.theta
    p = 1 / (1 + np.exp(-z))
    r, a = p - y, p * (1 - p)
    P = np.eye(Xt.shape[1])
    P[-1, -1] = 0
    Hinv = np.linalg.inv(Xt.T @ (a[:, None] * Xt) + 1.0 * P)
    h = a * np.einsum("ij,jk,ik->i", Xt, Hinv, Xt)
    RIF = (r[:, None] * Xt @ Hinv) / (1 - h)[:, None]
    assert np.linalg.norm(rif - RIF[[3, 17]]) <= 1e-9 * np.linalg.norm(RIF[[3, 17]])
    assert np.linalg.norm(s - RIF @ v) <= 1e-9 * np.linalg.norm(RIF @ v)
    assert env["ns"].shape == (2, X.shape[1] + 1)


def test_readme_metrics_example_runs_and_agrees_with_numpy():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    metrics_block = next(b for b in blocks if "TestLoss" in b)
    env: dict = {}
    exec(compile(blocks[0], str(README), "exec"), env)
    rng = np.random.default_rng(1)
    X_test = rng.standard_normal((300, env["X"].shape[1]))
    y_test = (X_test[:, 0] + rng.standard_normal(300) > 0).astype(float)
    env.update(X_test=X_test, y_test=y_test)
    exec(compile(metrics_block, str(README), "exec"), env)
    A, s, top = env["A"], env["s"], env["top"]
    Xt = np.hstack([X_test, np.ones((300, 1))])
    grad = Xt.T @ (1 / (1 + np.exp(-(Xt @ A.theta))) - y_test)  # of the total test loss
    want = A.rescaled_influence() @ grad
    assert np.linalg.norm(s - want) <= 1e-9 * np.linalg.norm(want)
    assert set(top.increase) == set(np.argsort(want)[-10:])
