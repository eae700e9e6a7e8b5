"""Tests for rif_native.datasets: the bundled SMS Spam Collection and load_dataset."""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from rif_native import datasets
from rif_native.datasets import Dataset, load_dataset, load_sms_spam, tokenize

DATA_DIR = Path(datasets.__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def sms() -> Dataset:
    return load_sms_spam()


@pytest.fixture(scope="module")
def raw_lines() -> list[str]:
    raw = gzip.decompress((DATA_DIR / "SMSSpamCollection.gz").read_bytes())
    return raw.decode("utf-8").split("\n")[:-1]


# --------------------------------------------------------------------------------------------
# the bundled file
# --------------------------------------------------------------------------------------------


def test_bundled_file_decompresses_to_readme_sha256():
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")
    row = r"\| ([\d,]+) \| `([0-9a-f]{64})`"
    match = re.search(r"`SMSSpamCollection` \(after `gunzip`\) " + row, readme)
    assert match, "data/README.md lost its sha256 table row for SMSSpamCollection"
    size, digest = int(match.group(1).replace(",", "")), match.group(2)
    compressed = (DATA_DIR / "SMSSpamCollection.gz").read_bytes()
    raw = gzip.decompress(compressed)
    assert len(raw) == size == 477_907
    assert hashlib.sha256(raw).hexdigest() == digest == datasets.SMS_SPAM_SHA256
    gz_match = re.search(r"`SMSSpamCollection.gz` \(as shipped\) " + row, readme)
    assert gz_match
    assert len(compressed) == int(gz_match.group(1).replace(",", ""))
    assert hashlib.sha256(compressed).hexdigest() == gz_match.group(2)


def test_readme_names_source_citation_and_license():
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")
    for needle in ("Almeida", "DocEng", "archive.ics.uci.edu/dataset/228", "License",
                   "no limitations"):
        assert needle in readme


def test_raw_file_format(raw_lines):
    assert len(raw_lines) == 5574
    labels = collections.Counter(line.split("\t", 1)[0] for line in raw_lines)
    assert labels == {"ham": 4827, "spam": 747}
    assert all(line.count("\t") == 1 for line in raw_lines)


# --------------------------------------------------------------------------------------------
# load_sms_spam
# --------------------------------------------------------------------------------------------


def test_default_shapes_and_types(sms):
    assert isinstance(sms, Dataset)
    assert sms.name == "sms_spam"
    assert sms.X.shape == (5171, 1500)
    assert sms.X.dtype == np.float64 and sms.X.flags.c_contiguous
    assert sms.y.shape == (5171,) and sms.y.dtype == np.float64
    assert set(np.unique(sms.y)) == {0.0, 1.0}
    assert len(sms.texts) == 5171 and all(isinstance(t, str) for t in sms.texts)
    assert len(sms.feature_names) == 1500 == len(set(sms.feature_names))
    assert sms.target_names == ("ham", "spam")
    assert sms.X_test is None and sms.y_test is None
    assert "SMS Spam Collection" in sms.description and "Almeida" in sms.description
    assert "n=5171" in repr(sms)


def test_dedupe_keeps_first_occurrence(sms, raw_lines):
    full = load_sms_spam(dedupe=False)
    assert full.X.shape[0] == 5574
    assert int(full.y.sum()) == 747
    assert full.X.shape[0] - sms.X.shape[0] == 403
    assert len(set(sms.texts)) == len(sms.texts) == len(set(full.texts)) == 5171
    idx = sms.source_index
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    seen = set()
    first = []
    for k, line in enumerate(raw_lines):
        text = line.split("\t", 1)[1]
        if text not in seen:
            seen.add(text)
            first.append(k)
    np.testing.assert_array_equal(idx, first)
    for k in (0, 100, 2500, 5170):
        label, text = raw_lines[idx[k]].split("\t", 1)
        assert sms.texts[k] == text
        assert sms.y[k] == (1.0 if label == "spam" else 0.0)
    np.testing.assert_array_equal(full.source_index, np.arange(5574))


def test_labels_are_spam_is_one(sms):
    first = sms.texts.index(
        "Go until jurong point, crazy.. Available only in bugis n great world la e buffet... "
        "Cine there got amore wat..."
    )
    assert sms.y[first] == 0.0
    spam = [t for t, y in zip(sms.texts, sms.y) if y == 1.0]
    assert any(t.startswith("Free entry in 2 a wkly comp") for t in spam)
    assert int(sms.y.sum()) == 653


def test_rows_have_unit_norm_or_are_zero(sms):
    norms = np.linalg.norm(sms.X, axis=1)
    zero = norms == 0
    np.testing.assert_allclose(norms[~zero], 1.0, rtol=0, atol=1e-12)
    assert 0 < zero.sum() < 50
    assert np.all(sms.X >= 0)


def test_vocabulary_is_most_frequent_tokens(sms):
    df = np.count_nonzero(sms.X > 0, axis=0)
    assert np.all(np.diff(df) <= 0), "columns must be ordered by decreasing document frequency"
    assert df.min() >= 2
    # independent count over the returned messages
    counts = collections.Counter()
    for text in sms.texts:
        counts.update(set(tokenize(text)))
    for j, name in enumerate(sms.feature_names[:200]):
        assert counts[name] == df[j]
    # nothing left out is more frequent than the least frequent token kept
    kept = set(sms.feature_names)
    left_out = max(c for tok, c in counts.items() if tok not in kept)
    assert left_out <= df[-1]


def test_features_are_normalised_log_counts(sms):
    column = {name: j for j, name in enumerate(sms.feature_names)}
    for i in (0, 1, 7, 500, 4321):
        expected = np.zeros(sms.X.shape[1])
        for tok, c in collections.Counter(tokenize(sms.texts[i])).items():
            if tok in column:
                expected[column[tok]] = np.log(1.0 + c)
        norm = np.linalg.norm(expected)
        if norm > 0:
            expected /= norm
        np.testing.assert_allclose(sms.X[i], expected, rtol=0, atol=1e-14)


def test_deterministic(sms):
    again = load_sms_spam()
    np.testing.assert_array_equal(again.X, sms.X)
    np.testing.assert_array_equal(again.y, sms.y)
    assert again.feature_names == sms.feature_names
    assert again.texts == sms.texts


def test_options():
    small = load_sms_spam(max_features=50)
    default = load_sms_spam()
    assert small.X.shape == (5171, 50)
    assert small.feature_names == default.feature_names[:50]
    binary = load_sms_spam(max_features=300, binary=True)
    for row in binary.X[:200]:
        nz = row[row > 0]
        if nz.size:
            np.testing.assert_allclose(nz, 1.0 / np.sqrt(nz.size), rtol=1e-14)
    rare = load_sms_spam(max_features=None, min_df=40)
    df = np.count_nonzero(rare.X > 0, axis=0)
    assert rare.X.shape[1] < 1500 and df.min() >= 40
    everything = load_sms_spam(max_features=None, min_df=1, dedupe=False)
    assert everything.X.shape[0] == 5574 and everything.X.shape[1] > 5000


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"max_features": 0}, ValueError),
        ({"max_features": -3}, ValueError),
        ({"max_features": 2.5}, TypeError),
        ({"max_features": True}, TypeError),
        ({"min_df": 0}, ValueError),
        ({"min_df": "2"}, TypeError),
    ],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        load_sms_spam(**kwargs)


def test_dataset_is_frozen(sms):
    with pytest.raises(dataclasses.FrozenInstanceError):
        sms.X = np.zeros((1, 1))


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Don't WIN £1000 now!!", ["don't", "win", "£1000", "now"]),
        ("Call 09061701461. Claim code KL341", ["call", "09061701461", "claim", "code", "kl341"]),
        ("I'll be there &lt;#&gt; mins", ["i'll", "be", "there", "mins"]),
        ("'quoted' and rock'n'roll", ["quoted", "and", "rock'n'roll"]),
        ("it\u2019s ok", ["it's", "ok"]),
        ("...", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


# --------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------


@pytest.fixture
def arrays():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(30, 4))
    y = (rng.random(30) < 0.5).astype(np.float64)
    y[:2] = [0.0, 1.0]
    return X, y


def test_npz(tmp_path, arrays):
    X, y = arrays
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y.astype(np.int64))
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.X.dtype == ds.y.dtype == np.float64 and ds.X.flags.c_contiguous
    assert ds.texts is None and ds.X_test is None and ds.y_test is None
    assert ds.feature_names == ["x0", "x1", "x2", "x3"]
    assert ds.name == "d"
    # str path, a test part, Fortran-ordered and boolean input
    path2 = tmp_path / "t.npz"
    np.savez(path2, X=np.asfortranarray(X), y=y.astype(bool), X_test=X[:5], y_test=y[:5])
    ds2 = load_dataset(str(path2))
    np.testing.assert_array_equal(ds2.X, X)
    np.testing.assert_array_equal(ds2.y, y)
    np.testing.assert_array_equal(ds2.X_test, X[:5])
    np.testing.assert_array_equal(ds2.y_test, y[:5])
    assert ds2.X.flags.c_contiguous


def test_npy_pair(tmp_path, arrays):
    X, y = arrays
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", y[:, None])
    ds = load_dataset(tmp_path / "X.npy", labels=tmp_path / "y.npy")
    np.testing.assert_array_equal(ds.X, X.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(ds.y, y)
    with pytest.raises(ValueError, match="--labels"):
        load_dataset(tmp_path / "X.npy")
    with pytest.raises(FileNotFoundError, match="nolabels.npy"):
        load_dataset(tmp_path / "X.npy", labels=tmp_path / "nolabels.npy")


def test_csv_with_and_without_header(tmp_path, arrays):
    X, y = arrays
    rows = [",".join(repr(float(v)) for v in (*x, t)) for x, t in zip(X, y)]
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path / "plain.csv")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.feature_names == ["x0", "x1", "x2", "x3"]
    (tmp_path / "head.csv").write_text("a,b,c,d,label\n" + "\n".join(rows) + "\n\n")
    ds = load_dataset(tmp_path / "head.csv")
    np.testing.assert_array_equal(ds.X, X)
    assert ds.feature_names == ["a", "b", "c", "d"]
    assert "label" in ds.description
    (tmp_path / "tabs.tsv").write_text("\n".join(r.replace(",", "\t") for r in rows))
    np.testing.assert_array_equal(load_dataset(tmp_path / "tabs.tsv").y, y)


def test_missing_file(tmp_path):
    path = tmp_path / "nothere.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_dataset(path)


@pytest.mark.parametrize(
    "arrays_in, pattern",
    [
        ({"X": np.ones((4, 2))}, r"missing key\(s\) y.*found: X"),
        ({"features": np.ones((4, 2)), "labels": np.arange(4)}, r"missing key\(s\) X, y"),
        ({"X": np.eye(4), "y": [0, 1, 0, 1], "X_test": np.eye(4)}, "'X_test' but not 'y_test'"),
        ({"X": np.eye(4), "y": [0, 1, 0]}, "X has 4 rows but y has 3"),
        ({"X": np.eye(4), "y": [1, 1, 1, 1]}, "single class"),
        ({"X": np.array([["a", "b"], ["c", "d"]]), "y": [0, 1]}, "X must be numeric"),
        ({"X": np.eye(2), "y": np.array(["ham", "spam"])}, "y must be numeric"),
        ({"X": np.array([[1.0, np.nan], [0.0, 1.0]]), "y": [0, 1]},
         "NaN or infinity.*row 0, column 1"),
        ({"X": np.ones((2, 2, 2)), "y": [0, 1]}, "X must be 2-D"),
        ({"X": np.ones((2, 0)), "y": [0, 1]}, "empty"),
        ({"X": np.eye(4), "y": np.ones((4, 2))}, "y must be 1-D"),
        ({"X": np.eye(4), "y": [0, 1, 0, 1], "X_test": np.eye(3), "y_test": [0, 1, 0]},
         "X_test has 3 columns but X has 4"),
    ],
)
def test_npz_errors(tmp_path, arrays_in, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays_in)
    with pytest.raises(ValueError, match=pattern) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("1,2,0\n3,4,1\n5,x,0\n", r"line 3, column 2: 'x' is not a number"),
        ("1,2,0\n3,4\n", "line 2 has 2 columns, expected 3"),
        ("a,b,y\n1,2,0\n3,4,5,1\n", r"line 3 has 4 columns, expected 3 \(as in the header\)"),
        ("1,2,1\n3,4,1\n", "single class"),
        ("label\n0\n1\n", "at least 2 columns"),
        ("a,b,y\n", "header but no data rows"),
        ("\n\n", "no data rows"),
        ("1,2,0\n3,nan,1\n", "NaN or infinity"),
        ("1,2,spam\n3,4,ham\n", "is not a number; text labels need a header line"),
    ],
)
def test_csv_errors(tmp_path, content, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern):
        load_dataset(path)


def test_other_errors(tmp_path, arrays):
    X, y = arrays
    (tmp_path / "data.txt").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        load_dataset(tmp_path / "data.txt")
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_dataset(tmp_path / "broken.npz")
    np.savez(tmp_path / "ok.npz", X=X, y=y)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(ValueError, match="only for .npy"):
        load_dataset(tmp_path / "ok.npz", labels=tmp_path / "y.npy")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "short.npy", y[:-1])
    with pytest.raises(ValueError, match="X has 30 rows but y has 29"):
        load_dataset(tmp_path / "X.npy", labels=tmp_path / "short.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 30, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        load_dataset(tmp_path / "X.npy", labels=tmp_path / "obj.npy")


def test_shard_folder_reads_numbers_in_names_as_numbers(tmp_path):
    """part-0 ... part-10 unpadded: stacked as 0, 1, 2, ..., 10 (compared as text, part-10 came
    before part-2 and X no longer matched its labels, silently)."""
    X = np.arange(33 * 2, dtype=np.float64).reshape(33, 2)
    folder = tmp_path / "shards"
    folder.mkdir()
    for j in range(11):
        np.save(folder / f"part-{j}.npy", X[3 * j:3 * j + 3])
    np.save(tmp_path / "y.npy", (np.arange(33) % 2).astype(float))
    ds = datasets.load_dataset(folder, labels=tmp_path / "y.npy")
    assert np.array_equal(ds.X.take(np.arange(33)), X)


def test_csv_with_text_labels_in_the_last_column_reads_as_a_table(tmp_path):
    """A .csv whose last column holds text labels: numbered in sorted order, as naming the
    column (load_table's label=) does; where it was refused as "'yes' is not a number"."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 2))
    words = np.where(rng.random(30) < 0.5, "yes", "no")
    words[:2] = ["no", "yes"]
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n" + "".join(f"{float(r[0])!r},{float(r[1])!r},{w}\n"
                                             for r, w in zip(X, words)))
    got = datasets.load_dataset(path)
    assert np.allclose(got.X, X, rtol=0, atol=0)
    assert np.array_equal(got.y, (words == "yes").astype(float))  # "no" < "yes"
    named = datasets.load_table(path, label="label")
    assert np.array_equal(got.y, named.y) and np.array_equal(got.X, named.X)
    (tmp_path / "u.csv").write_text("a,b,label\n1,x,0\n2,3,1\n")
    with pytest.raises(ValueError, match="column 2: 'x' is not a number"):
        datasets.load_dataset(tmp_path / "u.csv")


def test_headerless_csv_with_text_labels_is_refused_whole(tmp_path):
    """Without a header, text labels are refused: read as a table, the first row would have
    become the header and a sample been lost."""
    path = tmp_path / "h.csv"
    path.write_text("1,2,yes\n3,4,no\n5,6,yes\n7,8,no\n")
    with pytest.raises(ValueError, match="line 1, column 3: 'yes' is not a number"):
        datasets.load_dataset(path)
