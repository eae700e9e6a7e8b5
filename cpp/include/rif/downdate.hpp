#pragma once
/// Solves with H_{-T} = H - sum_{i in T} a_i x_i x_i^T, the Hessian at theta_hat without the set
/// T, from the factor of H already held: Woodbury with a k x k system for small sets, a fresh
/// Cholesky factor of H_{-T} for large ones.

#include "rif/attribution.hpp"

namespace rif {

class DowndatedSolver {
 public:
  /// Prepares the solver for the k samples idx[0..k). singular() tells whether H_{-T} is
  /// (numerically) singular, in which case solve() must not be called. `threads` split the
  /// triangular solve with the k columns (use 1 when several solvers are built in parallel).
  DowndatedSolver(const Attribution& attribution, const std::int64_t* idx, Index k,
                  int threads = 1);

  bool singular() const { return singular_; }
  bool woodbury() const { return woodbury_; }

  /// g <- H_{-T}^{-1} g, the triangular solves split over `threads`.
  void solve(Eigen::Ref<Vector> g, int threads = 1) const;

 private:
  const Matrix& L_;
  Matrix B_;  ///< Woodbury: L^{-1} U (p x k); direct: the factor of H_{-T} (p x p)
  Matrix M_;  ///< Woodbury: the factor of I - B^T B (k x k)
  bool woodbury_ = true;
  bool singular_ = false;
};

}  // namespace rif
