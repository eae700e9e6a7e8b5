#include "rif/fit.hpp"

#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <cmath>
#include <sstream>

namespace rif {

namespace {

double objective(const Problem& problem, const Vector& theta, const Vector& z) {
  const Index d = problem.X.features();
  return total_loss(problem.family, z, problem.y, problem.w) +
         0.5 * problem.l2 * theta.head(d).squaredNorm();
}

}  // namespace

FitResult fit(const Problem& problem, Vector theta0, const FitOptions& options) {
  const int threads = resolve_threads(options.threads);
  validate(problem, theta0, threads);
  if (!(options.tol > 0)) throw std::invalid_argument("tol must be > 0");
  if (options.max_iter < 0) throw std::invalid_argument("max_iter must be >= 0");
  const Index n = problem.X.rows();

  // The scale of the problem: the gradient norm at theta = 0.
  Vector r, a;
  derivatives(problem.family, Vector::Zero(n), problem.y, problem.w, r, a);
  const double scale = gradient(problem, Vector::Zero(problem.X.params()), r, threads).norm();
  const double gtol = options.tol * std::max(1.0, scale);

  FitResult result;
  Vector theta = std::move(theta0), z, z_new, step;
  linear_predictor(problem.X, theta, z, threads);
  double F = objective(problem, theta, z);
  Matrix H;
  int iter = 0;
  for (;; ++iter) {
    derivatives(problem.family, z, problem.y, problem.w, r, a);
    const Vector g = gradient(problem, theta, r, threads);
    result.grad_norm = g.norm();
    if (result.grad_norm <= gtol) {
      result.converged = true;
      break;
    }
    if (iter >= options.max_iter) break;
    hessian(problem.X, a, problem.l2, H, threads);
    std::ostringstream what;
    what << "The Hessian at Newton iteration " << iter;
    cholesky_in_place(H, what.str(), threads);
    step = -g;
    solve_factored(H, step, threads);
    const double slope = g.dot(step);
    // Near the optimum the decrease of F drowns in rounding: take the full step there.
    const bool rounding_regime = -slope <= 1e-13 * (1.0 + std::abs(F));
    bool accepted = false;
    for (double t = 1.0; t > 1e-12; t *= 0.5) {
      Vector candidate = theta + t * step;
      problem.X.multiply(candidate, z_new, threads);
      const double F_new = objective(problem, candidate, z_new);
      if (rounding_regime || F_new <= F + 1e-4 * t * slope) {
        theta = std::move(candidate);
        z.swap(z_new);
        F = F_new;
        accepted = true;
        break;
      }
    }
    if (!accepted) break;  // no decrease possible: report the gradient norm reached
  }
  result.theta = std::move(theta);
  result.loss = F;
  result.iterations = iter;
  return result;
}

}  // namespace rif
