"""``rif`` with X read from disk block by block: a memory-mapped .npy, .npy shards (a folder or
--data given several times), a Zarr store and an HDF5 file, each against the same data in memory
(an .npz whose X_test is the same contiguous last part) and against the library itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rif_native
from rif_native import _memory
from rif_native.cli import main
from rif_native.datasets import load_dataset
from rif_native.metrics import TestLoss

N, D, L2, FRACTION = 120, 12, 0.5, 0.25
N_TRAIN = N - int(round(FRACTION * N))
CONTIGUOUS = "contiguous: the data are read from disk, not shuffled"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, out, err, *fragments):
    assert code == 2, (code, err)
    assert out == ""
    assert err.startswith("rif: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)


def _problem(family="logistic", seed=2024):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) / np.sqrt(D)
    z = X @ (2.0 * rng.normal(size=D)) + 0.2
    if family == "logistic":
        y = (rng.random(N) < 1.0 / (1.0 + np.exp(-z))).astype(float)
    elif family == "poisson":
        y = rng.poisson(np.exp(0.5 * z)).astype(float)
    else:
        y = z + rng.normal(size=N)
    return X, y


@pytest.fixture
def data(tmp_path):
    X, y = _problem()
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return folder, X, y


def _attribute(capsys, tmp_path, *argv, family="logistic", name="out"):
    """`rif attribute ... --json` (quiet): the JSON and stdout."""
    out_json = tmp_path / f"{name}.json"
    code, out, err = _run(capsys, "attribute", *argv, "--l2", L2, "--family", family,
                          "--test-fraction", FRACTION, "--top", 5, "--json", out_json, "--quiet",
                          "--force")
    assert code == 0, err
    assert err == ""
    return json.loads(out_json.read_text()), out


def _in_memory(capsys, tmp_path, X, y, family="logistic"):
    """The same data from an .npz held in memory, its test part the last rows (the split the
    data on disk get)."""
    path = tmp_path / "reference.npz"
    np.savez(path, X=X[:N_TRAIN], y=y[:N_TRAIN], X_test=X[N_TRAIN:], y_test=y[N_TRAIN:])
    return _attribute(capsys, tmp_path, "--data", path, family=family, name="reference")[0]


def _assert_same(got, ref):
    for key in ("scores_rif", "scores_if", "leverage"):
        np.testing.assert_allclose(np.array(got[key], dtype=float),
                                   np.array(ref[key], dtype=float), rtol=1e-9, atol=1e-12)
    assert got["train_indices"] == ref["train_indices"] == list(range(N_TRAIN))
    for key in ("top_rif", "top_if"):
        assert [e["index"] for e in got["attribution"][key]] == \
            [e["index"] for e in ref["attribution"][key]]
    for key, value in ref["metrics"].items():
        assert got["metrics"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert got["model"]["n_iter"] == ref["model"]["n_iter"]
    split = got["split"]
    assert split["contiguous"] is True and CONTIGUOUS in split["how"]
    assert split["test_indices"] == list(range(N_TRAIN, N))


# --------------------------------------------------------------------------------------------
# each form of --data against the same data in memory
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["logistic", "squared", "poisson"])
def test_npy_is_memory_mapped_and_matches_memory(capsys, tmp_path, family):
    X, y = _problem(family)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    dataset = load_dataset(tmp_path / "X.npy", tmp_path / "y.npy")
    assert isinstance(dataset.X, np.memmap) and dataset.on_disk  # never read whole
    got, _ = _attribute(capsys, tmp_path, "--data", tmp_path / "X.npy", "--labels",
                        tmp_path / "y.npy", family=family)
    _assert_same(got, _in_memory(capsys, tmp_path, X, y, family))
    assert got["dataset"]["storage"] == "memory-mapped .npy"


def test_rankings_match_the_library_on_the_contiguous_split(capsys, tmp_path, data):
    folder, X, y = data
    got, out = _attribute(capsys, tmp_path, "--data", folder / "X.npy", "--labels",
                          folder / "y.npy", "--rank-by", "helpful")
    Xtr, ytr, Xte, yte = X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]
    theta = rif_native.fit(Xtr, ytr, l2=L2, fit_intercept=True).theta
    direction = TestLoss(Xte, yte, fit_intercept=True).gradient(theta)
    A = rif_native.Attribution(Xtr, ytr, theta, l2=L2, fit_intercept=True)
    top = A.top(direction, 5)
    assert [e["index"] for e in got["attribution"]["top_rif"]] == top.increase.tolist()
    np.testing.assert_allclose([e["score"] for e in got["attribution"]["top_rif"]],
                               top.increase_scores, rtol=1e-9)
    assert [e["index"] for e in got["attribution"]["top_if"]] == \
        A.top(direction, 5, method="if").increase.tolist()
    assert "RIF (rescaled influence)" in out


def test_printed_split_says_contiguous(capsys, data):
    folder, _, _ = data
    code, out, err = _run(capsys, "--data", folder / "X.npy", "--labels", folder / "y.npy",
                          "--test-fraction", FRACTION)
    assert code == 0, err
    split = next(line for line in out.splitlines() if line.startswith("split"))
    assert f"train {N_TRAIN}, test {N - N_TRAIN}" in split and CONTIGUOUS in split
    assert "memory-mapped .npy, read block by block" in out


def test_shards_folder_and_repeated_data(capsys, tmp_path, data):
    folder, X, y = data
    shards = tmp_path / "shards"
    shards.mkdir()
    bounds = [0, 37, 87, N]  # the last shard straddles the train/test boundary
    for j in reversed(range(3)):  # written out of order: read in name order
        np.save(shards / f"part-{j:02d}.npy", X[bounds[j]:bounds[j + 1]].astype(np.float32))
    (shards / "README.txt").write_text("not a shard")
    ref = _in_memory(capsys, tmp_path, X.astype(np.float32).astype(float), y)
    got, _ = _attribute(capsys, tmp_path, "--data", shards, "--labels", folder / "y.npy")
    _assert_same(got, ref)
    assert got["dataset"]["storage"] == "3 .npy shards"
    repeated = [a for j in range(3) for a in ("--data", shards / f"part-{j:02d}.npy")]
    got, _ = _attribute(capsys, tmp_path, *repeated, "--labels", folder / "y.npy")
    _assert_same(got, ref)


def test_a_shard_without_rows_is_stacked_as_the_library_stacks_it(capsys, tmp_path, data):
    """A partition writer may leave a part with no rows: it adds none (as in open_source);
    only shards that hold no rows at all are refused."""
    folder, X, y = data
    shards = tmp_path / "shards"
    shards.mkdir()
    for j, (a, b) in enumerate([(0, 0), (0, 50), (50, 50), (50, N)]):
        np.save(shards / f"part-{j}.npy", X[a:b])
    got, _ = _attribute(capsys, tmp_path, "--data", shards, "--labels", folder / "y.npy")
    _assert_same(got, _in_memory(capsys, tmp_path, X, y))
    assert got["dataset"]["storage"] == "4 .npy shards"
    none = tmp_path / "none"
    none.mkdir()
    np.save(none / "part-0.npy", X[:0])
    np.save(none / "part-1.npy", X[:0])
    code, out, err = _run(capsys, "--data", none, "--labels", folder / "y.npy")
    _assert_one_line_error(code, out, err, none, "X is empty", f"(0, {D})")


def test_a_folder_among_several_data_is_refused_saying_what_to_give(capsys, tmp_path, data):
    """--data given several times stacks .npy shards; a folder (of shards, or a Zarr store)
    among them is refused saying so, not as 'the data file is not a regular file (a folder or
    a device)'."""
    folder, X, _ = data
    zarr = pytest.importorskip("zarr")
    zarr.create_array(str(tmp_path / "X.zarr"), shape=X.shape, dtype="f8")[:] = X
    for other in (folder, tmp_path / "X.zarr"):
        code, out, err = _run(capsys, "--data", folder / "X.npy", "--data", other, "--labels",
                              folder / "y.npy")
        _assert_one_line_error(code, out, err, other, "is a folder", "several times",
                               ".npy files")
        assert "regular file" not in err


def test_zarr_store(capsys, tmp_path, data):
    zarr = pytest.importorskip("zarr")
    folder, X, y = data
    z = zarr.open_array(str(tmp_path / "X.zarr"), mode="w", shape=X.shape, chunks=(16, D),
                        dtype="f8")
    z[:] = X
    ref = _in_memory(capsys, tmp_path, X, y)
    got, _ = _attribute(capsys, tmp_path, "--data", tmp_path / "X.zarr", "--labels",
                        folder / "y.npy")
    _assert_same(got, ref)
    # a group with one 2-D array (and a 1-D one), found or named
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("features", shape=X.shape, chunks=(25, D), dtype="f8")[:] = X
    group.create_array("other", shape=(N,), dtype="f8")
    for spec in (tmp_path / "g.zarr", f"{tmp_path / 'g.zarr'}:features"):
        got, _ = _attribute(capsys, tmp_path, "--data", spec, "--labels", folder / "y.npy")
        _assert_same(got, ref)


def test_hdf5_file(capsys, tmp_path, data):
    h5py = pytest.importorskip("h5py")
    folder, X, y = data
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("features", data=X, chunks=(10, D))
        f["labels"] = y  # 1-D: not a candidate for X
    ref = _in_memory(capsys, tmp_path, X, y)
    for spec in (tmp_path / "d.h5", f"{tmp_path / 'd.h5'}:features"):
        got, _ = _attribute(capsys, tmp_path, "--data", spec, "--labels", folder / "y.npy")
        _assert_same(got, ref)
        assert got["dataset"]["storage"] == "HDF5 dataset /features"


# --------------------------------------------------------------------------------------------
# progress bars
# --------------------------------------------------------------------------------------------


def test_progress_bars_on_stderr_and_none_with_quiet(capsys, data):
    folder, _, _ = data
    args = ("--data", folder / "X.npy", "--labels", folder / "y.npy", "--top", 3)
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert "reading X (training rows), pass 1" in err
    assert "reading" not in out and "\r" not in out  # the tables stay clean
    code, out, err = _run(capsys, *args, "--quiet")
    assert code == 0 and err == "", err
    assert "RIF (rescaled influence)" in out


# --------------------------------------------------------------------------------------------
# errors: one line naming the path
# --------------------------------------------------------------------------------------------


def test_folder_without_npy(capsys, tmp_path, data):
    folder, _, _ = data
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    code, out, err = _run(capsys, "--data", empty, "--labels", folder / "y.npy")
    _assert_one_line_error(code, out, err, empty, "holds no .npy files")


def test_shards_of_different_widths(capsys, tmp_path, data):
    folder, X, _ = data
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "a.npy", X[:60])
    np.save(shards / "b.npy", X[60:, :-1])
    code, out, err = _run(capsys, "--data", shards, "--labels", folder / "y.npy")
    _assert_one_line_error(code, out, err, shards / "b.npy", f"has {D - 1} columns but",
                           "same number of columns")
    code, out, err = _run(capsys, "--data", shards / "a.npy", "--data", shards / "b.npy",
                          "--labels", folder / "y.npy")
    _assert_one_line_error(code, out, err, shards / "b.npy", "same number of columns")
    # labels in the shards' folder are a 1-D shard
    np.save(shards / "b.npy", X[60:])
    np.save(shards / "y.npy", np.zeros(N))
    code, out, err = _run(capsys, "--data", shards, "--labels", folder / "y.npy")
    _assert_one_line_error(code, out, err, shards / "y.npy", "must be 2-D", "the labels?")


def test_hdf5_with_several_datasets_needs_a_name(capsys, tmp_path, data):
    h5py = pytest.importorskip("h5py")
    folder, X, _ = data
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["a"] = X
        f["b"] = X[:, :3]
    code, out, err = _run(capsys, "--data", path, "--labels", folder / "y.npy")
    _assert_one_line_error(code, out, err, path, "several 2-D datasets (/a, /b)", f"{path}:NAME")
    code, out, err = _run(capsys, "--data", f"{path}:c", "--labels", folder / "y.npy")
    _assert_one_line_error(code, out, err, path, "no dataset 'c'")
    code, out, err = _run(capsys, "--data", f"{path}:b", "--labels", folder / "y.npy", "--quiet")
    assert code == 0, err


def test_missing_or_wrong_labels(capsys, tmp_path, data):
    h5py = pytest.importorskip("h5py")
    folder, X, y = data
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["X"] = X
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "0.npy", X)
    for spec in (folder / "X.npy", shards, tmp_path / "d.h5"):
        code, out, err = _run(capsys, "--data", spec)
        _assert_one_line_error(code, out, err, spec, "--labels PATH")
    code, out, err = _run(capsys, "--data", shards / "0.npy", "--data", shards / "0.npy")
    _assert_one_line_error(code, out, err, shards / "0.npy", "--labels PATH")
    np.save(tmp_path / "short.npy", y[:-1])
    code, out, err = _run(capsys, "--data", tmp_path / "d.h5", "--labels", tmp_path / "short.npy")
    _assert_one_line_error(code, out, err, "d.h5", f"X has {N} rows but y has {N - 1} labels")
    np.save(tmp_path / "one_class_first.npy", np.r_[np.zeros(N_TRAIN), np.ones(N - N_TRAIN)])
    code, out, err = _run(capsys, "--data", folder / "X.npy", "--labels",
                          tmp_path / "one_class_first.npy", "--test-fraction", FRACTION)
    _assert_one_line_error(code, out, err, "single class", "not shuffled")


@pytest.mark.parametrize("row", [5, N - 3])
def test_nan_in_x_on_disk_is_named_by_row(capsys, tmp_path, data, row):
    folder, X, _ = data
    X = X.copy()
    X[row, 2] = np.nan
    np.save(tmp_path / "nan.npy", X)
    code, out, err = _run(capsys, "--data", tmp_path / "nan.npy", "--labels", folder / "y.npy",
                          "--test-fraction", FRACTION, "--quiet")
    _assert_one_line_error(code, out, err, tmp_path / "nan.npy", "NaN or inf",
                           f"row {row}, column 2")


def test_several_data_must_be_npy_shards(capsys, tmp_path, data):
    folder, X, y = data
    np.savez(tmp_path / "d.npz", X=X, y=y)
    code, out, err = _run(capsys, "--data", folder / "X.npy", "--data", tmp_path / "d.npz",
                          "--labels", folder / "y.npy")
    _assert_one_line_error(code, out, err, tmp_path / "d.npz", ".npy shards")


# --------------------------------------------------------------------------------------------
# the commands that hold X in memory read data on disk whole, when they fit
# --------------------------------------------------------------------------------------------


def test_search_reads_shards_whole_or_says_which_command_can(capsys, tmp_path, data,
                                                              monkeypatch):
    folder, X, _ = data
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "0.npy", X[:50])
    np.save(shards / "1.npy", X[50:])
    argv = ("search", "--data", shards, "--labels", folder / "y.npy", "--k", 3, "--l2", L2,
            "--quiet")
    code, out, err = _run(capsys, *argv, "--out", tmp_path / "s1")
    assert code == 0, err
    assert (tmp_path / "s1" / "search.json").is_file()
    monkeypatch.setattr(_memory, "available", lambda: (1024, "available memory"))
    code, out, err = _run(capsys, *argv, "--out", tmp_path / "s2")
    _assert_one_line_error(code, out, err, shards, "'rif search' holds X in memory",
                           "only 'rif attribute' reads --data block by block")
    assert not (tmp_path / "s2").exists()


def test_experiment_commands_keep_the_in_memory_nan_message(capsys, tmp_path, data):
    folder, X, _ = data
    X = X.copy()
    X[7, 1] = np.inf
    np.save(tmp_path / "inf.npy", X)
    code, out, err = _run(capsys, "search", "--data", tmp_path / "inf.npy", "--labels",
                          folder / "y.npy", "--out", tmp_path / "s")
    _assert_one_line_error(code, out, err, "inf.npy", "X contains NaN or infinity (first at "
                           "row 7, column 1)")
