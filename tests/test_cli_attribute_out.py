"""`rif attribute --out DIR`: the three files it writes, read back against the JSON payload and
against the ranking they claim; --force; unwritable folders; --help. And progress bars that end
their line (or are cleared) before the next printed line."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from rif_native import _progress, cli
from rif_native.cli import main

from conftest import TextStream

FILES = ["attribute.json", "scores.csv", "top.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def npz(tmp_path, rng, capsys):
    n, d = 150, 6
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) + rng.standard_normal(n) > 0).astype(float)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    capsys.readouterr()  # the seed fixture's line
    return path, y


def _csv_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _snapshot(folder):
    return {name: ((folder / name).read_bytes(), (folder / name).stat().st_mtime_ns)
            for name in os.listdir(folder)}


@pytest.mark.parametrize("rank_by", ["abs", "helpful", "harmful"])
def test_out_writes_three_files_that_agree_with_the_json(capsys, tmp_path, npz, rank_by):
    path, y = npz
    out_dir = tmp_path / "new" / "out"
    common = ["attribute", "--data", path, "--top", 7, "--rank-by", rank_by, "--seed", 3,
              "--threads", 1]  # one thread: the two runs' sums in one order
    code, out, err = _run(capsys, *common, "--out", out_dir, "--quiet")
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == FILES == sorted(cli._OUTPUT_FILES["attribute"])
    assert "RIF (rescaled influence)" in out and "wrote" not in out  # --quiet: rankings only
    payload = json.loads((out_dir / "attribute.json").read_text())

    # the same run with --json -: the same scores (bit for bit) as attribute.json
    code, out, err = _run(capsys, *common, "--json", "-")
    assert code == 0, err
    stdout_payload = json.loads(out)
    assert set(stdout_payload) == set(payload)
    for key in ("train_indices", "scores_rif", "scores_if", "leverage", "split", "model",
                "metrics", "attribution"):
        assert stdout_payload[key] == payload[key], key

    head, rows = _csv_rows(out_dir / "scores.csv")
    assert head == ["index", "label", "score_rif", "score_if", "leverage", "rank_rif"]
    n_train = payload["split"]["n_train"]
    assert len(rows) == n_train == len(payload["scores_rif"]) == 120
    assert all(len(r) == len(head) for r in rows)
    index = np.array([int(r[0]) for r in rows])
    label = np.array([float(r[1]) for r in rows])
    rif, if_, lev = (np.array([float(r[j]) for r in rows]) for j in (2, 3, 4))
    rank = np.array([int(r[5]) for r in rows])
    # full float precision: equal, not close
    assert index.tolist() == payload["train_indices"]
    assert np.array_equal(label, y[index])
    assert rif.tolist() == payload["scores_rif"]
    assert if_.tolist() == payload["scores_if"]
    assert lev.tolist() == payload["leverage"]
    assert not np.array_equal(rif, if_)  # two different columns, not one written twice

    # rank: a permutation of 1..n that sorts the RIF scores in the --rank-by order
    assert sorted(rank.tolist()) == list(range(1, n_train + 1))
    by_rank = rif[np.argsort(rank)]
    key = {"abs": -np.abs(by_rank), "helpful": -by_rank, "harmful": by_rank}[rank_by]
    assert np.all(np.diff(key) >= 0), rank_by
    top = [entry["index"] for entry in payload["attribution"]["top_rif"]]
    assert index[np.argsort(rank)][:7].tolist() == top

    png = (out_dir / "top.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_existing_files_need_force(capsys, tmp_path, npz, monkeypatch):
    path, _ = npz
    out_dir = tmp_path / "out"
    # bare options: 'rif attribute'; one thread: the rerun's sums in the same order
    argv = ["--data", path, "--out", out_dir, "--quiet", "--threads", 1]
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    before = _snapshot(out_dir)
    assert sorted(before) == FILES

    monkeypatch.setattr(cli, "_prepare", lambda args: pytest.fail("work started"))
    code, out, err = _run(capsys, "attribute", *argv)
    assert code == 2 and out == ""
    assert err.startswith("rif: error: ") and err.count("\n") == 1, err
    assert "already holds attribute.json, scores.csv, top.png" in err and "--force" in err
    assert _snapshot(out_dir) == before  # same names, bytes and times: nothing touched
    monkeypatch.undo()

    (out_dir / "scores.csv").write_text("stale\n")
    code, out, err = _run(capsys, "attribute", *argv, "--force")
    assert code == 0, err
    after = _snapshot(out_dir)
    assert sorted(after) == FILES  # no temporaries left
    assert after["scores.csv"][0] == before["scores.csv"][0]  # rewritten, same content


def test_unwritable_out_is_one_line_and_exit_2(capsys, npz, monkeypatch):
    path, _ = npz
    monkeypatch.setattr(cli, "_prepare", lambda args: pytest.fail("work started"))
    code, out, err = _run(capsys, "attribute", "--data", path, "--out", "/proc/x")
    assert code == 2 and out == ""
    assert err.startswith("rif: error: ") and err.count("\n") == 1, err
    assert "/proc/x" in err and "Traceback" not in err


def test_without_out_nothing_is_written(capsys, tmp_path, npz, monkeypatch):
    path, _ = npz
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = _run(capsys, "attribute", "--data", path, "--quiet")
    assert code == 0, err
    assert os.listdir(work) == [] and "RIF (rescaled influence)" in out


def test_help_names_the_files(capsys):
    code, out, _ = _run(capsys, "attribute", "--help")
    assert code == 0
    text = " ".join(out.split())
    for name in FILES:
        assert name in text
    option = text[text.index("--out DIR "):text.index("--force ")]
    assert "scores.csv" in option and "top.png" in option and "attribute.json" in option


# --------------------------------------------------------------------------------------------
# progress bars
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("terminal", [True, False])
def test_a_bar_ends_or_clears_its_line(monkeypatch, terminal):
    """On a terminal the bar clears itself and returns to the line's start; elsewhere (a log)
    its line ends with a newline. Both for a loop that ends and for one that is left early
    (Ctrl-C), whose bar close_bars() closes."""
    for early in (False, True):
        stream = TextStream(terminal)
        monkeypatch.setattr(sys, "stderr", stream)
        bar = _progress.progress(range(5), desc="testing", total=5)
        for i in bar:
            if early and i == 2:
                break
        if early:
            assert _progress.bar_open()
            _progress.close_bars()
        assert not _progress.bar_open()
        text = stream.getvalue()
        assert "testing" in text
        if terminal:
            last = text.rsplit("\r", 2)
            assert text.endswith("\r") and last[-2].strip() == "", repr(text)
        else:
            assert text.endswith("\n") and text.count("\n") == 1, repr(text)
            assert ("5/5" in text.splitlines()[-1].rsplit("\r", 1)[-1]) != early, repr(text)
        bar.close()  # the generator's own cleanup after close_bars(): no second line
        assert stream.getvalue() == text


def test_experiment_log_keeps_bar_and_lines_apart(tmp_path, npz):
    """stdout and stderr of `rif experiment` into one pipe (as in a CI log, stdout not
    line-buffered): the retraining bar is on lines of its own, after the lines printed before
    it and before the 'retrained ...' line."""
    path, _ = npz
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    env.pop("PYTHONWARNINGS", None)
    # 7 strategies x 3 sizes: more sets than one batch of 16, so the bar is drawn
    proc = subprocess.run(
        [sys.executable, "-m", "rif_native.cli", "experiment", "--data", str(path), "--out",
         str(tmp_path / "exp"), "--sizes", "3", "--metrics", "test_loss"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, timeout=300)
    text = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, text
    m = int(re.search(r"(\d+) removal sets", text).group(1))
    assert m > 16, text  # more sets than one batch: the bar is drawn
    lines = text.split("\n")
    bar = [i for i, line in enumerate(lines) if "retraining:" in line]  # tqdm's "desc:"
    done = [i for i, line in enumerate(lines) if f"retrained {m} sets" in line]
    sets = [i for i, line in enumerate(lines) if f"{m} removal sets" in line]
    assert bar and len(done) == 1 and len(sets) == 1, text
    assert sets[0] < bar[0] and bar[-1] < done[0], text
    assert lines[done[0]].startswith("           retrained"), repr(lines[done[0]])
    assert all("retrained" not in lines[i] and "removal sets" not in lines[i] for i in bar), text
