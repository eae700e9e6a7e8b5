#pragma once
/// The dual form of the Hessian for fewer samples than parameters (n < p) with a ridge penalty:
/// H = X~^T A X~ + l2 P is never formed. With Y the n x d matrix of rows sqrt(a_i) x~_i
/// (features only, centred as the design is) and B = Y^T Y + l2 I (the features' block of H),
///   B^{-1} u = (u - Y^T G^{-1} Y u) / l2,   G = Y Y^T + l2 I   (n x n, Woodbury),
/// and the unpenalised intercept enters exactly through its block
/// H = [B b; b^T s] (b = Y^T sqrt(a), s = sum a_i) and the scalar Schur complement
/// S = s - b^T B^{-1} b. Leverages come from the diagonal of G^{-1}:
///   a_i x_f^T B^{-1} x_f = 1 - l2 [G^{-1}]_ii,  h_i = that + (y_i . B^{-1} b - sqrt(a_i))^2 / S.
/// The difference cancels where u lies along B's large eigenvalues; one step of refinement
/// (solve_features) brings it to the accuracy of H's own factor. Building costs n^2 d + n^3
/// instead of the primal 2 n p^2 + p^3 / 3; a solve costs 4 n d + 2 n^2 per right-hand side
/// instead of p^2, one sample's row n d + n^2 (solve_samples: its features are y_i / sqrt(a_i),
/// and B^{-1} Y^T = Y^T G^{-1} has no difference to refine).

#include "rif/design.hpp"
#include "rif/types.hpp"

#include <cstdint>
#include <vector>

namespace rif {

class DualFactor {
 public:
  /// Factors G for X at curvatures a (l2 > 0). Throws not_positive_definite when G, or the
  /// intercept's Schur complement, is not positive definite.
  DualFactor(const Design& X, const Vector& a, double l2, int threads);

  /// h_i = a_i x~_i^T H^{-1} x~_i for every sample.
  const Vector& leverage() const { return h_; }

  /// v <- H^{-1} v for the columns of v (p x m, the kernel's parameters). Safe to call from
  /// several threads at once.
  void solve(Eigen::Ref<Matrix> v, int threads) const;

  /// v <- H^{-1} v where column j of v is coef[i] x~_i for i = idx[j] (coef per sample, as
  /// influence_rows gathers them): solve's answers at a quarter of its cost where a_i > 0.
  void solve_samples(const std::int64_t* idx, Index k, const double* coef, Eigen::Ref<Matrix> v,
                     int threads) const;

  /// Whether the dual form takes less time than the primal for n samples, p parameters and
  /// X sparse or not (a cost model measured here; it needs l2 > 0).
  static bool pays(Index n, Index p, double l2, bool sparse);

 private:
  /// u <- B^{-1} u (d x m).
  void solve_features(Eigen::Ref<Matrix> u, int threads) const;
  /// 1 - h_i of the given samples with the intercept: l2 [P (P^T G P)^{-1} P^T]_ii, P an
  /// orthonormal basis of the complement of r = sqrt(a) (G = K + l2 I, K's lower triangle).
  static Vector projected_gaps(const Matrix& K, double l2, const Vector& r,
                               const std::vector<Index>& samples, int threads);
  /// v <- H^{-1} v given u = B^{-1} v_f: the intercept's Schur step (intercept only).
  void through_intercept(Eigen::Ref<Matrix> v, const Matrix& u) const;

  Index d_;
  bool intercept_;
  double l2_;
  Matrix Yt_;   ///< n x d, row i = sqrt(a_i) (x_i - c), column-major
  Vector root_;  ///< sqrt(a_i)
  Matrix Lg_;   ///< Cholesky factor of G = Y Y^T + l2 I
  Vector Binv_b_;  ///< B^{-1} b (intercept only)
  double schur_ = 0;  ///< S = s - b^T B^{-1} b (intercept only)
  Vector h_;
};

}  // namespace rif
