#pragma once
/// The CUDA backend's device runtime, shared by its .cu files: error checks, device memory,
/// the device lock, per-device handles and streams, pinned staging buffers and the host copy
/// threads. Internal to the backend (cuda_backend.hpp is its interface).

#include "rif/cuda_backend.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <initializer_list>
#include <mutex>
#include <string>

namespace rif::cuda::detail {

/// Throws std::runtime_error naming `what` unless the call succeeded (a CUDA runtime error is
/// first cleared from the runtime's error slot, or the next call would report it again).
void check(cudaError_t e, const char* what);
void check(cublasStatus_t s, const char* what);
void check(cusolverStatus_t s, const char* what);

/// Device memory owned for one scope.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    check(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)), "cudaMalloc");
  }
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
std::recursive_mutex& device_mutex();

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

/// v as a cuBLAS / cuSOLVER dimension; std::runtime_error when it exceeds an int.
int as_int(Index v);

/// cuBLAS / cuSOLVER handles and two streams for one device, created on first use and kept for
/// the life of the process (creating them costs milliseconds; never destroying them avoids
/// teardown-order trouble with the static CUDA runtime at exit). Call under device_mutex().
struct Handles {
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;
  cudaStream_t compute = nullptr, copy = nullptr;
  Handles();
};

/// The handles of `device`, made on first use. Call under device_mutex().
Handles& handles_for(int device);

/// The two pinned staging buffers of the streamed copies, kept and grown for the life of the
/// process (pinning memory costs about as much as copying it). Call under device_mutex().
struct Staging {
  void* slot[2] = {nullptr, nullptr};
  size_t bytes = 0;
  /// Both slots at least `need` bytes (reallocated, contents lost, when smaller).
  void reserve(size_t need);
};

/// The process's staging buffers. Call under device_mutex().
Staging& staging();

/// A kernel choice from the environment variable `name` (the first of `allowed` when unset):
/// which kernel is fastest depends on the GPU (its fp64 tensor cores serve gemm best), so
/// benchmarks/gpu_bench.py times each one.
std::string kernel_choice(const char* name, std::initializer_list<const char*> allowed);

/// The row count in the environment variable `name` (tests use it for many small blocks or
/// chunks), or `fallback` when it is unset or not positive.
Index env_rows(const char* name, Index fallback);

/// memcpy of host memory split over the backend's host copy threads (one thread cannot fill
/// the bus from pageable memory). Call under device_mutex().
void parallel_memcpy(void* dst, const void* src, size_t bytes);

/// v copied into new device memory on `stream`.
DeviceBuffer upload(const Vector& v, cudaStream_t stream);

}  // namespace rif::cuda::detail
