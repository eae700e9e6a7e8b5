"""Figures and tables for the paper's experiments (Rubinstein & Hopkins, Figures 1 to 3).

Every plotted estimate is a *removal effect*: the predicted change of a metric when a set of
training samples is removed (``f(theta_{-T}) - f(theta_hat)`` or its linearisation), plotted
against the actual change measured by exact retraining.  Positive means "removing the set
increases the metric".  Nothing here flips a sign.

* :func:`figure1` -- predicted vs actual removal effect, one panel per metric, colour per method
  (IF, RIF, NS), marker per removal-set strategy, the diagonal ``y = x`` dashed.
* :func:`figure2` -- slope and Pearson correlation of each method against a swept setting
  (the number of samples ``n`` or the penalty ``l2``).
* :func:`figure3` -- data poisoning: the change of each poisoned point's own logit when it is
  removed, predicted (IF, RIF) vs actual.
* :func:`summary_table_markdown` -- summary rows as a Markdown table.

Rows are plain mappings (the dicts written by the experiment runner, or the rows of its CSV
read back with :mod:`csv`, whose values are strings); missing, empty, NaN and infinite values are
skipped and counted, never plotted.

matplotlib is imported lazily, inside the functions, and only through ``matplotlib.figure.Figure``
with an explicit Agg canvas: no pyplot, no display, no change to the global backend.  Each figure
is written as ``<path_stem>.png`` (150 dpi) and ``<path_stem>.pdf``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._markdown import markdown_table
from ._output import atomic_target
from ._stats import slope_through_origin

__all__ = ["figure1", "figure2", "figure3", "summary_table_markdown", "slope_through_origin"]

PathLike = Union[str, Path]

#: The estimators, in plotting order, with their display names and colours (colour-blind safe).
METHODS = ("if", "rif", "ns")
_METHOD_LABEL = {"if": "IF", "rif": "RIF", "ns": "NS"}
_METHOD_COLOUR = {"if": "#d55e00", "rif": "#0072b2", "ns": "#009e73"}
_EXTRA_COLOURS = ("#cc79a7", "#e69f00", "#56b4e9", "#7f7f7f", "#000000")
#: Filled markers only: removal-set strategies are told apart by shape.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*", "d", "8")
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
_DPI = 150


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _row_list(rows: Any, who: str) -> list[Mapping[str, Any]]:
    """Rows as a list of mappings; a clear error when there is nothing to plot."""
    if rows is None:
        raise ValueError(f"{who}: rows is None; pass a non-empty list of row dicts")
    if isinstance(rows, Mapping):
        raise TypeError(f"{who}: rows is a single mapping; pass a list of row dicts instead")
    if hasattr(rows, "to_dict") and not isinstance(rows, (list, tuple)):
        rows = rows.to_dict("records")  # a pandas DataFrame
    if not isinstance(rows, Iterable) or isinstance(rows, (str, bytes)):
        raise TypeError(f"{who}: rows must be a list of row dicts, got {type(rows).__name__}")
    rows = list(rows)
    if not rows:
        raise ValueError(f"{who}: rows is empty; there is nothing to plot (pass at least one row)")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"{who}: row {i} is a {type(row).__name__}, not a mapping (dict)")
    return rows


def _require(rows: list[Mapping[str, Any]], keys: Iterable[str], who: str) -> None:
    for i, row in enumerate(rows):
        for key in keys:
            if key not in row:
                raise ValueError(
                    f"{who}: row {i} has no {key!r} key (its keys: {sorted(map(str, row))}); "
                    f"every row needs {list(keys)}"
                )


def _as_float(value: Any, key: str, index: int, who: str) -> float:
    """A row value as a float: None and empty or 'nan'-like strings are NaN."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.lower() in {"none", "null", "na", "n/a"}:
            return math.nan
        value = text
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: row {index} has {key}={value!r}, which is not a number") from None


def _column(rows: list[Mapping[str, Any]], key: str, who: str) -> np.ndarray:
    """One numeric column; rows without the key give NaN."""
    return np.array([_as_float(row.get(key), key, i, who) for i, row in enumerate(rows)], dtype=float)


def _label(key: str) -> str:
    return _METHOD_LABEL.get(key, key)


def _colour(method: str, others: list[str]) -> str:
    if method in _METHOD_COLOUR:
        return _METHOD_COLOUR[method]
    return _EXTRA_COLOURS[others.index(method) % len(_EXTRA_COLOURS)] if method in others else "0.5"


def _unique(values: Iterable[Any]) -> list[Any]:
    """Distinct values in order of first appearance."""
    seen: dict[Any, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)


def _fmt(value: float) -> str:
    """A number to 3 significant digits, fixed point where that stays readable."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0.0:
        return "0"
    rounded = float(f"{value:.3g}")
    magnitude = abs(rounded)
    if magnitude < 1e-3 or magnitude >= 1e5:
        return f"{value:.2e}"
    exponent = math.floor(math.log10(magnitude))
    return f"{rounded:.{max(0, 2 - exponent)}f}"


# --------------------------------------------------------------------------------------------
# matplotlib plumbing (lazy)
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float):
    """A Figure bound to an Agg canvas: no pyplot, no display, no global backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path_stem: PathLike) -> list[Path]:
    """Write ``<path_stem>.png`` (150 dpi) and ``<path_stem>.pdf``; return both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # Append rather than with_suffix(): a stem such as "fig1.catdog" keeps its dot.
    png = stem.parent / (stem.name + ".png")
    pdf = stem.parent / (stem.name + ".pdf")
    # Each file is written under a temporary name beside it and then moved into place.
    with atomic_target(png) as tmp:
        fig.savefig(tmp, dpi=_DPI, format="png")
    with atomic_target(pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})
    return [png, pdf]


def _square_limits(values: np.ndarray) -> tuple[float, float]:
    """Common x/y limits covering ``values``; include 0 when it is not far from the data."""
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    if lo > 0 and lo < max(span, 1e-300):
        lo = 0.0
    elif hi < 0 and -hi < max(span, 1e-300):
        hi = 0.0
    span = hi - lo
    pad = 0.06 * span if span > 0 else max(0.1 * abs(hi), 1e-12)
    return lo - pad, hi + pad


def _scatter_panel(
    ax,
    actual: np.ndarray,
    predicted: dict[str, np.ndarray],
    methods: list[str],
    others: list[str],
    groups: Optional[np.ndarray] = None,
    marker_of: Optional[dict[str, str]] = None,
) -> tuple[dict[str, float], int]:
    """Scatter predicted vs actual for each method; diagonal, limits, legend with slopes.

    Returns the slope of each method drawn and the number of (actual, predicted) pairs skipped
    because one of them was missing or not finite.
    """
    from matplotlib.lines import Line2D

    skipped = 0
    slopes: dict[str, float] = {}
    drawn: list[np.ndarray] = []
    handles = []
    for method in methods:
        y = predicted[method]
        ok = np.isfinite(actual) & np.isfinite(y)
        skipped += int(ok.size - ok.sum())
        if not ok.any():
            continue
        colour = _colour(method, others)
        if groups is None:
            ax.scatter(actual[ok], y[ok], s=22, color=colour, alpha=0.75, linewidths=0, zorder=3)
        else:
            for group in _unique(groups[ok]):
                sel = ok & (groups == group)
                ax.scatter(
                    actual[sel], y[sel], s=24, color=colour, marker=marker_of[group],
                    alpha=0.75, linewidths=0, zorder=3,
                )
        slopes[method] = slope_through_origin(actual[ok], y[ok])
        drawn += [actual[ok], y[ok]]
        handles.append(
            Line2D([], [], color=colour, marker="o", linestyle="", markersize=6,
                   label=f"{_label(method)}  (slope {_fmt(slopes[method])})")
        )
    if not drawn:
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center",
                color="0.4")
        return slopes, skipped
    lo, hi = _square_limits(np.concatenate(drawn))
    ax.axhline(0.0, color="0.85", linewidth=0.8, zorder=0)
    ax.axvline(0.0, color="0.85", linewidth=0.8, zorder=0)
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="0.25", linewidth=1.0, zorder=2)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    handles.append(Line2D([], [], color="0.25", linestyle="--", linewidth=1.0, label="y = x"))
    if skipped:
        # In the legend (upper left, away from points near or below the diagonal), not over data.
        plural = "s" if skipped != 1 else ""
        handles.append(Line2D([], [], linestyle="none",
                              label=f"{skipped} non-finite/missing value{plural} skipped"))
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.9)
    ax.grid(True, color="0.93", linewidth=0.6, zorder=0)
    ax.tick_params(labelsize=8)
    return slopes, skipped


def _present_methods(rows: list[Mapping[str, Any]], actual: np.ndarray, who: str):
    """Methods (if/rif/ns) present as keys with at least one finite (actual, predicted) pair."""
    predicted: dict[str, np.ndarray] = {}
    for method in METHODS:
        if any(method in row for row in rows):
            values = _column(rows, method, who)
            if (np.isfinite(values) & np.isfinite(actual)).any():
                predicted[method] = values
    if not predicted:
        raise ValueError(
            f"{who}: no row has a finite actual effect together with a finite prediction under any "
            f"of the keys {list(METHODS)}; nothing to plot"
        )
    return list(predicted), predicted


# --------------------------------------------------------------------------------------------
# Figure 1: predicted vs actual removal effects
# --------------------------------------------------------------------------------------------


def _build_figure1(rows: Any, title: Optional[str] = None):
    who = "figure1"
    rows = _row_list(rows, who)
    _require(rows, ("metric", "actual"), who)
    actual = _column(rows, "actual", who)
    methods, predicted = _present_methods(rows, actual, who)
    metric = np.array([str(row["metric"]) for row in rows], dtype=object)
    metrics = _unique(metric)
    strategy = np.array(
        [str(row.get("strategy")) if row.get("strategy") not in (None, "") else "unspecified"
         for row in rows],
        dtype=object,
    )
    strategies = _unique(strategy)
    marker_of = {s: _MARKERS[i % len(_MARKERS)] for i, s in enumerate(strategies)}

    ncols = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / ncols)
    legend_cols = min(len(strategies), (2, 3, 6)[ncols - 1])
    extra = 0.2 * math.ceil(len(strategies) / legend_cols) + 0.5 + (0.3 if title else 0.0)
    # Square panels (equal x and y ranges, so the diagonal is at 45 degrees) plus room for the
    # title above and the axis label below each one.
    fig = _new_figure(max(4.3 * ncols, 4.8), 4.5 * nrows + extra)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(metrics):
            ax.set_visible(False)
            continue
        name = metrics[k]
        sel = metric == name
        _scatter_panel(
            ax, actual[sel], {m: predicted[m][sel] for m in methods}, methods, [],
            groups=strategy[sel], marker_of=marker_of,
        )
        ax.set_title(f"{name}  ({int(sel.sum())} sets)", fontsize=10)
        ax.set_xlabel("actual effect (retrain)", fontsize=9)
        ax.set_ylabel("predicted effect", fontsize=9)
    if len(strategies) > 1 or strategies != ["unspecified"]:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color="0.35", marker=marker_of[s], linestyle="", markersize=6, label=s)
            for s in strategies
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=legend_cols,
                   fontsize=8, title="removal set (marker)", title_fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def figure1(rows: Any, path_stem: PathLike, title: Optional[str] = None) -> list[Path]:
    """The paper's Figure 1: predicted vs actual removal effect, one panel per metric.

    ``rows`` are the experiment table rows: ``metric`` (panel), ``actual`` (x: the effect
    measured by exact retraining, ``f(theta_{-T}) - f(theta_hat)``), the predicted removal effect
    under ``if``, ``rif`` and/or ``ns`` (y; a method whose values are all missing or NaN is left
    out), and ``strategy`` (marker).  Each panel draws ``y = x`` dashed, and its legend gives
    each method's slope through the origin (``sum(x y) / sum(x x)``; 1 is the right scale).
    Missing, NaN and infinite values are skipped and counted in the panel.

    Writes ``<path_stem>.png`` (150 dpi) and ``<path_stem>.pdf`` and returns their paths.
    Raises ValueError when ``rows`` is empty or has no finite pair to plot.
    """
    return _save(_build_figure1(rows, title), path_stem)


# --------------------------------------------------------------------------------------------
# Figure 2: slope and correlation against n or l2
# --------------------------------------------------------------------------------------------


def _parse_setting(value: Any, index: int, who: str) -> tuple[Optional[str], float]:
    """A setting as (sweep name or None, value): accepts 1000, "1000" or "n=1000"."""
    if isinstance(value, str) and "=" in value:
        name, _, number = value.partition("=")
        return name.strip() or None, _as_float(number, "setting", index, who)
    return None, _as_float(value, "setting", index, who)


def _build_figure2(rows: Any, title: Optional[str] = None):
    who = "figure2"
    rows = _row_list(rows, who)
    _require(rows, ("setting", "metric", "method", "slope"), who)
    records = []
    for i, row in enumerate(rows):
        prefix, setting = _parse_setting(row["setting"], i, who)
        sweep = row.get("sweep")
        sweep = str(sweep).strip() if sweep not in (None, "") else prefix
        if not sweep:
            raise ValueError(f"{who}: row {i} has no 'sweep' key ('n' or 'l2') and its setting "
                             f"{row['setting']!r} does not name one (as in 'n=1000')")
        records.append((
            sweep, setting, str(row["metric"]), str(row["method"]).strip().lower(),
            _as_float(row.get("slope"), "slope", i, who), _as_float(row.get("pearson"), "pearson", i, who),
        ))
    finite = [r for r in records if math.isfinite(r[1]) and (math.isfinite(r[4]) or math.isfinite(r[5]))]
    if not finite:
        raise ValueError(f"{who}: no row has a finite setting with a finite slope or pearson; "
                         "nothing to plot")
    order = {"n": 0, "l2": 1}
    sweeps = sorted(_unique(r[0] for r in finite), key=lambda s: (order.get(s, 2), s))
    metrics = _unique(r[2] for r in finite)
    methods_seen = _unique(r[3] for r in finite)
    methods = [m for m in METHODS if m in methods_seen] + [m for m in methods_seen if m not in METHODS]
    others = [m for m in methods if m not in METHODS]
    style_of = {name: _LINESTYLES[i % len(_LINESTYLES)] for i, name in enumerate(metrics)}
    marker_of = {name: _MARKERS[i % len(_MARKERS)] for i, name in enumerate(metrics)}

    ncols = len(sweeps)
    legend_rows = math.ceil((len(methods) + len(metrics) + 1) / (4 * ncols))
    fig = _new_figure(max(4.8 * ncols, 5.6), 6.6 + 0.2 * legend_rows)
    axes = fig.subplots(2, ncols, squeeze=False, sharex="col")
    for col, sweep in enumerate(sweeps):
        ax_slope, ax_r = axes[0, col], axes[1, col]
        mine = [r for r in finite if r[0] == sweep]
        settings = np.array(sorted({r[1] for r in mine}))
        log_x = bool(settings.size) and (
            sweep == "l2" or (settings.min() > 0 and settings.max() / settings.min() >= 10)
        )
        dropped = 0
        if log_x:
            dropped = sum(1 for r in mine if r[1] <= 0)
            mine = [r for r in mine if r[1] > 0]
        for metric in metrics:
            for method in methods:
                points: dict[float, list[tuple[float, float]]] = {}
                for r in mine:
                    if r[2] == metric and r[3] == method:
                        points.setdefault(r[1], []).append((r[4], r[5]))
                if not points:
                    continue
                xs = np.array(sorted(points))
                slope = np.array([_finite_mean([p[0] for p in points[x]]) for x in xs])
                pearson = np.array([_finite_mean([p[1] for p in points[x]]) for x in xs])
                style = dict(color=_colour(method, others), linestyle=style_of[metric],
                             marker=marker_of[metric], markersize=4, linewidth=1.4)
                if np.isfinite(slope).any():
                    ax_slope.plot(xs, slope, **style)
                if np.isfinite(pearson).any():
                    ax_r.plot(xs, pearson, **style)
        ax_slope.axhline(1.0, color="0.25", linestyle="--", linewidth=1.0, zorder=1)
        if log_x:
            ax_slope.set_xscale("log")
            shown = sorted({r[1] for r in mine})
            if 0 < len(shown) <= 8:
                # Ticks at the swept values, written plainly (no crowded 3x10^2 minor labels).
                from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

                ax_r.xaxis.set_major_locator(FixedLocator(shown))
                ax_r.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
                ax_r.xaxis.set_minor_locator(NullLocator())
        ax_slope.set_title(f"sweep over {sweep}", fontsize=10)
        ax_slope.set_ylabel("slope (predicted on actual)", fontsize=9)
        ax_r.set_ylabel("Pearson correlation", fontsize=9)
        xlabel = {"n": "n (training samples)", "l2": "l2 (penalty strength)"}.get(sweep, sweep)
        if dropped:
            xlabel += f"\n({dropped} row{'s' if dropped != 1 else ''} with {sweep} <= 0 not shown: log axis)"
        ax_r.set_xlabel(xlabel, fontsize=9)
        for ax in (ax_slope, ax_r):
            ax.grid(True, color="0.93", linewidth=0.6, zorder=0)
            ax.tick_params(labelsize=8)

    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_colour(m, others), linewidth=2.0, label=_label(m)) for m in methods]
    handles += [Line2D([], [], color="0.3", linestyle=style_of[x], marker=marker_of[x], markersize=4,
                       linewidth=1.4, label=x) for x in metrics]
    handles.append(Line2D([], [], color="0.25", linestyle="--", linewidth=1.0, label="slope = 1"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4 * ncols), fontsize=8,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values (repeated runs of one setting); NaN when there are none."""
    good = [v for v in values if math.isfinite(v)]
    return sum(good) / len(good) if good else math.nan


def figure2(rows: Any, path_stem: PathLike, title: Optional[str] = None) -> list[Path]:
    """Figure 2: how the accuracy of each method changes with ``n`` or with ``l2``.

    ``rows`` have ``sweep`` (``"n"`` or ``"l2"``; may be omitted when ``setting`` reads like
    ``"n=1000"``), ``setting`` (the swept value), ``metric``, ``method``, ``slope`` (through the
    origin, predicted on actual removal effect) and ``pearson``.  One column per sweep kind; the
    top row shows the slope (dashed line at the ideal 1), the bottom row the Pearson correlation;
    colour is the method, line style the metric.  The ``l2`` axis is logarithmic.  Rows repeated
    for one setting (several seeds) are averaged over their finite values.

    Writes ``<path_stem>.png`` (150 dpi) and ``<path_stem>.pdf`` and returns their paths.
    """
    return _save(_build_figure2(rows, title), path_stem)


# --------------------------------------------------------------------------------------------
# Figure 3: data poisoning
# --------------------------------------------------------------------------------------------


def _build_figure3(rows: Any, title: Optional[str] = None):
    who = "figure3"
    rows = _row_list(rows, who)
    _require(rows, ("actual",), who)
    actual = _column(rows, "actual", who)
    methods, predicted = _present_methods(rows, actual, who)
    fig = _new_figure(5.0, 5.2)
    ax = fig.subplots()
    _scatter_panel(ax, actual, predicted, methods, [])
    ax.set_xlabel("actual change of own logit (retrain)", fontsize=9)
    ax.set_ylabel("predicted change of own logit", fontsize=9)
    ax.set_title(title or f"data poisoning: removing each poisoned point ({len(rows)} points)",
                 fontsize=10)
    return fig


def figure3(rows: Any, path_stem: PathLike, title: Optional[str] = None) -> list[Path]:
    """Figure 3, data poisoning: each poisoned point's own logit change when it is removed.

    ``rows`` have ``point`` (its index), ``actual`` (the change of ``x . theta`` at that point after
    exact retraining without it: ``logit(theta_{-i}) - logit(theta_hat)``) and the predictions
    ``if`` and ``rif`` (``ns`` too when present).  Predicted is plotted against actual with the
    diagonal dashed and each method's slope through the origin in the legend; non-finite values
    are skipped and counted.

    Writes ``<path_stem>.png`` (150 dpi) and ``<path_stem>.pdf`` and returns their paths.
    """
    return _save(_build_figure3(rows, title), path_stem)


# --------------------------------------------------------------------------------------------
# Summary table
# --------------------------------------------------------------------------------------------

_SUMMARY_NUMBERS = ("slope", "pearson", "spearman", "median_rel_error")


def summary_table_markdown(summary_rows: Any) -> str:
    """Summary rows as a Markdown table, numbers to 3 significant digits.

    Each row needs ``metric``, ``method``, ``slope``, ``pearson``, ``spearman``,
    ``median_rel_error`` and ``n_sets``; a ``dataset`` column comes first when any row has one.
    Returns the header, the alignment line and one line per row, each ending in a newline.
    """
    who = "summary_table_markdown"
    rows = _row_list(summary_rows, who)
    _require(rows, ("metric", "method") + _SUMMARY_NUMBERS + ("n_sets",), who)
    with_dataset = any(row.get("dataset") not in (None, "") for row in rows)
    header = (["dataset"] if with_dataset else []) + ["metric", "method", *_SUMMARY_NUMBERS, "n_sets"]
    align = (["---"] if with_dataset else []) + ["---", "---"] + ["---:"] * (len(_SUMMARY_NUMBERS) + 1)

    def text(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    table = []
    for i, row in enumerate(rows):
        cells = [text(row.get("dataset"))] if with_dataset else []
        method = text(row["method"])
        cells += [text(row["metric"]), _METHOD_LABEL.get(method.lower(), method)]
        cells += [_fmt(_as_float(row[key], key, i, who)) for key in _SUMMARY_NUMBERS]
        n_sets = _as_float(row["n_sets"], "n_sets", i, who)
        cells.append(str(int(n_sets)) if math.isfinite(n_sets) and n_sets == int(n_sets) else _fmt(n_sets))
        table.append(cells)
    return markdown_table(header, align, table) + "\n"
