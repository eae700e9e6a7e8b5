#include "rif/design.hpp"

#include "rif/parallel.hpp"

#include <cmath>
#include <vector>

namespace rif {

template <class T>
void Design::load_impl(const T* data, Index begin, Index count, double* out, const double* scale,
                       int threads) const {
  const Index p = params();
  const double* c = centre_;
  auto copy_row = [&](Index j) {
    const T* src = data + (begin + j) * d_;
    double* dst = out + j * p;
    const double s = scale ? scale[j] : 1.0;
    if (c) {
      for (Index k = 0; k < d_; ++k) dst[k] = s * (static_cast<double>(src[k]) - c[k]);
    } else if (scale) {
      for (Index k = 0; k < d_; ++k) dst[k] = s * static_cast<double>(src[k]);
    } else {
      for (Index k = 0; k < d_; ++k) dst[k] = static_cast<double>(src[k]);
    }
    if (intercept_) dst[d_] = s;
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

void Design::load(Index begin, Index count, Matrix& buffer, const double* scale,
                  int threads) const {
  buffer.resize(params(), count);
  if (f64_) {
    load_impl(f64_, begin, count, buffer.data(), scale, threads);
  } else {
    load_impl(f32_, begin, count, buffer.data(), scale, threads);
  }
}

Eigen::Map<const Matrix> Design::block(Index begin, Index count, Matrix& buffer) const {
  if (f64_ && !intercept_ && !centre_) {
    return Eigen::Map<const Matrix>(f64_ + begin * d_, d_, count);
  }
  load(begin, count, buffer);
  return Eigen::Map<const Matrix>(buffer.data(), params(), count);
}

Eigen::Map<const Matrix> Design::feature_block(Index begin, Index count, Matrix& buffer) const {
  if (f64_) return Eigen::Map<const Matrix>(f64_ + begin * d_, d_, count);
  buffer.resize(d_, count);
  const float* src = f32_ + begin * d_;
  for (Index e = 0; e < d_ * count; ++e) buffer.data()[e] = static_cast<double>(src[e]);
  return Eigen::Map<const Matrix>(buffer.data(), d_, count);
}

void Design::gather(const std::int64_t* idx, Index k, Eigen::Ref<Matrix> out,
                    const double* scale) const {
  for (Index j = 0; j < k; ++j) {
    const Index i = static_cast<Index>(idx[j]);
    const double s = scale ? scale[i] : 1.0;
    double* dst = out.col(j).data();
    if (centre_) {
      for (Index c = 0; c < d_; ++c) dst[c] = s * (raw(i, c) - centre_[c]);
    } else if (f64_) {
      const double* src = f64_ + i * d_;
      for (Index c = 0; c < d_; ++c) dst[c] = s * src[c];
    } else {
      const float* src = f32_ + i * d_;
      for (Index c = 0; c < d_; ++c) dst[c] = s * static_cast<double>(src[c]);
    }
    if (intercept_) dst[d_] = s;
  }
}

void Design::accumulate(const std::int64_t* idx, Index k, const double* coef,
                        Eigen::Ref<Vector> out) const {
  double* dst = out.data();
  for (Index j = 0; j < k; ++j) {
    const Index i = static_cast<Index>(idx[j]);
    const double s = coef[i];
    if (centre_) {
      for (Index c = 0; c < d_; ++c) dst[c] += s * (raw(i, c) - centre_[c]);
    } else if (f64_) {
      const double* src = f64_ + i * d_;
      for (Index c = 0; c < d_; ++c) dst[c] += s * src[c];
    } else {
      const float* src = f32_ + i * d_;
      for (Index c = 0; c < d_; ++c) dst[c] += s * static_cast<double>(src[c]);
    }
    if (intercept_) dst[d_] += s;
  }
}

void Design::multiply(const Vector& theta, Vector& z, int threads) const {
  z.resize(n_);
  const Index block = block_rows(params());
  std::vector<Matrix> buffers(static_cast<size_t>(chunk_threads(n_, block, threads)));
  parallel_chunks(n_, block, threads, [&](int t, Index begin, Index count) {
    auto Xt = this->block(begin, count, buffers[static_cast<size_t>(t)]);
    z.segment(begin, count).noalias() = Xt.transpose() * theta;
  });
}

void Design::multiply_transposed(const Vector& c, Vector& g, int threads) const {
  const Index block = block_rows(params());
  const int nt = chunk_threads(n_, block, threads);
  std::vector<Matrix> buffers(static_cast<size_t>(nt));
  std::vector<Vector> partial(static_cast<size_t>(nt), Vector::Zero(params()));
  parallel_chunks(n_, block, threads, [&](int t, Index begin, Index count) {
    auto Xt = this->block(begin, count, buffers[static_cast<size_t>(t)]);
    partial[static_cast<size_t>(t)].noalias() += Xt * c.segment(begin, count);
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
  for (Index k = 0; k < d_; ++k) {
    if (!std::isfinite(raw(i, k))) return k;
  }
  return -1;
}

}  // namespace rif
