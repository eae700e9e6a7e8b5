#include "rif/fit.hpp"

#include "rif/interrupt.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <cmath>
#include <limits>
#include <sstream>

namespace rif {

namespace {

double objective(const Problem& problem, const Vector& theta, const Vector& z) {
  const Index d = problem.X.features();
  return total_loss(problem.family, z, problem.y, problem.w) +
         0.5 * problem.l2 * theta.head(d).squaredNorm();
}

}  // namespace

void check_stopping(double tol, int max_iter) {
  constexpr double eps = std::numeric_limits<double>::epsilon();
  if (!(tol >= eps) || !std::isfinite(tol)) {
    std::ostringstream msg;
    msg << "tol must be a finite number >= " << eps
        << " (relative to the gradient's scale; smaller cannot be met in float64), got " << tol;
    throw std::invalid_argument(msg.str());
  }
  if (max_iter < 0) {
    throw std::invalid_argument("max_iter must be >= 0, got " + std::to_string(max_iter));
  }
}

FitResult fit(const Problem& given, Vector theta0, const FitOptions& options) {
  const int threads = resolve_threads(options.threads);
  validate(given, theta0, threads);
  // With an intercept, iterate on the centred design (Design::set_centre) unless the caller's
  // design is centred already (retraining's fallback, whose theta is then the kernel's).
  Problem problem = given;
  Vector centre;
  const bool centre_here = problem.X.intercept() && !problem.X.centre() && problem.X.has_data();
  if (centre_here) {
    centre = design_centre(problem.X, problem.w, threads);
    if (!centre.allFinite()) centre.setZero();  // X's NaN / inf are named just below
    problem.X.set_centre(centre.data());
    point_to_kernel(problem.X, theta0);
  }
  check_stopping(options.tol, options.max_iter);
  const Index n = problem.X.rows();

  FitResult result;
  Vector theta = std::move(theta0), z, r, a, g, step;
  Matrix H;
  double F = 0;
  // One pass over X per visited point: z, the loss, the gradient and the Hessian together, so
  // that each Newton iteration reads X once (the point of a step that is not taken whole is
  // found from the rejected point's z without reading X again).
  // Where the gradient norm is predicted to meet the tolerance, the visit leaves the Hessian
  // out (the last iteration then costs a gradient, not a Hessian), and makes up for it only if
  // the prediction was wrong.
  //
  // Far from the optimum, with n at least 512 p, the Hessian is estimated from every
  // stride-th row (about 256 p rows; Newton's step there needs a direction, not H's last
  // digits): its relative error, about sqrt(p / rows) ~ 6%, costs little in the rate, and its
  // products cost 1/stride of a full pass's. Steps switch to exact Hessians once the gradient
  // norm is below kSampleUntil of its scale, for good when a sampled Hessian does not factor or
  // a full step with one fails to halve the gradient norm.
  //
  // Near the optimum (below kLocal of the scale) a visit leaves the Hessian out and the step
  // reuses the last exact factor (a chord step: one gradient pass), while each such step cuts
  // the gradient norm at least 1 / kChordRate-fold.
  constexpr double kSampleUntil = 1e-3;
  constexpr double kLocal = 1e-2, kChordRate = 0.1;
  const Index p = problem.X.params();
  Index sample_stride =
      !problem.X.sparse() && n >= 512 * p ? n / (256 * std::max<Index>(p, 1)) : 1;
  if (sample_stride > 1 && problem.w.size()) {  // the sample must hold rows of weight
    Index weighted = 0;
    for (Index i = 0; i < n; i += sample_stride) weighted += problem.w[i] > 0 ? 1 : 0;
    if (weighted < 128 * p) sample_stride = 1;
  }
  Index stride = sample_stride;  // for the next visit's Hessian
  bool have_hessian = false;
  bool factored = false;      // H holds the Cholesky factor of an earlier point's Hessian...
  bool factor_exact = false;  // ... of all rows (no stride)
  Index hessian_stride = 1;   // of the Hessian the last visit built
  const auto visit = [&](bool with_hessian) {
    hessian_at(problem.X, problem.family, problem.y, problem.w, problem.l2, theta, z, r, a, H,
               threads, &g, with_hessian, stride);
    check_linear_predictor(problem.X, z);  // names X's first NaN / inf, if any
    add_penalty_gradient(problem, theta, g);
    F = objective(problem, theta, z);
    have_hessian = with_hessian;
    hessian_stride = with_hessian ? stride : 1;
    if (with_hessian) factored = false;  // H is this point's Hessian now, not a factor
    ++result.visits;
    if (with_hessian) ++(stride > 1 ? result.sampled_hessians : result.hessians);
  };
  visit(true);
  // H <- its Cholesky factor. A sampled Hessian that does not factor (or is not finite) is
  // built again from every row, then a float32 one in float64, before the failure is reported.
  bool factor_mixed = false;  // whether the factor came from float32 products
  const auto factor_at = [&](int iteration) {
    std::ostringstream what;
    what << "The Hessian at Newton iteration " << iteration;
    const Advice advice =
        hessian_advice(problem.X.features(), problem.X.intercept(), problem.l2);
    for (;;) {
      const bool approximate = hessian_stride > 1 || problem.X.mixed();
      try {
        check_hessian_finite(problem.X, H);
        cholesky_in_place(H, what.str(), threads, advice);
        factored = true;
        factor_exact = hessian_stride == 1;
        factor_mixed = problem.X.mixed();
        return;
      } catch (const not_positive_definite&) {
        if (!approximate) throw;
      } catch (const std::invalid_argument&) {  // float32 products can overflow
        if (!approximate) throw;
      }
      if (hessian_stride > 1) {
        sample_stride = stride = 1;  // rows too few for this H: every row, from here on
      } else {
        problem.X.set_mixed(false);
      }
      visit(true);
    }
  };
  bool full_step = false;  // whether the last step was taken whole
  bool chord = false;      // whether the last step reused an earlier point's factor

  // The scale of the problem: the gradient norm at theta = 0 (the visit's when it started there).
  Vector g0;
  if (theta.isZero(0)) {
    g0 = g;
  } else {
    Vector r0, a0;
    derivatives(problem.family, Vector::Zero(n), problem.y, problem.w, r0, a0);
    g0 = gradient(problem, Vector::Zero(problem.X.params()), r0, threads);
  }
  check_gradient_finite(g0, "at theta = 0");
  const double scale = user_norm(problem.X, g0);
  const double gtol = options.tol * std::max(1.0, scale);

  int iter = 0;
  // Near the optimum, Newton steps at least halve the gradient norm until it reaches the
  // rounding noise of the gradient; there it only wanders. Stop when, in that regime, kStall
  // iterations in a row have not halved the best norm: the tolerance cannot be met.
  constexpr int kStall = 3;
  double best = INFINITY;
  int without_progress = 0;
  bool rounding_regime = false;
  double previous_norm = INFINITY;
  for (;; ++iter) {
    check_interrupt();
    check_gradient_finite(g, "during fitting");
    result.grad_norm = user_norm(problem.X, g);
    if (result.grad_norm <= gtol) {
      result.converged = true;
      break;
    }
    if (result.grad_norm <= 0.5 * best) {
      without_progress = 0;
    } else if (rounding_regime && ++without_progress >= kStall) {
      result.stalled = true;
      break;
    }
    best = std::min(best, result.grad_norm);
    if (iter >= options.max_iter) break;
    // Sampled rows and mixed precision (float32 Hessians) change only the steps, not the point
    // the gradient tolerance certifies. A full step with such a Hessian that did not halve the
    // gradient norm says it is too coarse for this problem: sampled, every row from here on;
    // float32 near the optimum (where exact Newton steps do halve it), float64.
    const bool poor = full_step && !chord && result.grad_norm > 0.5 * previous_norm;
    if (poor && !factor_exact) {
      sample_stride = 1;
      factored = false;
    } else if (poor && factor_mixed && previous_norm <= kLocal * scale) {
      problem.X.set_mixed(false);
      have_hessian = factored = false;
    }
    if (result.grad_norm <= kSampleUntil * scale) sample_stride = 1;
    if (hessian_stride > sample_stride) have_hessian = false;  // sampled, now unwanted
    stride = sample_stride;
    // A chord step where the visit left the Hessian out (near the optimum, or where a
    // prediction of convergence was wrong) and the last chord step kept its rate; otherwise
    // the Hessian at this point.
    const bool chord_last = chord;
    chord = !have_hessian && factored && factor_exact &&
            !(chord_last && result.grad_norm > kChordRate * previous_norm);
    if (!chord) {
      if (!have_hessian) visit(true);
      factor_at(iter);
    }
    step = -g;
    solve_factored(H, step, threads);
    const double slope = g.dot(step);
    // Near the optimum the decrease of F drowns in rounding: take the full step there.
    rounding_regime = -slope <= 1e-13 * (1.0 + std::abs(F));
    // Quadratic convergence: ||g_{k+1}|| ~ ||g_k||^3 / ||g_{k-1}||^2.
    const double norm = result.grad_norm;
    const bool exact = !chord && hessian_stride == 1;  // a Newton step with the exact H
    const double predicted = std::isfinite(previous_norm) && exact && !chord_last
                                 ? norm * (norm / previous_norm) * (norm / previous_norm)
                                 : INFINITY;  // no (quadratic) rate seen yet
    // Steps with a sampled Hessian converge about linearly, ||g_{k+1}|| ~ ||g_k||^2 /
    // ||g_{k-1}||: where that is near kSampleUntil (within 4x: the rate varies) the next visit
    // builds an exact Hessian (a visit again would cost a pass).
    if (stride > 1 && std::isfinite(previous_norm) &&
        norm * (norm / previous_norm) <= 4 * kSampleUntil * scale) {
      stride = 1;
    }
    previous_norm = norm;
    const Vector theta_k = theta, z_k = z, g_k = g;
    const double F_k = F;
    theta = theta_k + step;
    const bool local = (exact || chord) && norm <= kLocal * scale;
    visit(!(predicted <= 0.1 * gtol) && !local);
    full_step = rounding_regime || F <= F_k + 1e-4 * slope;
    if (full_step) continue;
    // Backtrack along the step: z is linear in t, z_k + t (z - z_k), so no pass is needed
    // until a length is accepted.
    const Vector u = z - z_k;
    bool accepted = false;
    for (double t = 0.5; t > 1e-12; t *= 0.5) {
      Vector candidate = theta_k + t * step;
      const Vector z_t = z_k + t * u;
      if (objective(problem, candidate, z_t) <= F_k + 1e-4 * t * slope) {
        theta = std::move(candidate);
        visit(true);
        accepted = true;
        break;
      }
    }
    if (!accepted) {  // no decrease possible along this step
      theta = theta_k;
      z = z_k;
      g = g_k;
      F = F_k;
      if (chord || !factor_exact || factor_mixed) {
        // The step came from an earlier point's factor, sampled rows or float32 products:
        // from theta_k again with the exact float64 Hessian before giving up.
        sample_stride = stride = 1;
        problem.X.set_mixed(false);
        chord = false;
        visit(true);
        continue;
      }
      result.stalled = true;  // report the gradient norm reached
      break;
    }
  }
  if (centre_here) point_to_user(problem.X, theta);
  result.theta = std::move(theta);
  result.loss = F;
  result.iterations = iter;
  return result;
}

}  // namespace rif
