#include "rif/dual.hpp"

#include "rif/blas.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

namespace rif {

bool DualFactor::pays(Index n, Index p, double l2, bool sparse) {
  if (!(l2 > 0) || n < 1) return false;
  const double nd = static_cast<double>(n), pd = static_cast<double>(p);
  // Operations: H's syrk, the leverages' triangular solves and the Cholesky factor (with
  // sparse X the passes cost next to nothing, the leverages H^{-1} or the solves), against
  // G's syrk (n^2 p), its factor (n^3 / 3) and its inverse (potri, 2 n^3 / 3). Measured on a
  // 2-core AMD EPYC (benchmarks/test_dual.py, p = 2048), the dual's operations run at 1 / 1.2
  // to 1 / 1.3 of the primal's rate where the two meet (n from p / 2 to p; at n = p / 4 and
  // below at 1 / 2 to 1 / 4, where the dual is 5x to 8x faster anyway): the dual is 2.9x
  // faster at n = p / 2, 1.5x at n = 0.75 p, and even at n = p.
  const double primal = sparse ? pd * pd * pd / 3 + std::min(2 * pd * pd * pd / 3, nd * pd * pd)
                               : 2 * nd * pd * pd + pd * pd * pd / 3;
  const double dual = 1.2 * (nd * nd * pd + nd * nd * nd);
  return dual < primal;
}

DualFactor::DualFactor(const Design& X, const Vector& a, double l2, int threads)
    : d_(X.features()), intercept_(X.intercept()), l2_(l2) {
  const Index n = X.rows(), d = d_, p = X.params();
  root_ = a.cwiseSqrt();
  const Vector& root = root_;
  Yt_.resize(n, d);
  const Index block = block_rows(p);
  std::vector<Matrix> buffers(static_cast<size_t>(chunk_threads(n, block, threads)));
  parallel_chunks(n, block, threads, [&](int t, Index begin, Index count) {
    Matrix& buf = buffers[static_cast<size_t>(t)];
    X.load(begin, count, buf, root.data() + begin);  // p x count: sqrt(a_i) x~_i
    Yt_.middleRows(begin, count) = buf.topRows(d).transpose();
  });
  Matrix K = Matrix::Zero(n, n);
  if (d > 0) syrk_lower(K, Yt_.data(), d, threads);  // K = Y Y^T (lower)
  check_hessian_finite(X, K);  // (the primal's check: huge values of X are named as such)
  Lg_ = K;
  Lg_.diagonal().array() += l2;
  cholesky_in_place(Lg_, "The dual matrix G = Y Y^T + l2 I (the Hessian through its n x n "
                         "Woodbury form)", threads);
  const Matrix Ginv = inverse_from_factor(Lg_, threads);  // lower
  // a_i x^T B^{-1} x = [K G^{-1}]_ii = 1 - l2 [G^{-1}]_ii: the sum of products keeps its
  // relative accuracy where it is small, the difference where it is near 1 (the gap 1 - h
  // is then l2 [G^{-1}]_ii itself).
  // (Both symmetric with their lower triangles held: one sweep down the columns adds each
  // product below the diagonal to the sums of its row and of its column.)
  Vector direct(n);
  for (Index j = 0; j < n; ++j) direct[j] = K(j, j) * Ginv(j, j);
  for (Index j = 0; j < n; ++j) {
    const double* k = K.col(j).data();
    const double* g = Ginv.col(j).data();
    double column = 0;
    for (Index i = j + 1; i < n; ++i) {
      const double v = k[i] * g[i];
      direct[i] += v;
      column += v;
    }
    direct[j] += column;
  }
  h_.resize(n);
  if (!intercept_) {
    for (Index i = 0; i < n; ++i) {
      h_[i] = direct[i] < 0.5 ? std::max(direct[i], 0.0) : 1.0 - l2 * Ginv(i, i);
    }
  }
  if (intercept_) {
    // With the intercept H = [B b; b^T sum a] (B = Y^T Y + l2 I, b = Y^T sqrt(a)). Its Schur
    // complement S = sum a - b^T B^{-1} b and the gaps t_i - sqrt(a_i) of the leverages
    // (t = Y B^{-1} b) are differences that cancel where Y B^{-1} Y^T = K G^{-1} nears I (l2
    // small against K; the squared loss at n = 40, p = 121 and cond 2.6e7 lost RIF to 1.8e-4
    // relative). Through q = G^{-1} sqrt(a) they are products: I - K G^{-1} = l2 G^{-1}, so
    // S = l2 sqrt(a) . q and t - sqrt(a) = -l2 q; and B^{-1} b = Y^T q (B^{-1} Y^T = Y^T G^{-1}).
    Matrix q = root;
    solve_factored(Lg_, q, threads);
    Binv_b_ = Yt_.transpose() * q.col(0);
    schur_ = l2 * root.dot(q.col(0));
    const double floor = static_cast<double>(p) * std::numeric_limits<double>::epsilon() *
                         std::max(a.sum(), std::numeric_limits<double>::min());
    if (!(schur_ > floor)) {
      std::ostringstream msg;  // (as the primal factor says it)
      msg << "The Hessian H = X^T diag(a) X + l2 P at theta is not positive definite in the "
          << "intercept: its Schur complement " << schur_ << " is not above the rounding floor "
          << floor << ". The intercept is unpenalised: it needs samples with weight and "
          << "curvature, and X's columns at a scale float64 resolves (standardise X).";
      throw not_positive_definite(msg.str(), d, schur_);
    }
    // h = a x^T B^{-1} x + (l2 q_i)^2 / S, sums of positive terms, keep their relative
    // accuracy where h is small; where it is near 1 the gap 1 - h = l2 [G^{-1} - G^{-1} r r^T
    // G^{-1} / (r^T G^{-1} r)]_ii (r = sqrt(a)) is again a difference, which cancels where r
    // lies near K's null space (few samples with curvature, l2 tiny: a review found h > 1 and
    // RIF wrong by 100% there). So the gaps of samples with h >= 1/2 come from the projection
    // instead: l2 [P (P^T G P)^{-1} P^T]_ii, P an orthonormal basis of r's complement.
    for (Index i = 0; i < n; ++i) {
      h_[i] = std::max(direct[i], 0.0) + (l2 * q(i, 0)) * (l2 * q(i, 0)) / schur_;
    }
    std::vector<Index> near;
    for (Index i = 0; i < n; ++i) {
      if (h_[i] >= 0.5) near.push_back(i);
    }
    if (!near.empty()) {
      const Vector gap = projected_gaps(K, l2, root, near, threads);
      for (size_t c = 0; c < near.size(); ++c) h_[near[c]] = 1.0 - gap[static_cast<Index>(c)];
    }
  }
  // (A sample without curvature has leverage exactly 0: its row of Y, of K and its sqrt(a_i)
  // are 0, so both terms above are.)
}

Vector DualFactor::projected_gaps(const Matrix& K, double l2, const Vector& r,
                                  const std::vector<Index>& samples, int threads) {
  // A Householder reflector Q = I - tau v v^T with Q r = alpha e_0: P = Q[:, 1:], so
  // P^T G P = (Q G Q)[1:, 1:] and P^T e_i = Q[1:, i].
  const Index n = K.rows(), m = static_cast<Index>(samples.size());
  const double norm = r.norm();
  const double alpha = r[0] > 0 ? -norm : norm;
  Vector v = r;
  v[0] -= alpha;
  const double tau = 2.0 / v.squaredNorm();
  Matrix G = K.selfadjointView<Eigen::Lower>();
  G.diagonal().array() += l2;
  const Vector u = G * v;  // Q G Q = G - tau (v w^T + w v^T), w = u - (tau v.u / 2) v
  const Vector w = u - (0.5 * tau * v.dot(u)) * v;
  Matrix C = G.bottomRightCorner(n - 1, n - 1);
  C.noalias() -= tau * (v.tail(n - 1) * w.tail(n - 1).transpose() +
                        w.tail(n - 1) * v.tail(n - 1).transpose());
  cholesky_in_place(C, "The dual matrix G projected off sqrt(a) (the intercept's leverage gaps)",
                    threads);
  Matrix B(n - 1, m);  // columns Q[1:, i] = e_i[1:] - tau v[1:] v_i
  for (Index c = 0; c < m; ++c) {
    const Index i = samples[static_cast<size_t>(c)];
    B.col(c) = -tau * v[i] * v.tail(n - 1);
    if (i > 0) B(i - 1, c) += 1.0;
  }
  solve_lower_columns(C, B, false, threads);
  return l2 * B.colwise().squaredNorm().transpose();
}

void DualFactor::solve_features(Eigen::Ref<Matrix> u, int threads) const {
  // B^{-1} v = (v - Y^T G^{-1} Y v) / l2: the difference cancels where v lies along B's large
  // eigenvalues, and there the rounding of G's solve, carried by Y^T / l2, reaches eps cond(B)^2
  // at worst (measured: 1.2e-9 relative at cond 1.1e6, where H's own factor gave 2.8e-11).
  // One step of refinement restores it: x0 = (v - Y^T T) / l2 leaves the residual
  // v - B x0 = Y^T (T - Y x0) exactly, and B^{-1} Y^T = Y^T G^{-1} solves it without the
  // cancellation; what remains is the difference's own rounding, eps cond(B), as H's factor.
  Matrix T = Yt_ * u;  // n x m
  solve_factored(Lg_, T, threads);
  u.noalias() -= Yt_.transpose() * T;
  u /= l2_;
  T.noalias() -= Yt_ * u;  // the residual's coefficients s = T - Y x0
  solve_factored(Lg_, T, threads);
  u.noalias() += Yt_.transpose() * T;
}

void DualFactor::solve(Eigen::Ref<Matrix> v, int threads) const {
  const Index d = d_;
  if (!intercept_) {
    solve_features(v, threads);
    return;
  }
  Matrix u = v.topRows(d);
  solve_features(u, threads);
  through_intercept(v, u);
}

void DualFactor::through_intercept(Eigen::Ref<Matrix> v, const Matrix& u) const {
  // H^{-1} (v_f, v_b) = (u - beta B^{-1} b, beta), u = B^{-1} v_f, beta = (v_b - b.u) / S.
  const Index d = d_;
  for (Index j = 0; j < v.cols(); ++j) {
    // b . u = (B Binv_b) . u = Binv_b . (B u) = Binv_b . v_f  (B symmetric)
    const double beta = (v(d, j) - Binv_b_.dot(v.col(j).head(d))) / schur_;
    v.col(j).head(d) = u.col(j) - beta * Binv_b_;
    v(d, j) = beta;
  }
}

void DualFactor::solve_samples(const std::int64_t* idx, Index k, const double* coef,
                               Eigen::Ref<Matrix> v, int threads) const {
  // Column j's features are c_i x_i = (c_i / sqrt(a_i)) Y^T e_i (i = idx[j]), so B^{-1} of them is
  // (c_i / sqrt(a_i)) Y^T G^{-1} e_i. A sample without curvature (or whose factor would
  // overflow) takes the general solve.
  const Index n = Yt_.rows(), d = d_;
  Matrix E = Matrix::Zero(n, k);
  std::vector<Index> general;
  for (Index j = 0; j < k; ++j) {
    const Index i = static_cast<Index>(idx[j]);
    const double s = coef[i] / root_[i];
    if (root_[i] > 0 && std::isfinite(s)) {
      E(i, j) = s;
    } else {
      general.push_back(j);
    }
  }
  solve_factored(Lg_, E, threads);
  Matrix u = Yt_.transpose() * E;  // d x k
  if (!general.empty()) {
    const Index m = static_cast<Index>(general.size());
    Matrix g(d, m);
    for (Index c = 0; c < m; ++c) g.col(c) = v.col(general[static_cast<size_t>(c)]).head(d);
    solve_features(g, threads);
    for (Index c = 0; c < m; ++c) u.col(general[static_cast<size_t>(c)]) = g.col(c);
  }
  if (intercept_) {
    through_intercept(v, u);
  } else {
    v = u;
  }
}

}  // namespace rif
