"""Type stubs of the compiled kernel (rif_native._core). Use the public API in rif_native."""

from typing import Any, Optional

import numpy as np
from numpy.linalg import LinAlgError

class NotPositiveDefiniteError(LinAlgError):
    column: int
    pivot: float

def build_info() -> dict[str, Any]: ...
def cuda_available() -> bool: ...
def cuda_device() -> str: ...
def fit(
    X: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    l2: float,
    family: str,
    sample_weight: Optional[np.ndarray],
    fit_intercept: bool,
    tol: float,
    max_iter: int,
    num_threads: int,
) -> dict[str, Any]: ...

class Attribution:
    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        theta: np.ndarray,
        l2: float,
        family: str,
        sample_weight: Optional[np.ndarray],
        fit_intercept: bool,
        num_threads: int,
        use_cuda: bool = ...,
    ) -> None: ...
    @property
    def leverage(self) -> np.ndarray: ...
    @property
    def rescale(self) -> np.ndarray: ...
    @property
    def residuals(self) -> np.ndarray: ...
    @property
    def curvature(self) -> np.ndarray: ...
    @property
    def theta(self) -> np.ndarray: ...
    @property
    def gradient_norm(self) -> float: ...
    @property
    def timings(self) -> dict[str, float]: ...
    @property
    def woodbury_limit(self) -> int: ...
    def hessian(self) -> np.ndarray: ...
    def solve(self, V: np.ndarray) -> np.ndarray: ...
    def influence_rows(self, indices: np.ndarray, rescaled: bool, num_threads: int) -> np.ndarray: ...
    def scores(self, V: np.ndarray, rescaled: bool, num_threads: int) -> np.ndarray: ...
    def group_sums(
        self, indices: np.ndarray, offsets: np.ndarray, rescaled: bool, num_threads: int
    ) -> np.ndarray: ...
    def newton_step(
        self, indices: np.ndarray, offsets: np.ndarray, num_threads: int
    ) -> tuple[np.ndarray, list[int]]: ...
    def retrain(
        self, indices: np.ndarray, offsets: np.ndarray, tol: float, max_iter: int, num_threads: int
    ) -> dict[str, Any]: ...
