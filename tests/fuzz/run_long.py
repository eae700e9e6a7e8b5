"""The long property run: at least 100,000 calls into rif_native, in subprocess batches.

    python tests/fuzz/run_long.py [--calls 100000] [--max-minutes 120] [--scale 5] [--seed S]

Each batch is ``python -m pytest tests/test_properties.py`` in a fresh interpreter with
HYPOTHESIS_PROFILE=long (random examples, ``--scale`` times the CI example counts),
``--hypothesis-seed=<seed + batch>`` and survey mode (RIF_PROPS_SURVEY=1: every distinct failure is
recorded with its first example and the search goes on). Groups that can crash or hang run in
their own subprocesses inside the batch; a batch that dies anyway (segfault, hang) is reported
with the example it was running. Prints the running count of calls into the package, and at the
end every distinct failure with its first example; exits 1 when there was any.

Replay one failure: rerun its test with the batch's seed, e.g.
``HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py -k NAME --hypothesis-seed=S``
(without survey mode it stops at the failure and shrinks it to a minimal example).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100_000, help="stop after this many calls")
    ap.add_argument("--max-minutes", type=float, default=120.0, help="stop after this long")
    ap.add_argument("--scale", type=float, default=5.0,
                    help="examples per property, as a multiple of the CI profile's")
    ap.add_argument("--seed", type=int, default=None, help="first batch's seed (default: random)")
    ap.add_argument("-k", default=None, help="pytest -k expression: only these properties")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    deadline = time.monotonic() + 60 * args.max_minutes
    work = Path(tempfile.mkdtemp(prefix="rif-props-"))
    findings_file = work / "findings.jsonl"
    total, batch, crashes = 0, 0, []
    print(f"long property run: target {args.calls} calls, at most {args.max_minutes:g} min, "
          f"scale {args.scale:g}, first seed {seed}; files in {work}", flush=True)
    while total < args.calls and time.monotonic() < deadline:
        s = seed + batch
        count_file, journal = work / f"count-{batch}", work / f"journal-{batch}"
        env = dict(os.environ, HYPOTHESIS_PROFILE="long", RIF_PROPS_SCALE=str(args.scale),
                   RIF_PROPS_SURVEY="1", RIF_PROPS_COUNT_FILE=str(count_file),
                   RIF_PROPS_FINDINGS=str(findings_file), RIF_PROPS_JOURNAL=str(journal))
        cmd = [sys.executable, "-X", "faulthandler", "-m", "pytest", "tests/test_properties.py",
               "-q", "-p", "no:cacheprovider", f"--hypothesis-seed={s}"]
        if args.k:
            cmd += ["-k", args.k]
        t0 = time.monotonic()
        remaining = max(60.0, deadline - time.monotonic() + 600)  # let a batch finish
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=remaining)
            rc, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = 124
            out = (exc.stdout or b"").decode(errors="replace") if isinstance(
                exc.stdout, bytes) else (exc.stdout or "")
        calls = sum(int(x) for x in count_file.read_text().split()) if count_file.exists() else 0
        total += calls
        status = "ok" if rc == 0 else (
            f"killed by {signal.Signals(-rc).name}" if rc < 0 else
            "timed out" if rc == 124 else f"exit {rc}")
        print(f"batch {batch} (seed {s}): {calls} calls in {time.monotonic() - t0:.0f} s, "
              f"{status}; total {total}", flush=True)
        if rc != 0:
            last = journal.read_text().strip() if journal.exists() else "(none)"
            crashes.append(f"batch {batch} (seed {s}) {status}; last example: {last}")
            print("  " + "\n  ".join(out.strip().splitlines()[-25:]), flush=True)
        batch += 1

    found: dict = {}
    if findings_file.exists():
        for line in findings_file.read_text().splitlines():
            e = json.loads(line)
            cur = found.setdefault(e["key"], e)
            cur["count"] = max(cur["count"], e["count"])
    print(f"\n{total} calls into rif_native in {batch} batch(es); "
          f"{len(found)} distinct failure(s), {len(crashes)} abnormal batch end(s)")
    for c in crashes:
        print(f"! {c}")
    for key, e in sorted(found.items()):
        print(f"* {key}  [x{e['count']}]\n    first example: {e['example']}")
    return 1 if (found or crashes or total < args.calls) else 0


if __name__ == "__main__":
    sys.exit(main())
