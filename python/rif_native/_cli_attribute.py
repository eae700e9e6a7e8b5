"""The ``rif attribute`` command (also what a bare ``rif`` runs): fit an L2-regularised GLM on a
training part of a data set, then rank the training samples by the predicted effect of removing
each one on the total loss over a held-out test part, by the rescaled influence function (RIF)
and by the plain influence function (IF), side by side.

Every estimate is a removal effect (theta_{-i} - theta_hat): a positive score means that
removing the sample is predicted to increase the test loss, i.e. the sample helps.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

import rif_native
from rif_native import _cli_cluster, _cli_warnings, _output, _progress, _stats
from rif_native.metrics import TestLoss

#: What --out DIR receives (nothing is written without --out).
FILES = ("attribute.json", "scores.csv", "top.png")
#: The most samples top.png draws (a larger --top still lists them all in the printed ranking).
_MAX_BARS = 50
_FILES_NOTE = (
    "attribute.json (all results, as --json writes them), scores.csv (one row per training "
    "sample: index, label, RIF and IF score, leverage, rank by --rank-by under RIF) and top.png "
    f"(the top --top samples of the RIF ranking, at most {_MAX_BARS}, as bars beside their IF "
    "scores)"
)

_SIGN_NOTE = (
    "score_i = predicted change of the TOTAL test loss if training sample i is removed "
    "(<grad test loss, theta_{-i} - theta_hat>). Positive: removing it increases the test loss "
    "(the sample helps); negative: removing it decreases the test loss (the sample hurts)."
)


def add_parser(sub) -> None:
    from .cli import _add_data_args, _add_model_args, _positive_int

    att = sub.add_parser(
        "attribute",
        help="rank training samples by their effect on the test loss (RIF and IF side by side)",
        description=(
            "Fit an L2-regularised GLM (with intercept) on a training part, then predict for "
            "every training sample how the total loss on the held-out test part would change "
            "if that sample were removed, by the rescaled influence function (RIF, the Newton "
            "step of leave-one-out) and by the influence function (IF), and print the top "
            "samples of both rankings side by side. With --out DIR it also writes "
            + _FILES_NOTE + "; without --out it writes nothing (except --json). " + _SIGN_NOTE
        ),
        epilog=(
            "Data files: .npz with arrays X (n x d) and y (n,), optionally X_test and y_test "
            "(then used as the test part instead of a random split); .csv/.tsv/.parquet with the "
            "label in the last column (or --label) and an optional header line. Large data stay "
            "on disk and are read block by block, with the labels from --labels PATH.npy: a .npy "
            "file (memory-mapped), a folder of .npy shards (stacked in the order of their file "
            "names, numbers compared as numbers: part-2.npy before part-10.npy), --data given "
            "several times (.npy shards "
            "stacked in the order given), a .zarr store holding one 2-D array (or STORE.zarr:NAME) "
            "and an HDF5 file FILE.h5 / FILE.hdf5 (its only 2-D dataset, or FILE.h5:NAME). Such "
            "data are split contiguously, not shuffled: the last --test-fraction of the rows are "
            "the test part. A progress bar follows each pass over them (none with --quiet). "
            "The default data set is the SMS Spam Collection v.1 (Almeida, Gomez "
            "Hidalgo and Yamakami, DocEng 2011), deduplicated, as a bag of words (1 = spam)."
        ),
    )
    _add_data_args(att, reads_from_disk=True)
    _add_model_args(att)
    att.add_argument(
        "--precision", choices=("double", "mixed"), default="double",
        help="mixed: the fit's Hessians and the attribution's Hessian and leverage passes form "
        "their products in float32 (1.5x to 1.8x faster on float32 data in the README's runs "
        "on a 2-core AMD EPYC; the fit still meets its float64 gradient tolerance; leverage "
        "and RIF errors grow with H's condition number, 1e-7 to 4e-4 relative in "
        "benchmarks/mixed_precision.py). Default double",
    )
    att.add_argument("--scheduler", metavar="ADDRESS", default=None, help=_cli_cluster.HELP)
    out = att.add_argument_group("output")
    out.add_argument(
        "--top", type=_positive_int, default=10, metavar="K",
        help="number of samples listed per ranking (default 10)",
    )
    out.add_argument(
        "--rank-by", choices=("abs", "helpful", "harmful"), default="abs",
        help="order of the rankings: largest |score| (default), most helpful (largest positive "
        "score) or most harmful (most negative score)",
    )
    out.add_argument(
        "--json", metavar="PATH",
        help="also write all results (including every sample's scores) as JSON to PATH "
        "('-' for stdout, which then carries nothing else); an existing file is kept unless "
        "--force is given",
    )
    out.add_argument(
        "--out", metavar="DIR", default=None,
        help="also write " + _FILES_NOTE + " into DIR (created if missing; checked before any "
        "work; default: write no files)",
    )
    out.add_argument(
        "--force", action="store_true",
        help="overwrite an existing --json file and the files of an earlier run in the --out "
        "folder (without it, the command refuses before any work)",
    )
    out.add_argument(
        "--quiet", action="store_true",
        help="print only the two rankings and their agreement (no data, fit, timing or "
        "output-file lines, no progress bars)",
    )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _ranking(scores: np.ndarray, rank_by: str) -> np.ndarray:
    """Positions sorted by the requested order; ties broken by position (stable)."""
    if rank_by == "abs":
        key = -np.abs(scores)
    elif rank_by == "helpful":
        key = -scores
    else:
        key = scores
    key = np.where(np.isnan(key), np.inf, key)
    return np.argsort(key, kind="stable")


def _json_float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _snippet(text: str, width: int) -> str:
    text = " ".join(text.split())
    if len(text) > width:
        text = text[: width - 3] + "..."
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = text.encode("ascii", "replace").decode("ascii")
    return text


def _label_name(value: float, target_names) -> str:
    if target_names is not None and value in (0.0, 1.0):
        return target_names[int(value)]
    return f"{value:g}"


def _write_json(path: Optional[Path], payload: dict) -> None:
    """payload as JSON to the (checked) file path, atomically, or to stdout for None."""
    from .cli import _UsageError

    text = json.dumps(payload, indent=1, allow_nan=False)
    if path is None:
        sys.stdout.write(text + "\n")
        return
    try:
        _output.write_text(path, text + "\n")
    except OSError as exc:
        raise _UsageError(f"cannot write --json file {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def run(args, outputs: _output.Outputs) -> int:
    from .cli import _out_dir, _prepare

    _cli_cluster.check(args)
    json_file = _json_target(args, outputs)
    out = None if args.out is None else _out_dir(args, outputs)
    show_info = not args.quiet and args.json != "-"

    def say(line: str = "") -> None:
        if show_info:
            print(line)

    with _cli_cluster.connected(args) as client:  # a cluster that cannot be reached: said first
        t0 = time.perf_counter()
        data = _prepare(args)
        timings = {"load": time.perf_counter() - t0}
        n_train, d = data.X_train.shape
        storage = data.dataset.storage
        say(f"data       {data.dataset.name} ({data.source}): {data.dataset.n_samples} samples "
            f"x {d} features" + (f" ({storage}, read block by block)" if storage else ""))
        say(f"split      train {n_train}, test {data.y_test.shape[0]} ({data.split_note})")
        res = _fit_and_score(data, args, timings)
        if client is not None:
            say(_cli_cluster.describe(client, res.attribution))
    _say_fit(res, args, say)
    ranks = _rankings(res, args.rank_by, args.top)
    if args.json != "-":
        _print_rankings(data, res, ranks, args.rank_by, show_info)
    payload = None if args.json is None and out is None else \
        _attribute_payload(data, res, ranks, args)
    if args.json is not None:
        _write_json(json_file, payload)
        say(f"json       written to {args.json}")
    if out is not None:
        _write_outputs(out, data, res, ranks, args, payload)
        say(f"out        wrote {', '.join(FILES)} to {out.resolve()}")
    return 0


def _json_target(args, outputs: _output.Outputs) -> Optional[Path]:
    """The --json file, checked before any work (None for none or for '-', stdout)."""
    if args.json is None or args.json == "-":
        return None
    return outputs.file(args.json, option="--json")


def _fit_and_score(data, args, timings: dict) -> argparse.Namespace:
    """Fit on the training part, then every training sample's RIF and IF score on the total
    test loss (removal effects); warnings are collected and repeated on stderr."""
    from .cli import _PROG, _printable

    family = args.family
    X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
    on_disk = data.contiguous
    progress = not args.quiet
    d = X_train.shape[1]
    # what the fit and the attribution read: X itself, or what a Dask cluster's workers get
    X_engine, backend = X_train, args.backend
    if args.scheduler is not None:
        X_engine, backend = _cli_cluster.engine_input(X_train), "dask"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        with _naming(data.source, on_disk):
            fit = rif_native.fit(
                X_engine, y_train, l2=args.l2, family=family, fit_intercept=True,
                num_threads=args.threads, progress=progress, precision=args.precision,
                backend="dask" if backend == "dask" else None,
            )
        timings["fit"] = time.perf_counter() - t0

        theta = np.asarray(fit.theta, dtype=np.float64)
        if on_disk:
            # the test rows block by block: their losses, their gradient and predictions
            test = _test_pass(X_test, y_test, theta, family, data, progress)
            loss_test, direction, correct_test = test.loss, test.gradient, test.correct
            correct_train = None
        else:
            correct_train = _correct(X_train, y_train, theta, family)
            correct_test = _correct(X_test, y_test, theta, family)
            test_loss = _test_loss(X_test, y_test, family)
            loss_train = _test_loss(X_train, y_train, family).per_sample(theta)
            loss_test = test_loss.per_sample(theta)
            # gradient of the total test loss with respect to theta = (coefficients, intercept)
            direction = test_loss.gradient(theta)

        # the direction's projections from the leverage pass: its IF and RIF scores then read
        # the training rows no more (the binary families in this process; on a cluster both
        # come from one pass below, and the multinomial family scores on passes of its own)
        kept = {} if family == "multinomial" or backend == "dask" else {"directions": direction}
        t0 = time.perf_counter()
        with _naming(data.source, on_disk):
            attribution = rif_native.Attribution(
                X_engine, y_train, theta, l2=args.l2, family=family, fit_intercept=True,
                num_threads=args.threads, backend=backend, progress=progress,
                precision=args.precision, **kept,
            )
            timings["attribution_setup"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            if hasattr(attribution, "scores_now"):  # Dask: both on one pass, with a bar
                scores_rif, scores_if = attribution.scores_now(direction, ("rif", "if"))
            else:  # (kept from the leverage pass above: no pass of their own)
                scores_rif = np.asarray(attribution.scores(direction, method="rif"),
                                        dtype=np.float64)
                scores_if = np.asarray(attribution.scores(direction, method="if"),
                                       dtype=np.float64)
        timings["scores"] = time.perf_counter() - t1
        timings["attribution"] = time.perf_counter() - t0
        leverage = np.asarray(attribution.leverage, dtype=np.float64)
        singular = np.asarray(attribution.singular_samples, dtype=np.int64)
        if on_disk:
            # no further pass over the training rows: F(theta) less the penalty is their total
            # loss, and for the unweighted logistic loss r_i = sigmoid(z_i) - y_i, so z_i > 0
            # exactly where r_i + y_i > 1/2
            coef = theta[..., :d]
            train_loss_mean = (fit.loss - 0.5 * args.l2 * float(np.sum(coef * coef))) \
                / y_train.size
            if family == "logistic":
                correct_train = ((np.asarray(attribution.residuals) + y_train - 0.5 > 0)
                                 == (y_train == 1))
            elif family == "multinomial":
                correct_train = attribution.probabilities.argmax(axis=1) == y_train
        else:
            train_loss_mean = float(loss_train.mean())
    caught_warnings = [_cli_warnings.line(w.category, w.message) for w in caught]
    for line in caught_warnings:
        print(f"{_PROG}: warning: {_printable(line)}", file=sys.stderr)

    metrics: dict[str, float | None] = {
        "train_loss_mean": _json_float(train_loss_mean),
        "test_loss_mean": _json_float(loss_test.mean()),
        "test_loss_total": _json_float(loss_test.sum()),
    }
    if correct_train is not None:
        metrics["train_accuracy"] = float(np.mean(correct_train))
        metrics["test_accuracy"] = float(np.mean(correct_test))
    return argparse.Namespace(
        fit=fit, attribution=attribution, train_loss_mean=train_loss_mean, loss_test=loss_test,
        metrics=metrics,
        scores_rif=scores_rif, scores_if=scores_if, leverage=leverage, singular=singular,
        timings=timings, warnings=caught_warnings)


def _test_loss(X, y: np.ndarray, family: str):
    """The total loss over the rows (X, y) as a metric (per_sample, gradient) at theta."""
    if family == "multinomial":
        from .multiclass_metrics import TestLoss as ClassLoss

        return ClassLoss(X, y, fit_intercept=True)
    return TestLoss(X, y, fit_intercept=True, family=family)


def _correct(X, y: np.ndarray, theta: np.ndarray, family: str) -> Optional[np.ndarray]:
    """Whether each row's predicted class is its label (classification families), else None."""
    d = X.shape[1]
    if family == "logistic":
        return ((X @ theta[:d] + theta[d]) > 0) == (y == 1)
    if family == "multinomial":
        return (X @ theta[:, :d].T + theta[:, d]).argmax(axis=1) == y
    return None


@contextlib.contextmanager
def _naming(source: str, on_disk: bool):
    """A context in which a ValueError about X read from disk (the kernel names NaN or inf in
    X by row on its first pass) becomes a usage error that names the data."""
    from .cli import _UsageError, _one_line

    try:
        yield
    except ValueError as exc:
        if not on_disk:
            raise
        raise _UsageError(f"{source}: {_one_line(exc)}") from None


def _test_pass(X_test, y_test: np.ndarray, theta: np.ndarray, family: str, data,
               progress: bool) -> argparse.Namespace:
    """One pass over the test rows on disk, block by block: each row's loss and z, and the
    gradient of the total test loss (the direction the scores need), with NaN/inf named by
    row of the data set."""
    from .cli import _UsageError
    from .sources import READ_BYTES

    d = X_test.shape[1]
    first = int(data.test[0])
    loss = np.empty(y_test.size)
    correct = np.empty(y_test.size, dtype=bool)
    gradient = np.zeros(theta.shape)
    block = max(1, READ_BYTES // (d * X_test.dtype.itemsize))
    total = -(-y_test.size // block)
    for begin, rows in _progress.progress(X_test.blocks(block), desc=f"reading {X_test.name}",
                                          total=total, enabled=progress and total > 1):
        end = begin + len(rows)
        bad = ~np.isfinite(rows)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise _UsageError(f"{data.source}: X contains NaN or infinity (first at row "
                              f"{first + begin + r}, column {c})")
        part = _test_loss(rows, y_test[begin:end], family)
        loss[begin:end] = part.per_sample(theta)
        gradient += part.gradient(theta)
        right = _correct(rows, y_test[begin:end], theta, family)
        if right is not None:
            correct[begin:end] = right
    return argparse.Namespace(loss=loss, gradient=gradient,
                              correct=correct if family in ("logistic", "multinomial") else None)


def _say_fit(res, args, say) -> None:
    """The fit, accuracy or loss, leverage and timing lines."""
    fit, metrics, leverage, timings = res.fit, res.metrics, res.leverage, res.timings
    status = "converged" if fit.converged else "NOT converged"
    say(
        f"fit        {args.family}, l2 = {args.l2:g}, intercept: {fit.n_iter} iterations, "
        f"{status}, ||grad F|| = {fit.grad_norm:.2e}"
    )
    if "train_accuracy" in metrics:
        say(
            f"accuracy   train {metrics['train_accuracy']:.4f}, test {metrics['test_accuracy']:.4f}"
            f"   (mean test loss {res.loss_test.mean():.4f})"
        )
    else:
        say(f"loss       mean train {res.train_loss_mean:.4g}, mean test "
            f"{res.loss_test.mean():.4g}")
    say(
        f"leverage   max {leverage.max():.3f}, mean {leverage.mean():.3f}, "
        f"{int(np.count_nonzero(leverage > 0.5))} samples above 0.5"
        + (f", {res.singular.size} singular (h = 1, RIF infinite)" if res.singular.size else "")
    )
    say(
        f"time       load {timings['load']:.2f} s, fit {timings['fit']:.2f} s, attribution "
        f"{timings['attribution']:.2f} s (factor + leverage {timings['attribution_setup']:.2f} s, "
        f"IF and RIF scores {timings['scores']:.2f} s)"
    )
    say()


def _rankings(res, rank_by: str, top: int) -> argparse.Namespace:
    """The top-k positions by RIF and by IF, their overlap and the rank correlation."""
    k = min(top, res.scores_rif.size)
    order_rif = _ranking(res.scores_rif, rank_by)[:k]
    order_if = _ranking(res.scores_if, rank_by)[:k]
    shared = len(set(order_rif.tolist()) & set(order_if.tolist()))
    rho = _stats.spearman(
        np.nan_to_num(res.scores_rif, nan=0.0), np.nan_to_num(res.scores_if, nan=0.0)
    )
    return argparse.Namespace(k=k, order_rif=order_rif, order_if=order_if, shared=shared, rho=rho)


def _print_rankings(data, res, ranks, rank_by: str, show_info: bool) -> None:
    """The two rankings side by side, their agreement and (show_info) the rescaling range."""
    k, order_rif, order_if = ranks.k, ranks.order_rif, ranks.order_if
    scores_rif, scores_if, leverage = res.scores_rif, res.scores_if, res.leverage
    texts, train, y_train = data.dataset.texts, data.train, data.y_train
    target_names = data.dataset.target_names
    by = {"abs": "|score|", "helpful": "score (most helpful first)",
          "harmful": "score (most harmful first)"}[rank_by]
    print(f"Top {k} training samples by {by}, metric: total loss on {data.y_test.shape[0]} test "
          "samples.")
    print("Sign: removal effect theta_{-i} - theta_hat. Positive score = removing the sample "
          "INCREASES the test loss (it helps);")
    where = ("id = the --id column." if data.dataset.sample_ids is not None else
             "index = row of the data set" + (" (after dedupe)."
                                              if data.dataset.source_index is not None else "."))
    print(f"negative = removing it decreases the test loss (it hurts). {where}")
    print()
    text_width = 22 if texts is not None else 0
    names = [_label_name(float(v), target_names) for v in np.unique(y_train)[:50]]
    label_width = min(8, max(5, *(len(name) for name in names)))

    ids = data.dataset.sample_ids  # an --id column, shown instead of the row
    id_width = 6 if ids is None else min(14, max(2, *(len(str(v)) for v in ids[:1000])))

    def cells(pos: int, score: float) -> str:
        idx = int(train[pos])
        shown = idx if ids is None else str(ids[idx])[:id_width]
        label = _label_name(float(y_train[pos]), target_names)[:label_width]
        part = f"{shown:>{id_width}} {label:<{label_width}} {score:>+10.3e} {leverage[pos]:>6.3f}"
        if texts is not None:
            part += " " + f"{_snippet(texts[idx], text_width):<{text_width}}"
        return part

    head = (f"{'index' if ids is None else 'id':>{id_width}} {'label':<{label_width}} "
            f"{'score':>10} {'lev':>6}")
    if texts is not None:
        head += " " + f"{'text':<{text_width}}"
    width = len(head)
    print(f"{'':>4}   {'RIF (rescaled influence)':<{width}} | IF (influence function)")
    print(f"{'rank':>4}   {head} | {head}".rstrip())
    print(f"{'':->4}   {'':->{width}} | {'':->{width}}")
    for rank in range(k):
        left = cells(order_rif[rank], scores_rif[order_rif[rank]])
        right = cells(order_if[rank], scores_if[order_if[rank]])
        print(f"{rank + 1:>4}   {left} | {right}".rstrip())
    print()
    print(f"shared     {ranks.shared} of the top {k} samples appear in both rankings")
    print(f"spearman   {ranks.rho:.4f} (rank correlation of all {scores_rif.size} RIF and IF "
          "scores)")
    if show_info:
        ratio = np.abs(scores_rif) / np.maximum(np.abs(scores_if), np.finfo(float).tiny)
        max_rescale = np.max(1.0 / np.maximum(1.0 - leverage, 1e-300))
        print(f"rescale    1/(1-h): max {max_rescale:.3g}; "
              f"|RIF| / |IF| for the top-{k} RIF samples: "
              f"{np.min(ratio[order_rif]):.3g} .. {np.max(ratio[order_rif]):.3g}")


def _ranking_entries(data, res, order, scores, other) -> list:
    """One JSON entry per ranked sample (index = row of the data set)."""
    out = []
    for rank, pos in enumerate(order, start=1):
        idx = int(data.train[pos])
        item = {
            "rank": rank,
            "index": idx,
            "label": float(data.y_train[pos]),
            "score": _json_float(scores[pos]),
            "other_score": _json_float(other[pos]),
            "leverage": float(res.leverage[pos]),
        }
        if data.dataset.sample_ids is not None:
            item["id"] = _id(data.dataset.sample_ids[idx])
        if data.dataset.source_index is not None:
            item["source_line"] = int(data.dataset.source_index[idx])
        if data.dataset.texts is not None:
            item["text"] = data.dataset.texts[idx]
        out.append(item)
    return out


def _attribute_payload(data, res, ranks, args) -> dict:
    """Everything `rif attribute` computed, for --json."""
    fit, dataset, test = res.fit, data.dataset, data.test
    return {
        "command": "attribute",
        "version": getattr(rif_native, "__version__", None),
        "sign_convention": _SIGN_NOTE,
        "dataset": {
            "name": dataset.name,
            "source": data.source,
            "description": dataset.description,
            "n_samples": dataset.n_samples,
            "n_features": data.X_train.shape[1],
            "storage": dataset.storage,
        },
        "split": {
            "n_train": data.y_train.size,
            "n_test": data.y_test.shape[0],
            "how": data.split_note,
            "contiguous": data.contiguous,
            "seed": args.seed,
            "test_indices": None if test is None else test.tolist(),
        },
        "model": {
            "family": args.family,
            "l2": args.l2,
            "fit_intercept": True,
            "n_iter": int(fit.n_iter),
            "converged": bool(fit.converged),
            "grad_norm": _json_float(fit.grad_norm),
        },
        "metrics": res.metrics,
        "attribution": {
            "metric": "total test loss",
            "rank_by": args.rank_by,
            "top": ranks.k,
            "top_rif": _ranking_entries(data, res, ranks.order_rif, res.scores_rif, res.scores_if),
            "top_if": _ranking_entries(data, res, ranks.order_if, res.scores_if, res.scores_rif),
            "shared_top_k": ranks.shared,
            "spearman": _json_float(ranks.rho),
            "max_leverage": float(res.leverage.max()),
            "singular_samples": [int(data.train[i]) for i in res.singular],
        },
        "timings_s": res.timings,
        "warnings": res.warnings,
        "train_indices": data.train.tolist(),
        "scores_rif": [_json_float(s) for s in res.scores_rif],
        "scores_if": [_json_float(s) for s in res.scores_if],
        "leverage": res.leverage.tolist(),
    }



# --------------------------------------------------------------------------------------------
# --out DIR
# --------------------------------------------------------------------------------------------


def _write_outputs(out: Path, data, res, ranks, args, payload: dict) -> None:
    """attribute.json, scores.csv and top.png into the (checked) --out folder, each atomically."""
    _output.write_text(out / "attribute.json",
                       json.dumps(payload, indent=1, allow_nan=False) + "\n")
    _output.write_text(out / "scores.csv", _scores_csv(data, res, args.rank_by))
    _top_figure(out / "top.png", data, res, ranks, args.rank_by)


def _id(value) -> object:
    """A sample id as JSON holds it: an int, a float or a string."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return str(value)


def _scores_csv(data, res, rank_by: str) -> str:
    """One row per training sample, in training order: its row of the data set, label, RIF and
    IF scores (repr: they read back to the same float64; 'inf' for a singular sample's RIF),
    leverage, and its 1-based rank in the RIF ranking by rank_by."""
    n = res.scores_rif.size
    rank = np.empty(n, dtype=np.int64)
    rank[_ranking(res.scores_rif, rank_by)] = np.arange(1, n + 1)
    leverage = res.leverage if res.leverage.shape == res.scores_rif.shape else None
    ids = data.dataset.sample_ids
    head = (["index"] + ([] if ids is None else ["id"]) + ["label", "score_rif", "score_if"]
            + ([] if leverage is None else ["leverage"]) + ["rank_rif"])
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")  # quotes an id holding a comma or a quote
    out.writerow(head)
    for pos in range(n):
        idx = int(data.train[pos])
        cells = [str(idx)] + ([] if ids is None else [str(_id(ids[idx]))]) + [
                 repr(float(data.y_train[pos])),
                 repr(float(res.scores_rif[pos])), repr(float(res.scores_if[pos]))]
        if leverage is not None:
            cells.append(repr(float(leverage[pos])))
        cells.append(str(int(rank[pos])))
        out.writerow(cells)
    return text.getvalue()


def _top_figure(path: Path, data, res, ranks, rank_by: str) -> None:
    """The top samples of the RIF ranking (at most _MAX_BARS) as horizontal bars, each with its
    IF score beside it; matplotlib through an Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = ranks.order_rif[:_MAX_BARS]
    k = len(order)
    texts, target_names = data.dataset.texts, data.dataset.target_names
    labels = []
    for pos in order:
        idx = int(data.train[pos])
        ids = data.dataset.sample_ids
        name = f"row {idx}" if ids is None else f"id {ids[idx]}"
        label = f"{name} ({_label_name(float(data.y_train[pos]), target_names)})"
        if texts is not None:  # ASCII only: the default font lacks many glyphs (emoji)
            label += " " + _snippet(texts[idx], 28).encode("ascii", "replace").decode("ascii")
        labels.append(label)

    def finite(values: np.ndarray) -> np.ndarray:  # a singular sample's inf RIF: no bar
        return np.where(np.isfinite(values), values, np.nan)

    rif, inf_ = finite(res.scores_rif[order]), finite(res.scores_if[order])
    fig = Figure(figsize=(9.0, 1.6 + 0.32 * k), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(k)
    ax.barh(y - 0.2, rif, height=0.4, color="#0072b2", label="RIF (rescaled influence)")
    ax.barh(y + 0.2, inf_, height=0.4, color="#d55e00", label="IF (influence function)")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # rank 1 at the top
    ax.set_xlabel("score: predicted change of the total test loss if the sample is removed "
                  "(> 0: it helps)")
    ax.set_ylabel("training sample (row of the data set)")
    by = {"abs": "|RIF score|", "helpful": "RIF score, most helpful first",
          "harmful": "RIF score, most harmful first"}[rank_by]
    shown = f"top {k}" if k == ranks.k else f"first {k} of the top {ranks.k}"
    ax.set_title(f"{data.dataset.name}: {shown} training samples by {by}", fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    with _output.atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
