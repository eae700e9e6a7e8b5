"""The ``rif`` command line tool: argument parsing, data loading and splitting, output checks,
error reporting, and the commands that live here (experiment, poisoning, sweep, search,
benchmark). ``rif attribute`` (also what a bare ``rif`` runs) is in _cli_attribute.py and
``rif audit`` in _cli_audit.py.

Every estimate is a removal effect (theta_{-i} - theta_hat): a positive score means that
removing the sample is predicted to increase the metric.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

import rif_native
from rif_native import _cli_warnings, _memory, _output, _progress, _stats, _stdout
from rif_native._markdown import markdown_table
from rif_native import _cli_attribute, _cli_audit
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


class _UsageError(Exception):
    """A mistake in the user's input: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one-line messages instead of usage dumps."""

    def error(self, message):  # noqa: D102 - argparse hook
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------------


def _int_from(text: str, low: int, expected: str) -> int:
    """An integer option's value, at least `low`; else argparse's error saying `expected`."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _int_from(text, 1, "a positive integer")


def _seed(text: str) -> int:
    """--seed: NumPy's generators take integers >= 0."""
    return _int_from(text, 0, "an integer >= 0")


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
    _cli_attribute.add_parser(sub)
    _add_experiment_parsers(sub)
    for name, command in sub.choices.items():  # every command's --help ends with its files
        files = ", ".join(_OUTPUT_FILES[name])
        where = "with --out DIR, into DIR" if name == "attribute" else "into --out DIR"
        command.epilog = ((command.epilog + " ") if command.epilog else "") + \
            f"Output files ({where}): {files}."
    return parser


def _add_data_args(p: argparse.ArgumentParser, *, reads_from_disk: bool = False) -> None:
    """The data options; reads_from_disk: the command reads .npy, shards, .zarr and .h5 from
    disk block by block (rif attribute), splitting them contiguously, not at random."""
    data = p.add_argument_group("data")
    data.add_argument(
        "--data", metavar="PATH", action="append",
        help="your data: a .npz, .csv, .tsv or .parquet file; or X alone, with --labels: a "
        ".npy file (memory-mapped), a folder of .npy shards (stacked in file name order, part-2 "
        "before part-10), a .zarr store, "
        "FILE.h5[:NAME] / FILE.hdf5[:NAME], or --data given several times (.npy shards stacked "
        "in that order), which 'rif attribute' reads from disk block by block and the other "
        "commands read whole. Default: the built-in SMS Spam data",
    )
    data.add_argument(
        "--label", metavar="COLUMN",
        help="a .csv/.tsv/.parquet table with a header: the label column (default the last); "
        "text labels are numbered in sorted order, as printed",
    )
    data.add_argument(
        "--id", metavar="COLUMN", dest="id_column",
        help="a table's column of sample ids: never a feature; rif attribute, audit and search "
        "show and write the ids instead of row numbers",
    )
    data.add_argument(
        "--one-hot", action="store_true",
        help="encode a table's non-numeric columns as 0/1 columns NAME=VALUE, the first value "
        "in sorted order dropped (the reference); what was encoded is printed. Without it such "
        "columns are an error that names them",
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
        help="fraction of samples held out as the test part, chosen at random with --seed "
        "(default 0.2; ignored when the .npz file has X_test and y_test)" + (
            "; for data read from disk (.npy, shards, .zarr, .h5) the LAST F of the rows, not "
            "a random part" if reads_from_disk else
            "; data given as .npy, shards, .zarr or .h5 are read whole and split at random too"),
    )
    data.add_argument(
        "--seed", type=_seed, default=0,
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
                     help="repetitions; the best time counts (default 3; at least 20 for "
                          "shapes whose floor is under 50 ms)")
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


def _one_line(exc: BaseException) -> str:
    """An exception's message with its whitespace (newlines included) folded to single spaces."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _printable(text: str) -> str:
    """text with control characters escaped (a hostile file's bytes can end up in a message,
    and must not move the cursor or start a terminal escape sequence)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
    lost = np.setdiff1d(dataset.y[test], dataset.y[train]) if family == "multinomial" else []
    if len(lost):  # (else refused as a class without samples, or a test class beyond K)
        raise _UsageError(
            f"class(es) {', '.join(f'{c:g}' for c in lost[:10])} have no samples in the training "
            f"part (seed {args.seed}), only in the test part; use more data, another --seed or a "
            "smaller --test-fraction"
        )
    return train, test, f"random {fraction:g} of the samples (seed {args.seed})"


# --------------------------------------------------------------------------------------------
# data: loading and splitting
# --------------------------------------------------------------------------------------------


def _by_column(args) -> bool:
    """Whether the data are a table read by column name (--label, --id, --one-hot, .parquet)."""
    named = (getattr(args, "label", None) is not None
             or getattr(args, "id_column", None) is not None or getattr(args, "one_hot", False))
    parquet = args.data is not None and str(args.data[0]).lower().endswith(".parquet")
    if named and args.data is None:
        raise _UsageError("--label, --id and --one-hot read a table: give it with --data "
                          "FILE.csv|.tsv|.parquet")
    return named or parquet


def _load_table(args) -> Dataset:
    """The table named by --data, by column name; what the reader changed is said on stderr
    (stdout may carry JSON)."""
    from .datasets import load_table

    if len(args.data) > 1 or args.labels is not None:
        raise _UsageError("a table read by column name (--label, --id, --one-hot) is one "
                          "--data file with its labels inside; --labels is for .npy data")
    dataset = _load_user_data(
        args.data[0], None, read=lambda: load_table(args.data[0], label=args.label,
                                                    id_column=args.id_column,
                                                    one_hot=args.one_hot, family=args.family))
    if not getattr(args, "quiet", False):
        for note in dataset.notes:
            print(f"note: {note}", file=sys.stderr)
    return dataset


def _load_user_data(path, labels: Optional[str], read=None) -> Dataset:
    """load_dataset (path: one path, or a list of .npy shards), or ``read()`` reading path
    otherwise, with every failure to read an untrusted file as a one-line usage error."""
    shown = ", ".join(str(p) for p in path) if isinstance(path, list) else str(path)
    try:
        return load_dataset(path, labels) if read is None else read()
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
    by_column = _by_column(args)
    if args.data is None and args.family == "multinomial":
        dataset = load_digits(n_features=args.max_features or 128)
        source = "built-in"
    elif args.data is None:
        dataset = load_sms_spam(max_features=args.max_features or _DEFAULT_MAX_FEATURES)
        source = "built-in"
    elif by_column:
        dataset = _load_table(args)
        source = args.data[0]
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
    _cli_warnings.training_rows(train)
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
    _cli_warnings.training_rows(np.arange(n_train))
    return argparse.Namespace(
        dataset=dataset, source=source, contiguous=True,
        split_note=(f"the last {fraction:g} of the rows, rows {n_train}..{n - 1}; contiguous: "
                    "the data are read from disk, not shuffled"),
        train=np.arange(n_train), test=np.arange(n_train, n),
        X_train=X.subset(0, n_train, name=f"{label} (training rows)"), y_train=y_train,
        X_test=X.subset(n_train, n, name=f"{label} (test rows)"), y_test=y_test)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def _experiment_config(args, **extra) -> Any:
    from . import experiment

    return experiment.ExperimentConfig(
        l2=args.l2, family=args.family, fit_intercept=True, seed=args.seed,
        num_threads=args.threads, backend=args.backend, **extra)


#: The files each command writes into its --out folder (checked for earlier runs' files first).
_OUTPUT_FILES = {
    "attribute": _cli_attribute.FILES,
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

    if args.metric == "self_loss" and args.decrease:
        raise _UsageError("--decrease with --metric self_loss: "
                          f"{experiment.SELF_LOSS_ONLY_RISES}; drop --decrease")
    out = _out_dir(args, outputs)
    data = _prepare(args)
    n = data.y_train.size
    if max(args.k) > n:
        raise _UsageError(f"--k {max(args.k)} is larger than the {n} training samples")
    rows = experiment.run_search(data.X_train, data.y_train, data.X_test, data.y_test,
                                 _experiment_config(args), ks=args.k, metric=args.metric,
                                 sign=-1 if args.decrease else +1, show_progress=not args.quiet)
    rows = [_search_row(row, data) for row in rows]
    files = _write_search(out / "search", rows)
    _print_search(rows, args, data)
    print()
    print(f"wrote {len(files)} files to {out.resolve()} (search.csv, search.json)")
    return 0


def _search_row(row: dict, data) -> dict:
    """A search row with its chosen set named as rows of the data set ("removed_rows") and, with
    --id, by their ids ("removed_ids"), in place of positions in the training part."""
    from ._cli_attribute import _id  # ids as JSON holds them

    out = {k: v for k, v in row.items() if k != "chosen"}
    out["removed_rows"] = [int(data.train[i]) for i in row["chosen"]]
    ids = data.dataset.sample_ids
    if ids is not None:
        out["removed_ids"] = [_id(ids[j]) for j in out["removed_rows"]]
    return out


def _write_search(stem: Path, rows: list) -> list:
    """search.json (the removed samples as lists) and search.csv (as space-separated cells,
    an id with spaces or quotes quoted as a shell would: shlex.split reads a cell back)."""
    import shlex

    from . import experiment

    cells = [{k: shlex.join(str(v) for v in value) if isinstance(value, list) else value
              for k, value in row.items()} for row in rows]
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    experiment._write_csv(csv_path, cells)
    experiment.write_json(json_path, rows)
    return [csv_path, json_path]


#: The most removed samples a row of rif search's printed table names.
_SHOWN = 8


def _shown_samples(names: list) -> str:
    """The first few of a chosen set, for a Markdown table cell (an id's '|' escaped)."""
    more = f" ... (+{len(names) - _SHOWN})" if len(names) > _SHOWN else ""
    return " ".join(_printable(str(v)).replace("|", "\\|") for v in names[:_SHOWN]) + more


def _print_search(rows: list, args, data) -> None:
    """The search's table: each set's predicted, Newton-step and actual effect, and its samples."""
    by_id = data.dataset.sample_ids is not None
    self_loss = args.metric == "self_loss"
    print(f"removing the k samples predicted to {'decrease' if args.decrease else 'increase'} "
          f"{args.metric} the most (removal effects; 'actual' is exact retraining):")
    if self_loss:
        print("(the self-loss's gradient vanishes at theta_hat: samples are ranked by their "
              "second-order effect 0.5 delta_i^T H delta_i, and 'predicted' is that of the "
              "set's summed IF or RIF rows)")
    predicted = "predicted (second order)" if self_loss else "predicted (sum of scores)"
    print(markdown_table(
        ["method", "k", predicted, "Newton step", "actual", "IF/RIF overlap",
         "removed (ids)" if by_id else "removed (rows of the data)"],
        ["---"] + ["---:"] * 5 + ["---"],
        ([r["method"], r["k"], f"{r['predicted']:.4g}", f"{r['ns']:.4g}", f"{r['actual']:.4g}",
          r["overlap_if_rif"], _shown_samples(r["removed_ids" if by_id else "removed_rows"])]
         for r in rows)))
    if any(len(r["removed_rows"]) > _SHOWN for r in rows):
        print(f"(the first {_SHOWN} removed samples of each set, in order of decreasing score; "
              "search.json and search.csv list them all)")


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


def _attribute(args, outputs: _output.Outputs) -> int:
    return _cli_attribute.run(args, outputs)


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


def _parse(argv: list[str]) -> argparse.Namespace:
    """The parsed arguments; an unknown option is a usage error that points at the help of the
    command it was given to ('rif attribute --help'), not at 'rif --help'."""
    args, extra = _build_parser().parse_known_args(argv)
    if extra:
        prog = f"{_PROG} {args.command}" if getattr(args, "command", None) else _PROG
        raise _UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{prog} --help')")
    return args


def _run(args, outputs: _output.Outputs) -> int:
    """Run the command; if it does not finish, remove what it created (then re-raise)."""
    try:
        return _HANDLERS[args.command](args, outputs)
    except BaseException:
        outputs.discard()
        raise


def _data_files(args) -> list[str]:
    """The files and folders the run reads its data from (each --data file or folder of
    shards, the store of FILE.h5:NAME or STORE.zarr:NAME as the loader splits it, and
    --labels), which no output may replace or lie inside."""
    from .datasets import _store_member

    named = [*(getattr(args, "data", None) or []), getattr(args, "labels", None)]
    paths = []
    for p in (str(p) for p in named if p is not None):
        member = _store_member(p)
        paths.append(str(member[0]) if member else p)
    return [p for p in paths if os.path.exists(p)]


def _run_command(args) -> int:
    """Run the command in this (the main) thread: the native kernel checks for Ctrl-C between
    row blocks and iterations, so KeyboardInterrupt arrives within about a second even during a
    long fit; _run has then removed what the run created."""
    outputs = _output.Outputs(force=getattr(args, "force", False), reads=_data_files(args))
    try:
        return _run(args, outputs)
    except KeyboardInterrupt:
        _progress.close_bars()  # the interrupted loop's bar: cleared, or its line ended
        if _progress.bar_open():
            sys.stderr.write("\n")  # finish the line of a bar drawn elsewhere
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
    removed again. 141 (128 + SIGPIPE, what a shell reports for a command its pipe stopped): the
    reader of stdout went away early (``rif ... | head``); the run still finished and wrote its
    files, only the rest of the printed output was dropped.
    """
    with _stdout.guarded() as stdout:
        code = _main(argv)
    return _stdout.EXIT_BROKEN_PIPE if stdout.broken and code == 0 else code


def _main(argv: list[str] | None) -> int:
    """main() behind its guard of stdout."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    _memory.retain_freed_memory()  # this process is the command's: reuse freed pages
    try:
        args = _parse(_command_argv(argv))
        if hasattr(args, "l2") and args.l2 is None:
            args.l2 = (_DEFAULT_L2_MULTINOMIAL if getattr(args, "family", None) == "multinomial"
                       else _DEFAULT_L2)
        _check_backend(getattr(args, "backend", None))
        with _cli_warnings.shown(_PROG, _printable):
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
    # `python -m rif_native.cli`: run the package's own module, not this __main__ copy, so that
    # the command modules' lazy `from .cli import ...` (error classes included) meet one module
    from rif_native.cli import main as _main

    raise SystemExit(_main())
