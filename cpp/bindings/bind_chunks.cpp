// Per-chunk kernels for engines that split X by rows across processes or machines (the Dask
// engine): each call works on one chunk of rows in memory and returns partial sums that the
// caller adds up; the factor of the summed Hessian comes back in for the per-sample pass.
#include "rif_python.hpp"

#include "rif/attribution.hpp"
#include "rif/glm.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"

#include <memory>
#include <optional>
#include <sstream>

namespace rif_py {

namespace {

/// One chunk as the kernel sees it: rows, labels, weights, and the design centred on `centre`
/// (the whole X's weighted column means, so that every chunk shares one parametrisation).
struct Chunk {
  py::object X;  ///< keeps the converted rows alive
  rif::Vector centre;
  std::optional<rif::Problem> held;
  rif::Problem& problem() { return *held; }
};

std::unique_ptr<Chunk> make_chunk(const py::object& X_arg, const py::object& y,
                                  const py::object& w, const py::object& family,
                                  const py::object& fit_intercept, const py::object& centre) {
  auto c = std::make_unique<Chunk>();
  c->X = design_arg(X_arg);
  rif::Design design = to_design(c->X, flag_arg(fit_intercept, "fit_intercept"));
  c->held = rif::Problem{design, rif::parse_family(text_arg(family, "family")),
                         to_vector(f64_arg(y, "y"), "y"), rif::Vector(), 0.0};
  if (!w.is_none()) c->problem().w = to_vector(f64_arg(w, "sample_weight"), "sample_weight");
  const rif::Index n = design.rows();
  if (c->problem().y.size() != n || (c->problem().w.size() && c->problem().w.size() != n)) {
    throw std::invalid_argument("chunk: y and sample_weight need one entry per row of X");
  }
  if (!centre.is_none()) {
    c->centre = to_vector(f64_arg(centre, "centre"), "centre");
    if (c->centre.size() != design.features()) {
      throw std::invalid_argument("chunk: centre needs one entry per column of X");
    }
    c->problem().X.set_centre(c->centre.data());
  }
  return c;
}

rif::Vector parameters(const py::object& theta, rif::Index p) {
  rif::Vector t = to_vector(f64_arg(theta, "theta"), "theta");
  if (t.size() != p) {
    std::ostringstream msg;
    msg << "chunk: theta must have " << p << " entries, got " << t.size();
    throw std::invalid_argument(msg.str());
  }
  return t;
}

py::array_t<double> vector_out(const rif::Vector& v) {
  py::array_t<double> out(v.size());
  std::copy(v.data(), v.data() + v.size(), out.mutable_data());
  return out;
}

py::array_t<double> symmetric_out(const rif::Matrix& lower) {
  const rif::Index p = lower.rows();
  py::array_t<double> out({p, p});
  Eigen::Map<rif::RowMatrix> H(out.mutable_data(), p, p);
  H = lower.selfadjointView<Eigen::Lower>();
  return out;
}

}  // namespace

void bind_chunks(py::module_& m) {
  m.def("chunk_hessian",
        [](const py::object& X, const py::object& y, const py::object& w,
           const py::object& theta, const py::object& family, const py::object& fit_intercept,
           const py::object& centre, const py::object& num_threads) {
          auto c = make_chunk(X, y, w, family, fit_intercept, centre);
          const rif::Vector t = parameters(theta, c->problem().X.params());
          const int threads = threads_arg(num_threads);
          rif::Vector z, r, a, g;
          rif::Matrix H;
          double loss = 0;
          {
            py::gil_scoped_release release;  // the chunk's arrays are owned by c
            const int nt = rif::resolve_threads(threads);
            // one pass over the chunk's rows for z, (r, a), H and g
            rif::hessian_at(c->problem().X, c->problem().family, c->problem().y, c->problem().w,
                            0.0, t, z, r, a, H, nt, &g);
            loss = rif::total_loss(c->problem().family, z, c->problem().y, c->problem().w);
          }
          py::dict out;
          out["H"] = symmetric_out(H);
          out["g"] = vector_out(g);
          out["loss"] = loss;
          return out;
        },
        py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("theta"),
        py::arg("family"), py::arg("fit_intercept"), py::arg("centre"), py::arg("num_threads"),
        "One chunk's partial sums at theta (the centred design's parameters): H = X^T diag(a) X "
        "(no penalty, symmetric), g = X^T r and the loss.");

  m.def("chunk_gradients",
        [](const py::object& X, const py::object& y, const py::object& w,
           const py::object& thetas, const py::object& family, const py::object& fit_intercept,
           const py::object& centre, const py::object& num_threads) {
          auto c = make_chunk(X, y, w, family, fit_intercept, centre);
          const F64Array T = f64_arg(thetas, "thetas");
          const rif::Index p = c->problem().X.params();
          if (T.ndim() != 2 || T.shape(1) != p) {
            throw std::invalid_argument("chunk: thetas must be an (m, p) array");
          }
          const rif::Index m = T.shape(0);
          const int threads = threads_arg(num_threads);
          py::array_t<double> G({m, p});
          py::array_t<double> losses(m);
          {
            py::gil_scoped_release release;
            const int nt = rif::resolve_threads(threads);
            Eigen::Map<const rif::RowMatrix> Th(T.data(), m, p);
            Eigen::Map<rif::RowMatrix> Gm(G.mutable_data(), m, p);
            rif::Vector z, r, a, g;
            for (rif::Index j = 0; j < m; ++j) {
              rif::linear_predictor(c->problem().X, Th.row(j).transpose(), z, nt);
              rif::derivatives(c->problem().family, z, c->problem().y, c->problem().w, r, a);
              losses.mutable_data()[j] =
                  rif::total_loss(c->problem().family, z, c->problem().y, c->problem().w);
              c->problem().X.multiply_transposed(r, g, nt);
              Gm.row(j) = g.transpose();
            }
          }
          py::dict out;
          out["G"] = G;
          out["loss"] = losses;
          return out;
        },
        py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("thetas"),
        py::arg("family"), py::arg("fit_intercept"), py::arg("centre"), py::arg("num_threads"),
        "One chunk's gradients X^T r(X theta_j) (no penalty) and losses for each row theta_j.");

  m.def("chunk_leverage",
        [](const py::object& X, const py::object& y, const py::object& w,
           const py::object& theta, const py::object& family, const py::object& fit_intercept,
           const py::object& centre, const py::object& factor, const py::object& num_threads) {
          auto c = make_chunk(X, y, w, family, fit_intercept, centre);
          const rif::Index p = c->problem().X.params();
          const rif::Vector t = parameters(theta, p);
          const F64Array Lr = f64_arg(factor, "factor");
          if (Lr.ndim() != 2 || Lr.shape(0) != p || Lr.shape(1) != p) {
            throw std::invalid_argument("chunk: factor must be the (p, p) Cholesky factor");
          }
          const rif::Matrix L = Eigen::Map<const rif::RowMatrix>(Lr.data(), p, p);
          const int threads = threads_arg(num_threads);
          rif::Vector z, r, a, h;
          {
            py::gil_scoped_release release;
            const int nt = rif::resolve_threads(threads);
            rif::linear_predictor(c->problem().X, t, z, nt);
            rif::derivatives(c->problem().family, z, c->problem().y, c->problem().w, r, a);
            rif::leverage(c->problem().X, a, L, h, nt);
          }
          py::dict out;
          out["h"] = vector_out(h);
          out["r"] = vector_out(r);
          out["a"] = vector_out(a);
          return out;
        },
        py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("theta"),
        py::arg("family"), py::arg("fit_intercept"), py::arg("centre"), py::arg("factor"),
        py::arg("num_threads"),
        "One chunk's leverages h_i = a_i ||L^{-1} x_i||^2 (L the factor of the whole H), "
        "residuals r and curvatures a at theta.");
}

}  // namespace rif_py
