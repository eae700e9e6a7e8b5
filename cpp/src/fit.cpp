#include "rif/fit.hpp"

#include "rif/hessian_plan.hpp"
#include "rif/interrupt.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"
#include "rif/quasi_newton.hpp"

#include <cmath>
#include <limits>
#include <sstream>

namespace rif {

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
  // Which Hessian each step uses (sampled rows, every row, or the factor kept from an earlier
  // point) and how approximations are dropped when they fail: rif/hessian_plan.hpp.
  HessianPlan plan(problem);
  const auto visit = [&](bool with_hessian) {
    hessian_at(problem.X, problem.family, problem.y, problem.w, problem.l2, theta, z, r, a, H,
               threads, &g, with_hessian, plan.stride());
    check_linear_predictor(problem.X, z);  // names X's first NaN / inf, if any
    add_penalty_gradient(problem, theta, g);
    F = penalised_objective(problem, theta, z);
    if (with_hessian) ++(plan.stride() > 1 ? result.sampled_hessians : result.hessians);
    plan.visited(with_hessian);
  };
  // Where a Hessian costs many gradient passes, L-BFGS steps come first (below), for at most
  // the passes one Hessian costs: Newton's steps then finish what they did not. The first
  // visit leaves the Hessian out.
  const int budget = options.max_iter > 0 ? quasi_newton_budget(problem, options.steps) : 0;
  visit(budget == 0);
  // H <- its Cholesky factor; an approximate H that does not factor (or is not finite) is
  // built again, less approximate, before the failure is reported.
  const auto factor_at = [&](int iteration) {
    std::ostringstream what;
    what << "The Hessian at Newton iteration " << iteration;
    const Advice advice =
        hessian_advice(problem.X.features(), problem.X.intercept(), problem.l2);
    for (;;) {
      try {
        check_hessian_finite(problem.X, H);
        cholesky_in_place(H, what.str(), threads, advice);
        plan.factored(problem.X.mixed());
        return;
      } catch (const not_positive_definite&) {
        if (!plan.relax_after_failure(problem.X)) throw;
      } catch (const std::invalid_argument&) {  // float32 products can overflow
        if (!plan.relax_after_failure(problem.X)) throw;
      }
      visit(true);
    }
  };
  bool full_step = false;  // whether the last step was taken whole

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

  if (budget > 0) {
    // At tight tolerances Newton's last step, in its quadratic phase, usually lands orders of
    // magnitude below the tolerance; L-BFGS, which converges linearly, then aims below it by
    // kMargin so that its results are as close to the minimiser (fit still stops as soon as
    // the tolerance is met, should the phase stop early). A loose tolerance is taken as asked.
    constexpr double kTight = 1e-6, kMargin = 1e-2;
    const double until = options.tol <= kTight ? kMargin * gtol : gtol;
    const QuasiNewtonOptions qn{until, budget, threads};
    result.quasi_newton_steps =
        quasi_newton(problem, theta, z, g, F, [&] { visit(false); }, qn).steps;
  }

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
    if (!plan.plan_step(problem.X, result.grad_norm, previous_norm, scale, full_step)) {
      if (!plan.have_hessian()) visit(true);  // the point's Hessian was left out
      factor_at(iter);
    }
    step = -g;
    solve_factored(H, step, threads);
    const double slope = g.dot(step);
    // Near the optimum the decrease of F drowns in rounding: take the full step there.
    rounding_regime = -slope <= 1e-13 * (1.0 + std::abs(F));
    // Quadratic convergence: ||g_{k+1}|| ~ ||g_k||^3 / ||g_{k-1}||^2.
    const double norm = result.grad_norm;
    const double predicted =
        std::isfinite(previous_norm) && plan.exact_step() && !plan.chord_before()
            ? norm * (norm / previous_norm) * (norm / previous_norm)
            : INFINITY;  // no (quadratic) rate seen yet
    const bool with_hessian = plan.next_visit_builds_hessian(norm, previous_norm, scale) &&
                              !(predicted <= 0.1 * gtol);
    previous_norm = norm;
    const Vector theta_k = theta, z_k = z, g_k = g;
    const double F_k = F;
    theta = theta_k + step;
    visit(with_hessian);
    full_step = rounding_regime || F <= F_k + 1e-4 * slope;
    if (full_step) continue;
    // Backtrack along the step: z is linear in t, z_k + t (z - z_k), so no pass is needed
    // until a length is accepted. Halving goes on past 1e-12 while the step still moves z by
    // more than rounding: far from the optimum (poisson counts of 1e14, whose first step moves
    // z by about the counts) every longer length overflows exp(z).
    const Vector u = z - z_k;
    const double reach = u.cwiseAbs().maxCoeff();
    const double negligible = 1e-12 * (1.0 + z_k.cwiseAbs().maxCoeff());
    bool accepted = false;
    // (At most 200 halvings: z moved by 1e60 then still moves by under 1e0; a step of inf or
    // NaN stops at 1e-12 as before.)
    const bool finite_reach = std::isfinite(reach);
    for (double t = 0.5; t > 0x1p-200 && (t > 1e-12 || (finite_reach && t * reach > negligible));
         t *= 0.5) {
      Vector candidate = theta_k + t * step;
      const Vector z_t = z_k + t * u;
      if (penalised_objective(problem, candidate, z_t) <= F_k + 1e-4 * t * slope) {
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
      if (plan.relax_after_failed_search(problem.X)) {  // the step was approximate
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
