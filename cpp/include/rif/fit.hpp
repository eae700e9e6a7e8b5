#pragma once
/// Damped Newton fitting of a penalised GLM to a tight gradient tolerance.

#include "rif/attribution.hpp"
#include "rif/quasi_newton.hpp"

namespace rif {

struct FitOptions {
  double tol = 1e-10;  ///< stop when ||grad F|| <= tol * max(1, ||grad F(0)||)
  int max_iter = 100;
  int threads = 0;
  /// Whether L-BFGS steps come before the Newton steps (rif/quasi_newton.hpp).
  FitSteps steps = FitSteps::automatic;
};

struct FitResult {
  Vector theta;
  double grad_norm = 0;
  double loss = 0;  ///< F(theta), penalty included
  int iterations = 0;
  bool converged = false;
  /// Stopped before the tolerance because the gradient norm could no longer decrease (it
  /// reached the rounding noise of the gradient, or no step lowered F).
  bool stalled = false;
  /// How many of the passes over X (one per visited point, for z, the loss and the gradient)
  /// also built the Hessian from every row or from a sample of rows.
  int hessians = 0;
  int sampled_hessians = 0;
  /// L-BFGS steps taken before the Newton steps (each one pass over X, or two).
  int quasi_newton_steps = 0;
};

/// The stopping rule of fit and retrain: tol in [machine epsilon, inf) (relative to the
/// gradient's scale, smaller cannot be met in float64), max_iter >= 0; else
/// std::invalid_argument.
void check_stopping(double tol, int max_iter);

/// Minimises F(theta) = sum_i w_i loss(y_i, x_i theta) + l2/2 ||theta||_P^2 from theta0 by Newton
/// steps with a backtracking (Armijo) line search, until the gradient tolerance is met, max_iter
/// is reached, or the gradient norm stops decreasing (`stalled`). Throws not_positive_definite
/// if a Hessian on the way is singular, std::invalid_argument when X's scale overflows.
FitResult fit(const Problem& problem, Vector theta0, const FitOptions& options);

}  // namespace rif
