#pragma once
/// The attribution object: given X, labels, weights and fitted parameters theta, it computes the
/// Hessian, its Cholesky factor and every sample's leverage once, then answers IF / RIF / NS
/// questions from them. All estimates are removal effects, theta_{-T} - theta_hat.

#include "rif/cuda_backend.hpp"
#include "rif/design.hpp"
#include "rif/dual.hpp"
#include "rif/glm.hpp"
#include "rif/types.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace rif {

struct Problem {
  Design X;
  Family family;
  Vector y;       ///< n labels
  Vector w;       ///< n sample weights, or empty for all ones
  double l2 = 0;  ///< penalty (l2 / 2) ||theta||_P^2, the intercept unpenalised
};

/// Checks labels, weights, theta's length, l2 and the finiteness of y, w and theta; throws
/// std::invalid_argument with a message that names the argument. X is checked by
/// linear_predictor(), on the pass that needs it anyway.
void validate(const Problem& problem, const Vector& theta, int threads);

/// z = X theta; throws std::invalid_argument naming X's first NaN/inf entry (or the overflow).
void linear_predictor(const Design& X, const Vector& theta, Vector& z, int threads);

/// Throws like linear_predictor when z = X theta is not finite (naming X's entry when X is in
/// host memory, the row otherwise).
void check_linear_predictor(const Design& X, const Vector& z);

/// Throws std::invalid_argument unless every index of every set lies in [0, n).
void check_sets(const SetList& sets, Index n);

/// w_i dloss/dz at z for sample i (w_i = 1 without weights): the sample's residual r_i.
inline double weighted_residual(const Problem& P, Index i, double z) {
  const double w = P.w.size() ? P.w[i] : 1.0;
  return w == 0 ? 0.0 : w * first_derivative(P.family, P.y[i], z);  // as derivatives() does
}

/// g += l2 P theta: the penalty's gradient (P = identity on coefficients, 0 on the intercept).
inline void add_penalty_gradient(const Problem& P, const Eigen::Ref<const Vector>& theta,
                                 Eigen::Ref<Vector> g) {
  const Index d = P.X.features();
  g.head(d) += P.l2 * theta.head(d);
}

/// Throws std::invalid_argument, naming `where`, when the gradient g is not finite.
void check_gradient_finite(const Vector& g, const char* where);

/// Gradient of F at theta: X^T r + l2 P theta.
Vector gradient(const Problem& problem, const Vector& theta, const Vector& r, int threads);

/// Directions V prepared for a pass over X: U = H~^{-1} V~ (V~: V in the kernel's dual
/// coordinates), each column divided by its largest entry before the solve (scale) and after
/// it (scale_u), so that a score multiplies them back only after the residual; with P = X~ U
/// once a pass filled it.
struct Projection {
  Matrix V, U;
  Vector scale, scale_u;
  RowMatrix P;
};

/// What an Attribution computed from its data, in the kernel's coordinates: enough to build it
/// again without the passes over X and the factorisation (a saved file: Attribution::state()
/// and the restoring constructor).
struct AttributionState {
  Vector theta;   ///< theta~ (the kernel's parameters)
  Vector centre;  ///< the design's centre (empty: not centred)
  Vector r, a, h, gradient;
  Matrix H, L;    ///< H~ and its Cholesky factor (lower triangles)
  Vector user_theta;  ///< theta as the user gave it (empty: theta~ mapped back)
  std::optional<Projection> kept;  ///< the constructor's directions with their P (or none)
};

/// How the CPU path handles H: the primal p x p factor, or the dual n x n form (rif/dual.hpp)
/// when n < p roughly; automatic chooses by DualFactor::pays.
enum class HessianPath { automatic, primal, dual };

class Attribution {
 public:
  /// Validates, then computes z, (r, a), H, its factor L and the leverages. With use_cuda these
  /// come from the GPU backend, which keeps X in device memory when it fits, so that scores()
  /// runs there too; `device` (with use_cuda) is X already in device memory, and problem.X is
  /// then a shape-only view until attach_host() gives a host copy for the CPU-side queries.
  /// On the dual path (CPU) the leverages, solves, scores, IF / RIF rows and group sums use the
  /// n x n form; H and L are built when a query first needs them (Newton steps of large sets,
  /// retraining, hessian(), state()).
  /// `directions` (p x m, the user's parameters), when given, are metric gradients whose scores
  /// will be asked for: on the CPU's dense primal path their projections X H^{-1} V (float64)
  /// come from the leverage pass, and scores() with any of these columns then reads X no more
  /// (elsewhere they are computed on scores()'s own pass, as without them).
  Attribution(Problem problem, Vector theta, int threads, bool use_cuda = false,
              const cuda::DeviceMatrix* device = nullptr,
              HessianPath path = HessianPath::automatic, const Matrix* directions = nullptr);

  /// Whether the object answers from the dual form (rif/dual.hpp).
  bool dual() const { return dual_ != nullptr; }
  /// Whether its Hessian and leverages came from the mixed-precision passes (Design::mixed(),
  /// kept only on the CPU's dense primal path: the dual path, sparse X and the GPU compute in
  /// float64; so do the passes after a float32 H failed to factor). Later passes over X
  /// (retraining's refreshed Hessians) use the same precision.
  bool mixed() const { return problem_.X.mixed(); }

  /// Rebuilds a CPU object from a saved state on host data: checks the state's shapes, and that
  /// its r and a are the data's at its theta (one pass z = X theta, no Hessian, no factor).
  Attribution(Problem problem, AttributionState state, int threads);
  /// The state to save (host factor; with the GPU backend fetched from the device).
  AttributionState state() const;

  /// Whether X is readable in host memory (false for device X until attach_host()).
  bool has_host_data() const { return problem_.X.has_data(); }
  /// Gives a host copy of device X (same shape and dtype) to the queries that run on the CPU.
  void attach_host(const Design& X);
  /// Throws std::logic_error naming `what` unless X is readable in host memory.
  void require_host(const char* what) const;
  /// Whether influence_rows() runs on the GPU (X and the factor kept in device memory).
  bool rows_on_device() const { return gpu_ && cuda::resident(*gpu_); }
  /// Samples idx[0..k) as the columns of out (p x k), column j scaled by scale[idx[j]] when
  /// given: from host X, or gathered on the GPU when X is only there.
  void gather(const std::int64_t* idx, Index k, Eigen::Ref<Matrix> out,
              const double* scale = nullptr) const;
  /// out += sum_j coef[idx[j]] x_{idx[j]} (coef indexed by sample), from host or device X.
  void accumulate(const std::int64_t* idx, Index k, const double* coef,
                  Eigen::Ref<Vector> out) const;

  /// cuda::woodbury_panel on this attribution's device state for samples idx[0..offsets.back()),
  /// column j scaled by scale[idx[j]] (indexed by sample, as for gather()); null without a
  /// device state, when X is not in device memory, or when the panel does not fit there.
  cuda::PanelPtr device_panel(const std::int64_t* idx, const double* scale,
                              const std::vector<Index>& offsets, Vector& grams) const;
  /// How many Woodbury panels device_panel() has built on the GPU (for tests and diagnostics).
  long device_panels() const { return device_panels_.load(std::memory_order_relaxed); }
  /// cuda::woodbury_solve on this attribution's device state (a panel from device_panel()).
  void device_woodbury_solve(const cuda::Panel& panel, Matrix& G, const std::vector<Index>& begin,
                             const std::vector<Index>& count,
                             const std::function<void(Vector&)>& correct) const {
    cuda::woodbury_solve(*gpu_, panel, G, begin, count, correct);
  }

  /// Whether device_gradients() is available: the passes of retraining then run on the GPU.
  bool passes_on_device() const { return rows_on_device(); }
  /// G = X^T r(X Theta) (p x m, all samples with their weights, no penalty) on the GPU.
  void device_gradients(const Matrix& Theta, Matrix& G) const {
    cuda::gradients(*gpu_, problem_.X, Theta, G);
  }

  /// The problem as the kernel sees it: with an intercept (on the CPU) its design is centred
  /// on the weighted column means of X (Design::set_centre), and every vector below marked
  /// "kernel" is in the parameters theta~ of that centred design; the others are the user's.
  const Problem& problem() const { return problem_; }
  /// theta~ (kernel).
  const Vector& theta() const { return theta_; }
  /// theta exactly as the user gave it.
  const Vector& user_theta() const { return user_theta_; }
  const Vector& residuals() const { return r_; }
  const Vector& curvature() const { return a_; }
  const Vector& leverage() const { return h_; }
  /// 1 / (1 - h_i), +inf for singular removals (h_i within singular_tolerance of 1).
  const Vector& rescale() const { return rescale_; }
  /// The Cholesky factor L of H (with the GPU backend copied from the device on first use).
  const Matrix& factor() const {
    host_factor();
    return L_;
  }
  /// ||grad F(theta)|| in the user's parameters.
  double gradient_norm() const { return user_norm(problem_.X, gradient_); }
  /// grad F(theta) = X^T r + l2 P theta at the attribution's theta (kernel).
  const Vector& gradient() const { return gradient_; }
  Index params() const { return problem_.X.params(); }
  /// grad F(0) = X^T r(0) (the penalty vanishes at 0; kernel), computed on first use and kept:
  /// the scale of retraining tolerances.
  const Vector& gradient_at_zero() const;

  /// Full symmetric H (both triangles), in the user's parameters.
  Matrix hessian() const;
  /// The same in the kernel's parameters (lower triangle filled).
  const Matrix& kernel_hessian() const {
    host_factor();
    return H_;
  }

  /// v <- H^{-1} v, column by column, in the user's parameters.
  void solve(Eigen::Ref<Matrix> v) const;
  /// The same in the kernel's (v a kernel gradient, the result a kernel point).
  void solve_kernel(Eigen::Ref<Matrix> v) const;

  /// Rows IF_i = r_i H^{-1} x_i (times rescale_i when rescaled) for samples idx[0..k), written
  /// to out (k x p, row-major).
  void influence_rows(const std::int64_t* idx, Index k, bool rescaled, Eigen::Ref<RowMatrix> out,
                      int threads) const;

  /// out(i, j) = <V_j, IF_i> (or RIF_i when rescaled) for every sample i; V is p x m, out n x m.
  /// One pass over X, or none when every column of V is one of the constructor's `directions`
  /// whose projections the leverage pass kept (the same numbers as that pass would give, to
  /// rounding: the products are blocked differently).
  void scores(const Matrix& V, bool rescaled, Eigen::Ref<RowMatrix> out, int threads) const;
  /// How many directions' projections the leverage pass kept (0 without `directions`, or where
  /// it could not: the dual path, sparse X, the GPU).
  Index kept_directions() const { return kept_ ? kept_->V.cols() : 0; }

  /// Row j of out (m x p): sum over set j of IF_i (or RIF_i).
  void group_sums(const SetList& sets, bool rescaled, Eigen::Ref<RowMatrix> out,
                  int threads) const;

  /// Row j of out: the Newton step H_{-T}^{-1} sum_{i in T} g_i for set T = sets[j]. Small sets
  /// use Woodbury on the cached factor, large ones factor H_{-T}. Sets whose removal makes H
  /// singular get +inf and are listed in `singular`.
  void newton_step(const SetList& sets, Eigen::Ref<RowMatrix> out, std::vector<Index>& singular,
                   int threads) const;

  /// Wall-clock seconds of the construction's stages.
  struct Timings {
    double hessian = 0, cholesky = 0, leverage = 0;
  };
  const Timings& timings() const { return timings_; }

  /// Largest set size for which newton_step uses Woodbury rather than a fresh factorisation.
  Index woodbury_limit() const { return std::max<Index>(1, params() / 2); }

 private:
  Problem problem_;
  Vector centre_;  ///< the design's centre (empty when not centred)
  Vector theta_, user_theta_, r_, a_, h_, rescale_;
  mutable Matrix H_, L_;  ///< with the GPU backend filled by host_factor() on first use
  mutable std::mutex factor_mutex_;
  mutable std::atomic<bool> factor_ready_{false};
  /// With the GPU backend, copies H and L from the device once; no-op otherwise.
  void host_factor() const;
  /// L_ = the Cholesky factor of H_ (checked finite first; named errors when it is not
  /// positive definite).
  void factor_hessian(int threads) const;
  /// v <- H~^{-1} v on the host: the dual form's solve, or the (host) factor's.
  void host_solve(Eigen::Ref<Matrix> v, int threads) const;
  std::unique_ptr<DualFactor> dual_;  ///< the dual form, on the dual path
  /// Throws std::invalid_argument unless V has one row per parameter.
  void check_directions(const Matrix& V) const;
  Projection project(const Matrix& V, int threads) const;
  /// Turns rows [begin, begin + rows.rows()) of X~ U, in place, into scores: times r_i (and
  /// rescale_i), then the columns' scales.
  void finish_scores(Eigen::Ref<RowMatrix> rows, Index begin, bool rescaled, const Vector& scale,
                     const Vector& scale_u) const;
  /// Scores from kept_'s projections when each column of V equals one of its directions: false,
  /// touching nothing, otherwise.
  bool kept_scores(const Matrix& V, bool rescaled, Eigen::Ref<RowMatrix> out, int threads) const;
  std::unique_ptr<Projection> kept_;  ///< the constructor's directions, projected on its pass
  /// kept_ from a saved state, its P checked against X~ U on the sampled rows `idx` (`rows`:
  /// p x idx.size() of room).
  void restore_kept(Projection kept, const std::vector<std::int64_t>& idx, Matrix& rows);
  /// rescale_ = 1 / (1 - h), inf where the removal leaves H singular.
  void set_rescale();
  Vector gradient_;
  Timings timings_;
  cuda::StatePtr gpu_;  ///< the device's state when built with use_cuda
  int threads_ = 1;  ///< the threads the object was built with (for lazily computed parts)
  mutable std::once_flag zero_once_;
  mutable std::atomic<long> device_panels_{0};
  mutable Vector gradient_zero_;
};

}  // namespace rif
