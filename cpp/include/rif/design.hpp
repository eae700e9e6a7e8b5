#pragma once
/// A read-only view of the n x d design matrix X (row-major float64 or float32), with an optional
/// virtual column of ones appended last for the intercept. X is one array in memory or a
/// RowSource (shards, a reader of a file format). X itself is never copied: passes over X load
/// one row block at a time, converting to float64 only when they must.
///
/// With an intercept the view can be centred (set_centre): every block, gather, sum and product
/// then reads x - c for a fixed vector c, the intercept's column staying 1. That is the same
/// model in the parameters theta~ = T theta (theta~_b = theta_b + c . theta_beta), and its
/// Hessian T^{-T} H T^{-1} is computed from centred rows without the cancellation that makes
/// H of uncentred data (a column near 1950, say) numerically singular in the intercept. The
/// functions at the end of this header map between the two parametrisations.

#include "rif/source.hpp"
#include "rif/types.hpp"

#include <Eigen/Core>

#include <memory>

namespace rif {

class Design {
 public:
  Design(const double* data, Index n, Index d, bool intercept)
      : f64_(data), n_(n), d_(d), intercept_(intercept) {}
  Design(const float* data, Index n, Index d, bool intercept)
      : f32_(data), n_(n), d_(d), intercept_(intercept) {}
  /// X read from `source` (rows() x cols(), its dtype), which the view shares.
  Design(std::shared_ptr<const RowSource> source, bool intercept)
      : source_(std::move(source)), n_(source_->rows()), d_(source_->cols()),
        intercept_(intercept) {}

  Index rows() const { return n_; }
  Index features() const { return d_; }
  /// Number of parameters p = d + intercept.
  Index params() const { return d_ + (intercept_ ? 1 : 0); }
  bool intercept() const { return intercept_; }
  bool is_float32() const { return f32_ != nullptr || (source_ && source_->is_float32()); }
  /// False for a shape-only view (X in device memory, no host copy attached yet).
  bool has_data() const { return f64_ != nullptr || f32_ != nullptr || source_ != nullptr; }
  /// The source X is read from, or null when X is one array (data_f64() / data_f32()).
  const RowSource* source() const { return source_.get(); }
  /// Whether a pass's sums take X's blocks in order as threads come free (a source: its
  /// reader serves them so) rather than a fixed range per thread, whose sums then come out
  /// the same on every call (parallel_sums).
  bool sums_in_order() const { return source_ != nullptr; }
  /// X's compressed sparse rows when the passes are to read its nonzeros only (rif/sparse.hpp),
  /// else nullptr.
  const CsrSource* sparse() const {
    const CsrSource* s = source_ ? source_->csr() : nullptr;
    return s && s->sparse_passes() ? s : nullptr;
  }
  /// The raw row-major data (null for the other dtype, and for a source).
  const double* data_f64() const { return f64_; }
  const float* data_f32() const { return f32_; }
  /// X's entry (i, k) as stored, never centred.
  double raw(Index i, Index k) const {
    if (f64_) return f64_[i * d_ + k];
    if (f32_) return static_cast<double>(f32_[i * d_ + k]);
    return raw_from_source(i, k);
  }
  /// Row i of X as stored (d values, never centred) into out.
  void raw_row(Index i, double* out) const;

  /// Whether the Hessian and leverage passes over this view compute their p x p products in
  /// float32 ("mixed" precision: float32 panels and per-block sums, float64 totals across
  /// blocks, float64 factor; z, residuals, gradients and everything else stay float64).
  bool mixed() const { return mixed_; }
  void set_mixed(bool mixed) { mixed_ = mixed; }

  /// Centres the view on `centre` (d entries, kept alive by the caller; nullptr: uncentred).
  /// Only with an intercept, which absorbs the shift.
  void set_centre(const double* centre) { centre_ = intercept_ ? centre : nullptr; }
  /// The centre, or nullptr when the view is not centred.
  const double* centre() const { return centre_; }

  /// Rows [begin, begin + count) as a p x count column-major matrix (column j = sample begin + j).
  /// Without intercept on float64 data it maps X itself; otherwise it fills and maps `buffer`.
  Eigen::Map<const Matrix> block(Index begin, Index count, Matrix& buffer) const;

  /// The d feature rows of block() without the intercept row, NOT centred (callers correct for
  /// centre() themselves): a map into X for float64 data, a converted copy for float32.
  Eigen::Map<const Matrix> feature_block(Index begin, Index count, Matrix& buffer) const;

  /// Like block(), but always a writable copy in `buffer`, column j scaled by scale[j] when given,
  /// copied on up to `threads` threads.
  void load(Index begin, Index count, Matrix& buffer, const double* scale = nullptr,
            int threads = 1) const;
  /// The same rounded to float32 (each entry centred and scaled in float64 first), for the
  /// mixed-precision passes.
  void load(Index begin, Index count, FloatMatrix& buffer, const double* scale = nullptr,
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
  /// Rows [begin, begin + count) as stored: a pointer into X (or into a shard) when they lie
  /// there contiguously (*in_place = true), else a copy in this thread's scratch buffer, valid
  /// until the thread's next fetch. A pass's block (`pass`) is counted and the next blocks'
  /// reading requested ahead.
  const void* fetch(Index begin, Index count, bool pass, bool* in_place = nullptr) const;
  /// Rows idx[0..k) as stored, in this thread's gather buffer (valid until its next take).
  const void* take(const std::int64_t* idx, Index k) const;
  double raw_from_source(Index i, Index k) const;
  template <class T, class Out>
  void load_impl(const T* rows, Index count, Out* out, const double* scale, int threads) const;
  template <class Out>
  void load_into(Index begin, Index count, Out* out, const double* scale, int threads) const;
  template <class T>
  void gather_impl(const T* rows, Index k, double* out, Index stride, const double* scale,
                   const std::int64_t* idx) const;

  std::shared_ptr<const RowSource> source_;
  const double* f64_ = nullptr;
  const float* f32_ = nullptr;
  Index n_ = 0;
  Index d_ = 0;
  bool intercept_ = false;
  const double* centre_ = nullptr;
  bool mixed_ = false;
};

// Maps between the user's parameters theta and the kernel's theta~ = T theta of a centred
// design (all no-ops when X.centre() is null). Points and differences of points (removal
// effects) map alike; gradients and metric directions (duals) by T^{-T} and T^T.

/// theta~ -> theta: theta_b = theta~_b - c . theta~_beta.
void point_to_user(const Design& X, Eigen::Ref<Vector> v);
/// theta -> theta~: theta~_b = theta_b + c . theta_beta.
void point_to_kernel(const Design& X, Eigen::Ref<Vector> v);
/// A dual vector g~ -> g = T^T g~: g_beta = g~_beta + c g~_b.
void dual_to_user(const Design& X, Eigen::Ref<Vector> g);
/// g -> g~ = T^{-T} g: g~_beta = g_beta - c g_b.
void dual_to_kernel(const Design& X, Eigen::Ref<Vector> g);
/// ||T^T g~||: the norm of a kernel gradient in the user's parameters.
double user_norm(const Design& X, const Vector& g);
/// point_to_user() for every finite row of out (rows of inf, singular removals, stay so).
void rows_to_user(const Design& X, Eigen::Ref<RowMatrix> out);
/// The column means of X weighted by w (all ones when empty, or when every weight is 0).
Vector column_means(const Design& X, const Vector& w, int threads);

}  // namespace rif
