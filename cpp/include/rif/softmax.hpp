#pragma once
/// Multinomial (softmax) regression's passes over X, in reduced coordinates.
///
/// With K classes, softmax is invariant to adding one vector to every class's parameters, so
/// the kernel works in the subspace where the K class parameter vectors sum to zero: with Q
/// (K x m, m = K - 1) an orthonormal basis of {v in R^K : sum v = 0}, the user's parameters
/// Theta (p x K, a column per class) are Theta = Phi Q^T for the reduced Phi (p x m), and the
/// logits of sample i are z_i = Q Phi^T x_i. Q's columns being orthonormal, the penalty
/// ||Theta||_P^2 equals ||Phi||_P^2, and the reduced Hessian is
///     H = sum_i w_i (A~_i kron x_i x_i^T) + l2 (I_m kron P),   A~_i = Q^T (diag(p_i) - p_i p_i^T) Q,
/// an (m p) x (m p) matrix in blocks of p x p, block (k, l) = X^T diag(w A~_kl) X (+ penalty).
/// It is positive definite wherever the full Hessian is, away from the shift direction.
///
/// Every block is a symmetric rank update with non-negative weights: the diagonal blocks have
/// weights w A~_kk >= 0, and block (k, l) comes from the update with weights
/// w (A~_kk + A~_ll + 2 A~_kl) = w (e_k + e_l)^T A~ (e_k + e_l) >= 0, which is
/// H_kk + H_ll + 2 H_kl: m (m + 1) / 2 updates of n p^2 flops each.

#include "rif/design.hpp"
#include "rif/types.hpp"

#include <cstdint>

namespace rif {

/// What one pass over X at Phi computes.
struct SoftmaxPass {
  RowMatrix P;      ///< n x K class probabilities
  Matrix G;         ///< p x m gradient of F with respect to Phi (penalty included)
  Matrix H;         ///< (m p) x (m p) Hessian (lower triangle; penalty included), if asked
  double loss = 0;  ///< F(Phi), penalty included
};

/// The number of distinct p x p blocks of the reduced Hessian: m (m + 1) / 2.
inline Index softmax_pairs(Index m) { return m * (m + 1) / 2; }

/// One pass over X: probabilities, loss, gradient and (with_hessian) the Hessian at Phi, for
/// labels y (class indices 0..K-1) and weights w (empty: all ones). Threaded over row blocks.
void softmax_pass(const Design& X, const std::int64_t* y, const Vector& w, const Matrix& Q,
                  double l2, const Matrix& Phi, SoftmaxPass& out, int threads,
                  bool with_hessian);

/// The leverage pass: for every sample the m (m + 1) / 2 quadratic forms
/// S_i(k, l) = x_i^T (H^{-1})_{kl} x_i (k <= l, row-major order (0,0), (0,1), ..., (1,1), ...)
/// from the inverse Hessian Hinv ((m p) x (m p), lower triangle read). Each pair is one
/// triangular product per row block (n p^2 flops): for k < l with the factor of the positive
/// definite H^{-1}_kk + H^{-1}_ll + H^{-1}_kl + H^{-1}_lk, less the two diagonal forms.
/// Hinv is read through any strides (a row-major NumPy array is viewed in place, not copied).
using StridedView = Eigen::Ref<const Matrix, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
void softmax_quadforms(const Design& X, const StridedView& Hinv, Index m, RowMatrix& S,
                       int threads);

}  // namespace rif
