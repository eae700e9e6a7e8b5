#pragma once
/// The dense kernels: Hessian by symmetric rank updates over row blocks, a Cholesky factor that
/// names its failing pivot, and the blocked leverage pass.

#include "rif/design.hpp"
#include "rif/types.hpp"

namespace rif {

/// H = X^T diag(a) X + l2 P (lower triangle filled; P = identity without the intercept).
/// Threaded over row blocks, each thread its own partial sum.
void hessian(const Design& X, const Vector& a, double l2, Matrix& H, int threads);

/// Pivots (diagonal entries of the factor, squared) at or below this are rounding noise of a
/// singular matrix: n eps max|diag(A)| for the n x n matrix A being factored.
double pivot_floor(const Matrix& A);
/// The same from A's diagonal alone.
double pivot_floor_of_diagonal(const Vector& diagonal);

/// Checks a finished factor L of A: a failing pivot from the factorisation (column >= 0), or
/// one at or below floor, throws not_positive_definite naming it, `what_hint` and the advice.
void check_factor(const Matrix& L, Index column, double pivot, double floor,
                  const std::string& what_hint);
/// The same from the factor's diagonal alone.
void check_factor_diagonal(const Vector& diagonal, Index column, double pivot, double floor,
                           const std::string& what_hint);

/// Lower Cholesky factor of the lower triangle of A, in place (upper triangle zeroed).
/// Throws not_positive_definite naming the first non-positive pivot and `what_hint`.
void cholesky_in_place(Matrix& A, const std::string& what_hint, int threads = 1);

/// Like cholesky_in_place, but returns false instead of throwing (A is then left undefined).
bool try_cholesky_in_place(Matrix& A, Index* failed_column = nullptr, double* pivot = nullptr);

/// h_i = a_i ||L^{-1} x_i||^2 for every sample, by row blocks. When r and g are given, also
/// g = X^T r from the same loaded blocks (saving a pass over X).
void leverage(const Design& X, const Vector& a, const Matrix& L, Vector& h, int threads,
              const Vector* r = nullptr, Vector* g = nullptr);

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

}  // namespace rif
