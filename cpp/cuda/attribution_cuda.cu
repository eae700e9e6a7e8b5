// The CUDA backend: Hessian (cuBLAS syrk over streamed row blocks), Cholesky (cuSOLVER potrf),
// inverse factor (cuSOLVER trtri) and the leverage pass (cuBLAS trmm + a column-norm kernel).
#include "rif/cuda_backend.hpp"
#include "rif/linalg.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

namespace rif::cuda {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
  }
}

void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("cuBLAS error in ") + what + ": status " +
                             std::to_string(static_cast<int>(s)));
  }
}

void check(cusolverStatus_t s, const char* what) {
  if (s != CUSOLVER_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("cuSOLVER error in ") + what + ": status " +
                             std::to_string(static_cast<int>(s)));
  }
}

/// Device memory owned for one scope.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { check(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr); }
};

/// Pinned host memory owned for one scope (the staging buffers of the streamed copies).
struct PinnedBuffer {
  void* ptr = nullptr;
  explicit PinnedBuffer(size_t bytes) { check(cudaMallocHost(&ptr, std::max<size_t>(bytes, 1)), "cudaMallocHost"); }
  ~PinnedBuffer() { cudaFreeHost(ptr); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
};

struct Handles {
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;
  cudaStream_t compute = nullptr, copy = nullptr;
  Handles() {
    check(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), "stream");
    check(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking), "stream");
    check(cublasCreate(&blas), "cublasCreate");
    check(cublasSetStream(blas, compute), "cublasSetStream");
    check(cusolverDnCreate(&solver), "cusolverDnCreate");
    check(cusolverDnSetStream(solver, compute), "cusolverDnSetStream");
  }
  ~Handles() {
    if (solver) cusolverDnDestroy(solver);
    if (blas) cublasDestroy(blas);
    if (copy) cudaStreamDestroy(copy);
    if (compute) cudaStreamDestroy(compute);
  }
};

/// out (p x count, column-major, column j = sample j) from raw rows (count x d, row-major),
/// column j scaled by sqrt(a[j]) (root) or 1, with the intercept entry last.
template <class T>
__global__ void load_columns(const T* raw, const double* a, double* out, long long count,
                             long long d, long long p, bool intercept, bool root) {
  const long long total = count * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long j = e / p, k = e % p;
    const double s = root ? sqrt(a[j]) : 1.0;
    out[e] = k < d ? s * static_cast<double>(raw[j * d + k]) : (intercept ? s : 0.0);
  }
}

/// h[j] = a[j] * ||Z(:, j)||^2 for Z p x count column-major: one thread block per column.
__global__ void leverage_columns(const double* Z, const double* a, double* h, long long p) {
  extern __shared__ double partial[];
  const long long j = blockIdx.x;
  double sum = 0;
  for (long long k = threadIdx.x; k < p; k += blockDim.x) {
    const double z = Z[j * p + k];
    sum += z * z;
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) h[j] = a[j] * partial[0];
}

__global__ void add_penalty(double* H, long long p, long long d, double l2) {
  const long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (k < d) H[k * p + k] += l2;
}

int grid_for(long long total) {
  return static_cast<int>(std::min<long long>((total + 255) / 256, 65535));
}

/// Streams X through two pinned staging buffers: the host copies block b+1 into one while the
/// device works on block b from the other; `work(slot, begin, count)` runs on the compute stream.
template <class T, class Work>
void stream_blocks(const T* X, long long n, long long d, long long rows, Handles& hd,
                   PinnedBuffer* pinned, DeviceBuffer* raw, cudaEvent_t* copied, cudaEvent_t* used,
                   Work&& work) {
  const long long blocks = (n + rows - 1) / rows;
  for (long long b = 0; b < blocks; ++b) {
    const int slot = static_cast<int>(b % 2);
    const long long begin = b * rows, count = std::min(rows, n - begin);
    const size_t bytes = static_cast<size_t>(count * d) * sizeof(T);
    check(cudaEventSynchronize(used[slot]), "wait for staging buffer");
    std::memcpy(pinned[slot].ptr, X + begin * d, bytes);
    check(cudaMemcpyAsync(raw[slot].ptr, pinned[slot].ptr, bytes, cudaMemcpyHostToDevice, hd.copy),
          "copy X block");
    check(cudaEventRecord(copied[slot], hd.copy), "event");
    check(cudaStreamWaitEvent(hd.compute, copied[slot], 0), "wait");
    work(slot, begin, count);
    check(cudaEventRecord(used[slot], hd.compute), "event");
  }
}

template <class T>
void core(const T* X, long long n, long long d, bool intercept, const Vector& a, double l2,
          Matrix& H, Matrix& L, Vector& h, double* seconds) {
  using clock = std::chrono::steady_clock;
  const long long p = d + (intercept ? 1 : 0);
  Handles hd;
  // Row blocks of at most 256 MiB of doubles (and of the raw input) per staging slot.
  const long long rows = std::max<long long>(
      1, std::min<long long>(n, (256LL << 20) / (8 * std::max<long long>(p, 1))));
  DeviceBuffer a_d(sizeof(double) * n), h_d(sizeof(double) * n);
  DeviceBuffer H_d(sizeof(double) * p * p), Li_d(sizeof(double) * p * p);
  DeviceBuffer work_d(sizeof(double) * p * rows), out_d(sizeof(double) * p * rows);
  DeviceBuffer raw[2] = {DeviceBuffer(sizeof(T) * d * rows), DeviceBuffer(sizeof(T) * d * rows)};
  PinnedBuffer pinned[2] = {PinnedBuffer(sizeof(T) * d * rows), PinnedBuffer(sizeof(T) * d * rows)};
  cudaEvent_t copied[2], used[2];
  for (int s = 0; s < 2; ++s) {
    check(cudaEventCreateWithFlags(&copied[s], cudaEventDisableTiming), "event");
    check(cudaEventCreateWithFlags(&used[s], cudaEventDisableTiming), "event");
    check(cudaEventRecord(used[s], hd.compute), "event");
  }
  check(cudaMemcpyAsync(a_d.ptr, a.data(), sizeof(double) * n, cudaMemcpyHostToDevice, hd.compute),
        "copy a");
  check(cudaMemsetAsync(H_d.ptr, 0, sizeof(double) * p * p, hd.compute), "memset");

  // Hessian: one symmetric rank update per block of sqrt(a)-scaled columns.
  auto t0 = clock::now();
  const double one = 1.0, zero = 0.0;
  stream_blocks(X, n, d, rows, hd, pinned, raw, copied, used, [&](int slot, long long begin, long long count) {
    load_columns<<<grid_for(count * p), 256, 0, hd.compute>>>(
        raw[slot].as<T>(), a_d.as<double>() + begin, work_d.as<double>(), count, d, p, intercept, true);
    check(cudaGetLastError(), "load_columns");
    check(cublasDsyrk(hd.blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(p),
                      static_cast<int>(count), &one, work_d.as<double>(), static_cast<int>(p), &one,
                      H_d.as<double>(), static_cast<int>(p)),
          "syrk");
  });
  add_penalty<<<grid_for(d), 256, 0, hd.compute>>>(H_d.as<double>(), p, d, l2);
  check(cudaGetLastError(), "add_penalty");
  H.resize(p, p);
  check(cudaMemcpyAsync(H.data(), H_d.ptr, sizeof(double) * p * p, cudaMemcpyDeviceToHost, hd.compute),
        "copy H");
  check(cudaStreamSynchronize(hd.compute), "Hessian");
  H.triangularView<Eigen::StrictlyUpper>().setZero();
  auto t1 = clock::now();

  // Cholesky in place on the device; a failing pivot is reported like the CPU path does.
  int lwork = 0;
  check(cusolverDnDpotrf_bufferSize(hd.solver, CUBLAS_FILL_MODE_LOWER, static_cast<int>(p),
                                    H_d.as<double>(), static_cast<int>(p), &lwork),
        "potrf buffer");
  DeviceBuffer potrf_work(sizeof(double) * std::max(lwork, 1)), info_d(sizeof(int));
  check(cusolverDnDpotrf(hd.solver, CUBLAS_FILL_MODE_LOWER, static_cast<int>(p), H_d.as<double>(),
                         static_cast<int>(p), potrf_work.as<double>(), lwork, info_d.as<int>()),
        "potrf");
  int info = 0;
  check(cudaMemcpyAsync(&info, info_d.ptr, sizeof(int), cudaMemcpyDeviceToHost, hd.compute), "info");
  L.resize(p, p);
  check(cudaMemcpyAsync(L.data(), H_d.ptr, sizeof(double) * p * p, cudaMemcpyDeviceToHost, hd.compute),
        "copy L");
  check(cudaStreamSynchronize(hd.compute), "Cholesky");
  const Index column = info > 0 ? info - 1 : -1;
  check_factor(L, column, column >= 0 ? L(column, column) : 0.0, pivot_floor(H),
               "The Hessian H = X^T diag(a) X + l2 P at theta");
  L.triangularView<Eigen::StrictlyUpper>().setZero();
  auto t2 = clock::now();

  // Leverage: L^{-1} once (trtri), then one triangular product per block and column norms.
  check(cudaMemcpyAsync(Li_d.ptr, H_d.ptr, sizeof(double) * p * p, cudaMemcpyDeviceToDevice, hd.compute),
        "copy factor");
  size_t dev_bytes = 0, host_bytes = 0;
  check(cusolverDnXtrtri_bufferSize(hd.solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, p,
                                    CUDA_R_64F, Li_d.ptr, p, &dev_bytes, &host_bytes),
        "trtri buffer");
  DeviceBuffer trtri_dev(dev_bytes);
  std::string trtri_host(std::max<size_t>(host_bytes, 1), '\0');
  check(cusolverDnXtrtri(hd.solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, p, CUDA_R_64F,
                         Li_d.ptr, p, trtri_dev.ptr, dev_bytes, trtri_host.data(), host_bytes,
                         info_d.as<int>()),
        "trtri");
  const unsigned threads = 256;
  stream_blocks(X, n, d, rows, hd, pinned, raw, copied, used, [&](int slot, long long begin, long long count) {
    load_columns<<<grid_for(count * p), 256, 0, hd.compute>>>(
        raw[slot].as<T>(), a_d.as<double>() + begin, work_d.as<double>(), count, d, p, intercept, false);
    check(cudaGetLastError(), "load_columns");
    check(cublasDtrmm(hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                      CUBLAS_DIAG_NON_UNIT, static_cast<int>(p), static_cast<int>(count), &one,
                      Li_d.as<double>(), static_cast<int>(p), work_d.as<double>(), static_cast<int>(p),
                      out_d.as<double>(), static_cast<int>(p)),
          "trmm");
    leverage_columns<<<static_cast<unsigned>(count), threads, threads * sizeof(double), hd.compute>>>(
        out_d.as<double>(), a_d.as<double>() + begin, h_d.as<double>() + begin, p);
    check(cudaGetLastError(), "leverage_columns");
  });
  (void)zero;
  h.resize(n);
  check(cudaMemcpyAsync(h.data(), h_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, hd.compute),
        "copy h");
  check(cudaStreamSynchronize(hd.compute), "leverage");
  auto t3 = clock::now();
  for (int s = 0; s < 2; ++s) {
    cudaEventDestroy(copied[s]);
    cudaEventDestroy(used[s]);
  }
  if (seconds) {
    seconds[0] = std::chrono::duration<double>(t1 - t0).count();
    seconds[1] = std::chrono::duration<double>(t2 - t1).count();
    seconds[2] = std::chrono::duration<double>(t3 - t2).count();
  }
}

}  // namespace

bool compiled() { return true; }

bool available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return false;
  }
  return count > 0;
}

std::string device_name() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) return std::string("none: ") + cudaGetErrorString(e);
  if (count == 0) return "none: no CUDA device";
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  return prop.name;
}

void attribution_core(const Design& X, const Vector& a, double l2, Matrix& H, Matrix& L, Vector& h,
                      double* seconds) {
  if (!available()) throw std::runtime_error("backend 'cuda' asked for, but " + device_name());
  if (X.is_float32()) {
    core(X.data_f32(), X.rows(), X.features(), X.intercept(), a, l2, H, L, h, seconds);
  } else {
    core(X.data_f64(), X.rows(), X.features(), X.intercept(), a, l2, H, L, h, seconds);
  }
}

}  // namespace rif::cuda
