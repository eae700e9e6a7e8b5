"""Tests for rif_native.plots: the files written, their formats and sizes, and the edge cases.

The figures are checked as files (PNG magic and IHDR size read with struct, PDF header) and, through
the private builders, for what the legends and notes say; matplotlib is only imported lazily by the
module, through Figure + an Agg canvas, so no display and no pyplot are ever involved.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from rif_native import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STRATEGIES = ("random", "feature_cluster", "l2_cluster", "top_if_test_loss_pos", "top_if_test_loss_neg")
METRICS = ("test_prediction", "test_loss", "self_loss")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def png_size(path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first after the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} does not start with the PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, f"{path}: first chunk is {kind!r}, expected IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_outputs(paths, stem) -> tuple[int, int]:
    """Both files exist where promised, are non-empty and have the right magic bytes."""
    assert [p.name for p in paths] == [stem.name + ".png", stem.name + ".pdf"]
    png, pdf = paths
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, f"{p} missing or nearly empty"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    return png_size(png)


def legend_texts(fig) -> list[str]:
    texts = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
    for legend in fig.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    return texts


def panel_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def close(fig) -> None:
    fig.clear()


def table_rows(rng, metrics=METRICS, per_metric=25, if_scale=0.4, with_ns=True):
    """Synthetic experiment table rows: IF shrunk by if_scale, RIF and NS close to the truth."""
    rows = []
    set_id = 0
    for metric in metrics:
        for k in range(per_metric):
            actual = float(rng.normal() * (1 + k / 10))
            if metric == "self_loss":
                actual = abs(actual)
            row = {
                "set_id": set_id,
                "strategy": STRATEGIES[k % len(STRATEGIES)],
                "size": 1 + k,
                "metric": metric,
                "actual": actual,
                "if": if_scale * actual + 0.02 * float(rng.normal()),
                "rif": 0.97 * actual + 0.02 * float(rng.normal()),
            }
            if with_ns:
                row["ns"] = actual + 0.005 * float(rng.normal())
            rows.append(row)
            set_id += 1
    return rows


def sweep_rows(rng, settings_as_text=False):
    rows = []
    for sweep, values in (("n", (100, 200, 400, 800)), ("l2", (1e-3, 1e-2, 1e-1, 1.0))):
        for value in values:
            for metric in METRICS[:2]:
                for method, base in (("if", 0.4), ("rif", 0.95), ("ns", 1.0)):
                    row = {
                        "sweep": sweep,
                        "setting": f"{sweep}={value:g}" if settings_as_text else value,
                        "metric": metric,
                        "method": method,
                        "slope": base + 0.02 * float(rng.normal()),
                        "pearson": min(1.0, base + 0.05),
                    }
                    if settings_as_text:
                        del row["sweep"]
                    rows.append(row)
    return rows


def poison_rows(rng, count=30):
    rows = []
    for point in range(count):
        actual = -abs(float(rng.normal())) * 2
        rows.append({"point": point, "actual": actual, "if": 0.3 * actual,
                     "rif": 0.95 * actual + 0.05 * float(rng.normal())})
    return rows


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# --------------------------------------------------------------------------------------------
# slope and number formatting
# --------------------------------------------------------------------------------------------


def test_slope_through_origin_matches_formula_and_skips_nonfinite(rng):
    x = rng.normal(size=50)
    y = 0.7 * x + 0.01 * rng.normal(size=50)
    expected = float(np.sum(x * y) / np.sum(x * x))
    assert plots.slope_through_origin(x, y) == pytest.approx(expected, rel=1e-12)
    x_bad = np.append(x, [np.nan, 1.0, np.inf])
    y_bad = np.append(y, [1.0, np.inf, 2.0])
    assert plots.slope_through_origin(x_bad, y_bad) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(plots.slope_through_origin([0.0, np.nan], [1.0, 2.0]))
    with pytest.raises(ValueError, match="must match"):
        plots.slope_through_origin([1.0, 2.0], [1.0])


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e300])
def test_slope_and_correlation_do_not_overflow_at_extreme_scales(rng, scale):
    """Effects of 1e200 or 1e-200 gave NaN slopes and correlations (x * x overflowed to inf or
    underflowed to 0, with a RuntimeWarning) where the scale-free answers are ordinary numbers."""
    from rif_native._stats import agreement, pearson

    x = rng.normal(size=40)
    y = 0.8 * x + 0.1 * rng.normal(size=40)
    slope = float(np.sum(x * y) / np.sum(x * x))
    r = float(np.corrcoef(x, y)[0, 1])
    assert plots.slope_through_origin(x * scale, y * scale) == pytest.approx(slope, rel=1e-12)
    assert plots.slope_through_origin(x * scale, y) == pytest.approx(slope / scale, rel=1e-12)
    assert pearson(x * scale, y * scale) == pytest.approx(r, rel=1e-12)
    stats = agreement(x * scale, y * scale)
    assert stats["slope"] == pytest.approx(slope, rel=1e-12)
    assert stats["pearson"] == pytest.approx(r, rel=1e-12)
    rows = [{"metric": "m", "actual": a * scale, "if": b * scale} for a, b in zip(x, y)]
    fig = plots._build_figure1(rows)
    assert f"IF  (slope {plots._fmt(slope)})" in legend_texts(fig)
    close(fig)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.98213, "0.982"), (0.41, "0.410"), (12.345, "12.3"), (1234.5, "1230"), (0.99996, "1.00"),
     (-0.012345, "-0.0123"), (1e-7, "1.00e-07"), (0.0, "0"), (math.nan, "nan"), (math.inf, "inf")],
)
def test_three_significant_digits(value, text):
    assert plots._fmt(value) == text


# --------------------------------------------------------------------------------------------
# figure 1
# --------------------------------------------------------------------------------------------


def with_bad_values(rows):
    """Spoil the first six rows: 8 (actual, predicted) pairs become unplottable."""
    rows[0]["rif"] = math.inf
    rows[1]["if"] = math.nan
    rows[2]["actual"] = -math.inf  # skips all three methods for this row
    rows[3]["ns"] = None
    rows[4]["ns"] = ""  # as read back from a CSV
    del rows[5]["ns"]
    return rows


def test_figure1_writes_png_and_pdf_despite_nan_and_inf(tmp_path, rng):
    stem = tmp_path / "fig1"
    paths = plots.figure1(with_bad_values(table_rows(rng)), stem, title="synthetic")
    width, height = check_outputs(paths, stem)
    # Three square panels side by side at 150 dpi: wide, a few inches tall.
    assert 1200 <= width <= 3000 and 450 <= height <= 1500, (width, height)
    assert width > 1.8 * height


def test_figure1_keeps_dots_in_stem_and_creates_folder(tmp_path, rng):
    stem = tmp_path / "out" / "fig1.catdog"
    paths = plots.figure1(table_rows(rng, metrics=("test_loss",), per_metric=8), str(stem))
    width, height = check_outputs(paths, stem)
    assert 400 <= width <= 1200 and 400 <= height <= 1200, (width, height)


def test_figure1_legends_give_slopes_and_strategies(rng):
    rows = table_rows(rng, if_scale=0.5)
    fig = plots._build_figure1(rows, title="t")
    texts = legend_texts(fig)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split()[0] for ax in panels] == list(METRICS)
    assert all(ax.get_xlabel() == "actual effect (retrain)" for ax in panels)
    assert all(ax.get_ylabel() == "predicted effect" for ax in panels)
    # One method legend per panel, the strategy legend once for the figure.
    assert sum(t.startswith("IF  (slope ") for t in texts) == len(METRICS)
    assert sum(t.startswith("NS  (slope ") for t in texts) == len(METRICS)
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(STRATEGIES)
    # The IF slope on the first panel is the through-origin slope of that metric's rows.
    first = [r for r in rows if r["metric"] == METRICS[0]]
    slope = plots.slope_through_origin([r["actual"] for r in first], [r["if"] for r in first])
    assert f"IF  (slope {plots._fmt(slope)})" in texts
    close(fig)


def test_figure1_counts_skipped_values_in_the_panel(rng):
    rows = with_bad_values(table_rows(rng))
    rows.append({"metric": "broken", "strategy": "random", "actual": math.nan, "if": 1.0, "rif": 1.0})
    fig = plots._build_figure1(rows)
    assert "no finite values" in panel_texts(fig)
    notes = legend_texts(fig)
    assert "8 non-finite/missing values skipped" in notes, notes
    assert sum("skipped" in t for t in notes) == 1  # only the panel that had them
    close(fig)


def test_figure1_accepts_csv_strings(rng):
    rows = [{k: (str(v) if not isinstance(v, str) else v) for k, v in r.items()} for r in table_rows(rng)]
    rows[0]["rif"] = "inf"
    fig = plots._build_figure1(rows)
    assert "1 non-finite/missing value skipped" in legend_texts(fig)
    close(fig)


def test_figure1_skips_a_method_that_is_all_nan(rng):
    rows = table_rows(rng, with_ns=False)
    for row in rows:
        row["ns"] = math.nan
    fig = plots._build_figure1(rows)
    texts = legend_texts(fig)
    assert not any(t.startswith("NS") for t in texts)
    assert any(t.startswith("RIF") for t in texts)
    close(fig)


def test_figure1_four_metrics_use_two_rows(rng):
    rows = table_rows(rng, metrics=(*METRICS, "logit"), per_metric=10)
    fig = plots._build_figure1(rows)
    width, height = fig.get_size_inches()
    assert height > 0.6 * width, (width, height)
    assert sum(ax.get_visible() for ax in fig.axes) == 4  # the sixth grid cell is hidden
    close(fig)


def test_figure1_errors(tmp_path, rng):
    with pytest.raises(ValueError, match="figure1: rows is empty"):
        plots.figure1([], tmp_path / "empty")
    with pytest.raises(ValueError, match="rows is None"):
        plots.figure1(None, tmp_path / "none")
    with pytest.raises(ValueError, match="no 'actual' key"):
        plots.figure1([{"metric": "test_loss", "rif": 1.0}], tmp_path / "nokey")
    with pytest.raises(ValueError, match="no row has a finite actual effect"):
        plots.figure1([{"metric": "m", "actual": 1.0, "rif": math.nan, "if": None}], tmp_path / "nan")
    with pytest.raises(ValueError, match="not a number"):
        plots.figure1([{"metric": "m", "actual": "abc", "rif": 1.0}], tmp_path / "text")
    with pytest.raises(TypeError, match="single mapping"):
        plots.figure1(table_rows(rng)[0], tmp_path / "one")
    assert not list(tmp_path.iterdir()), "no file may be written when the input is rejected"


# --------------------------------------------------------------------------------------------
# figure 2
# --------------------------------------------------------------------------------------------


def test_figure2_writes_png_and_pdf(tmp_path, rng):
    stem = tmp_path / "fig2"
    rows = sweep_rows(rng)
    rows[0]["slope"] = math.nan
    rows[-1]["pearson"] = -math.inf
    width, height = check_outputs(plots.figure2(rows, stem), stem)
    assert 1000 <= width <= 2500 and 700 <= height <= 1800, (width, height)


def test_figure2_layout_and_axes(rng):
    fig = plots._build_figure2(sweep_rows(rng))
    axes = fig.axes
    assert len(axes) == 4  # two sweeps x (slope, pearson)
    titles = [ax.get_title() for ax in axes if ax.get_title()]
    assert titles == ["sweep over n", "sweep over l2"]
    scales = {ax.get_title(): ax.get_xscale() for ax in axes if ax.get_title()}
    assert scales["sweep over l2"] == "log"
    texts = legend_texts(fig)
    assert texts[:3] == ["IF", "RIF", "NS"] and "slope = 1" in texts
    assert set(METRICS[:2]) <= set(texts)
    # One line per (metric, method) in each panel, plus the slope = 1 line in the top row.
    top_lines = [len(ax.get_lines()) for ax in axes if ax.get_title()]
    assert top_lines == [2 * 3 + 1, 2 * 3 + 1]
    close(fig)


def test_figure2_one_sweep_text_settings_and_nan(rng):
    rows = [r for r in sweep_rows(rng, settings_as_text=True) if r["setting"].startswith("l2=")]
    rows[0]["slope"] = math.nan
    rows[1]["pearson"] = math.inf
    rows.append({"setting": "l2=0", "metric": "test_loss", "method": "rif", "slope": 1.0, "pearson": 1.0})
    fig = plots._build_figure2(rows)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["sweep over l2"]
    assert any("not shown: log axis" in ax.get_xlabel() for ax in fig.axes)
    close(fig)


def test_figure2_errors(tmp_path):
    with pytest.raises(ValueError, match="figure2: rows is empty"):
        plots.figure2([], tmp_path / "empty")
    with pytest.raises(ValueError, match="does not name one"):
        plots.figure2([{"setting": 3.0, "metric": "m", "method": "rif", "slope": 1.0, "pearson": 1.0}],
                      tmp_path / "nosweep")
    with pytest.raises(ValueError, match="no row has a finite setting"):
        plots.figure2([{"sweep": "n", "setting": 10, "metric": "m", "method": "rif", "slope": math.nan,
                        "pearson": None}], tmp_path / "nan")


# --------------------------------------------------------------------------------------------
# figure 3
# --------------------------------------------------------------------------------------------


def test_figure3_writes_png_and_pdf(tmp_path, rng):
    stem = tmp_path / "fig3"
    rows = poison_rows(rng)
    rows[3]["if"] = math.inf
    width, height = check_outputs(plots.figure3(rows, stem), stem)
    assert 500 <= width <= 1200 and 500 <= height <= 1200, (width, height)


def test_figure3_legend_slopes_and_nonfinite(rng):
    rows = poison_rows(rng)
    rows[0]["rif"] = math.inf
    rows[1]["actual"] = math.nan
    fig = plots._build_figure3(rows)
    texts = legend_texts(fig)
    good = [r for r in rows[2:]]
    if_slope = plots.slope_through_origin([r["actual"] for r in good], [r["if"] for r in good])
    assert f"IF  (slope {plots._fmt(if_slope)})" in texts
    assert any(t.startswith("RIF  (slope 0.9") for t in texts), texts
    assert "y = x" in texts
    assert "3 non-finite/missing values skipped" in texts
    close(fig)


def test_figure3_errors(tmp_path):
    with pytest.raises(ValueError, match="figure3: rows is empty"):
        plots.figure3([], tmp_path / "empty")
    with pytest.raises(ValueError, match="no row has a finite actual effect"):
        plots.figure3([{"point": 0, "actual": 1.0}], tmp_path / "nomethod")


# --------------------------------------------------------------------------------------------
# summary table
# --------------------------------------------------------------------------------------------


def summary_rows(with_dataset=True):
    rows = [
        {"metric": "test_loss", "method": "rif", "slope": 0.98213, "pearson": 0.99912, "spearman": 0.98765,
         "median_rel_error": 0.0123456, "n_sets": 120},
        {"metric": "test_loss", "method": "if", "slope": 0.41, "pearson": math.nan, "spearman": 0.9,
         "median_rel_error": 0.6, "n_sets": 120},
        {"metric": "self_loss", "method": "ns", "slope": 1.0, "pearson": 1.0, "spearman": 1.0,
         "median_rel_error": 1e-7, "n_sets": 7.0},
    ]
    if with_dataset:
        for row in rows:
            row["dataset"] = "catdog"
    return rows


def test_summary_table_markdown():
    table = plots.summary_table_markdown(summary_rows())
    lines = table.splitlines()
    assert table.endswith("\n")
    assert len(lines) == 2 + 3
    assert lines[0] == ("| dataset | metric | method | slope | pearson | spearman | median_rel_error "
                        "| n_sets |")
    assert set(lines[1].replace("|", "").split()) <= {"---", "---:"}
    assert lines[2] == "| catdog | test_loss | RIF | 0.982 | 0.999 | 0.988 | 0.0123 | 120 |"
    assert lines[3] == "| catdog | test_loss | IF | 0.410 | nan | 0.900 | 0.600 | 120 |"
    assert lines[4] == "| catdog | self_loss | NS | 1.00 | 1.00 | 1.00 | 1.00e-07 | 7 |"
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_summary_table_without_dataset_and_errors():
    table = plots.summary_table_markdown(summary_rows(with_dataset=False))
    lines = table.splitlines()
    assert lines[0].startswith("| metric | method |") and len(lines) == 5
    with pytest.raises(ValueError, match="summary_table_markdown: rows is empty"):
        plots.summary_table_markdown([])
    bad = summary_rows()
    del bad[1]["spearman"]
    with pytest.raises(ValueError, match="row 1 has no 'spearman' key"):
        plots.summary_table_markdown(bad)


# --------------------------------------------------------------------------------------------
# no display, no pyplot, no global backend change
# --------------------------------------------------------------------------------------------


def test_matplotlib_is_lazy_and_pyplot_never_imported(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import rif_native.plots as plots
        assert "matplotlib" not in sys.modules, "importing rif_native.plots imported matplotlib"
        rows = [{{"metric": "m", "strategy": "random", "actual": a, "if": 0.5 * a, "rif": a}}
                for a in (-1.0, 0.5, 2.0)]
        plots.figure1(rows, {str(tmp_path / "sub")!r})
        assert "matplotlib.pyplot" not in sys.modules, "figure1 imported pyplot"
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY")}
    done = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
    assert (tmp_path / "sub.png").is_file() and (tmp_path / "sub.pdf").is_file()
