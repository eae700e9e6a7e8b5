#pragma once
/// A read-only view of the n x d design matrix X (row-major float64 or float32), with an optional
/// virtual column of ones appended last for the intercept. X itself is never copied: passes over
/// X load one row block at a time, converting to float64 only when they must.

#include "rif/types.hpp"

#include <Eigen/Core>

namespace rif {

class Design {
 public:
  Design(const double* data, Index n, Index d, bool intercept)
      : f64_(data), n_(n), d_(d), intercept_(intercept) {}
  Design(const float* data, Index n, Index d, bool intercept)
      : f32_(data), n_(n), d_(d), intercept_(intercept) {}

  Index rows() const { return n_; }
  Index features() const { return d_; }
  /// Number of parameters p = d + intercept.
  Index params() const { return d_ + (intercept_ ? 1 : 0); }
  bool intercept() const { return intercept_; }
  bool is_float32() const { return f32_ != nullptr; }
  /// False for a shape-only view (X in device memory, no host copy attached yet).
  bool has_data() const { return f64_ != nullptr || f32_ != nullptr; }
  /// The raw row-major data (null for the other dtype).
  const double* data_f64() const { return f64_; }
  const float* data_f32() const { return f32_; }

  /// Rows [begin, begin + count) as a p x count column-major matrix (column j = sample begin + j).
  /// Without intercept on float64 data it maps X itself; otherwise it fills and maps `buffer`.
  Eigen::Map<const Matrix> block(Index begin, Index count, Matrix& buffer) const;

  /// The d feature rows of block() without the intercept row: a map into X for float64 data,
  /// a converted copy in `buffer` for float32.
  Eigen::Map<const Matrix> feature_block(Index begin, Index count, Matrix& buffer) const;

  /// Like block(), but always a writable copy in `buffer`, column j scaled by scale[j] when given,
  /// copied on up to `threads` threads.
  void load(Index begin, Index count, Matrix& buffer, const double* scale = nullptr,
            int threads = 1) const;

  /// Gathers samples idx[0..k) into the columns of `out` (p x k), column j scaled by scale[idx[j]].
  void gather(const std::int64_t* idx, Index k, Eigen::Ref<Matrix> out,
              const double* scale = nullptr) const;

  /// out += sum_j coef[idx[j]] * x_{idx[j]}, with coef indexed by sample.
  void accumulate(const std::int64_t* idx, Index k, const double* coef,
                  Eigen::Ref<Vector> out) const;

  /// z = X theta (theta has p entries, the intercept last).
  void multiply(const Vector& theta, Vector& z, int threads) const;

  /// g = X^T c (p entries), summed over row blocks on up to `threads` threads.
  void multiply_transposed(const Vector& c, Vector& g, int threads) const;

  /// Column of the first NaN or infinity in row i of X, or -1 when the row is finite.
  Index first_nonfinite_in_row(Index i) const;

 private:
  template <class T>
  void load_impl(const T* data, Index begin, Index count, double* out, const double* scale,
                 int threads) const;

  const double* f64_ = nullptr;
  const float* f32_ = nullptr;
  Index n_ = 0;
  Index d_ = 0;
  bool intercept_ = false;
};

}  // namespace rif
