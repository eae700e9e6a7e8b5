#pragma once
/// Which Hessian each Newton step of fit() uses. Only the steps depend on it: the result meets
/// the same gradient tolerance, which fit checks in float64 at every point.
///
/// * Far from the optimum, with n at least 512 p, H is estimated from every stride-th row
///   (about 256 p rows, each counted stride times: hessian_at's `stride`). Newton's step there
///   needs a direction, not H's last digits: the sample's relative error, about
///   sqrt(p / rows) ~ 6%, costs little in the rate, and its products cost 1/stride of a full
///   pass's. Every row once the gradient norm is below kSampleUntil of its scale (or is
///   predicted to be at the next point), and for good when a sampled H does not factor or a
///   full step with one fails to halve the gradient norm. Rows of weight 0 do not count: a
///   sample with fewer than 128 p weighted rows is not taken.
/// * Near the optimum (the step's point below kLocal of the scale, its H exact) the next visit
///   leaves the Hessian out and the step reuses the last exact factor (a chord step: one
///   gradient pass), while each such step cuts the gradient norm at least 1 / kChordRate-fold.
/// * Approximations are dropped in order when they fail: a sampled H that does not factor is
///   built from every row, a float32 one (Design::mixed()) in float64; a float32 H whose full
///   step near the optimum fails to halve the gradient norm turns float32 off; a line search
///   that finds no decrease along an approximate step (sampled, float32 or chord) retries from
///   the same point with the exact float64 Hessian.

#include "rif/attribution.hpp"

namespace rif {

class HessianPlan {
 public:
  static constexpr double kSampleUntil = 1e-3;
  static constexpr double kLocal = 1e-2;
  static constexpr double kChordRate = 0.1;

  explicit HessianPlan(const Problem& problem);

  /// Row stride of the Hessian the next visit builds (1: every row).
  Index stride() const { return stride_; }
  /// A visit of a new point; with_hessian: it built H at stride() (no longer a factor).
  void visited(bool with_hessian);
  /// Whether H holds the current point's Hessian, not yet factored.
  bool have_hessian() const { return have_hessian_; }
  /// H was factored in place; `mixed`: from float32 products.
  void factored(bool mixed);
  /// The current Hessian did not factor (or was not finite): drops the sample, else float32
  /// on X, and returns true (build it again); false when it was exact float64.
  bool relax_after_failure(Design& X);

  /// Before a step from a point of gradient norm `norm` (the previous point's `previous`,
  /// INFINITY at the start): learns from the last step, and returns whether this step reuses
  /// the kept factor (chord) rather than factoring this point's Hessian.
  bool plan_step(Design& X, double norm, double previous, double scale, bool full_step);
  /// Whether the step just planned used this point's exact Hessian.
  bool exact_step() const { return !chord_ && hessian_stride_ == 1; }
  /// Whether the step before it was a chord step.
  bool chord_before() const { return chord_last_; }
  /// Whether the visit of the step's point should build a Hessian (set its stride too).
  bool next_visit_builds_hessian(double norm, double previous, double scale);
  /// The line search found no decrease along the step: true when the step was approximate
  /// (everything exact float64 from here; visit the same point again), false otherwise.
  bool relax_after_failed_search(Design& X);

 private:
  Index sample_stride_ = 1;   ///< the stride while sampling is on
  Index stride_ = 1;          ///< for the next visit's Hessian
  Index hessian_stride_ = 1;  ///< of the Hessian the last visit built
  bool have_hessian_ = false;
  bool factored_ = false;      ///< H holds the factor of an earlier point's Hessian ...
  bool factor_exact_ = false;  ///< ... from every row ...
  bool factor_mixed_ = false;  ///< ... from float32 products
  bool chord_ = false;         ///< the current step reuses the kept factor
  bool chord_last_ = false;    ///< the step before did
};

}  // namespace rif
