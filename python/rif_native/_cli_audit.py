"""The ``rif audit`` command: can dropping a few training samples flip a coefficient's sign or
significance? (rif_native.audit, each candidate verified by exact retraining.)"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from . import _output

FILES = ("audit.json", "audit.csv", "audit.png", "report.md")


def add_parser(sub) -> None:
    from .cli import _add_data_args, _add_model_args, _add_output_args

    aud = sub.add_parser(
        "audit",
        help="the fewest training samples whose removal flips a coefficient's sign or "
        "significance, by RIF and by IF, verified by retraining",
        description=(
            "Fit, then search for the smallest set of training samples whose removal flips a "
            "conclusion about one coefficient: its sign (--kind sign, optionally by --margin) "
            "or its significance |z| > --threshold (--kind significance; standard errors from "
            "H^{-1}, meaningful for --l2 0). The search is driven by RIF scores and, beside it, "
            "by plain IF scores; every reported change comes from an exact refit. Also the "
            "predicted class of a test point (--kind prediction) or the total test loss "
            "(--kind test-loss), which --family multinomial audits too. Writes "
            "audit.json, audit.csv (every refit checked), audit.png and report.md."
        ),
    )
    _add_data_args(aud)
    _add_model_args(aud)
    aud.add_argument("--coef", metavar="NAME|INDEX",
                     help="--kind sign / significance: the coefficient, a column name of the "
                     "data (a CSV header; 'const' is the intercept) or a 0-based index")
    aud.add_argument("--kind", choices=("sign", "significance", "prediction", "test-loss"),
                     default="sign",
                     help="what to flip (default sign): a coefficient's sign or significance, "
                     "the predicted class of test point --point, or the total test loss's side "
                     "of --threshold")
    aud.add_argument("--point", type=int, default=None, metavar="I",
                     help="--kind prediction: index of the point in the test part")
    aud.add_argument("--threshold", type=float, default=None, metavar="T",
                     help="--kind significance: the |z| to fall to (default 1.96); --kind "
                     "test-loss: the total test loss to cross (required)")
    aud.add_argument("--margin", type=float, default=None, metavar="M",
                     help="--kind sign: cross zero by this much (default 0)")
    aud.add_argument("--max-fraction", type=float, default=0.05, metavar="F",
                     help="drop at most this fraction of the training samples (default 0.05)")
    _add_output_args(aud, "rif-output/audit")


def _coef(text: str, names: list) -> object:
    """--coef as a column name where the data have one so named (a column "1990"), else as
    an index where it reads as one."""
    if text in names:
        return text
    try:
        return int(text)
    except ValueError:
        return text


def _check_options(args) -> None:
    """Before any work: each option the --kind reads, and none it would ignore."""
    from .cli import _UsageError

    if args.kind in ("sign", "significance") and args.coef is None:
        raise _UsageError(f"--kind {args.kind} needs --coef NAME|INDEX")
    for option, value, kinds in (("--threshold", args.threshold, ("significance", "test-loss")),
                                 ("--margin", args.margin, ("sign",)),
                                 ("--point", args.point, ("prediction",)),
                                 ("--coef", args.coef, ("sign", "significance"))):
        if value is not None and args.kind not in kinds:
            raise _UsageError(f"{option} is for --kind {' / '.join(kinds)}, not --kind "
                              f"{args.kind} (it would be ignored)")


def _target(args, A, names, data):
    from . import audit as au
    from .cli import _UsageError
    from .metrics import TestLoss

    if args.kind == "sign":
        return au.coefficient(A, _coef(args.coef, names), margin=args.margin or 0.0,
                              names=names)
    if args.kind == "significance":
        return au.significance(A, _coef(args.coef, names), names=names,
                               threshold=1.96 if args.threshold is None else args.threshold)
    if args.kind == "prediction":
        n_test = data.y_test.shape[0]
        if args.point is None or not 0 <= args.point < n_test:
            raise _UsageError(f"--kind prediction needs --point I with 0 <= I < {n_test} (the "
                              "test part's size)")
        return au.prediction(A, data.X_test[args.point])
    if args.threshold is None:
        raise _UsageError("--kind test-loss needs --threshold T (a total test loss)")
    if args.family == "multinomial":
        from .multiclass_metrics import TestLoss as ClassTestLoss

        metric = ClassTestLoss(data.X_test, data.y_test.astype(np.int64), fit_intercept=True)
    else:
        metric = TestLoss(data.X_test, data.y_test, fit_intercept=True, family=args.family)
    metric.name = "total test loss"
    return au.metric_threshold(metric, args.threshold)


def _where(results, data) -> dict:
    """Per method: the removed samples as rows of the data set and, with --id, as ids (the
    search's indices are positions in the training part)."""
    from ._cli_attribute import _id  # ids as JSON holds them

    ids = data.dataset.sample_ids
    out = {}
    for m, r in results.items():
        rows = [int(data.train[i]) for i in r.removed]
        out[m] = {"removed_rows": rows}
        if ids is not None:
            out[m]["removed_ids"] = [_id(ids[j]) for j in rows]
    return out


def _removed_lines(where: dict, shown: int = 20) -> str:
    """Report lines naming the removed samples (ids with --id, else rows of the data set)."""
    lines = []
    for m, w in where.items():
        names = w.get("removed_ids", w["removed_rows"])
        if names:
            what = "ids" if "removed_ids" in w else "rows of the data"
            more = f" ... ({len(names)} in all; audit.json has them)" if len(names) > shown else ""
            lines.append(f"- {m.upper()} removes ({what}): "
                         + ", ".join(str(v) for v in names[:shown]) + more)
    return ("\n" + "\n".join(lines)) if lines else ""


def _write_tables(out, results: dict, where: dict) -> None:
    """audit.json and audit.csv: every value of the audited quantity itself (the coefficient,
    not the oriented f the search drives to 0; f_before, f_after and flips_when say that)."""
    from .experiment import _jsonable  # NaN and inf (a removal that left H singular): null

    payload = {m: {**r.in_quantity(), **where[m]} for m, r in results.items()}
    _output.write_text(out / "audit.json", json.dumps(_jsonable(payload), indent=1,
                                                      allow_nan=False))
    text = io.StringIO()
    table = csv.writer(text, lineterminator="\n")  # quotes a name holding a comma
    table.writerow(["method", "quantity", "size", "predicted", "newton_step", "actual",
                    "converged", "bisection"])
    for m, r in payload.items():
        for q in r["rounds"]:
            table.writerow([m, r["quantity"], q["size"],
                            "" if q["predicted"] is None else q["predicted"], q["newton_step"],
                            q["actual"], int(bool(q["converged"])),
                            int(bool(q.get("bisection")))])
    _output.write_text(out / "audit.csv", text.getvalue())


def run(args, outputs) -> int:
    from . import audit as au
    from ._api import Attribution, fit
    from .cli import _UsageError, _out_dir, _prepare

    if args.family == "multinomial" and args.kind in ("sign", "significance"):
        raise _UsageError(f"--kind {args.kind} audits a coefficient of one linear predictor; "
                          "with --family multinomial use --kind prediction or test-loss")
    if args.kind == "prediction" and args.family not in ("logistic", "multinomial"):
        raise _UsageError("--kind prediction audits a predicted class: it needs --family "
                          "logistic or multinomial (for other families use --kind test-loss)")
    if not 0 < args.max_fraction <= 1:
        raise _UsageError(f"--max-fraction must be in (0, 1], got {args.max_fraction:g}")
    _check_options(args)
    out = _out_dir(args, outputs)
    say = (lambda line="": None) if args.quiet else print
    data = _prepare(args)
    X, y = data.X_train, data.y_train
    names = list(data.dataset.feature_names or [f"x{j + 1}" for j in range(X.shape[1])])
    kw = dict(l2=args.l2, family=args.family, fit_intercept=True, num_threads=args.threads)
    fitted = fit(X, y, **kw)
    A = Attribution(X, y, fitted.theta, **kw)
    try:
        target = _target(args, A, names, data)
        results = au.audit(A, target, max_fraction=args.max_fraction)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    say(f"data       {data.dataset.name}: train {y.size}, d = {X.shape[1]}; fit "
        f"{fitted.n_iter} iterations, ||grad F|| = {fitted.grad_norm:.2e}")
    where = _where(results, data)
    text = au.report(results, A) + _removed_lines(where)
    _write_tables(out, results, where)
    au.plot(results, str(out / "audit.png"))
    trail = au.table(results)
    _output.write_text(out / "report.md", f"# Audit: {target.name}\n\n{text}\n\n{trail}\n\n"
                                          "![audit](audit.png)\n")
    print(text)
    if not args.quiet:
        print()
        print(trail)
    print()
    print(f"wrote {len(FILES)} files to {out.resolve()} (report.md, audit.png, ...)")
    return 0
