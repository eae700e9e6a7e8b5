"""Tests for the ``rif`` command line tool (rif_native.cli)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import rif_native
from rif_native.cli import main


# --------------------------------------------------------------------------------------------
# an independent float64 NumPy reference (logistic regression with an unpenalised intercept)
# --------------------------------------------------------------------------------------------


def _design(X):
    return np.hstack([X, np.ones((X.shape[0], 1))])


def _ref_fit(X, y, l2):
    Z = _design(X)
    penalty = np.full(Z.shape[1], l2)
    penalty[-1] = 0.0
    theta = np.zeros(Z.shape[1])
    for _ in range(100):
        s = 1.0 / (1.0 + np.exp(-(Z @ theta)))
        g = Z.T @ (s - y) + penalty * theta
        if np.linalg.norm(g) < 1e-11:
            break
        H = (Z * (s * (1 - s))[:, None]).T @ Z + np.diag(penalty)
        theta -= np.linalg.solve(H, g)
    return theta


def _ref_scores(X, y, theta, l2, Xt, yt):
    """IF and RIF scores on the total test loss, the removal effect <v, theta_{-i} - theta>."""
    Z, Zt = _design(X), _design(Xt)
    penalty = np.full(Z.shape[1], l2)
    penalty[-1] = 0.0
    s = 1.0 / (1.0 + np.exp(-(Z @ theta)))
    a = s * (1 - s)
    H = (Z * a[:, None]).T @ Z + np.diag(penalty)
    st = 1.0 / (1.0 + np.exp(-(Zt @ theta)))
    v = Zt.T @ (st - yt)
    Hinv_Z = np.linalg.solve(H, Z.T)
    h = a * np.einsum("ij,ji->i", Z, Hinv_Z)
    # IF_i = H^{-1} g_i with g_i = r_i z_i: the Newton step of removing i, to first order
    s_if = (s - y) * (Z @ np.linalg.solve(H, v))
    return s_if, s_if / (1 - h), h


def _test_loss(theta, Xt, yt):
    z = _design(Xt) @ theta
    return float(np.sum(np.logaddexp(0.0, z) - yt * z))


@pytest.fixture
def small_npz(tmp_path):
    """A small logistic problem with d comparable to n (leverage matters)."""
    rng = np.random.default_rng(12345)
    n, d = 150, 30
    X = rng.normal(size=(n, d)) / np.sqrt(d)
    beta = rng.normal(size=d) * 2.0
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ beta + 0.3)))).astype(np.float64)
    path = tmp_path / "small.npz"
    np.savez(path, X=X, y=y)
    return path, X, y


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------


def test_small_npz_end_to_end(capsys, tmp_path, small_npz):
    path, X, y = small_npz
    out_json = tmp_path / "out.json"
    code, out, err = _run(
        capsys, "attribute", "--data", path, "--top", 5, "--l2", 0.5, "--seed", 3,
        "--json", out_json,
    )
    assert code == 0, err
    assert err == ""
    # header, both columns, sign convention, agreement lines, timings
    assert "RIF (rescaled influence)" in out and "IF (influence function)" in out
    assert "INCREASES the test loss" in out
    assert "shared" in out and "spearman" in out
    assert "accuracy" in out and "||grad F||" in out and "time " in out
    rows = [line for line in out.splitlines() if line[:4].strip() in {"1", "2", "3", "4", "5"}
            and " | " in line]
    assert len(rows) == 5
    assert all(line.count(" | ") == 1 for line in rows)

    result = json.loads(out_json.read_text())
    assert result["command"] == "attribute"
    assert result["split"]["n_train"] == 120 and result["split"]["n_test"] == 30
    assert result["model"]["converged"] is True
    assert result["model"]["grad_norm"] < 1e-6
    assert len(result["attribution"]["top_rif"]) == len(result["attribution"]["top_if"]) == 5
    assert 0 <= result["attribution"]["shared_top_k"] <= 5
    assert -1.0 <= result["attribution"]["spearman"] <= 1.0

    # the same numbers from an independent NumPy computation
    train = np.array(result["train_indices"])
    test = np.array(result["split"]["test_indices"])
    assert sorted([*train, *test]) == list(range(150))
    theta = _ref_fit(X[train], y[train], 0.5)
    s_if, s_rif, h = _ref_scores(X[train], y[train], theta, 0.5, X[test], y[test])
    np.testing.assert_allclose(result["scores_if"], s_if, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result["scores_rif"], s_rif, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result["leverage"], h, rtol=1e-6, atol=1e-10)
    acc = np.mean(((_design(X[test]) @ theta) > 0) == (y[test] == 1))
    assert result["metrics"]["test_accuracy"] == pytest.approx(acc)

    # rankings: by |score|, indices refer to rows of the data file, labels match
    top = result["attribution"]["top_rif"]
    assert [e["rank"] for e in top] == [1, 2, 3, 4, 5]
    assert top[0]["index"] == train[np.argmax(np.abs(s_rif))]
    mags = [abs(e["score"]) for e in top]
    assert mags == sorted(mags, reverse=True)
    for e in top:
        assert e["label"] == y[e["index"]]
        assert str(e["index"]) in out

    # sign convention: the top sample's RIF score has the sign of the true change in test loss
    # when it is removed and the model retrained (and RIF is closer to it than IF)
    pos = int(np.flatnonzero(train == top[0]["index"])[0])
    keep = np.delete(np.arange(train.size), pos)
    theta_minus = _ref_fit(X[train][keep], y[train][keep], 0.5)
    actual = _test_loss(theta_minus, X[test], y[test]) - _test_loss(theta, X[test], y[test])
    assert np.sign(top[0]["score"]) == np.sign(actual)
    assert abs(s_rif[pos] - actual) < abs(s_if[pos] - actual)


def test_npz_with_test_part_npy_and_csv(capsys, tmp_path, small_npz):
    _, X, y = small_npz
    np.savez(tmp_path / "tt.npz", X=X[:100], y=y[:100], X_test=X[100:], y_test=y[100:])
    out_json = tmp_path / "tt.json"
    code, out, err = _run(capsys, "--data", tmp_path / "tt.npz", "--json", out_json, "--quiet")
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["split"]["n_train"] == 100 and result["split"]["n_test"] == 50
    assert result["split"]["test_indices"] is None
    assert result["train_indices"] == list(range(100))
    # --quiet: the table, no data/fit/timing lines
    assert "RIF (rescaled influence)" in out and "spearman" in out
    assert "time " not in out and "accuracy" not in out

    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    code, out, err = _run(capsys, "--data", tmp_path / "X.npy", "--labels", tmp_path / "y.npy")
    assert code == 0, err
    assert "IF (influence function)" in out

    lines = ["f1,f2,f3,label"] + [",".join(f"{v:.17g}" for v in (*x[:3], t)) for x, t in zip(X, y)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    code, out, err = _run(capsys, "--data", tmp_path / "d.csv", "--top", 3)
    assert code == 0, err


def test_json_to_stdout_and_rank_by(capsys, small_npz):
    path, _, _ = small_npz
    code, out, err = _run(capsys, "--data", path, "--json", "-", "--rank-by", "helpful", "--top", 4)
    assert code == 0, err
    result = json.loads(out)  # stdout carries the JSON only
    scores = [e["score"] for e in result["attribution"]["top_rif"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == max(s for s in result["scores_rif"] if s is not None)

    code, out, err = _run(capsys, "--data", path, "--json", "-", "--rank-by", "harmful")
    assert code == 0, err
    scores = [e["score"] for e in json.loads(out)["attribution"]["top_if"]]
    assert scores == sorted(scores)


def test_threads_give_the_same_scores(capsys, tmp_path, small_npz):
    path, _, _ = small_npz
    results = []
    for threads in (1, 2):
        out_json = tmp_path / f"t{threads}.json"
        code, _, err = _run(capsys, "--data", path, "--threads", threads, "--json", out_json)
        assert code == 0, err
        results.append(json.loads(out_json.read_text()))
    for key in ("scores_rif", "scores_if", "leverage"):
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-9, atol=1e-12)


def test_backend_option(capsys, tmp_path, small_npz, monkeypatch):
    """--backend cpu gives the default's answers; --backend cuda without a GPU (or an invalid
    RIF_BACKEND) is a usage error, said in one line before any work."""
    path, _, _ = small_npz
    outs = []
    for extra in ([], ["--backend", "cpu"]):
        out_json = tmp_path / f"b{len(extra)}.json"
        code, _, err = _run(capsys, "--data", path, "--json", out_json, *extra)
        assert code == 0, err
        outs.append(json.loads(out_json.read_text()))
    np.testing.assert_allclose(outs[0]["scores_rif"], outs[1]["scores_rif"], rtol=1e-12)
    if not rif_native.cuda_available():
        code, out, err = _run(capsys, "--data", path, "--backend", "cuda")
        assert code == 2 and out == "" and "backend 'cuda' was asked for" in err, err
        code, _, err = _run(capsys, "experiment", "--data", path, "--backend", "cuda")
        assert code == 2 and "backend 'cuda' was asked for" in err, err
    monkeypatch.setenv("RIF_BACKEND", "gpu")
    code, _, err = _run(capsys, "--data", path)
    assert code == 2 and "RIF_BACKEND" in err and "Traceback" not in err, err


@pytest.mark.parametrize("family", ["squared", "poisson"])
def test_other_families(capsys, tmp_path, family):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 6)) / 3
    z = X @ rng.normal(size=6)
    y = rng.poisson(np.exp(z)).astype(float) if family == "poisson" else z + rng.normal(size=80)
    np.savez(tmp_path / "r.npz", X=X, y=y)
    out_json = tmp_path / "r.json"
    code, out, err = _run(
        capsys, "--data", tmp_path / "r.npz", "--family", family, "--json", out_json
    )
    assert code == 0, err
    assert "mean test" in out and "accuracy" not in out
    result = json.loads(out_json.read_text())
    assert result["model"]["family"] == family
    assert "test_accuracy" not in result["metrics"]


@pytest.mark.slow
def test_default_builtin_dataset(capsys, tmp_path):
    """Bare ``rif``: the built-in SMS Spam data, the documented defaults (a few seconds)."""
    out_json = tmp_path / "sms.json"
    start = time.perf_counter()
    code, out, err = _run(capsys, "--json", out_json)
    elapsed = time.perf_counter() - start
    assert code == 0, err
    assert elapsed < 60
    assert "sms_spam" in out and "5171 samples x 1500 features" in out
    assert "train 4137, test 1034" in out
    assert "RIF (rescaled influence)" in out and "IF (influence function)" in out
    assert " spam " in out
    result = json.loads(out_json.read_text())
    assert result["model"]["l2"] == 0.03 and result["model"]["converged"] is True
    assert result["metrics"]["test_accuracy"] > 0.97
    assert result["metrics"]["train_accuracy"] > 0.98
    assert len(result["attribution"]["top_rif"]) == 10
    top = result["attribution"]["top_rif"][0]
    assert isinstance(top["text"], str) and top["source_line"] >= top["index"]
    assert 0.0 <= result["attribution"]["max_leverage"] < 1.0
    assert result["attribution"]["spearman"] > 0.9


# --------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit status 2
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "{tmp}/missing.npz"], "data file not found: {tmp}/missing.npz"),
        (["--labels", "{tmp}/y.npy"], "--labels needs --data"),
        (["--data", "{tmp}/X.npy"], "--labels PATH"),
        (["--data", "{tmp}/ok.npz", "--max-features", "10"], "only to the built-in"),
        (["--data", "{tmp}/labels12.npz"], "needs labels 0 and 1, found values 1, 2"),
        (["--data", "{tmp}/oneclass.npz"], "single class"),
        (["--data", "{tmp}/bad.csv"], "line 2, column 1: 'abc' is not a number"),
        (["--data", "{tmp}/ok.npz", "--json", "{tmp}/no/such/dir/out.json"], "cannot write --json"),
        (["--data", "{tmp}/ok.npz", "--test-fraction", "0.001"], "cannot split"),
        (["--top", "0"], "--top"),
        (["--test-fraction", "1"], "--test-fraction"),
        (["--l2", "abc"], "--l2"),
        (["--l2", "nan"], "--l2"),
        (["--threads", "-1"], "--threads"),
        (["--family", "gamma"], "invalid choice"),
        (["--no-such-option"], "unrecognized arguments"),
        (["attribute", "extra"], "unrecognized arguments"),
        (["attribute", "--bogus"], "(see 'rif attribute --help')"),
        (["search", "--bogus"], "(see 'rif search --help')"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--data", "{tmp}/ok.txt"], ".csv, .tsv or .parquet"),
    ],
)
def test_bad_input_exits_2(capsys, tmp_path, argv, message):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = np.tile([0.0, 1.0], 10)
    np.savez(tmp_path / "ok.npz", X=X, y=y)
    np.save(tmp_path / "X.npy", X)
    np.savez(tmp_path / "labels12.npz", X=X, y=y + 1)
    np.savez(tmp_path / "oneclass.npz", X=X, y=np.ones(20))
    (tmp_path / "bad.csv").write_text("1,2,0\nabc,2,1\n")
    (tmp_path / "ok.txt").write_text("1,2,0\n3,2,1\n")
    code, out, err = _run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert out == ""
    assert err.startswith("rif: error: ") and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_family_squared_accepts_other_labels(capsys, tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(30, 3)), y=rng.integers(1, 3, size=30))
    code, _, err = _run(capsys, "--data", tmp_path / "d.npz", "--family", "squared")
    assert code == 0, err


def test_help_and_version(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "attribute" in out
    code, out, _ = _run(capsys, "attribute", "--help")
    assert code == 0
    for option in ("--data", "--labels", "--l2", "--family", "--max-features", "--top",
                   "--threads", "--seed", "--test-fraction", "--quiet", "--json"):
        assert option in out
    assert "increases the test loss" in out
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.startswith("rif ")


@pytest.mark.parametrize("command", ["experiment", "search", "audit", "poisoning", "sweep"])
def test_test_fraction_help_says_the_split_is_random(capsys, command):
    """Only rif attribute reads .npy & co. from disk and splits them contiguously; the other
    commands read them whole and split at random (their help said the LAST F of the rows)."""
    code, out, _ = _run(capsys, command, "--help")
    text = " ".join(out.split())
    assert code == 0 and "LAST F" not in text
    assert "shards, .zarr or .h5 are read whole and split at random too" in text
    _, out, _ = _run(capsys, "attribute", "--help")
    assert "the LAST F of the rows" in " ".join(out.split())


def test_module_entry_point_subprocess(tmp_path, small_npz):
    path, _, _ = small_npz
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    ok = subprocess.run(
        [sys.executable, "-m", "rif_native.cli", "--data", str(path), "--top", "3"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "RIF (rescaled influence)" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "rif_native.cli", "--data", str(tmp_path / "nope.csv")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "RIF" not in bad.stdout
    # the last stderr line (an editable install may log its rebuild before it)
    assert bad.stderr.strip().splitlines()[-1] == (
        f"rif: error: data file not found: {tmp_path / 'nope.csv'}"
    )
