"""Robustness audit on UCI Adult (census income): how few people must be dropped to flip the
sign, or the significance, of the coefficient of sex (Male) in an unpenalised logistic
regression of income > 50K on the census attributes?

Run from the repository root: ``python examples/audit_adult.py [PATH_TO_ADULT] [OUT_DIR]``
(default ``../shared/data/adult``; needs pandas). Prints the audit and writes the plots.

Model: the 30,162 training records without missing values; numeric attributes standardised;
categorical ones one-hot with the first level dropped; ``education`` (duplicated by
``education_num``) and ``fnlwgt`` (a sampling weight, not an attribute) left out; intercept.
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import rif_native as rn
from rif_native import audit as au

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
           "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
           "hours_per_week", "native_country", "income"]
NUMERIC = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


def load(folder: Path):
    df = pd.read_csv(folder / "adult.data", header=None, names=COLUMNS, skipinitialspace=True,
                     na_values="?").dropna()
    y = (df.pop("income") == ">50K").to_numpy(float)
    df = df.drop(columns=["education", "fnlwgt"])
    df[NUMERIC] = (df[NUMERIC] - df[NUMERIC].mean()) / df[NUMERIC].std()
    X = pd.get_dummies(df, drop_first=True, dtype=float)
    return X.to_numpy(), y, list(X.columns)


def main(folder: str = "../shared/data/adult", out: str = ".") -> None:
    X, y, names = load(Path(folder))
    t0 = time.perf_counter()
    theta = rn.fit(X, y, fit_intercept=True).theta
    A = rn.Attribution(X, y, theta, fit_intercept=True)
    j = names.index("sex_Male")
    se = float(np.sqrt(A.solve(np.eye(A.n_params)[j])[j]))
    print(f"n = {len(y)}, d = {X.shape[1]}; sex_Male coefficient {theta[j]:.4f}, z = "
          f"{theta[j] / se:.2f}")
    warnings.simplefilter("ignore", rn.SingularRemovalWarning)
    for kind, target in (("sign", au.coefficient(A, "sex_Male", names=names)),
                         ("significance", au.significance(A, "sex_Male", names=names))):
        t = time.perf_counter()
        results = au.audit(A, target, max_fraction=0.05)
        print(f"\n{target.name} ({time.perf_counter() - t:.1f} s):")
        print(au.report(results))
        for m, r in results.items():
            print(f"  {m}: refits checked at sizes "
                  f"{sorted(q['size'] for q in r.rounds)}")
        au.plot(results, str(Path(out) / f"audit_adult_{kind}.png"))
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
