#include "rif/attribution.hpp"

#include "rif/blas.hpp"
#include "rif/cuda_backend.hpp"
#include "rif/downdate.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"
#include "rif/sparse.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace rif {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

void check_sets(const SetList& sets, Index n) {
  std::vector<std::int64_t> sorted;
  for (Index j = 0; j < sets.count; ++j) {
    if (sets.offsets[j + 1] < sets.offsets[j]) throw std::invalid_argument("sets: bad offsets");
    for (const std::int64_t* it = sets.begin(j); it != sets.begin(j) + sets.size(j); ++it) {
      if (*it < 0 || *it >= n) {
        std::ostringstream msg;
        msg << "sets: set " << j << " holds index " << *it << ", outside [0, " << n << ")";
        throw std::invalid_argument(msg.str());
      }
    }
    // A sample removed twice from one set would be subtracted twice from H.
    sorted.assign(sets.begin(j), sets.begin(j) + sets.size(j));
    std::sort(sorted.begin(), sorted.end());
    const auto twice = std::adjacent_find(sorted.begin(), sorted.end());
    if (twice != sorted.end()) {
      std::ostringstream msg;
      msg << "sets: set " << j << " holds sample index " << *twice << " more than once";
      throw std::invalid_argument(msg.str());
    }
  }
}

void validate(const Problem& problem, const Vector& theta, int threads) {
  const Design& X = problem.X;
  std::ostringstream msg;
  if (X.rows() < 1) throw std::invalid_argument("X is empty: it needs at least one sample (row)");
  if (X.features() < 1 && !X.intercept()) {
    throw std::invalid_argument("X has no features (d = 0) and there is no intercept");
  }
  if (problem.y.size() != X.rows()) {
    msg << "y must have one label per row of X (" << X.rows() << "), got " << problem.y.size();
    throw std::invalid_argument(msg.str());
  }
  if (theta.size() != X.params()) {
    msg << "theta must have " << X.params() << " entries (" << X.features() << " features"
        << (X.intercept() ? " + intercept, last" : "") << "), got " << theta.size();
    throw std::invalid_argument(msg.str());
  }
  if (!std::isfinite(problem.l2) || problem.l2 < 0) {
    msg << "l2 must be a finite number >= 0, got " << problem.l2;
    throw std::invalid_argument(msg.str());
  }
  for (Index i = 0; i < theta.size(); ++i) {
    if (!std::isfinite(theta[i])) {
      msg << "theta contains NaN or inf (entry " << i << ")";
      throw std::invalid_argument(msg.str());
    }
  }
  validate_labels(problem.family, problem.y);
  validate_weights(problem.w, X.rows());
  (void)threads;
}

void check_linear_predictor(const Design& X, const Vector& z) {
  if (z.allFinite()) return;
  // A NaN or inf anywhere in a row makes its z non-finite (inf * 0 is NaN): the first such row
  // holds X's first bad entry, unless the product merely overflowed.
  Index i = 0;
  while (std::isfinite(z[i])) ++i;
  std::ostringstream msg;
  if (!X.has_data()) {
    msg << "X contains NaN or inf at row " << i << ", or X @ theta overflows there";
    throw std::invalid_argument(msg.str());
  }
  const auto bad = X.first_nonfinite_in_row(i);
  if (bad >= 0) {
    msg << "X contains NaN or inf (first at row " << i << ", column " << bad << ")";
  } else {
    msg << "X @ theta overflows at row " << i << ": rescale X or check theta";
  }
  throw std::invalid_argument(msg.str());
}

namespace {

/// r and a must be finite for H to be: exp(z) of the poisson family overflows above z ~ 709.
void check_derivatives(const Vector& z, const Vector& r, const Vector& a) {
  for (Index i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(r[i])) {
      std::ostringstream msg;
      msg << "the loss's derivatives overflow at sample " << i << " (linear predictor z = "
          << z[i] << "): check theta, or rescale X";
      throw std::invalid_argument(msg.str());
    }
  }
}

/// The GPU backend's check of z, r and a, on the host before it factors H.
void check_predictor_and_derivatives(const Design& X, const cuda::Results& res) {
  check_linear_predictor(X, res.z);
  check_derivatives(res.z, res.r, res.a);
}

}  // namespace

void linear_predictor(const Design& X, const Vector& theta, Vector& z, int threads) {
  X.multiply(theta, z, threads);
  check_linear_predictor(X, z);
}

void check_gradient_finite(const Vector& g, const char* where) {
  for (Index k = 0; k < g.size(); ++k) {
    if (!std::isfinite(g[k])) {
      std::ostringstream msg;
      msg << "the gradient of F " << where << " overflows float64 (entry " << k
          << "): rescale X, or check theta and l2";
      throw std::invalid_argument(msg.str());
    }
  }
}

Vector gradient(const Problem& problem, const Vector& theta, const Vector& r, int threads) {
  Vector g;
  problem.X.multiply_transposed(r, g, threads);
  add_penalty_gradient(problem, theta, g);
  return g;
}

Attribution::Attribution(Problem problem, Vector theta, int threads, bool use_cuda,
                         const cuda::DeviceMatrix* device, HessianPath path,
                         const Matrix* directions)
    : problem_(std::move(problem)), theta_(std::move(theta)) {
  threads = resolve_threads(threads);
  threads_ = threads;
  validate(problem_, theta_, threads);
  if (directions) check_directions(*directions);
  if (device && !use_cuda) throw std::invalid_argument("X in device memory needs the cuda backend");
  if (use_cuda && problem_.X.source()) {
    throw std::invalid_argument("the cuda backend reads X from one array in host or device "
                                "memory, not from a source of row blocks: use backend='cpu'");
  }
  user_theta_ = theta_;
  // float32 products are a CPU option of the dense primal passes (the dual path is decided
  // below); elsewhere every pass, later ones included, stays float64.
  if (use_cuda || problem_.X.sparse()) problem_.X.set_mixed(false);
  if (!use_cuda && problem_.X.intercept() && problem_.X.has_data()) {
    // Centred on the weighted column means: the intercept's pivot then stays resolvable
    // however far the features sit from 0 (Design::set_centre).
    centre_ = design_centre(problem_.X, problem_.w, threads);
    if (!centre_.allFinite()) centre_.setZero();  // X's NaN / inf are named just below
    problem_.X.set_centre(centre_.data());
    point_to_kernel(problem_.X, theta_);
  }
  if (use_cuda) {
    if (cuda::eigen_align_bytes() != EIGEN_DEFAULT_ALIGN_BYTES) {
      throw std::runtime_error("this build's CUDA backend was compiled with another SIMD level "
                               "than the rest (Eigen alignment differs): rebuild");
    }
    cuda::Results res;
    gpu_ = cuda::attribute(problem_.X, device, problem_.family, problem_.y, problem_.w, theta_,
                           problem_.l2, &check_predictor_and_derivatives, res);
    r_ = std::move(res.r);
    a_ = std::move(res.a);
    h_ = std::move(res.h);
    gradient_ = std::move(res.g);
    timings_ = Timings{res.seconds[0], res.seconds[1], res.seconds[2]};
  } else {
    using clock = std::chrono::steady_clock;
    const auto seconds = [](clock::time_point a, clock::time_point b) {
      return std::chrono::duration<double>(b - a).count();
    };
    if (path == HessianPath::dual && !(problem_.l2 > 0)) {
      throw std::invalid_argument("the dual path needs a ridge penalty l2 > 0 (it inverts H "
                                  "through G = Y Y^T + l2 I)");
    }
    const bool dual = path == HessianPath::dual ||
                      (path == HessianPath::automatic &&
                       DualFactor::pays(problem_.X.rows(), problem_.X.params(), problem_.l2,
                                        problem_.X.sparse() != nullptr));
    if (dual) problem_.X.set_mixed(false);  // H built later (host_factor) in float64 too
    const auto t0 = clock::now();
    Vector z;  // z, (r, a) and, on the primal path, H on one pass over X
    // X^T r comes from this pass on the dual path and with mixed precision (whose leverage
    // pass reads float32 rows), else from the leverage pass.
    const bool gradient_here = dual || problem_.X.mixed();
    hessian_at(problem_.X, problem_.family, problem_.y, problem_.w, problem_.l2, theta_, z, r_,
               a_, H_, threads, gradient_here ? &gradient_ : nullptr, !dual);
    check_linear_predictor(problem_.X, z);
    check_derivatives(z, r_, a_);
    const auto t1 = clock::now();
    if (dual) {
      dual_ = std::make_unique<DualFactor>(problem_.X, a_, problem_.l2, threads);
      h_ = dual_->leverage();
      timings_ = Timings{seconds(t0, t1), seconds(t1, clock::now()), 0.0};
    } else {
      // The float32 products of a nearly singular H can lose its positive definiteness (and
      // those of huge features overflow float32): H again in float64 (mixed() then says so)
      // before the failure is reported.
      bool retry = false;
      try {
        factor_hessian(threads);
      } catch (const not_positive_definite&) {
        if (!problem_.X.mixed()) throw;
        retry = true;
      } catch (const std::invalid_argument&) {
        if (!problem_.X.mixed()) throw;
        retry = true;
      }
      if (retry) {
        problem_.X.set_mixed(false);
        rif::hessian(problem_.X, a_, problem_.l2, H_, threads);
        factor_hessian(threads);
      }
      const auto t2 = clock::now();
      if (directions && directions->cols() > 0 && !problem_.X.sparse()) {
        kept_ = std::make_unique<Projection>(project(*directions, threads));
      }
      rif::leverage(problem_.X, a_, L_, h_, threads, gradient_here ? nullptr : &r_,
                    gradient_here ? nullptr : &gradient_,  // else X^T r on the same pass
                    kept_ ? &kept_->U : nullptr, kept_ ? &kept_->P : nullptr);
      timings_ = Timings{seconds(t0, t1), seconds(t1, t2), seconds(t2, clock::now())};
    }
  }
  add_penalty_gradient(problem_, theta_, gradient_);
  check_gradient_finite(gradient_, "at theta");
  set_rescale();
}

void Attribution::set_rescale() {
  rescale_.resize(h_.size());
  for (Index i = 0; i < h_.size(); ++i) {
    const double gap = 1.0 - h_[i];
    rescale_[i] = gap <= singular_tolerance ? kInf : 1.0 / gap;
  }
}

namespace {

void check_state_shape(const AttributionState& s, const Design& X) {
  const Index n = X.rows(), p = X.params();
  const bool centred = s.centre.size() > 0;
  if (s.theta.size() != p || s.r.size() != n || s.a.size() != n || s.h.size() != n ||
      s.gradient.size() != p || s.H.rows() != p || s.H.cols() != p || s.L.rows() != p ||
      s.L.cols() != p || (centred && (!X.intercept() || s.centre.size() != X.features()))) {
    throw std::invalid_argument("the saved state's shapes do not fit X (n = " +
                                std::to_string(n) + ", p = " + std::to_string(p) + ")");
  }
  const bool finite = s.theta.allFinite() && s.centre.allFinite() && s.r.allFinite() &&
                      s.a.allFinite() && s.h.allFinite() && s.gradient.allFinite() &&
                      s.H.allFinite() && s.L.allFinite();
  if (!finite || !(s.L.diagonal().array() > 0).all()) {
    throw std::invalid_argument("the saved state is damaged: it holds NaN or inf, or a "
                                "factor that is not positive definite");
  }
}

}  // namespace

Attribution::Attribution(Problem problem, AttributionState state, int threads)
    : problem_(std::move(problem)) {
  threads_ = resolve_threads(threads);
  check_state_shape(state, problem_.X);
  centre_ = std::move(state.centre);
  theta_ = std::move(state.theta);
  if (centre_.size()) problem_.X.set_centre(centre_.data());
  user_theta_ = theta_;
  point_to_user(problem_.X, user_theta_);
  if (state.user_theta.size() == theta_.size()) {
    // the user's own numbers, not theta~ mapped back (which may differ in the last digit)
    if (!((state.user_theta - user_theta_).cwiseAbs().array() <=
          1e-12 * (1.0 + user_theta_.cwiseAbs().array())).all()) {
      throw std::invalid_argument("the saved state is damaged: theta and theta_kernel disagree");
    }
    user_theta_ = state.user_theta;
  }
  validate(problem_, user_theta_, threads_);
  // The state must be this data's at theta: r and a again from one pass z = X theta.
  Vector z, r, a;
  linear_predictor(problem_.X, theta_, z, threads_);
  derivatives(problem_.family, z, problem_.y, problem_.w, r, a);
  for (Index i = 0; i < z.size(); ++i) {
    const double tol = 1e-8 * (1.0 + std::abs(r[i]) + std::abs(a[i]));
    if (!(std::abs(r[i] - state.r[i]) <= tol && std::abs(a[i] - state.a[i]) <= tol)) {
      std::ostringstream msg;
      msg << "the saved attribution does not belong to this data: sample " << i
          << "'s residual is " << r[i] << " here and " << state.r[i]
          << " in the saved state (X, y, sample_weight or the family differ)";
      throw std::invalid_argument(msg.str());
    }
  }
  r_ = std::move(state.r);
  a_ = std::move(state.a);
  h_ = std::move(state.h);
  gradient_ = std::move(state.gradient);
  H_ = std::move(state.H);
  L_ = std::move(state.L);
  // r and a do not see X along directions where theta is 0: the leverages of 16 samples
  // spread over X again from the factor (16 p^2) catch such a change of X's columns.
  const Index n = problem_.X.rows(), k = std::min<Index>(n, 16);
  std::vector<std::int64_t> idx(static_cast<size_t>(k));
  for (Index j = 0; j < k; ++j) idx[static_cast<size_t>(j)] = j * n / k;
  const Vector root = a_.cwiseSqrt();
  Matrix rows(params(), k);
  problem_.X.gather(idx.data(), k, rows, root.data());
  L_.triangularView<Eigen::Lower>().solveInPlace(rows);
  for (Index j = 0; j < k; ++j) {
    const Index i = static_cast<Index>(idx[static_cast<size_t>(j)]);
    const double h = rows.col(j).squaredNorm();
    if (!(std::abs(h - h_[i]) <= 1e-6)) {
      std::ostringstream msg;
      msg << "the saved attribution does not belong to this data: sample " << i
          << "'s leverage is " << h << " here and " << h_[i]
          << " in the saved state (X differs)";
      throw std::invalid_argument(msg.str());
    }
  }
  if (state.kept) restore_kept(std::move(*state.kept), idx, rows);
  set_rescale();
}

void Attribution::restore_kept(Projection kept, const std::vector<std::int64_t>& idx,
                               Matrix& rows) {
  const Index n = problem_.X.rows(), p = params(), m = kept.V.cols();
  if (kept.V.rows() != p || kept.U.rows() != p || kept.U.cols() != m ||
      kept.scale.size() != m || kept.scale_u.size() != m || kept.P.rows() != n ||
      kept.P.cols() != m || !kept.V.allFinite() || !kept.U.allFinite() ||
      !kept.scale.allFinite() || !kept.scale_u.allFinite() || !kept.P.allFinite()) {
    throw std::invalid_argument("the saved state is damaged: its kept directions' shapes do "
                                "not fit X, or they hold NaN or inf");
  }
  // P = X~ U on the same sampled rows as the leverages: a P from other data is refused.
  const Index k = static_cast<Index>(idx.size());
  problem_.X.gather(idx.data(), k, rows, nullptr);
  for (Index j = 0; j < k; ++j) {
    const Index i = static_cast<Index>(idx[static_cast<size_t>(j)]);
    for (Index c = 0; c < m; ++c) {
      const double want = rows.col(j).dot(kept.U.col(c));
      const double size = rows.col(j).cwiseAbs().dot(kept.U.col(c).cwiseAbs());
      if (!(std::abs(want - kept.P(i, c)) <= 1e-10 * (1.0 + size))) {
        std::ostringstream msg;
        msg.precision(17);
        msg << "the saved attribution does not belong to this data: sample " << i
            << "'s projection on kept direction " << c << " is " << want << " here and "
            << kept.P(i, c) << " in the saved state (X differs)";
        throw std::invalid_argument(msg.str());
      }
    }
  }
  kept_ = std::make_unique<Projection>(std::move(kept));
}

AttributionState Attribution::state() const {
  host_factor();
  AttributionState s{theta_, centre_, r_, a_, h_, gradient_, H_, L_, user_theta_, {}};
  if (kept_) s.kept = *kept_;
  return s;
}

void Attribution::attach_host(const Design& X) {
  const Design& shape = problem_.X;
  if (X.rows() != shape.rows() || X.features() != shape.features() ||
      X.intercept() != shape.intercept() || !X.has_data()) {
    throw std::invalid_argument("attach_host: the host copy of X must have X's shape");
  }
  problem_.X = X;
}

namespace {

/// by_sample[idx[j]] for j < k: per-sample values in the order of the samples asked for, as the
/// device functions take them.
Vector at_positions(const std::int64_t* idx, Index k, const double* by_sample) {
  Vector out(k);
  for (Index j = 0; j < k; ++j) out[j] = by_sample[idx[j]];
  return out;
}

}  // namespace

void Attribution::gather(const std::int64_t* idx, Index k, Eigen::Ref<Matrix> out,
                         const double* scale) const {
  if (problem_.X.has_data() || !rows_on_device()) {
    require_host("gathering samples");
    problem_.X.gather(idx, k, out, scale);
    return;
  }
  const Vector coef = scale ? at_positions(idx, k, scale) : Vector();
  cuda::gather(*gpu_, idx, k, scale ? coef.data() : nullptr, out);
}

void Attribution::accumulate(const std::int64_t* idx, Index k, const double* coef,
                             Eigen::Ref<Vector> out) const {
  if (problem_.X.has_data() || !rows_on_device()) {
    require_host("summing samples");
    problem_.X.accumulate(idx, k, coef, out);
    return;
  }
  cuda::accumulate(*gpu_, idx, k, at_positions(idx, k, coef).data(), out);
}

cuda::PanelPtr Attribution::device_panel(const std::int64_t* idx, const double* scale,
                                         const std::vector<Index>& offsets, Vector& grams) const {
  if (!rows_on_device()) return nullptr;
  cuda::PanelPtr panel =
      cuda::woodbury_panel(*gpu_, idx, at_positions(idx, offsets.back(), scale), offsets, grams);
  if (panel) device_panels_.fetch_add(1, std::memory_order_relaxed);
  return panel;
}

void Attribution::require_host(const char* what) const {
  if (!problem_.X.has_data()) {
    throw std::logic_error(std::string(what) +
                           " runs on the CPU and needs X in host memory: attach a host copy");
  }
}

const Vector& Attribution::gradient_at_zero() const {
  require_host("retraining");
  std::call_once(zero_once_, [this] {
    Vector r0, a0;
    derivatives(problem_.family, Vector::Zero(problem_.X.rows()), problem_.y, problem_.w, r0, a0);
    problem_.X.multiply_transposed(r0, gradient_zero_, threads_);
  });
  return gradient_zero_;
}

void Attribution::host_factor() const {
  // (Not std::call_once: a throwing callable hangs later calls on some libstdc++ versions.)
  if ((!gpu_ && !dual_) || factor_ready_.load(std::memory_order_acquire)) return;
  const std::lock_guard<std::mutex> lock(factor_mutex_);
  if (factor_ready_.load(std::memory_order_relaxed)) return;
  if (gpu_) {
    cuda::fetch_factor(*gpu_, H_, L_);
  } else {  // the dual path: the primal H and factor, once, for the queries that need them
    rif::hessian(problem_.X, a_, problem_.l2, H_, threads_);
    factor_hessian(threads_);
  }
  factor_ready_.store(true, std::memory_order_release);
}

void Attribution::factor_hessian(int threads) const {
  check_hessian_finite(problem_.X, H_);
  L_ = H_;
  cholesky_in_place(L_, "The Hessian H = X^T diag(a) X + l2 P at theta", threads,
                    hessian_advice(problem_.X.features(), problem_.X.intercept(), problem_.l2));
}

void Attribution::host_solve(Eigen::Ref<Matrix> v, int threads) const {
  if (dual_) {
    dual_->solve(v, threads);
    return;
  }
  host_factor();
  solve_factored(L_, v);
}

Matrix Attribution::hessian() const {
  host_factor();
  Matrix full = H_.selfadjointView<Eigen::Lower>();
  if (const double* c = problem_.X.centre()) {
    // H = T^T H~ T with T = [I 0; c^T 1]: H_bb = s, H_beta,b = b + s c, and
    // H_beta,beta = A + b c^T + c b^T + s c c^T for H~ = [A b; b^T s].
    const Index d = problem_.X.features();
    const Eigen::Map<const Vector> cv(c, d);
    const double s = full(d, d);
    const Vector b = full.col(d).head(d);
    full.topLeftCorner(d, d) += b * cv.transpose() + cv * b.transpose() + s * cv * cv.transpose();
    full.col(d).head(d) = b + s * cv;
    full.row(d).head(d) = full.col(d).head(d).transpose();
  }
  return full;
}

void Attribution::solve(Eigen::Ref<Matrix> v) const {
  for (Index j = 0; j < v.cols(); ++j) dual_to_kernel(problem_.X, v.col(j));
  solve_kernel(v);
  for (Index j = 0; j < v.cols(); ++j) point_to_user(problem_.X, v.col(j));
}

void Attribution::solve_kernel(Eigen::Ref<Matrix> v) const {
  if (v.rows() != params()) {
    std::ostringstream msg;
    msg << "the vector to solve with must have " << params() << " rows, got " << v.rows();
    throw std::invalid_argument(msg.str());
  }
  if (gpu_) {
    cuda::solve(*gpu_, v);  // the factor stays on the device
  } else {
    host_solve(v, threads_);
  }
}

void Attribution::influence_rows(const std::int64_t* idx, Index k, bool rescaled,
                                 Eigen::Ref<RowMatrix> out, int threads) const {
  const Index p = params(), n = problem_.X.rows();
  for (Index j = 0; j < k; ++j) {
    if (idx[j] < 0 || idx[j] >= n) throw std::invalid_argument("indices: out of range");
  }
  if (rows_on_device()) {
    // On the GPU from X and L kept there; singular removals (rescale inf) become inf rows.
    Vector coef(k);
    for (Index j = 0; j < k; ++j) {
      const Index i = static_cast<Index>(idx[j]);
      const double s = rescaled ? rescale_[i] : 1.0;
      coef[j] = std::isinf(s) ? 0.0 : r_[i] * s;
    }
    cuda::influence_rows(*gpu_, idx, k, coef, out);
    for (Index j = 0; j < k; ++j) {
      if (rescaled && std::isinf(rescale_[idx[j]])) out.row(j).setConstant(kInf);
    }
    return;  // (the GPU backend never centres)
  }
  require_host("per-sample influence rows");
  if (!dual_) host_factor();  // before the parallel region
  threads = resolve_threads(threads);
  const Index block = block_rows(p);
  // H^{-1} (c_i x_i) with c_i = r_i (times the rescaling): scaled before the solve, so that a
  // sample without residual gets exactly 0 even where H^{-1} x_i alone would overflow.
  Vector coef(n);
  for (Index i = 0; i < n; ++i) {
    const double s = rescaled ? rescale_[i] : 1.0;
    coef[i] = std::isinf(s) ? 0.0 : r_[i] * s;
  }
  std::vector<Matrix> buffers(static_cast<size_t>(chunk_threads(k, block, threads)));
  parallel_chunks(k, block, threads, [&](int t, Index begin, Index count) {
    Matrix& buf = buffers[static_cast<size_t>(t)];
    buf.resize(p, count);
    problem_.X.gather(idx + begin, count, buf, coef.data());
    if (dual_) {
      dual_->solve_samples(idx + begin, count, coef.data(), buf, 1);
    } else {
      host_solve(buf, 1);
    }
    for (Index j = 0; j < count; ++j) {
      const Index i = static_cast<Index>(idx[begin + j]);
      if (rescaled && std::isinf(rescale_[i])) {
        out.row(begin + j).setConstant(kInf);
      } else {
        out.row(begin + j) = buf.col(j).transpose();
      }
    }
    rows_to_user(problem_.X, out.middleRows(begin, count));
  });
}

void Attribution::group_sums(const SetList& sets, bool rescaled, Eigen::Ref<RowMatrix> out,
                             int threads) const {
  const Index p = params(), n = problem_.X.rows();
  check_sets(sets, n);
  threads = resolve_threads(threads);
  Vector coef = rescaled ? Vector(r_.cwiseProduct(rescale_)) : r_;
  Matrix G = Matrix::Zero(p, sets.count);
  std::vector<char> infinite(static_cast<size_t>(sets.count), 0);
  parallel_chunks(sets.count, 1, threads, [&](int, Index j, Index) {
    for (Index e = 0; e < sets.size(j); ++e) {
      if (rescaled && std::isinf(rescale_[sets.begin(j)[e]])) infinite[static_cast<size_t>(j)] = 1;
    }
    if (!infinite[static_cast<size_t>(j)]) {
      accumulate(sets.begin(j), sets.size(j), coef.data(), G.col(j));
    }
  });
  solve_kernel(G);
  out = G.transpose();
  rows_to_user(problem_.X, out);
  for (Index j = 0; j < sets.count; ++j) {
    if (infinite[static_cast<size_t>(j)]) out.row(j).setConstant(kInf);
  }
}

void Attribution::newton_step(const SetList& sets, Eigen::Ref<RowMatrix> out,
                              std::vector<Index>& singular, int threads) const {
  const Index p = params(), n = problem_.X.rows(), m = sets.count;
  check_sets(sets, n);
  threads = resolve_threads(threads);
  std::vector<char> is_singular(static_cast<size_t>(m), 0);
  std::vector<Index> small, large;
  for (Index j = 0; j < m; ++j) (sets.size(j) <= woodbury_limit() ? small : large).push_back(j);

  // Small sets by Woodbury, batched: chunks of about woodbury_panel_columns() columns (each
  // set's samples plus its right-hand side), at least one set per chunk.
  const Index budget = woodbury_panel_columns(p);
  for (size_t s0 = 0; s0 < small.size();) {
    std::vector<Index> chunk;
    for (Index cols = 0; s0 < small.size();) {
      const Index need = sets.size(small[s0]) + 1;
      if (!chunk.empty() && cols + need > budget) break;
      cols += need;
      chunk.push_back(small[s0++]);
    }
    const WoodburyBatch batch(*this, sets, chunk, threads);
    std::vector<Index> which;  // the chunk's positions whose H_{-T} is not singular
    for (Index q = 0; q < static_cast<Index>(chunk.size()); ++q) {
      if (batch.singular(q)) {
        is_singular[static_cast<size_t>(chunk[static_cast<size_t>(q)])] = 1;
      } else {
        which.push_back(q);
      }
    }
    const Index cols = static_cast<Index>(which.size());
    Matrix rhs = Matrix::Zero(p, cols);  // sum_{i in T} r_i x_i per set
    parallel_chunks(cols, 1, threads, [&](int, Index c, Index) {
      const Index j = chunk[static_cast<size_t>(which[static_cast<size_t>(c)])];
      accumulate(sets.begin(j), sets.size(j), r_.data(), rhs.col(c));
    });
    batch.solve(rhs, which, threads);
    for (Index c = 0; c < cols; ++c) {
      out.row(chunk[static_cast<size_t>(which[static_cast<size_t>(c)])]) = rhs.col(c).transpose();
    }
  }

  // Large sets: a fresh factor of H_{-T} each.
  if (!large.empty()) host_factor();  // before the parallel region below
  for_each_item(static_cast<Index>(large.size()), threads, [&](Index c, int inner) {
    const Index j = large[static_cast<size_t>(c)];
    const DowndatedSolver solver(*this, sets.begin(j), sets.size(j));
    if (solver.singular()) {
      is_singular[static_cast<size_t>(j)] = 1;
      return;
    }
    Vector g = Vector::Zero(p);
    accumulate(sets.begin(j), sets.size(j), r_.data(), g);
    solver.solve(g, inner);
    out.row(j) = g.transpose();
  });
  singular.clear();
  const std::vector<char> empty = structurally_singular(*this, sets, a_);
  for (Index j = 0; j < m; ++j) {
    if (is_singular[static_cast<size_t>(j)] || empty[static_cast<size_t>(j)]) {
      out.row(j).setConstant(kInf);
      singular.push_back(j);
    }
  }
  rows_to_user(problem_.X, out);
}

}  // namespace rif
