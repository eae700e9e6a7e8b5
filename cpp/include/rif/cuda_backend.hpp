#pragma once
/// The optional GPU backend (cuBLAS + cuSOLVER): an attribution's passes over X on one device.
/// This header has no CUDA types, so the rest of the kernel compiles without the toolkit; builds
/// without RIF_CUDA link a stub that reports the backend as absent.

#include "rif/design.hpp"
#include "rif/glm.hpp"
#include "rif/types.hpp"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rif::cuda {

/// Whether this build contains the CUDA backend.
bool compiled();

/// Whether a usable CUDA device is present (false in CPU-only builds or without a driver).
bool available();

/// Name of device 0, or why there is none.
std::string device_name();

/// EIGEN_DEFAULT_ALIGN_BYTES as the backend was compiled: Eigen objects cross between it and the
/// C++ files, so it must equal theirs (a build whose nvcc host pass missed -march would not).
int eigen_align_bytes();

/// X already in device memory: C-contiguous row-major rows x cols, float64 or float32, on the
/// current device. The caller keeps it alive and unchanged while the attribution uses it.
struct DeviceMatrix {
  const void* data = nullptr;
  Index rows = 0;
  Index cols = 0;
  bool f32 = false;
};

/// What the device keeps for one attribution: its handles and streams, and X in device memory
/// when X came from there or fitted (so later passes need no copy); otherwise X is streamed
/// from host memory again on each pass.
class State;
struct StateDeleter {
  void operator()(State* state) const;
};
using StatePtr = std::unique_ptr<State, StateDeleter>;

/// The attribution's per-sample and dense results, computed on the device.
struct Results {
  Vector z, r, a;  ///< linear predictors and the family's derivatives (weights applied)
  Vector h;        ///< leverages a_i ||L^{-1} x_i||^2
  Vector g;        ///< X^T r (the penalty's gradient is not included)
  double seconds[3] = {0, 0, 0};  ///< Hessian pass (with the copy of X), factor, leverage pass
  bool resident = false;          ///< X stays in device memory for later passes
};

/// Builds an attribution on the GPU. X is `device` when given (already in device memory, used
/// in place), otherwise `host` (streamed in row blocks through pinned, double-buffered copies,
/// and kept in device memory when it fits). One pass computes z = X theta, r, a and the
/// Hessian block by block as the rows arrive; `check_inputs(host, out)` runs on the host with
/// z, r and a before the factorisation (it throws for non-finite ones); a second pass gives the
/// leverages and X^T r. Throws not_positive_definite like the CPU path, std::runtime_error for
/// device errors.
StatePtr attribute(const Design& host, const DeviceMatrix* device, Family family, const Vector& y,
                   const Vector& w, const Vector& theta, double l2,
                   void (*check_inputs)(const Design&, const Results&), Results& out);

/// out = X H^{-1} V (n x m; the intercept's ones column included) on the device, with the
/// factor kept there, X from the state (device memory) or streamed from `host` again.
void project(State& state, const Design& host, const Matrix& V, Eigen::Ref<RowMatrix> out);

/// V <- H^{-1} V (p x m) with the factor kept on the device (potrs).
void solve(State& state, Eigen::Ref<Matrix> V);

/// H (lower triangle) and its Cholesky factor L, copied from the device (they stay there: the
/// host copies are made only for the queries that run on the CPU).
void fetch_factor(State& state, Matrix& H, Matrix& L);

/// Rows out(j, :) = coef[j] H^{-1} x_{idx[j]} (k x p) on the device, from X in device memory and
/// the factor kept there. Returns false (and does nothing) when X is not in device memory.
bool influence_rows(State& state, const std::int64_t* idx, Index k, const Vector& coef,
                    Eigen::Ref<RowMatrix> out);

/// G = X^T r(X Theta) (p x m) for m parameter vectors at once, with the labels, weights and
/// family of the attribution: the pass over X of each retraining iteration, on the device.
void gradients(State& state, const Design& host, const Matrix& Theta, Matrix& G);

/// Samples idx[0..k) of X in device memory as the columns of out (p x k), column j times
/// coef[j] when coef is given: the few rows that group effects and Newton steps need, without a
/// host copy of X.
void gather(State& state, const std::int64_t* idx, Index k, const double* coef,
            Eigen::Ref<Matrix> out);

/// out += sum_j coef[j] x_{idx[j]} from X in device memory (p values per slice come back);
/// coef must be given (coef[j] per position j, unlike Design::accumulate's per sample).
void accumulate(State& state, const std::int64_t* idx, Index k, const double* coef,
                Eigen::Ref<Vector> out);

/// B = L^{-1} U for the Woodbury solves of many small sets, kept in device memory: U's columns
/// are samples of X in device memory, each scaled.
class Panel;
struct PanelDeleter {
  void operator()(Panel* panel) const;
};
using PanelPtr = std::unique_ptr<Panel, PanelDeleter>;

/// The panel B = L^{-1} U (p x K) with U(:, j) = scale[j] x_{idx[j]}, from X and the factor in
/// device memory, and grams = the blocks B_q^T B_q of the segments [offsets[q], offsets[q + 1])
/// (offsets.back() = K), packed one after another (each k x k, column-major). Returns null when
/// X is not in device memory or the panel would not fit in free device memory.
PanelPtr woodbury_panel(State& state, const std::int64_t* idx, const Vector& scale,
                        const std::vector<Index>& offsets, Vector& grams);

/// For each column c of G (p x q): b = L^{-1} G(:, c) and t = B_c^T b with B_c the panel's
/// columns [begin[c], begin[c] + count[c]); then `correct` on the host with every t packed one
/// after another (it overwrites them in place); then G(:, c) = L^{-T} (b + B_c t). On the device.
void woodbury_solve(State& state, const Panel& panel, Matrix& G, const std::vector<Index>& begin,
                    const std::vector<Index>& count, const std::function<void(Vector&)>& correct);

/// Whether X stays in device memory for this state (so influence_rows runs there).
bool resident(const State& state);

/// Copies a device matrix into host memory (rows * cols values of its dtype at `out`).
void copy_to_host(const DeviceMatrix& X, void* out);

}  // namespace rif::cuda
