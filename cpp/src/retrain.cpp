#include "rif/retrain.hpp"

#include "rif/downdate.hpp"
#include "rif/fit.hpp"
#include "rif/parallel.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <memory>

namespace rif {

namespace {

/// G(:, j) = grad F_{-T_j}(Theta(:, j)) for the given columns, in one pass over X: the
/// all-sample gradient by two products per row block, then the removed samples subtracted.
void set_gradients(const Attribution& A, const SetList& sets, const std::vector<Index>& cols,
                   const Matrix& Theta, Matrix& G, int threads) {
  const Problem& P = A.problem();
  const Design& X = P.X;
  const Index n = X.rows(), p = X.params(), m = static_cast<Index>(cols.size());
  Matrix T(p, m);
  for (Index c = 0; c < m; ++c) T.col(c) = Theta.col(cols[static_cast<size_t>(c)]);
  const Index block = block_rows(p);
  const int nt = chunk_threads(n, block, threads);
  std::vector<Matrix> buffers(static_cast<size_t>(nt)), Zs(static_cast<size_t>(nt));
  std::vector<Matrix> partial(static_cast<size_t>(nt), Matrix::Zero(p, m));
  parallel_chunks(n, block, threads, [&](int t, Index begin, Index count) {
    auto Xt = X.block(begin, count, buffers[static_cast<size_t>(t)]);
    Matrix& Z = Zs[static_cast<size_t>(t)];
    Z.noalias() = Xt.transpose() * T;  // count x m linear predictors
    for (Index c = 0; c < m; ++c) {
      for (Index j = 0; j < count; ++j) {
        const Index i = begin + j;
        const double w = P.w.size() ? P.w[i] : 1.0;
        Z(j, c) = w * first_derivative(P.family, P.y[i], Z(j, c));
      }
    }
    partial[static_cast<size_t>(t)].noalias() += Xt * Z;
  });
  Matrix total = partial[0];
  for (size_t t = 1; t < partial.size(); ++t) total += partial[t];
  const Index d = X.features();
  Matrix x(p, 1);
  for (Index c = 0; c < m; ++c) {
    const Index s = cols[static_cast<size_t>(c)];
    const std::int64_t* idx = sets.begin(s);
    for (Index e = 0; e < sets.size(s); ++e) {
      const Index i = static_cast<Index>(idx[e]);
      X.gather(idx + e, 1, x);
      const double w = P.w.size() ? P.w[i] : 1.0;
      const double z = x.col(0).dot(T.col(c));
      total.col(c) -= (w * first_derivative(P.family, P.y[i], z)) * x.col(0);
    }
    total.col(c).head(d) += P.l2 * T.col(c).head(d);
    G.col(s) = total.col(c);
  }
}

}  // namespace

RetrainResult retrain(const Attribution& A, const SetList& sets, const RetrainOptions& options) {
  const Problem& P = A.problem();
  const Index n = P.X.rows(), p = A.params(), m = sets.count;
  check_sets(sets, n);
  if (!(options.tol > 0)) throw std::invalid_argument("tol must be > 0");
  const int threads = resolve_threads(options.threads);

  RetrainResult result;
  result.iterations.assign(static_cast<size_t>(m), 0);
  result.converged.assign(static_cast<size_t>(m), 0);
  result.refreshed.assign(static_cast<size_t>(m), 0);
  result.grad_norm = Vector::Constant(m, INFINITY);
  result.tolerance.resize(m);

  // Targets: tol * max(1, ||grad F_{-T}(0)||), from the gradient at 0 of every set in one pass.
  std::vector<Index> all(static_cast<size_t>(m));
  for (Index j = 0; j < m; ++j) all[static_cast<size_t>(j)] = j;
  Matrix Theta = Matrix::Zero(p, m), G(p, m);
  set_gradients(A, sets, all, Theta, G, threads);
  for (Index j = 0; j < m; ++j) result.tolerance[j] = options.tol * std::max(1.0, G.col(j).norm());

  // The downdated Hessian at theta_hat for every set, prepared in parallel.
  std::vector<std::unique_ptr<DowndatedSolver>> solvers(static_cast<size_t>(m));
  parallel_chunks(m, 1, threads, [&](int, Index j, Index) {
    solvers[static_cast<size_t>(j)] =
        std::make_unique<DowndatedSolver>(A, sets.begin(j), sets.size(j));
  });

  for (Index j = 0; j < m; ++j) Theta.col(j) = A.theta();
  std::vector<Index> active, stalled;
  for (Index j = 0; j < m; ++j) {
    if (solvers[static_cast<size_t>(j)]->singular()) {
      stalled.push_back(j);  // no fixed matrix to iterate with: full Newton from the start
    } else {
      active.push_back(j);
    }
  }
  Vector previous = Vector::Constant(m, INFINITY);
  for (int iter = 0; !active.empty(); ++iter) {
    set_gradients(A, sets, active, Theta, G, threads);
    std::vector<Index> next;
    for (Index j : active) {
      const double norm = G.col(j).norm();
      result.grad_norm[j] = norm;
      if (norm <= result.tolerance[j]) {
        result.converged[static_cast<size_t>(j)] = 1;
      } else if (iter >= options.max_iter || norm > 0.5 * previous[j]) {
        stalled.push_back(j);  // converging too slowly (or not at all) with the fixed matrix
      } else {
        next.push_back(j);
      }
      previous[j] = norm;
    }
    parallel_chunks(static_cast<Index>(next.size()), 1, threads, [&](int, Index c, Index) {
      const Index j = next[static_cast<size_t>(c)];
      Vector step = G.col(j);
      solvers[static_cast<size_t>(j)]->solve(step);
      Theta.col(j) -= step;
      ++result.iterations[static_cast<size_t>(j)];
    });
    active.swap(next);
  }

  // Stalled sets: damped Newton with fresh Hessians on the data without T, from where they are.
  for (Index j : stalled) {
    Problem without = P;
    if (without.w.size() == 0) without.w = Vector::Ones(n);
    for (Index e = 0; e < sets.size(j); ++e) without.w[sets.begin(j)[e]] = 0.0;
    FitOptions fo;
    fo.tol = options.tol;
    fo.threads = threads;
    const FitResult r = fit(without, Theta.col(j), fo);
    Theta.col(j) = r.theta;
    result.grad_norm[j] = r.grad_norm;
    result.converged[static_cast<size_t>(j)] = r.converged;
    result.refreshed[static_cast<size_t>(j)] = 1;
    result.iterations[static_cast<size_t>(j)] += r.iterations;
  }
  result.theta = Theta.transpose();
  return result;
}

}  // namespace rif
