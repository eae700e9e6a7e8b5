"""The CLI on tables by column name: --label, --id and --one-hot against the same data encoded
by pandas' own get_dummies and written as a plain numeric CSV (label last), Parquet, and the
errors."""

from __future__ import annotations

import csv

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
                 "id", "--one-hot", "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "note: one-hot 'colour': 3 values, 2 columns ('blue' is the reference" in err
    assert "'no' -> 0, 'yes' -> 1" in err
    assert " id label" in out
    assert main(["attribute", "--data", str(tmp_path / "n.csv"), "--quiet", "--out",
                 str(tmp_path / "b")]) == 0
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
                     "--quiet", "--out", str(tmp_path / name.replace(".", "_"))]) == 0
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
