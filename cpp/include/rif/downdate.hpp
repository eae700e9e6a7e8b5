#pragma once
/// Solves with H_{-T} = H - sum_{i in T} a_i x_i x_i^T, the Hessian at theta_hat without the set
/// T, from the factor of H already held: Woodbury with a k x k system for small sets, many sets
/// at once (WoodburyBatch), and a fresh Cholesky factor of H_{-T} for large ones
/// (DowndatedSolver).

#include "rif/attribution.hpp"

#include <vector>

namespace rif {

/// Whether removing each set leaves an unpenalised parameter with no data, which makes the
/// problem without it singular whatever the pivots say: the intercept when no sample outside
/// the set has positive `support` (the curvature a for the Hessian at theta_hat, the weights
/// for a refit), and, when l2 = 0, a feature that is zero on every such sample. Decided by
/// counting, never by rounding. An empty `support` means all ones.
std::vector<char> structurally_singular(const Attribution& attribution, const SetList& sets,
                                        const Vector& support);

/// H_{-T} factored afresh: for sets above Attribution::woodbury_limit().
class DowndatedSolver {
 public:
  /// Factors H_{-T} for the k samples idx[0..k). singular() tells whether H_{-T} is
  /// (numerically) singular, in which case solve() must not be called.
  DowndatedSolver(const Attribution& attribution, const std::int64_t* idx, Index k);

  bool singular() const { return singular_; }

  /// g <- H_{-T}^{-1} g, the triangular solves split over `threads`.
  void solve(Eigen::Ref<Vector> g, int threads = 1) const;

 private:
  Matrix F_;  ///< the factor of H_{-T}
  bool singular_ = false;
};

/// Columns of one WoodburyBatch panel plus its right-hand sides that newton_step aims for:
/// 256 MiB of doubles (a positive integer in RIF_WOODBURY_COLUMNS overrides it, for tests).
Index woodbury_panel_columns(Index p);

/// Woodbury for many small sets at once (each at most Attribution::woodbury_limit() samples).
/// H_{-T} = L (I - B B^T) L^T with B = L^{-1} U, U = the set's columns sqrt(a_i) x_i, and
/// I - B B^T is invertible iff M = I - B^T B (k x k) is. The columns of all sets form one panel
/// B (p x K), so the triangular solves of every set and right-hand side run as multi-column
/// solves (level-3 BLAS) instead of one pair of vector solves per set; with X and the factor in
/// GPU memory the panel stays there and they run on the device, only the k x k systems on the
/// host.
class WoodburyBatch {
 public:
  /// Prepares sets[members[q]] for q in [0, members.size()).
  WoodburyBatch(const Attribution& attribution, const SetList& sets,
                const std::vector<Index>& members, int threads);
  ~WoodburyBatch();
  WoodburyBatch(const WoodburyBatch&) = delete;
  WoodburyBatch& operator=(const WoodburyBatch&) = delete;

  /// Whether H_{-T} of member q is (numerically) singular; solve() must then not be asked for it.
  bool singular(Index q) const { return singular_[static_cast<size_t>(q)] != 0; }

  /// Column c of G <- H_{-T}^{-1} G(:, c) with T the set of member which[c] (not singular).
  void solve(Matrix& G, const std::vector<Index>& which, int threads) const;

 private:
  const Attribution& A_;
  std::vector<Index> offset_;  ///< member q's columns of the panel: [offset_[q], offset_[q + 1])
  Matrix B_;                   ///< the panel in host memory (empty when it is on the device)
  cuda::PanelPtr device_;      ///< the panel in device memory, or null
  std::vector<Matrix> M_;      ///< the factors of I - B_q^T B_q
  std::vector<char> singular_;
};

}  // namespace rif
