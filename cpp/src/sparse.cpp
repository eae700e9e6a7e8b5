#include "rif/sparse.hpp"

#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <algorithm>
#include <vector>

namespace rif {

namespace {

/// Rows per chunk of a pass by rows, and columns per chunk of a pass by columns (the units of
/// threading and of Ctrl-C checks).
constexpr Index kSparseRows = 2048;
constexpr Index kSparseColumns = 8;

/// One thread's sums over the raw (uncentred) rows of a pass.
struct Sums {
  Vector s;       ///< sum a_i x_i
  double A = 0;   ///< sum a_i
  Vector gx;      ///< sum r_i x_i
  double R = 0;   ///< sum r_i
};

/// Row i's nonzeros: columns cols[q], values vals[q] for q in [begin, end).
template <class T>
struct Row {
  const std::int32_t* cols;
  const T* vals;
  std::int64_t begin, end;
};

template <class T>
Row<T> row_of(const CsrSource& s, Index i) {
  return Row<T>{s.columns(), static_cast<const T*>(s.values()), s.row_starts()[i],
                s.row_starts()[i + 1]};
}

template <class T>
double dot(const Row<T>& x, const double* v) {
  double sum = 0;
  for (std::int64_t q = x.begin; q < x.end; ++q) sum += static_cast<double>(x.vals[q]) * v[x.cols[q]];
  return sum;
}

/// out += c x.
template <class T>
void axpy(const Row<T>& x, double c, double* out) {
  for (std::int64_t q = x.begin; q < x.end; ++q) out[x.cols[q]] += c * static_cast<double>(x.vals[q]);
}

/// Calls f(T{}) with T the stored value type.
template <class F>
void with_type(const CsrSource& s, F&& f) {
  if (s.is_float32()) {
    f(float{});
  } else {
    f(double{});
  }
}

/// The centre as a vector (zeros when the view is not centred).
Vector centre_of(const Design& X) {
  const Index d = X.features();
  return X.centre() ? Vector(Eigen::Map<const Vector>(X.centre(), d)) : Vector::Zero(d);
}

/// theta's constant part of every z_i: theta_b - c . theta_f (0 without intercept).
double shift_of(const Design& X, const Vector& theta) {
  if (!X.intercept()) return 0;
  const Index d = X.features();
  return theta[d] - centre_of(X).dot(theta.head(d));
}

/// Runs f(begin, count, sums) over chunks of rows, each thread with its own Sums, and reports
/// each chunk's rows to the source (a pass over X); returns the sums added over the threads.
template <class F>
Sums sum_rows(const Design& X, int threads, bool weighted, bool gradient, F&& f) {
  const Index n = X.rows(), d = X.features();
  const int nt = chunk_threads(n, kSparseRows, threads);
  std::vector<Sums> parts(static_cast<size_t>(nt));
  for (Sums& t : parts) {
    if (weighted) t.s.setZero(d);
    if (gradient) t.gx.setZero(d);
  }
  const CsrSource& src = *X.sparse();
  parallel_chunks(n, kSparseRows, threads, [&](int t, Index begin, Index count) {
    src.report(count);
    f(begin, count, parts[static_cast<size_t>(t)]);
  });
  Sums total = std::move(parts[0]);
  for (size_t t = 1; t < parts.size(); ++t) {
    if (weighted) {
      total.s += parts[t].s;
      total.A += parts[t].A;
    }
    if (gradient) {
      total.gx += parts[t].gx;
      total.R += parts[t].R;
    }
  }
  return total;
}

/// X's nonzeros by column: those of column k are the CSR positions pos[start[k] .. start[k+1]),
/// in increasing row order, of rows row[...]. A pass by columns keeps one column of a p x p
/// matrix in cache while it visits the rows that use it, instead of touching nnz_i^2 scattered
/// entries per row.
struct ByColumn {
  std::vector<std::int64_t> start, pos, row;
};

ByColumn by_column(const CsrSource& src) {
  const Index n = src.rows(), d = src.cols();
  const std::int64_t* ptr = src.row_starts();
  const std::int32_t* cols = src.columns();
  const std::int64_t nnz = ptr[n];
  ByColumn t;
  t.start.assign(static_cast<size_t>(d) + 1, 0);
  for (std::int64_t q = 0; q < nnz; ++q) ++t.start[static_cast<size_t>(cols[q]) + 1];
  for (Index k = 0; k < d; ++k) t.start[k + 1] += t.start[k];
  std::vector<std::int64_t> next(t.start.begin(), t.start.end() - 1);
  t.pos.resize(static_cast<size_t>(nnz));
  t.row.resize(static_cast<size_t>(nnz));
  for (Index i = 0; i < n; ++i) {
    for (std::int64_t q = ptr[i]; q < ptr[i + 1]; ++q) {
      const std::int64_t at = next[static_cast<size_t>(cols[q])]++;
      t.pos[at] = q;
      t.row[at] = i;
    }
  }
  return t;
}

/// Calls f(k, i, q) for every nonzero (row i, CSR position q) of every column k, the columns
/// split over the threads (each column on one thread).
template <class F>
void for_each_by_column(const CsrSource& src, const ByColumn& t, int threads, F&& f) {
  parallel_chunks(src.cols(), kSparseColumns, threads, [&](int th, Index k0, Index count) {
    for (Index k = k0; k < k0 + count; ++k) {
      for (std::int64_t e = t.start[k]; e < t.start[k + 1]; ++e) f(th, k, t.row[e], t.pos[e]);
    }
  });
}

/// The lower triangle of S = sum a_i x_i x_i^T over the raw rows, into the top-left d x d of H.
template <class T>
void gram(const CsrSource& src, const Vector& a, Matrix& H, int threads) {
  const ByColumn t = by_column(src);
  const std::int64_t* ptr = src.row_starts();
  const std::int32_t* cols = src.columns();
  const T* vals = static_cast<const T*>(src.values());
  for_each_by_column(src, t, threads, [&](int, Index k, std::int64_t i, std::int64_t q) {
    if (a[i] == 0) return;
    const double c = a[i] * static_cast<double>(vals[q]);
    double* col = H.col(k).data();
    for (std::int64_t l = q; l < ptr[i + 1]; ++l) col[cols[l]] += c * static_cast<double>(vals[l]);
  });
}

/// q_i += x_i^T M_ff x_i for every row with a_i != 0 (M's lower triangle).
template <class T>
void quadratics(const CsrSource& src, const Vector& a, const Matrix& M, Vector& q, int threads) {
  const ByColumn t = by_column(src);
  const std::int64_t* ptr = src.row_starts();
  const std::int32_t* cols = src.columns();
  const T* vals = static_cast<const T*>(src.values());
  const Index n = src.rows();
  const int nt = chunk_threads(src.cols(), kSparseColumns, threads);
  std::vector<Vector> parts(static_cast<size_t>(nt), Vector::Zero(n));
  for_each_by_column(src, t, threads, [&](int th, Index k, std::int64_t i, std::int64_t q0) {
    if (a[i] == 0) return;
    const double* col = M.col(k).data();
    const double xk = static_cast<double>(vals[q0]);
    double off = 0;
    for (std::int64_t l = q0 + 1; l < ptr[i + 1]; ++l) off += col[cols[l]] * static_cast<double>(vals[l]);
    parts[static_cast<size_t>(th)][i] += xk * (xk * col[k] + 2 * off);
  });
  for (const Vector& part : parts) q += part;
}

/// H (lower, p x p) with the raw Gram matrix already in its top-left corner, from the sums over
/// raw rows, expanding the centre (see the header).
void finish_hessian(const Design& X, const Sums& t, double l2, Matrix& H) {
  const Index d = X.features();
  if (X.intercept()) {
    const Vector c = centre_of(X);
    if (X.centre()) {
      for (Index k = 0; k < d; ++k) {
        H.col(k).segment(k, d - k) += -c.tail(d - k) * t.s[k] - t.s.tail(d - k) * c[k] +
                                      (t.A * c[k]) * c.tail(d - k);
      }
    }
    H.row(d).head(d) = (t.s - t.A * c).transpose();
    H(d, d) = t.A;
  }
  H.diagonal().head(d).array() += l2;
}

/// g = X~^T r from the raw sums: g_f = sum r_i x_i - c sum r_i, g_b = sum r_i.
void assemble_gradient(const Design& X, const Sums& t, Vector& g) {
  const Index d = X.features();
  g.resize(X.params());
  g.head(d) = t.gx;
  if (X.intercept()) {
    g.head(d) -= t.R * centre_of(X);
    g[d] = t.R;
  }
}

/// Adds a_i x_i to the weighted sums and r_i x_i to the gradient's (those asked for).
template <class T>
void add_row(const Row<T>& x, double ai, const double* ri, Sums& sums) {
  if (sums.s.size() && ai != 0) {
    axpy(x, ai, sums.s.data());
    sums.A += ai;
  }
  if (ri) {
    axpy(x, *ri, sums.gx.data());
    sums.R += *ri;
  }
}

}  // namespace

void sparse_hessian_at(const Design& X, Family family, const Vector& y, const Vector& w,
                       double l2, const Vector& theta, Vector& z, Vector& r, Vector& a, Matrix& H,
                       int threads, Vector* g, bool with_hessian) {
  const Index n = X.rows();
  const CsrSource& src = *X.sparse();
  z.resize(n);
  r.resize(n);
  a.resize(n);
  const double shift = shift_of(X, theta);
  with_type(src, [&](auto tag) {
    using T = decltype(tag);
    const Sums t = sum_rows(X, threads, with_hessian, g != nullptr,
                            [&](Index begin, Index count, Sums& sums) {
      for (Index i = begin; i < begin + count; ++i) z[i] = dot(row_of<T>(src, i), theta.data()) + shift;
      derivatives_range(family, z, y, w, r, a, begin, count);
      for (Index i = begin; i < begin + count; ++i) {
        add_row(row_of<T>(src, i), with_hessian ? a[i] : 0.0, g ? &r[i] : nullptr, sums);
      }
    });
    if (with_hessian) {
      H.setZero(X.params(), X.params());
      gram<T>(src, a, H, threads);
      finish_hessian(X, t, l2, H);
    }
    if (g) assemble_gradient(X, t, *g);
  });
}

void sparse_hessian(const Design& X, const Vector& a, double l2, Matrix& H, int threads) {
  const CsrSource& src = *X.sparse();
  with_type(src, [&](auto tag) {
    using T = decltype(tag);
    const Sums t = sum_rows(X, threads, true, false, [&](Index begin, Index count, Sums& sums) {
      for (Index i = begin; i < begin + count; ++i) add_row(row_of<T>(src, i), a[i], nullptr, sums);
    });
    H.setZero(X.params(), X.params());
    gram<T>(src, a, H, threads);
    finish_hessian(X, t, l2, H);
  });
}

void sparse_leverage(const Design& X, const Vector& a, const Matrix& L, Vector& h, int threads,
                     const Vector* r, Vector* g) {
  const Index n = X.rows(), d = X.features(), p = X.params();
  const CsrSource& src = *X.sparse();
  // M = H^{-1} (lower triangle), once: 2 p^3 / 3.
  const Matrix M = inverse_from_factor(L, threads);
  // The constant part u = (-c, 1) of every centred row: M u and u^T M u.
  Vector Mu = Vector::Zero(p);
  double uMu = 0;
  if (X.intercept()) {
    Vector u(p);
    u.head(d) = -centre_of(X);
    u[d] = 1;
    Mu.noalias() = M.selfadjointView<Eigen::Lower>() * u;
    uMu = u.dot(Mu);
  }
  Vector q = Vector::Zero(n);
  with_type(src, [&](auto tag) {
    using T = decltype(tag);
    quadratics<T>(src, a, M, q, threads);
    const Sums t = sum_rows(X, threads, false, g != nullptr,
                            [&](Index begin, Index count, Sums& sums) {
      for (Index i = begin; i < begin + count; ++i) {
        const Row<T> x = row_of<T>(src, i);
        add_row(x, 0.0, g ? &(*r)[i] : nullptr, sums);
        if (a[i] != 0) q[i] += 2 * dot(x, Mu.data()) + uMu;
      }
    });
    if (g) assemble_gradient(X, t, *g);
  });
  // A sample without curvature has leverage exactly 0; rounding may not take one below 0.
  h.resize(n);
  for (Index i = 0; i < n; ++i) h[i] = a[i] == 0 ? 0.0 : a[i] * std::max(q[i], 0.0);
}

void sparse_multiply(const Design& X, const Vector& theta, Vector& z, int threads) {
  const CsrSource& src = *X.sparse();
  z.resize(X.rows());
  const double shift = shift_of(X, theta);
  with_type(src, [&](auto tag) {
    using T = decltype(tag);
    parallel_chunks(X.rows(), kSparseRows, threads, [&](int, Index begin, Index count) {
      src.report(count);
      for (Index i = begin; i < begin + count; ++i) z[i] = dot(row_of<T>(src, i), theta.data()) + shift;
    });
  });
}

void sparse_rows_times(const Design& X, Index begin, Index count, const Matrix& U,
                       Eigen::Ref<RowMatrix> out) {
  const CsrSource& src = *X.sparse();
  const Index m = U.cols();
  Vector shift = Vector::Zero(m);
  for (Index c = 0; c < m; ++c) shift[c] = shift_of(X, U.col(c));
  src.report(count);
  with_type(src, [&](auto tag) {
    using T = decltype(tag);
    for (Index j = 0; j < count; ++j) {
      const Row<T> x = row_of<T>(src, begin + j);
      out.row(j) = shift.transpose();
      for (std::int64_t q = x.begin; q < x.end; ++q) {
        out.row(j) += static_cast<double>(x.vals[q]) * U.row(x.cols[q]);
      }
    }
  });
}

void sparse_multiply_transposed(const Design& X, const Vector& c, Vector& g, int threads) {
  const CsrSource& src = *X.sparse();
  with_type(src, [&](auto tag) {
    using T = decltype(tag);
    const Sums t = sum_rows(X, threads, false, true, [&](Index begin, Index count, Sums& sums) {
      for (Index i = begin; i < begin + count; ++i) add_row(row_of<T>(src, i), 0.0, &c[i], sums);
    });
    assemble_gradient(X, t, g);
  });
}

}  // namespace rif
