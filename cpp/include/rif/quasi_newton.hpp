#pragma once
/// Limited-memory BFGS steps for fit() where a Hessian costs many gradient passes (dense X,
/// p in the hundreds or more, n too few for a sampled Hessian). Each step reads X once: the
/// visit of theta + d gives z, F and g there. When that point fails the Wolfe conditions, the
/// exact minimiser along d is found without reading X again (z is linear along d, so F and its
/// first two derivatives along d cost O(n) each), and X is read once more there. fit() takes
/// over with Newton steps when the phase stops, so the tolerance it meets does not change.

#include "rif/attribution.hpp"

#include <deque>
#include <functional>
#include <string>

namespace rif {

/// F(theta) from z = X theta: the summed weighted loss plus l2/2 ||theta||_P^2.
double penalised_objective(const Problem& problem, const Vector& theta, const Vector& z);

/// The memory of L-BFGS: the last kMemory pairs s = theta_{k+1} - theta_k,
/// t = g_{k+1} - g_k with positive curvature s^T t.
class QuasiNewtonMemory {
 public:
  static constexpr size_t kMemory = 10;

  /// Keeps the pair when its curvature is positive and above rounding; returns whether it did.
  bool push(Vector s, Vector t);
  /// -H_k g by the two-loop recursion, H_0 = gamma D^{-1} for the positive diagonal D (the
  /// Hessian's at the start: the columns' scales differ, an intercept's most) and
  /// gamma = s^T t / t^T D^{-1} t of the newest pair; -D^{-1} g without pairs.
  Vector direction(const Vector& g, const Vector& diagonal) const;
  void clear() { pairs_.clear(); }

 private:
  struct Pair {
    Vector s, t;
    double rho;  ///< 1 / s^T t
  };
  std::deque<Pair> pairs_;
};

struct QuasiNewtonOptions {
  double until = 0;  ///< stop once the gradient norm is at or below this
  int budget = 0;    ///< stop before a step could need more passes than this
  int threads = 1;
};

struct QuasiNewtonResult {
  int steps = 0;   ///< points moved to
  int passes = 0;  ///< visits (passes over X)
};

/// Visits theta: fills z = X theta, g = grad F(theta) and F (one pass over X, no Hessian).
using GradientVisit = std::function<void()>;

/// L-BFGS from (theta, z, g, F), which `visit` keeps up to date for the theta it holds, until
/// the gradient norm (in the user's coordinates) is at most options.until, the pass budget is
/// spent, or no step lowers F beyond rounding. On return (theta, z, g, F) is the best point
/// visited.
QuasiNewtonResult quasi_newton(const Problem& problem, Vector& theta, Vector& z, Vector& g,
                               double& F, const GradientVisit& visit,
                               const QuasiNewtonOptions& options);

/// Which steps fit() takes: `automatic` starts with L-BFGS where a Hessian costs many gradient
/// passes, `newton` never does, `quasi_newton` always does (then with a budget of
/// kForcedBudget passes).
enum class FitSteps { automatic, newton, quasi_newton };

/// Parses "auto", "newton" or "lbfgs"; throws std::invalid_argument otherwise.
FitSteps parse_fit_steps(const std::string& name);

/// The pass budget of fit()'s L-BFGS phase, 0 for none. Automatic: the cost of one Hessian in
/// gradient passes, from the flop count and the ratio of the two rates measured on this
/// project's machines, when that is at least 8 passes: not for the squared loss (its Hessian is
/// exact everywhere: one Newton step), sparse X (cheap Hessians), X read from a source (passes
/// cost I/O, a Hessian little more), small p, or n large enough for fit's sampled Hessians.
int quasi_newton_budget(const Problem& problem, FitSteps steps);

}  // namespace rif
