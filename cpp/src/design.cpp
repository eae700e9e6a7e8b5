#include "rif/design.hpp"

#include "rif/parallel.hpp"
#include "rif/sparse.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace rif {

namespace {

/// Per-thread buffers for rows read from a source (fetch) and for gathered rows (take).
thread_local std::vector<char> fetch_scratch;
thread_local std::vector<char> take_scratch;

char* scratch(std::vector<char>& buffer, std::size_t bytes) {
  if (buffer.size() < bytes) buffer.resize(bytes);
  return buffer.data();
}

}  // namespace

const void* Design::fetch(Index begin, Index count, bool pass, bool* in_place) const {
  if (in_place) *in_place = true;
  if (f64_) return f64_ + begin * d_;
  if (f32_) return f32_ + begin * d_;
  const RowSource& src = *source_;
  if (pass) {
    src.report(count);
    src.prefetch(begin + count, 2 * count);
  }
  if (const void* rows = src.direct(begin, count)) return rows;
  if (in_place) *in_place = false;
  char* out = scratch(fetch_scratch, static_cast<std::size_t>(count) * src.row_bytes());
  src.read(begin, count, out);
  return out;
}

const void* Design::take(const std::int64_t* idx, Index k) const {
  char* out = scratch(take_scratch, static_cast<std::size_t>(k) * source_->row_bytes());
  source_->take(idx, k, out);
  return out;
}

double Design::raw_from_source(Index i, Index k) const {
  const void* row = fetch(i, 1, false);
  return is_float32() ? static_cast<double>(static_cast<const float*>(row)[k])
                      : static_cast<const double*>(row)[k];
}

void Design::raw_row(Index i, double* out) const {
  const void* row = fetch(i, 1, false);
  if (is_float32()) {
    const float* src = static_cast<const float*>(row);
    for (Index k = 0; k < d_; ++k) out[k] = static_cast<double>(src[k]);
  } else {
    std::copy_n(static_cast<const double*>(row), d_, out);
  }
}

template <class T, class Out>
void Design::load_impl(const T* rows, Index count, Out* out, const double* scale,
                       int threads) const {
  const Index p = params();
  const double* c = centre_;
  auto copy_row = [&](Index j) {
    const T* src = rows + j * d_;
    Out* dst = out + j * p;
    const double s = scale ? scale[j] : 1.0;
    if (c) {
      for (Index k = 0; k < d_; ++k) {
        dst[k] = static_cast<Out>(s * (static_cast<double>(src[k]) - c[k]));
      }
    } else if (scale) {
      for (Index k = 0; k < d_; ++k) dst[k] = static_cast<Out>(s * static_cast<double>(src[k]));
    } else {
      for (Index k = 0; k < d_; ++k) dst[k] = static_cast<Out>(src[k]);
    }
    if (intercept_) dst[d_] = static_cast<Out>(s);
  };
#ifdef RIF_HAVE_OPENMP
  if (threads > 1 && count * p >= (Index{1} << 16)) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (Index j = 0; j < count; ++j) copy_row(j);
    return;
  }
#endif
  (void)threads;
  for (Index j = 0; j < count; ++j) copy_row(j);
}

template <class Out>
void Design::load_into(Index begin, Index count, Out* out, const double* scale,
                       int threads) const {
  const void* rows = fetch(begin, count, true);
  if (is_float32()) {
    load_impl(static_cast<const float*>(rows), count, out, scale, threads);
  } else {
    load_impl(static_cast<const double*>(rows), count, out, scale, threads);
  }
}

void Design::load(Index begin, Index count, Matrix& buffer, const double* scale,
                  int threads) const {
  buffer.resize(params(), count);
  load_into(begin, count, buffer.data(), scale, threads);
}

void Design::load(Index begin, Index count, FloatMatrix& buffer, const double* scale,
                  int threads) const {
  buffer.resize(params(), count);
  load_into(begin, count, buffer.data(), scale, threads);
}

Eigen::Map<const Matrix> Design::block(Index begin, Index count, Matrix& buffer) const {
  if (!is_float32() && !intercept_ && !centre_) {
    bool in_place = false;
    const void* rows = fetch(begin, count, true, &in_place);
    if (in_place) return Eigen::Map<const Matrix>(static_cast<const double*>(rows), d_, count);
    buffer.resize(d_, count);
    std::copy_n(static_cast<const double*>(rows), d_ * count, buffer.data());
    return Eigen::Map<const Matrix>(buffer.data(), d_, count);
  }
  load(begin, count, buffer);
  return Eigen::Map<const Matrix>(buffer.data(), params(), count);
}

Eigen::Map<const Matrix> Design::feature_block(Index begin, Index count, Matrix& buffer) const {
  bool in_place = false;
  const void* rows = fetch(begin, count, true, &in_place);
  if (!is_float32()) {
    if (in_place) return Eigen::Map<const Matrix>(static_cast<const double*>(rows), d_, count);
    buffer.resize(d_, count);
    std::copy_n(static_cast<const double*>(rows), d_ * count, buffer.data());
  } else {
    buffer.resize(d_, count);
    const float* src = static_cast<const float*>(rows);
    for (Index e = 0; e < d_ * count; ++e) buffer.data()[e] = static_cast<double>(src[e]);
  }
  return Eigen::Map<const Matrix>(buffer.data(), d_, count);
}

template <class T>
void Design::gather_impl(const T* rows, Index k, double* out, Index stride, const double* scale,
                         const std::int64_t* idx) const {
  for (Index j = 0; j < k; ++j) {
    const T* src = rows + j * d_;
    const double s = scale ? scale[idx[j]] : 1.0;
    double* dst = out + j * stride;
    if (centre_) {
      for (Index c = 0; c < d_; ++c) dst[c] = s * (static_cast<double>(src[c]) - centre_[c]);
    } else {
      for (Index c = 0; c < d_; ++c) dst[c] = s * static_cast<double>(src[c]);
    }
    if (intercept_) dst[d_] = s;
  }
}

void Design::gather(const std::int64_t* idx, Index k, Eigen::Ref<Matrix> out,
                    const double* scale) const {
  const Index stride = out.outerStride();
  if (source_) {
    const void* rows = take(idx, k);
    if (is_float32()) {
      gather_impl(static_cast<const float*>(rows), k, out.data(), stride, scale, idx);
    } else {
      gather_impl(static_cast<const double*>(rows), k, out.data(), stride, scale, idx);
    }
    return;
  }
  for (Index j = 0; j < k; ++j) {
    const Index i = static_cast<Index>(idx[j]);
    double* dst = out.col(j).data();
    if (f64_) {
      gather_impl(f64_ + i * d_, 1, dst, stride, scale, idx + j);
    } else {
      gather_impl(f32_ + i * d_, 1, dst, stride, scale, idx + j);
    }
  }
}

void Design::accumulate(const std::int64_t* idx, Index k, const double* coef,
                        Eigen::Ref<Vector> out) const {
  // Through gather() in pieces: sources then read their rows in one take per piece.
  constexpr Index kPiece = 256;
  Matrix rows(params(), std::min(k, kPiece));
  for (Index j0 = 0; j0 < k; j0 += kPiece) {
    const Index m = std::min(kPiece, k - j0);
    gather(idx + j0, m, rows.leftCols(m), coef);
    out += rows.leftCols(m).rowwise().sum();
  }
}

void Design::multiply(const Vector& theta, Vector& z, int threads) const {
  if (sparse()) return sparse_multiply(*this, theta, z, threads);
  z.resize(n_);
  const Index block = block_rows(params());
  std::vector<Matrix> buffers(static_cast<size_t>(chunk_threads(n_, block, threads)));
  parallel_chunks(n_, block, threads, [&](int t, Index begin, Index count) {
    auto Xt = this->block(begin, count, buffers[static_cast<size_t>(t)]);
    z.segment(begin, count).noalias() = Xt.transpose() * theta;
  });
}

void Design::multiply_transposed(const Vector& c, Vector& g, int threads) const {
  if (sparse()) return sparse_multiply_transposed(*this, c, g, threads);
  const Index block = block_rows(params());
  const bool in_order = sums_in_order();
  const Index slots = sum_slots(n_, block, threads, in_order);
  std::vector<Matrix> buffers(static_cast<size_t>(slots));
  std::vector<Vector> partial(static_cast<size_t>(slots), Vector::Zero(params()));
  parallel_sums(n_, block, threads, in_order, [&](Index slot, Index begin, Index count) {
    auto Xt = this->block(begin, count, buffers[static_cast<size_t>(slot)]);
    partial[static_cast<size_t>(slot)].noalias() += Xt * c.segment(begin, count);
  });
  g = partial[0];
  for (size_t t = 1; t < partial.size(); ++t) g += partial[t];
}

void point_to_user(const Design& X, Eigen::Ref<Vector> v) {
  if (!X.centre()) return;
  const Index d = X.features();
  v[d] -= Eigen::Map<const Vector>(X.centre(), d).dot(v.head(d));
}

void point_to_kernel(const Design& X, Eigen::Ref<Vector> v) {
  if (!X.centre()) return;
  const Index d = X.features();
  v[d] += Eigen::Map<const Vector>(X.centre(), d).dot(v.head(d));
}

void dual_to_user(const Design& X, Eigen::Ref<Vector> g) {
  if (!X.centre()) return;
  const Index d = X.features();
  g.head(d) += g[d] * Eigen::Map<const Vector>(X.centre(), d);
}

void dual_to_kernel(const Design& X, Eigen::Ref<Vector> g) {
  if (!X.centre()) return;
  const Index d = X.features();
  g.head(d) -= g[d] * Eigen::Map<const Vector>(X.centre(), d);
}

double user_norm(const Design& X, const Vector& g) {
  if (!X.centre()) return g.stableNorm();
  Vector u = g;
  dual_to_user(X, u);
  return u.stableNorm();
}

void rows_to_user(const Design& X, Eigen::Ref<RowMatrix> out) {
  if (!X.centre()) return;
  Vector row;
  for (Index i = 0; i < out.rows(); ++i) {
    if (!out.row(i).allFinite()) continue;
    row = out.row(i).transpose();
    point_to_user(X, row);
    out.row(i) = row.transpose();
  }
}

Vector column_means(const Design& X, const Vector& w, int threads) {
  const Index n = X.rows(), d = X.features();
  Design raw = X;
  raw.set_centre(nullptr);
  const bool weighted = w.size() == n && w.sum() > 0;
  Vector g;
  raw.multiply_transposed(weighted ? w : Vector::Ones(n), g, threads);
  const double total = weighted ? w.sum() : static_cast<double>(n);
  return g.head(d) / total;
}

Index Design::first_nonfinite_in_row(Index i) const {
  std::vector<double> row(static_cast<std::size_t>(d_));
  raw_row(i, row.data());
  for (Index k = 0; k < d_; ++k) {
    if (!std::isfinite(row[static_cast<std::size_t>(k)])) return k;
  }
  return -1;
}

}  // namespace rif
