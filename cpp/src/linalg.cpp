#include "rif/linalg.hpp"

#include "rif/parallel.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

namespace rif {

void hessian(const Design& X, const Vector& a, double l2, Matrix& H, int threads) {
  const Index p = X.params(), n = X.rows();
  const Index block = block_rows(p);
  const int nt = chunk_threads(n, block, threads);
  H.setZero(p, p);
  // Thread 0 accumulates straight into H; the others into partial sums added at the end.
  std::vector<Matrix> partial(static_cast<size_t>(nt - 1));
  std::vector<Matrix> buffers(static_cast<size_t>(nt));
  const Vector root = a.cwiseSqrt();
  parallel_chunks(n, block, threads, [&](int t, Index begin, Index count) {
    Matrix& buf = buffers[static_cast<size_t>(t)];
    X.load(begin, count, buf, root.data() + begin);
    Matrix& target = t == 0 ? H : partial[static_cast<size_t>(t - 1)];
    if (target.rows() != p) target.setZero(p, p);
    target.selfadjointView<Eigen::Lower>().rankUpdate(buf);
  });
  for (const Matrix& part : partial) {
    if (part.rows() == p) H.triangularView<Eigen::Lower>() += part;
  }
  const Index penalised = X.features();
  H.diagonal().head(penalised).array() += l2;
  H.triangularView<Eigen::StrictlyUpper>().setZero();
}

bool try_cholesky_in_place(Matrix& A, Index* failed_column, double* pivot) {
  const Index n = A.rows();
  // Pivots below this are rounding noise of a singular matrix, not information.
  const double floor =
      static_cast<double>(n) * std::numeric_limits<double>::epsilon() *
      (n ? A.diagonal().cwiseAbs().maxCoeff() : 0.0);
  const Index bs = 96;
  for (Index k = 0; k < n; k += bs) {
    const Index b = std::min(bs, n - k), rs = n - k - b;
    auto A11 = A.block(k, k, b, b);
    for (Index j = 0; j < b; ++j) {
      const double x = A11(j, j) - A11.row(j).head(j).squaredNorm();
      if (!(x > floor)) {
        if (failed_column) *failed_column = k + j;
        if (pivot) *pivot = x;
        return false;
      }
      const double ljj = std::sqrt(x);
      A11(j, j) = ljj;
      const Index below = b - j - 1;
      if (below > 0) {
        if (j > 0) {
          A11.col(j).tail(below).noalias() -=
              A11.block(j + 1, 0, below, j) * A11.row(j).head(j).transpose();
        }
        A11.col(j).tail(below) /= ljj;
      }
    }
    if (rs > 0) {
      auto A21 = A.block(k + b, k, rs, b);
      A11.triangularView<Eigen::Lower>().transpose().solveInPlace<Eigen::OnTheRight>(A21);
      A.block(k + b, k + b, rs, rs).selfadjointView<Eigen::Lower>().rankUpdate(A21, -1.0);
    }
  }
  A.triangularView<Eigen::StrictlyUpper>().setZero();
  return true;
}

void cholesky_in_place(Matrix& A, const std::string& what_hint) {
  Index column = -1;
  double pivot = 0;
  if (try_cholesky_in_place(A, &column, &pivot)) return;
  std::ostringstream msg;
  msg << what_hint << " is not positive definite: the Cholesky pivot of column " << column
      << " is " << pivot << " (not above the rounding floor). "
      << "Add a ridge penalty l2 > 0, or remove constant, duplicate or collinear features.";
  throw not_positive_definite(msg.str(), column, pivot);
}

void leverage(const Design& X, const Vector& a, const Matrix& L, Vector& h, int threads) {
  const Index n = X.rows();
  const Index block = block_rows(X.params());
  std::vector<Matrix> buffers(static_cast<size_t>(chunk_threads(n, block, threads)));
  h.resize(n);
  parallel_chunks(n, block, threads, [&](int t, Index begin, Index count) {
    Matrix& buf = buffers[static_cast<size_t>(t)];
    X.load(begin, count, buf);
    L.triangularView<Eigen::Lower>().solveInPlace(buf);
    h.segment(begin, count) =
        a.segment(begin, count).cwiseProduct(buf.colwise().squaredNorm().transpose());
  });
}

void solve_factored(const Matrix& L, Eigen::Ref<Matrix> v) {
  L.triangularView<Eigen::Lower>().solveInPlace(v);
  L.transpose().triangularView<Eigen::Upper>().solveInPlace(v);
}

}  // namespace rif
