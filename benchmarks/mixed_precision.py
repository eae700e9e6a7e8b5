"""How accurate ``precision="mixed"`` is: its leverages and RIF answers against the float64 path
on the same float32 X, over a range of conditioning (the issue's l2 from 1e-3 to 10, n/p from
0.5 to 20), on Gaussian features and on two real, embedding-like feature sets.

    python benchmarks/mixed_precision.py [--p 256] [--rows 200]

Every case fits theta at its l2 (float64 Newton, so the residuals are an optimum's), builds the
float64 and the mixed Attribution on the same float32 X, and reports:

* ``cond(H)``: the Hessian's condition number (float64, from its eigenvalues);
* ``RIF row``: the largest ||RIF_i(mixed) - RIF_i|| / ||RIF_i|| over ``--rows`` samples (the
  ones of largest leverage and a random rest);
* ``RIF score``: the largest |s_i(mixed) - s_i| / max |s| for scores on one random direction;
* ``1/(1-h)``: the largest relative error of the rescale factor, which carries the leverage's
  error (largest where h is near 1).

The mixed path is the primal one; n/p = 0.5 forces it (``solver="primal"``).
"""

import argparse
import sys

import numpy as np

import rif_native as rn
import rif_native.datasets  # noqa: F401  (rn.datasets)
from rif_native import benchmark as rb

L2S = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
RATIOS = (0.5, 1.0, 2.0, 5.0, 20.0)


def standardised(X: np.ndarray) -> np.ndarray:
    X = X - X.mean(axis=0)
    sd = X.std(axis=0)
    return (X / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def gaussian(n: int, p: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    w = rng.standard_normal(p) / np.sqrt(p) * 2
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ w))).astype(np.float64)
    return X, y


def digits(n: int, p: int, seed: int):
    """The bundled handwritten digits (1797 images) in p random Fourier features: dense,
    correlated, with a decaying spectrum; label: the digit is even. Samples drawn with
    replacement past 1797."""
    ds = rn.datasets.load_digits(n_features=p, seed=seed)
    rng = np.random.default_rng(seed)
    idx = rng.choice(ds.n_samples, n, replace=n > ds.n_samples)
    even = (np.asarray(ds.y) % 2 == 0).astype(np.float64)
    return standardised(np.asarray(ds.X)[idx]), even[idx]


def sms_lsa(n: int, p: int, seed: int):
    """The bundled SMS spam messages as a p-dimensional LSA embedding (the top p right singular
    vectors of the bag of words), the kind of frozen text features users attribute."""
    ds = rn.datasets.load_sms_spam(max_features=4 * p)
    B = np.asarray(ds.X, dtype=np.float64)
    B = np.log1p(B)
    _, _, Vt = np.linalg.svd(B - B.mean(axis=0), full_matrices=False)
    E = B @ Vt[:p].T
    rng = np.random.default_rng(seed)
    idx = rng.choice(E.shape[0], n, replace=n > E.shape[0])
    return standardised(E[idx]), np.asarray(ds.y, dtype=np.float64)[idx]


DATA = {"Gaussian": gaussian, "digits RFF": digits, "SMS LSA": sms_lsa}


def case(X: np.ndarray, y: np.ndarray, l2: float, rows: int, seed: int) -> dict:
    theta = rn.fit(X, y, l2=l2, fit_intercept=True, max_iter=200).theta
    kw = dict(l2=l2, fit_intercept=True, solver="primal", num_threads=2)
    A = rn.Attribution(X, y, theta, **kw)
    M = rn.Attribution(X, y, theta, precision="mixed", **kw)
    assert M.precision == "mixed"
    rng = np.random.default_rng(seed)
    h = A.leverage
    top = np.argsort(h)[-rows // 2:]
    idx = np.unique(np.r_[top, rng.choice(len(y), rows // 2, replace=False)])
    R, Rm = A.rescaled_influence(idx), M.rescaled_influence(idx)
    norms = np.linalg.norm(R, axis=1)
    row_err = np.max(np.linalg.norm(Rm - R, axis=1) / np.where(norms > 0, norms, 1))
    v = rng.standard_normal(X.shape[1] + 1)
    s, sm = A.scores(v), M.scores(v)
    eig = np.linalg.eigvalsh(A.hessian())
    rescale = 1 / (1 - h)
    return {"cond": eig[-1] / eig[0], "row": row_err,
            "score": np.max(np.abs(sm - s)) / np.max(np.abs(s)),
            "rescale": np.max(np.abs(1 / (1 - M.leverage) - rescale) / rescale),
            "hmax": float(h.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=256, help="features (default 256)")
    parser.add_argument("--rows", type=int, default=200, help="RIF rows compared per case")
    args = parser.parse_args()
    print(f"Machine: {rb.machine()}; p = {args.p} features + intercept, float32 X")
    print("| data | l2 | n/p | cond(H) | max h | RIF row | RIF score | 1/(1-h) |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for name, make in DATA.items():
        for ratio in RATIOS:
            X, y = make(int(ratio * args.p), args.p, seed=1)
            for l2 in L2S:
                r = case(X, y, l2, args.rows, seed=2)
                worst = max(worst, r["row"])
                print(f"| {name} | {l2:g} | {ratio:g} | {r['cond']:.1e} | {r['hmax']:.3f} | "
                      f"{r['row']:.1e} | {r['score']:.1e} | {r['rescale']:.1e} |")
                sys.stdout.flush()
    print(f"\nLargest RIF row error: {worst:.1e}")


if __name__ == "__main__":
    main()
