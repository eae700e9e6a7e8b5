#include "rif/downdate.hpp"

#include "rif/blas.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <optional>

namespace rif {

DowndatedSolver::DowndatedSolver(const Attribution& attribution, const std::int64_t* idx, Index k,
                                 int threads)
    : L_(attribution.factor()) {
  const Index p = attribution.params();
  const Vector root = attribution.curvature().cwiseSqrt();
  Matrix U(p, k);
  attribution.gather(idx, k, U, root.data());
  woodbury_ = k <= attribution.woodbury_limit();
  if (woodbury_) {
    // H_{-T} = L (I - B B^T) L^T with B = L^{-1} U; I - B B^T is invertible iff M = I - B^T B
    // is, and M's Cholesky pivots are the leverages' complements 1 - h for k = 1.
    // Column panels on `threads` threads, one single-threaded BLAS call each (no BLAS worker
    // threads are woken, so nothing spins against the OpenMP passes that follow).
    const Index panel = std::max<Index>(16, (k + threads - 1) / std::max(threads, 1));
    std::optional<BlasSingleThreadScope> serial;
    if (threads > 1) serial.emplace();  // callers that build solvers in parallel hold one
    parallel_chunks(k, panel, threads, [&](int, Index begin, Index count) {
      trsm_lower(L_, U.col(begin).data(), count, 1);
    });
    B_ = std::move(U);
    M_ = Matrix::Identity(k, k);
    M_.selfadjointView<Eigen::Lower>().rankUpdate(B_.transpose(), -1.0);
    singular_ = !try_cholesky_in_place(M_) ||
                (k > 0 && M_.diagonal().minCoeff() <= std::sqrt(singular_tolerance));
  } else {
    B_ = attribution.hessian();
    B_.selfadjointView<Eigen::Lower>().rankUpdate(U, -1.0);
    const Vector diag = B_.diagonal();
    // Same criterion as the Woodbury path: a pivot that lost all but singular_tolerance of its
    // diagonal means H_{-T} is singular to working accuracy.
    singular_ = !try_cholesky_in_place(B_) ||
                (B_.diagonal().cwiseAbs2().array() <=
                 singular_tolerance * diag.cwiseAbs().array()).any();
  }
}

void DowndatedSolver::solve(Eigen::Ref<Vector> g, int threads) const {
  if (!woodbury_) {
    solve_factored(B_, g, threads);
    return;
  }
  // H_{-T}^{-1} g = L^{-T} (b + B M^{-1} B^T b), b = L^{-1} g.
  solve_lower_vector(L_, g, false, threads);
  if (B_.cols() > 0) {
    Vector c = B_.transpose() * g;
    solve_factored(M_, c);
    g.noalias() += B_ * c;
  }
  solve_lower_vector(L_, g, true, threads);
}

}  // namespace rif
