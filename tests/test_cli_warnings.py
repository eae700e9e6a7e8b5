"""The rif command's warnings: one line each (`rif: warning: Category: message`, not Python's
file, line and source line), and the samples a warning names, which count the training
samples, also named as rows of the data set (as the command's tables and files name them; the
two differ once the data are split)."""

from __future__ import annotations

import re

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from rif_native.cli import main  # noqa: E402


def _quasi_separated_table(path, n=400, seed=0):
    """A rare category whose samples are all positive: with l2 = 0, quasi-complete separation
    (the intercept and the other features overlap)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.integers(18, 90, n),
                       "colour": rng.choice(["red", "green", "blue", "violet"], n,
                                            p=[0.4, 0.3, 0.27, 0.03]),
                       "income": rng.normal(5.0, 1.0, n).round(3)})
    logit = (df["age"] - 50) / 10 + (df["colour"] == "red") - 0.5 * df["income"] + 2.5
    df["outcome"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    df.loc[df["colour"] == "violet", "outcome"] = "yes"
    df.to_csv(path, index=False)
    return df


def _named_rows(err):
    found = re.search(r"as rows of the data set: ([0-9, ]+)", err)
    assert found, err
    return [int(v) for v in found.group(1).split(", ")]


@pytest.mark.filterwarnings("always")
@pytest.mark.parametrize("command", ["audit", "attribute", "search"])
def test_warnings_name_rows_of_the_data_set(tmp_path, capsys, command):
    df = _quasi_separated_table(tmp_path / "t.csv")
    extra = {"audit": ["--coef", "colour=red", "--max-fraction", "0.1"], "attribute": [],
             "search": ["--k", "3"]}[command]
    code = main([command, "--data", str(tmp_path / "t.csv"), "--label", "outcome", "--one-hot",
                 "--l2", "0", "--quiet", "--out", str(tmp_path / "o"), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "fit has no finite answer" in ln]
    assert len(lines) == 1 and lines[0].startswith("rif: warning: ConvergenceWarning: ")
    assert "quasi-completely separated" in lines[0]
    assert ".py:" not in err  # no Python file and line
    violet = set(np.flatnonzero(df["colour"] == "violet"))
    rows = _named_rows(lines[0])
    assert rows and set(rows) <= violet
    # the training samples' numbering differs from the rows (the split shuffles)
    counted = re.search(r"among them sample\(s\) ([0-9]+(?:, [0-9]+)*)", lines[0]).group(1)
    assert [int(v) for v in counted.split(", ")] != rows


def test_library_warnings_carry_the_samples_they_name(rng):
    """The warning's `samples` are what its text names (positions among the rows given)."""
    import warnings

    import rif_native as rn
    from rif_native import _separation

    x = rng.choice([-1.0, 0.0, 1.0], 300)
    y = np.where(x > 0, 1.0, np.where(x < 0, 0.0, (rng.random(300) < 0.5).astype(float)))
    X = np.column_stack([x, rng.standard_normal(300)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rn.fit(X, y, fit_intercept=True)
    assert len(caught) == 1
    want = _separation.separated_samples(X, y, "logistic", True, np.ones(300, dtype=bool))
    np.testing.assert_array_equal(caught[0].message.samples, want)
    # leverage 1 without a penalty: a sample alone on its own feature
    Z = rng.standard_normal((40, 3))
    Z[:, 2] = 0.0
    Z[7, 2] = 1.0
    t = (rng.random(40) < 0.5).astype(float)
    A = rn.Attribution(Z, t, np.zeros(3), l2=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        A.rescaled_influence()
    assert [w.category for w in caught] == [rn.SingularRemovalWarning]
    np.testing.assert_array_equal(caught[0].message.samples, [7])
    assert "sample(s) 7 " in str(caught[0].message)


@pytest.mark.filterwarnings("always")
def test_warnings_about_other_data_keep_their_numbers(tmp_path, capsys):
    """rif poisoning fits on the training rows plus a poisoned point: a warning naming that
    point (number n_train) is shown as it is, not mapped through the training rows (it raised
    IndexError: a reviewer's case)."""
    rng = np.random.default_rng(3)
    n, n_test = 60, 10
    X = np.c_[rng.standard_normal((n, 2)), np.zeros(n)]
    y = (rng.random(n) < 0.5).astype(float)
    X[0, 2], y[0] = 1.0, 1.0  # the third feature: one training sample, a positive
    X_test = np.c_[rng.standard_normal((n_test, 2)), np.ones(n_test)]
    y_test = np.zeros(n_test)  # poisoned (flipped) to 1: the feature's samples all positive
    np.savez(tmp_path / "d.npz", X=X, y=y, X_test=X_test, y_test=y_test)
    code = main(["poisoning", "--data", str(tmp_path / "d.npz"), "--l2", "0", "--points", "1",
                 "--quiet", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 0, err
    # the poisoned fit's: the point appended to the 60 training rows is number 60
    poisoned = [ln for ln in err.splitlines() if "sample(s) 0, 60)" in ln]
    assert poisoned and not any("as rows of the data set" in ln for ln in poisoned)
