#include "rif/downdate.hpp"

#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace rif {

std::vector<char> structurally_singular(const Attribution& A, const SetList& sets,
                                        const Vector& support) {
  const Problem& P = A.problem();
  const Design& X = P.X;
  const Index n = X.rows(), d = X.features(), m = sets.count;
  const auto supported = [&](Index i) { return support.size() == 0 || support[i] > 0; };
  std::vector<char> out(static_cast<size_t>(m), 0);
  const bool features_unpenalised = P.l2 == 0 && d > 0;
  if (!X.intercept() && !features_unpenalised) return out;
  // The intercept needs only counts; X's entries (host memory) only when l2 = 0.
  if (features_unpenalised) A.require_host("the check for parameters left without data");
  // Per parameter (features, then the intercept): how many supported samples touch it.
  std::vector<Index> total(static_cast<size_t>(d) + 1, 0);
  std::vector<double> row(static_cast<size_t>(d));
  const auto add_row = [&](Index i, std::vector<Index>& counts, Index sign) {
    if (features_unpenalised) {  // the data as stored: centring would hide its zeros
      X.raw_row(i, row.data());
      for (Index k = 0; k < d; ++k) counts[static_cast<size_t>(k)] += sign * (row[k] != 0);
    }
    counts[static_cast<size_t>(d)] += sign;
  };
  if (features_unpenalised) {  // one pass over X's row blocks
    const Index block = block_rows(X.params());
    Matrix buffer;
    for (Index begin = 0; begin < n; begin += block) {
      check_interrupt();
      const Index count = std::min(block, n - begin);
      const auto rows = X.feature_block(begin, count, buffer);  // uncentred
      for (Index j = 0; j < count; ++j) {
        if (!supported(begin + j)) continue;
        for (Index k = 0; k < d; ++k) total[static_cast<size_t>(k)] += rows(k, j) != 0;
        ++total[static_cast<size_t>(d)];
      }
    }
  } else {
    for (Index i = 0; i < n; ++i) total[static_cast<size_t>(d)] += supported(i);
  }
  for (Index j = 0; j < m; ++j) {
    std::vector<Index> left = total;
    for (Index e = 0; e < sets.size(j); ++e) {
      const Index i = static_cast<Index>(sets.begin(j)[e]);
      if (supported(i)) add_row(i, left, -1);
    }
    bool empty = X.intercept() && left[static_cast<size_t>(d)] == 0;
    for (Index k = 0; features_unpenalised && k < d && !empty; ++k) {
      empty = left[static_cast<size_t>(k)] == 0;
    }
    out[static_cast<size_t>(j)] = empty;
  }
  return out;
}

DowndatedSolver::DowndatedSolver(const Attribution& attribution, const std::int64_t* idx, Index k) {
  const Index p = attribution.params();
  const Vector root = attribution.curvature().cwiseSqrt();
  Matrix U(p, k);
  attribution.gather(idx, k, U, root.data());
  F_ = attribution.kernel_hessian().selfadjointView<Eigen::Lower>();
  F_.selfadjointView<Eigen::Lower>().rankUpdate(U, -1.0);
  const Vector diag = F_.diagonal();
  // The criterion of the Woodbury path: a pivot that lost all but singular_tolerance of its
  // diagonal means H_{-T} is singular to working accuracy.
  singular_ = !try_cholesky_in_place(F_) ||
              (F_.diagonal().cwiseAbs2().array() <= singular_tolerance * diag.cwiseAbs().array())
                  .any();
}

void DowndatedSolver::solve(Eigen::Ref<Vector> g, int threads) const {
  solve_factored(F_, g, threads);
}

Index woodbury_panel_columns(Index p) {
  if (const char* env = std::getenv("RIF_WOODBURY_COLUMNS")) {  // test knob: many chunks
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end == env || *end != '\0' || v <= 0) {
      throw std::invalid_argument(
          std::string("RIF_WOODBURY_COLUMNS must be a positive integer, got '") + env + "'");
    }
    return static_cast<Index>(v);
  }
  constexpr Index kPanelDoubles = Index{32} << 20;  // 256 MiB
  return std::max<Index>(1, kPanelDoubles / std::max<Index>(p, 1));
}

WoodburyBatch::WoodburyBatch(const Attribution& attribution, const SetList& sets,
                             const std::vector<Index>& members, int threads)
    : A_(attribution) {
  const Index p = A_.params(), m = static_cast<Index>(members.size());
  offset_.assign(static_cast<size_t>(m) + 1, 0);
  std::vector<Index> gram_offset(static_cast<size_t>(m) + 1, 0);
  for (Index q = 0; q < m; ++q) {
    const Index k = sets.size(members[static_cast<size_t>(q)]);
    offset_[static_cast<size_t>(q) + 1] = offset_[static_cast<size_t>(q)] + k;
    gram_offset[static_cast<size_t>(q) + 1] = gram_offset[static_cast<size_t>(q)] + k * k;
  }
  const Index K = offset_.back();
  std::vector<std::int64_t> idx(static_cast<size_t>(K));
  for (Index q = 0; q < m; ++q) {
    const Index j = members[static_cast<size_t>(q)];
    std::copy(sets.begin(j), sets.begin(j) + sets.size(j),
              idx.begin() + offset_[static_cast<size_t>(q)]);
  }
  const Vector root = A_.curvature().cwiseSqrt();  // U's columns: sqrt(a_i) x_i
  Vector grams;
  device_ = A_.device_panel(idx.data(), root.data(), offset_, grams);
  if (!device_) {
    B_.resize(p, K);
    parallel_chunks(m, 1, threads, [&](int, Index q, Index) {
      const Index begin = offset_[static_cast<size_t>(q)];
      const Index k = offset_[static_cast<size_t>(q) + 1] - begin;
      A_.gather(idx.data() + begin, k, B_.middleCols(begin, k), root.data());
    });
    solve_lower_columns(A_.factor(), B_, false, threads);
  }
  M_.resize(static_cast<size_t>(m));
  singular_.assign(static_cast<size_t>(m), 0);
  parallel_chunks(m, 1, threads, [&](int, Index q, Index) {
    const size_t u = static_cast<size_t>(q);
    const Index begin = offset_[u], k = offset_[u + 1] - begin;
    Matrix& M = M_[u];
    M = Matrix::Identity(k, k);
    if (device_) {
      M -= Eigen::Map<const Matrix>(grams.data() + gram_offset[u], k, k);
    } else if (k > 0) {  // (an empty set's panel has no memory: Eigen must not touch it)
      M.selfadjointView<Eigen::Lower>().rankUpdate(B_.middleCols(begin, k).transpose(), -1.0);
    }
    // M's Cholesky pivots are the leverages' complements 1 - h for k = 1.
    singular_[u] = !try_cholesky_in_place(M) ||
                   (k > 0 && M.diagonal().minCoeff() <= std::sqrt(singular_tolerance));
  });
}

WoodburyBatch::~WoodburyBatch() = default;

void WoodburyBatch::solve(Matrix& G, const std::vector<Index>& which, int threads) const {
  // H_{-T}^{-1} g = L^{-T} (b + B M^{-1} B^T b), b = L^{-1} g, for each column and its set.
  const Index q = static_cast<Index>(which.size());
  if (G.cols() != q) throw std::invalid_argument("WoodburyBatch::solve: one set per column");
  std::vector<Index> begin(static_cast<size_t>(q)), count(static_cast<size_t>(q));
  std::vector<Index> packed(static_cast<size_t>(q) + 1, 0);  // column c's t: [packed[c], ..)
  for (Index c = 0; c < q; ++c) {
    const size_t u = static_cast<size_t>(c), w = static_cast<size_t>(which[u]);
    if (singular_[w]) throw std::logic_error("WoodburyBatch::solve: H_{-T} is singular");
    begin[u] = offset_[w];
    count[u] = offset_[w + 1] - offset_[w];
    packed[u + 1] = packed[u] + count[u];
  }
  const auto correct = [&](Vector& t) {  // t <- M^{-1} t, set by set
    parallel_chunks(q, 1, threads, [&](int, Index c, Index) {
      const size_t u = static_cast<size_t>(c);
      if (count[u] == 0) return;  // an empty set: nothing to correct (and no memory to map)
      Eigen::Map<Matrix> tc(t.data() + packed[u], count[u], 1);
      solve_factored(M_[static_cast<size_t>(which[u])], tc);
    });
  };
  if (device_) {
    A_.device_woodbury_solve(*device_, G, begin, count, correct);
    return;
  }
  const Matrix& L = A_.factor();
  solve_lower_columns(L, G, false, threads);
  Vector t(packed.back());
  parallel_chunks(q, 1, threads, [&](int, Index c, Index) {
    const size_t u = static_cast<size_t>(c);
    if (count[u] == 0) return;
    t.segment(packed[u], count[u]).noalias() =
        B_.middleCols(begin[u], count[u]).transpose() * G.col(c);
  });
  correct(t);
  parallel_chunks(q, 1, threads, [&](int, Index c, Index) {
    const size_t u = static_cast<size_t>(c);
    if (count[u] == 0) return;
    G.col(c).noalias() += B_.middleCols(begin[u], count[u]) * t.segment(packed[u], count[u]);
  });
  solve_lower_columns(L, G, true, threads);
}

}  // namespace rif
