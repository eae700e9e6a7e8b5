#include "rif/blas.hpp"

#include "rif/parallel.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>

#include "rif/interrupt.hpp"

#ifdef RIF_HAVE_OPENBLAS
extern "C" {
// Symbols of the scipy-openblas32 build of OpenBLAS (prefix "scipy_", 32-bit integers).
void scipy_dsyrk_(const char* uplo, const char* trans, const int* n, const int* k,
                  const double* alpha, const double* a, const int* lda, const double* beta,
                  double* c, const int* ldc, size_t, size_t);
void scipy_dtrmm_(const char* side, const char* uplo, const char* transa, const char* diag,
                  const int* m, const int* n, const double* alpha, const double* a,
                  const int* lda, double* b, const int* ldb, size_t, size_t, size_t, size_t);
void scipy_dtrsm_(const char* side, const char* uplo, const char* transa, const char* diag,
                  const int* m, const int* n, const double* alpha, const double* a,
                  const int* lda, double* b, const int* ldb, size_t, size_t, size_t, size_t);
void scipy_dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t);
void scipy_dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                  const double* alpha, const double* a, const int* lda, const double* b,
                  const int* ldb, const double* beta, double* c, const int* ldc, size_t, size_t);
void scipy_dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda,
                   int* info, size_t, size_t);
void scipy_dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t);
void scipy_ssyrk_(const char* uplo, const char* trans, const int* n, const int* k,
                  const float* alpha, const float* a, const int* lda, const float* beta,
                  float* c, const int* ldc, size_t, size_t);
void scipy_strmm_(const char* side, const char* uplo, const char* transa, const char* diag,
                  const int* m, const int* n, const float* alpha, const float* a,
                  const int* lda, float* b, const int* ldb, size_t, size_t, size_t, size_t);
void scipy_strsm_(const char* side, const char* uplo, const char* transa, const char* diag,
                  const int* m, const int* n, const float* alpha, const float* a,
                  const int* lda, float* b, const int* ldb, size_t, size_t, size_t, size_t);
void scipy_openblas_set_num_threads(int num_threads);
int scipy_openblas_get_num_threads(void);
}
#endif

namespace rif {

namespace {

#ifdef RIF_HAVE_OPENBLAS
/// Sets the thread count of this private OpenBLAS copy for one call when it differs, then
/// restores it. (NumPy and SciPy carry their own copies.) Calls made from several threads at
/// once ask for one thread each, under a BlasSingleThreadScope set up beforehand, so they
/// never change the count concurrently.
class OpenblasThreads {
 public:
  explicit OpenblasThreads(int threads) : previous_(scipy_openblas_get_num_threads()) {
    threads = std::max(threads, 1);
    if (threads != previous_) {
      scipy_openblas_set_num_threads(threads);
      changed_ = true;
    }
  }
  ~OpenblasThreads() {
    if (changed_) scipy_openblas_set_num_threads(previous_);
  }

 private:
  int previous_;
  bool changed_ = false;
};

int as_int(Index v) { return static_cast<int>(v); }
#endif

}  // namespace

BlasSingleThreadScope::BlasSingleThreadScope() {
#ifdef RIF_HAVE_OPENBLAS
  previous_ = scipy_openblas_get_num_threads();
  if (previous_ != 1) scipy_openblas_set_num_threads(1);
#endif
}

BlasSingleThreadScope::~BlasSingleThreadScope() {
#ifdef RIF_HAVE_OPENBLAS
  if (previous_ != 1) scipy_openblas_set_num_threads(previous_);
#endif
}

bool blas_is_openblas() {
#ifdef RIF_HAVE_OPENBLAS
  return true;
#else
  return false;
#endif
}

KernelPlan kernel_plan(Index p, int threads, Index n, Index sums) {
  KernelPlan plan;
#ifdef RIF_HAVE_OPENBLAS
  // From p = 1024, OpenBLAS threads each call well, and at a few blocks per thread the partial
  // sums cost more than they save; with n >= 32 p they pay for themselves, while they take at
  // most kPartialDoubles together. Measured on 2 cores (AMD EPYC), each pass against n p^2 at
  // the DGEMM rate, inner then outer: n = 100,000 at p = 1024: Hessian 1.27 and 1.15;
  // n = 50,000 at p = 1536: 1.16 and 1.08; n = 30,000 (15 p) at p = 2048: 1.12 both; and
  // n = 10,000 at p = 1024: 1.28 and 1.62.
  const bool partials_fit = Index{threads - 1} * sums * p * p <= kPartialDoubles;
  const bool outer = p < 1024 || (n >= 32 * p && partials_fit);
  if (!outer) {
    // Large p or few rows: OpenBLAS threads each call; blocks of about 16 MiB.
    plan.inner = threads;
    plan.block = std::clamp<Index>((Index{1} << 21) / std::max<Index>(p, 1), 256, 8192);
    return plan;
  }
  // One single-threaded call per block and thread (measured faster at p = 512).
  plan.outer = threads;
  plan.block = std::clamp<Index>((Index{1} << 20) / std::max<Index>(p, 1), 64, 8192);
#else
  (void)sums;  // Eigen's calls are single-threaded: always one block per thread
  plan.outer = threads;
  plan.block = std::clamp<Index>((Index{1} << 18) / std::max<Index>(p, 1), 32, 4096);
#endif
  if (n > 0 && plan.outer > 1) {
    plan.block = std::min(plan.block, std::max<Index>(32, (n + plan.outer - 1) / plan.outer));
  }
  return plan;
}


namespace {

#ifdef RIF_HAVE_OPENBLAS
/// The OpenBLAS routines of one precision, for the templates below.
template <class T>
struct Routines;
template <>
struct Routines<double> {
  static constexpr auto syrk = scipy_dsyrk_;
  static constexpr auto trmm = scipy_dtrmm_;
  static constexpr auto trsm = scipy_dtrsm_;
};
template <>
struct Routines<float> {
  static constexpr auto syrk = scipy_ssyrk_;
  static constexpr auto trmm = scipy_strmm_;
  static constexpr auto trsm = scipy_strsm_;
};
#endif

template <class T, class M>
void syrk_any(M& C, const T* A, Index k, int threads, bool overwrite = false) {
  const Index p = C.rows();
#ifdef RIF_HAVE_OPENBLAS
  if (p == 0) return;  // (LAPACK's leading dimension must be >= 1: it reports 0 as illegal)
  OpenblasThreads scope(threads);
  const int n = as_int(p), kk = as_int(k);
  const T one = 1, beta = overwrite ? 0 : 1;  // beta = 0: C's lower triangle is not read
  Routines<T>::syrk("L", "N", &n, &kk, &one, A, &n, &beta, C.data(), &n, 1, 1);
#else
  (void)threads;
  if (overwrite) C.template triangularView<Eigen::Lower>().setZero();
  C.template selfadjointView<Eigen::Lower>().rankUpdate(Eigen::Map<const M>(A, p, k));
#endif
}

template <class T, class M>
void trsm_any(const M& L, T* B, Index k, int threads, bool transpose) {
  const Index p = L.rows();
#ifdef RIF_HAVE_OPENBLAS
  if (p == 0) return;  // (as in syrk_any)
  OpenblasThreads scope(threads);
  const int m = as_int(p), n = as_int(k);
  const T one = 1;
  Routines<T>::trsm("L", "L", transpose ? "T" : "N", "N", &m, &n, &one, L.data(), &m, B, &m, 1,
                    1, 1, 1);
#else
  (void)threads;
  Eigen::Map<M> b(B, p, k);
  if (transpose) {
    L.transpose().template triangularView<Eigen::Upper>().solveInPlace(b);
  } else {
    L.template triangularView<Eigen::Lower>().solveInPlace(b);
  }
#endif
}

template <class T, class M>
void trmm_any(const M& tri, T* B, Index k, int threads) {
  const Index p = tri.rows();
#ifdef RIF_HAVE_OPENBLAS
  if (p == 0) return;  // (as in syrk_any)
  OpenblasThreads scope(threads);
  const int m = as_int(p), n = as_int(k);
  const T one = 1;
  Routines<T>::trmm("L", "L", "N", "N", &m, &n, &one, tri.data(), &m, B, &m, 1, 1, 1, 1);
#else
  (void)threads;
  Eigen::Map<M> b(B, p, k);
  b = tri.template triangularView<Eigen::Lower>() * b;
#endif
}

}  // namespace

void syrk_lower(Matrix& C, const double* A, Index k, int threads) {
  syrk_any(C, A, k, threads);
}

void syrk_lower(FloatMatrix& C, const float* A, Index k, int threads, bool overwrite) {
  syrk_any(C, A, k, threads, overwrite);
}

void trsm_lower(const Matrix& L, double* B, Index k, int threads, bool transpose) {
  trsm_any(L, B, k, threads, transpose);
}

void trsm_lower(const FloatMatrix& L, float* B, Index k, int threads) {
  trsm_any(L, B, k, threads, false);
}

void trmm_lower(const Matrix& T, double* B, Index k, int threads) {
  trmm_any(T, B, k, threads);
}

void trmm_lower(const FloatMatrix& T, float* B, Index k, int threads) {
  trmm_any(T, B, k, threads);
}

#ifdef RIF_HAVE_OPENBLAS
namespace {

/// Right-looking blocked Cholesky of the lower triangle of the n x n matrix A (leading
/// dimension n) in calls short enough to check for an interruption between them: a panel of
/// kPanel columns (potrf of its diagonal block, trsm below it), then the trailing update in
/// strips of kStrip columns (syrk on the strip's diagonal block, gemm below). Returns LAPACK's
/// info for the whole matrix.
int potrf_in_pieces(double* A, int n) {
  constexpr int kPanel = 512, kStrip = 2048;
  const double one = 1.0, minus_one = -1.0;
  const auto at = [&](int i, int j) { return A + static_cast<size_t>(j) * n + i; };
  for (int k = 0; k < n; k += kPanel) {
    check_interrupt();
    const int b = std::min(kPanel, n - k), rest = n - k - b;
    int info = 0;
    scipy_dpotrf_("L", &b, at(k, k), &n, &info, 1);
    if (info > 0) return k + info;
    if (rest == 0) break;
    scipy_dtrsm_("R", "L", "T", "N", &rest, &b, &one, at(k, k), &n, at(k + b, k), &n, 1, 1, 1, 1);
    for (int c = k + b; c < n; c += kStrip) {
      check_interrupt();
      const int w = std::min(kStrip, n - c), below = n - c - w;
      scipy_dsyrk_("L", "N", &w, &b, &minus_one, at(c, k), &n, &one, at(c, c), &n, 1, 1);
      if (below > 0) {
        scipy_dgemm_("N", "T", &below, &w, &b, &minus_one, at(c + w, k), &n, at(c, k), &n, &one,
                     at(c + w, c), &n, 1, 1);
      }
    }
  }
  return 0;
}

/// The first or second (item 0 or 1) half of [0, total): its start and length.
struct Half {
  int first, count;
};
Half half_of(Index item, int total) {
  return item == 0 ? Half{0, total / 2} : Half{total / 2, total - total / 2};
}

/// potrf_lower on two threads for 256 <= p < 1024, each call single-threaded: with
/// A = [A11 .; B C], L11 = chol(A11), B <- B L11^{-T} (rows split), C <- C - B B^T (split into
/// a leading syrk and a gemm + syrk of equal flops), L22 = chol(C). Returns LAPACK's info.
int potrf_halves(double* a, int p) {
  const int k = p / 2, m = p - k;
  double* B = a + k;
  double* C = a + k + static_cast<Index>(k) * p;
  const double one = 1, minus_one = -1;
  BlasSingleThreadScope serial;
  int info = 0;
  scipy_dpotrf_("L", &k, a, &p, &info, 1);
  if (info > 0) return info;
  parallel_chunks(2, 1, 2, [&](int, Index item, Index) {  // B <- B L11^{-T}, by rows
    const Half rows = half_of(item, m);
    scipy_dtrsm_("R", "L", "T", "N", &rows.count, &k, &one, a, &p, B + rows.first, &p, 1, 1, 1,
                 1);
  });
  // Thread 0 updates C's leading m1 x m1 triangle (m1^2 k flops), thread 1 the rows below
  // (2 (m - m1) m1 k + (m - m1)^2 k): equal at m1 = m / sqrt(2).
  const int m1 = std::clamp(static_cast<int>(m / std::sqrt(2.0)), 1, m - 1), m2 = m - m1;
  parallel_chunks(2, 1, 2, [&](int, Index item, Index) {
    if (item == 0) {
      scipy_dsyrk_("L", "N", &m1, &k, &minus_one, B, &p, &one, C, &p, 1, 1);
      return;
    }
    double* below = C + m1;  // C[m1:, :m1]
    scipy_dgemm_("N", "T", &m2, &m1, &k, &minus_one, B + m1, &p, B, &p, &one, below, &p, 1, 1);
    scipy_dsyrk_("L", "N", &m2, &k, &minus_one, B + m1, &p, &one,
                 C + m1 + static_cast<Index>(m1) * p, &p, 1, 1);
  });
  scipy_dpotrf_("L", &m, C, &p, &info, 1);
  return info > 0 ? k + info : info;
}

}  // namespace
#endif

Index potrf_lower(Matrix& A, double* pivot, int threads) {
#ifdef RIF_HAVE_OPENBLAS
  const int n = as_int(A.rows());
  // An empty matrix (the dual path's projected G for one sample) is its own factor; LAPACK
  // would print that its leading dimension 0 is illegal.
  if (n == 0) return -1;
  int info = 0;
  // BLAS threads from p = 1024 (idle BLAS threads spin and would slow an OpenMP pass that
  // follows: below, the passes always run on OpenMP threads); below that, two OpenMP threads
  // split the factor. From p = 1024 with n >= 32 p the passes run on OpenMP threads too, after
  // this threaded factor: the times measured for that plan include the spinning.
  const int inner = kernel_plan(n, threads).inner;
  const bool halves = threads >= 2 && n >= 256 && inner == 1;
  OpenblasThreads scope(inner);
  // One LAPACK call up to p = 4096 (about a tenth of a second here); above, pieces that
  // leave room to stop on Ctrl-C.
  if (halves) {
    info = potrf_halves(A.data(), n);
  } else if (n <= 4096) {
    scipy_dpotrf_("L", &n, A.data(), &n, &info, 1);
  } else {
    info = potrf_in_pieces(A.data(), n);
  }
  if (info > 0) {
    *pivot = A(info - 1, info - 1);  // LAPACK leaves the failing pivot on the diagonal
    return info - 1;
  }
  A.triangularView<Eigen::StrictlyUpper>().setZero();
  return -1;
#else
  (void)threads;
  (void)pivot;
  (void)A;
  return -2;  // no BLAS factorisation: the caller uses its own blocked Cholesky
#endif
}

#ifdef RIF_HAVE_OPENBLAS
namespace {

/// The inverse of the lower triangular n x n matrix at `a` (leading dimension lda), in place,
/// by halves: with L = [A 0; B C], L^{-1} = [A^{-1} 0; -C^{-1} B A^{-1}  C^{-1}], down to blocks
/// of at most kLeaf columns, which LAPACK's dtrtri inverts; every other flop is a triangular
/// product, at nearly the matrix-product rate. OpenBLAS's own dtrtri spends much of its time in
/// matrix-vector products (measured here, 2-core AMD EPYC: at n = 256 on one thread 0.48 ms
/// against 0.24 ms by halves, at n = 512 2.27 against 1.21 ms, at n = 1024 on two threads 9.9
/// against 4.6 ms). The calls use the BLAS threads set by the caller.
void trtri_recursive(double* a, int n, int lda) {
  constexpr int kLeaf = 64;
  if (n <= kLeaf) {
    int info = 0;  // (a Cholesky factor: its diagonal is positive)
    scipy_dtrtri_("L", "N", &n, a, &lda, &info, 1, 1);
    return;
  }
  const int k = n / 2, m = n - k;
  double* B = a + k;
  double* C = a + k + static_cast<Index>(k) * lda;
  trtri_recursive(a, k, lda);
  trtri_recursive(C, m, lda);
  const double one = 1, minus_one = -1;
  scipy_dtrmm_("R", "L", "N", "N", &m, &k, &one, a, &lda, B, &lda, 1, 1, 1, 1);  // B A^{-1}
  scipy_dtrmm_("L", "L", "N", "N", &m, &k, &minus_one, C, &lda, B, &lda, 1, 1, 1, 1);
}

/// trtri_lower on two threads from two half-size inverses: with L = [A 0; B C],
/// L^{-1} = [A^{-1} 0; -C^{-1} B A^{-1}  C^{-1}]. The two inverses run side by side (each
/// trtri_recursive), then each product is split between the threads (B's rows, then its
/// columns); every call is single-threaded. OpenBLAS's own threaded trtri is slower at these
/// sizes (measured at p = 513: 2.7 ms on one thread, worse on two).
void trtri_halves(Matrix& L) {
  const int p = as_int(L.rows()), k = p / 2, m = p - k;
  double* A = L.data();
  double* B = L.data() + k;
  double* C = L.data() + k + static_cast<Index>(k) * p;
  const double one = 1, minus_one = -1;
  BlasSingleThreadScope serial;
  parallel_chunks(2, 1, 2, [&](int, Index item, Index) {
    if (item == 0) {
      trtri_recursive(A, k, p);
    } else {
      trtri_recursive(C, m, p);
    }
  });
  parallel_chunks(2, 1, 2, [&](int, Index item, Index) {  // B <- B A^{-1}, by rows
    const Half rows = half_of(item, m);
    scipy_dtrmm_("R", "L", "N", "N", &rows.count, &k, &one, A, &p, B + rows.first, &p, 1, 1, 1,
                 1);
  });
  parallel_chunks(2, 1, 2, [&](int, Index item, Index) {  // B <- -C^{-1} B, by columns
    const Half cols = half_of(item, k);
    scipy_dtrmm_("L", "L", "N", "N", &m, &cols.count, &minus_one, C, &p,
                 B + static_cast<Index>(cols.first) * p, &p, 1, 1, 1, 1);
  });
}

}  // namespace
#endif

void trtri_lower(Matrix& L, int threads) {
#ifdef RIF_HAVE_OPENBLAS
  if (L.rows() == 0) return;  // (as in potrf_lower)
  if (threads >= 2 && L.rows() >= 256 && L.rows() < 1024) return trtri_halves(L);
  OpenblasThreads scope(threads);
  const int n = as_int(L.rows());
  trtri_recursive(L.data(), n, n);
#else
  (void)threads;
  Matrix inv = Matrix::Identity(L.rows(), L.cols());
  L.triangularView<Eigen::Lower>().solveInPlace(inv);
  L = inv;
#endif
}

void potri_lower(Matrix& L, int threads) {
#ifdef RIF_HAVE_OPENBLAS
  if (L.rows() == 0) return;  // (as in potrf_lower)
  OpenblasThreads scope(threads);
  const int n = as_int(L.rows());
  int info = 0;
  scipy_dpotri_("L", &n, L.data(), &n, &info, 1);
#else
  (void)threads;
  Matrix inv = Matrix::Identity(L.rows(), L.cols());
  L.triangularView<Eigen::Lower>().solveInPlace(inv);
  L.triangularView<Eigen::Lower>().transpose().solveInPlace(inv);
  L = inv;
#endif
  L.triangularView<Eigen::StrictlyUpper>().setZero();
}

}  // namespace rif
