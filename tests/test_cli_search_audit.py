"""What `rif search` and `rif audit` report, checked against exact refits by an independent
float64 NumPy Newton fit (logistic, intercept last, penalty (l2/2)||coefficients||^2 on the sum of
the losses): the samples search chose and their effects (the self-loss by its second-order
effect, never decreased), and the audited quantity itself (the coefficient b, not the oriented
f the search drives to 0)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from rif_native.cli import main

L2 = 1.0


def _design(X):
    return np.c_[X, np.ones(len(X))]


def _fit(X, y, w=None, l2=L2):
    """theta of the penalised logistic fit with intercept, on weights w (0 = removed)."""
    Xt = _design(X)
    w = np.ones(len(y)) if w is None else w
    P = np.eye(Xt.shape[1])
    P[-1, -1] = 0.0
    theta = np.zeros(Xt.shape[1])
    for _ in range(100):
        mu = 1.0 / (1.0 + np.exp(-Xt @ theta))
        g = Xt.T @ (w * (mu - y)) + l2 * P @ theta
        H = Xt.T @ ((w * mu * (1 - mu))[:, None] * Xt) + l2 * P
        theta = theta - np.linalg.solve(H, g)
        if np.linalg.norm(g) < 1e-13:
            break
    return theta


def _losses(X, y, theta):
    z = _design(X) @ theta
    return np.logaddexp(0.0, z) - y * z


def _objective(X, y, theta, l2=L2):
    """F over all the samples, penalty included (the self-loss)."""
    return _losses(X, y, theta).sum() + 0.5 * l2 * theta[:-1] @ theta[:-1]


def _without(X, y, removed):
    w = np.ones(len(y))
    w[list(removed)] = 0.0
    return _fit(X, y, w)


def _rif_rows(X, y, theta, l2=L2):
    """Each sample's RIF row H^{-1} g_i / (1 - h_i), and H."""
    Xt = _design(X)
    mu = 1.0 / (1.0 + np.exp(-Xt @ theta))
    P = np.eye(Xt.shape[1])
    P[-1, -1] = 0.0
    H = Xt.T @ ((mu * (1 - mu))[:, None] * Xt) + l2 * P
    IF = np.linalg.solve(H, (Xt * (mu - y)[:, None]).T).T
    h = mu * (1 - mu) * np.einsum("ij,ji->i", Xt, np.linalg.solve(H, Xt.T))
    return IF / (1 - h)[:, None], H


@pytest.fixture
def problem(rng, tmp_path):
    """A logistic problem with its own test part (the training part is all of X, so positions
    in it are rows of the data set); coefficient x1 (the second) is weak."""
    n, d = 150, 4
    X = rng.standard_normal((n, d))
    beta = np.array([1.5, -0.15, 0.5, 0.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ beta))).astype(float)
    Xs = rng.standard_normal((40, d))
    ys = (rng.random(40) < 1 / (1 + np.exp(-Xs @ beta))).astype(float)
    path = tmp_path / "p.npz"
    np.savez(path, X=X, y=y, X_test=Xs, y_test=ys)
    return path, X, y, Xs, ys


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------
# rif search
# --------------------------------------------------------------------------------------------


def test_search_self_loss_ranks_by_the_second_order_effect(capsys, tmp_path, problem):
    path, X, y, _, _ = problem
    code, out, err = _run(capsys, "search", "--data", path, "--metric", "self_loss", "--k", "3,8",
                          "--l2", L2, "--quiet", "--out", tmp_path / "s")
    assert code == 0, err
    rows = json.loads((tmp_path / "s" / "search.json").read_text())
    theta = _fit(X, y)
    R, H = _rif_rows(X, y, theta)
    second = 0.5 * np.einsum("ij,jk,ik->i", R, H, R)
    F0 = _objective(X, y, theta)
    for r in rows:
        T = r["removed_rows"]
        assert len(T) == r["k"] and len(set(T)) == r["k"]
        refit = _objective(X, y, _without(X, y, T)) - F0
        assert r["actual"] == pytest.approx(refit, rel=1e-6)
        assert r["actual"] > 0
        if r["method"] == "rif":
            assert T == np.argsort(-second, kind="stable")[:r["k"]].tolist()
            delta = R[T].sum(axis=0)
            assert r["predicted"] == pytest.approx(0.5 * delta @ H @ delta, rel=1e-8)
        assert r["predicted"] > 1e-6  # a second-order effect, not the vanishing first order
    assert "second-order effect" in out


def test_search_self_loss_cannot_decrease(capsys, tmp_path, problem):
    code, out, err = _run(capsys, "search", "--data", problem[0], "--metric", "self_loss",
                          "--decrease", "--out", tmp_path / "s")
    assert code == 2 and "self-loss cannot decrease" in err and "--decrease" in err
    assert not (tmp_path / "s").exists()


def test_search_reports_the_removed_samples(capsys, tmp_path, problem):
    path, X, y, Xs, ys = problem
    code, out, err = _run(capsys, "search", "--data", path, "--k", "2,12", "--l2", L2,
                          "--out", tmp_path / "s")
    assert code == 0, err
    rows = json.loads((tmp_path / "s" / "search.json").read_text())
    with open(tmp_path / "s" / "search.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    theta = _fit(X, y)
    base = _losses(Xs, ys, theta).sum()  # 40 test points: the metric's subset is all of them
    for r, c in zip(rows, table):
        T = r["removed_rows"]
        assert [int(v) for v in c["removed_rows"].split()] == T
        assert r["actual"] == pytest.approx(_losses(Xs, ys, _without(X, y, T)).sum() - base,
                                            rel=1e-6)
        shown = " ".join(str(v) for v in T[:8])
        assert f"| {r['method']} | {r['k']} |" in out and shown in out
    assert "(+4)" in out  # 12 removed, 8 shown


# --------------------------------------------------------------------------------------------
# rif audit: the quantity itself
# --------------------------------------------------------------------------------------------


def _quantity(kind, Xs, ys):
    """The audited quantity as a function of theta, with the audit's extra options."""
    if kind == "sign":
        return (lambda t: t[1]), ["--coef", "x1", "--margin", "0.01"]  # (x0 is column 0)
    if kind == "prediction":
        return (lambda t: _design(Xs[:1])[0] @ t), ["--point", "0"]
    return (lambda t: _losses(Xs, ys, t).sum()), None


@pytest.mark.parametrize("kind", ["sign", "prediction", "test-loss"])
def test_audit_reports_the_quantity_not_the_oriented_target(capsys, tmp_path, problem, kind):
    path, X, y, Xs, ys = problem
    value, extra = _quantity(kind, Xs, ys)
    theta = _fit(X, y)
    before = float(value(theta))
    if extra is None:  # test loss: a threshold a little above it
        extra = ["--threshold", f"{before * 1.02:.6g}"]
    code, out, err = _run(capsys, "audit", "--data", path, "--kind", kind, *extra, "--l2", L2,
                          "--max-fraction", "0.4", "--quiet", "--out", tmp_path / "a")
    assert code == 0, err
    payload = json.loads((tmp_path / "a" / "audit.json").read_text())
    for m, r in payload.items():
        assert r["value_before"] == pytest.approx(before, rel=1e-7, abs=1e-9)
        assert abs(r["f_before"]) == pytest.approx(abs(before - r["quantity_offset"]), rel=1e-7)
        if not r["flipped"]:
            continue
        after = float(value(_without(X, y, r["removed"])))
        assert r["value_after"] == pytest.approx(after, rel=1e-6, abs=1e-9)
        assert r["f_after"] <= 0
        # on the far side of the flip level, from where it started
        offset = r["quantity_offset"]
        assert (after - offset) * (before - offset) <= 0
        side = ">=" if before < offset else "<="
        assert r["flips_when"] == f"{r['quantity']} {side} {offset:.6g}"
        assert f"{r['quantity']} = {before:.4g} -> {after:.4g} by exact refit" in out
    assert any(r["flipped"] for r in payload.values()) or kind == "prediction"
    with open(tmp_path / "a" / "audit.csv", newline="") as fh:
        trail = list(csv.DictReader(fh))
    actual = {(t["method"], int(t["size"])): float(t["actual"]) for t in trail}
    for m, r in payload.items():
        for q in r["rounds"]:
            assert actual[(m, q["size"])] == pytest.approx(q["actual"], rel=1e-12)


def test_audit_sign_of_a_negative_coefficient(capsys, tmp_path, problem):
    """The tester's case: b < 0 at theta_hat is reported as b, its refit value as b's too."""
    path, X, y, _, _ = problem
    theta = _fit(X, y)
    j = int(np.argmin(theta[:-1]))
    if theta[j] >= 0:  # a fresh problem without a negative coefficient: make one
        X[:, j] *= -1
        np.savez(path, X=X, y=y, X_test=problem[3], y_test=problem[4])
        theta = _fit(X, y)
    assert theta[j] < 0
    code, out, err = _run(capsys, "audit", "--data", path, "--coef", j, "--l2", L2,
                          "--max-fraction", "0.4", "--quiet", "--out", tmp_path / "a")
    assert code == 0, err
    r = json.loads((tmp_path / "a" / "audit.json").read_text())["rif"]
    assert r["value_before"] == pytest.approx(theta[j], rel=1e-7)
    assert r["f_before"] == pytest.approx(-theta[j], rel=1e-7)
    if r["flipped"]:
        assert r["value_after"] == pytest.approx(_without(X, y, r["removed"])[j], rel=1e-6)
        assert r["value_after"] >= 0


@pytest.mark.parametrize("argv, option", [
    (["--kind", "sign", "--coef", "0", "--threshold", "2"], "--threshold"),
    (["--kind", "significance", "--coef", "0", "--margin", "0.1"], "--margin"),
    (["--kind", "test-loss", "--threshold", "9", "--coef", "0"], "--coef"),
    (["--kind", "sign", "--coef", "0", "--point", "1"], "--point"),
])
def test_audit_refuses_options_its_kind_would_ignore(capsys, tmp_path, problem, argv, option):
    """They were silently ignored (a --threshold given to a sign audit changed nothing)."""
    code, out, err = _run(capsys, "audit", "--data", problem[0], *argv, "--out", tmp_path / "a")
    assert code == 2 and f"{option} is for --kind" in err and "ignored" in err
    assert not (tmp_path / "a").exists()


def test_audit_coef_names_a_column_named_like_a_number(capsys, tmp_path, rng):
    """--coef 1990 is the column headed "1990" where there is one (it was read as index 1990)."""
    n = 120
    X = rng.standard_normal((n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [0.2, 1.0, -0.5])))).astype(float)
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as fh:
        table = csv.writer(fh)
        table.writerow(["a", "1990", "b", "label"])
        table.writerows([[*row, int(lab)] for row, lab in zip(X, y)])
    code, out, err = _run(capsys, "audit", "--data", path, "--coef", "1990", "--l2", L2,
                          "--test-fraction", "0.2", "--max-fraction", "0.3", "--quiet",
                          "--out", tmp_path / "a")
    assert code == 0, err
    by_name = json.loads((tmp_path / "a" / "audit.json").read_text())["rif"]
    assert by_name["quantity"] == "1990"
    # the same audit as of the second column by its index (same data, same split)
    code, out, err = _run(capsys, "audit", "--data", path, "--coef", "1", "--l2", L2,
                          "--test-fraction", "0.2", "--max-fraction", "0.3", "--quiet",
                          "--out", tmp_path / "b")
    assert code == 0, err
    by_index = json.loads((tmp_path / "b" / "audit.json").read_text())["rif"]
    assert by_name["value_before"] == by_index["value_before"] != 0.0
    assert by_name["removed_rows"] == by_index["removed_rows"]
