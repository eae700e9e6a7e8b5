#include "rif/hessian_plan.hpp"

#include <algorithm>
#include <cmath>

namespace rif {

HessianPlan::HessianPlan(const Problem& problem) {
  const Index n = problem.X.rows(), p = std::max<Index>(problem.X.params(), 1);
  if (problem.X.sparse() || n < 512 * p) return;
  sample_stride_ = n / (256 * p);
  if (problem.w.size()) {  // the sample must hold rows of weight
    Index weighted = 0;
    for (Index i = 0; i < n; i += sample_stride_) weighted += problem.w[i] > 0 ? 1 : 0;
    if (weighted < 128 * p) sample_stride_ = 1;
  }
  stride_ = sample_stride_;
}

void HessianPlan::visited(bool with_hessian) {
  have_hessian_ = with_hessian;
  hessian_stride_ = with_hessian ? stride_ : 1;
  if (with_hessian) factored_ = false;  // H is this point's Hessian now, not a factor
}

void HessianPlan::factored(bool mixed) {
  have_hessian_ = false;
  factored_ = true;
  factor_exact_ = hessian_stride_ == 1;
  factor_mixed_ = mixed;
}

bool HessianPlan::relax_after_failure(Design& X) {
  if (hessian_stride_ > 1) {
    sample_stride_ = stride_ = 1;  // rows too few for this H: every row, from here on
    return true;
  }
  if (X.mixed()) {
    X.set_mixed(false);
    return true;
  }
  return false;
}

bool HessianPlan::plan_step(Design& X, double norm, double previous, double scale,
                            bool full_step) {
  const bool poor = full_step && !chord_ && norm > 0.5 * previous;
  if (poor && !factor_exact_) {  // the sample is too coarse for this problem
    sample_stride_ = 1;
    factored_ = false;
  } else if (poor && factor_mixed_ && previous <= kLocal * scale) {  // so is float32
    X.set_mixed(false);
    have_hessian_ = factored_ = false;
  }
  if (norm <= kSampleUntil * scale) sample_stride_ = 1;
  if (hessian_stride_ > sample_stride_) have_hessian_ = false;  // sampled, now unwanted
  stride_ = sample_stride_;
  // A chord step where the visit left the Hessian out (near the optimum, or where a prediction
  // of convergence was wrong) and the last chord step kept its rate.
  chord_last_ = chord_;
  chord_ = !have_hessian_ && factored_ && factor_exact_ &&
           !(chord_last_ && norm > kChordRate * previous);
  return chord_;
}

bool HessianPlan::next_visit_builds_hessian(double norm, double previous, double scale) {
  // Steps with a sampled Hessian converge about linearly, ||g_{k+1}|| ~ ||g_k||^2 /
  // ||g_{k-1}||: near kSampleUntil (within 4x: the rate varies) the next visit builds an
  // exact Hessian (a visit again would cost a pass).
  if (stride_ > 1 && std::isfinite(previous) &&
      norm * (norm / previous) <= 4 * kSampleUntil * scale) {
    stride_ = 1;
  }
  // Near the optimum the next point's Hessian would differ little from this factor's.
  return !((exact_step() || chord_) && norm <= kLocal * scale);
}

bool HessianPlan::relax_after_failed_search(Design& X) {
  if (!chord_ && factor_exact_ && !factor_mixed_) return false;
  sample_stride_ = stride_ = 1;
  X.set_mixed(false);
  chord_ = false;
  return true;
}

}  // namespace rif
