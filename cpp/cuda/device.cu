// The CUDA backend's device runtime (device.cuh) and its public queries: whether a device is
// there, its name, and copying X from device memory to the host.
#include "device.cuh"

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

namespace rif::cuda {
namespace detail {

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

std::recursive_mutex& device_mutex() {
  static std::recursive_mutex m;
  return m;
}

int as_int(Index v) {
  if (v > std::numeric_limits<int>::max()) throw std::runtime_error("dimension too large for cuBLAS");
  return static_cast<int>(v);
}

Handles::Handles() {
  check(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), "stream");
  check(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking), "stream");
  check(cublasCreate(&blas), "cublasCreate");
  check(cublasSetStream(blas, compute), "cublasSetStream");
  check(cusolverDnCreate(&solver), "cusolverDnCreate");
  check(cusolverDnSetStream(solver, compute), "cusolverDnSetStream");
}

Handles& handles_for(int device) {
  static std::vector<Handles*> all;
  if (device < 0) throw std::runtime_error("invalid CUDA device");
  if (static_cast<size_t>(device) >= all.size()) all.resize(static_cast<size_t>(device) + 1, nullptr);
  if (!all[static_cast<size_t>(device)]) all[static_cast<size_t>(device)] = new Handles;
  return *all[static_cast<size_t>(device)];
}

void Staging::reserve(size_t need) {
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

Staging& staging() {
  static Staging* s = new Staging;
  return *s;
}

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

Index env_rows(const char* name, Index fallback) {
  const char* env = std::getenv(name);
  const long long r = env ? std::atoll(env) : 0;
  return r > 0 ? static_cast<Index>(r) : fallback;
}

namespace {

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

}  // namespace

void parallel_memcpy(void* dst, const void* src, size_t bytes) {
  CopyPool::get().copy(dst, src, bytes);
}

DeviceBuffer upload(const Vector& v, cudaStream_t stream) {
  DeviceBuffer buf(sizeof(double) * v.size());
  if (v.size()) {
    check(cudaMemcpyAsync(buf.ptr, v.data(), sizeof(double) * v.size(), cudaMemcpyHostToDevice,
                          stream),
          "upload");
  }
  return buf;
}

}  // namespace detail

using detail::check;

void copy_to_host(const DeviceMatrix& X, void* out) {
  const size_t bytes =
      static_cast<size_t>(X.rows) * static_cast<size_t>(X.cols) * (X.f32 ? sizeof(float) : sizeof(double));
  const std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  cudaGetLastError();
  cudaPointerAttributes attr;
  check(cudaPointerGetAttributes(&attr, X.data), "reading X's device pointer");
  const bool on_device = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
  const detail::DeviceScope scope(on_device ? attr.device : 0);
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
