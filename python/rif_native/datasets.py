"""Datasets: the bundled SMS Spam Collection and a loader for a user's own arrays.

``load_sms_spam()`` turns the SMS Spam Collection v.1 (shipped gzip-compressed inside the
package, see ``data/README.md`` for source, citation and license) into a bag-of-words feature
matrix for a binary logistic regression (1 = spam). ``load_dataset(path)`` reads a user's
``.npz`` or ``.csv`` file into memory, or opens X where it lies on disk (a memory-mapped ``.npy``,
``.npy`` shards, a Zarr store, an HDF5 dataset; labels from a separate ``.npy``) to be read
block by block.

Both return a :class:`Dataset`. Only NumPy and the standard library are used for in-memory files;
Zarr and HDF5 stores need zarr and h5py.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import functools
import gzip
import hashlib
import html
import importlib.resources
import io
import itertools
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "Dataset",
    "SMS_SPAM_SHA256",
    "load_dataset",
    "load_digits",
    "load_table",
    "load_sms_spam",
    "tokenize",
]

#: sha256 of the decompressed ``data/SMSSpamCollection.gz`` (the original corpus file).
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
_SMS_SPAM_FILE = "SMSSpamCollection.gz"

_SMS_CITATION = (
    "Almeida, T.A., Gomez Hidalgo, J.M., Yamakami, A. Contributions to the Study of SMS Spam "
    "Filtering: New Collection and Results. Proceedings of the 2011 ACM Symposium on Document "
    "Engineering (DocEng'11), Mountain View, CA, USA, 2011. "
    "http://www.dt.fee.unicamp.br/~tiago/smsspamcollection/"
)

# A token is a run of lowercase letters, digits, pound and dollar signs, with apostrophes
# allowed inside (``don't``) but not at either end.
_TOKEN_RE = re.compile(r"[a-z0-9£$€]+(?:'[a-z0-9£$€]+)*")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A feature matrix with labels, ready for ``rif_native.fit``.

    Attributes
    ----------
    X : (n, d) float64, C-contiguous; or X on disk (see ``on_disk``)
        Features, one row per sample. Data opened where they lie (``load_dataset`` of a
        ``.npy``, shards, a Zarr store or an HDF5 file) keep X there: a read-only
        ``np.memmap`` for one ``.npy`` file, a :class:`rif_native.sources.Source` otherwise, in
        the stored dtype and not yet checked for NaN/inf (the kernel's first pass does that);
        ``in_memory()`` reads it whole.
    y : (n,) float64
        Labels (for the bundled classification data: 0.0 or 1.0).
    texts : list of str or None
        The raw text of each sample where the data are texts, else None.
    feature_names : list of str
        One name per column of X.
    name, description : str
        A short identifier and a human-readable summary (source, size, processing).
    X_test, y_test : arrays or None
        A held-out test part when the source provides one (``.npz`` with keys ``X_test`` and
        ``y_test``), else None.
    target_names : tuple of str or None
        Names of the label values 0 and 1 where known (``("ham", "spam")``).
    source_index : (n,) int64 or None
        Row of each sample in the original file (differs from ``arange(n)`` after deduplication).
    storage : str or None
        For X on disk, how it is stored ("memory-mapped .npy", "3 .npy shards", "Zarr array",
        "HDF5 dataset /x"); None for X in memory.
    origin : str or None
        For X on disk, the file(s) it comes from, as messages name them.
    sample_ids : (n,) array or None
        Each sample's id from an id column (``load_table(..., id_column=)``), else None.
    notes : list of str
        What the reader changed (labels numbered, columns one-hot encoded), to be said.
    """

    X: np.ndarray
    y: np.ndarray
    texts: list[str] | None
    feature_names: list[str]
    name: str
    description: str
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    target_names: tuple[str, ...] | None = None
    source_index: np.ndarray | None = None
    storage: str | None = None
    origin: str | None = None
    sample_ids: np.ndarray | None = None
    notes: list = dataclasses.field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def on_disk(self) -> bool:
        """Whether X stays on disk, read block by block (memory-mapped ``.npy``, shards, Zarr,
        HDF5), rather than held in memory."""
        return self.storage is not None

    def in_memory(self) -> "Dataset":
        """This data set with X read whole into memory (float64, C-contiguous, checked finite),
        for code that needs X as one array; itself when X is in memory already.

        Raises MemoryError, before reading anything, when X as float64 needs more than the
        memory available; ValueError naming the first NaN or infinity.
        """
        if not self.on_disk:
            return self
        from . import _memory

        n, d = self.X.shape
        need = 8.0 * n * d
        limit, what = _memory.available()
        if limit is not None and need > limit:
            raise MemoryError(
                f"{self.origin}: X ({n} x {d}) needs {_memory._gib(need)} in memory as float64, "
                f"more than the {_memory._gib(limit)} of {what}")
        from .sources import open_source

        X = np.empty((n, d))
        for begin, rows in open_source(self.X).blocks():
            X[begin:begin + len(rows)] = _as_float_array(rows, "X", self.origin, row_offset=begin)
        return dataclasses.replace(self, X=X, storage=None, origin=None)

    def __repr__(self) -> str:
        test = "" if self.X_test is None else f", n_test={self.X_test.shape[0]}"
        return (
            f"Dataset(name={self.name!r}, n={self.n_samples}, d={self.n_features}{test}, "
            f"texts={'yes' if self.texts is not None else 'no'})"
        )


# --------------------------------------------------------------------------------------------
# SMS Spam Collection
# --------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Split one message into tokens, as ``load_sms_spam`` does.

    HTML entities are decoded (the corpus writes ``&lt;#&gt;`` for numbers it removed), the text
    is lowercased, typographic apostrophes become ``'``, and tokens are runs of letters a-z,
    digits, ``£``, ``$`` and ``€`` with apostrophes allowed inside a token.
    """
    text = html.unescape(text).lower().replace("\u2019", "'")
    return _TOKEN_RE.findall(text)


def _read_package_bytes(name: str) -> bytes:
    """Bytes of a file under ``rif_native/data`` (wheel, editable install or source tree)."""
    if __package__:
        try:
            return importlib.resources.files(__package__).joinpath("data", name).read_bytes()
        except (FileNotFoundError, ModuleNotFoundError):  # pragma: no cover - broken install
            pass
    path = Path(__file__).resolve().parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled data file {name!r} is missing from the rif_native installation "
            f"(looked in {path.parent}); reinstall the package"
        )
    return path.read_bytes()


@functools.lru_cache(maxsize=1)
def _sms_records() -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The corpus as (texts, labels 0/1), in file order, checked against its sha256."""
    raw = gzip.decompress(_read_package_bytes(_SMS_SPAM_FILE))
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SMS_SPAM_SHA256:
        raise RuntimeError(
            f"bundled {_SMS_SPAM_FILE} decompresses to sha256 {digest}, expected "
            f"{SMS_SPAM_SHA256}; the installation is damaged, reinstall rif_native"
        )
    texts: list[str] = []
    labels: list[int] = []
    codes = {"ham": 0, "spam": 1}
    for lineno, line in enumerate(raw.decode("utf-8").split("\n"), start=1):
        if not line:
            continue
        label, sep, text = line.partition("\t")
        if not sep or label not in codes:  # pragma: no cover - guarded by the sha256
            raise RuntimeError(f"{_SMS_SPAM_FILE}: line {lineno} is not '<ham|spam>\\t<text>'")
        texts.append(text)
        labels.append(codes[label])
    return tuple(texts), tuple(labels)


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def load_sms_spam(
    *,
    max_features: int | None = 1500,
    min_df: int = 2,
    dedupe: bool = True,
    binary: bool = False,
) -> Dataset:
    """The SMS Spam Collection v.1 as a bag-of-words classification problem.

    Labels: ``y = 1`` for spam, ``0`` for ham. Features, computed deterministically with NumPy
    and the standard library only:

    1. each message is tokenised by :func:`tokenize` (HTML entities decoded, lowercase, runs of
       letters, digits, ``£ $ €``, inner apostrophes kept);
    2. the vocabulary is the ``max_features`` tokens with the highest document frequency among
       those that occur in at least ``min_df`` messages (ties broken alphabetically;
       ``max_features=None`` keeps all of them), counted on the messages that are returned;
    3. each entry is ``log1p(count)`` (``binary=True``: 1 if the token occurs, else 0);
    4. each row is scaled to unit Euclidean norm; a message with no vocabulary token stays a
       row of zeros.

    The vocabulary uses every returned message, including those a caller later holds out for
    testing; it uses no labels.

    Parameters
    ----------
    max_features : int or None, default 1500
        Size of the vocabulary (number of columns d); fewer if fewer tokens reach ``min_df``.
    min_df : int, default 2
        Minimum number of messages a token must occur in.
    dedupe : bool, default True
        Drop messages whose exact text already occurred earlier in the file, keeping the first
        occurrence (5,574 -> 5,171 messages; no repeated text has two labels). Repeats matter
        for data attribution: removing one copy of a message leaves its twins in the data, so
        every leave-one-out effect of a repeated message is misleadingly small, and the top of
        an influence ranking fills with copies of one text. ``source_index`` keeps each kept
        message's line (0-based) in the original file.
    binary : bool, default False
        Use token presence instead of ``log1p(count)``.

    Returns
    -------
    Dataset
        ``X`` (n, d) float64 C-contiguous, ``y`` (n,) float64 in {0, 1}, ``texts`` the raw
        messages, ``feature_names`` the vocabulary in column order, ``target_names`` =
        ``("ham", "spam")``.

    Source: Almeida, Gomez Hidalgo and Yamakami (DocEng 2011); provided "for free and with no
    limitations" by its authors (see ``rif_native/data/README.md``).
    """
    if max_features is not None:
        max_features = _check_positive_int(max_features, "max_features")
    min_df = _check_positive_int(min_df, "min_df")

    all_texts, all_labels = _sms_records()
    if dedupe:
        seen: set[str] = set()
        keep = []
        for i, text in enumerate(all_texts):
            if text not in seen:
                seen.add(text)
                keep.append(i)
    else:
        keep = list(range(len(all_texts)))
    texts = [all_texts[i] for i in keep]
    y = np.array([all_labels[i] for i in keep], dtype=np.float64)

    counts = [collections.Counter(tokenize(t)) for t in texts]
    df: collections.Counter[str] = collections.Counter()
    for c in counts:
        df.update(c.keys())
    eligible = sorted((tok for tok, k in df.items() if k >= min_df), key=lambda t: (-df[t], t))
    vocab = eligible if max_features is None else eligible[:max_features]
    column = {tok: j for j, tok in enumerate(vocab)}

    X = np.zeros((len(texts), len(vocab)), dtype=np.float64)
    for i, c in enumerate(counts):
        for tok, k in c.items():
            j = column.get(tok)
            if j is not None:
                X[i, j] = 1.0 if binary else np.log1p(k)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    nonzero = norms > 0
    X[nonzero] /= norms[nonzero, None]

    n_spam = int(y.sum())
    n_empty = int(np.count_nonzero(~nonzero))
    description = (
        f"SMS Spam Collection v.1: {len(texts)} SMS messages "
        f"({len(texts) - n_spam} ham = 0, {n_spam} spam = 1)"
        + (f", {len(all_texts) - len(texts)} exact repeats dropped" if dedupe else "")
        + f". Bag of words: {len(vocab)} most frequent tokens with document frequency >= "
        f"{min_df}, {'binary presence' if binary else 'log1p(count)'}, rows scaled to unit L2 "
        f"norm ({n_empty} messages have no vocabulary token and are all-zero rows). "
        f"Cite: {_SMS_CITATION}"
    )
    return Dataset(
        X=np.ascontiguousarray(X),
        y=y,
        texts=texts,
        feature_names=list(vocab),
        name="sms_spam",
        description=description,
        target_names=("ham", "spam"),
        source_index=np.asarray(keep, dtype=np.int64),
    )


# --------------------------------------------------------------------------------------------
# A user's own data
# --------------------------------------------------------------------------------------------


DIGITS_SHA256 = "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8"
_DIGITS_CITATION = (
    "Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI Machine "
    "Learning Repository, https://doi.org/10.24432/C50P49 (CC BY 4.0)")


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    data = gzip.decompress(_read_package_bytes("digits.csv.gz"))
    if hashlib.sha256(data).hexdigest() != DIGITS_SHA256:
        raise ValueError("the bundled digits.csv.gz does not match its sha256: reinstall "
                         "rif_native")
    table = np.loadtxt(io.StringIO(data.decode("ascii")), delimiter=",", dtype=np.int64)
    return table[:, :64], table[:, 64]


def load_digits(*, n_features: int | None = 128, gamma: float = 0.05, seed: int = 0) -> Dataset:
    """Handwritten digits (10 classes) under a fixed random-feature map: the bundled
    multiclass data set (``rif experiment --family multinomial`` uses it by default).

    1,797 8x8 images of digits 0-9 (pixel counts 0..16; the test part of the UCI "Optical
    Recognition of Handwritten Digits" data, as scikit-learn also ships it). Features:
    pixels scaled to [0, 1], then ``n_features`` random Fourier features
    ``sqrt(2) cos(x W + b)`` with ``W ~ N(0, 2 gamma)`` entries and ``b ~ U(0, 2 pi)``, drawn
    from NumPy's generator seeded by ``seed`` (so the map is the same everywhere).
    ``n_features=None`` keeps the 64 scaled pixels. With the defaults, a multinomial model
    has K (d + 1) = 1,290 parameters for about 1,440 training samples: the high-dimensional
    regime of the paper.

    Returns a Dataset with ``y`` (n,) float64 class indices 0..9 and ``target_names``
    ("0", ..., "9"). Source and license (CC BY 4.0): ``rif_native/data/README.md``.
    """
    pixels, labels = _digits_raw()
    X0 = pixels / 16.0
    if n_features is None:
        X, names = X0, [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
        how = "the 64 pixels scaled to [0, 1]"
    else:
        n_features = _check_positive_int(n_features, "n_features")
        if not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a positive number, got {gamma!r}")
        rng = np.random.default_rng(seed)
        W = rng.normal(scale=np.sqrt(2.0 * gamma), size=(64, n_features))
        b = rng.uniform(0.0, 2.0 * np.pi, size=n_features)
        X = np.sqrt(2.0) * np.cos(X0 @ W + b)
        names = [f"rff_{j}" for j in range(n_features)]
        how = (f"{n_features} random Fourier features sqrt(2) cos(x W + b) of the pixels scaled "
               f"to [0, 1] (gamma = {gamma:g}, seed = {seed})")
    return Dataset(
        X=np.ascontiguousarray(X, dtype=np.float64), y=labels.astype(np.float64), texts=None,
        feature_names=names, name="digits",
        description=f"Handwritten digits: {len(labels)} images, 10 classes; {how}. Cite: "
                    f"{_DIGITS_CITATION}",
        target_names=tuple(str(k) for k in range(10)))


def _as_float_array(a, what: str, source: str, row_offset: int = 0) -> np.ndarray:
    """Check that ``a`` is real-numeric and finite; return it as float64 (``row_offset``: the
    row of the data set that ``a``'s first row is, for the message)."""
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.float64)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(
            f"{source}: {what} must be numeric (integer or floating point), got dtype {a.dtype}"
        )
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        where = f"row {bad[0] + row_offset}" + (f", column {bad[1]}" if bad.size > 1 else "")
        raise ValueError(f"{source}: {what} contains NaN or infinity (first at {where})")
    return a


def _check_pair(X, y, source: str, xname: str = "X", yname: str = "y"):
    X = _as_float_array(X, xname, source)
    y = _as_float_array(y, yname, source)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(
            f"{source}: {xname} must be 2-D (n samples x d features), got shape {X.shape}"
        )
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(
            f"{source}: {yname} must be 1-D (one label per sample), got shape {y.shape}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{source}: {xname} is empty (shape {X.shape})")
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{source}: {xname} has {X.shape[0]} rows but {yname} has {y.shape[0]} labels"
        )
    return np.ascontiguousarray(X), np.ascontiguousarray(y)


def _check_two_classes(y: np.ndarray, source: str, yname: str = "y") -> None:
    values = np.unique(y)
    if values.size < 2:
        raise ValueError(
            f"{source}: {yname} has a single class (every label is {values[0]:g}); "
            "attribution needs at least two distinct label values"
        )


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (np.savez), an empty one
_NPY_MAGIC = b"\x93NUMPY"


def _read_head(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _check_magic(path: Path, magic: tuple[bytes, ...], what: str) -> None:
    """Refuse a file whose first bytes are not those of ``what`` before NumPy parses it."""
    head = _read_head(path, 8)
    if not head:
        raise ValueError(f"{path}: not a readable {what} (the file is empty)")
    if not head.startswith(magic):
        hint = {".npz": "a zip archive of .npy arrays, as np.savez writes",
                ".npy": "a NumPy array file, as np.save writes"}[what]
        raise ValueError(f"{path}: not a readable {what} (it does not start like {hint})")


def _npz_arrays(archive, keys: tuple[str, ...], source: str) -> dict:
    """Read the named members; a damaged or non-numeric member is a ValueError naming it."""
    out = {}
    for key in keys:
        try:
            out[key] = archive[key]
        except MemoryError as exc:
            raise _too_large(source, f"array {key!r}", exc) from None
        except Exception as exc:  # BadZipFile (bad CRC), EOFError (truncated), zlib.error, ...
            if isinstance(exc, ValueError) and "allow_pickle" in str(exc):
                why = "it is an object array; arrays must be numeric and are never unpickled"
            else:
                why = f"the archive is damaged: {type(exc).__name__}: {_one_line(exc)}"
            raise ValueError(f"{source}: array {key!r} cannot be read ({why})") from None
    return out


def _npz_keys(keys: set, source: str) -> tuple[str, ...]:
    """The members to read: X and y, and X_test, y_test when both are there."""
    missing = [k for k in ("X", "y") if k not in keys]
    if missing:
        raise ValueError(
            f"{source}: missing key(s) {', '.join(missing)}; a .npz needs arrays 'X' (n x d) "
            f"and 'y' (n,), optionally 'X_test' and 'y_test' (found: "
            f"{', '.join(sorted(keys)) or 'none'})"
        )
    has_test = [k for k in ("X_test", "y_test") if k in keys]
    if len(has_test) == 1:
        other = "y_test" if has_test[0] == "X_test" else "X_test"
        raise ValueError(f"{source}: has {has_test[0]!r} but not {other!r}; give both or neither")
    return ("X", "y", *has_test)


def _load_npz(path: Path) -> Dataset:
    source = str(path)
    _check_magic(path, _ZIP_MAGIC, ".npz")
    # Our own handle: np.load leaves its file open when the archive turns out to be damaged.
    with open(path, "rb") as f:
        try:
            archive = np.load(f, allow_pickle=False)
        except MemoryError as exc:
            raise _too_large(source, "the archive", exc) from None
        except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, ...
            raise ValueError(f"{source}: not a readable .npz archive ({_one_line(exc)})") \
                from None
        if not isinstance(archive, np.lib.npyio.NpzFile):  # pragma: no cover - magic checked
            raise ValueError(f"{source}: not a readable .npz archive (it holds a single array)")
        with archive:
            arrays = _npz_arrays(archive, _npz_keys(set(archive.files), source), source)
    X, y = _check_pair(arrays["X"], arrays["y"], source)
    _check_two_classes(y, source)
    X_test = y_test = None
    if "X_test" in arrays:
        X_test, y_test = _check_pair(arrays["X_test"], arrays["y_test"], source, "X_test", "y_test")
        if X_test.shape[1] != X.shape[1]:
            raise ValueError(
                f"{source}: X_test has {X_test.shape[1]} columns but X has {X.shape[1]}"
            )
    return Dataset(
        X=X,
        y=y,
        texts=None,
        feature_names=[f"x{j}" for j in range(X.shape[1])],
        name=path.stem,
        description=f"{source}: {X.shape[0]} samples, {X.shape[1]} features"
        + ("" if X_test is None else f", {X_test.shape[0]} test samples"),
        X_test=X_test,
        y_test=y_test,
    )


def _read_npy(path: Path, what: str) -> np.ndarray:
    """One array from a .npy file, never unpickled; a bad file is a ValueError naming it."""
    if _read_head(path, 8).startswith(_ZIP_MAGIC):
        raise ValueError(f"{path}: is a .npz archive, not a .npy file for {what}; give it as "
                         "--data PATH.npz (arrays X and y) instead")
    _check_magic(path, (_NPY_MAGIC,), ".npy")
    try:
        return np.load(path, allow_pickle=False)
    except MemoryError as exc:
        raise _too_large(str(path), f"the array of {what}", exc) from None
    except Exception as exc:
        raise ValueError(f"{path}: not a readable numeric .npy file for {what} "
                         f"({_one_line(exc)})") from None


#: A .npy file that cannot be memory-mapped (truncated, an object array) and is at most this
#: large is read whole instead, so that the error is the reader's own, as for any small file.
_NPY_READ_WHOLE_BYTES = 64 << 20


def _map_npy(path: Path, what: str) -> np.ndarray:
    """One array from a .npy file, memory-mapped read-only (never read whole; never unpickled);
    a bad file is a ValueError naming it."""
    if _read_head(path, 8).startswith(_ZIP_MAGIC):
        raise ValueError(f"{path}: is a .npz archive, not a .npy file for {what}; give it as "
                         "--data PATH.npz (arrays X and y) instead")
    _check_magic(path, (_NPY_MAGIC,), ".npy")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        if path.stat().st_size <= _NPY_READ_WHOLE_BYTES:
            return _read_npy(path, what)  # raises the reader's own error (or reads a small file)
        raise ValueError(f"{path}: not a readable numeric .npy file for {what} (it cannot be "
                         f"memory-mapped: {_one_line(exc)}; is it truncated?)") from None


def _check_stored(X, source: str, xname: str = "X", shard: bool = False, hint: str = "",
                  rows: bool = True):
    """Checks of X on disk that read no data: a numeric dtype, 2-D (one .npy may be 1-D: one
    column; a shard or a store's array may not), not empty (``rows`` False: columns but no
    rows allowed, for one shard of several). ``hint`` follows a 1-D shape."""
    if X.dtype.kind not in "biuf":
        raise ValueError(
            f"{source}: {xname} must be numeric (integer or floating point), got dtype {X.dtype}"
        )
    if X.ndim == 1 and not shard:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"{source}: {xname} must be 2-D (n samples x d features), got shape "
                         f"{tuple(X.shape)}{hint if X.ndim == 1 else ''}")
    if (rows and X.shape[0] == 0) or X.shape[1] == 0:
        raise ValueError(f"{source}: {xname} is empty (shape {tuple(X.shape)})")
    return X


def _labels_for(n: int, labels: Path, source: str) -> np.ndarray:
    """The labels .npy of X on disk (read whole: one number per sample), checked."""
    y = _as_float_array(_read_npy(labels, "the labels"), "y", source)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(
            f"{source}: y must be 1-D (one label per sample), got shape {y.shape}"
        )
    if y.shape[0] != n:
        raise ValueError(f"{source}: X has {n} rows but y has {y.shape[0]} labels")
    _check_two_classes(y, source)
    return np.ascontiguousarray(y)


def _need_labels(path: Path, labels, what: str) -> Path:
    if labels is None:
        raise ValueError(
            f"{path}: {what} holds only the features X; give the labels as a .npy file "
            "(labels=PATH, on the command line --labels PATH)"
        )
    return labels


def _on_disk(X, y: np.ndarray, *, name: str, origin: str, storage: str) -> Dataset:
    n, d = X.shape
    return Dataset(
        X=X,
        y=y,
        texts=None,
        feature_names=[f"x{j}" for j in range(d)],
        name=name,
        description=f"{origin}: {n} samples, {d} features ({storage}, read block by block)",
        storage=storage,
        origin=origin,
    )


def _load_npy(path: Path, labels: Path) -> Dataset:
    X = _map_npy(path, "the features")
    source = f"{path} with labels {labels}"
    if not isinstance(X, np.memmap):  # a small file the memory map refused, read whole
        y = _read_npy(labels, "the labels")
        X, y = _check_pair(X, y, source)
        _check_two_classes(y, source)
        return Dataset(
            X=X,
            y=y,
            texts=None,
            feature_names=[f"x{j}" for j in range(X.shape[1])],
            name=path.stem,
            description=f"{path} (labels {labels}): {X.shape[0]} samples, {X.shape[1]} features",
        )
    X = _check_stored(X, source)
    y = _labels_for(X.shape[0], labels, source)
    return _on_disk(X, y, name=path.stem, origin=source, storage="memory-mapped .npy")


def _source(parts: list, name: str):
    from .sources import open_source

    return open_source(list(parts), name=name)  # uncompressed Zarr: its chunk files in place


def _load_shards(paths: list[Path], labels: Path, what: str, name: str) -> Dataset:
    """X stacked, in the given order, from .npy shards, each memory-mapped; ``what`` names
    them in messages."""
    parts, first = [], None
    for path in paths:
        X = _check_stored(_map_npy(path, "the features"), str(path), shard=True,
                          hint=" (the labels? give them with --labels, outside the shards)",
                          rows=False)
        if first is None:
            first = (path, X.shape[1])
        elif X.shape[1] != first[1]:
            raise ValueError(
                f"{path}: has {X.shape[1]} columns but {first[0]} has {first[1]}: the shards "
                "of X must have the same number of columns"
            )
        parts.append(X)
    origin = f"{what} with labels {labels}"
    n = sum(int(X.shape[0]) for X in parts)
    if n == 0:
        raise ValueError(f"{origin}: X is empty (shape {(0, first[1])}: no shard has rows)")
    y = _labels_for(n, labels, origin)
    storage = f"{len(parts)} .npy shard{'s' if len(parts) > 1 else ''}"
    return _on_disk(_source(parts, name), y, name=name, origin=origin, storage=storage)


def _shards_in(folder: Path) -> list[Path]:
    """The folder's .npy files in name order, numbers in the names compared as numbers
    (part-2 before part-10; zero-padded names keep their order); hidden files and subfolders
    left out."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".npy"
                   and not p.name.startswith(".") and p.is_file()), key=_natural_key)


def _natural_key(path: Path) -> tuple:
    """The name split into text and numbers (the numbers as ints), then the name itself (which
    orders part-1 and part-01)."""
    pieces = re.split(r"(\d+)", path.name)
    return tuple(int(t) if k % 2 else t for k, t in enumerate(pieces)), path.name


def _is_zarr(folder: Path) -> bool:
    return folder.suffix.lower() == ".zarr" or any(
        (folder / marker).is_file() for marker in ("zarr.json", ".zarray", ".zgroup"))


def _load_zarr(path: Path, member, labels) -> Dataset:
    """X from a Zarr store: its one 2-D array, or the array named ``member``."""
    labels = _need_labels(path, labels, "a Zarr store")
    try:
        import zarr
    except ImportError:
        raise ValueError(f"{path}: reading a Zarr store needs the zarr package "
                         "(pip install zarr)") from None
    try:
        node = zarr.open(str(path), mode="r")
        if member:
            node = node[member] if hasattr(node, "members") else None
            if not hasattr(node, "dtype"):
                raise KeyError(member)
        arrays = ([(member or "", node)] if hasattr(node, "dtype") else
                  [(k, v) for k, v in node.members(max_depth=None) if hasattr(v, "dtype")])
    except KeyError:
        raise ValueError(f"{path}: the Zarr store has no array {member!r}") from None
    except Exception as exc:
        raise ValueError(f"{path}: not a readable Zarr store ({type(exc).__name__}: "
                         f"{_one_line(exc)})") from None
    key, X = _the_2d(path, arrays, member, "Zarr store", "array")
    shown = f"{path}:{key}" if key else str(path)
    origin = f"{shown} with labels {labels}"
    X = _check_stored(X, origin, shard=True)
    y = _labels_for(X.shape[0], labels, origin)
    name = path.name[:-5] if path.name.lower().endswith(".zarr") else path.name
    return _on_disk(_source([X], Path(shown).name), y, name=name, origin=origin,
                    storage="Zarr array" + (f" {key}" if key else ""))


def _the_2d(path: Path, found: list, member, kind: str, what: str):
    """(name, array): the named one, or the only 2-D one of a store."""
    if member or (len(found) == 1 and found[0][0] == ""):
        return found[0]
    two_d = [(k, v) for k, v in found if len(v.shape) == 2]
    if len(two_d) == 1:
        return two_d[0]
    if not two_d:
        listed = ", ".join(f"{k} {tuple(v.shape)}" for k, v in found[:5]) or "nothing"
        raise ValueError(f"{path}: the {kind} holds no 2-D {what} (found: {listed}); X must be "
                         f"a 2-D {what} (n samples x d features)")
    names = ", ".join(k for k, _ in two_d[:5]) + (", ..." if len(two_d) > 5 else "")
    raise ValueError(f"{path}: the {kind} holds several 2-D {what}s ({names}); name the one "
                     f"that is X as {path}:NAME")


def _load_hdf5(path: Path, member, labels) -> Dataset:
    """X from an HDF5 file: the dataset named ``member``, or its only 2-D dataset."""
    labels = _need_labels(path, labels, "an HDF5 file")
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{path}: reading an HDF5 file needs the h5py package "
                         "(pip install h5py)") from None
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({_one_line(exc)})") from None
    try:
        if member:
            node = f[member] if member in f else None
            if not isinstance(node, h5py.Dataset):
                raise ValueError(f"{path}: the HDF5 file has no dataset {member!r}")
            found = [(node.name, node)]
        else:
            found = []
            f.visititems(lambda k, v: found.append((f"/{k}", v))
                         if isinstance(v, h5py.Dataset) else None)
        key, X = _the_2d(path, found, member, "HDF5 file", "dataset")
    except ValueError:
        f.close()
        raise
    except Exception as exc:
        f.close()
        raise ValueError(f"{path}: not a readable HDF5 file ({type(exc).__name__}: "
                         f"{_one_line(exc)})") from None
    origin = f"{path}:{key} with labels {labels}"
    X = _check_stored(X, origin, shard=True)
    y = _labels_for(X.shape[0], labels, origin)
    return _on_disk(_source([X], f"{path.name}:{key}"), y, name=path.stem, origin=origin,
                    storage=f"HDF5 dataset {key}")


_STORE_SUFFIXES = (".h5", ".hdf5", ".zarr")


def _store_member(spec: str):
    """(store path, member name) for 'FILE.h5:NAME', 'FILE.hdf5:NAME' or 'STORE.zarr:NAME'
    when that store exists; None otherwise."""
    for i, c in enumerate(spec):
        if c != ":":
            continue
        head = spec[:i].rstrip("/" + os.sep)
        if head.lower().endswith(_STORE_SUFFIXES) and os.path.exists(head):
            return Path(head), spec[i + 1:]
    return None


def _too_large(source: str, what: str, exc: MemoryError) -> MemoryError:
    """A MemoryError that names the file (NumPy's own message says how much it wanted)."""
    detail = f" ({_one_line(exc)})" if str(exc) else ""
    return MemoryError(f"{source}: {what} does not fit in memory{detail}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


#: Bytes read from the start of a CSV file to recognise binary data and UTF-16/32 text.
_CSV_SNIFF_BYTES = 1 << 16
#: Parsed CSV values are collected in float64 blocks of about this many bytes.
_CSV_BLOCK_BYTES = 1 << 23


def _check_csv_bytes(path: Path) -> None:
    """Refuse text in UTF-16/32 and binary data, which would otherwise parse as odd numbers."""
    head = _read_head(path, _CSV_SNIFF_BYTES)
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        raise ValueError(f"{path}: the file is UTF-16 or UTF-32 text; save it as UTF-8 (or ASCII)")
    if b"\x00" in head:
        raise ValueError(f"{path}: the file contains NUL bytes, so it is binary data or UTF-16 "
                         "text, not a UTF-8 CSV file")


def _csv_rows(path: Path, delimiter: str):
    """(line number, fields) of each row with a non-blank field; bad text is a ValueError."""
    reader = None
    try:
        # utf-8-sig: a byte-order mark is dropped instead of sticking to the first field
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                if row and any(field.strip() for field in row):
                    yield reader.line_num, row
    except UnicodeDecodeError:
        line, byte = _first_non_utf8(path)
        raise ValueError(f"{path}: not a UTF-8 text file: line {line} has the byte 0x{byte:02x}, "
                         "which UTF-8 cannot decode (Latin-1 or Windows text?); save it as UTF-8") \
            from None
    except csv.Error as exc:
        line = reader.line_num if reader is not None else 0
        raise ValueError(f"{path}: line {line}: not a readable CSV line ({_one_line(exc)})") \
            from None


def _first_non_utf8(path: Path) -> tuple[int, int]:
    """(line number, value) of the first byte of ``path`` that is not valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as f:
        while chunk := f.read(_CSV_SNIFF_BYTES):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return line + exc.object[:exc.start].count(b"\n"), exc.object[exc.start]
            line += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # the file ends inside a multi-byte character
        return line, exc.object[exc.start]
    return line, 0  # pragma: no cover - only called after a decoding error


def _csv_header(rows, source: str):
    """The header (or None) and the data rows read to decide it (one or two). A first line of
    numbers is data; so is one whose only text is in the columns where the second line has
    text too (text labels without a header: "1,2,yes" over "3,4,no"); else it is a header."""
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{source}: the file has no data rows")
    fields = [field.strip() for field in first[1]]
    if all(_is_number(field) for field in fields):
        return None, [first]
    second = next(rows, None)
    if second is None:
        raise ValueError(f"{source}: the file has a header but no data rows")
    below = [field.strip() for field in second[1]]
    if len(below) == len(fields) and all(_is_number(f) or not _is_number(b)
                                         for f, b in zip(fields, below)):
        return None, [first, second]
    return fields, [second]


class _TextLabel(ValueError):
    """A table's last column (its labels) holds text: read as a table, labels numbered."""


def _csv_values(rows, width: int, source: str, expected: str,
                text_labels: bool = False) -> np.ndarray:
    """Parse every row into one float64 array, block by block (no list of strings of all rows);
    text in the last column raises _TextLabel where `text_labels` (a table with a header)."""
    block_rows = max(1, _CSV_BLOCK_BYTES // (8 * width))
    blocks, block, filled = [], np.empty((block_rows, width)), 0
    for lineno, row in rows:
        if len(row) != width:
            raise ValueError(
                f"{source}: line {lineno} has {len(row)} columns, expected {width} ({expected})"
            )
        try:
            block[filled] = [float(field) for field in row]
        except ValueError:
            j = next(j for j, field in enumerate(row) if not _is_number(field))
            # (text labels only under a header: without one, load_table would take the first
            # row for a header and lose a sample)
            error = _TextLabel if text_labels and j == width - 1 else ValueError
            hint = ("; text labels need a header line naming the columns"
                    if j == width - 1 and not text_labels else "")
            raise error(
                f"{source}: line {lineno}, column {j + 1}: {row[j].strip()!r} is not a "
                f"number{hint}"
            ) from None
        filled += 1
        if filled == block_rows:
            blocks.append(block)
            block, filled = np.empty((block_rows, width)), 0
    blocks.append(block[:filled])
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _load_csv(path: Path) -> Dataset:
    source = str(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    _check_csv_bytes(path)
    rows = _csv_rows(path, delimiter)
    try:
        header, pending = _csv_header(rows, source)
        width = len(header) if header is not None else len(pending[0][1])
        if width < 2:
            raise ValueError(
                f"{source}: needs at least 2 columns (features, then the label in the last "
                f"column), found {width}"
            )
        expected = "as in the header" if header is not None else "as in the first row"
        values = _csv_values(itertools.chain(pending, rows), width, source, expected,
                             text_labels=header is not None)
    except MemoryError as exc:
        raise _too_large(source, "the table", exc) from None
    finally:
        rows.close()
    X, y = _check_pair(values[:, :-1], values[:, -1], source, "features", "labels (last column)")
    _check_two_classes(y, source, "labels (last column)")
    names = header[:-1] if header is not None else [f"x{j}" for j in range(X.shape[1])]
    return Dataset(
        X=X,
        y=y,
        texts=None,
        feature_names=list(names),
        name=path.stem,
        description=f"{source}: {X.shape[0]} samples, {X.shape[1]} features, label = "
        + (repr(header[-1]) if header is not None else "last column"),
    )


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: the {what} file is not a regular file (a folder or a device)")
    return path


def _existing_path(path: str | os.PathLike) -> Path:
    """The data path: a regular file or a folder (shards, a Zarr store)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if not (path.is_file() or path.is_dir()):
        raise ValueError(f"{path}: the data file is not a regular file (a folder or a device)")
    return path


def load_dataset(path: str | os.PathLike | Sequence[str | os.PathLike],
                 labels: str | os.PathLike | None = None) -> Dataset:
    """Read a user's data set from a file, or open X where it lies on disk.

    Supported forms, chosen by the file extension:

    * ``.npz``: arrays ``X`` (n x d) and ``y`` (n,), optionally ``X_test`` and ``y_test`` (both
      or neither) for a held-out test part.
    * ``.csv`` (comma) or ``.tsv`` (tab): one sample per line, features then the label in the
      last column; a first line that is not all numbers is taken as a header (column names).
      Under a header, text labels are numbered 0, 1, ... in sorted order.

    and, with the labels from a second ``.npy`` given as ``labels`` (on the command line
    ``--labels PATH``), X kept on disk and read block by block (``Dataset.on_disk``):

    * ``.npy``: X (n x d) memory-mapped read-only, never read whole;
    * a folder of ``.npy`` shards, stacked in the order of their names with numbers compared
      as numbers (``part-2.npy`` before ``part-10.npy``), or a list of ``.npy`` paths, stacked in
      the order given; every shard 2-D with the same number of columns;
    * a Zarr store (a folder ``NAME.zarr``): its one 2-D array, or ``STORE.zarr:ARRAY``;
    * an HDF5 file ``FILE.h5`` / ``FILE.hdf5``: its only 2-D dataset, or ``FILE.h5:DATASET``.

    Everything read into memory must be numeric and finite; ``y`` must have at least two
    distinct values. X on disk is only checked for its dtype and shape here: NaN or infinity in
    it is reported by the first pass over it. Labels are returned as float64 and not recoded (a
    logistic model needs 0/1).

    Raises
    ------
    FileNotFoundError
        ``path`` or ``labels`` does not exist (the message names it).
    ValueError
        Unsupported extension, a file that is not what its extension says (damaged or truncated
        archive, binary data, text that is not UTF-8), missing keys, object arrays (never
        unpickled), wrong shapes or columns, non-numeric values, NaN/inf, a single label value,
        a folder without .npy shards, shards of different widths, a store with several 2-D
        arrays and none named, X on disk without labels; the message names the file and what
        is wrong.
    MemoryError
        The arrays to be read into memory do not fit.
    """
    if isinstance(path, (list, tuple)) and len(path) == 1:
        path = path[0]
    if labels is not None:
        labels = _existing_file(labels, "labels")
    if isinstance(path, (list, tuple)):
        if not path:
            raise ValueError("no data file given")
        for p in map(Path, path):
            if p.is_dir():
                raise ValueError(f"{p}: is a folder, and --data given several times takes .npy "
                                 "files, stacked in order: give the folder (or store) alone")
        paths = [_existing_file(p, "data") for p in path]
        for p in paths:
            if p.suffix.lower() != ".npy":
                raise ValueError(f"{p}: data given as several files are .npy shards of X, "
                                 f"stacked in order; {p.suffix or 'no extension'!r} is not .npy")
        what = ", ".join(str(p) for p in paths)
        _need_labels(paths[0], labels, "a .npy shard")
        return _load_shards(paths, labels, what, f"{paths[0].stem}..{paths[-1].stem}")
    member = _store_member(os.fspath(path))
    if member is not None:
        store, name = member
        if store.suffix.lower() == ".zarr":
            return _load_zarr(store, name, labels)
        return _load_hdf5(store, name, labels)
    path = _existing_path(path)
    if path.is_dir():
        if _is_zarr(path):
            return _load_zarr(path, None, labels)
        shards = _shards_in(path)
        if not shards:
            raise ValueError(
                f"{path}: not a regular file but a folder, and it holds no .npy files (a folder "
                "given as data is read as .npy shards in name order, or as a .zarr store)"
            )
        _need_labels(path, labels, "a folder of .npy shards")
        return _load_shards(shards, labels, str(path), path.name)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".csv", ".tsv", ".parquet") and labels is not None:
        raise ValueError(
            f"{path}: a {suffix} file holds its own labels; a separate labels file is only for "
            ".npy, .npy shards, .zarr and .h5"
        )
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".npy":
        if labels is None:
            raise ValueError(
                f"{path}: a .npy file holds only the features X; give the labels as a second .npy "
                "(labels=PATH, on the command line --labels PATH)"
            )
        return _load_npy(path, labels)
    if suffix in (".csv", ".tsv"):
        try:
            return _load_csv(path)
        except _TextLabel:  # text labels, numbered in sorted order as with --label; any
            # number of them (the family, which says how many it takes, checks the labels)
            return load_table(path, family="multinomial")
    if suffix in (".h5", ".hdf5"):
        return _load_hdf5(path, None, labels)
    if suffix == ".parquet":
        return load_table(path)
    raise ValueError(
        f"{path}: unsupported file type {suffix or '(no extension)'!r}; use .npz (X, y), "
        ".npy with --labels, .csv, .tsv or .parquet (last column = label); with --labels also a "
        "folder of .npy shards, a .zarr store or an .h5/.hdf5 file"
    )


def load_table(path: str | os.PathLike, *, label: str | None = None,
               id_column: str | None = None, one_hot: bool = False,
               family: str = "logistic") -> Dataset:
    """A table (``.csv``, ``.tsv`` or ``.parquet`` with a header) by column name: the label
    column (default the last), an optional column of sample ids, non-numeric columns one-hot
    encoded when ``one_hot`` (else an error naming them), text labels numbered in sorted order.
    ``Dataset.notes`` says what was changed. Needs pandas (and pyarrow for Parquet); see
    :func:`rif_native._tabular.load_table`."""
    from ._tabular import load_table as load

    return load(path, label=label, id_column=id_column, one_hot=one_hot, family=family)
