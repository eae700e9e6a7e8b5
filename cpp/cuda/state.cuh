#pragma once
/// The device-side state of one attribution (cuda_backend.hpp's State): its handles and
/// streams, X in device memory when it is there, the Cholesky factor, and the row-block
/// passes over X that every entry point makes. Internal to the CUDA backend.

#include "device.cuh"

#include <cstdint>
#include <functional>
#include <memory>

namespace rif::cuda {

/// Device-side state of one attribution (see cuda_backend.hpp).
class State {
 public:
  explicit State(int dev) : device(dev), hd(detail::handles_for(dev)) {}
  int device = 0;
  detail::Handles& hd;
  Index n = 0, d = 0, p = 0;
  bool intercept = false, f32 = false;
  size_t row_bytes = 0;
  Index rows = 1;                    ///< rows per block
  const char* device_rows = nullptr;  ///< X in device memory (the caller's or `owned`), or null
  std::unique_ptr<detail::DeviceBuffer> owned;
  std::unique_ptr<detail::DeviceBuffer> factor;   ///< the Cholesky factor L (p x p, lower), kept
  std::unique_ptr<detail::DeviceBuffer> hessian;  ///< H (p x p, lower), kept for fetch_factor()
  std::unique_ptr<detail::DeviceBuffer> labels, weights;  ///< y and w (null: all ones), for gradients()
  int family = 0;                                         ///< 0 logistic, 1 squared, 2 poisson

  /// A device buffer of at least `bytes` kept between calls (gather / accumulate run per set);
  /// used under device_mutex() only, once per entry point: nothing called while the buffer is in
  /// use may call scratch() again (it may reallocate).
  detail::DeviceBuffer& scratch(size_t bytes);

  /// What for_blocks() calls per row block: raw device rows, the block's first row, its rows.
  using BlockWork = std::function<void(const char* raw, Index begin, Index count)>;

  /// Calls work(raw device rows, begin, count) on the compute stream for each row block. X comes
  /// from device memory when it is there; otherwise from host memory `host` through two pinned
  /// staging buffers, into `keep` (then X is resident from the next pass on) or into two
  /// device buffers that alternate. The host copy of block b + 1 overlaps the transfer and the
  /// compute of block b.
  void for_blocks(const void* host, char* keep, const BlockWork& work);

  /// X's rows in host memory for for_blocks(), or null when X is in device memory.
  const char* host_rows(const Design& host) const;

  /// out (p x count, column-major) = coef[j] x_{idx[j]} from X in device memory, after the count
  /// indices and coefficients are uploaded into idx_d and coef_d; on the compute stream.
  void gather_to(const std::int64_t* idx, const double* coef, Index count, long long* idx_d,
                 double* coef_d, double* out);

  /// cols (p x m, device memory) <- H^{-1} cols with the factor kept here (potrs), on the
  /// compute stream.
  void solve_in_place(double* cols, Index m);

  /// out (p x count, column-major) from raw device rows, columns scaled by sqrt(a) if given.
  void load(const char* raw, const double* a, double* out, Index count);

 private:
  std::unique_ptr<detail::DeviceBuffer> scratch_;
  size_t scratch_bytes_ = 0;
  std::unique_ptr<detail::DeviceBuffer> info_;  ///< potrs's status word (argument errors only)
};

}  // namespace rif::cuda
