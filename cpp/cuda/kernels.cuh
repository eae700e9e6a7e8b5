#pragma once
/// The CUDA backend's element-wise and reduction kernels, each behind a host function that
/// launches it on `stream` and checks the launch (std::runtime_error naming the kernel). Rows
/// of X come as raw device memory: row-major count x d, float32 when `f32`, else float64.
/// Matrices are column-major; the intercept entry of a column is last.

#include "rif/types.hpp"

#include <cuda_runtime.h>

namespace rif::cuda::detail {

/// out (p x count, column j = sample j) from raw rows, column j scaled by sqrt(a[j]) when a is
/// given.
void load_columns(const void* raw, bool f32, const double* a, double* out, Index count, Index d,
                  Index p, bool intercept, cudaStream_t stream);

/// out (p x count) = coef[j] x_{idx[j]} from the rows of X in device memory.
void gather_columns(const void* X, bool f32, const long long* idx, const double* coef,
                    double* out, Index count, Index d, Index p, bool intercept,
                    cudaStream_t stream);

/// out[s * p + k] = sum over slice s of the j's of coef[j] x_{idx[j]}[k], for `slices` slices
/// of the count indices (parallel work also when p is small); the caller sums the slices in
/// order.
void accumulate_rows(const void* X, bool f32, const long long* idx, const double* coef,
                     double* out, Index count, Index d, Index p, bool intercept, Index slices,
                     cudaStream_t stream);

/// Column j of the p x count matrix Z scaled by sqrt(a[j]) in place.
void scale_columns(double* Z, const double* a, Index count, Index p, cudaStream_t stream);

/// r_i = w_i dloss/dz, a_i = w_i d2loss/dz2 at z_i, as rif::derivatives does on the CPU
/// (family: 0 logistic, 1 squared, 2 poisson; w null means all ones).
void glm_derivatives(const double* z, const double* y, const double* w, double* r, double* a,
                     Index count, int family, cudaStream_t stream);

/// Z(i, c) <- r_i at z = Z(i, c) for the count x m Z (ld = count): the residuals of m
/// parameter vectors at once; y and w start at the block's first sample.
void residual_columns(double* Z, const double* y, const double* w, Index count, Index m,
                      int family, cudaStream_t stream);

/// h[j] = a[j] * ||Z(:, j)||^2 for Z rows x count; without a, h[j] += ||Z(:, j)||^2 (row
/// panels of one product, summed).
void leverage_columns(const double* Z, const double* a, double* h, Index rows, Index count,
                      cudaStream_t stream);

/// h[j] *= a[j].
void scale_by(double* h, const double* a, Index count, cudaStream_t stream);

/// Zeroes the strict upper triangle of the p x p A.
void zero_upper(double* A, Index p, cudaStream_t stream);

/// H(k, k) += l2 for the d penalised parameters (the intercept, last, is not).
void add_penalty(double* H, Index p, Index d, double l2, cudaStream_t stream);

}  // namespace rif::cuda::detail
