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
