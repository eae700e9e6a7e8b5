// The device-side state of one attribution (state.cuh): its row-block passes over X.
#include "state.cuh"

#include "kernels.cuh"

#include <stdexcept>

namespace rif::cuda {

using namespace detail;  // the backend's own runtime and kernels

DeviceBuffer& State::scratch(size_t bytes) {
  if (!scratch_ || scratch_bytes_ < bytes) {
    scratch_.reset();
    scratch_ = std::make_unique<DeviceBuffer>(bytes);
    scratch_bytes_ = bytes;
  }
  return *scratch_;
}

void State::for_blocks(const void* host, char* keep, const BlockWork& work) {
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

const char* State::host_rows(const Design& host) const {
  if (device_rows) return nullptr;
  return f32 ? reinterpret_cast<const char*>(host.data_f32())
             : reinterpret_cast<const char*>(host.data_f64());
}

void State::gather_to(const std::int64_t* idx, const double* coef, Index count,
                      long long* idx_d, double* coef_d, double* out) {
  check(cudaMemcpyAsync(idx_d, idx, sizeof(long long) * count, cudaMemcpyHostToDevice,
                        hd.compute),
        "upload indices");
  check(cudaMemcpyAsync(coef_d, coef, sizeof(double) * count, cudaMemcpyHostToDevice,
                        hd.compute),
        "upload coefficients");
  gather_columns(device_rows, f32, idx_d, coef_d, out, count, d, p, intercept, hd.compute);
}

void State::solve_in_place(double* cols, Index m) {
  if (!info_) info_ = std::make_unique<DeviceBuffer>(sizeof(int));
  check(cusolverDnDpotrs(hd.solver, CUBLAS_FILL_MODE_LOWER, as_int(p), as_int(m),
                         factor->as<double>(), as_int(p), cols, as_int(p), info_->as<int>()),
        "potrs");
}

void State::load(const char* raw, const double* a, double* out, Index count) {
  load_columns(raw, f32, a, out, count, d, p, intercept, hd.compute);
}

}  // namespace rif::cuda
