#pragma once
/// The dense kernels: Hessian by symmetric rank updates over row blocks, a Cholesky factor that
/// names its failing pivot, and the blocked leverage pass.

#include "rif/design.hpp"
#include "rif/glm.hpp"
#include "rif/types.hpp"

#include <functional>
#include <string>

namespace rif {

/// H = X^T diag(a) X + l2 P (lower triangle filled; P = identity without the intercept).
/// Threaded over row blocks, each thread its own partial sum.
void hessian(const Design& X, const Vector& a, double l2, Matrix& H, int threads);

/// One pass over X at theta for the given family, labels y and weights w (empty: all ones):
/// z = X theta, the derivatives (r, a) of every sample and H = X^T diag(a) X + l2 P (lower
/// triangle), and with g also g = X^T r (no penalty). The pass that builds H reads X anyway; X
/// read from a source (a file) is then read once for all of them. Without with_hessian the
/// pass computes only z, (r, a) and g, and leaves H as it was. Non-finite values are left for
/// the caller's checks. With stride > 1 (dense X; sparse X ignores it) H is estimated from
/// the rows i with i % stride == 0, each counted stride times: stride times cheaper, for fit's
/// steps far from the optimum when n is many times p.
void hessian_at(const Design& X, Family family, const Vector& y, const Vector& w, double l2,
                const Vector& theta, Vector& z, Vector& r, Vector& a, Matrix& H, int threads,
                Vector* g = nullptr, bool with_hessian = true, Index stride = 1);

/// A centre for X's rows when X is read from a source: the weighted means of its first row
/// block (any centre near the data removes the intercept's cancellation; this one costs no
/// pass over X). Column means of all of X otherwise (column_means).
Vector design_centre(const Design& X, const Vector& w, int threads);

/// The floor of each Cholesky pivot (diagonal entry of the factor, squared) of a p x p matrix A
/// with diagonal `diagonal`: floor_k = max(p eps |A_kk|, DBL_MIN). A pivot at or below it is
/// rounding noise of a singular matrix (the rounding error of pivot k is of the order of
/// p eps A_kk, whatever the scale of the other columns), or subnormal (no float64 inverse).
Vector pivot_floors(const Vector& diagonal);

/// What to tell the user when the pivot of `column` fails (empty: the default advice on l2).
using Advice = std::function<std::string(Index column)>;

/// Checks a finished factor by its diagonal: a failing pivot from the factorisation (column >=
/// 0), or the first one at or below its floor, throws not_positive_definite naming it,
/// `what_hint` and the advice.
void check_factor_diagonal(const Vector& diagonal, Index column, double pivot,
                           const Vector& floors, const std::string& what_hint,
                           const Advice& advice = nullptr);

/// The advice for the Hessian of a problem with d penalised features (the intercept, when
/// there is one, is column d): l2 cannot help the intercept.
Advice hessian_advice(Index d, bool intercept, double l2);

/// Throws std::invalid_argument when H is not finite: X's largest entry (named) squared,
/// times the curvature, overflows float64.
void check_hessian_finite(const Design& X, const Matrix& H);

/// Lower Cholesky factor of the lower triangle of A, in place (upper triangle zeroed).
/// Throws not_positive_definite naming the first non-positive pivot and `what_hint`.
void cholesky_in_place(Matrix& A, const std::string& what_hint, int threads = 1,
                       const Advice& advice = nullptr);

/// Like cholesky_in_place, but returns false instead of throwing (A is then left undefined).
bool try_cholesky_in_place(Matrix& A, Index* failed_column = nullptr, double* pivot = nullptr);

/// h_i = a_i ||L^{-1} x_i||^2 for every sample, by row blocks. When r and g are given, also
/// g = X^T r from the same loaded blocks (saving a pass over X); not with X.mixed(), whose
/// blocks are float32 (std::logic_error). When U (p x m) and P are given, also P = X U (n x m,
/// the kernel's rows), from the same loaded blocks before they are scaled: the projections that
/// scores need, without a pass of their own (in float64 with X.mixed() too; not for sparse X:
/// std::logic_error).
void leverage(const Design& X, const Vector& a, const Matrix& L, Vector& h, int threads,
              const Vector* r = nullptr, Vector* g = nullptr, const Matrix* U = nullptr,
              RowMatrix* P = nullptr);

/// g <- L^{-1} g, or L^{-T} g when `transpose`, for lower-triangular L and one vector. With
/// threads > 1 the off-diagonal panels' products (nearly all of the work: one read of half of L)
/// are split over the threads; the small diagonal triangles are solved in between.
void solve_lower_vector(const Matrix& L, Eigen::Ref<Vector> g, bool transpose, int threads);

/// B <- L^{-1} B, or L^{-T} B when `transpose`, for the columns of B: fewer columns than
/// threads one by one as solve_lower_vector does (each split over the threads), more in panels
/// of columns over `threads` OpenMP threads, one single-threaded BLAS call each (call it
/// outside parallel regions).
void solve_lower_columns(const Matrix& L, Matrix& B, bool transpose, int threads);

/// v <- H^{-1} v with H = L L^T, for each column of v (a single column on `threads` threads).
void solve_factored(const Matrix& L, Eigen::Ref<Matrix> v, int threads = 1);

/// H^{-1} = L^{-T} L^{-1} (lower triangle; the strict upper is 0) from H's Cholesky factor L:
/// a triangular inverse and its triangular product with its transpose (potri), 2 p^3 / 3.
Matrix inverse_from_factor(const Matrix& L, int threads);

}  // namespace rif
