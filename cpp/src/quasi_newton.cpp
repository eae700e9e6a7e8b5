#include "rif/quasi_newton.hpp"

#include "rif/interrupt.hpp"
#include "rif/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace rif {

double penalised_objective(const Problem& problem, const Vector& theta, const Vector& z) {
  const Index d = problem.X.features();
  return total_loss(problem.family, z, problem.y, problem.w) +
         0.5 * problem.l2 * theta.head(d).squaredNorm();
}

bool QuasiNewtonMemory::push(Vector s, Vector t) {
  const double curvature = s.dot(t);
  // F is convex, so s^T t >= 0; a pair at rounding level would make H_k meaningless.
  if (!(curvature > 1e-12 * s.norm() * t.norm())) return false;
  if (pairs_.size() == kMemory) pairs_.pop_front();
  pairs_.push_back(Pair{std::move(s), std::move(t), 1.0 / curvature});
  return true;
}

Vector QuasiNewtonMemory::direction(const Vector& g, const Vector& diagonal) const {
  Vector q = g;
  if (pairs_.empty()) return -q.cwiseQuotient(diagonal);
  std::vector<double> alpha(pairs_.size());
  for (size_t i = pairs_.size(); i-- > 0;) {
    alpha[i] = pairs_[i].rho * pairs_[i].s.dot(q);
    q -= alpha[i] * pairs_[i].t;
  }
  const Pair& newest = pairs_.back();
  const double tDt = newest.t.cwiseProduct(newest.t.cwiseQuotient(diagonal)).sum();
  q = q.cwiseQuotient(diagonal) / (newest.rho * tDt);  // gamma D^{-1} q
  for (size_t i = 0; i < pairs_.size(); ++i) {
    const double beta = pairs_[i].rho * pairs_[i].t.dot(q);
    q += (alpha[i] - beta) * pairs_[i].s;
  }
  return -q;
}

namespace {

/// F along theta + t d, from z + t u (u = X d): no pass over X.
class Line {
 public:
  Line(const Problem& problem, const Vector& theta, const Vector& d, const Vector& z,
       const Vector& u)
      : P_(problem), theta_(theta), d_(d), z_(z), u_(u) {}

  /// dF/dt and d2F/dt2 at t.
  void derivatives_at(double t, double& first, double& second) {
    const Index k = P_.X.features();
    zt_ = z_ + t * u_;
    derivatives(P_.family, zt_, P_.y, P_.w, r_, a_);
    const auto dk = d_.head(k);
    first = r_.dot(u_) + P_.l2 * (theta_.head(k) + t * dk).dot(dk);
    second = a_.dot(u_.cwiseProduct(u_)) + P_.l2 * dk.squaredNorm();
  }

  /// The minimiser of F along the line, to |dF/dt| <= kFlat |dF/dt(0)| (slope0 < 0), by Newton
  /// steps on t kept inside the bracket where dF/dt changes sign. 0 when none is found.
  double minimiser(double slope0) {
    constexpr double kFlat = 0.1;
    double lo = 0, hi = INFINITY, t = 1;
    for (int it = 0; it < 60; ++it) {
      double first = 0, second = 0;
      derivatives_at(t, first, second);
      if (!std::isfinite(first) || first > 0) {
        hi = t;
      } else {
        lo = t;
      }
      if (std::isfinite(first) && std::abs(first) <= kFlat * std::abs(slope0)) return t;
      double next = std::isfinite(first) && second > 0 ? t - first / second : NAN;
      if (!(next > lo && next < hi)) next = std::isfinite(hi) ? 0.5 * (lo + hi) : 4 * t;
      if (std::isfinite(hi) && hi - lo <= 1e-12 * hi) break;
      t = next;
    }
    return lo;
  }

 private:
  const Problem& P_;
  const Vector &theta_, &d_, &z_, &u_;
  Vector zt_, r_, a_;
};

/// diag(X~^T diag(a) X~) + l2 P at the current point (one pass over X), its zero entries
/// (columns without weight) replaced by 1.
Vector hessian_diagonal(const Problem& problem, const Vector& z, int threads) {
  const Design& X = problem.X;
  const Index p = X.params();
  Vector r, a;
  derivatives(problem.family, z, problem.y, problem.w, r, a);
  // Blocks that stay in cache (as hessian_at's gradient passes), a source's usual ones; fixed
  // ranges per thread, so that D does not depend on the threads' timing.
  const Index block = X.source() ? block_rows(p) : cache_block_rows(p);
  std::vector<Vector> partial(static_cast<size_t>(range_count(X.rows(), block, threads)),
                              Vector::Zero(p));
  std::vector<Matrix> buffers(partial.size());
  parallel_ranges(X.rows(), block, threads, [&](Index range, Index begin, Index count) {
    Matrix& buf = buffers[static_cast<size_t>(range)];
    X.load(begin, count, buf);
    partial[static_cast<size_t>(range)].noalias() += buf.cwiseAbs2() * a.segment(begin, count);
  });
  Vector D = Vector::Zero(p);
  for (const Vector& part : partial) D += part;
  D.head(X.features()).array() += problem.l2;
  for (Index j = 0; j < p; ++j) {
    if (!(D[j] > 0) || !std::isfinite(D[j])) D[j] = 1;
  }
  return D;
}

}  // namespace

QuasiNewtonResult quasi_newton(const Problem& problem, Vector& theta, Vector& z, Vector& g,
                               double& F, const GradientVisit& visit,
                               const QuasiNewtonOptions& options) {
  QuasiNewtonResult result;
  QuasiNewtonMemory memory;
  const Vector diagonal = hessian_diagonal(problem, z, options.threads);
  ++result.passes;
  // Near the optimum the decrease of F drowns in its rounding (as in fit): there the steps are
  // judged by the gradient alone (dF/dt along the step stays accurate), and the phase stops
  // when kStall steps in a row have not halved the best gradient norm, at the best point.
  constexpr int kStall = 3;
  Vector best_theta = theta, best_z = z, best_g = g;
  double best_F = F, best = user_norm(problem.X, g);
  int without_progress = 0;
  // Each step needs one pass, two when theta + d fails the Wolfe conditions.
  while (result.passes + 2 <= options.budget) {
    check_interrupt();
    if (!g.allFinite() || user_norm(problem.X, g) <= options.until) break;
    Vector d = memory.direction(g, diagonal);
    double slope = g.dot(d);
    if (!(slope < 0)) {  // H_k lost positive definiteness to rounding: start again
      memory.clear();
      d = -g.cwiseQuotient(diagonal);
      slope = g.dot(d);
    }
    const bool rounding = -slope <= 1e-13 * (1.0 + std::abs(F));
    const Vector theta_k = theta, z_k = z, g_k = g;
    const double F_k = F;
    theta = theta_k + d;
    visit();
    ++result.passes;
    const bool wolfe = std::isfinite(F) && g.allFinite() &&
                       std::abs(g.dot(d)) <= 0.9 * std::abs(slope) &&
                       (rounding || F <= F_k + 1e-4 * slope);
    if (!wolfe) {
      const Vector u = z - z_k;
      const double t = Line(problem, theta_k, d, z_k, u).minimiser(slope);
      if (t != 1) {  // (t = 1: the point just visited)
        theta = theta_k + t * d;
        if (t > 0) {
          visit();
          ++result.passes;
        }
      }
      if (!(t > 0) || !(rounding || F < F_k)) {  // no decrease left: Newton's turn
        theta = theta_k;
        z = z_k;
        g = g_k;
        F = F_k;
        break;
      }
    }
    memory.push(theta - theta_k, g - g_k);
    ++result.steps;
    const double norm = user_norm(problem.X, g);
    if (norm < best) {
      without_progress = norm <= 0.5 * best ? 0 : without_progress + (rounding ? 1 : 0);
      best = norm;
      best_theta = theta;
      best_z = z;
      best_g = g;
      best_F = F;
    } else if (rounding) {
      ++without_progress;
    }
    if (without_progress >= kStall) break;
  }
  if (user_norm(problem.X, g) > best) {
    theta = std::move(best_theta);
    z = std::move(best_z);
    g = std::move(best_g);
    F = best_F;
  }
  return result;
}

FitSteps parse_fit_steps(const std::string& name) {
  if (name == "auto") return FitSteps::automatic;
  if (name == "newton") return FitSteps::newton;
  if (name == "lbfgs") return FitSteps::quasi_newton;
  throw std::invalid_argument("solver must be 'auto', 'newton' or 'lbfgs', got '" + name + "'");
}

int quasi_newton_budget(const Problem& problem, FitSteps steps) {
  constexpr int kForcedBudget = 1000;
  if (steps == FitSteps::newton) return 0;
  if (steps == FitSteps::quasi_newton) return kForcedBudget;
  const Design& X = problem.X;
  const Index n = X.rows(), p = X.params();
  if (problem.family == Family::squared || X.sparse() || X.source() || n >= 512 * p) return 0;
  // A Hessian pass does n p^2 flops at GEMM rate, a gradient pass reads X once for 4 n p flops
  // at memory speed: on this project's 2-core AMD EPYC a Hessian took about p / 20 passes
  // (p = 600) to p / 40 (p = 2049). p / 32: the phase costs at most about one more Hessian.
  constexpr Index kRatio = 32;
  const Index passes = p / kRatio;
  return passes >= 8 ? static_cast<int>(std::min<Index>(passes, kForcedBudget)) : 0;
}

}  // namespace rif
