"""The ``rif`` command line tool.

``rif attribute`` (also what a bare ``rif`` runs): fit an L2-regularised GLM on a training part of
a data set, then rank the training samples by the predicted effect of removing each one on the
total loss over a held-out test part, by the rescaled influence function (RIF) and by the plain
influence function (IF), side by side.

Every estimate is a removal effect (theta_{-i} - theta_hat): a positive score means that
removing the sample is predicted to increase the test loss, i.e. the sample helps.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

import rif_native
from rif_native import _output, _progress, _stats
from rif_native._markdown import markdown_table
from rif_native.metrics import TestLoss
from rif_native import _cli_audit
from rif_native.datasets import Dataset, load_dataset, load_digits, load_sms_spam

__all__ = ["main"]

_PROG = "rif"
_COMMANDS = ("attribute", "experiment", "poisoning", "sweep", "search", "audit", "benchmark")
_METRICS = ("test_prediction", "test_loss", "self_loss")
# With 1500 bag-of-words features for about 4100 training messages, l2 = 0.03 (scikit-learn
# C = 33) keeps the problem in the high-dimensional regime the paper studies (max leverage ~0.8).
_DEFAULT_L2 = 0.03
_DEFAULT_L2_MULTINOMIAL = 1.0  # the built-in digits: 1,290 parameters for 1,438 samples
_DEFAULT_MAX_FEATURES = 1500
_FAMILIES = ("logistic", "squared", "poisson", "multinomial")

_SIGN_NOTE = (
    "score_i = predicted change of the TOTAL test loss if training sample i is removed "
    "(<grad test loss, theta_{-i} - theta_hat>). Positive: removing it increases the test loss "
    "(the sample helps); negative: removing it decreases the test loss (the sample hurts)."
)


class _UsageError(Exception):
    """A mistake in the user's input: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one-line messages instead of usage dumps."""

    def error(self, message):  # noqa: D102 - argparse hook
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _positive_list(text: str) -> list:
    return [_positive_float(part) for part in text.split(",") if part.strip()]


def _int_list(text: str) -> list:
    return [_positive_int(part) for part in text.split(",") if part.strip()]


def _fraction_list(text: str) -> list:
    values = [_positive_float(part) for part in text.split(",") if part.strip()]
    if not values or any(v > 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected fractions in (0, 1], got {text!r}")
    return values


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a number strictly between 0 and 1, got {text!r}"
        )
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG,
        description=(
            "Data attribution for L2-regularised GLMs with rescaled influence functions (RIF). "
            "Without a command, 'rif' runs 'rif attribute' on the built-in SMS Spam data."
        ),
        epilog="Run 'rif attribute --help' for the options of the attribution command.",
    )
    parser.add_argument(
        "--version", action="version",
        version=f"%(prog)s {getattr(rif_native, '__version__', 'unknown')}",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    att = sub.add_parser(
        "attribute",
        help="rank training samples by their effect on the test loss (RIF and IF side by side)",
        description=(
            "Fit an L2-regularised GLM (with intercept) on a training part, then predict for "
            "every training sample how the total loss on the held-out test part would change "
            "if that sample were removed, by the rescaled influence function (RIF, the Newton "
            "step of leave-one-out) and by the influence function (IF), and print the top "
            "samples of both rankings side by side. " + _SIGN_NOTE
        ),
        epilog=(
            "Data files: .npz with arrays X (n x d) and y (n,), optionally X_test and y_test "
            "(then used as the test part instead of a random split); .csv/.tsv with the label in "
            "the last column and an optional header line. Large data stay on disk and are read "
            "block by block, with the labels from --labels PATH.npy: a .npy file (memory-mapped), "
            "a folder of .npy shards (stacked in the order of their file names: pad numbers with "
            "zeros, part-000.npy, part-001.npy, ...), --data given several times (.npy shards "
            "stacked in the order given), a .zarr store holding one 2-D array (or STORE.zarr:NAME) "
            "and an HDF5 file FILE.h5 / FILE.hdf5 (its only 2-D dataset, or FILE.h5:NAME). Such "
            "data are split contiguously, not shuffled: the last --test-fraction of the rows are "
            "the test part. A progress bar follows each pass over them (none with --quiet). "
            "The default data set is the SMS Spam Collection v.1 (Almeida, Gomez "
            "Hidalgo and Yamakami, DocEng 2011), deduplicated, as a bag of words (1 = spam)."
        ),
    )
    _add_data_args(att)
    _add_model_args(att)
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
        "--force", action="store_true",
        help="overwrite an existing --json file (without it, the command refuses before any work)",
    )
    out.add_argument(
        "--quiet", action="store_true",
        help="print only the two rankings and their agreement (no data, fit or timing lines, "
        "no progress bars)",
    )
    _add_experiment_parsers(sub)
    return parser


def _add_data_args(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument(
        "--data", metavar="PATH", action="append",
        help="your data: a .npz, .csv or .tsv file; or X alone, with --labels: a .npy file "
        "(memory-mapped), a folder of .npy shards (stacked in file name order), a .zarr store, "
        "FILE.h5[:NAME] / FILE.hdf5[:NAME], or --data given several times (.npy shards stacked "
        "in that order), which 'rif attribute' reads from disk block by block and the other "
        "commands read whole. Default: the built-in SMS Spam data",
    )
    data.add_argument(
        "--labels", metavar="PATH",
        help="labels .npy file (one label per row of X), needed when --data is X alone (.npy, "
        "shards, .zarr, .h5)",
    )
    data.add_argument(
        "--max-features", type=_positive_int, metavar="N", default=None,
        help=f"vocabulary size of the built-in data set (default {_DEFAULT_MAX_FEATURES}); "
        "with --family multinomial, the random features of the built-in digits (default 128)",
    )
    data.add_argument(
        "--test-fraction", type=_fraction, default=None, metavar="F",
        help="fraction of samples held out as the test part (default 0.2; "
        "ignored when the .npz file has X_test and y_test); for data that 'rif attribute' "
        "reads from disk (.npy, shards, .zarr, .h5) the LAST F of the rows, not a random part",
    )
    data.add_argument(
        "--seed", type=int, default=0,
        help="seed of the random train/test split and of every random choice (default 0)",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    model = p.add_argument_group("model")
    model.add_argument(
        "--family", choices=_FAMILIES, default="logistic",
        help="GLM family (default logistic, which needs labels 0/1); multinomial: softmax "
        "regression on class labels 0..K-1 (built-in data: handwritten digits, 10 classes)",
    )
    model.add_argument(
        "--l2", type=_nonnegative_float, default=None, metavar="L2",
        help=f"penalty (L2/2)||theta||^2 on the coefficients, not the intercept, added to the "
        f"SUM of the per-sample losses (default {_DEFAULT_L2}, {_DEFAULT_L2_MULTINOMIAL} with "
        "--family multinomial; scikit-learn's C is 1/L2; the "
        "paper's mean-loss lambda is L2/n)",
    )
    model.add_argument(
        "--threads", type=_positive_int, default=None, metavar="N",
        help="number of threads for the native kernels (default: the cores no other process "
             "keeps busy)",
    )
    model.add_argument(
        "--backend", choices=("cpu", "cuda", "auto"), default=None,
        help="where attributions run: the CPU, a CUDA GPU, or auto (the GPU when one is usable); "
        "default: the RIF_BACKEND environment variable, else auto",
    )


def _add_experiment_parsers(sub) -> None:
    from . import removal

    exp = sub.add_parser(
        "experiment",
        help="validate IF, RIF and NS against exact retraining (the paper's Figure 1)",
        description=(
            "Fit the GLM, build removal sets (random, clustered by one feature, clustered by "
            "L2 distance, top by IF on test loss / test prediction, positive and negative; "
            "sizes linear from 0.1% to 5% of n), retrain exactly without each set, and "
            "compare the IF, RIF and NS predictions of the change of each metric with the "
            "actual change. Writes tables (CSV, JSON), a summary, Figure 1 (PNG, PDF), the "
            "runtime table and report.md into the output folder."
        ),
    )
    _add_data_args(exp)
    _add_model_args(exp)
    grp = exp.add_argument_group("experiment")
    grp.add_argument("--sizes", type=_positive_int, default=8, metavar="N",
                     help="number of set sizes between 0.1%% and 5%% of n (default 8)")
    grp.add_argument("--strategies", nargs="+", choices=removal.STRATEGIES,
                     default=list(removal.STRATEGIES), metavar="S",
                     help="removal strategies (default: all of " +
                     ", ".join(removal.STRATEGIES) + ")")
    grp.add_argument("--metrics", nargs="+", choices=_METRICS, default=list(_METRICS),
                     metavar="M", help="metrics (default: " + ", ".join(_METRICS) + ")")
    grp.add_argument("--test-subset", type=_positive_int, default=100, metavar="K",
                     help="test points in the metrics' subset: half highest-loss, half random "
                     "(default 100)")
    grp.add_argument("--tol", type=_positive_float, default=1e-10,
                     help="relative gradient tolerance of fitting and retraining (default 1e-10)")
    _add_output_args(exp, "rif-output/experiment")

    poi = sub.add_parser(
        "poisoning",
        help="data poisoning: IF vs RIF on the logit of a mislabeled point (the paper's Figure 3)",
        description=(
            "Add one test point with its label flipped to the training set, refit, and predict "
            "the change of that point's own logit when it is removed again, by IF and by RIF; "
            "the actual change is exact (removing it gives back the original fit). Repeated "
            "for --points random test points. Logistic family only."
        ),
    )
    _add_data_args(poi)
    _add_model_args(poi)
    poi.add_argument("--points", type=_positive_int, default=20, metavar="N",
                     help="number of poisoned test points (default 20)")
    _add_output_args(poi, "rif-output/poisoning")

    swp = sub.add_parser(
        "sweep",
        help="the experiment while subsampling n and while scaling l2 (the paper's Figure 2)",
        description=(
            "Run the experiment on random subsamples of the training set (fixed d) and with "
            "the penalty scaled by each factor, and plot each method's slope and Pearson "
            "correlation against exact retraining as n and l2 change."
        ),
    )
    _add_data_args(swp)
    _add_model_args(swp)
    swp.add_argument("--n-fractions", type=_fraction_list, default=[0.25, 0.5, 0.75, 1.0],
                     metavar="F,F,...", help="training-set fractions (default 0.25,0.5,0.75,1)")
    swp.add_argument("--l2-factors", type=_positive_list, default=[0.3, 1.0, 3.0, 10.0],
                     metavar="F,F,...", help="factors applied to --l2 (default 0.3,1,3,10)")
    swp.add_argument("--sizes", type=_positive_int, default=4, metavar="N",
                     help="number of set sizes per run (default 4)")
    _add_output_args(swp, "rif-output/sweep")

    sea = sub.add_parser(
        "search",
        help="find the k samples whose removal moves a metric most, checked by retraining",
        description=(
            "Choose the k training samples with the largest predicted effect on a metric (by "
            "IF and by RIF scores, assuming additivity), then retrain without each chosen set "
            "and report the predicted, Newton-step and actual effects side by side."
        ),
    )
    _add_data_args(sea)
    _add_model_args(sea)
    sea.add_argument("--metric", choices=_METRICS, default="test_loss",
                     help="metric to move (default test_loss)")
    sea.add_argument("--k", type=_int_list, default=[10, 50, 100], metavar="K,K,...",
                     help="set sizes (default 10,50,100)")
    sea.add_argument("--decrease", action="store_true",
                     help="look for removals that decrease the metric (default: increase)")
    _add_output_args(sea, "rif-output/search")

    _cli_audit.add_parser(sub)

    from .benchmark import SHAPES

    ben = sub.add_parser(
        "benchmark",
        help="runtime at the paper's Table 2 shapes vs SciPy, NumPy and the machine's floor",
        description=(
            "Time rif-native's attribution (leverages plus the scores of every sample on one "
            "metric) on synthetic data of each Table 2 shape, beside a careful SciPy pipeline "
            "and the paper's NumPy style (both checked equal first), and the floor "
            "(2 n d^2 + d^3/3) / peak with NumPy's DGEMM rate measured in the run. Writes "
            "table2.json and table2.md. For a fair NumPy baseline run it with "
            "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset."
        ),
    )
    ben.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES),
                     metavar="NAME", help="datasets to time (default all: " +
                     ", ".join(SHAPES) + ")")
    ben.add_argument("--repeat", type=_positive_int, default=3,
                     help="repetitions; the best time counts (default 3)")
    ben.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                     help="threads for rif-native (default: all cores)")
    ben.add_argument("--backend", choices=("cpu", "cuda", "auto"), default=None,
                     help="where rif-native runs (default: RIF_BACKEND, else auto); the "
                     "baselines and the floor are the CPU's")
    _add_output_args(ben, "rif-output/benchmark")


def _add_output_args(p: argparse.ArgumentParser, default_out: str) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", default=default_out,
                     help=f"output folder (default {default_out}; created if missing; checked "
                     "before any work)")
    out.add_argument("--force", action="store_true",
                     help="overwrite the files of an earlier run in the output folder (without "
                     "it, the command refuses before any work)")
    out.add_argument("--quiet", action="store_true",
                     help="no progress bars or log lines; only the final summary")


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


def _one_line(exc: BaseException) -> str:
    """An exception's message with its whitespace (newlines included) folded to single spaces."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _printable(text: str) -> str:
    """text with control characters escaped (a hostile file's bytes can end up in a message,
    and must not move the cursor or start a terminal escape sequence)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


def _check_labels(family: str, y: np.ndarray, what: str) -> None:
    if family == "logistic":
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            values = ", ".join(f"{v:g}" for v in np.unique(y)[:5])
            raise _UsageError(
                f"{what}: logistic regression needs labels 0 and 1, found values {values}"
                f"{', ...' if np.unique(y).size > 5 else ''}; recode the labels or use --family"
            )
    elif family == "poisson" and (y < 0).any():
        raise _UsageError(f"{what}: poisson regression needs labels >= 0")
    elif family == "multinomial" and (np.any(y < 0) or np.any(y != np.round(y))):
        raise _UsageError(f"{what}: multinomial regression needs class labels 0, 1, ..., K-1 "
                          "(integers); recode the labels")


def _split(dataset: Dataset, args, family: str):
    """Training and test rows (indices into the data set, or the file's own test part)."""
    n = dataset.n_samples
    if dataset.X_test is not None:
        train = np.arange(n)
        return train, None, "the file's X_test, y_test"
    fraction = 0.2 if args.test_fraction is None else args.test_fraction
    n_test = int(round(fraction * n))
    if n_test < 1 or n - n_test < 2:
        raise _UsageError(
            f"cannot split {n} samples with --test-fraction {fraction:g}: need at least 1 test "
            "and 2 training samples"
        )
    perm = np.random.default_rng(args.seed).permutation(n)
    test = np.sort(perm[:n_test])
    train = np.sort(perm[n_test:])
    if family in ("logistic", "multinomial") and np.unique(dataset.y[train]).size < 2:
        raise _UsageError(
            f"the training part (seed {args.seed}) has a single class; use more data, another "
            "--seed or a smaller --test-fraction"
        )
    return train, test, f"random {fraction:g} of the samples (seed {args.seed})"


def _write_json(path: Optional[Path], payload: dict) -> None:
    """payload as JSON to the (checked) file path, atomically, or to stdout for None."""
    text = json.dumps(payload, indent=1, allow_nan=False)
    if path is None:
        sys.stdout.write(text + "\n")
        return
    try:
        _output.write_text(path, text + "\n")
    except OSError as exc:
        raise _UsageError(f"cannot write --json file {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# rif attribute
# --------------------------------------------------------------------------------------------


def _load_user_data(path, labels: Optional[str]) -> Dataset:
    """load_dataset (path: one path, or a list of .npy shards), with every failure to read an
    untrusted file as a one-line usage error."""
    shown = ", ".join(str(p) for p in path) if isinstance(path, list) else str(path)
    try:
        return load_dataset(path, labels)
    except (ValueError, FileNotFoundError) as exc:
        raise _UsageError(_one_line(exc)) from None
    except MemoryError as exc:
        message = _one_line(exc)
        if shown not in message and (labels is None or str(labels) not in message):
            size = "" if isinstance(path, list) else f" ({_file_size(path)})"
            message = f"{shown}{size}: {message}"
        raise _UsageError(f"not enough memory to read the data: {message}") from None
    except OSError as exc:
        raise _UsageError(f"cannot read {exc.filename or shown}: {exc.strerror or exc}") from None
    except Exception as exc:  # a parser's surprise on a hostile file is still the file's fault
        raise _UsageError(f"cannot read {shown}: {type(exc).__name__}: {_one_line(exc)}") from None


def _file_size(path: str) -> str:
    try:
        return _bytes(os.path.getsize(path))
    except OSError:
        return "size unknown"


def _bytes(size: float) -> str:
    """A byte count for people: 512 bytes, 1.5 MiB, 7.3 TiB."""
    if size < 1024:
        return f"{size:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def _prepare(args) -> argparse.Namespace:
    """Load the data set named by the arguments and split it into training and test parts.

    Data on disk (Dataset.on_disk) stay there for 'rif attribute', split contiguously (see
    _prepare_on_disk); the other commands hold X in memory, so they read it whole."""
    if args.labels is not None and args.data is None:
        raise _UsageError("--labels needs --data (the features file it belongs to)")
    if args.data is not None and args.max_features is not None:
        raise _UsageError("--max-features applies only to the built-in data set, not to --data")
    if args.data is None and args.family == "multinomial":
        dataset = load_digits(n_features=args.max_features or 128)
        source = "built-in"
    elif args.data is None:
        dataset = load_sms_spam(max_features=args.max_features or _DEFAULT_MAX_FEATURES)
        source = "built-in"
    else:
        paths = args.data if len(args.data) > 1 else args.data[0]
        dataset = _load_user_data(paths, args.labels)
        source = ", ".join(args.data)
    args.data_shape = dataset.X.shape  # for the message if memory runs out later
    if dataset.on_disk:
        if args.command == "attribute":
            return _prepare_on_disk(dataset, source, args)
        dataset = _read_whole(dataset, args.command)
    family = args.family
    _check_labels(family, dataset.y, "labels")
    if dataset.y_test is not None:
        _check_labels(family, dataset.y_test, "test labels (y_test)")
    train, test, split_note = _split(dataset, args, family)
    if test is None:
        X_test, y_test = dataset.X_test, dataset.y_test
    else:
        X_test = np.ascontiguousarray(dataset.X[test])
        y_test = np.ascontiguousarray(dataset.y[test])
    return argparse.Namespace(
        dataset=dataset, source=source, split_note=split_note, train=train, test=test,
        contiguous=False, X_train=np.ascontiguousarray(dataset.X[train]),
        y_train=np.ascontiguousarray(dataset.y[train]), X_test=X_test, y_test=y_test)


def _read_whole(dataset: Dataset, command: str) -> Dataset:
    """X on disk read into memory, for the commands that hold it there (their removal sets and
    retraining index rows at random); too large for memory is a usage error naming the one
    command that reads it block by block."""
    try:
        return dataset.in_memory()
    except ValueError as exc:
        raise _UsageError(_one_line(exc)) from None
    except MemoryError as exc:
        raise _UsageError(
            f"{_one_line(exc)}: 'rif {command}' holds X in memory; only 'rif attribute' reads "
            "--data block by block") from None


def _prepare_on_disk(dataset: Dataset, source: str, args) -> argparse.Namespace:
    """Training and test parts of X on disk as row ranges of it, never copies: the last
    --test-fraction of the rows are the test part (contiguous, not shuffled)."""
    from ._api import _backend_choice
    from .sources import open_source

    if _backend_choice(args.backend) == "cuda":
        asked = "--backend cuda" if args.backend else "RIF_BACKEND=cuda"
        raise _UsageError(f"{asked} needs X as one array in memory, but --data {source} is "
                          "read from disk block by block: use the backend cpu or auto")
    family = args.family
    _check_labels(family, dataset.y, "labels")
    n = dataset.n_samples
    fraction = 0.2 if args.test_fraction is None else args.test_fraction
    n_test = int(round(fraction * n))
    if n_test < 1 or n - n_test < 2:
        raise _UsageError(
            f"cannot split {n} samples with --test-fraction {fraction:g}: need at least 1 test "
            "and 2 training samples"
        )
    n_train = n - n_test
    y_train, y_test = dataset.y[:n_train], dataset.y[n_train:]
    if family == "logistic" and np.unique(y_train).size < 2:
        raise _UsageError(
            f"the training part (the first {n_train} rows: the data are read from disk, not "
            "shuffled) has a single class; use a smaller --test-fraction or store the rows in "
            "a mixed order"
        )
    X = open_source(dataset.X, name=dataset.name)
    label = Path(dataset.name).name
    return argparse.Namespace(
        dataset=dataset, source=source, contiguous=True,
        split_note=(f"the last {fraction:g} of the rows, rows {n_train}..{n - 1}; contiguous: "
                    "the data are read from disk, not shuffled"),
        train=np.arange(n_train), test=np.arange(n_train, n),
        X_train=X.subset(0, n_train, name=f"{label} (training rows)"), y_train=y_train,
        X_test=X.subset(n_train, n, name=f"{label} (test rows)"), y_test=y_test)


def _attribute(args, outputs: _output.Outputs) -> int:
    json_file = _json_target(args, outputs)
    show_info = not args.quiet and args.json != "-"

    def say(line: str = "") -> None:
        if show_info:
            print(line)

    t0 = time.perf_counter()
    data = _prepare(args)
    timings = {"load": time.perf_counter() - t0}
    n_train, d = data.X_train.shape
    storage = data.dataset.storage
    say(f"data       {data.dataset.name} ({data.source}): {data.dataset.n_samples} samples x "
        f"{d} features" + (f" ({storage}, read block by block)" if storage else ""))
    say(f"split      train {n_train}, test {data.y_test.shape[0]} ({data.split_note})")
    res = _fit_and_score(data, args, timings)
    _say_fit(res, args, say)
    ranks = _rankings(res, args.rank_by, args.top)
    if args.json != "-":
        _print_rankings(data, res, ranks, args.rank_by, show_info)
    if args.json is not None:
        _write_json(json_file, _attribute_payload(data, res, ranks, args))
        say(f"json       written to {args.json}")
    return 0


def _json_target(args, outputs: _output.Outputs) -> Optional[Path]:
    """The --json file, checked before any work (None for none or for '-', stdout)."""
    if args.json is None or args.json == "-":
        return None
    return outputs.file(args.json, option="--json")


def _fit_and_score(data, args, timings: dict) -> argparse.Namespace:
    """Fit on the training part, then every training sample's RIF and IF score on the total
    test loss (removal effects); warnings are collected and repeated on stderr."""
    family = args.family
    X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
    on_disk = data.contiguous
    progress = not args.quiet
    d = X_train.shape[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        with _naming(data.source, on_disk):
            fit = rif_native.fit(
                X_train, y_train, l2=args.l2, family=family, fit_intercept=True,
                num_threads=args.threads, progress=progress,
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

        t0 = time.perf_counter()
        with _naming(data.source, on_disk):
            attribution = rif_native.Attribution(
                X_train, y_train, theta, l2=args.l2, family=family, fit_intercept=True,
                num_threads=args.threads, backend=args.backend, progress=progress,
            )
            timings["attribution_setup"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            scores_rif = np.asarray(attribution.scores(direction, method="rif"), dtype=np.float64)
            scores_if = np.asarray(attribution.scores(direction, method="if"), dtype=np.float64)
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
    caught_warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
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
        fit=fit, train_loss_mean=train_loss_mean, loss_test=loss_test, metrics=metrics,
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
    print("negative = removing it decreases the test loss (it hurts). index = row of the "
          "data set" + (" (after dedupe)." if data.dataset.source_index is not None else "."))
    print()
    text_width = 22 if texts is not None else 0
    names = [_label_name(float(v), target_names) for v in np.unique(y_train)[:50]]
    label_width = min(8, max(5, *(len(name) for name in names)))

    def cells(pos: int, score: float) -> str:
        idx = int(train[pos])
        label = _label_name(float(y_train[pos]), target_names)[:label_width]
        part = f"{idx:>6} {label:<{label_width}} {score:>+10.3e} {leverage[pos]:>6.3f}"
        if texts is not None:
            part += " " + f"{_snippet(texts[idx], text_width):<{text_width}}"
        return part

    head = f"{'index':>6} {'label':<{label_width}} {'score':>10} {'lev':>6}"
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
# entry point
# --------------------------------------------------------------------------------------------


def _experiment_config(args, **extra) -> "experiment.ExperimentConfig":
    from . import experiment

    return experiment.ExperimentConfig(
        l2=args.l2, family=args.family, fit_intercept=True, seed=args.seed,
        num_threads=args.threads, backend=args.backend, **extra)


#: The files each command writes into its --out folder (checked for earlier runs' files first).
_OUTPUT_FILES = {
    "experiment": ("estimates.csv", "estimates.json", "summary.csv", "summary.json",
                   "runtime.json", "figure1.png", "figure1.pdf", "report.md", "config.json"),
    "poisoning": ("poisoning.csv", "poisoning.json", "figure3.png", "figure3.pdf", "summary.csv",
                  "summary.json"),
    "sweep": ("sweep.csv", "sweep.json", "figure2.png", "figure2.pdf"),
    "search": ("search.csv", "search.json"),
    "audit": _cli_audit.FILES,
    "benchmark": ("table2.json", "table2.md"),
}


def _out_dir(args, outputs: _output.Outputs) -> Path:
    """The --out folder, made and checked writable before any work; see _OUTPUT_FILES."""
    return outputs.folder(args.out, _OUTPUT_FILES[args.command])


def _experiment(args, outputs: _output.Outputs) -> int:
    from . import experiment

    say = (lambda line="": None) if args.quiet else print
    out = _out_dir(args, outputs)
    data = _prepare(args)
    say(f"data       {data.dataset.name} ({data.source}): train {data.y_train.size}, test "
        f"{data.y_test.size} ({data.split_note}), d = {data.X_train.shape[1]}")
    cfg = _experiment_config(args, n_sizes=args.sizes, strategies=tuple(args.strategies),
                             metrics=tuple(args.metrics), test_subset=args.test_subset,
                             tol=args.tol)
    res = experiment.run_experiment(data.X_train, data.y_train, data.X_test, data.y_test, cfg,
                                    name=data.dataset.name, show_progress=not args.quiet,
                                    log=lambda line: say(f"           {line}"))
    files = experiment.write_outputs(res, out)
    experiment.write_json(out / "config.json", {"command": "experiment", "data": data.source,
                                                "split": data.split_note,
                                                **experiment.config_dict(cfg)})
    print()
    print(experiment.summary_markdown([s for s in res.summary
                                       if not s["method"].endswith("_linear")]))
    print()
    print(experiment.runtime_markdown(res.runtime))
    print()
    print(f"wrote {len(files) + 1} files to {out.resolve()} (report.md, figure1.png, ...)")
    return 0


def _poisoning(args, outputs: _output.Outputs) -> int:
    from . import experiment, plots

    if args.family != "logistic":
        raise _UsageError("poisoning flips 0/1 labels: it needs --family logistic")
    out = _out_dir(args, outputs)
    data = _prepare(args)
    cfg = _experiment_config(args)
    rows = experiment.run_poisoning(data.X_train, data.y_train, data.X_test, data.y_test, cfg,
                                    n_points=args.points, show_progress=not args.quiet)
    files = experiment.write_table(out / "poisoning", rows)
    files += plots.figure3(rows, out / "figure3", title=f"{data.dataset.name}, l2={args.l2:g}")
    actual = np.array([r["actual"] for r in rows])
    summary = [{"metric": "own_logit", "method": m,
                **_stats.agreement(actual, np.array([r[m] for r in rows]))} for m in ("if", "rif")]
    files += experiment.write_table(out / "summary", summary)
    print(experiment.summary_markdown(summary))
    print()
    print(f"wrote {len(files)} files to {out.resolve()} (figure3.png, poisoning.csv, ...)")
    return 0


def _sweep(args, outputs: _output.Outputs) -> int:
    from . import experiment, plots

    out = _out_dir(args, outputs)
    data = _prepare(args)
    cfg = _experiment_config(args, n_sizes=args.sizes)
    rows = experiment.run_sweep(data.X_train, data.y_train, data.X_test, data.y_test, cfg,
                                n_fractions=args.n_fractions, l2_factors=args.l2_factors,
                                show_progress=not args.quiet)
    files = experiment.write_table(out / "sweep", rows)
    files += plots.figure2(rows, out / "figure2", title=f"{data.dataset.name}")
    for kind in ("n", "l2"):
        sub = [r for r in rows if r["sweep"] == kind and r["method"] in ("if", "rif")]
        if sub:
            print(f"sweep over {kind}:")
            print(markdown_table(
                ["setting", "metric", "method", "slope", "Pearson"],
                ["---:", "---", "---", "---:", "---:"],
                ([f"{r['setting']:g}", r["metric"], r["method"], f"{r['slope']:.3g}",
                  f"{r['pearson']:.3g}"] for r in sub)))
            print()
    print(f"wrote {len(files)} files to {out.resolve()} (figure2.png, sweep.csv, ...)")
    return 0


def _search(args, outputs: _output.Outputs) -> int:
    from . import experiment

    out = _out_dir(args, outputs)
    data = _prepare(args)
    n = data.y_train.size
    if max(args.k) > n:
        raise _UsageError(f"--k {max(args.k)} is larger than the {n} training samples")
    rows = experiment.run_search(data.X_train, data.y_train, data.X_test, data.y_test,
                                 _experiment_config(args), ks=args.k, metric=args.metric,
                                 sign=-1 if args.decrease else +1, show_progress=not args.quiet)
    files = experiment.write_table(out / "search", rows)
    print(f"removing the k samples predicted to {'decrease' if args.decrease else 'increase'} "
          f"{args.metric} the most (removal effects; 'actual' is exact retraining):")
    print(markdown_table(
        ["method", "k", "predicted (sum of scores)", "Newton step", "actual", "IF/RIF overlap"],
        ["---"] + ["---:"] * 5,
        ([r["method"], r["k"], f"{r['predicted']:.4g}", f"{r['ns']:.4g}", f"{r['actual']:.4g}",
          r["overlap_if_rif"]] for r in rows)))
    print()
    print(f"wrote {len(files)} files to {out.resolve()} (search.csv, search.json)")
    return 0


def _benchmark(args, outputs: _output.Outputs) -> int:
    from . import benchmark
    from .experiment import write_json

    out = _out_dir(args, outputs)
    shapes = {k: benchmark.SHAPES[k] for k in args.shapes}
    result = benchmark.run_table2(shapes, repeat=args.repeat, num_threads=args.threads,
                                  log=(lambda s: None) if args.quiet else print,
                                  backend=args.backend)
    table = benchmark.table2_markdown(result)
    write_json(out / "table2.json", result)
    _output.write_text(out / "table2.md", table + "\n")
    print(table)
    print()
    print(f"wrote table2.json and table2.md to {out.resolve()}")
    return 0


def _audit(args, outputs: _output.Outputs) -> int:
    return _cli_audit.run(args, outputs)


_HANDLERS = {"attribute": _attribute, "experiment": _experiment, "poisoning": _poisoning,
             "sweep": _sweep, "search": _search, "benchmark": _benchmark, "audit": _audit}


def _check_backend(backend: Optional[str]) -> None:
    """--backend cuda (or RIF_BACKEND=cuda) without a usable GPU is a usage error, said first."""
    from ._api import _use_cuda

    try:
        _use_cuda(backend)
    except (RuntimeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None


def _command_argv(argv: list[str]) -> list[str]:
    """argv with the command made explicit: bare options mean 'attribute'; a first word that
    is no command is a usage error (never silently taken as 'attribute', even before --help)."""
    if not argv:
        return ["attribute"]
    first = argv[0]
    if first in _COMMANDS or first in ("-h", "--help", "--version"):
        return argv
    if first.startswith("-") and first != "-":
        return ["attribute", *argv]
    close = difflib.get_close_matches(first, _COMMANDS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise _UsageError(f"unknown command {first!r}{hint}; the commands are "
                      f"{', '.join(_COMMANDS)} (see '{_PROG} --help')")


def _run(args, outputs: _output.Outputs) -> int:
    """Run the command; if it does not finish, remove what it created (then re-raise)."""
    try:
        return _HANDLERS[args.command](args, outputs)
    except BaseException:
        outputs.discard()
        raise


def _run_command(args) -> int:
    """Run the command in this (the main) thread: the native kernel checks for Ctrl-C between
    row blocks and iterations, so KeyboardInterrupt arrives within about a second even during a
    long fit; _run has then removed what the run created."""
    outputs = _output.Outputs(force=getattr(args, "force", False))
    try:
        return _run(args, outputs)
    except KeyboardInterrupt:
        if _progress.bar_open():
            sys.stderr.write("\n")  # finish the progress bar's line
        raise


def _error_message(exc: Exception, args) -> Optional[str]:
    """The one line for an error the user can act on; None for a bug (keep the traceback)."""
    if isinstance(exc, (_UsageError, _output.OutputError)):
        return _one_line(exc)
    if isinstance(exc, MemoryError):
        return _memory_message(exc, args)
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, (OSError, ValueError, TypeError, np.linalg.LinAlgError)):
        return _one_line(exc)
    return None


def _memory_message(exc: MemoryError, args) -> str:
    shape = getattr(args, "data_shape", None)
    detail = f" ({_one_line(exc)})" if str(exc) else ""
    if shape is None:
        return f"not enough memory{detail}"
    n, d = shape
    return (f"not enough memory{detail} for {n} samples x {d} features (a fit holds the "
            f"(d+1) x (d+1) Hessian: {_bytes(8.0 * (d + 1) ** 2)}); use fewer samples or features")


def main(argv: list[str] | None = None) -> int:
    """Run the ``rif`` command line; return the exit status.

    0: done. 2: one line on stderr (bad options or data, an output that must not or cannot be
    written, a failure while writing, not enough memory). 130: interrupted (Ctrl-C, within
    about a second: the native calls check for it). After 2 or 130, what the run had created is
    removed again.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        args = _build_parser().parse_args(_command_argv(argv))
        if hasattr(args, "l2") and args.l2 is None:
            args.l2 = (_DEFAULT_L2_MULTINOMIAL if getattr(args, "family", None) == "multinomial"
                       else _DEFAULT_L2)
        _check_backend(getattr(args, "backend", None))
        return _run_command(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _error_message(exc, args)
        if message is None:
            raise
        print(f"{_PROG}: error: {_printable(message)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
