// The CUDA backend's kernels (kernels.cuh): each __global__ function and the host function
// that launches it.
#include "kernels.cuh"

#include "device.cuh"

#include <algorithm>

namespace rif::cuda::detail {

namespace {

int grid_for(long long total) {
  return static_cast<int>(std::max<long long>(1, std::min<long long>((total + 255) / 256, 65535)));
}

template <class T>
__global__ void load_columns_kernel(const T* raw, const double* a, double* out, long long count,
                                    long long d, long long p, bool intercept) {
  const long long total = count * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long j = e / p, k = e % p;
    const double s = a ? sqrt(a[j]) : 1.0;
    out[e] = k < d ? s * static_cast<double>(raw[j * d + k]) : (intercept ? s : 0.0);
  }
}

template <class T>
__global__ void gather_columns_kernel(const T* X, const long long* idx, const double* coef,
                                      double* out, long long count, long long d, long long p,
                                      bool intercept) {
  const long long total = count * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long j = e / p, k = e % p;
    const double s = coef[j];
    out[e] = k < d ? s * static_cast<double>(X[idx[j] * d + k]) : (intercept ? s : 0.0);
  }
}

/// Threads over the p parameters (reading each row coalesced for row-major X), the grid's y
/// dimension over `slices` slices of the indices.
template <class T>
__global__ void accumulate_rows_kernel(const T* X, const long long* idx, const double* coef,
                                       double* out, long long count, long long d, long long p,
                                       bool intercept, long long slices) {
  const long long per = (count + slices - 1) / slices;
  const long long j0 = blockIdx.y * per, j1 = j0 + per < count ? j0 + per : count;
  for (long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; k < p;
       k += static_cast<long long>(gridDim.x) * blockDim.x) {
    double sum = 0;
    for (long long j = j0; j < j1; ++j) {
      sum += coef[j] * (k < d ? static_cast<double>(X[idx[j] * d + k]) : (intercept ? 1.0 : 0.0));
    }
    out[blockIdx.y * p + k] = sum;
  }
}

__global__ void scale_columns_kernel(double* Z, const double* a, long long count, long long p) {
  const long long total = count * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    Z[e] *= sqrt(a[e / p]);
  }
}

/// The family's mean at z (logistic: sigma(z) without overflow; squared: z; poisson: e^z), as
/// glm.hpp computes it.
__device__ double family_mean(int family, double z) {
  if (family == 0) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    const double e = exp(z);
    return e / (1.0 + e);
  }
  return family == 1 ? z : exp(z);
}

__global__ void glm_derivatives_kernel(const double* z, const double* y, const double* w,
                                       double* r, double* a, long long count, int family) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const double wi = w ? w[i] : 1.0;
    if (wi == 0) {  // a removed sample: nothing, even where exp(z) overflows
      r[i] = a[i] = 0.0;
      continue;
    }
    const double mean = family_mean(family, z[i]);
    // the CPU's order of operations (logistic: 1 - sigma(z) as sigma(-z), no cancellation)
    const double other = family == 0 ? family_mean(0, -z[i]) : 0.0;
    r[i] = family == 0 && y[i] == 1.0 ? -wi * other : wi * (mean - y[i]);
    a[i] = family == 0 ? wi * mean * other : family == 1 ? wi : wi * mean;
  }
}

__global__ void residual_columns_kernel(double* Z, const double* y, const double* w,
                                        long long count, long long m, int family) {
  const long long total = count * m;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long i = e % count;
    const double wi = w ? w[i] : 1.0;
    Z[e] = wi == 0                      ? 0.0
           : family == 0 && y[i] == 1.0 ? -wi * family_mean(0, -Z[e])  // as glm.hpp
                                        : wi * (family_mean(family, Z[e]) - y[i]);
  }
}

__global__ void leverage_columns_kernel(const double* Z, const double* a, double* h,
                                        long long rows) {
  extern __shared__ double partial[];
  const long long j = blockIdx.x;
  double sum = 0;
  for (long long k = threadIdx.x; k < rows; k += blockDim.x) {
    const double z = Z[j * rows + k];
    sum += z * z;
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) h[j] = a ? a[j] * partial[0] : h[j] + partial[0];
}

__global__ void scale_by_kernel(double* h, const double* a, long long count) {
  for (long long j = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; j < count;
       j += static_cast<long long>(gridDim.x) * blockDim.x) {
    h[j] *= a[j];
  }
}

__global__ void zero_upper_kernel(double* A, long long p) {
  const long long total = p * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    if (e % p < e / p) A[e] = 0.0;  // row < column
  }
}

__global__ void add_penalty_kernel(double* H, long long p, long long d, double l2) {
  const long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (k < d) H[k * p + k] += l2;
}

}  // namespace

void load_columns(const void* raw, bool f32, const double* a, double* out, Index count, Index d,
                  Index p, bool intercept, cudaStream_t stream) {
  if (f32) {
    load_columns_kernel<<<grid_for(count * p), 256, 0, stream>>>(
        static_cast<const float*>(raw), a, out, count, d, p, intercept);
  } else {
    load_columns_kernel<<<grid_for(count * p), 256, 0, stream>>>(
        static_cast<const double*>(raw), a, out, count, d, p, intercept);
  }
  check(cudaGetLastError(), "load_columns");
}

void gather_columns(const void* X, bool f32, const long long* idx, const double* coef,
                    double* out, Index count, Index d, Index p, bool intercept,
                    cudaStream_t stream) {
  if (f32) {
    gather_columns_kernel<<<grid_for(count * p), 256, 0, stream>>>(
        static_cast<const float*>(X), idx, coef, out, count, d, p, intercept);
  } else {
    gather_columns_kernel<<<grid_for(count * p), 256, 0, stream>>>(
        static_cast<const double*>(X), idx, coef, out, count, d, p, intercept);
  }
  check(cudaGetLastError(), "gather_columns");
}

void accumulate_rows(const void* X, bool f32, const long long* idx, const double* coef,
                     double* out, Index count, Index d, Index p, bool intercept, Index slices,
                     cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(std::min<Index>((p + 255) / 256, 65535)),
                  static_cast<unsigned>(slices));
  if (f32) {
    accumulate_rows_kernel<<<grid, 256, 0, stream>>>(static_cast<const float*>(X), idx, coef,
                                                     out, count, d, p, intercept, slices);
  } else {
    accumulate_rows_kernel<<<grid, 256, 0, stream>>>(static_cast<const double*>(X), idx, coef,
                                                     out, count, d, p, intercept, slices);
  }
  check(cudaGetLastError(), "accumulate_rows");
}

void scale_columns(double* Z, const double* a, Index count, Index p, cudaStream_t stream) {
  scale_columns_kernel<<<grid_for(count * p), 256, 0, stream>>>(Z, a, count, p);
  check(cudaGetLastError(), "scale_columns");
}

void glm_derivatives(const double* z, const double* y, const double* w, double* r, double* a,
                     Index count, int family, cudaStream_t stream) {
  glm_derivatives_kernel<<<grid_for(count), 256, 0, stream>>>(z, y, w, r, a, count, family);
  check(cudaGetLastError(), "glm_derivatives");
}

void residual_columns(double* Z, const double* y, const double* w, Index count, Index m,
                      int family, cudaStream_t stream) {
  residual_columns_kernel<<<grid_for(count * m), 256, 0, stream>>>(Z, y, w, count, m, family);
  check(cudaGetLastError(), "residual_columns");
}

void leverage_columns(const double* Z, const double* a, double* h, Index rows, Index count,
                      cudaStream_t stream) {
  constexpr unsigned threads = 256;  // one block per column (a power of two: the reduction)
  leverage_columns_kernel<<<static_cast<unsigned>(count), threads, threads * sizeof(double),
                            stream>>>(Z, a, h, rows);
  check(cudaGetLastError(), "leverage_columns");
}

void scale_by(double* h, const double* a, Index count, cudaStream_t stream) {
  scale_by_kernel<<<grid_for(count), 256, 0, stream>>>(h, a, count);
  check(cudaGetLastError(), "scale_by");
}

void zero_upper(double* A, Index p, cudaStream_t stream) {
  zero_upper_kernel<<<grid_for(p * p), 256, 0, stream>>>(A, p);
  check(cudaGetLastError(), "zero_upper");
}

void add_penalty(double* H, Index p, Index d, double l2, cudaStream_t stream) {
  add_penalty_kernel<<<grid_for(d), 256, 0, stream>>>(H, p, d, l2);
  check(cudaGetLastError(), "add_penalty");
}

}  // namespace rif::cuda::detail
