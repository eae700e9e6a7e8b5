"""The CLI on tables by column name: --label, --id and --one-hot against the same data encoded
by pandas' own get_dummies and written as a plain numeric CSV (label last), Parquet, and the
errors. Runs compared bit for bit use one thread each."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from rif_native.cli import main  # noqa: E402


def _table(rng, n=300):
    df = pd.DataFrame({"id": [f"p{i:03d}" for i in range(n)],
                       "age": rng.integers(18, 90, n),
                       "colour": rng.choice(["red", "green", "blue"], n),
                       "income": rng.normal(5.0, 1.0, n).round(3)})
    logit = (df["age"] - 50) / 10 + (df["colour"] == "red") - 0.5 * df["income"] + 2.5
    df["outcome"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return df


def _scores(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_table_by_column_equals_the_encoded_numeric_csv(rng, tmp_path, capsys):
    df = _table(rng)
    df.to_csv(tmp_path / "t.csv", index=False)
    encoded = pd.get_dummies(df.drop(columns=["id", "outcome"]), columns=["colour"],
                             drop_first=True, dtype=float)
    encoded["y"] = (df["outcome"] == "yes").astype(float)
    encoded.to_csv(tmp_path / "n.csv", index=False)
    assert main(["attribute", "--data", str(tmp_path / "t.csv"), "--label", "outcome", "--id",
                 "id", "--one-hot", "--threads", "1", "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "note: one-hot 'colour': 3 values, 2 columns ('blue' is the reference" in err
    assert "'no' -> 0, 'yes' -> 1" in err
    assert " id label" in out
    assert main(["attribute", "--data", str(tmp_path / "n.csv"), "--quiet", "--threads", "1",
                 "--out", str(tmp_path / "b")]) == 0
    a, b = _scores(tmp_path / "a" / "scores.csv"), _scores(tmp_path / "b" / "scores.csv")
    assert [r["index"] for r in a] == [r["index"] for r in b]
    assert [r["score_rif"] for r in a] == [r["score_rif"] for r in b]
    assert all(r["id"] == df["id"][int(r["index"])] for r in a)


def test_parquet_data(rng, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    df = _table(rng)
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    for name in ("t.csv", "t.parquet"):
        assert main(["attribute", "--data", str(tmp_path / name), "--id", "id", "--one-hot",
                     "--quiet", "--threads", "1", "--out",
                     str(tmp_path / name.replace(".", "_"))]) == 0
    capsys.readouterr()
    a = _scores(tmp_path / "t_csv" / "scores.csv")
    b = _scores(tmp_path / "t_parquet" / "scores.csv")
    assert [r["score_rif"] for r in a] == [r["score_rif"] for r in b]


def test_audit_by_a_one_hot_column_name(rng, tmp_path, capsys):
    df = _table(rng)
    df.to_csv(tmp_path / "t.csv", index=False)
    code = main(["audit", "--data", str(tmp_path / "t.csv"), "--label", "outcome", "--id", "id",
                 "--one-hot", "--coef", "colour=red", "--quiet", "--out", str(tmp_path / "u")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "sign of colour=red" in out


@pytest.mark.parametrize("argv, message", [
    (["--label", "outcome"], "'id', 'colour' are not numbers: pass --one-hot"),
    (["--label", "nosuch", "--one-hot"], "--label 'nosuch' is not a column"),
    (["--id", "outcome", "--label", "outcome", "--one-hot"], "same column"),
])
def test_errors_are_one_line(rng, tmp_path, capsys, argv, message):
    _table(rng).to_csv(tmp_path / "t.csv", index=False)
    code = main(["attribute", "--data", str(tmp_path / "t.csv"), *argv])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and err.count("\n") == 1


def test_table_options_need_a_table(capsys):
    assert main(["attribute", "--one-hot"]) == 2
    assert "--data FILE.csv" in capsys.readouterr()[1]


def test_every_command_help_lists_its_files(capsys):
    from rif_native import cli

    for command, files in cli._OUTPUT_FILES.items():
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr()[0].split())
        assert "Output files" in text, command
        for name in files:
            assert name in text, (command, name)


def test_ids_as_written_and_blank_ids_refused(rng, tmp_path, capsys):
    df = _table(rng)
    df["id"] = [f"{i:04d}" for i in range(len(df))]  # "0007" must stay "0007"
    df.to_csv(tmp_path / "t.csv", index=False)
    assert main(["attribute", "--data", str(tmp_path / "t.csv"), "--id", "id", "--one-hot",
                 "--quiet", "--out", str(tmp_path / "a")]) == 0
    rows = _scores(tmp_path / "a" / "scores.csv")
    assert all(r["id"] == f"{int(r['index']):04d}" for r in rows)
    df.loc[7, "id"] = None
    df.to_csv(tmp_path / "b.csv", index=False)
    code = main(["attribute", "--data", str(tmp_path / "b.csv"), "--id", "id", "--one-hot",
                 "--out", str(tmp_path / "b")])
    _, err = capsys.readouterr()
    assert code == 2 and "is empty on 1 row(s), the first data row 8" in err
    assert not (tmp_path / "b").exists()


def test_audit_names_the_removed_by_id(rng, tmp_path, capsys):
    df = _table(rng)
    df.to_csv(tmp_path / "t.csv", index=False)
    assert main(["audit", "--data", str(tmp_path / "t.csv"), "--label", "outcome", "--id", "id",
                 "--one-hot", "--coef", "colour=red", "--quiet", "--max-fraction", "0.3",
                 "--out", str(tmp_path / "u")]) == 0
    out, _ = capsys.readouterr()
    payload = json.loads((tmp_path / "u" / "audit.json").read_text())
    for m, r in payload.items():
        assert len(r["removed_rows"]) == len(r["removed"])
        assert r["removed_ids"] == [df["id"][j] for j in r["removed_rows"]]
        if r["removed_ids"]:
            assert f"{m.upper()} removes (ids): {r['removed_ids'][0]}" in out


def test_search_names_the_removed_by_id(rng, tmp_path, capsys):
    """search --id: the id column is no feature, and each chosen set is named by rows and ids;
    the RIF sets are the top of `rif attribute`'s RIF scores on the same split (the test part,
    60 points, is the whole of the metric's subset)."""
    df = _table(rng)
    df.to_csv(tmp_path / "t.csv", index=False)
    table = ["--data", str(tmp_path / "t.csv"), "--label", "outcome", "--id", "id", "--one-hot"]
    assert main(["search", *table, "--k", "3,11", "--out", str(tmp_path / "s")]) == 0
    out, _ = capsys.readouterr()
    assert main(["attribute", *table, "--quiet", "--json", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    att = json.loads((tmp_path / "a.json").read_text())
    assert att["dataset"]["n_features"] == 4  # age, income, colour=green, colour=red
    rows = json.loads((tmp_path / "s" / "search.json").read_text())
    scores = dict(zip(att["train_indices"], att["scores_rif"]))
    top = sorted(scores, key=lambda i: -scores[i])
    with open(tmp_path / "s" / "search.csv", newline="") as fh:
        cells = list(csv.DictReader(fh))
    for r, c in zip(rows, cells):
        assert r["removed_ids"] == [df["id"][j] for j in r["removed_rows"]]
        assert c["removed_ids"].split() == r["removed_ids"]
        if r["method"] == "rif":
            assert r["removed_rows"] == top[:r["k"]]
        assert " ".join(r["removed_ids"][:8]) in out
    assert "removed (ids)" in out


@pytest.mark.parametrize("command, extra, result", [
    ("experiment", ["--sizes", "2", "--strategies", "random"], "summary.json"),
    ("poisoning", ["--points", "2"], "poisoning.json"),
    ("sweep", ["--n-fractions", "0.5,1", "--l2-factors", "1", "--sizes", "2"], "sweep.json"),
])
def test_id_is_taken_out_of_the_features(rng, tmp_path, capsys, command, extra, result):
    """--id in the commands that name no samples: the same results as the table without the
    id column (before, --one-hot encoded the ids as 299 features, or --id was refused)."""
    df = _table(rng)
    for name in ("t", "n"):  # one file name: the results name the data set
        (tmp_path / name).mkdir()
    df.to_csv(tmp_path / "t" / "d.csv", index=False)
    df.drop(columns=["id"]).to_csv(tmp_path / "n" / "d.csv", index=False)
    runs = {}
    for name, ids in (("t", ["--id", "id"]), ("n", [])):
        code = main([command, "--data", str(tmp_path / name / "d.csv"), "--label", "outcome",
                     *ids, "--one-hot", "--threads", "1", "--quiet", *extra,
                     "--out", str(tmp_path / f"out_{name}")])
        assert code == 0, capsys.readouterr()[1]
        runs[name] = json.loads((tmp_path / f"out_{name}" / result).read_text())
    capsys.readouterr()
    assert runs["t"] == runs["n"]


def test_search_csv_ids_with_spaces_read_back(rng, tmp_path, capsys):
    """search.csv's cells of ids: ids holding spaces or quotes come back whole through
    shlex.split (joined by spaces, "p 1 x" was three ids)."""
    import shlex

    df = _table(rng)
    df["id"] = [f"p {i} \"o'k\"" if i % 3 else f"p{i}" for i in range(len(df))]
    df.to_csv(tmp_path / "t.csv", index=False)
    assert main(["search", "--data", str(tmp_path / "t.csv"), "--label", "outcome", "--id", "id",
                 "--one-hot", "--k", "4", "--quiet", "--out", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    rows = json.loads((tmp_path / "s" / "search.json").read_text())
    with open(tmp_path / "s" / "search.csv", newline="") as fh:
        cells = list(csv.DictReader(fh))
    assert len(rows) == len(cells) > 0
    for r, c in zip(rows, cells):
        assert r["removed_ids"] == [df["id"][j] for j in r["removed_rows"]]
        assert shlex.split(c["removed_ids"]) == r["removed_ids"]
        assert [int(v) for v in shlex.split(c["removed_rows"])] == r["removed_rows"]
