#include "rif/softmax.hpp"

#include "rif/blas.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace rif {

namespace {

/// Index of the pair (k, l), k <= l < m, in the order (0,0), (0,1), ..., (0,m-1), (1,1), ...
Index pair_index(Index k, Index l, Index m) { return k * m - k * (k - 1) / 2 + (l - k); }

/// One thread's running sums of a pass.
struct PassPartial {
  Matrix G;
  std::vector<Matrix> blocks;  ///< the m (m + 1) / 2 weighted rank updates (lower triangles)
  double loss = 0;
  Matrix buffer, scaled;
  Matrix weights;  ///< count x pairs: square roots of each pair's weights
  Matrix R;        ///< count x K: w_i (p_i - e_{y_i})
};

/// Probabilities, loss and residuals of rows [begin, begin + count) from their logits Z
/// (count x K); with `weights` also the square roots of every pair's rank-update weights.
void softmax_rows(const Matrix& Z, const Matrix& Q, const std::int64_t* y, const Vector& w,
                  Index begin, RowMatrix& P, PassPartial& part, bool weights) {
  const Index count = Z.rows(), K = Z.cols(), m = Q.cols();
  part.R.resize(count, K);
  if (weights) part.weights.resize(count, softmax_pairs(m));
  Vector p(K), qp(m);
  Matrix At(m, m);
  for (Index j = 0; j < count; ++j) {
    const Index i = begin + j;
    const double wi = w.size() ? w[i] : 1.0;
    const Index yi = static_cast<Index>(y[i]);
    const double top = Z.row(j).maxCoeff();
    double sum = 0;
    for (Index c = 0; c < K; ++c) {
      p[c] = std::exp(Z(j, c) - top);
      sum += p[c];
    }
    p /= sum;
    if (wi != 0) part.loss += wi * (top + std::log(sum) - Z(j, yi));
    P.row(i) = p.transpose();
    part.R.row(j) = wi * p.transpose();
    part.R(j, yi) -= wi;
    if (!weights) continue;
    // A~ = Q^T diag(p) Q - (Q^T p)(Q^T p)^T
    qp.noalias() = Q.transpose() * p;
    At.noalias() = Q.transpose() * p.asDiagonal() * Q;
    At.noalias() -= qp * qp.transpose();
    for (Index k = 0; k < m; ++k) {
      for (Index l = k; l < m; ++l) {
        const double a = k == l ? At(k, k) : At(k, k) + At(l, l) + 2 * At(k, l);
        part.weights(j, pair_index(k, l, m)) = std::sqrt(std::max(wi * a, 0.0));
      }
    }
  }
}

/// Symmetric p x p matrix from the lower triangle of S.
Matrix symmetric(const Matrix& S) {
  Matrix out = S.selfadjointView<Eigen::Lower>();
  return out;
}

}  // namespace

void softmax_pass(const Design& X, const std::int64_t* y, const Vector& w, const Matrix& Q,
                  double l2, const Matrix& Phi, SoftmaxPass& out, int threads,
                  bool with_hessian) {
  const Index n = X.rows(), p = X.params(), K = Q.rows(), m = Q.cols();
  const Index pairs = with_hessian ? softmax_pairs(m) : 0;
  const KernelPlan plan = kernel_plan(p, threads, n, pairs);  // a p x p block per pair
  // Sums per slot, added in slot order: the same bits on every call (parallel_sums).
  const bool in_order = X.sums_in_order();
  const Index nt = sum_slots(n, plan.block, plan.outer, in_order);
  out.P.resize(n, K);
  std::vector<PassPartial> parts(static_cast<size_t>(nt));
  for (PassPartial& part : parts) {
    part.G.setZero(p, m);
    part.blocks.resize(static_cast<size_t>(pairs));
  }
  const Matrix Qt = Q.transpose();
  std::optional<BlasSingleThreadScope> serial;
  if (plan.outer > 1) serial.emplace();
  parallel_sums(n, plan.block, plan.outer, in_order, [&](Index t, Index begin, Index count) {
    PassPartial& part = parts[static_cast<size_t>(t)];
    X.load(begin, count, part.buffer, nullptr, plan.inner);
    const Matrix Z = (part.buffer.transpose() * Phi) * Qt;  // count x K logits
    softmax_rows(Z, Q, y, w, begin, out.P, part, with_hessian);
    part.G.noalias() += part.buffer * (part.R * Q);
    for (Index pair = 0; pair < pairs; ++pair) {
      part.scaled = part.buffer;
      part.scaled.array().rowwise() *= part.weights.col(pair).transpose().array();
      Matrix& target = part.blocks[static_cast<size_t>(pair)];
      if (target.rows() != p) target.setZero(p, p);
      syrk_lower(target, part.scaled.data(), count, plan.inner);
    }
  });
  const Index d = X.features();
  out.G = parts[0].G;
  out.loss = parts[0].loss;
  for (size_t t = 1; t < parts.size(); ++t) {
    out.G += parts[t].G;
    out.loss += parts[t].loss;
  }
  out.G.topRows(d) += l2 * Phi.topRows(d);
  out.loss += 0.5 * l2 * Phi.topRows(d).squaredNorm();
  if (!with_hessian) return;
  std::vector<Matrix> blocks(static_cast<size_t>(pairs));
  for (Index pair = 0; pair < pairs; ++pair) {
    Matrix& sum = blocks[static_cast<size_t>(pair)];
    sum.setZero(p, p);
    for (PassPartial& part : parts) {
      Matrix& b = part.blocks[static_cast<size_t>(pair)];
      if (b.rows() == p) sum.triangularView<Eigen::Lower>() += b;
      b.resize(0, 0);
    }
    sum = symmetric(sum);
  }
  out.H.setZero(m * p, m * p);
  for (Index k = 0; k < m; ++k) {
    const Matrix& Hkk = blocks[static_cast<size_t>(pair_index(k, k, m))];
    out.H.block(k * p, k * p, p, p).triangularView<Eigen::Lower>() = Hkk;
    out.H.block(k * p, k * p, p, p).diagonal().head(d).array() += l2;
    for (Index l = k + 1; l < m; ++l) {
      const Matrix& Hll = blocks[static_cast<size_t>(pair_index(l, l, m))];
      const Matrix& Gkl = blocks[static_cast<size_t>(pair_index(k, l, m))];
      out.H.block(l * p, k * p, p, p) = 0.5 * (Gkl - Hkk - Hll);
    }
  }
  out.H.triangularView<Eigen::StrictlyUpper>().setZero();
}

void softmax_quadforms(const Design& X, const StridedView& Hinv, Index m, RowMatrix& S,
                       int threads) {
  const Index n = X.rows(), p = X.params(), pairs = softmax_pairs(m);
  // T_kl lower triangular with T^T T = C_kl (C_kk = H^{-1}_kk; for k < l the positive definite
  // H^{-1}_kk + H^{-1}_ll + H^{-1}_kl + H^{-1}_lk): then x^T C x = ||T x||^2, one triangular
  // product. With J the reversal, J C J = L L^T gives T = J L^T J.
  std::vector<Matrix> T(static_cast<size_t>(pairs));
  const int nt_all = resolve_threads(threads);
  for (Index k = 0; k < m; ++k) {
    for (Index l = k; l < m; ++l) {
      Matrix C = symmetric(Hinv.block(k * p, k * p, p, p));
      if (l != k) {
        C += symmetric(Hinv.block(l * p, l * p, p, p));
        const Matrix off = Hinv.block(l * p, k * p, p, p);  // (H^{-1})_lk
        C += off;
        C += off.transpose();
      }
      Matrix R = C.reverse();
      cholesky_in_place(R, "a block of the inverse Hessian", nt_all);
      T[static_cast<size_t>(pair_index(k, l, m))] = R.transpose().reverse();
    }
  }
  S.resize(n, pairs);
  const KernelPlan plan = kernel_plan(p, threads, n, 0);  // no p x p sums
  const int nt = chunk_threads(n, plan.block, plan.outer);
  std::vector<Matrix> buffers(static_cast<size_t>(nt)), scratch(static_cast<size_t>(nt));
  std::optional<BlasSingleThreadScope> serial;
  if (plan.outer > 1) serial.emplace();
  parallel_chunks(n, plan.block, plan.outer, [&](int t, Index begin, Index count) {
    Matrix& buf = buffers[static_cast<size_t>(t)];
    Matrix& B = scratch[static_cast<size_t>(t)];
    X.load(begin, count, buf, nullptr, plan.inner);
    for (Index pair = 0; pair < pairs; ++pair) {
      B = buf;
      trmm_lower(T[static_cast<size_t>(pair)], B.data(), count, plan.inner);
      S.block(begin, pair, count, 1) = B.colwise().squaredNorm().transpose();
    }
  });
  for (Index k = 0; k < m; ++k) {
    for (Index l = k + 1; l < m; ++l) {
      S.col(pair_index(k, l, m)) =
          0.5 * (S.col(pair_index(k, l, m)) - S.col(pair_index(k, k, m)) -
                 S.col(pair_index(l, l, m)));
    }
  }
}

}  // namespace rif
