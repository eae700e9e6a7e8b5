#pragma once
/// The passes over X that read only its nonzeros, for X given as compressed sparse rows
/// (Design::sparse()). Each gives what its dense counterpart in rif/linalg.hpp and
/// rif/design.hpp gives, to rounding; H stays dense.
///
/// A centred view (Design::set_centre) reads rows x - c, which are dense. The sparse passes keep
/// them sparse by expanding the centre: with S = sum a_i x_i x_i^T, s = sum a_i x_i and
/// A = sum a_i over the raw rows,
///   H_ff = S - c s^T - s c^T + A c c^T,   H_bf = s - A c,   H_bb = A,
/// and a leverage x~^T H^{-1} x~ with x~ = (x, 0) + u, u = (-c, 1), as
///   x^T M_ff x + 2 x . (M u)_f + u^T M u   (M = H^{-1}).
/// Per row they cost nnz_i^2 / 2 (H, leverages) or nnz_i (products) instead of p^2 or p.

#include "rif/design.hpp"
#include "rif/glm.hpp"
#include "rif/types.hpp"

namespace rif {

/// hessian_at() for sparse X: z = X~ theta, (r, a) from them, H when asked and g = X~^T r.
void sparse_hessian_at(const Design& X, Family family, const Vector& y, const Vector& w,
                       double l2, const Vector& theta, Vector& z, Vector& r, Vector& a, Matrix& H,
                       int threads, Vector* g, bool with_hessian);

/// hessian() for sparse X: H = X~^T diag(a) X~ + l2 P (lower triangle).
void sparse_hessian(const Design& X, const Vector& a, double l2, Matrix& H, int threads);

/// Whether sparse_leverage() costs less than the dense pass: its H^{-1} (2 p^3 / 3) against the
/// dense pass's triangular solves (n p^2).
inline bool sparse_leverage_pays(const Design& X) {
  return X.sparse() && 3 * X.rows() >= 2 * X.params();
}

/// leverage() for sparse X: h_i = a_i x~_i^T H^{-1} x~_i from the factor L, and g = X~^T r when
/// asked.
void sparse_leverage(const Design& X, const Vector& a, const Matrix& L, Vector& h, int threads,
                     const Vector* r, Vector* g);

/// z = X~ theta.
void sparse_multiply(const Design& X, const Vector& theta, Vector& z, int threads);

/// out = X~[begin, begin + count) U: the rows' products with U's columns (p x m).
void sparse_rows_times(const Design& X, Index begin, Index count, const Matrix& U,
                       Eigen::Ref<RowMatrix> out);

/// g = X~^T c.
void sparse_multiply_transposed(const Design& X, const Vector& c, Vector& g, int threads);

}  // namespace rif
