// The CUDA backend. One pass over X computes z = X theta, the family's derivatives and the
// Hessian (cuBLAS syrk) block by block as the rows arrive; then the Cholesky factor (cuSOLVER
// potrf), the inverse factor (trtri) and a second pass for the leverages (cuBLAS trmm + a
// column-norm kernel) and X^T r. Host X is copied through pinned, double-buffered staging (the
// host copy split over threads) and kept in device memory when it fits, so it crosses the bus
// once; X already on the device is used in place.
#include "rif/cuda_backend.hpp"
#include "rif/linalg.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace rif::cuda {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the runtime's error slot, or the next call would report it again
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
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr(other.ptr) { other.ptr = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr); }
};

/// All device work of this backend runs under this lock: the handles, streams and staging
/// buffers below are shared by every attribution of the process.
/// (Recursive: a State destroyed while an exception leaves attribute() takes it again.)
std::recursive_mutex& device_mutex() {
  static std::recursive_mutex m;
  return m;
}

/// Makes `device` current for a scope and restores the caller's current device afterwards.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      cudaGetLastError();
      previous_ = -1;
    }
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
};

/// What each entry point on a state holds while it runs: the device lock, a cleared error slot
/// (a stale error would otherwise be reported by its first call) and the state's device current.
class DeviceEntry {
 public:
  explicit DeviceEntry(int device) : lock_(device_mutex()), scope_(cleared(device)) {}

 private:
  static int cleared(int device) {
    cudaGetLastError();
    return device;
  }
  std::lock_guard<std::recursive_mutex> lock_;  // taken before the device is made current
  DeviceScope scope_;
};

/// Deletes an object that owns device memory (it names its `device`), under the device lock
/// with that device current; with no usable device left, deletes it anyway (freeing what can be
/// freed).
template <class T>
void delete_on_device(T* object) {
  const std::lock_guard<std::recursive_mutex> lock(device_mutex());
  try {
    const DeviceScope scope(object->device);
    delete object;
  } catch (const std::exception&) {
    delete object;
  }
}

int as_int(Index v) {
  if (v > std::numeric_limits<int>::max()) throw std::runtime_error("dimension too large for cuBLAS");
  return static_cast<int>(v);
}

/// cuBLAS / cuSOLVER handles and two streams for one device, created on first use and kept for
/// the life of the process (creating them costs milliseconds; never destroying them avoids
/// teardown-order trouble with the static CUDA runtime at exit). Call under device_mutex().
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
};

Handles& handles_for(int device) {
  static std::vector<Handles*> all;
  if (device < 0) throw std::runtime_error("invalid CUDA device");
  if (static_cast<size_t>(device) >= all.size()) all.resize(static_cast<size_t>(device) + 1, nullptr);
  if (!all[static_cast<size_t>(device)]) all[static_cast<size_t>(device)] = new Handles;
  return *all[static_cast<size_t>(device)];
}

/// The two pinned staging buffers of the streamed copies, kept and grown for the life of the
/// process (pinning memory costs about as much as copying it). Call under device_mutex().
struct Staging {
  void* slot[2] = {nullptr, nullptr};
  size_t bytes = 0;
  void reserve(size_t need) {
    if (need <= bytes) return;
    for (void*& p : slot) {
      if (p) cudaFreeHost(p);
      p = nullptr;
    }
    bytes = 0;
    for (void*& p : slot) {
      check(cudaHostAlloc(&p, std::max<size_t>(need, 1), cudaHostAllocPortable), "cudaHostAlloc");
    }
    bytes = need;
  }
};

Staging& staging() {
  static Staging* s = new Staging;
  return *s;
}

/// out (p x count, column-major, column j = sample j) from raw rows (count x d, row-major),
/// column j scaled by sqrt(a[j]) when a is given, the intercept entry last.
template <class T>
__global__ void load_columns(const T* raw, const double* a, double* out, long long count,
                             long long d, long long p, bool intercept) {
  const long long total = count * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long j = e / p, k = e % p;
    const double s = a ? sqrt(a[j]) : 1.0;
    out[e] = k < d ? s * static_cast<double>(raw[j * d + k]) : (intercept ? s : 0.0);
  }
}

/// out (p x count, column-major) = coef[j] x_{idx[j]} (intercept entry last) from the rows of X
/// in device memory.
template <class T>
__global__ void gather_columns(const T* X, const long long* idx, const double* coef, double* out,
                               long long count, long long d, long long p, bool intercept) {
  const long long total = count * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long j = e / p, k = e % p;
    const double s = coef[j];
    out[e] = k < d ? s * static_cast<double>(X[idx[j] * d + k]) : (intercept ? s : 0.0);
  }
}

/// out[s * p + k] = sum over slice s of the j's of coef[j] x_{idx[j]}[k] (the intercept entry
/// last): threads over the p parameters (reading each row coalesced for row-major X), the
/// grid's y dimension over `slices` slices of the indices; the caller sums the slices in order.
template <class T>
__global__ void accumulate_rows(const T* X, const long long* idx, const double* coef, double* out,
                                long long count, long long d, long long p, bool intercept,
                                long long slices) {
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

/// Column j of the p x count matrix Z scaled by sqrt(a[j]) in place.
__global__ void scale_columns(double* Z, const double* a, long long count, long long p) {
  const long long total = count * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    Z[e] *= sqrt(a[e / p]);
  }
}

/// r_i = w_i dloss/dz, a_i = w_i d2loss/dz2 at z_i, as rif::derivatives does on the CPU
/// (family: 0 logistic, 1 squared, 2 poisson; w null means all ones).
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

__global__ void glm_derivatives(const double* z, const double* y, const double* w, double* r,
                                double* a, long long count, int family) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const double wi = w ? w[i] : 1.0;
    if (wi == 0) {  // a removed sample: nothing, even where exp(z) overflows
      r[i] = a[i] = 0.0;
      continue;
    }
    const double mean = family_mean(family, z[i]);
    r[i] = wi * (mean - y[i]);
    // the CPU's order of operations
    a[i] = family == 0 ? wi * mean * (1.0 - mean) : family == 1 ? wi : wi * mean;
  }
}

/// Z(i, c) <- r_i at z = Z(i, c) for the count x m column-major Z (ld = count): the residuals
/// of m parameter vectors at once; y and w start at the block's first sample.
__global__ void residual_columns(double* Z, const double* y, const double* w, long long count,
                                 long long m, int family) {
  const long long total = count * m;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long i = e % count;
    const double wi = w ? w[i] : 1.0;
    Z[e] = wi == 0 ? 0.0 : wi * (family_mean(family, Z[e]) - y[i]);
  }
}

/// h[j] = a[j] * ||Z(:, j)||^2 for Z rows x count column-major (one thread block per column);
/// without a, h[j] += ||Z(:, j)||^2 (row panels of one product, summed).
__global__ void leverage_columns(const double* Z, const double* a, double* h, long long rows) {
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

/// h[j] *= a[j].
__global__ void scale_by(double* h, const double* a, long long count) {
  for (long long j = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; j < count;
       j += static_cast<long long>(gridDim.x) * blockDim.x) {
    h[j] *= a[j];
  }
}

/// Column and row panels of the lower triangle for the "panels" kernels: a few GEMMs of
/// width kPanel do the work of syrk / trmm at GEMM's rate, with 1 / (number of panels) more flops.
constexpr long long kPanel = 256;

/// Zeroes the strict upper triangle of the p x p column-major A.
__global__ void zero_upper(double* A, long long p) {
  const long long total = p * p;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    if (e % p < e / p) A[e] = 0.0;  // row < column
  }
}

__global__ void add_penalty(double* H, long long p, long long d, double l2) {
  const long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (k < d) H[k * p + k] += l2;
}

/// A kernel choice from the environment variable `name` (the first of `allowed` when unset):
/// which kernel is fastest depends on the GPU (its fp64 tensor cores serve gemm best), so
/// benchmarks/gpu_bench.py times each one.
std::string kernel_choice(const char* name, std::initializer_list<const char*> allowed) {
  const char* env = std::getenv(name);
  if (!env || !*env) return *allowed.begin();
  for (const char* a : allowed) {
    if (std::string(env) == a) return a;
  }
  std::string list;
  for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
  throw std::invalid_argument(std::string(name) + " must be one of " + list + ", got '" + env +
                              "'");
}

/// The row count in the environment variable `name` (tests use it for many small blocks or
/// chunks), or `fallback` when it is unset or not positive.
Index env_rows(const char* name, Index fallback) {
  const char* env = std::getenv(name);
  const long long r = env ? std::atoll(env) : 0;
  return r > 0 ? static_cast<Index>(r) : fallback;
}

int grid_for(long long total) {
  return static_cast<int>(std::max<long long>(1, std::min<long long>((total + 255) / 256, 65535)));
}

/// Host threads for the staging copies (one thread cannot fill the bus from pageable memory):
/// started on first use and kept for the life of the process, so that a pass over many blocks
/// does not start threads per block. copy() is called under device_mutex(), one at a time.
class CopyPool {
 public:
  static CopyPool& get() {
    static CopyPool* pool = new CopyPool;  // never destroyed: its threads wait until exit
    return *pool;
  }

  void copy(void* dst, const void* src, size_t bytes) {
    constexpr size_t kPiece = size_t{4} << 20;
    if (workers_.empty() || bytes < 2 * kPiece) {
      std::memcpy(dst, src, bytes);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      dst_ = static_cast<char*>(dst);
      src_ = static_cast<const char*>(src);
      bytes_ = bytes;
      share_ = (bytes + workers_.size()) / (workers_.size() + 1);
      done_ = 0;
      ++generation_;
    }
    start_.notify_all();
    slice(0);
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [this] { return done_ == workers_.size(); });
  }

 private:
  CopyPool() {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const unsigned extra = std::min(15u, hw > 1 ? hw - 1 : 0u);
    for (unsigned t = 0; t < extra; ++t) workers_.emplace_back([this, t] { run(t + 1); });
  }

  void slice(size_t part) {
    const size_t begin = part * share_;
    if (begin < bytes_) std::memcpy(dst_ + begin, src_ + begin, std::min(share_, bytes_ - begin));
  }

  void run(size_t part) {
    unsigned long long seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex_);
      start_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      lock.unlock();
      slice(part);
      lock.lock();
      if (++done_ == workers_.size()) finished_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_, finished_;
  unsigned long long generation_ = 0;
  size_t done_ = 0;
  char* dst_ = nullptr;
  const char* src_ = nullptr;
  size_t bytes_ = 0, share_ = 0;
};

void parallel_memcpy(void* dst, const void* src, size_t bytes) {
  CopyPool::get().copy(dst, src, bytes);
}

}  // namespace

/// Device-side state of one attribution (see cuda_backend.hpp).
class State {
 public:
  explicit State(int dev) : device(dev), hd(handles_for(dev)) {}
  int device = 0;
  Handles& hd;
  Index n = 0, d = 0, p = 0;
  bool intercept = false, f32 = false;
  size_t row_bytes = 0;
  Index rows = 1;                    ///< rows per block
  const char* device_rows = nullptr;  ///< X in device memory (the caller's or `owned`), or null
  std::unique_ptr<DeviceBuffer> owned;
  std::unique_ptr<DeviceBuffer> factor;   ///< the Cholesky factor L (p x p, lower), kept
  std::unique_ptr<DeviceBuffer> hessian;  ///< H (p x p, lower), kept for fetch_factor()
  std::unique_ptr<DeviceBuffer> labels, weights;  ///< y and w (null: all ones), for gradients()
  int family = 0;                                 ///< 0 logistic, 1 squared, 2 poisson

  /// A device buffer of at least `bytes` kept between calls (gather / accumulate run per set);
  /// used under device_mutex() only, once per entry point: nothing called while the buffer is in
  /// use may call scratch() again (it may reallocate).
  DeviceBuffer& scratch(size_t bytes) {
    if (!scratch_ || scratch_bytes_ < bytes) {
      scratch_.reset();
      scratch_ = std::make_unique<DeviceBuffer>(bytes);
      scratch_bytes_ = bytes;
    }
    return *scratch_;
  }
  std::unique_ptr<DeviceBuffer> scratch_;
  size_t scratch_bytes_ = 0;

  /// Calls work(raw device rows, begin, count) on the compute stream for each row block. X comes
  /// from device memory when it is there; otherwise from host memory `host` through two pinned
  /// staging buffers, into `keep` (then X is resident from the next pass on) or into two
  /// device buffers that alternate. The host copy of block b + 1 overlaps the transfer and the
  /// compute of block b.
  template <class Work>
  void for_blocks(const void* host, char* keep, Work&& work) {
    const Index blocks = (n + rows - 1) / rows;
    if (device_rows) {
      for (Index b = 0; b < blocks; ++b) {
        const Index begin = b * rows, count = std::min(rows, n - begin);
        work(device_rows + static_cast<size_t>(begin) * row_bytes, begin, count);
      }
      return;
    }
    if (!host) throw std::runtime_error("X is neither in device nor in host memory");
    const size_t block_bytes = static_cast<size_t>(rows) * row_bytes;
    Staging& pinned = staging();
    pinned.reserve(block_bytes);
    std::unique_ptr<DeviceBuffer> raw[2];
    if (!keep) {
      raw[0] = std::make_unique<DeviceBuffer>(block_bytes);
      raw[1] = std::make_unique<DeviceBuffer>(block_bytes);
    }
    cudaEvent_t copied[2], used[2];
    for (int s = 0; s < 2; ++s) {
      check(cudaEventCreateWithFlags(&copied[s], cudaEventDisableTiming), "event");
      check(cudaEventCreateWithFlags(&used[s], cudaEventDisableTiming), "event");
      check(cudaEventRecord(copied[s], hd.copy), "event");
      check(cudaEventRecord(used[s], hd.compute), "event");
    }
    try {
      for (Index b = 0; b < blocks; ++b) {
        const int slot = static_cast<int>(b % 2);
        const Index begin = b * rows, count = std::min(rows, n - begin);
        const size_t bytes = static_cast<size_t>(count) * row_bytes;
        // pinned[slot] is free once its previous transfer is done.
        check(cudaEventSynchronize(copied[slot]), "wait for staging buffer");
        parallel_memcpy(pinned.slot[slot], static_cast<const char*>(host) + begin * row_bytes,
                        bytes);
        char* dst = keep ? keep + static_cast<size_t>(begin) * row_bytes : raw[slot]->as<char>();
        // raw[slot] is free once the compute that read it (block b - 2) is done.
        if (!keep) check(cudaStreamWaitEvent(hd.copy, used[slot], 0), "wait");
        check(cudaMemcpyAsync(dst, pinned.slot[slot], bytes, cudaMemcpyHostToDevice, hd.copy),
              "copy X block");
        check(cudaEventRecord(copied[slot], hd.copy), "event");
        check(cudaStreamWaitEvent(hd.compute, copied[slot], 0), "wait");
        work(dst, begin, count);
        check(cudaEventRecord(used[slot], hd.compute), "event");
      }
      // The staging buffers are reused by the next pass: every transfer must be done.
      check(cudaStreamSynchronize(hd.compute), "X pass");
      check(cudaStreamSynchronize(hd.copy), "X copies");
    } catch (...) {
      cudaDeviceSynchronize();
      for (int s = 0; s < 2; ++s) {
        cudaEventDestroy(copied[s]);
        cudaEventDestroy(used[s]);
      }
      throw;
    }
    for (int s = 0; s < 2; ++s) {
      cudaEventDestroy(copied[s]);
      cudaEventDestroy(used[s]);
    }
  }

  /// X's rows in host memory for for_blocks(), or null when X is in device memory.
  const char* host_rows(const Design& host) const {
    if (device_rows) return nullptr;
    return f32 ? reinterpret_cast<const char*>(host.data_f32())
               : reinterpret_cast<const char*>(host.data_f64());
  }

  /// out (p x count, column-major) = coef[j] x_{idx[j]} from X in device memory, after the count
  /// indices and coefficients are uploaded into idx_d and coef_d; on the compute stream.
  void gather_to(const std::int64_t* idx, const double* coef, Index count, long long* idx_d,
                 double* coef_d, double* out) {
    check(cudaMemcpyAsync(idx_d, idx, sizeof(long long) * count, cudaMemcpyHostToDevice,
                          hd.compute),
          "upload indices");
    check(cudaMemcpyAsync(coef_d, coef, sizeof(double) * count, cudaMemcpyHostToDevice,
                          hd.compute),
          "upload coefficients");
    if (f32) {
      gather_columns<<<grid_for(count * p), 256, 0, hd.compute>>>(
          reinterpret_cast<const float*>(device_rows), idx_d, coef_d, out, count, d, p, intercept);
    } else {
      gather_columns<<<grid_for(count * p), 256, 0, hd.compute>>>(
          reinterpret_cast<const double*>(device_rows), idx_d, coef_d, out, count, d, p,
          intercept);
    }
    check(cudaGetLastError(), "gather_columns");
  }

  /// cols (p x m, device memory) <- H^{-1} cols with the factor kept here (potrs), on the
  /// compute stream.
  void solve_in_place(double* cols, Index m) {
    if (!info_) info_ = std::make_unique<DeviceBuffer>(sizeof(int));
    check(cusolverDnDpotrs(hd.solver, CUBLAS_FILL_MODE_LOWER, as_int(p), as_int(m),
                           factor->as<double>(), as_int(p), cols, as_int(p), info_->as<int>()),
          "potrs");
  }
  std::unique_ptr<DeviceBuffer> info_;  ///< potrs's status word (argument errors only)

  /// out (p x count, column-major) from raw device rows, columns scaled by sqrt(a) if given.
  void load(const char* raw, const double* a, double* out, Index count) {
    if (f32) {
      load_columns<<<grid_for(count * p), 256, 0, hd.compute>>>(
          reinterpret_cast<const float*>(raw), a, out, count, d, p, intercept);
    } else {
      load_columns<<<grid_for(count * p), 256, 0, hd.compute>>>(
          reinterpret_cast<const double*>(raw), a, out, count, d, p, intercept);
    }
    check(cudaGetLastError(), "load_columns");
  }
};

void StateDeleter::operator()(State* state) const {
  delete_on_device(state);  // frees X's resident copy, if any
}

namespace {

DeviceBuffer upload(const Vector& v, cudaStream_t stream) {
  DeviceBuffer buf(sizeof(double) * v.size());
  if (v.size()) {
    check(cudaMemcpyAsync(buf.ptr, v.data(), sizeof(double) * v.size(), cudaMemcpyHostToDevice,
                          stream),
          "upload");
  }
  return buf;
}

/// Segment indices grouped by width (widths of 0 left out), for cuBLAS batched calls: one call
/// per distinct width instead of one per segment.
using WidthGroups = std::map<Index, std::vector<size_t>>;
WidthGroups by_width(const std::vector<Index>& width) {
  WidthGroups groups;
  for (size_t i = 0; i < width.size(); ++i) {
    if (width[i] > 0) groups[width[i]].push_back(i);
  }
  return groups;
}

/// The pointer arrays of batched calls over `groups`, in device memory: array a holds
/// pointer_of[a](i) for every segment i, in group order (the order the calls take them), and
/// starts at slice(a). Uploaded at once on `stream` (from pageable memory, which is staged
/// before cudaMemcpyAsync returns).
class DevicePointers {
 public:
  template <class... F>
  DevicePointers(const WidthGroups& groups, cudaStream_t stream, F&&... pointer_of)
      : items_(count(groups)), buf_(sizeof(void*) * items_ * sizeof...(F)) {
    std::vector<const void*> host;
    host.reserve(items_ * sizeof...(F));
    const auto append = [&](auto&& of) {
      for (const auto& group : groups) {
        for (size_t i : group.second) host.push_back(of(i));
      }
    };
    (append(pointer_of), ...);
    if (!host.empty()) {
      check(cudaMemcpyAsync(buf_.ptr, host.data(), sizeof(void*) * host.size(),
                            cudaMemcpyHostToDevice, stream),
            "upload pointer arrays");
    }
  }
  template <class T>
  T* const* slice(size_t a) const {
    return reinterpret_cast<T* const*>(buf_.as<void*>() + a * items_);
  }

 private:
  static size_t count(const WidthGroups& groups) {
    size_t n = 0;
    for (const auto& group : groups) n += group.second.size();
    return n;
  }
  size_t items_;
  DeviceBuffer buf_;
};

}  // namespace

StatePtr attribute(const Design& host, const DeviceMatrix* device, Family family, const Vector& y,
                   const Vector& w, const Vector& theta, double l2,
                   void (*check_inputs)(const Design&, const Results&), Results& out) {
  if (!available()) throw std::runtime_error("backend 'cuda' asked for, but " + device_name());
  // Hessian: syrk (half the flops) or gemm on the full matrix; leverage: L^{-1} once and a
  // triangular product (trmm) or a full product (gemm) per block, or a solve per block (trsm).
  const std::string hessian_kernel = kernel_choice("RIF_CUDA_HESSIAN", {"syrk", "gemm", "panels"});
  const std::string leverage_kernel =
      kernel_choice("RIF_CUDA_LEVERAGE", {"gemm", "trmm", "trsm", "panels"});
  const bool inverse = leverage_kernel != "trsm";
  using clock = std::chrono::steady_clock;
  const std::lock_guard<std::recursive_mutex> lock(device_mutex());
  cudaGetLastError();  // a failure elsewhere in the process must not be reported as ours
  // Device X: work on the device that holds it. Host X: device 0.
  int dev = 0;
  if (device) {
    cudaPointerAttributes attr;
    check(cudaPointerGetAttributes(&attr, device->data), "reading X's device pointer");
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
      throw std::invalid_argument("X was passed as a device array, but its pointer is not in "
                                  "CUDA device memory");
    }
    dev = attr.device;
  }
  const DeviceScope scope(dev);
  StatePtr st(new State(dev));
  State& S = *st;
  S.n = host.rows();
  S.d = host.features();
  S.p = host.params();
  S.intercept = host.intercept();
  S.f32 = device ? device->f32 : host.is_float32();
  S.row_bytes = static_cast<size_t>(S.d) * (S.f32 ? sizeof(float) : sizeof(double));
  const Index n = S.n, p = S.p;
  const int pi = as_int(p);
  // Row blocks of about 64 MiB of input: small enough that the pipeline fills fast, large
  // enough for efficient syrk / trmm calls.
  S.rows = std::max<Index>(
      1, std::min<Index>(n, static_cast<Index>((size_t{64} << 20) / std::max<size_t>(S.row_bytes, 8))));
  S.rows = std::max<Index>(S.rows, std::min<Index>(n, 256));
  S.rows = std::min<Index>(n, env_rows("RIF_CUDA_BLOCK_ROWS", S.rows));
  if (device) {
    check(cudaDeviceSynchronize(), "waiting for the producer of X");  // its stream may be busy
    S.device_rows = static_cast<const char*>(device->data);
  }
  const char* host_rows = S.host_rows(host);
  // Keep host X in device memory when it fits beside this attribution's own buffers (and
  // RIF_CUDA_KEEP_X is not "0": then every pass streams X from host memory).
  char* keep = nullptr;
  const char* keep_env = std::getenv("RIF_CUDA_KEEP_X");
  const bool may_keep = !(keep_env && std::string(keep_env) == "0");
  if (!device && may_keep) {
    size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const double own = 8.0 * (5.0 * p * p + 3.0 * p * S.rows + 8.0 * n) +
                       4.0 * S.rows * static_cast<double>(S.row_bytes);
    if (static_cast<double>(n) * S.row_bytes + own < 0.85 * static_cast<double>(free_bytes)) {
      S.owned = std::make_unique<DeviceBuffer>(static_cast<size_t>(n) * S.row_bytes);
      keep = S.owned->as<char>();
    }
  }

  cudaStream_t cs = S.hd.compute;
  DeviceBuffer theta_d = upload(theta, cs), y_d = upload(y, cs), w_d = upload(w, cs);
  DeviceBuffer z_d(sizeof(double) * n), r_d(sizeof(double) * n), a_d(sizeof(double) * n);
  DeviceBuffer h_d(sizeof(double) * n), g_d(sizeof(double) * p);
  DeviceBuffer H_d(sizeof(double) * p * p), Li_d(sizeof(double) * (inverse ? p * p : 1));
  DeviceBuffer work_d(sizeof(double) * p * S.rows), out_d(sizeof(double) * p * S.rows);
  check(cudaMemsetAsync(H_d.ptr, 0, sizeof(double) * p * p, cs), "memset");
  check(cudaMemsetAsync(g_d.ptr, 0, sizeof(double) * p, cs), "memset");
  const double* w_ptr = w.size() ? w_d.as<double>() : nullptr;
  const int fam = family == Family::logistic ? 0 : family == Family::squared ? 1 : 2;
  const double one = 1.0, zero = 0.0;
  // The staging copies run on the copy stream: the uploads above must land first.
  check(cudaStreamSynchronize(cs), "uploads");

  // Pass 1, as X arrives: z = X theta, r and a, then H += (sqrt(a) x)(sqrt(a) x)^T.
  const auto t0 = clock::now();
  S.for_blocks(host_rows, keep, [&](const char* raw, Index begin, Index count) {
    const int c = as_int(count);
    double* work = work_d.as<double>();
    S.load(raw, nullptr, work, count);
    check(cublasDgemv(S.hd.blas, CUBLAS_OP_T, pi, c, &one, work, pi, theta_d.as<double>(), 1,
                      &zero, z_d.as<double>() + begin, 1),
          "gemv z");
    glm_derivatives<<<grid_for(count), 256, 0, cs>>>(z_d.as<double>() + begin,
                                                      y_d.as<double>() + begin,
                                                      w_ptr ? w_ptr + begin : nullptr,
                                                      r_d.as<double>() + begin,
                                                      a_d.as<double>() + begin, count, fam);
    check(cudaGetLastError(), "glm_derivatives");
    scale_columns<<<grid_for(count * p), 256, 0, cs>>>(work, a_d.as<double>() + begin, count, p);
    check(cudaGetLastError(), "scale_columns");
    if (hessian_kernel == "panels") {
      // H[j0:, j0:j0+w] += W[j0:, :] W[j0:j0+w, :]^T, column panel by column panel
      for (long long j0 = 0; j0 < p; j0 += kPanel) {
        const int w = static_cast<int>(std::min<long long>(kPanel, p - j0));
        check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_T, as_int(p - j0), w, c, &one,
                          work + j0, pi, work + j0, pi, &one, H_d.as<double>() + j0 + j0 * p, pi),
              "gemm H panel");
      }
    } else if (hessian_kernel == "gemm") {
      check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_T, pi, pi, c, &one, work, pi, work, pi,
                        &one, H_d.as<double>(), pi),
            "gemm H");
    } else {
      check(cublasDsyrk(S.hd.blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, pi, c, &one, work, pi,
                        &one, H_d.as<double>(), pi),
            "syrk");
    }
  });
  if (keep) S.device_rows = keep;  // X is in device memory from now on
  add_penalty<<<grid_for(S.d), 256, 0, cs>>>(H_d.as<double>(), p, S.d, l2);
  check(cudaGetLastError(), "add_penalty");
  out.z.resize(n);
  out.r.resize(n);
  out.a.resize(n);
  Vector diag_H(p), diag_L(p);  // H and L stay on the device: only their diagonals come back
  check(cudaMemcpyAsync(out.z.data(), z_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, cs), "copy z");
  check(cudaMemcpyAsync(out.r.data(), r_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, cs), "copy r");
  check(cudaMemcpyAsync(out.a.data(), a_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, cs), "copy a");
  S.hessian = std::make_unique<DeviceBuffer>(sizeof(double) * p * p);
  check(cudaMemcpyAsync(S.hessian->ptr, H_d.ptr, sizeof(double) * p * p, cudaMemcpyDeviceToDevice,
                        cs),
        "keep H");
  check(cudaMemcpy2DAsync(diag_H.data(), sizeof(double), H_d.ptr, sizeof(double) * (p + 1),
                          sizeof(double), p, cudaMemcpyDeviceToHost, cs),
        "copy diag(H)");
  check(cudaStreamSynchronize(cs), "Hessian");
  if (check_inputs) check_inputs(host, out);  // z, r, a finite, before the factorisation
  const auto t1 = clock::now();

  // Cholesky in place on the device; a failing pivot is reported like the CPU path does.
  int lwork = 0;
  check(cusolverDnDpotrf_bufferSize(S.hd.solver, CUBLAS_FILL_MODE_LOWER, pi, H_d.as<double>(), pi,
                                    &lwork),
        "potrf buffer");
  DeviceBuffer potrf_work(sizeof(double) * std::max(lwork, 1)), info_d(sizeof(int));
  check(cusolverDnDpotrf(S.hd.solver, CUBLAS_FILL_MODE_LOWER, pi, H_d.as<double>(), pi,
                         potrf_work.as<double>(), lwork, info_d.as<int>()),
        "potrf");
  int info = 0;
  check(cudaMemcpyAsync(&info, info_d.ptr, sizeof(int), cudaMemcpyDeviceToHost, cs), "info");
  check(cudaMemcpy2DAsync(diag_L.data(), sizeof(double), H_d.ptr, sizeof(double) * (p + 1),
                          sizeof(double), p, cudaMemcpyDeviceToHost, cs),
        "copy diag(L)");
  check(cudaStreamSynchronize(cs), "Cholesky");
  const Index column = info > 0 ? info - 1 : -1;
  check_factor_diagonal(diag_L, column, column >= 0 ? diag_L[column] : 0.0,
                        pivot_floors(diag_H),
                        "The Hessian H = X^T diag(a) X + l2 P at theta");
  const auto t2 = clock::now();

  // Pass 2: L^{-1} once (trtri), then per block one triangular product, column norms, X^T r.
  size_t dev_bytes = 0, host_bytes = 0;
  if (inverse) {
    check(cudaMemcpyAsync(Li_d.ptr, H_d.ptr, sizeof(double) * p * p, cudaMemcpyDeviceToDevice,
                          cs),
          "copy factor");
    check(cusolverDnXtrtri_bufferSize(S.hd.solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT,
                                      p, CUDA_R_64F, Li_d.ptr, p, &dev_bytes, &host_bytes),
          "trtri buffer");
  }
  DeviceBuffer trtri_dev(dev_bytes);
  std::string trtri_host(std::max<size_t>(host_bytes, 1), '\0');
  info = 0;
  if (inverse) {
    check(cusolverDnXtrtri(S.hd.solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, p,
                           CUDA_R_64F, Li_d.ptr, p, trtri_dev.ptr, dev_bytes, trtri_host.data(),
                           host_bytes, info_d.as<int>()),
          "trtri");
    check(cudaMemcpyAsync(&info, info_d.ptr, sizeof(int), cudaMemcpyDeviceToHost, cs), "info");
    if (leverage_kernel == "gemm" || leverage_kernel == "panels") {
      // full products over the lower triangle need the upper one at zero
      zero_upper<<<grid_for(p * p), 256, 0, cs>>>(Li_d.as<double>(), p);
      check(cudaGetLastError(), "zero_upper");
    }
  }
  check(cudaStreamSynchronize(cs), "trtri");  // the copy stream's transfers may start now
  if (info != 0) {
    throw std::runtime_error("cuSOLVER trtri failed on the Cholesky factor (info " +
                             std::to_string(info) + ")");
  }
  const unsigned threads = 256;
  S.for_blocks(host_rows, nullptr, [&](const char* raw, Index begin, Index count) {
    const int c = as_int(count);
    double* work = work_d.as<double>();
    S.load(raw, nullptr, work, count);
    check(cublasDgemv(S.hd.blas, CUBLAS_OP_N, pi, c, &one, work, pi, r_d.as<double>() + begin, 1,
                      &one, g_d.as<double>(), 1),
          "gemv X^T r");
    double* solved = out_d.as<double>();  // L^{-1} x for each column
    if (leverage_kernel == "panels") {
      // row panel [r0, r1) of L^{-1} X^T = L^{-1}[r0:r1, 0:r1] X^T[0:r1]; its squared column
      // norms summed into h, then times a
      double* h = h_d.as<double>() + begin;
      check(cudaMemsetAsync(h, 0, sizeof(double) * count, cs), "memset h");
      for (long long r0 = 0; r0 < p; r0 += kPanel) {
        const long long w = std::min<long long>(kPanel, p - r0), r1 = r0 + w;
        check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(w), c,
                          as_int(r1), &one, Li_d.as<double>() + r0, pi, work, pi, &zero, solved,
                          static_cast<int>(w)),
              "gemm leverage panel");
        leverage_columns<<<static_cast<unsigned>(count), threads, threads * sizeof(double), cs>>>(
            solved, nullptr, h, w);
        check(cudaGetLastError(), "leverage_columns");
      }
      scale_by<<<grid_for(count), 256, 0, cs>>>(h, a_d.as<double>() + begin, count);
      check(cudaGetLastError(), "scale_by");
      return;
    }
    if (leverage_kernel == "trmm") {
      check(cublasDtrmm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                        CUBLAS_DIAG_NON_UNIT, pi, c, &one, Li_d.as<double>(), pi, work, pi,
                        solved, pi),
            "trmm");
    } else if (leverage_kernel == "gemm") {
      check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_N, pi, c, pi, &one, Li_d.as<double>(),
                        pi, work, pi, &zero, solved, pi),
            "gemm leverage");
    } else {
      check(cublasDtrsm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                        CUBLAS_DIAG_NON_UNIT, pi, c, &one, H_d.as<double>(), pi, work, pi),
            "trsm");
      solved = work;
    }
    leverage_columns<<<static_cast<unsigned>(count), threads, threads * sizeof(double), cs>>>(
        solved, a_d.as<double>() + begin, h_d.as<double>() + begin, p);
    check(cudaGetLastError(), "leverage_columns");
  });
  out.h.resize(n);
  out.g.resize(p);
  check(cudaMemcpyAsync(out.h.data(), h_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, cs),
        "copy h");
  check(cudaMemcpyAsync(out.g.data(), g_d.ptr, sizeof(double) * p, cudaMemcpyDeviceToHost, cs),
        "copy g");
  check(cudaStreamSynchronize(cs), "leverage");
  const auto t3 = clock::now();
  out.seconds[0] = std::chrono::duration<double>(t1 - t0).count();
  out.seconds[1] = std::chrono::duration<double>(t2 - t1).count();
  out.seconds[2] = std::chrono::duration<double>(t3 - t2).count();
  out.resident = S.device_rows != nullptr;
  S.family = fam;
  S.labels = std::make_unique<DeviceBuffer>(std::move(y_d));
  if (w_ptr) S.weights = std::make_unique<DeviceBuffer>(std::move(w_d));
  S.factor = std::make_unique<DeviceBuffer>(std::move(H_d));  // L, for influence rows
  return st;
}

void project(State& S, const Design& host, const Matrix& V, Eigen::Ref<RowMatrix> out) {
  const Index n = S.n, p = S.p, m = V.cols();
  if (V.rows() != p || out.rows() != n || out.cols() != m) {
    throw std::invalid_argument("project: shapes do not match");
  }
  if (m == 0 || n == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  DeviceBuffer U_d(sizeof(double) * p * m), out_d(sizeof(double) * n * m);
  DeviceBuffer work_d(sizeof(double) * p * S.rows);
  check(cudaMemcpyAsync(U_d.ptr, V.data(), sizeof(double) * p * m, cudaMemcpyHostToDevice, cs),
        "upload V");
  S.solve_in_place(U_d.as<double>(), m);  // U = H^{-1} V with the factor kept on the device
  check(cudaStreamSynchronize(cs), "H^{-1} V");
  const char* host_rows = S.host_rows(host);
  const double one = 1.0, zero = 0.0;
  const int pi = as_int(p), mi = as_int(m), ni = as_int(n);
  S.for_blocks(host_rows, nullptr, [&](const char* raw, Index begin, Index count) {
    S.load(raw, nullptr, work_d.as<double>(), count);
    // out(begin.., :) = work^T U, into the n x m column-major result.
    check(cublasDgemm(S.hd.blas, CUBLAS_OP_T, CUBLAS_OP_N, as_int(count), mi, pi, &one,
                      work_d.as<double>(), pi, U_d.as<double>(), pi, &zero,
                      out_d.as<double>() + begin, ni),
          "gemm X U");
  });
  Matrix result(n, m);
  check(cudaMemcpyAsync(result.data(), out_d.ptr, sizeof(double) * n * m, cudaMemcpyDeviceToHost,
                        cs),
        "copy X U");
  check(cudaStreamSynchronize(cs), "X U");
  out = result;
}

void solve(State& S, Eigen::Ref<Matrix> V) {
  const Index p = S.p, m = V.cols();
  if (!S.factor || V.rows() != p) throw std::invalid_argument("solve: shapes do not match");
  if (m == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  Matrix host = V;  // contiguous, leading dimension p
  DeviceBuffer V_d(sizeof(double) * p * m);
  check(cudaMemcpyAsync(V_d.ptr, host.data(), sizeof(double) * p * m, cudaMemcpyHostToDevice, cs),
        "upload V");
  S.solve_in_place(V_d.as<double>(), m);
  check(cudaMemcpyAsync(host.data(), V_d.ptr, sizeof(double) * p * m, cudaMemcpyDeviceToHost, cs),
        "copy H^{-1} V");
  check(cudaStreamSynchronize(cs), "H^{-1} V");
  V = host;
}

void fetch_factor(State& S, Matrix& H, Matrix& L) {
  const Index p = S.p;
  if (!S.hessian || !S.factor) throw std::logic_error("fetch_factor: H was fetched already");
  const DeviceEntry entry(S.device);
  H.resize(p, p);
  L.resize(p, p);
  check(cudaMemcpyAsync(H.data(), S.hessian->ptr, sizeof(double) * p * p, cudaMemcpyDeviceToHost,
                        S.hd.compute),
        "copy H");
  check(cudaMemcpyAsync(L.data(), S.factor->ptr, sizeof(double) * p * p, cudaMemcpyDeviceToHost,
                        S.hd.compute),
        "copy L");
  check(cudaStreamSynchronize(S.hd.compute), "copy H, L");
  S.hessian.reset();  // its one use is done: free p^2 doubles of device memory
  H.triangularView<Eigen::StrictlyUpper>().setZero();  // syrk leaves it unset, gemm full
  L.triangularView<Eigen::StrictlyUpper>().setZero();
}

void gradients(State& S, const Design& host, const Matrix& Theta, Matrix& G) {
  const Index p = S.p, m = Theta.cols();
  if (Theta.rows() != p) throw std::invalid_argument("gradients: theta has the wrong length");
  G.setZero(p, m);
  if (m == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  DeviceBuffer T_d(sizeof(double) * p * m), G_d(sizeof(double) * p * m);
  // Z (sub x m) for sub-blocks of rows: about 32 Mi doubles at most, however many sets
  Index sub = std::max<Index>(1, std::min<Index>(S.rows, (Index{32} << 20) / m));
  sub = std::min(sub, env_rows("RIF_CUDA_GRADIENT_ROWS", sub));
  DeviceBuffer work_d(sizeof(double) * p * S.rows), Z_d(sizeof(double) * sub * m);
  check(cudaMemcpyAsync(T_d.ptr, Theta.data(), sizeof(double) * p * m, cudaMemcpyHostToDevice,
                        cs),
        "upload theta");
  check(cudaMemsetAsync(G_d.ptr, 0, sizeof(double) * p * m, cs), "memset");
  check(cudaStreamSynchronize(cs), "upload theta");
  const char* host_rows = S.host_rows(host);
  const double one = 1.0, zero = 0.0;
  const int pi = as_int(p), mi = as_int(m);
  const double* w = S.weights ? S.weights->as<double>() : nullptr;
  S.for_blocks(host_rows, nullptr, [&](const char* raw, Index begin, Index count) {
    double* work = work_d.as<double>();
    S.load(raw, nullptr, work, count);
    for (Index s0 = 0; s0 < count; s0 += sub) {
      // Z = W_s^T Theta (k x m), then residuals in place, then G += W_s Z
      const Index k = std::min(sub, count - s0);
      const int ki = as_int(k);
      const double* Ws = work + s0 * p;
      check(cublasDgemm(S.hd.blas, CUBLAS_OP_T, CUBLAS_OP_N, ki, mi, pi, &one, Ws, pi,
                        T_d.as<double>(), pi, &zero, Z_d.as<double>(), ki),
            "gemm z");
      residual_columns<<<grid_for(k * m), 256, 0, cs>>>(
          Z_d.as<double>(), S.labels->as<double>() + begin + s0,
          w ? w + begin + s0 : nullptr, k, m, S.family);
      check(cudaGetLastError(), "residual_columns");
      check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_N, pi, mi, ki, &one, Ws, pi,
                        Z_d.as<double>(), ki, &one, G_d.as<double>(), pi),
            "gemm X^T r");
    }
  });
  check(cudaMemcpyAsync(G.data(), G_d.ptr, sizeof(double) * p * m, cudaMemcpyDeviceToHost, cs),
        "copy gradients");
  check(cudaStreamSynchronize(cs), "gradients");
}

void gather(State& S, const std::int64_t* idx, Index k, const double* coef,
            Eigen::Ref<Matrix> out) {
  const Index p = S.p;
  if (!S.device_rows) throw std::logic_error("gather: X is not in device memory");
  if (out.rows() != p || out.cols() != k) throw std::invalid_argument("gather: shapes differ");
  if (k == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  // in chunks of at most one row block: bounded device memory for sets as large as n
  const Index chunk = std::min(k, S.rows);
  DeviceBuffer& buf = S.scratch(sizeof(double) * p * chunk + 16 * chunk);
  double* out_d = buf.as<double>();
  long long* idx_d = reinterpret_cast<long long*>(out_d + p * chunk);
  double* coef_d = reinterpret_cast<double*>(idx_d + chunk);
  const Vector c = coef ? Vector(Eigen::Map<const Vector>(coef, k)) : Vector(Vector::Ones(k));
  Matrix host(p, chunk);
  for (Index c0 = 0; c0 < k; c0 += chunk) {
    const Index count = std::min(chunk, k - c0);
    S.gather_to(idx + c0, c.data() + c0, count, idx_d, coef_d, out_d);
    check(cudaMemcpyAsync(host.data(), out_d, sizeof(double) * p * count, cudaMemcpyDeviceToHost,
                          cs),
          "copy gathered rows");
    check(cudaStreamSynchronize(cs), "gather");
    out.middleCols(c0, count) = host.leftCols(count);
  }
}

void accumulate(State& S, const std::int64_t* idx, Index k, const double* coef,
                Eigen::Ref<Vector> out) {
  const Index p = S.p;
  if (!S.device_rows) throw std::logic_error("accumulate: X is not in device memory");
  if (out.size() != p) throw std::invalid_argument("accumulate: shapes differ");
  if (k == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  Index chunk = std::min<Index>(k, Index{1} << 20);
  chunk = std::min(chunk, env_rows("RIF_CUDA_ACCUMULATE_ROWS", chunk));
  // index slices over the grid's y dimension: parallel work also when p is small
  constexpr Index kSlices = 64, kPerSlice = 256;
  const Index slices_max = std::min<Index>(kSlices, (chunk + kPerSlice - 1) / kPerSlice);
  DeviceBuffer& buf = S.scratch(sizeof(double) * p * slices_max + 16 * chunk);
  double* sum_d = buf.as<double>();
  long long* idx_d = reinterpret_cast<long long*>(sum_d + p * slices_max);
  double* coef_d = reinterpret_cast<double*>(idx_d + chunk);
  Matrix part(p, slices_max);
  for (Index c0 = 0; c0 < k; c0 += chunk) {
    const Index count = std::min(chunk, k - c0);
    const Index slices = std::min<Index>(slices_max, (count + kPerSlice - 1) / kPerSlice);
    const dim3 grid(static_cast<unsigned>(std::min<Index>((p + 255) / 256, 65535)),
                    static_cast<unsigned>(slices));
    check(cudaMemcpyAsync(idx_d, idx + c0, sizeof(long long) * count, cudaMemcpyHostToDevice,
                          cs),
          "upload indices");
    check(cudaMemcpyAsync(coef_d, coef + c0, sizeof(double) * count, cudaMemcpyHostToDevice, cs),
          "upload coefficients");
    if (S.f32) {
      accumulate_rows<<<grid, 256, 0, cs>>>(reinterpret_cast<const float*>(S.device_rows), idx_d,
                                            coef_d, sum_d, count, S.d, p, S.intercept, slices);
    } else {
      accumulate_rows<<<grid, 256, 0, cs>>>(reinterpret_cast<const double*>(S.device_rows),
                                            idx_d, coef_d, sum_d, count, S.d, p, S.intercept,
                                            slices);
    }
    check(cudaGetLastError(), "accumulate_rows");
    check(cudaMemcpyAsync(part.data(), sum_d, sizeof(double) * p * slices,
                          cudaMemcpyDeviceToHost, cs),
          "copy sums");
    check(cudaStreamSynchronize(cs), "accumulate");
    for (Index sl = 0; sl < slices; ++sl) out += part.col(sl);  // in a fixed order
  }
}

bool resident(const State& S) { return S.device_rows != nullptr && S.factor != nullptr; }

bool influence_rows(State& S, const std::int64_t* idx, Index k, const Vector& coef,
                    Eigen::Ref<RowMatrix> out) {
  if (!S.device_rows || !S.factor) return false;  // X streamed: the CPU answers
  const Index p = S.p;
  if (out.rows() != k || out.cols() != p || coef.size() != k) {
    throw std::invalid_argument("influence_rows: shapes do not match");
  }
  if (k == 0) return true;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  const Index chunk = std::min(k, S.rows);
  DeviceBuffer idx_d(sizeof(long long) * chunk), coef_d(sizeof(double) * chunk);
  DeviceBuffer work_d(sizeof(double) * p * chunk);
  RowMatrix rows(chunk, p);  // p x chunk column-major on the device = chunk x p row-major
  for (Index c = 0; c < k; c += chunk) {
    const Index count = std::min(chunk, k - c);
    S.gather_to(idx + c, coef.data() + c, count, idx_d.as<long long>(), coef_d.as<double>(),
                work_d.as<double>());
    S.solve_in_place(work_d.as<double>(), count);  // columns coef_j H^{-1} x_j
    check(cudaMemcpyAsync(rows.data(), work_d.ptr, sizeof(double) * p * count,
                          cudaMemcpyDeviceToHost, cs),
          "copy rows");
    check(cudaStreamSynchronize(cs), "influence rows");
    out.middleRows(c, count) = rows.topRows(count);
  }
  return true;
}

/// B = L^{-1} U of a WoodburyBatch, in device memory (see cuda_backend.hpp).
class Panel {
 public:
  int device = 0;
  Index p = 0, columns = 0;
  std::unique_ptr<DeviceBuffer> B;  ///< p x columns, column-major
};

void PanelDeleter::operator()(Panel* panel) const { delete_on_device(panel); }

PanelPtr woodbury_panel(State& S, const std::int64_t* idx, const Vector& scale,
                        const std::vector<Index>& offsets, Vector& grams) {
  if (!S.device_rows || !S.factor) return nullptr;
  if (offsets.empty() || scale.size() != offsets.back()) {
    throw std::invalid_argument("woodbury_panel: offsets and scales do not match");
  }
  const Index p = S.p, K = offsets.back();
  Index gram_total = 0;
  for (size_t q = 0; q + 1 < offsets.size(); ++q) {
    const Index k = offsets[q + 1] - offsets[q];
    gram_total += k * k;
  }
  const DeviceEntry entry(S.device);
  // B, the blocks and the indices must fit in half of the free memory (the rest for the
  // right-hand sides of the solves and for other work); otherwise the CPU takes the sets.
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const double need = sizeof(double) * (static_cast<double>(p) * K + gram_total) + 16.0 * K +
                      2.0 * sizeof(void*) * static_cast<double>(offsets.size());
  if (need > 0.5 * static_cast<double>(free_bytes)) return nullptr;
  if (K > std::numeric_limits<int>::max()) return nullptr;  // cuBLAS takes int sizes
  PanelPtr panel(new Panel);
  panel->device = S.device;
  panel->p = p;
  panel->columns = K;
  std::unique_ptr<DeviceBuffer> idx_d, coef_d, gram_d;
  try {
    panel->B = std::make_unique<DeviceBuffer>(sizeof(double) * p * K);
    idx_d = std::make_unique<DeviceBuffer>(sizeof(long long) * K);
    coef_d = std::make_unique<DeviceBuffer>(sizeof(double) * K);
    gram_d = std::make_unique<DeviceBuffer>(sizeof(double) * gram_total);
  } catch (const std::runtime_error&) {
    // the memory went elsewhere since cudaMemGetInfo (another process): the CPU takes the
    // sets (check() has cleared the error)
    return nullptr;
  }
  grams.setZero(gram_total);
  if (K == 0) return panel;
  cudaStream_t cs = S.hd.compute;
  double* B = panel->B->as<double>();
  S.gather_to(idx, scale.data(), K, idx_d->as<long long>(), coef_d->as<double>(), B);
  const double one = 1.0, zero = 0.0;
  const int pi = as_int(p);
  check(cublasDtrsm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                    CUBLAS_DIAG_NON_UNIT, pi, as_int(K), &one, S.factor->as<double>(), pi, B, pi),
        "trsm L^{-1} U");
  // the whole k x k blocks B_q^T B_q (symmetric, column-major), one batched GEMM per width k
  const size_t m = offsets.size() - 1;
  std::vector<Index> width(m), gram_at(m);
  for (size_t q = 0, g0 = 0; q < m; ++q) {
    width[q] = offsets[q + 1] - offsets[q];
    gram_at[q] = static_cast<Index>(g0);
    g0 += static_cast<size_t>(width[q] * width[q]);
  }
  const auto groups = by_width(width);
  std::unique_ptr<DevicePointers> held;  // [B_q | block q]
  try {
    held = std::make_unique<DevicePointers>(
        groups, cs, [&](size_t q) { return B + static_cast<size_t>(offsets[q]) * p; },
        [&](size_t q) { return gram_d->as<double>() + gram_at[q]; });
  } catch (const std::runtime_error&) {
    return nullptr;  // as above: out of device memory, the CPU takes the sets
  }
  const DevicePointers& pointers = *held;
  size_t at = 0;
  for (const auto& [k, members] : groups) {
    const int ki = as_int(k), count = as_int(static_cast<Index>(members.size()));
    check(cublasDgemmBatched(S.hd.blas, CUBLAS_OP_T, CUBLAS_OP_N, ki, ki, pi, &one,
                             pointers.slice<const double>(0) + at, pi,
                             pointers.slice<const double>(0) + at, pi, &zero,
                             pointers.slice<double>(1) + at, ki, count),
          "batched gemm B^T B");
    at += members.size();
  }
  check(cudaMemcpyAsync(grams.data(), gram_d->ptr, sizeof(double) * gram_total,
                        cudaMemcpyDeviceToHost, cs),
        "copy B^T B");
  check(cudaStreamSynchronize(cs), "Woodbury panel");
  return panel;
}

void woodbury_solve(State& S, const Panel& panel, Matrix& G, const std::vector<Index>& begin,
                    const std::vector<Index>& count,
                    const std::function<void(Vector&)>& correct) {
  const Index p = S.p, q = G.cols();
  if (!S.factor || G.rows() != p || panel.p != p || panel.device != S.device ||
      static_cast<Index>(begin.size()) != q || static_cast<Index>(count.size()) != q) {
    throw std::invalid_argument("woodbury_solve: shapes do not match");
  }
  std::vector<Index> packed(static_cast<size_t>(q) + 1, 0);  // column c's t: [packed[c], ..)
  for (size_t c = 0; c < static_cast<size_t>(q); ++c) {
    if (begin[c] < 0 || count[c] < 0 || begin[c] + count[c] > panel.columns) {
      throw std::invalid_argument("woodbury_solve: columns outside the panel");
    }
    packed[c + 1] = packed[c] + count[c];
  }
  if (q == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  const Index T = packed.back();
  DeviceBuffer G_d(sizeof(double) * p * q), t_d(sizeof(double) * T);
  const double one = 1.0;
  const int pi = as_int(p), qi = as_int(q);
  const double* L = S.factor->as<double>();
  const double* B = panel.B->as<double>();
  double* g = G_d.as<double>();
  double* t = t_d.as<double>();
  check(cudaMemcpyAsync(g, G.data(), sizeof(double) * p * q, cudaMemcpyHostToDevice, cs),
        "upload right-hand sides");
  check(cublasDtrsm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                    CUBLAS_DIAG_NON_UNIT, pi, qi, &one, L, pi, g, pi),
        "trsm L^{-1} G");
  // per column c: B_c, b_c (in g) and t_c, grouped by width for one batched call per width
  const auto groups = by_width(count);
  const DevicePointers pointers(  // [B_c | g_c | t_c]
      groups, cs, [&](size_t c) { return B + static_cast<size_t>(begin[c]) * p; },
      [&](size_t c) { return g + c * p; }, [&](size_t c) { return t + packed[c]; });
  // array y <- op(B_c) array x + beta array y, one batched call per width
  const auto batched_gemv = [&](cublasOperation_t op, size_t x, double beta, size_t y,
                                const char* what) {
    size_t at = 0;
    for (const auto& [k, columns] : groups) {
      check(cublasDgemvBatched(S.hd.blas, op, pi, as_int(k), &one,
                               pointers.slice<const double>(0) + at, pi,
                               pointers.slice<const double>(x) + at, 1, &beta,
                               pointers.slice<double>(y) + at, 1,
                               as_int(static_cast<Index>(columns.size()))),
            what);
      at += columns.size();
    }
  };
  batched_gemv(CUBLAS_OP_T, 1, 0.0, 2, "batched gemv B^T b");  // t_c = B_c^T b_c
  Vector host_t(T);
  if (T > 0) {
    check(cudaMemcpyAsync(host_t.data(), t, sizeof(double) * T, cudaMemcpyDeviceToHost, cs),
          "copy B^T b");
  }
  check(cudaStreamSynchronize(cs), "Woodbury B^T b");
  // t_c <- M_c^{-1} t_c on the host (k x k systems; the device lock is held meanwhile, so other
  // attributions' device work waits for these small solves)
  correct(host_t);
  if (T > 0) {
    check(cudaMemcpyAsync(t, host_t.data(), sizeof(double) * T, cudaMemcpyHostToDevice, cs),
          "upload M^{-1} B^T b");
  }
  batched_gemv(CUBLAS_OP_N, 2, 1.0, 1, "batched gemv B t");  // b_c += B_c t_c
  check(cublasDtrsm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T,
                    CUBLAS_DIAG_NON_UNIT, pi, qi, &one, L, pi, g, pi),
        "trsm L^{-T} G");
  check(cudaMemcpyAsync(G.data(), g, sizeof(double) * p * q, cudaMemcpyDeviceToHost, cs),
        "copy solutions");
  check(cudaStreamSynchronize(cs), "Woodbury solve");
}

void copy_to_host(const DeviceMatrix& X, void* out) {
  const size_t bytes =
      static_cast<size_t>(X.rows) * static_cast<size_t>(X.cols) * (X.f32 ? sizeof(float) : sizeof(double));
  const std::lock_guard<std::recursive_mutex> lock(device_mutex());
  cudaGetLastError();
  cudaPointerAttributes attr;
  check(cudaPointerGetAttributes(&attr, X.data), "reading X's device pointer");
  const bool on_device = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
  const DeviceScope scope(on_device ? attr.device : 0);
  check(cudaDeviceSynchronize(), "waiting for the producer of X");
  check(cudaMemcpy(out, X.data, bytes, cudaMemcpyDeviceToHost), "copy X to host");
}

bool compiled() { return true; }

int eigen_align_bytes() { return EIGEN_DEFAULT_ALIGN_BYTES; }

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

}  // namespace rif::cuda
