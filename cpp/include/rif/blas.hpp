#pragma once
/// The three dense kernels that dominate an attribution, behind one interface: a symmetric rank
/// update (Hessian), a Cholesky factor, and the triangular product of the leverage pass.
/// With RIF_HAVE_OPENBLAS they call the OpenBLAS of the `scipy-openblas32` package (its own
/// threads, set per call); otherwise Eigen, single-threaded (the
/// callers then thread over row blocks themselves).

#include "rif/types.hpp"

namespace rif {

/// For its lifetime, BLAS calls that ask for one thread run without touching the library's
/// thread setting. Create it (serially) before a parallel region whose threads call the BLAS.
class BlasSingleThreadScope {
 public:
  BlasSingleThreadScope();
  ~BlasSingleThreadScope();
  BlasSingleThreadScope(const BlasSingleThreadScope&) = delete;
  BlasSingleThreadScope& operator=(const BlasSingleThreadScope&) = delete;

 private:
  int previous_ = 1;
};

/// True when the OpenBLAS kernels are compiled in.
bool blas_is_openblas();

/// How a pass over X that calls these kernels uses `threads`: spread over row blocks (`outer`,
/// each block one single-threaded call) or inside each call (`inner`), and the rows per block
/// (for n rows, at most an even share per thread). With `outer` each thread beyond the first
/// keeps `sums` p x p partial sums of its own; from p = 1024 only while they take at most
/// kPartialDoubles together (256 MiB; rif_native._memory's estimates count them by the same
/// rule, the multinomial pass's pair blocks included).
inline constexpr Index kPartialDoubles = Index{1} << 25;
struct KernelPlan {
  int outer = 1;
  int inner = 1;
  Index block = 256;
};
KernelPlan kernel_plan(Index p, int threads, Index n = 0, Index sums = 1);

/// C (lower triangle) += A A^T for A p x k column-major (leading dimension p).
void syrk_lower(Matrix& C, const double* A, Index k, int threads);

/// In-place lower Cholesky factor of the lower triangle of A. Returns -1 on success, otherwise
/// the column whose pivot was not positive, with that pivot in *pivot.
Index potrf_lower(Matrix& A, double* pivot, int threads);

/// Inverse of the lower-triangular L, in place (lower triangle).
void trtri_lower(Matrix& L, int threads);

/// (L L^T)^{-1} from the lower Cholesky factor L, in place (lower triangle; upper zeroed).
void potri_lower(Matrix& L, int threads);

/// B <- L^{-1} B (or L^{-T} B when `transpose`) for lower-triangular L (p x p) and B p x k
/// column-major, in place.
void trsm_lower(const Matrix& L, double* B, Index k, int threads, bool transpose = false);

/// B <- T B for lower-triangular T (p x p) and B p x k column-major, in place.
void trmm_lower(const Matrix& T, double* B, Index k, int threads);

// The same three in float32 (SSYRK, STRMM, STRSM: about 1.9x the float64 rate here), for the
// mixed-precision passes.
/// (syrk_lower with `overwrite`: C's lower triangle = A A^T, its old content not read.)
void syrk_lower(FloatMatrix& C, const float* A, Index k, int threads, bool overwrite = false);
void trmm_lower(const FloatMatrix& T, float* B, Index k, int threads);
void trsm_lower(const FloatMatrix& L, float* B, Index k, int threads);

}  // namespace rif
