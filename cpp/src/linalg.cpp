#include "rif/linalg.hpp"

#include "rif/blas.hpp"
#include "rif/interrupt.hpp"
#include "rif/parallel.hpp"
#include "rif/sparse.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <vector>

namespace rif {

namespace {

/// One thread's float32 scratch for the mixed-precision passes.
struct FloatScratch {
  FloatMatrix panel;  ///< a block's p x count columns, rounded to float32
  FloatMatrix sum;    ///< its p x p product
};

/// target (lower triangle) += P P^T for the float32 block P = scratch.panel: SSYRK into a fresh
/// float32 sum, added to target in float64, so that float32 rounding never accumulates across
/// blocks.
void add_float_product(Matrix& target, FloatScratch& scratch, int threads) {
  const Index p = scratch.panel.rows();
  scratch.sum.resize(p, p);  // SSYRK overwrites its lower triangle; the rest is never read
  syrk_lower(scratch.sum, scratch.panel.data(), scratch.panel.cols(), threads, true);
  target.triangularView<Eigen::Lower>() += scratch.sum.cast<double>();
}

/// The p x p sums a Hessian pass keeps per slot (kernel_plan's `sums`): one, and with float32
/// products also a float32 one, half as large (rounded up).
Index hessian_sums(const Design& X) { return X.mixed() ? 2 : 1; }

}  // namespace

void hessian(const Design& X, const Vector& a, double l2, Matrix& H, int threads) {
  if (X.sparse()) return sparse_hessian(X, a, l2, H, threads);
  const Index p = X.params(), n = X.rows();
  const KernelPlan plan = kernel_plan(p, threads, n, hessian_sums(X));
  const Index block = plan.block;
  const int outer = plan.outer, inner = plan.inner;
  const bool in_order = X.sums_in_order();
  const Index nt = sum_slots(n, block, outer, in_order);
  H.setZero(p, p);
  // Slot 0 accumulates straight into H; the others into partial sums added at the end, in
  // slot order (parallel_sums: the same bits on every call).
  std::vector<Matrix> partial(static_cast<size_t>(nt - 1));
  std::vector<Matrix> buffers(static_cast<size_t>(nt));
  std::vector<FloatScratch> scratch(static_cast<size_t>(nt));
  const Vector root = a.cwiseSqrt();
  std::optional<BlasSingleThreadScope> serial;
  if (outer > 1) serial.emplace();
  parallel_sums(n, block, outer, in_order, [&](Index t, Index begin, Index count) {
    Matrix& target = t == 0 ? H : partial[static_cast<size_t>(t - 1)];
    if (target.rows() != p) target.setZero(p, p);
    if (X.mixed()) {
      FloatScratch& f = scratch[static_cast<size_t>(t)];
      X.load(begin, count, f.panel, root.data() + begin, inner);
      return add_float_product(target, f, inner);
    }
    Matrix& buf = buffers[static_cast<size_t>(t)];
    X.load(begin, count, buf, root.data() + begin, inner);
    syrk_lower(target, buf.data(), count, inner);
  });
  for (const Matrix& part : partial) {
    if (part.rows() == p) H.triangularView<Eigen::Lower>() += part;
  }
  const Index penalised = X.features();
  H.diagonal().head(penalised).array() += l2;
  H.triangularView<Eigen::StrictlyUpper>().setZero();
}

namespace {

/// hessian_at() without the Hessian, for X in memory: z, (r, a) and g = X^T r. Two
/// matrix-vector products per block, memory-bound: every thread reads its own blocks, each
/// small enough (about 256 KiB) to stay in cache from the first product to the second. Each
/// thread owns a fixed range of rows and the ranges' sums are added in order, so that g does
/// not depend on which thread ran first (fit's L-BFGS steps would amplify such differences).
void gradient_pass(const Design& X, Family family, const Vector& y, const Vector& w,
                   const Vector& theta, Vector& z, Vector& r, Vector& a, Vector& g, int threads) {
  const Index p = X.params(), n = X.rows();
  const Index block = cache_block_rows(p);
  const Index ranges = range_count(n, block, threads);
  z.resize(n);
  r.resize(n);
  a.resize(n);
  std::vector<Vector> sums(static_cast<size_t>(ranges), Vector::Zero(p));
  std::vector<Matrix> buffers(static_cast<size_t>(ranges));
  parallel_ranges(n, block, threads, [&](Index range, Index begin, Index count) {
    Matrix& buf = buffers[static_cast<size_t>(range)];
    X.load(begin, count, buf);
    z.segment(begin, count).noalias() = buf.transpose() * theta;
    derivatives_range(family, z, y, w, r, a, begin, count);
    sums[static_cast<size_t>(range)].noalias() += buf * r.segment(begin, count);
  });
  g = sums[0];
  for (size_t t = 1; t < sums.size(); ++t) g += sums[t];
}

}  // namespace

void hessian_at(const Design& X, Family family, const Vector& y, const Vector& w, double l2,
                const Vector& theta, Vector& z, Vector& r, Vector& a, Matrix& H, int threads,
                Vector* g, bool with_hessian, Index stride) {
  if (X.sparse()) {
    return sparse_hessian_at(X, family, y, w, l2, theta, z, r, a, H, threads, g, with_hessian);
  }
  if (!with_hessian && !X.source() && g) {
    return gradient_pass(X, family, y, w, theta, z, r, a, *g, threads);
  }
  const Index p = X.params(), n = X.rows();
  const KernelPlan plan = kernel_plan(p, threads, n, with_hessian ? hessian_sums(X) : 0);
  const bool in_order = X.sums_in_order();
  const Index nt = sum_slots(n, plan.block, plan.outer, in_order);
  z.resize(n);
  r.resize(n);
  a.resize(n);
  if (with_hessian) H.setZero(p, p);
  std::vector<Matrix> partial(with_hessian ? static_cast<size_t>(nt - 1) : 0);
  std::vector<Matrix> buffers(static_cast<size_t>(nt));
  std::vector<FloatScratch> scratch(with_hessian ? static_cast<size_t>(nt) : 0);
  std::vector<Matrix> samples(with_hessian && stride > 1 ? static_cast<size_t>(nt) : 0);
  std::vector<Vector> gradients(g ? static_cast<size_t>(nt) : 0, Vector::Zero(p));
  std::optional<BlasSingleThreadScope> serial;
  if (plan.outer > 1) serial.emplace();
  parallel_sums(n, plan.block, plan.outer, in_order, [&](Index t, Index begin, Index count) {
    Matrix& buf = buffers[static_cast<size_t>(t)];
    X.load(begin, count, buf, nullptr, plan.inner);
    z.segment(begin, count).noalias() = buf.transpose() * theta;
    derivatives_range(family, z, y, w, r, a, begin, count);
    if (g) gradients[static_cast<size_t>(t)].noalias() += buf * r.segment(begin, count);
    if (!with_hessian) return;
    Matrix& target = t == 0 ? H : partial[static_cast<size_t>(t - 1)];
    if (target.rows() != p) target.setZero(p, p);
    // The rows the Hessian sums, scaled by sqrt(a_i) (times sqrt(stride) for a subsample):
    // every row of the block, or the block's rows i with i % stride == 0.
    Matrix& rows = stride > 1 ? samples[static_cast<size_t>(t)] : buf;
    if (stride > 1) {
      const Index first = (stride - begin % stride) % stride;
      const Index m = count > first ? (count - first + stride - 1) / stride : 0;
      if (m == 0) return;
      rows.resize(p, m);
      for (Index q = 0; q < m; ++q) {
        const Index j = first + q * stride;
        rows.col(q) = buf.col(j) * std::sqrt(static_cast<double>(stride) * a[begin + j]);
      }
    } else {
      for (Index j = 0; j < count; ++j) buf.col(j) *= std::sqrt(a[begin + j]);
    }
    if (!X.mixed()) return syrk_lower(target, rows.data(), rows.cols(), plan.inner);
    FloatScratch& f = scratch[static_cast<size_t>(t)];
    f.panel = rows.cast<float>();
    add_float_product(target, f, plan.inner);
  });
  if (with_hessian) {
    for (const Matrix& part : partial) {
      if (part.rows() == p) H.triangularView<Eigen::Lower>() += part;
    }
    H.diagonal().head(X.features()).array() += l2;
    H.triangularView<Eigen::StrictlyUpper>().setZero();
  }
  if (g) {
    *g = gradients[0];
    for (size_t t = 1; t < gradients.size(); ++t) *g += gradients[t];
  }
}

Vector design_centre(const Design& X, const Vector& w, int threads) {
  if (!X.source()) return column_means(X, w, threads);
  const Index count = std::min(X.rows(), block_rows(X.params()));
  Matrix buffer;
  const auto rows = X.feature_block(0, count, buffer);  // as stored, d x count
  const bool weighted = w.size() == X.rows() && w.head(count).sum() > 0;
  if (!weighted) return rows.rowwise().mean();
  return rows * w.head(count) / w.head(count).sum();
}

bool try_cholesky_in_place(Matrix& A, Index* failed_column, double* pivot) {
  const Index n = A.rows();
  const Vector floors = pivot_floors(A.diagonal());
  const Index bs = 96;
  for (Index k = 0; k < n; k += bs) {
    const Index b = std::min(bs, n - k), rs = n - k - b;
    auto A11 = A.block(k, k, b, b);
    for (Index j = 0; j < b; ++j) {
      const double x = A11(j, j) - A11.row(j).head(j).squaredNorm();
      if (!(x > floors[k + j])) {
        if (failed_column) *failed_column = k + j;
        if (pivot) *pivot = x;
        return false;
      }
      const double ljj = std::sqrt(x);
      A11(j, j) = ljj;
      const Index below = b - j - 1;
      if (below > 0) {
        if (j > 0) {
          A11.col(j).tail(below).noalias() -=
              A11.block(j + 1, 0, below, j) * A11.row(j).head(j).transpose();
        }
        A11.col(j).tail(below) /= ljj;
      }
    }
    check_interrupt();
    if (rs > 0) {
      auto A21 = A.block(k + b, k, rs, b);
      A11.triangularView<Eigen::Lower>().transpose().solveInPlace<Eigen::OnTheRight>(A21);
      A.block(k + b, k + b, rs, rs).selfadjointView<Eigen::Lower>().rankUpdate(A21, -1.0);
    }
  }
  A.triangularView<Eigen::StrictlyUpper>().setZero();
  return true;
}

Vector pivot_floors(const Vector& diagonal) {
  const Index n = diagonal.size();
  constexpr double eps = std::numeric_limits<double>::epsilon();
  constexpr double smallest = std::numeric_limits<double>::min();  // subnormal: no inverse
  return (static_cast<double>(n) * eps * diagonal.cwiseAbs().array()).max(smallest).matrix();
}

void check_factor_diagonal(const Vector& diagonal, Index column, double pivot,
                           const Vector& floors, const std::string& what_hint,
                           const Advice& advice) {
  if (column < 0 && diagonal.size() > 0) {
    // The first pivot not above its floor; NaN (a factor of a NaN matrix) counts as failing.
    const Vector pivots = diagonal.cwiseAbs2();
    for (Index k = 0; k < pivots.size(); ++k) {
      if (!(pivots[k] > floors[k])) {
        column = k;
        pivot = pivots[k];
        break;
      }
    }
  }
  if (column < 0) return;
  const std::string text = advice ? advice(column) : std::string();
  std::ostringstream msg;
  msg << what_hint << " is not positive definite: the pivot of column " << column
      << " is " << pivot << " (floor " << floors[column] << "). "
      << (text.empty() ? "Add a ridge penalty l2 > 0, or remove constant, duplicate or "
                         "collinear features."
                       : text);
  throw not_positive_definite(msg.str(), column, pivot);
}

Advice hessian_advice(Index d, bool intercept, double l2) {
  return [=](Index column) -> std::string {
    if (intercept && column == d) {
      return "The intercept is unpenalised: it needs samples with weight and curvature, and X's "
             "columns at a scale float64 resolves (standardise X).";
    }
    if (l2 > 0) {
      std::ostringstream msg;
      msg << "l2 = " << l2 << " is too small for X's scale: raise l2, standardise X's columns, "
          << "or drop constant, duplicate or collinear features.";
      return msg.str();
    }
    return "Add a ridge penalty l2 > 0, or remove constant, duplicate or collinear features "
           "of X.";
  };
}

void check_hessian_finite(const Design& X, const Matrix& H) {
  if (H.allFinite()) return;
  Index row = 0, col = 0;
  double largest = 0;
  const Index block = block_rows(X.params());
  Matrix buffer;
  for (Index begin = 0; begin < X.rows(); begin += block) {
    const Index count = std::min(block, X.rows() - begin);
    const auto rows = X.feature_block(begin, count, buffer);  // as stored
    for (Index j = 0; j < count; ++j) {
      for (Index k = 0; k < X.features(); ++k) {
        const double v = std::abs(rows(k, j));
        if (v > largest) {
          largest = v;
          row = begin + j;
          col = k;
        }
      }
    }
  }
  std::ostringstream msg;
  msg << "the Hessian X^T diag(a) X overflows float64: X holds values as large as " << largest
      << " (row " << row << ", column " << col << "); rescale X (e.g. standardise its columns)";
  throw std::invalid_argument(msg.str());
}

void cholesky_in_place(Matrix& A, const std::string& what_hint, int threads,
                       const Advice& advice) {
  Index column = -1;
  double pivot = 0;
  const Vector floors = pivot_floors(A.diagonal());
  if (blas_is_openblas()) {
    column = potrf_lower(A, &pivot, threads);
  } else if (!try_cholesky_in_place(A, &column, &pivot)) {
    column = std::max<Index>(column, 0);
  }
  check_factor_diagonal(A.diagonal(), column, pivot, floors, what_hint, advice);
}

void leverage(const Design& X, const Vector& a, const Matrix& L, Vector& h, int threads,
              const Vector* r, Vector* g, const Matrix* U, RowMatrix* P) {
  if (U && X.sparse()) throw std::logic_error("leverage: projections come from dense rows");
  if (sparse_leverage_pays(X)) return sparse_leverage(X, a, L, h, threads, r, g);
  if (X.mixed() && g) {
    throw std::logic_error("leverage: the mixed pass reads float32 rows; take g = X^T r from "
                           "the Hessian pass");
  }
  if (U) P->resize(X.rows(), U->cols());
  const Index n = X.rows(), p = X.params();
  const KernelPlan plan = kernel_plan(p, threads, n, 0);  // no p x p sums
  const Index block = plan.block;
  const int outer = plan.outer, inner = plan.inner;
  const bool in_order = X.sums_in_order();
  const Index nt = sum_slots(n, block, outer, in_order);
  std::vector<Matrix> buffers(static_cast<size_t>(nt));
  std::vector<Vector> partial(g ? static_cast<size_t>(nt) : 0, Vector::Zero(p));
  const Vector root = a.cwiseSqrt();
  h.resize(n);
  // With OpenBLAS and n well above p, L^{-1} once (p^3/3) turns the pass into triangular
  // products, which run near the matrix-product rate (measured: 142 against 113 GFLOP/s for
  // the solve on 2 cores); for n below about 3p the inverse costs more than it saves. Eigen's
  // triangular product is no faster than its solve.
  // Up to p = 6144 the inverse takes under a second here: it is one call that Ctrl-C cannot
  // stop, so larger factors keep the per-block solves, which check between blocks.
  const bool use_inverse = blas_is_openblas() && n >= 3 * p && p <= 6144;
  Matrix Linv;
  if (use_inverse) {
    Linv = L;
    trtri_lower(Linv, threads);  // (all threads: the pass has not started)
  }
  // Mixed precision: the triangular products in float32 on rounded copies of the factor (or
  // its inverse) and of each block, the squared norms summed in float64.
  FloatMatrix T32;
  if (X.mixed()) {
    T32 = use_inverse ? Linv.cast<float>() : L.cast<float>();
    Linv = Matrix();  // the float32 copy is the one the pass reads
  }
  std::vector<FloatMatrix> panels(X.mixed() ? static_cast<size_t>(nt) : 0);
  std::optional<BlasSingleThreadScope> serial;
  if (outer > 1) serial.emplace();
  parallel_sums(n, block, outer, in_order, [&](Index t, Index begin, Index count) {
    // h_i = ||L^{-1} sqrt(a_i) x_i||^2: a sample without curvature has leverage exactly 0,
    // even where L^{-1} x_i alone would overflow.
    if (X.mixed()) {  // (g from float64 rows is the caller's, on the Hessian pass)
      FloatMatrix& panel = panels[static_cast<size_t>(t)];
      if (U) {  // the projections from float64 rows; then the same panel as load() gives
        Matrix& buf = buffers[static_cast<size_t>(t)];
        X.load(begin, count, buf, nullptr, inner);
        P->middleRows(begin, count).noalias() = buf.transpose() * *U;
        buf.array().rowwise() *= root.segment(begin, count).transpose().array();
        panel = buf.cast<float>();
      } else {
        X.load(begin, count, panel, root.data() + begin, inner);
      }
      if (use_inverse) {
        trmm_lower(T32, panel.data(), count, inner);
      } else {
        trsm_lower(T32, panel.data(), count, inner);
      }
      for (Index j = 0; j < count; ++j) h[begin + j] = panel.col(j).cast<double>().squaredNorm();
      return;
    }
    Matrix& buf = buffers[static_cast<size_t>(t)];
    X.load(begin, count, buf, nullptr, inner);
    if (g) partial[static_cast<size_t>(t)].noalias() += buf * r->segment(begin, count);
    if (U) P->middleRows(begin, count).noalias() = buf.transpose() * *U;
    buf.array().rowwise() *= root.segment(begin, count).transpose().array();
    if (use_inverse) {
      trmm_lower(Linv, buf.data(), count, inner);
    } else {
      trsm_lower(L, buf.data(), count, inner);
    }
    h.segment(begin, count) = buf.colwise().squaredNorm().transpose();
  });
  if (g) {
    *g = partial[0];
    for (size_t t = 1; t < partial.size(); ++t) *g += partial[t];
  }
}

namespace {

constexpr Index kVectorPanel = 128;  // solve_lower_vector's columns per diagonal triangle

/// Whether solve_lower_vector splits its solve over the threads (else it solves serially).
bool splits_vector(Index p, int threads) { return threads > 1 && p >= 4 * kVectorPanel; }

}  // namespace

void solve_lower_vector(const Matrix& L, Eigen::Ref<Vector> g, bool transpose, int threads) {
  const Index p = L.rows();
  constexpr Index kPanel = kVectorPanel;
  if (!splits_vector(p, threads)) {
    if (transpose) {
      L.transpose().triangularView<Eigen::Upper>().solveInPlace(g);
    } else {
      L.triangularView<Eigen::Lower>().solveInPlace(g);
    }
    return;
  }
  const Index panels = (p + kPanel - 1) / kPanel;
  if (!transpose) {
    // Forward: solve a diagonal triangle, then g[below] -= L[below, panel] x, rows split.
    for (Index b = 0; b < panels; ++b) {
      const Index c = b * kPanel, w = std::min(kPanel, p - c), rest = p - c - w;
      L.block(c, c, w, w).triangularView<Eigen::Lower>().solveInPlace(g.segment(c, w));
      if (rest == 0) break;
      const Index rows = (rest + threads - 1) / threads;
      parallel_chunks(rest, rows, threads, [&](int, Index begin, Index count) {
        g.segment(c + w + begin, count).noalias() -=
            L.block(c + w + begin, c, count, w) * g.segment(c, w);
      });
    }
    return;
  }
  // Backward with L^T: g[panel] -= L[below, panel]^T x[below] (whole columns, split over the
  // threads), then the transposed diagonal triangle.
  for (Index b = panels - 1; b >= 0; --b) {
    const Index c = b * kPanel, w = std::min(kPanel, p - c), rest = p - c - w;
    if (rest > 0) {
      const Index cols = (w + threads - 1) / threads;
      parallel_chunks(w, cols, threads, [&](int, Index begin, Index count) {
        g.segment(c + begin, count).noalias() -=
            L.block(c + w, c + begin, rest, count).transpose() * g.segment(c + w, rest);
      });
    }
    L.block(c, c, w, w).transpose().triangularView<Eigen::Upper>().solveInPlace(g.segment(c, w));
  }
}

void solve_lower_columns(const Matrix& L, Matrix& B, bool transpose, int threads) {
  const Index k = B.cols();
  if (k == 0) return;
  if (k < threads) {  // too few columns to share out: each one on all the threads
    for (Index c = 0; c < k; ++c) {
      Eigen::Ref<Vector> b = B.col(c);
      solve_lower_vector(L, b, transpose, threads);
    }
    return;
  }
  // Always single-threaded BLAS calls, split over OpenMP threads: BLAS worker threads woken
  // here would spin against the OpenMP passes over X around these solves (2 cores).
  threads = std::max(1, threads);
  const Index panel = (k + threads - 1) / threads;
  const BlasSingleThreadScope serial;
  parallel_chunks(k, panel, threads, [&](int, Index begin, Index count) {
    trsm_lower(L, B.col(begin).data(), count, 1, transpose);
  });
}

void solve_factored(const Matrix& L, Eigen::Ref<Matrix> v, int threads) {
  // (One column goes to solve_lower_vector only where it splits it over the threads. Where it
  // would solve serially anyway, a vector's solve rounds differently from a panel's: one path
  // for every thread count there, so that num_threads=None, whose count follows the
  // machine's load, does not change the answer.)
  if (v.cols() == 1 && splits_vector(L.rows(), threads)) {
    Eigen::Ref<Vector> g = v.col(0);
    solve_lower_vector(L, g, false, threads);
    solve_lower_vector(L, g, true, threads);
    return;
  }
  constexpr Index kColumns = 256;  // per call, so that Ctrl-C is seen between panels
  for (Index c = 0; c < v.cols(); c += kColumns) {
    if (c > 0) check_interrupt();
    auto panel = v.middleCols(c, std::min(kColumns, v.cols() - c));
    L.triangularView<Eigen::Lower>().solveInPlace(panel);
    L.transpose().triangularView<Eigen::Upper>().solveInPlace(panel);
  }
}

Matrix inverse_from_factor(const Matrix& L, int threads) {
  // LAPACK's potri: the triangular inverse, then its product with its transpose (lauum), in
  // place. Measured at p = 1800 on 2 cores: 60 ms, against 96 ms for the inverse and a syrk of
  // its transpose (whose rank-p update costs p^3, not p^3 / 3).
  Matrix inverse = L;
  potri_lower(inverse, threads);
  return inverse;
}

}  // namespace rif
