#pragma once
/// The optional GPU backend (cuBLAS + cuSOLVER): the attribution's dense stages on one device.
/// This header has no CUDA types, so the rest of the kernel compiles without the toolkit; builds
/// without RIF_CUDA link a stub that reports the backend as absent.

#include "rif/design.hpp"
#include "rif/types.hpp"

#include <string>

namespace rif::cuda {

/// Whether this build contains the CUDA backend.
bool compiled();

/// Whether a usable CUDA device is present (false in CPU-only builds or without a driver).
bool available();

/// Name of device 0, or why there is none.
std::string device_name();

/// On the GPU: H = X^T diag(a) X + l2 P (lower triangle), its Cholesky factor L and the leverages
/// h_i = a_i ||L^{-1} x_i||^2, with X streamed from host memory in row blocks through pinned,
/// double-buffered copies that overlap the compute. seconds[0..2] get the wall time of the
/// Hessian, the factorisation and the leverage pass. Throws not_positive_definite like the CPU
/// path, std::runtime_error for device errors.
void attribution_core(const Design& X, const Vector& a, double l2, Matrix& H, Matrix& L, Vector& h,
                      double* seconds);

}  // namespace rif::cuda
