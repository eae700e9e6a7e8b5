// The CUDA backend's work on sets of samples, with X and the factor kept in device memory:
// gathered and summed rows, influence rows H^{-1} x_i, and the Woodbury panels and solves of
// retraining's chord steps (cuda_backend.hpp).
#include "rif/cuda_backend.hpp"

#include "device.cuh"
#include "kernels.cuh"
#include "state.cuh"

#include <algorithm>
#include <limits>
#include <map>
#include <stdexcept>
#include <vector>

namespace rif::cuda {

using namespace detail;  // the backend's own runtime and kernels

namespace {

/// Segment indices grouped by width (widths of 0 left out), for cuBLAS batched calls: one call
/// per distinct width instead of one per segment.
using WidthGroups = std::map<Index, std::vector<size_t>>;
WidthGroups by_width(const std::vector<Index>& width) {
  WidthGroups groups;
  for (size_t i = 0; i < width.size(); ++i) {
    if (width[i] > 0) groups[width[i]].push_back(i);
  }
  return groups;
}

/// The pointer arrays of batched calls over `groups`, in device memory: array a holds
/// pointer_of[a](i) for every segment i, in group order (the order the calls take them), and
/// starts at slice(a). Uploaded at once on `stream` (from pageable memory, which is staged
/// before cudaMemcpyAsync returns).
class DevicePointers {
 public:
  template <class... F>
  DevicePointers(const WidthGroups& groups, cudaStream_t stream, F&&... pointer_of)
      : items_(count(groups)), buf_(sizeof(void*) * items_ * sizeof...(F)) {
    std::vector<const void*> host;
    host.reserve(items_ * sizeof...(F));
    const auto append = [&](auto&& of) {
      for (const auto& group : groups) {
        for (size_t i : group.second) host.push_back(of(i));
      }
    };
    (append(pointer_of), ...);
    if (!host.empty()) {
      check(cudaMemcpyAsync(buf_.ptr, host.data(), sizeof(void*) * host.size(),
                            cudaMemcpyHostToDevice, stream),
            "upload pointer arrays");
    }
  }
  template <class T>
  T* const* slice(size_t a) const {
    return reinterpret_cast<T* const*>(buf_.as<void*>() + a * items_);
  }

 private:
  static size_t count(const WidthGroups& groups) {
    size_t n = 0;
    for (const auto& group : groups) n += group.second.size();
    return n;
  }
  size_t items_;
  DeviceBuffer buf_;
};

}  // namespace

void gather(State& S, const std::int64_t* idx, Index k, const double* coef,
            Eigen::Ref<Matrix> out) {
  const Index p = S.p;
  if (!S.device_rows) throw std::logic_error("gather: X is not in device memory");
  if (out.rows() != p || out.cols() != k) throw std::invalid_argument("gather: shapes differ");
  if (k == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  // in chunks of at most one row block: bounded device memory for sets as large as n
  const Index chunk = std::min(k, S.rows);
  DeviceBuffer& buf = S.scratch(sizeof(double) * p * chunk + 16 * chunk);
  double* out_d = buf.as<double>();
  long long* idx_d = reinterpret_cast<long long*>(out_d + p * chunk);
  double* coef_d = reinterpret_cast<double*>(idx_d + chunk);
  const Vector c = coef ? Vector(Eigen::Map<const Vector>(coef, k)) : Vector(Vector::Ones(k));
  Matrix host(p, chunk);
  for (Index c0 = 0; c0 < k; c0 += chunk) {
    const Index count = std::min(chunk, k - c0);
    S.gather_to(idx + c0, c.data() + c0, count, idx_d, coef_d, out_d);
    check(cudaMemcpyAsync(host.data(), out_d, sizeof(double) * p * count, cudaMemcpyDeviceToHost,
                          cs),
          "copy gathered rows");
    check(cudaStreamSynchronize(cs), "gather");
    out.middleCols(c0, count) = host.leftCols(count);
  }
}

void accumulate(State& S, const std::int64_t* idx, Index k, const double* coef,
                Eigen::Ref<Vector> out) {
  const Index p = S.p;
  if (!S.device_rows) throw std::logic_error("accumulate: X is not in device memory");
  if (out.size() != p) throw std::invalid_argument("accumulate: shapes differ");
  if (k == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  Index chunk = std::min<Index>(k, Index{1} << 20);
  chunk = std::min(chunk, env_rows("RIF_CUDA_ACCUMULATE_ROWS", chunk));
  // index slices over the grid's y dimension: parallel work also when p is small
  constexpr Index kSlices = 64, kPerSlice = 256;
  const Index slices_max = std::min<Index>(kSlices, (chunk + kPerSlice - 1) / kPerSlice);
  DeviceBuffer& buf = S.scratch(sizeof(double) * p * slices_max + 16 * chunk);
  double* sum_d = buf.as<double>();
  long long* idx_d = reinterpret_cast<long long*>(sum_d + p * slices_max);
  double* coef_d = reinterpret_cast<double*>(idx_d + chunk);
  Matrix part(p, slices_max);
  for (Index c0 = 0; c0 < k; c0 += chunk) {
    const Index count = std::min(chunk, k - c0);
    const Index slices = std::min<Index>(slices_max, (count + kPerSlice - 1) / kPerSlice);
    check(cudaMemcpyAsync(idx_d, idx + c0, sizeof(long long) * count, cudaMemcpyHostToDevice,
                          cs),
          "upload indices");
    check(cudaMemcpyAsync(coef_d, coef + c0, sizeof(double) * count, cudaMemcpyHostToDevice, cs),
          "upload coefficients");
    accumulate_rows(S.device_rows, S.f32, idx_d, coef_d, sum_d, count, S.d, p, S.intercept,
                    slices, cs);
    check(cudaMemcpyAsync(part.data(), sum_d, sizeof(double) * p * slices,
                          cudaMemcpyDeviceToHost, cs),
          "copy sums");
    check(cudaStreamSynchronize(cs), "accumulate");
    for (Index sl = 0; sl < slices; ++sl) out += part.col(sl);  // in a fixed order
  }
}

bool resident(const State& S) { return S.device_rows != nullptr && S.factor != nullptr; }

bool influence_rows(State& S, const std::int64_t* idx, Index k, const Vector& coef,
                    Eigen::Ref<RowMatrix> out) {
  if (!S.device_rows || !S.factor) return false;  // X streamed: the CPU answers
  const Index p = S.p;
  if (out.rows() != k || out.cols() != p || coef.size() != k) {
    throw std::invalid_argument("influence_rows: shapes do not match");
  }
  if (k == 0) return true;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  const Index chunk = std::min(k, S.rows);
  DeviceBuffer idx_d(sizeof(long long) * chunk), coef_d(sizeof(double) * chunk);
  DeviceBuffer work_d(sizeof(double) * p * chunk);
  RowMatrix rows(chunk, p);  // p x chunk column-major on the device = chunk x p row-major
  for (Index c = 0; c < k; c += chunk) {
    const Index count = std::min(chunk, k - c);
    S.gather_to(idx + c, coef.data() + c, count, idx_d.as<long long>(), coef_d.as<double>(),
                work_d.as<double>());
    S.solve_in_place(work_d.as<double>(), count);  // columns coef_j H^{-1} x_j
    check(cudaMemcpyAsync(rows.data(), work_d.ptr, sizeof(double) * p * count,
                          cudaMemcpyDeviceToHost, cs),
          "copy rows");
    check(cudaStreamSynchronize(cs), "influence rows");
    out.middleRows(c, count) = rows.topRows(count);
  }
  return true;
}

/// B = L^{-1} U of a WoodburyBatch, in device memory (see cuda_backend.hpp).
class Panel {
 public:
  int device = 0;
  Index p = 0, columns = 0;
  std::unique_ptr<DeviceBuffer> B;  ///< p x columns, column-major
};

void PanelDeleter::operator()(Panel* panel) const { delete_on_device(panel); }

PanelPtr woodbury_panel(State& S, const std::int64_t* idx, const Vector& scale,
                        const std::vector<Index>& offsets, Vector& grams) {
  if (!S.device_rows || !S.factor) return nullptr;
  if (offsets.empty() || scale.size() != offsets.back()) {
    throw std::invalid_argument("woodbury_panel: offsets and scales do not match");
  }
  const Index p = S.p, K = offsets.back();
  Index gram_total = 0;
  for (size_t q = 0; q + 1 < offsets.size(); ++q) {
    const Index k = offsets[q + 1] - offsets[q];
    gram_total += k * k;
  }
  const DeviceEntry entry(S.device);
  // B, the blocks and the indices must fit in half of the free memory (the rest for the
  // right-hand sides of the solves and for other work); otherwise the CPU takes the sets.
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const double need = sizeof(double) * (static_cast<double>(p) * K + gram_total) + 16.0 * K +
                      2.0 * sizeof(void*) * static_cast<double>(offsets.size());
  if (need > 0.5 * static_cast<double>(free_bytes)) return nullptr;
  if (K > std::numeric_limits<int>::max()) return nullptr;  // cuBLAS takes int sizes
  PanelPtr panel(new Panel);
  panel->device = S.device;
  panel->p = p;
  panel->columns = K;
  std::unique_ptr<DeviceBuffer> idx_d, coef_d, gram_d;
  try {
    panel->B = std::make_unique<DeviceBuffer>(sizeof(double) * p * K);
    idx_d = std::make_unique<DeviceBuffer>(sizeof(long long) * K);
    coef_d = std::make_unique<DeviceBuffer>(sizeof(double) * K);
    gram_d = std::make_unique<DeviceBuffer>(sizeof(double) * gram_total);
  } catch (const std::runtime_error&) {
    // the memory went elsewhere since cudaMemGetInfo (another process): the CPU takes the
    // sets (check() has cleared the error)
    return nullptr;
  }
  grams.setZero(gram_total);
  if (K == 0) return panel;
  cudaStream_t cs = S.hd.compute;
  double* B = panel->B->as<double>();
  S.gather_to(idx, scale.data(), K, idx_d->as<long long>(), coef_d->as<double>(), B);
  const double one = 1.0, zero = 0.0;
  const int pi = as_int(p);
  check(cublasDtrsm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                    CUBLAS_DIAG_NON_UNIT, pi, as_int(K), &one, S.factor->as<double>(), pi, B, pi),
        "trsm L^{-1} U");
  // the whole k x k blocks B_q^T B_q (symmetric, column-major), one batched GEMM per width k
  const size_t m = offsets.size() - 1;
  std::vector<Index> width(m), gram_at(m);
  for (size_t q = 0, g0 = 0; q < m; ++q) {
    width[q] = offsets[q + 1] - offsets[q];
    gram_at[q] = static_cast<Index>(g0);
    g0 += static_cast<size_t>(width[q] * width[q]);
  }
  const auto groups = by_width(width);
  std::unique_ptr<DevicePointers> held;  // [B_q | block q]
  try {
    held = std::make_unique<DevicePointers>(
        groups, cs, [&](size_t q) { return B + static_cast<size_t>(offsets[q]) * p; },
        [&](size_t q) { return gram_d->as<double>() + gram_at[q]; });
  } catch (const std::runtime_error&) {
    return nullptr;  // as above: out of device memory, the CPU takes the sets
  }
  const DevicePointers& pointers = *held;
  size_t at = 0;
  for (const auto& [k, members] : groups) {
    const int ki = as_int(k), count = as_int(static_cast<Index>(members.size()));
    check(cublasDgemmBatched(S.hd.blas, CUBLAS_OP_T, CUBLAS_OP_N, ki, ki, pi, &one,
                             pointers.slice<const double>(0) + at, pi,
                             pointers.slice<const double>(0) + at, pi, &zero,
                             pointers.slice<double>(1) + at, ki, count),
          "batched gemm B^T B");
    at += members.size();
  }
  check(cudaMemcpyAsync(grams.data(), gram_d->ptr, sizeof(double) * gram_total,
                        cudaMemcpyDeviceToHost, cs),
        "copy B^T B");
  check(cudaStreamSynchronize(cs), "Woodbury panel");
  return panel;
}

void woodbury_solve(State& S, const Panel& panel, Matrix& G, const std::vector<Index>& begin,
                    const std::vector<Index>& count,
                    const std::function<void(Vector&)>& correct) {
  const Index p = S.p, q = G.cols();
  if (!S.factor || G.rows() != p || panel.p != p || panel.device != S.device ||
      static_cast<Index>(begin.size()) != q || static_cast<Index>(count.size()) != q) {
    throw std::invalid_argument("woodbury_solve: shapes do not match");
  }
  std::vector<Index> packed(static_cast<size_t>(q) + 1, 0);  // column c's t: [packed[c], ..)
  for (size_t c = 0; c < static_cast<size_t>(q); ++c) {
    if (begin[c] < 0 || count[c] < 0 || begin[c] + count[c] > panel.columns) {
      throw std::invalid_argument("woodbury_solve: columns outside the panel");
    }
    packed[c + 1] = packed[c] + count[c];
  }
  if (q == 0) return;
  const DeviceEntry entry(S.device);
  cudaStream_t cs = S.hd.compute;
  const Index T = packed.back();
  DeviceBuffer G_d(sizeof(double) * p * q), t_d(sizeof(double) * T);
  const double one = 1.0;
  const int pi = as_int(p), qi = as_int(q);
  const double* L = S.factor->as<double>();
  const double* B = panel.B->as<double>();
  double* g = G_d.as<double>();
  double* t = t_d.as<double>();
  check(cudaMemcpyAsync(g, G.data(), sizeof(double) * p * q, cudaMemcpyHostToDevice, cs),
        "upload right-hand sides");
  check(cublasDtrsm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                    CUBLAS_DIAG_NON_UNIT, pi, qi, &one, L, pi, g, pi),
        "trsm L^{-1} G");
  // per column c: B_c, b_c (in g) and t_c, grouped by width for one batched call per width
  const auto groups = by_width(count);
  const DevicePointers pointers(  // [B_c | g_c | t_c]
      groups, cs, [&](size_t c) { return B + static_cast<size_t>(begin[c]) * p; },
      [&](size_t c) { return g + c * p; }, [&](size_t c) { return t + packed[c]; });
  // array y <- op(B_c) array x + beta array y, one batched call per width
  const auto batched_gemv = [&](cublasOperation_t op, size_t x, double beta, size_t y,
                                const char* what) {
    size_t at = 0;
    for (const auto& [k, columns] : groups) {
      check(cublasDgemvBatched(S.hd.blas, op, pi, as_int(k), &one,
                               pointers.slice<const double>(0) + at, pi,
                               pointers.slice<const double>(x) + at, 1, &beta,
                               pointers.slice<double>(y) + at, 1,
                               as_int(static_cast<Index>(columns.size()))),
            what);
      at += columns.size();
    }
  };
  batched_gemv(CUBLAS_OP_T, 1, 0.0, 2, "batched gemv B^T b");  // t_c = B_c^T b_c
  Vector host_t(T);
  if (T > 0) {
    check(cudaMemcpyAsync(host_t.data(), t, sizeof(double) * T, cudaMemcpyDeviceToHost, cs),
          "copy B^T b");
  }
  check(cudaStreamSynchronize(cs), "Woodbury B^T b");
  // t_c <- M_c^{-1} t_c on the host (k x k systems; the device lock is held meanwhile, so other
  // attributions' device work waits for these small solves)
  correct(host_t);
  if (T > 0) {
    check(cudaMemcpyAsync(t, host_t.data(), sizeof(double) * T, cudaMemcpyHostToDevice, cs),
          "upload M^{-1} B^T b");
  }
  batched_gemv(CUBLAS_OP_N, 2, 1.0, 1, "batched gemv B t");  // b_c += B_c t_c
  check(cublasDtrsm(S.hd.blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T,
                    CUBLAS_DIAG_NON_UNIT, pi, qi, &one, L, pi, g, pi),
        "trsm L^{-T} G");
  check(cudaMemcpyAsync(G.data(), g, sizeof(double) * p * q, cudaMemcpyDeviceToHost, cs),
        "copy solutions");
  check(cudaStreamSynchronize(cs), "Woodbury solve");
}

}  // namespace rif::cuda
