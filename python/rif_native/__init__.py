"""rif-native: rescaled influence functions (RIF) and friends for GLMs, with a compiled core.

Every estimate this package returns is a *removal effect*: the predicted change
``theta_{-T} - theta_hat`` when the samples ``T`` are removed from the training set.
See ``Attribution`` for the object that factors the Hessian once and answers many questions.
"""

from __future__ import annotations

try:
    # Loads the OpenBLAS library the compiled core may link against, wherever pip put it. The
    # core finds it by its soname; RTLD_LOCAL keeps its symbols away from other modules (SciPy
    # carries its own OpenBLAS with the same symbol names).
    import scipy_openblas32 as _openblas  # noqa: F401
    import ctypes as _ctypes
    import os as _os

    _ctypes.CDLL(_os.path.join(_openblas.get_lib_dir(), _openblas.get_library(True)),
                 mode=_ctypes.RTLD_LOCAL)
except (ImportError, OSError):  # pragma: no cover - builds without OpenBLAS need none
    pass

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "rif_native's compiled module _core failed to import. Reinstall with "
        "`pip install --force-reinstall --no-cache-dir .` from the source tree, and check that "
        f"the C++ build succeeded. Original error: {exc}"
    ) from exc

from ._api import (
    Attribution,
    ConvergenceWarning,
    FitResult,
    NotPositiveDefiniteError,
    RetrainResult,
    SingularRemovalWarning,
    TopSamples,
    build_info,
    cuda_available,
    fit,
    influence,
    leverage,
    newton_step,
    rescaled_influence,
)

from . import sources
from .sources import SourceReadError
from . import (audit, diagnostics, metrics, multiclass_metrics, multinomial, refit_check, saved,
               tables, trust)
from .multinomial import MultinomialAttribution
from .refit_check import RefitCheck, check_refit
from .tables import SampleTable
from .trust import TrustWarning
from ._memory import retain_freed_memory

__version__: str = _core.build_info()["version"]

__all__ = [
    "Attribution",
    "ConvergenceWarning",
    "FitResult",
    "MultinomialAttribution",
    "NotPositiveDefiniteError",
    "RefitCheck",
    "RetrainResult",
    "SampleTable",
    "SingularRemovalWarning",
    "SourceReadError",
    "TopSamples",
    "TrustWarning",
    "__version__",
    "build_info",
    "check_refit",
    "cuda_available",
    "fit",
    "influence",
    "leverage",
    "audit",
    "diagnostics",
    "metrics",
    "multiclass_metrics",
    "multinomial",
    "newton_step",
    "refit_check",
    "rescaled_influence",
    "retain_freed_memory",
    "saved",
    "sources",
    "tables",
    "trust",
]
