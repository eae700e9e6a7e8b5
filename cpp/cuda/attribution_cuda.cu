// The CUDA backend's attribution. One pass over X computes z = X theta, the family's
// derivatives and the Hessian (cuBLAS syrk) block by block as the rows arrive; then the
// Cholesky factor (cuSOLVER potrf), the inverse factor (trtri) and a second pass for the
// leverages (cuBLAS trmm + a column-norm kernel) and X^T r. Then the later passes an
// attribution asks for: projections X H^{-1} V, solves, gradients at many thetas. Host X
// crosses the bus once where it fits (State::for_blocks, state.cu); X already on the device is
// used in place.
#include "rif/cuda_backend.hpp"
#include "rif/linalg.hpp"

#include "device.cuh"
#include "kernels.cuh"
#include "state.cuh"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace rif::cuda {

using namespace detail;  // the backend's own runtime and kernels

/// Column and row panels of the lower triangle for the "panels" strategies (RIF_CUDA_HESSIAN,
/// RIF_CUDA_LEVERAGE): a few GEMMs of width kPanel do the work of syrk / trmm at GEMM's rate,
/// with 1 / (number of panels) more flops.
constexpr long long kPanel = 256;

void StateDeleter::operator()(State* state) const {
  delete_on_device(state);  // frees X's resident copy, if any
}

StatePtr attribute(const Design& host, const DeviceMatrix* device, Family family, const Vector& y,
                   const Vector& w, const Vector& theta, double l2,
                   void (*check_inputs)(const Design&, const Results&), Results& out) {
  if (!available()) throw std::runtime_error("backend 'cuda' asked for, but " + device_name());
  // Hessian: syrk (half the flops) or gemm on the full matrix; leverage: L^{-1} once and a
  // triangular product (trmm) or a full product (gemm) per block, or a solve per block (trsm).
  const std::string hessian_kernel = kernel_choice("RIF_CUDA_HESSIAN", {"syrk", "gemm", "panels"});
  const std::string leverage_kernel =
      kernel_choice("RIF_CUDA_LEVERAGE", {"gemm", "trmm", "trsm", "panels"});
  const bool inverse = leverage_kernel != "trsm";
  using clock = std::chrono::steady_clock;
  const std::lock_guard<std::recursive_mutex> lock(device_mutex());
  cudaGetLastError();  // a failure elsewhere in the process must not be reported as ours
  // Device X: work on the device that holds it. Host X: device 0.
  int dev = 0;
  if (device) {
    cudaPointerAttributes attr;
    check(cudaPointerGetAttributes(&attr, device->data), "reading X's device pointer");
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
      throw std::invalid_argument("X was passed as a device array, but its pointer is not in "
                                  "CUDA device memory");
    }
    dev = attr.device;
  }
  const DeviceScope scope(dev);
  StatePtr st(new State(dev));
  State& S = *st;
  S.n = host.rows();
  S.d = host.features();
  S.p = host.params();
  S.intercept = host.intercept();
  S.f32 = device ? device->f32 : host.is_float32();
  S.row_bytes = static_cast<size_t>(S.d) * (S.f32 ? sizeof(float) : sizeof(double));
  const Index n = S.n, p = S.p;
  const int pi = as_int(p);
  // Row blocks of about 64 MiB of input: small enough that the pipeline fills fast, large
  // enough for efficient syrk / trmm calls.
  S.rows = std::max<Index>(
      1, std::min<Index>(n, static_cast<Index>((size_t{64} << 20) / std::max<size_t>(S.row_bytes, 8))));
  S.rows = std::max<Index>(S.rows, std::min<Index>(n, 256));
  S.rows = std::min<Index>(n, env_rows("RIF_CUDA_BLOCK_ROWS", S.rows));
  if (device) {
    check(cudaDeviceSynchronize(), "waiting for the producer of X");  // its stream may be busy
    S.device_rows = static_cast<const char*>(device->data);
  }
  const char* host_rows = S.host_rows(host);
  // Keep host X in device memory when it fits beside this attribution's own buffers (and
  // RIF_CUDA_KEEP_X is not "0": then every pass streams X from host memory).
  char* keep = nullptr;
  const char* keep_env = std::getenv("RIF_CUDA_KEEP_X");
  const bool may_keep = !(keep_env && std::string(keep_env) == "0");
  if (!device && may_keep) {
    size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const double own = 8.0 * (5.0 * p * p + 3.0 * p * S.rows + 8.0 * n) +
                       4.0 * S.rows * static_cast<double>(S.row_bytes);
    if (static_cast<double>(n) * S.row_bytes + own < 0.85 * static_cast<double>(free_bytes)) {
      S.owned = std::make_unique<DeviceBuffer>(static_cast<size_t>(n) * S.row_bytes);
      keep = S.owned->as<char>();
    }
  }

  cudaStream_t cs = S.hd.compute;
  DeviceBuffer theta_d = upload(theta, cs), y_d = upload(y, cs), w_d = upload(w, cs);
  DeviceBuffer z_d(sizeof(double) * n), r_d(sizeof(double) * n), a_d(sizeof(double) * n);
  DeviceBuffer h_d(sizeof(double) * n), g_d(sizeof(double) * p);
  DeviceBuffer H_d(sizeof(double) * p * p), Li_d(sizeof(double) * (inverse ? p * p : 1));
  DeviceBuffer work_d(sizeof(double) * p * S.rows), out_d(sizeof(double) * p * S.rows);
  check(cudaMemsetAsync(H_d.ptr, 0, sizeof(double) * p * p, cs), "memset");
  check(cudaMemsetAsync(g_d.ptr, 0, sizeof(double) * p, cs), "memset");
  const double* w_ptr = w.size() ? w_d.as<double>() : nullptr;
  const int fam = family == Family::logistic ? 0 : family == Family::squared ? 1 : 2;
  const double one = 1.0, zero = 0.0;
  // The staging copies run on the copy stream: the uploads above must land first.
  check(cudaStreamSynchronize(cs), "uploads");

  // Pass 1, as X arrives: z = X theta, r and a, then H += (sqrt(a) x)(sqrt(a) x)^T.
  const auto t0 = clock::now();
  S.for_blocks(host_rows, keep, [&](const char* raw, Index begin, Index count) {
    const int c = as_int(count);
    double* work = work_d.as<double>();
    S.load(raw, nullptr, work, count);
    check(cublasDgemv(S.hd.blas, CUBLAS_OP_T, pi, c, &one, work, pi, theta_d.as<double>(), 1,
                      &zero, z_d.as<double>() + begin, 1),
          "gemv z");
    glm_derivatives(z_d.as<double>() + begin, y_d.as<double>() + begin,
                    w_ptr ? w_ptr + begin : nullptr, r_d.as<double>() + begin,
                    a_d.as<double>() + begin, count, fam, cs);
    scale_columns(work, a_d.as<double>() + begin, count, p, cs);
    if (hessian_kernel == "panels") {
      // H[j0:, j0:j0+w] += W[j0:, :] W[j0:j0+w, :]^T, column panel by column panel
      for (long long j0 = 0; j0 < p; j0 += kPanel) {
        const int w = static_cast<int>(std::min<long long>(kPanel, p - j0));
        check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_T, as_int(p - j0), w, c, &one,
                          work + j0, pi, work + j0, pi, &one, H_d.as<double>() + j0 + j0 * p, pi),
              "gemm H panel");
      }
    } else if (hessian_kernel == "gemm") {
      check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_T, pi, pi, c, &one, work, pi, work, pi,
                        &one, H_d.as<double>(), pi),
            "gemm H");
    } else {
      check(cublasDsyrk(S.hd.blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, pi, c, &one, work, pi,
                        &one, H_d.as<double>(), pi),
            "syrk");
    }
  });
  if (keep) S.device_rows = keep;  // X is in device memory from now on
  add_penalty(H_d.as<double>(), p, S.d, l2, cs);
  out.z.resize(n);
  out.r.resize(n);
  out.a.resize(n);
  Vector diag_H(p), diag_L(p);  // H and L stay on the device: only their diagonals come back
  check(cudaMemcpyAsync(out.z.data(), z_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, cs), "copy z");
  check(cudaMemcpyAsync(out.r.data(), r_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, cs), "copy r");
  check(cudaMemcpyAsync(out.a.data(), a_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, cs), "copy a");
  S.hessian = std::make_unique<DeviceBuffer>(sizeof(double) * p * p);
  check(cudaMemcpyAsync(S.hessian->ptr, H_d.ptr, sizeof(double) * p * p, cudaMemcpyDeviceToDevice,
                        cs),
        "keep H");
  check(cudaMemcpy2DAsync(diag_H.data(), sizeof(double), H_d.ptr, sizeof(double) * (p + 1),
                          sizeof(double), p, cudaMemcpyDeviceToHost, cs),
        "copy diag(H)");
  check(cudaStreamSynchronize(cs), "Hessian");
  if (check_inputs) check_inputs(host, out);  // z, r, a finite, before the factorisation
  const auto t1 = clock::now();

  // Cholesky in place on the device; a failing pivot is reported like the CPU path does.
  int lwork = 0;
  check(cusolverDnDpotrf_bufferSize(S.hd.solver, CUBLAS_FILL_MODE_LOWER, pi, H_d.as<double>(), pi,
                                    &lwork),
        "potrf buffer");
  DeviceBuffer potrf_work(sizeof(double) * std::max(lwork, 1)), info_d(sizeof(int));
  check(cusolverDnDpotrf(S.hd.solver, CUBLAS_FILL_MODE_LOWER, pi, H_d.as<double>(), pi,
                         potrf_work.as<double>(), lwork, info_d.as<int>()),
        "potrf");
  int info = 0;
  check(cudaMemcpyAsync(&info, info_d.ptr, sizeof(int), cudaMemcpyDeviceToHost, cs), "info");
  check(cudaMemcpy2DAsync(diag_L.data(), sizeof(double), H_d.ptr, sizeof(double) * (p + 1),
                          sizeof(double), p, cudaMemcpyDeviceToHost, cs),
        "copy diag(L)");
  check(cudaStreamSynchronize(cs), "Cholesky");
  const Index column = info > 0 ? info - 1 : -1;
  check_factor_diagonal(diag_L, column, column >= 0 ? diag_L[column] : 0.0,
                        pivot_floors(diag_H),
                        "The Hessian H = X^T diag(a) X + l2 P at theta");
  const auto t2 = clock::now();

  // Pass 2: L^{-1} once (trtri), then per block one triangular product, column norms, X^T r.
  size_t dev_bytes = 0, host_bytes = 0;
  if (inverse) {
    check(cudaMemcpyAsync(Li_d.ptr, H_d.ptr, sizeof(double) * p * p, cudaMemcpyDeviceToDevice,
                          cs),
          "copy factor");
    check(cusolverDnXtrtri_bufferSize(S.hd.solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT,
                                      p, CUDA_R_64F, Li_d.ptr, p, &dev_bytes, &host_bytes),
          "trtri buffer");
  }
  DeviceBuffer trtri_dev(dev_bytes);
  std::string trtri_host(std::max<size_t>(host_bytes, 1), '\0');
  info = 0;
  if (inverse) {
    check(cusolverDnXtrtri(S.hd.solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, p,
                           CUDA_R_64F, Li_d.ptr, p, trtri_dev.ptr, dev_bytes, trtri_host.data(),
                           host_bytes, info_d.as<int>()),
          "trtri");
    check(cudaMemcpyAsync(&info, info_d.ptr, sizeof(int), cudaMemcpyDeviceToHost, cs), "info");
    if (leverage_kernel == "gemm" || leverage_kernel == "panels") {
      // full products over the lower triangle need the upper one at zero
      zero_upper(Li_d.as<double>(), p, cs);
    }
  }
  check(cudaStreamSynchronize(cs), "trtri");  // the copy stream's transfers may start now
  if (info != 0) {
    throw std::runtime_error("cuSOLVER trtri failed on the Cholesky factor (info " +
                             std::to_string(info) + ")");
  }
  S.for_blocks(host_rows, nullptr, [&](const char* raw, Index begin, Index count) {
    const int c = as_int(count);
    double* work = work_d.as<double>();
    S.load(raw, nullptr, work, count);
    check(cublasDgemv(S.hd.blas, CUBLAS_OP_N, pi, c, &one, work, pi, r_d.as<double>() + begin, 1,
                      &one, g_d.as<double>(), 1),
          "gemv X^T r");
    double* solved = out_d.as<double>();  // L^{-1} x for each column
    if (leverage_kernel == "panels") {
      // row panel [r0, r1) of L^{-1} X^T = L^{-1}[r0:r1, 0:r1] X^T[0:r1]; its squared column
      // norms summed into h, then times a
      double* h = h_d.as<double>() + begin;
      check(cudaMemsetAsync(h, 0, sizeof(double) * count, cs), "memset h");
      for (long long r0 = 0; r0 < p; r0 += kPanel) {
        const long long w = std::min<long long>(kPanel, p - r0), r1 = r0 + w;
        check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(w), c,
                          as_int(r1), &one, Li_d.as<double>() + r0, pi, work, pi, &zero, solved,
                          static_cast<int>(w)),
              "gemm leverage panel");
        leverage_columns(solved, nullptr, h, w, count, cs);
      }
      scale_by(h, a_d.as<double>() + begin, count, cs);
      return;
    }
    if (leverage_kernel == "trmm") {
      check(cublasDtrmm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                        CUBLAS_DIAG_NON_UNIT, pi, c, &one, Li_d.as<double>(), pi, work, pi,
                        solved, pi),
            "trmm");
    } else if (leverage_kernel == "gemm") {
      check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_N, pi, c, pi, &one, Li_d.as<double>(),
                        pi, work, pi, &zero, solved, pi),
            "gemm leverage");
    } else {
      check(cublasDtrsm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                        CUBLAS_DIAG_NON_UNIT, pi, c, &one, H_d.as<double>(), pi, work, pi),
            "trsm");
      solved = work;
    }
    leverage_columns(solved, a_d.as<double>() + begin, h_d.as<double>() + begin, p, count, cs);
  });
  out.h.resize(n);
  out.g.resize(p);
  check(cudaMemcpyAsync(out.h.data(), h_d.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost, cs),
        "copy h");
  check(cudaMemcpyAsync(out.g.data(), g_d.ptr, sizeof(double) * p, cudaMemcpyDeviceToHost, cs),
        "copy g");
  check(cudaStreamSynchronize(cs), "leverage");
  const auto t3 = clock::now();
  out.seconds[0] = std::chrono::duration<double>(t1 - t0).count();
  out.seconds[1] = std::chrono::duration<double>(t2 - t1).count();
  out.seconds[2] = std::chrono::duration<double>(t3 - t2).count();
  out.resident = S.device_rows != nullptr;
  S.family = fam;
  S.labels = std::make_unique<DeviceBuffer>(std::move(y_d));
  if (w_ptr) S.weights = std::make_unique<DeviceBuffer>(std::move(w_d));
  S.factor = std::make_unique<DeviceBuffer>(std::move(H_d));  // L, for influence rows
  return st;
}

void project(State& S, const Design& host, const Matrix& V, Eigen::Ref<RowMatrix> out) {
  const Index n = S.n, p = S.p, m = V.cols();
  if (V.rows() != p || out.rows() != n || out.cols() != m) {
    throw std::invalid_argument("project: shapes do not match");
  }
  if (m == 0 || n == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  DeviceBuffer U_d(sizeof(double) * p * m), out_d(sizeof(double) * n * m);
  DeviceBuffer work_d(sizeof(double) * p * S.rows);
  check(cudaMemcpyAsync(U_d.ptr, V.data(), sizeof(double) * p * m, cudaMemcpyHostToDevice, cs),
        "upload V");
  S.solve_in_place(U_d.as<double>(), m);  // U = H^{-1} V with the factor kept on the device
  check(cudaStreamSynchronize(cs), "H^{-1} V");
  const char* host_rows = S.host_rows(host);
  const double one = 1.0, zero = 0.0;
  const int pi = as_int(p), mi = as_int(m), ni = as_int(n);
  S.for_blocks(host_rows, nullptr, [&](const char* raw, Index begin, Index count) {
    S.load(raw, nullptr, work_d.as<double>(), count);
    // out(begin.., :) = work^T U, into the n x m column-major result.
    check(cublasDgemm(S.hd.blas, CUBLAS_OP_T, CUBLAS_OP_N, as_int(count), mi, pi, &one,
                      work_d.as<double>(), pi, U_d.as<double>(), pi, &zero,
                      out_d.as<double>() + begin, ni),
          "gemm X U");
  });
  Matrix result(n, m);
  check(cudaMemcpyAsync(result.data(), out_d.ptr, sizeof(double) * n * m, cudaMemcpyDeviceToHost,
                        cs),
        "copy X U");
  check(cudaStreamSynchronize(cs), "X U");
  out = result;
}

void solve(State& S, Eigen::Ref<Matrix> V) {
  const Index p = S.p, m = V.cols();
  if (!S.factor || V.rows() != p) throw std::invalid_argument("solve: shapes do not match");
  if (m == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  Matrix host = V;  // contiguous, leading dimension p
  DeviceBuffer V_d(sizeof(double) * p * m);
  check(cudaMemcpyAsync(V_d.ptr, host.data(), sizeof(double) * p * m, cudaMemcpyHostToDevice, cs),
        "upload V");
  S.solve_in_place(V_d.as<double>(), m);
  check(cudaMemcpyAsync(host.data(), V_d.ptr, sizeof(double) * p * m, cudaMemcpyDeviceToHost, cs),
        "copy H^{-1} V");
  check(cudaStreamSynchronize(cs), "H^{-1} V");
  V = host;
}

void fetch_factor(State& S, Matrix& H, Matrix& L) {
  const Index p = S.p;
  if (!S.hessian || !S.factor) throw std::logic_error("fetch_factor: H was fetched already");
  const DeviceEntry entry(S.device);
  H.resize(p, p);
  L.resize(p, p);
  check(cudaMemcpyAsync(H.data(), S.hessian->ptr, sizeof(double) * p * p, cudaMemcpyDeviceToHost,
                        S.hd.compute),
        "copy H");
  check(cudaMemcpyAsync(L.data(), S.factor->ptr, sizeof(double) * p * p, cudaMemcpyDeviceToHost,
                        S.hd.compute),
        "copy L");
  check(cudaStreamSynchronize(S.hd.compute), "copy H, L");
  S.hessian.reset();  // its one use is done: free p^2 doubles of device memory
  H.triangularView<Eigen::StrictlyUpper>().setZero();  // syrk leaves it unset, gemm full
  L.triangularView<Eigen::StrictlyUpper>().setZero();
}

void gradients(State& S, const Design& host, const Matrix& Theta, Matrix& G) {
  const Index p = S.p, m = Theta.cols();
  if (Theta.rows() != p) throw std::invalid_argument("gradients: theta has the wrong length");
  G.setZero(p, m);
  if (m == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  DeviceBuffer T_d(sizeof(double) * p * m), G_d(sizeof(double) * p * m);
  // Z (sub x m) for sub-blocks of rows: about 32 Mi doubles at most, however many sets
  Index sub = std::max<Index>(1, std::min<Index>(S.rows, (Index{32} << 20) / m));
  sub = std::min(sub, env_rows("RIF_CUDA_GRADIENT_ROWS", sub));
  DeviceBuffer work_d(sizeof(double) * p * S.rows), Z_d(sizeof(double) * sub * m);
  check(cudaMemcpyAsync(T_d.ptr, Theta.data(), sizeof(double) * p * m, cudaMemcpyHostToDevice,
                        cs),
        "upload theta");
  check(cudaMemsetAsync(G_d.ptr, 0, sizeof(double) * p * m, cs), "memset");
  check(cudaStreamSynchronize(cs), "upload theta");
  const char* host_rows = S.host_rows(host);
  const double one = 1.0, zero = 0.0;
  const int pi = as_int(p), mi = as_int(m);
  const double* w = S.weights ? S.weights->as<double>() : nullptr;
  S.for_blocks(host_rows, nullptr, [&](const char* raw, Index begin, Index count) {
    double* work = work_d.as<double>();
    S.load(raw, nullptr, work, count);
    for (Index s0 = 0; s0 < count; s0 += sub) {
      // Z = W_s^T Theta (k x m), then residuals in place, then G += W_s Z
      const Index k = std::min(sub, count - s0);
      const int ki = as_int(k);
      const double* Ws = work + s0 * p;
      check(cublasDgemm(S.hd.blas, CUBLAS_OP_T, CUBLAS_OP_N, ki, mi, pi, &one, Ws, pi,
                        T_d.as<double>(), pi, &zero, Z_d.as<double>(), ki),
            "gemm z");
      residual_columns(Z_d.as<double>(), S.labels->as<double>() + begin + s0,
                       w ? w + begin + s0 : nullptr, k, m, S.family, cs);
      check(cublasDgemm(S.hd.blas, CUBLAS_OP_N, CUBLAS_OP_N, pi, mi, ki, &one, Ws, pi,
                        Z_d.as<double>(), ki, &one, G_d.as<double>(), pi),
            "gemm X^T r");
    }
  });
  check(cudaMemcpyAsync(G.data(), G_d.ptr, sizeof(double) * p * m, cudaMemcpyDeviceToHost, cs),
        "copy gradients");
  check(cudaStreamSynchronize(cs), "gradients");
}

}  // namespace rif::cuda
