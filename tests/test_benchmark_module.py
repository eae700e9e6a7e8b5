"""The benchmark harness behind `rif benchmark`: baselines agree with rif-native, the floor
formula, and the table it writes. (Timings themselves are for benchmarks/, not tests.)"""

import numpy as np
import pytest

from rif_native import benchmark as rb
from rif_native.cli import main


def test_baselines_compute_what_rif_native_computes():
    p = rb.make_problem(400, 60, seed=5)
    h, s = rb.ours(p)
    for name, fn in rb.BASELINES.items():
        hb, sb = fn(p)
        assert np.linalg.norm(h - hb) <= 1e-10 * np.linalg.norm(hb), name
        assert np.linalg.norm(s - sb) <= 1e-8 * np.linalg.norm(sb), name


def test_check_equal_catches_a_wrong_baseline(monkeypatch):
    p = rb.make_problem(300, 40, seed=6)
    monkeypatch.setitem(rb.BASELINES, "broken", lambda q: (rb.ours(q)[0] * 1.01, rb.ours(q)[1]))
    with pytest.raises(AssertionError, match="broken disagrees with rif-native on leverage"):
        rb.check_equal(p)


def test_floor_formula():
    assert rb.floor_seconds(9600, 2048, 1e11) == pytest.approx(
        (2 * 9600 * 2048**2 + 2048**3 / 3) / 1e11)


def test_run_table2_and_markdown(tmp_path):
    result = rb.run_table2({"tiny": (300, 40)}, repeat=1, log=lambda s: None)
    (row,) = result["rows"]
    assert row["n"] == 300 and row["d"] == 40
    for key in ("ours_s", "scipy_s", "numpy_paper_s", "floor_s"):
        assert row[key] > 0
    assert set(row["ours_stages"]) == {"hessian", "cholesky", "leverage"}
    table = rb.table2_markdown(result)
    assert "| tiny | 300 | 40 | n/a |" in table and result["machine"] in table


def test_cli_benchmark_rejects_unknown_shape(capsys):
    assert main(["benchmark", "--shapes", "NoSuchData", "--quiet"]) == 2
    assert "invalid choice" in capsys.readouterr().err
