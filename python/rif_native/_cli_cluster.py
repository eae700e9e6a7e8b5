"""``rif attribute --scheduler ADDRESS``: the fit and the attribution on a Dask cluster.

X stored on disk (``.npy``, shards, ``.zarr``, ``.h5``) is opened by the workers themselves
(the training rows travel as their description: rif_native._dask_sources); X in memory is
sent to them in row chunks. The test rows, the labels and everything O(n) stay on this
machine.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import numpy as np

#: Rows of X in memory per chunk sent to the workers: about this many bytes as float64.
CHUNK_BYTES = 64 << 20
#: How long to try to reach the scheduler before giving up.
CONNECT_TIMEOUT = "20s"

HELP = (
    "run the fit and the attribution on a Dask cluster: the address of its scheduler, e.g. "
    "tcp://10.0.0.5:8786 (needs pip install 'rif-native[dask]'). Data on disk (.npy, shards, "
    ".zarr, .h5) are opened by the workers themselves, which must reach the files under the "
    "same paths; data in memory are sent to them in row chunks. Same results as without it "
    "(the tests compare them to 1e-8 of their scale), computed in float64; not with --family "
    "multinomial, --precision mixed or --backend cuda"
)


def check(args) -> None:
    """Refuse, before any work, what the cluster cannot run."""
    from .cli import _UsageError

    if args.scheduler is None:
        return
    if args.family == "multinomial":
        raise _UsageError("--scheduler runs the binary GLM families; --family multinomial runs "
                          "in this process")
    if args.precision != "double":
        raise _UsageError("--scheduler computes in float64: leave out --precision mixed")
    if args.backend == "cuda":
        raise _UsageError("--scheduler and --backend cuda exclude each other: the workers run "
                          "the CPU kernels")


@contextlib.contextmanager
def connected(args) -> Iterator[Optional[Any]]:
    """A distributed Client for --scheduler (the default Dask scheduler while open), or None."""
    from .cli import _UsageError, _one_line

    if args.scheduler is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise _UsageError("--scheduler needs Dask's distributed scheduler: pip install "
                          "'rif-native[dask]'") from None
    try:
        client = Client(args.scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise _UsageError(f"--scheduler {args.scheduler}: cannot reach a Dask scheduler there "
                          f"({_one_line(exc)})") from None
    with client:
        yield client


def engine_input(X: Any) -> Any:
    """X as the Dask engine takes it: a Source of stored shards as it is (the workers open
    it); an array in memory scattered to the workers in whole-row chunks, as a Dask array of
    them (not embedded in the task graph, which distributed would warn of and send again)."""
    from .sources import Source

    if isinstance(X, Source):
        return X
    import dask.array as da
    from distributed import get_client

    X = np.asarray(X)
    rows = max(1, CHUNK_BYTES // (8 * max(1, X.shape[1])))
    pieces = [X[a:a + rows] for a in range(0, X.shape[0], rows)]
    held = get_client().scatter(pieces, hash=False)  # the client --scheduler connected
    return da.concatenate([da.from_delayed(f, shape=p.shape, dtype=p.dtype)
                           for f, p in zip(held, pieces)])


def describe(client: Any, attribution: Any) -> str:
    """The 'cluster' line: where it ran and how the workers got X."""
    workers = len(client.nthreads())
    return (f"cluster    Dask scheduler {client.scheduler.address}, {workers} worker"
            f"{'s' if workers != 1 else ''}; X {attribution._chunks.reading}")
