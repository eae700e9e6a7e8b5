#pragma once
/// Shared types, errors and small helpers of the rif kernel (pure C++17 + Eigen, no Python).

#include <Eigen/Core>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace rif {

using Index = Eigen::Index;
/// Column-major dense matrix of doubles: the kernel's working type (p x p factors, p x k panels).
using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
/// Row-major dense matrix of doubles: results handed back one row per sample or per set.
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXd;
/// Column-major float32 matrix: the row panels and per-block sums of the mixed-precision passes
/// (Design::mixed()), whose totals and factors stay float64.
using FloatMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

/// Thrown when a matrix that must be positive definite is not; carries the failing pivot.
class not_positive_definite : public std::runtime_error {
 public:
  not_positive_definite(const std::string& what, Index column, double pivot)
      : std::runtime_error(what), column_(column), pivot_(pivot) {}
  Index column() const noexcept { return column_; }
  double pivot() const noexcept { return pivot_; }

 private:
  Index column_;
  double pivot_;
};

/// Sets as compressed lists: set j is indices[offsets[j] .. offsets[j+1]).
struct SetList {
  const std::int64_t* indices = nullptr;
  const std::int64_t* offsets = nullptr;
  Index count = 0;  ///< number of sets
  Index size(Index j) const { return static_cast<Index>(offsets[j + 1] - offsets[j]); }
  const std::int64_t* begin(Index j) const { return indices + offsets[j]; }
};

/// Leverages within this distance of 1 (and Woodbury pivots below it) count as singular removals.
inline constexpr double singular_tolerance = 1e-10;

}  // namespace rif
