"""Attribution at small shapes against the floor, with where the time goes (a script, not CI).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/small_shapes.py

For ESC-50 (1600 x 512) and IMDB at n = 16 d (8192 x 512): the best of --rounds runs of
Attribution (Hessian, factor, every leverage) plus one RIF score vector, against the floor
(2 n d^2 + d^3 / 3) at NumPy's DGEMM rate measured in the same run, and that best run's stages
(Attribution.timings: "hessian", "cholesky", "leverage"; "other" is the rest: checks, the
scores, Python). Each shape runs with glibc's default malloc and then with freed memory
retained (rif_native.retain_freed_memory(), as the rif command and the benchmarks run), and
with the score's direction given after the constructor ("after": the scores are a pass of their
own) and to it ("given", directions=v, as `rif attribute` and `rif benchmark` run: the scores
come out of the leverage pass).
"""

from __future__ import annotations

import argparse
import itertools
import time

import rif_native as rn
from rif_native import benchmark as rb

SHAPES = {"ESC-50": (1600, 512), "IMDB (n = 16 d)": (8192, 512)}


def best_run(p, rounds: int, kept: bool) -> tuple[float, dict]:
    best, stages = float("inf"), {}
    for _ in range(rounds):
        t0 = time.perf_counter()
        A = rn.Attribution(p.X, p.y, p.theta, l2=p.l2, directions=p.v if kept else None)
        A.scores(p.v, method="rif")
        seconds = time.perf_counter() - t0
        if seconds < best:
            best, stages = seconds, dict(A.timings)
    return best, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    peak = rb.gemm_peak()
    print(f"Machine: {rb.machine()}; NumPy DGEMM {peak / 1e9:.0f} GFLOP/s; best of {args.rounds}")
    print("| shape | malloc | direction | ms | floor ms | / floor | hessian | cholesky | leverage "
          "| other |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    problems = {name: rb.make_problem(n, d) for name, (n, d) in SHAPES.items()}
    # glibc's default first, then with freed memory retained (which cannot be undone)
    for malloc in ("default", "retained"):
        if malloc == "retained" and not rn.retain_freed_memory():
            break
        for (name, (n, d)), kept in itertools.product(SHAPES.items(), (False, True)):
            p = problems[name]
            best_run(p, 3, kept)  # warm up: threads, caches
            seconds, st = best_run(p, args.rounds, kept)
            floor = rb.floor_seconds(n, d, peak)
            other = seconds - sum(st.values())
            given = "given" if kept else "after"
            print(f"| {name} | {malloc} | {given} | {seconds * 1e3:.2f} | {floor * 1e3:.2f} | "
                  f"{seconds / floor:.2f} | "
                  + " | ".join(f"{st.get(k, 0.0) * 1e3:.2f}" for k in ("hessian", "cholesky",
                                                                      "leverage"))
                  + f" | {other * 1e3:.2f} |")

if __name__ == "__main__":
    main()
