"""Run one crash- or hang-prone property group of tests/test_properties.py in this process.

    python tests/fuzz/isolated.py GROUP      (GROUP: see test_properties.ISOLATED)

test_properties.test_isolated starts this in a subprocess, so that a segfault or a hang fails
that one test (with the last example, from $RIF_PROPS_JOURNAL) instead of killing the session.
Prints ``rif-props-calls N`` (calls into the package) last, whatever happens; exits 1 when the
group failed (in survey mode: when it recorded a failure).
"""

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import test_properties as tp  # noqa: E402


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in tp.ISOLATED:
        print(f"usage: isolated.py {{{','.join(tp.ISOLATED)}}}", file=sys.stderr)
        return 2
    warnings.simplefilter("error")  # as pytest's filterwarnings = error
    try:
        tp.ISOLATED[sys.argv[1]][0]()
    except Exception:
        import traceback

        traceback.print_exc()
        return 1
    finally:
        if tp.FINDINGS:
            print(tp.findings_report())
        print(f"\nrif-props-calls {tp.CALLS.n}", flush=True)
    return 1 if tp.FINDINGS else 0


if __name__ == "__main__":
    sys.exit(main())
