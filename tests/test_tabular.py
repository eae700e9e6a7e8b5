"""Tables by column name (rif_native.datasets.load_table): label and id columns, one-hot
encoding against pandas' own get_dummies, text labels, Parquet equal to CSV, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from rif_native.datasets import load_dataset, load_table  # noqa: E402


def _table(rng, n=60):
    return pd.DataFrame({
        "id": [f"p{i:03d}" for i in range(n)],
        "age": rng.integers(18, 90, n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "income": rng.normal(5e4, 1e4, n).round(2),
        "smoker": rng.choice([True, False], n),
        "outcome": rng.choice(["no", "yes"], n),
    })


def test_columns_by_name_and_one_hot_against_pandas(rng, tmp_path):
    df = _table(rng)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    d = load_table(path, label="outcome", id_column="id", one_hot=True)
    want = pd.get_dummies(df.drop(columns=["id", "outcome"]), columns=["colour"],
                          drop_first=True, dtype=float, prefix_sep="=")
    assert d.feature_names == [str(c) for c in want.columns]
    np.testing.assert_array_equal(d.X, want.to_numpy(dtype=float))
    np.testing.assert_array_equal(d.y, (df["outcome"] == "yes").to_numpy(dtype=float))
    assert d.target_names == ("no", "yes")
    np.testing.assert_array_equal(d.sample_ids, df["id"].to_numpy())
    assert any("'blue' is the reference" in note for note in d.notes)
    assert any("'no' -> 0" in note for note in d.notes)


def test_parquet_equals_csv(rng, tmp_path):
    pytest.importorskip("pyarrow")
    df = _table(rng)
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    a = load_table(tmp_path / "t.csv", label="outcome", one_hot=True)
    b = load_table(tmp_path / "t.parquet", label="outcome", one_hot=True)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.feature_names == b.feature_names
    numeric = df[["age", "income", "outcome"]].assign(outcome=(df["outcome"] == "yes") * 1)
    numeric.to_parquet(tmp_path / "n.parquet", index=False)
    c = load_dataset(tmp_path / "n.parquet")  # the last column is the label
    np.testing.assert_array_equal(c.X, numeric[["age", "income"]].to_numpy(dtype=float))


def test_multiclass_text_labels(rng, tmp_path):
    df = _table(rng)
    df.to_csv(tmp_path / "t.csv", index=False)
    d = load_table(tmp_path / "t.csv", label="colour", id_column="id", one_hot=True,
                   family="multinomial")
    np.testing.assert_array_equal(d.y, df["colour"].map({"blue": 0, "green": 1, "red": 2}))
    with pytest.raises(ValueError, match="3 distinct text values.*--family multinomial"):
        load_table(tmp_path / "t.csv", label="colour", id_column="id", one_hot=True)


def test_categorical_labels_keep_their_categories_order(rng, tmp_path):
    """A categorical label column (Parquet keeps the dtype) is numbered in its categories'
    order, as its owner ordered them ("low", "mid", "high"; sorted as text: high, low, mid)."""
    pytest.importorskip("pyarrow")
    df = _table(rng)
    df["grade"] = pd.Categorical(rng.choice(["low", "mid", "high"], len(df)),
                                 categories=["low", "mid", "high"], ordered=True)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    g = load_table(tmp_path / "t.parquet", label="grade", id_column="id", one_hot=True,
                   family="multinomial")
    np.testing.assert_array_equal(g.y, df["grade"].astype(str).map({"low": 0, "mid": 1,
                                                                     "high": 2}))
    assert g.target_names == ("low", "mid", "high")
    # without the dtype (CSV), sorted as text
    df.to_csv(tmp_path / "t.csv", index=False)
    c = load_table(tmp_path / "t.csv", label="grade", id_column="id", one_hot=True,
                   family="multinomial")
    assert c.target_names == ("high", "low", "mid")


def test_errors_name_what_to_do(rng, tmp_path):
    df = _table(rng)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ValueError, match="'id', 'colour'.*--one-hot"):
        load_table(path, label="outcome")
    with pytest.raises(ValueError, match="--label 'nosuch' is not a column; the columns are"):
        load_table(path, label="nosuch")
    with pytest.raises(ValueError, match="--id and --label name the same column"):
        load_table(path, label="outcome", id_column="outcome")
    dup = df.assign(id="same")
    dup.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match="repeats ids"):
        load_table(tmp_path / "d.csv", label="outcome", id_column="id", one_hot=True)
    gaps = df.astype({"income": float})
    gaps.loc[3, "income"] = np.nan
    gaps.to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(ValueError, match="'income' have empty"):
        load_table(tmp_path / "g.csv", label="outcome", id_column="id", one_hot=True)
    with pytest.raises(ValueError, match=".csv, .tsv or .parquet"):
        load_table(tmp_path / "t.txt")
