#pragma once
/// Exact retraining without sets T, warm-started from theta_hat and made cheap by reusing the
/// attribution's factor: every iteration is one pass over X for all sets at once (two matrix
/// products per row block) plus a Woodbury solve with the Hessian at theta_hat downdated by T.
/// Sets whose iteration stalls switch to full Newton steps with fresh Hessians.

#include "rif/attribution.hpp"

#include <vector>

namespace rif {

struct RetrainOptions {
  double tol = 1e-10;  ///< stop when ||grad F_{-T}|| <= tol * max(1, ||grad F_{-T}(0)||)
  int max_iter = 100;  ///< iterations in all (fixed-matrix, refreshed and full Newton) per set
  int threads = 0;
};

struct RetrainResult {
  RowMatrix theta;                ///< m x p refitted parameters, one row per set
  Vector grad_norm;               ///< final ||grad F_{-T}|| per set
  Vector tolerance;               ///< the gradient-norm target per set
  std::vector<int> iterations;    ///< iterations taken per set (both phases)
  std::vector<char> converged;    ///< whether grad_norm <= tolerance
  std::vector<char> refreshed;    ///< whether the set needed fresh Hessians (full Newton)
  /// whether removing the set leaves an unpenalised parameter without data (no unique refit:
  /// not attempted, not converged; see structurally_singular)
  std::vector<char> singular;
};

RetrainResult retrain(const Attribution& attribution, const SetList& sets,
                      const RetrainOptions& options);

}  // namespace rif
