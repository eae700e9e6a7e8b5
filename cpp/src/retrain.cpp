#include "rif/retrain.hpp"

#include "rif/blas.hpp"
#include "rif/downdate.hpp"
#include "rif/fit.hpp"
#include "rif/interrupt.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

namespace rif {

namespace {

/// X^T r(X T) for the m columns of T, over all samples (with their weights), in one pass over
/// X on the CPU: two products per row block.
Matrix all_sample_gradients(const Problem& P, const Matrix& T, int threads) {
  const Design& X = P.X;
  const Index n = X.rows(), p = X.params(), m = T.cols();
  // Small blocks (about 512 KiB): the second product re-reads the block from cache.
  const Index block = std::clamp<Index>((Index{1} << 16) / std::max<Index>(p, 1), 16, 4096);
  const bool in_order = X.sums_in_order();
  const Index nt = sum_slots(n, block, threads, in_order);
  std::vector<Matrix> buffers(static_cast<size_t>(nt)), Zs(static_cast<size_t>(nt));
  std::vector<Matrix> partial(static_cast<size_t>(nt), Matrix::Zero(p, m));
  const Index d = X.features();
  const bool intercept = X.intercept();
  // Raw feature rows with a centred design: x~ . t = x . t_beta + (t_b - c . t_beta), and
  // sum_i r_i x~_i = sum_i r_i x_i - c sum_i r_i (corrected after the pass).
  Eigen::RowVectorXd offset;
  if (intercept) offset = T.row(d);
  if (X.centre()) offset -= Eigen::Map<const Vector>(X.centre(), d).transpose() * T.topRows(d);
  parallel_sums(n, block, threads, in_order, [&](Index t, Index begin, Index count) {
    // The d feature rows only (no copy for float64 X); the intercept is handled on the side.
    auto Xt = X.feature_block(begin, count, buffers[static_cast<size_t>(t)]);
    Matrix& Z = Zs[static_cast<size_t>(t)];
    Z.noalias() = Xt.transpose() * T.topRows(d);  // count x m linear predictors
    if (intercept) Z.rowwise() += offset;
    for (Index c = 0; c < m; ++c) {
      for (Index j = 0; j < count; ++j) {
        Z(j, c) = weighted_residual(P, begin + j, Z(j, c));
      }
    }
    Matrix& part = partial[static_cast<size_t>(t)];
    part.topRows(d).noalias() += Xt * Z;
    if (intercept) part.row(d) += Z.colwise().sum();
  });
  Matrix total = partial[0];
  for (size_t t = 1; t < partial.size(); ++t) total += partial[t];
  if (X.centre()) {
    total.topRows(d).noalias() -= Eigen::Map<const Vector>(X.centre(), d) * total.row(d);
  }
  return total;
}

/// G(:, j) = grad F_{-T_j}(Theta(:, j)) for the given columns, in one pass over X for all of
/// them (on the GPU when the attribution keeps X there), then the removed samples subtracted.
void set_gradients(const Attribution& A, const SetList& sets, const std::vector<Index>& cols,
                   const Matrix& Theta, Matrix& G, int threads) {
  const Problem& P = A.problem();
  const Design& X = P.X;
  const Index p = X.params(), m = static_cast<Index>(cols.size());
  Matrix T(p, m);
  for (Index c = 0; c < m; ++c) T.col(c) = Theta.col(cols[static_cast<size_t>(c)]);
  Matrix total;
  if (A.passes_on_device()) {
    A.device_gradients(T, total);
  } else {
    total = all_sample_gradients(P, T, threads);
  }
  Matrix x(p, 1);
  for (Index c = 0; c < m; ++c) {
    const Index s = cols[static_cast<size_t>(c)];
    const std::int64_t* idx = sets.begin(s);
    for (Index e = 0; e < sets.size(s); ++e) {
      const Index i = static_cast<Index>(idx[e]);
      X.gather(idx + e, 1, x);
      total.col(c) -= weighted_residual(P, i, x.col(0).dot(T.col(c))) * x.col(0);
    }
    add_penalty_gradient(P, T.col(c), total.col(c));
    G.col(s) = total.col(c);
  }
}

/// The sample weights of F_{-T}: the problem's (or ones) with the set's samples at zero.
Vector weights_without(const Problem& P, const SetList& sets, Index j) {
  Vector w = P.w.size() ? P.w : Vector::Ones(P.X.rows());
  for (Index e = 0; e < sets.size(j); ++e) w[sets.begin(j)[e]] = 0.0;
  return w;
}

/// Anderson acceleration (depth kDepth) of a set's fixed-point iteration x <- x + f(x), with
/// f(x) = -P grad F_{-T}(x) the chord step: the next iterate combines the last few iterates and
/// steps so that the linearised step is least squares smallest. The chord's rate (the spectrum
/// of I - P H_{-T}(x)) limits plain iteration when removing T moves theta far; accelerated, the
/// sets of the paper's experiments converge in about half the passes, with no refresh.
class Anderson {
 public:
  static constexpr int kDepth = 5;
  static constexpr double kMaxStretch = 100;  ///< largest accelerated step / chord step

  /// theta <- the next iterate, from theta and its chord step f.
  void step(Eigen::Ref<Vector> theta, const Vector& f) {
    const Index p = theta.size();
    if (started_) {
      if (dX_.cols() == 0) {
        dX_.resize(p, kDepth);
        dF_.resize(p, kDepth);
      }
      dX_.col(next_) = theta - x_;
      dF_.col(next_) = f - f_;
      next_ = (next_ + 1) % kDepth;
      filled_ = std::min(filled_ + 1, kDepth);
    }
    x_ = theta;
    f_ = f;
    started_ = true;
    if (filled_ > 0) {
      const Matrix dF = dF_.leftCols(filled_);
      const Vector gamma = dF.completeOrthogonalDecomposition().solve(f);
      Vector accelerated = theta + f - (dX_.leftCols(filled_) + dF) * gamma;
      // An extrapolation far beyond the chord step mostly raises the gradient: such a step, or
      // a non-finite one, becomes a plain step with a fresh history from here.
      if (accelerated.allFinite() && (accelerated - theta).norm() <= kMaxStretch * f.norm()) {
        theta = accelerated;
        return;
      }
      reset();
      x_ = theta;
      f_ = f;
      started_ = true;
    }
    theta += f;
  }

  /// Forgets the history (after a restart with another P).
  void reset() {
    filled_ = next_ = 0;
    started_ = false;
  }

  /// Frees the history's memory (the set is done iterating).
  void release() {
    reset();
    dX_.resize(0, 0);
    dF_.resize(0, 0);
    x_.resize(0);
    f_.resize(0);
  }

 private:
  Matrix dX_, dF_;  ///< differences of iterates and of steps, a ring of kDepth columns
  Vector x_, f_;    ///< the previous iterate and its step
  int filled_ = 0, next_ = 0;
  bool started_ = false;
};

/// RIF_RETRAIN_ANDERSON=0 turns the acceleration off (plain chord steps: tests of the refresh
/// path, comparisons); unset or 1 keeps it on.
bool anderson_enabled() {
  const char* env = std::getenv("RIF_RETRAIN_ANDERSON");
  if (!env) return true;
  const std::string v(env);
  if (v == "0" || v == "1") return v == "1";
  throw std::invalid_argument("RIF_RETRAIN_ANDERSON must be 0 or 1, got '" + v + "'");
}

}  // namespace

RetrainResult retrain(const Attribution& A, const SetList& sets, const RetrainOptions& options) {
  const Problem& P = A.problem();
  A.require_host("retraining");
  const Index n = P.X.rows(), p = A.params(), m = sets.count;
  check_sets(sets, n);
  check_stopping(options.tol, options.max_iter);
  const int threads = resolve_threads(options.threads);

  RetrainResult result;
  result.singular = structurally_singular(A, sets, P.w);
  result.iterations.assign(static_cast<size_t>(m), 0);
  result.converged.assign(static_cast<size_t>(m), 0);
  result.refreshed.assign(static_cast<size_t>(m), 0);
  result.grad_norm = Vector::Constant(m, INFINITY);
  result.tolerance.resize(m);

  // Targets: tol * max(1, ||grad F_{-T}(0)||), from the attribution's X^T r(0) minus T's part.
  const Vector& g0 = A.gradient_at_zero();
  Matrix Theta(p, m), G(p, m);
  Vector minus_r0(n);  // -r_i at theta = 0, indexed by sample (shared by all sets)
  for (Index i = 0; i < n; ++i) minus_r0[i] = -weighted_residual(P, i, 0.0);
  parallel_chunks(m, 1, threads, [&](int, Index j, Index) {
    Vector g = g0;
    P.X.accumulate(sets.begin(j), sets.size(j), minus_r0.data(), g);
    result.tolerance[j] = options.tol * std::max(1.0, user_norm(P.X, g));
  });

  // The downdated Hessian at theta_hat for every set: small sets by Woodbury, all in one batch
  // (on the GPU when X and the factor are there), large ones factored afresh, in parallel.
  std::vector<Index> small, large, position(static_cast<size_t>(m), -1);
  for (Index j = 0; j < m; ++j) {
    if (sets.size(j) <= A.woodbury_limit()) {
      position[static_cast<size_t>(j)] = static_cast<Index>(small.size());
      small.push_back(j);
    } else {
      large.push_back(j);
    }
  }
  std::unique_ptr<WoodburyBatch> batch;
  if (!small.empty()) batch = std::make_unique<WoodburyBatch>(A, sets, small, threads);
  std::vector<std::unique_ptr<DowndatedSolver>> solvers(static_cast<size_t>(m));
  if (!large.empty()) (void)A.factor();  // the host copy of the factor, before any threads
  for_each_item(static_cast<Index>(large.size()), threads, [&](Index c, int) {
    const Index j = large[static_cast<size_t>(c)];
    solvers[static_cast<size_t>(j)] =
        std::make_unique<DowndatedSolver>(A, sets.begin(j), sets.size(j));
  });
  const auto singular_at_start = [&](Index j) {
    const Index q = position[static_cast<size_t>(j)];
    return q >= 0 ? batch->singular(q) : solvers[static_cast<size_t>(j)]->singular();
  };

  for (Index j = 0; j < m; ++j) Theta.col(j) = A.theta();
  // Sets iterate with the downdated Hessian at theta_hat (a chord method, Anderson-accelerated)
  // while that converges fast enough; one whose rate over the last kWindow passes would need
  // many more passes, or whose gradient grows, gets the exact Hessian of F_{-T} at its best
  // iterate so far (a "refresh", one Hessian pass over X) and iterates with that. Every set
  // keeps its best iterate (smallest gradient norm).
  std::vector<Matrix> fresh(static_cast<size_t>(m));
  std::vector<int> refreshes(static_cast<size_t>(m), 0);
  std::vector<Anderson> anderson(static_cast<size_t>(m));
  const bool accelerate = anderson_enabled();
  Matrix best = Theta;
  Vector best_norm = Vector::Constant(m, INFINITY);
  std::vector<Index> active, stalled;
  for (Index j = 0; j < m; ++j) {
    if (!result.singular[static_cast<size_t>(j)]) {
      (singular_at_start(j) ? stalled : active).push_back(j);
    }
  }
  constexpr int kMaxRefreshes = 3;
  // Accelerated steps are not monotone: from the kWindow-th pass after a (re)start on, the rate
  // is judged over the last kWindow passes; before, only the first (plain) step is, and only
  // for growth. Without acceleration every pass is judged against the one before.
  constexpr int kWindow = 4;
  // At theta_hat no pass is needed: grad F_{-T}(theta_hat) = grad F(theta_hat) - sum_T r_i x_i.
  const Vector minus_r = -A.residuals();
  parallel_chunks(m, 1, threads, [&](int, Index j, Index) {
    Vector g = A.gradient();
    P.X.accumulate(sets.begin(j), sets.size(j), minus_r.data(), g);
    G.col(j) = g;
  });
  // Per set since its last (re)start: the last kWindow + 1 gradient norms and how many there
  // were; and the best norm when it was last refreshed.
  std::vector<std::deque<double>> recent(static_cast<size_t>(m));
  std::vector<int> seen(static_cast<size_t>(m), 0);
  Vector best_at_refresh = Vector::Constant(m, INFINITY);
  const auto done = [&](size_t u) {  // the set leaves the iteration: free its history
    anderson[u].release();
    std::deque<double>().swap(recent[u]);
  };
  for (Index j = 0; j < m; ++j) {  // a set left without data for a parameter: no refit
    if (result.singular[static_cast<size_t>(j)]) result.grad_norm[j] = user_norm(P.X, G.col(j));
  }
  for (bool first = true; !active.empty(); first = false) {
    check_interrupt();
    if (!first) set_gradients(A, sets, active, Theta, G, threads);
    std::vector<Index> next, refresh;
    for (Index j : active) {
      const size_t u = static_cast<size_t>(j);
      const double norm = user_norm(P.X, G.col(j));
      std::deque<double>& norms = recent[u];
      norms.push_back(norm);
      if (norms.size() > static_cast<size_t>(kWindow) + 1) norms.pop_front();
      const int passes = seen[u]++;
      const bool finite = std::isfinite(norm);
      if (finite && norm < best_norm[j]) {
        best_norm[j] = norm;
        best.col(j) = Theta.col(j);
      }
      result.grad_norm[j] = best_norm[j];
      if (norm <= result.tolerance[j] || result.iterations[u] >= options.max_iter) {
        result.converged[u] = norm <= result.tolerance[j];  // else: out of iterations
        done(u);
        continue;
      }
      bool slow = !finite;
      if (finite && passes >= 1) {
        const int window = !accelerate ? 1 : (passes >= kWindow ? kWindow : 0);
        const double step_rate = norm / norms[norms.size() - 2];
        if (window == 0) {
          slow = passes == 1 && step_rate > 0.95;  // the plain first step did not help
        } else {
          const double rate = std::pow(norm / norms[norms.size() - 1 - window], 1.0 / window);
          // Passes still needed at this rate; a refresh costs about as much as 30 of them.
          const double needed =
              rate < 1 ? std::log(result.tolerance[j] / norm) / std::log(rate) : 1e9;
          slow = rate > 0.95 || (rate > 0.5 && needed > 30);
        }
      }
      if (slow) {
        // A refresh restarts from the best iterate: if that is where the last one started,
        // it would only repeat the same passes.
        if (refreshes[u] >= kMaxRefreshes || best_norm[j] >= best_at_refresh[j]) {
          stalled.push_back(j);
          done(u);
          continue;
        }
        best_at_refresh[j] = best_norm[j];
        Theta.col(j) = best.col(j);  // restart from the best iterate with an exact Hessian
        norms.assign(1, best_norm[j]);
        seen[u] = 1;
        anderson[u].reset();
        refresh.push_back(j);
      }
      next.push_back(j);
    }
    for (Index j : refresh) {
      // Exact Hessian of F_{-T} at the iterate: the weights of T set to zero.
      const size_t u = static_cast<size_t>(j);
      const Vector w = weights_without(P, sets, j);
      Vector z, r, a;
      P.X.multiply(Theta.col(j), z, threads);
      derivatives(P.family, z, P.y, w, r, a);
      hessian(P.X, a, P.l2, fresh[u], threads);
      ++refreshes[u];
      result.refreshed[u] = 1;
      if (!a.allFinite() || !try_cholesky_in_place(fresh[u])) {
        fresh[u].resize(0, 0);
        next.erase(std::find(next.begin(), next.end(), j));
        stalled.push_back(j);
        done(u);
      }
    }
    // Gradients at the restarted iterates of refreshed sets.
    if (!refresh.empty()) set_gradients(A, sets, refresh, Theta, G, threads);
    // Steps: one batched Woodbury solve for the sets still on the downdated Hessian at
    // theta_hat, the others (fresh or large factors) one by one.
    std::vector<Index> batched, single, which;
    for (Index j : next) {
      const Index q = position[static_cast<size_t>(j)];
      if (q >= 0 && !fresh[static_cast<size_t>(j)].size()) {
        batched.push_back(j);
        which.push_back(q);
      } else {
        single.push_back(j);
      }
    }
    if (!batched.empty()) {
      Matrix steps(p, static_cast<Index>(batched.size()));
      for (size_t c = 0; c < batched.size(); ++c) {
        steps.col(static_cast<Index>(c)) = G.col(batched[c]);
      }
      batch->solve(steps, which, threads);
      parallel_chunks(static_cast<Index>(batched.size()), 1, threads, [&](int, Index c, Index) {
        const Index j = batched[static_cast<size_t>(c)];
        if (accelerate) {
          anderson[static_cast<size_t>(j)].step(Theta.col(j), -steps.col(c));
        } else {
          Theta.col(j) -= steps.col(c);
        }
        ++result.iterations[static_cast<size_t>(j)];
      });
    }
    for_each_item(static_cast<Index>(single.size()), threads, [&](Index c, int inner) {
      const Index j = single[static_cast<size_t>(c)];
      const size_t u = static_cast<size_t>(j);
      Vector step = G.col(j);
      if (fresh[u].size()) {
        solve_factored(fresh[u], step, inner);
      } else {
        solvers[u]->solve(step, inner);
      }
      if (accelerate) {
        anderson[u].step(Theta.col(j), -step);
      } else {
        Theta.col(j) -= step;
      }
      ++result.iterations[u];
    });
    active.swap(next);
  }

  // Sets that still stall (or whose H_{-T} is singular at theta_hat): damped Newton with a line
  // search on the data without T, from their best iterate, within what is left of max_iter. A
  // set whose problem has no positive-definite Hessian stays unconverged; the others go on.
  for (Index j : stalled) {
    check_interrupt();
    const size_t u = static_cast<size_t>(j);
    if (best_norm[j] == INFINITY) best.col(j) = Theta.col(j);
    Theta.col(j) = best.col(j);
    Problem without = P;
    without.w = weights_without(P, sets, j);
    FitOptions fo;
    fo.tol = options.tol;
    fo.threads = threads;
    fo.steps = FitSteps::newton;  // from near the optimum
    fo.max_iter = std::max(0, options.max_iter - result.iterations[u]);
    result.refreshed[u] = 1;
    try {
      const FitResult r = fit(without, Theta.col(j), fo);
      Theta.col(j) = r.theta;
      result.grad_norm[j] = r.grad_norm;
      result.converged[u] = r.converged;
      result.iterations[u] += r.iterations;
    } catch (const not_positive_definite&) {
      result.converged[u] = 0;
    }
  }
  // Sets that ran out of iterations report their best iterate.
  for (Index j = 0; j < m; ++j) {
    if (!result.converged[static_cast<size_t>(j)] && std::isfinite(best_norm[j]) &&
        best_norm[j] <= result.grad_norm[j]) {
      Theta.col(j) = best.col(j);
      result.grad_norm[j] = best_norm[j];
    }
  }
  result.theta = Theta.transpose();
  rows_to_user(P.X, result.theta);
  return result;
}

}  // namespace rif
