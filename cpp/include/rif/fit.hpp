#pragma once
/// Damped Newton fitting of a penalised GLM to a tight gradient tolerance.

#include "rif/attribution.hpp"

namespace rif {

struct FitOptions {
  double tol = 1e-10;  ///< stop when ||grad F|| <= tol * max(1, ||grad F(0)||)
  int max_iter = 100;
  int threads = 0;
};

struct FitResult {
  Vector theta;
  double grad_norm = 0;
  double loss = 0;  ///< F(theta), penalty included
  int iterations = 0;
  bool converged = false;
};

/// Minimises F(theta) = sum_i w_i loss(y_i, x_i theta) + l2/2 ||theta||_P^2 from theta0 by Newton
/// steps with a backtracking (Armijo) line search. Throws not_positive_definite if a Hessian on
/// the way is singular.
FitResult fit(const Problem& problem, Vector theta0, const FitOptions& options);

}  // namespace rif
