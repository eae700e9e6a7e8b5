"""Large-data benchmarks (scripts, not CI): X on disk, in shards, in Zarr, on a Dask cluster.

Run from the repository root, with NumPy's BLAS at its own kernel for the floor's peak:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/large_data.py sources
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/large_data.py dask
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/large_data.py linear
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/large_data.py disk
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/large_data.py precision

Each writes its data under --dir (default ./bench-data, created; files are reused between runs
and removed with --clean) and prints one table, labelled with the machine. The measured work is
the issue's "attribution": Attribution(X, y, theta, l2=1) (the Hessian, its factor and every
leverage) plus one score vector. The compute floor is (2 n p^2 + p^3 / 3) / peak with peak
NumPy's DGEMM rate measured in the same run; the I/O floor is the bytes the passes read at the
disk's sequential rate, measured on the same file (meaningful only when the file is larger than
the page cache: the `disk` case). Private memory is the peak of RssAnon (resident memory not
backed by a file), sampled every 20 ms.

* sources: n = 2,000,000, d = 512 float32 in memory, memory-mapped .npy, 4 .npy shards,
  uncompressed Zarr and Zarr with its default compression (zstd; also with the score's
  direction given to the constructor, and read through zarr-python rather than from its chunk
  files); each against the floor, its files read once before it is timed (page cache warm).
* dask: the same X as a Zarr store on a distributed.LocalCluster (2 workers, 1 thread each),
  as the store itself (``backend="dask"``: the workers open it), as ``dask.array.from_zarr``
  (which is read as the store) and as ``from_zarr`` with a step after it (``map_blocks``:
  Dask's own reading through zarr-python), against the in-process attribution of the same
  store and of the array in memory; then the same with the store compressed (zstd).
* linear: n = 0.5, 1, 2, 4 million at d = 512 (memory-mapped): seconds per million samples.
* precision: n = 1,000,000, d = 512 as float64 and float32 in memory and float32 on disk.
* disk: n = 8,000,000, d = 1024 float32 (32 GiB, more than a 24 GiB machine's memory): the
  attribution (each precision without and with ``directions=v``, whose scores then come from
  the leverage pass) and ``fit`` with their passes, time, floors and private memory; the file is
  read past the page cache (``sources.DIRECT_READ_BYTES``), and with --mapped also through its
  memory map.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import threading
import time

import numpy as np

import rif_native as rn
from rif_native import benchmark as rb


# -- measuring

class PrivatePeak:
    """Peak RssAnon (bytes) of this process while the context runs."""

    def __enter__(self) -> "PrivatePeak":
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_bytes())
            self._stop.wait(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_bytes())


def anon_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def disk_rate(path: str) -> float:
    """Bytes per second of one sequential read of the file (64 MiB reads)."""
    size, start = 0, time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(64 << 20)
            if not chunk:
                break
            size += len(chunk)
    return size / (time.perf_counter() - start)


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


# -- data

def labels_and_theta(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed + 1)
    theta = rng.standard_normal(d) / np.sqrt(d)
    return theta, rng.standard_normal(d)


def write_npy(path: str, n: int, d: int, theta: np.ndarray, seed: int = 0) -> np.ndarray:
    """A float32 (n, d) .npy written block by block (never whole in memory); returns y."""
    if os.path.exists(path) and os.path.exists(path + ".y.npy"):
        return np.load(path + ".y.npy")
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path + ".partial", mode="w+", dtype=np.float32,
                                    shape=(n, d))
    y = np.empty(n)
    step = max(1, (64 << 20) // (4 * d))
    for b in range(0, n, step):
        e = min(n, b + step)
        block = rng.standard_normal((e - b, d), dtype=np.float32)
        out[b:e] = block
        z = block @ theta.astype(np.float32)
        y[b:e] = rng.random(e - b) < 1.0 / (1.0 + np.exp(-z))
    out.flush()
    del out
    os.replace(path + ".partial", path)
    np.save(path + ".y.npy", y)
    return y


def warm_page_cache(*paths: str) -> None:
    """Read every file under `paths` once, so that the timed passes over a source that fits in
    memory find it in the page cache: the compute floor assumes no disk reads, and the first
    source timed after another one's files would otherwise pay for reading its own."""
    for path in paths:
        files = ([os.path.join(top, name) for top, _, names in os.walk(path) for name in names]
                 if os.path.isdir(path) else [path])
        for name in files:
            with open(name, "rb", buffering=0) as f:
                while f.read(16 << 20):
                    pass


def write_shards(folder: str, source: np.ndarray, parts: int) -> list:
    os.makedirs(folder, exist_ok=True)
    n = source.shape[0]
    cuts = np.linspace(0, n, parts + 1).astype(int)
    paths = [os.path.join(folder, f"part{k:02d}.npy") for k in range(parts)]
    for k, path in enumerate(paths):
        if not os.path.exists(path):
            np.save(path + ".partial.npy", source[cuts[k]:cuts[k + 1]])
            os.replace(path + ".partial.npy", path)
    return paths


def write_zarr(path: str, source: np.ndarray, compressed: bool):
    import zarr

    if os.path.exists(path):
        return zarr.open_array(path, mode="r")
    n, d = source.shape
    rows = 65536
    kwargs = {} if compressed else {"compressors": None}
    z = zarr.create_array(path + ".partial", shape=(n, d), chunks=(rows, d), dtype="f4",
                          **kwargs)
    for b in range(0, n, rows):
        z[b:b + rows] = source[b:b + rows]
    os.replace(path + ".partial", path)
    return zarr.open_array(path, mode="r")


# -- the measured work

#: Every core, named: the default (None) takes only the cores idle at the call, which a disk
#: busy writing back pages (kernel threads counted as runnable) can make one.
THREADS = len(os.sched_getaffinity(0))


def attribution(X, y, theta, v, **kw) -> dict:
    passes0 = getattr(X, "passes", None)
    kw.setdefault("num_threads", THREADS)
    with PrivatePeak() as mem:
        t0 = time.perf_counter()
        A = rn.Attribution(X, y, theta, l2=1.0, progress=False, **kw)
        s = A.scores(v)
        if hasattr(s, "compute"):
            s = s.compute()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "private": mem.peak, "scores": np.asarray(s),
            "passes": None if passes0 is None else X.passes - passes0}


def row(name, res, floor, ref=None) -> list:
    agree = "" if ref is None else f"{np.max(np.abs(res['scores'] - ref)) / np.max(np.abs(ref)):.1e}"
    passes = "" if res.get("passes") is None else f"{res['passes']:.2f}"
    return [name, f"{res['seconds']:.2f}", f"{res['seconds'] / floor:.2f}", passes,
            gib(res["private"]), agree]


def print_table(title: str, header: list, rows: list) -> None:
    print(f"\n{title}\nMachine: {rb.machine()}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()


HEADER = ["X", "seconds", "/ floor", "passes", "private peak", "max rel. diff"]


def case_sources(args) -> None:
    n, d = args.n or 2_000_000, args.d or 512
    theta, v = labels_and_theta(n, d)
    path = os.path.join(args.dir, f"x_{n}_{d}.npy")
    y = write_npy(path, n, d, theta)
    mm = np.load(path, mmap_mode="r")
    shards = write_shards(os.path.join(args.dir, f"shards_{n}_{d}"), mm, 4)
    zplain = write_zarr(os.path.join(args.dir, f"x_{n}_{d}.zarr"), mm, compressed=False)
    zpacked = write_zarr(os.path.join(args.dir, f"x_{n}_{d}_zstd.zarr"), mm, compressed=True)
    peak = rb.gemm_peak()
    floor = rb.floor_seconds(n, d, peak)
    rows = []
    X = np.array(mm)  # in memory
    ref = attribution(X, y, theta, v)
    rows.append(row("in memory", ref, floor))
    # each also with the score's direction given to the constructor: its projections come
    # from the leverage pass, two passes instead of three (as `rif attribute` runs)
    rows.append(row("in memory, directions=v", attribution(X, y, theta, v, directions=v),
                    floor, ref["scores"]))
    del X
    for name, X, files in [("memory-mapped .npy", path, [path]),
                           ("4 .npy shards", shards, shards),
                           ("Zarr, uncompressed", zplain, [zplain.store.root]),
                           ("Zarr, zstd", zpacked, [zpacked.store.root])]:
        warm_page_cache(*map(str, files))
        for kw in ({}, {"directions": v}):
            res = attribution(rn.sources.open_source(X), y, theta, v, **kw)
            rows.append(row(name + (", directions=v" if kw else ""), res, floor, ref["scores"]))
    # the compressed store read through zarr-python instead of from its chunk files (the
    # baseline of that reader)
    rows.append(row("Zarr, zstd, read through zarr-python",
                    attribution(rn.sources.Source([zpacked]), y, theta, v), floor,
                    ref["scores"]))
    print_table(f"Attribution (leverage + one score vector), n = {n}, d = {d} float32; "
                f"NumPy DGEMM {peak / 1e9:.0f} GFLOP/s, floor {floor:.2f} s", HEADER, rows)


def case_precision(args) -> None:
    """What float32 costs and what precision="mixed" saves: the same values as float64 and
    float32 arrays in memory and as a float32 .npy on disk, attributed with float64 arithmetic
    (the kernel converts float32 block by block) and with float32 products ("mixed"); then
    `fit` on the memory-mapped .npy both ways (unless --no-fit)."""
    n, d = args.n or 1_000_000, args.d or 512
    theta, v = labels_and_theta(n, d)
    path = os.path.join(args.dir, f"x_{n}_{d}.npy")
    y = write_npy(path, n, d, theta)
    peak = rb.gemm_peak()
    floor = rb.floor_seconds(n, d, peak)
    X32 = np.array(np.load(path, mmap_mode="r"))
    X64 = X32.astype(np.float64)
    ref = attribution(X64, y, theta, v)
    del X64
    base = attribution(X32, y, theta, v)
    mixed = attribution(X32, y, theta, v, precision="mixed")
    rows = [row("float64 in memory", ref, floor),
            row("float32 in memory", base, floor, ref["scores"]),
            row("float32 in memory, mixed", mixed, floor, ref["scores"]),
            row("float32 memory-mapped .npy", attribution(rn.sources.open_source(path), y,
                                                           theta, v), floor, ref["scores"]),
            row("float32 memory-mapped .npy, mixed",
                attribution(rn.sources.open_source(path), y, theta, v, precision="mixed"),
                floor, ref["scores"])]
    print_table(f"float32 against float64, n = {n}, d = {d}; NumPy DGEMM {peak / 1e9:.0f} "
                f"GFLOP/s, floor {floor:.2f} s; float32 in memory: mixed "
                f"{base['seconds'] / mixed['seconds']:.2f}x faster than float64 arithmetic",
                HEADER, rows)
    if args.no_fit:
        return
    del X32
    fits = []
    for precision in ("double", "mixed"):
        src = rn.sources.open_source(path)
        t0 = time.perf_counter()
        f = rn.fit(src, y, l2=1.0, progress=False, num_threads=THREADS, precision=precision)
        fits.append((precision, time.perf_counter() - t0, f))
    (_, t64, f64), _ = fits
    print_table(f"fit on the memory-mapped float32 .npy, n = {n}, d = {d}, l2 = 1",
                ["precision", "seconds", "iterations", "passes", "Hessians: exact, sampled",
                 "gradient norm", "||theta - theta(double)||"],
                [[name, f"{sec:.2f}", f.n_iter, f"{f.passes:.0f}",
                  f"{f.hessians}, {f.sampled_hessians}", f"{f.grad_norm:.1e}",
                  f"{np.linalg.norm(f.theta - f64.theta):.1e}"] for name, sec, f in fits])
    print(f"mixed fit: {t64 / fits[1][1]:.2f}x faster")


def case_dask(args) -> None:
    import dask.array as da
    from distributed import Client, LocalCluster

    n, d = args.n or 2_000_000, args.d or 512
    theta, v = labels_and_theta(n, d)
    path = os.path.join(args.dir, f"x_{n}_{d}.npy")
    y = write_npy(path, n, d, theta)
    mm = np.load(path, mmap_mode="r")
    zpath = os.path.join(args.dir, f"x_{n}_{d}.zarr")
    write_zarr(zpath, mm, compressed=False)
    zstd = os.path.join(args.dir, f"x_{n}_{d}_zstd.zarr")
    write_zarr(zstd, mm, compressed=True)
    peak = rb.gemm_peak()
    floor = rb.floor_seconds(n, d, peak)
    X = np.array(mm)
    ref = attribution(X, y, theta, v)
    del X
    import zarr

    local = attribution(rn.sources.open_source(zarr.open_array(zpath, mode="r")), y, theta, v)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        def dask_reading(where):  # a step after from_zarr: Dask reads the chunks itself
            return da.from_zarr(where).map_blocks(np.asarray)

        attribution(da.from_zarr(zpath)[:50_000], y[:50_000], theta, v, num_threads=1)  # warm
        dist = attribution(dask_reading(zpath), y, theta, v, num_threads=1)  # 1 thread a task
        # the store itself: each task opens its rows on the worker (chunk files mapped)
        stored = attribution(zarr.open_array(zpath, mode="r"), y, theta, v, num_threads=1,
                             backend="dask")
        as_store = attribution(da.from_zarr(zpath), y, theta, v, num_threads=1)
        # the same X compressed (zstd, Zarr's default): decoded wherever it is read
        packed = {"stored": attribution(zarr.open_array(zstd, mode="r"), y, theta, v,
                                        num_threads=1, backend="dask"),
                  "as_store": attribution(da.from_zarr(zstd), y, theta, v, num_threads=1),
                  "dist": attribution(dask_reading(zstd), y, theta, v, num_threads=1)}
    packed["local"] = attribution(rn.sources.open_source(zarr.open_array(zstd, mode="r")), y,
                                  theta, v)
    rows = [row("in process, array in memory", ref, floor),
            row("in process, Zarr", local, floor, ref["scores"]),
            row("Dask LocalCluster (2 x 1 thread), from_zarr + map_blocks", dist, floor,
                ref["scores"]),
            row("Dask LocalCluster (2 x 1 thread), the Zarr store opened by the workers",
                stored, floor, ref["scores"]),
            row("Dask LocalCluster (2 x 1 thread), da.from_zarr (as the store)", as_store, floor,
                ref["scores"]),
            row("in process, Zarr zstd (chunk files decoded)", packed["local"], floor,
                ref["scores"]),
            row("Dask LocalCluster (2 x 1 thread), from_zarr + map_blocks, zstd",
                packed["dist"], floor, ref["scores"]),
            row("Dask LocalCluster (2 x 1 thread), the zstd store opened by the workers",
                packed["stored"], floor, ref["scores"]),
            row("Dask LocalCluster (2 x 1 thread), da.from_zarr, zstd (as the store)",
                packed["as_store"], floor, ref["scores"])]
    print_table(f"Dask against in-process, n = {n}, d = {d} float32; Dask / in process "
                f"(memory) = {dist['seconds'] / ref['seconds']:.2f} (from_zarr + map_blocks), "
                f"{stored['seconds'] / ref['seconds']:.2f} (store opened by the workers), "
                f"{as_store['seconds'] / ref['seconds']:.2f} (da.from_zarr); "
                f"Dask / in process (Zarr) = {dist['seconds'] / local['seconds']:.2f}, "
                f"{stored['seconds'] / local['seconds']:.2f}", HEADER, rows)


def case_linear(args) -> None:
    d = args.d or 512
    peak = rb.gemm_peak()
    rows, per = [], []
    base = args.n or 500_000
    for n in (base, 2 * base, 4 * base, 8 * base):
        theta, v = labels_and_theta(n, d)
        path = os.path.join(args.dir, f"x_{n}_{d}.npy")
        y = write_npy(path, n, d, theta)
        res = attribution(rn.sources.open_source(path), y, theta, v)
        per.append(res["seconds"] / n * 1e6)
        rows.append([f"{n:,}", f"{res['seconds']:.2f}", f"{per[-1]:.3f}",
                     f"{res['seconds'] / rb.floor_seconds(n, d, peak):.2f}"])
    spread = max(per) / min(per) - 1
    print_table(f"Cost against n (memory-mapped .npy, d = {d} float32): seconds per million "
                f"samples vary by {100 * spread:.1f}% (max / min - 1)",
                ["n", "seconds", "s per million", "/ floor"], rows)


def case_disk(args) -> None:
    n, d = args.n or 8_000_000, args.d or 1024
    theta, v = labels_and_theta(n, d)
    path = os.path.join(args.dir, f"x_{n}_{d}.npy")
    t0 = time.perf_counter()
    y = write_npy(path, n, d, theta)
    print(f"data: {path}, {gib(os.path.getsize(path))} ({time.perf_counter() - t0:.0f} s to "
          f"write or find), memory {gib(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))}")
    rate = disk_rate(path)
    peak = rb.gemm_peak()
    compute = rb.floor_seconds(n, d, peak)
    src = rn.sources.open_source(path)  # read past the page cache (larger than half of memory)
    rows = []
    readings = [("direct", src)]
    if args.mapped:  # the same file read through its memory map, for comparison
        readings.append(("memory-mapped",
                         rn.sources.Source([np.load(path, mmap_mode="r")], direct=False)))
    for precision in ("double", "mixed"):
        for (reading, source), kept in itertools.product(readings, (False, True)):
            # kept: the score vector's direction given to the constructor, so that its
            # projections come from the leverage pass (no pass of its own)
            res = attribution(source, y, theta, v, precision=precision,
                              **({"directions": v} if kept else {}))
            io = res["passes"] * os.path.getsize(path) / rate
            # the compute floor at the DGEMM rate (float64 arithmetic; mixed may go below it)
            how = f"{reading}, directions=v" if kept else reading
            rows.append([f"attribution (leverage + one score vector), {precision}, {how}",
                         f"{res['seconds']:.1f}", f"{res['passes']:.2f}", f"{compute:.1f}",
                         f"{io:.1f}", f"{res['seconds'] / max(compute, io):.2f}",
                         gib(res["private"])])
    for precision in () if args.no_fit else ("double", "mixed"):
        before = src.passes
        with PrivatePeak() as mem:
            t0 = time.perf_counter()
            f = rn.fit(src, y, l2=1.0, progress=False, num_threads=THREADS, precision=precision)
            seconds = time.perf_counter() - t0
        passes = src.passes - before
        # floor: its Hessians' products (sampled ones at their share of rows) and factors
        stride = n // (256 * d) if n >= 512 * d else 1
        fit_compute = ((f.hessians + f.sampled_hessians / stride) * n * (d + 0.0) ** 2
                       + (f.hessians + f.sampled_hessians) * d**3 / 3) / peak
        fit_io = passes * os.path.getsize(path) / rate
        rows.append([f"fit, {precision} ({f.n_iter} iterations, {f.hessians} exact and "
                     f"{f.sampled_hessians} sampled Hessians, grad norm {f.grad_norm:.1e})",
                     f"{seconds:.1f}", f"{passes:.2f}", f"{fit_compute:.1f}", f"{fit_io:.1f}",
                     f"{seconds / max(fit_compute, fit_io):.2f}", gib(mem.peak)])
    print_table(f"Larger than memory: n = {n}, d = {d} float32 .npy ({gib(os.path.getsize(path))}"
                f"); disk {rate / 1e9:.2f} GB/s sequential, NumPy DGEMM {peak / 1e9:.0f} GFLOP/s",
                ["work", "seconds", "passes", "compute floor", "I/O floor",
                 "/ max(floors)", "private peak"], rows)


def main() -> None:
    cases = {"sources": case_sources, "dask": case_dask, "linear": case_linear,
             "disk": case_disk, "precision": case_precision}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=sorted(cases))
    parser.add_argument("--dir", default="bench-data", help="where the data files go")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--d", type=int, default=None)
    parser.add_argument("--no-fit", action="store_true", help="disk, precision: skip the fit")
    parser.add_argument("--mapped", action="store_true",
                        help="disk: also read the file through its memory map (the reading used "
                        "for files smaller than half of memory), for comparison")
    parser.add_argument("--clean", action="store_true", help="remove --dir afterwards")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    try:
        cases[args.case](args)
    finally:
        if args.clean:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
