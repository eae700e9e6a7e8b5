// Attribution::scores and the projections it shares with the leverage pass: every sample's
// <V_j, IF_i> or <V_j, RIF_i> = r_i x_i^T H^{-1} V_j (times 1 / (1 - h_i)).
#include "rif/attribution.hpp"

#include "rif/blas.hpp"
#include "rif/cuda_backend.hpp"
#include "rif/parallel.hpp"
#include "rif/sparse.hpp"

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace rif {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Divides each column of M by its largest magnitude where that is finite and positive, and
/// records the divisor in `scale` (1 elsewhere).
void normalise_columns(Matrix& M, Vector& scale) {
  scale = Vector::Ones(M.cols());
  for (Index j = 0; j < M.cols(); ++j) {
    const double s = M.col(j).cwiseAbs().maxCoeff();
    if (s > 0 && std::isfinite(s)) {
      M.col(j) /= s;
      scale[j] = s;
    }
  }
}

}  // namespace

void Attribution::check_directions(const Matrix& V) const {
  if (V.rows() != params()) {
    std::ostringstream msg;
    msg << "direction must have " << params() << " rows (one per parameter), got " << V.rows();
    throw std::invalid_argument(msg.str());
  }
}

Projection Attribution::project(const Matrix& V, int threads) const {
  // Per column, the scale taken out of V and of H^{-1} V before the pass and put back after
  // the residual: a sample with r_i = 0 then scores exactly 0 even where x_i . H^{-1} v alone
  // would overflow (a tiny l2 with no data); only a score that itself overflows is inf.
  Projection pr;
  pr.V = V;
  pr.U = V;  // <V, T^{-1} d~> = <T^{-T} V, d~>: the directions in the kernel's parameters
  for (Index j = 0; j < pr.U.cols(); ++j) dual_to_kernel(problem_.X, pr.U.col(j));
  normalise_columns(pr.U, pr.scale);
  host_solve(pr.U, threads);
  normalise_columns(pr.U, pr.scale_u);
  return pr;
}

void Attribution::finish_scores(Eigen::Ref<RowMatrix> rows, Index begin, bool rescaled,
                                const Vector& scale, const Vector& scale_u) const {
  const Index m = rows.cols();
  for (Index j = 0; j < rows.rows(); ++j) {
    const Index i = begin + j;
    if (rescaled && std::isinf(rescale_[i])) {
      // Singular removal: infinite, with the sign of the (unrescaled) numerator.
      for (Index c = 0; c < m; ++c) rows(j, c) = std::copysign(kInf, r_[i] * rows(j, c));
    } else {
      const double coef = r_[i] * (rescaled ? rescale_[i] : 1.0);
      for (Index c = 0; c < m; ++c) {
        const double v = rows(j, c) * coef;
        rows(j, c) = v == 0 ? 0.0 : (v * scale[c]) * scale_u[c];
      }
    }
  }
}

bool Attribution::kept_scores(const Matrix& V, bool rescaled, Eigen::Ref<RowMatrix> out,
                              int threads) const {
  if (!kept_) return false;
  const Projection& kept = *kept_;
  const Index m = V.cols();
  std::vector<Index> column(static_cast<size_t>(m));
  for (Index j = 0; j < m; ++j) {
    Index found = -1;
    for (Index c = 0; c < kept.V.cols() && found < 0; ++c) {
      if ((V.col(j).array() == kept.V.col(c).array()).all()) {
        found = c;
      }
    }
    if (found < 0) return false;
    column[static_cast<size_t>(j)] = found;
  }
  Vector scale(m), scale_u(m);
  for (Index j = 0; j < m; ++j) {
    scale[j] = kept.scale[column[static_cast<size_t>(j)]];
    scale_u[j] = kept.scale_u[column[static_cast<size_t>(j)]];
  }
  const Index n = problem_.X.rows();
  parallel_chunks(n, block_rows(params()), threads, [&](int, Index begin, Index count) {
    auto rows = out.block(begin, 0, count, m);
    for (Index j = 0; j < m; ++j) {
      rows.col(j) = kept.P.block(begin, column[static_cast<size_t>(j)], count, 1);
    }
    finish_scores(rows, begin, rescaled, scale, scale_u);
  });
  return true;
}

void Attribution::scores(const Matrix& V, bool rescaled, Eigen::Ref<RowMatrix> out,
                         int threads) const {
  check_directions(V);
  const Index p = params(), n = problem_.X.rows(), m = V.cols();
  threads = resolve_threads(threads);
  if (kept_scores(V, rescaled, out, threads)) return;
  Projection pr;
  if (gpu_) {
    cuda::project(*gpu_, problem_.X, V, out);  // out = X H^{-1} V on the device
    pr.scale = pr.scale_u = Vector::Ones(m);
  } else {
    pr = project(V, threads);
  }
  const Index block = block_rows(p);
  std::vector<Matrix> buffers(static_cast<size_t>(chunk_threads(n, block, threads)));
  parallel_chunks(n, block, threads, [&](int t, Index begin, Index count) {
    auto rows = out.block(begin, 0, count, m);
    if (!gpu_ && problem_.X.sparse()) {
      sparse_rows_times(problem_.X, begin, count, pr.U, rows);
    } else if (!gpu_) {
      auto Xt = problem_.X.block(begin, count, buffers[static_cast<size_t>(t)]);
      rows.noalias() = Xt.transpose() * pr.U;
    }
    finish_scores(rows, begin, rescaled, pr.scale, pr.scale_u);
  });
}

}  // namespace rif
