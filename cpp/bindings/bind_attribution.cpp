#include "rif_python.hpp"

#include "rif/fit.hpp"
#include "rif/glm.hpp"
#include "rif/retrain.hpp"

#include <cmath>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

namespace rif_py {

namespace {

/// The kernel's attribution object plus the Python object(s) holding X, which it keeps alive:
/// the host array it views and, for X in device memory, the device array's owner.
struct PyAttribution {
  py::object X;
  py::object device_owner;
  std::unique_ptr<rif::Attribution> core;
};

/// (pointer, rows, cols, is_float32) of a C-contiguous device matrix, as the Python layer
/// reads them from __cuda_array_interface__ or DLPack.
rif::cuda::DeviceMatrix device_matrix(const py::tuple& t) {
  if (t.size() != 4) throw std::invalid_argument("device: expected (pointer, rows, cols, f32)");
  rif::cuda::DeviceMatrix m;
  m.data = reinterpret_cast<const void*>(t[0].cast<std::uintptr_t>());
  m.rows = t[1].cast<rif::Index>();
  m.cols = t[2].cast<rif::Index>();
  m.f32 = t[3].cast<bool>();
  if (!m.data && m.rows * m.cols > 0) throw std::invalid_argument("device: null pointer");
  return m;
}

rif::Problem make_problem(const rif::Design& X, const py::object& y, const py::object& weights,
                          const py::object& l2, const py::object& family) {
  rif::Problem problem{X, rif::parse_family(text_arg(family, "family")),
                       to_vector(f64_arg(y, "y"), "y"), rif::Vector(), real_arg(l2, "l2")};
  if (!weights.is_none()) {
    problem.w = to_vector(f64_arg(weights, "sample_weight"), "sample_weight");
    // (an empty w means "all ones" inside the kernel; an empty X is named by the kernel)
    if (X.rows() > 0 && problem.w.size() != X.rows()) {
      throw std::invalid_argument("sample_weight must have one entry per sample (" +
                                  std::to_string(X.rows()) + "), got " +
                                  std::to_string(problem.w.size()));
    }
  }
  return problem;
}

py::array_t<double> copy_vector(const rif::Vector& v) {
  py::array_t<double> out(v.size());
  std::copy(v.data(), v.data() + v.size(), out.mutable_data());
  return out;
}

/// Directions arrive as an (m, p) C-contiguous array: the memory of a column-major p x m matrix.
rif::Matrix directions(const py::object& arg) {
  const F64Array V = f64_arg(arg, "V");
  if (V.ndim() != 2) throw std::invalid_argument("directions must be a 2-D (m, p) array");
  const double* v = V.data();
  for (py::ssize_t e = 0; e < V.size(); ++e) {
    if (!std::isfinite(v[e])) throw std::invalid_argument("V contains NaN or inf");
  }
  return Eigen::Map<const rif::Matrix>(V.data(), V.shape(1), V.shape(0));
}

/// Sets as compressed lists, viewing the two arrays (which the caller keeps alive).
rif::SetList set_list(const I64Array& indices, const I64Array& offsets) {
  if (offsets.ndim() != 1 || offsets.shape(0) < 1 || indices.ndim() != 1) {
    throw std::invalid_argument("sets: indices and offsets must be 1-D, offsets non-empty");
  }
  const std::int64_t* off = offsets.data();
  const auto m = static_cast<rif::Index>(offsets.shape(0) - 1);
  if (off[0] != 0 || off[m] != indices.shape(0)) {
    throw std::invalid_argument("sets: offsets must run from 0 to len(indices)");
  }
  return rif::SetList{indices.data(), off, m};
}

py::array_t<double> row_matrix(rif::Index rows, rif::Index cols) {
  return py::array_t<double>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)});
}

Eigen::Map<rif::RowMatrix> as_map(py::array_t<double>& a) {
  return Eigen::Map<rif::RowMatrix>(a.mutable_data(), a.shape(0), a.shape(1));
}

/// A matrix (either storage order) as a 2-D array, entry (i, j) = M(i, j).
template <class Derived>
py::array_t<double> matrix_array(const Eigen::MatrixBase<Derived>& M) {
  auto out = row_matrix(M.rows(), M.cols());
  as_map(out) = M;
  return out;
}

/// The 2-D array d[key] of a saved state, entry (i, j) = M(i, j).
rif::RowMatrix state_matrix(const py::dict& d, const char* key) {
  const F64Array a = f64_arg(d[key], key);
  if (a.ndim() != 2) {
    throw std::invalid_argument(std::string("state: ") + key + " must be a 2-D array");
  }
  return Eigen::Map<const rif::RowMatrix>(a.data(), a.shape(0), a.shape(1));
}

rif::Matrix square_matrix(const py::dict& d, const char* key) {
  rif::RowMatrix M = state_matrix(d, key);
  if (M.rows() != M.cols()) {
    throw std::invalid_argument(std::string("state: ") + key + " must be a square matrix");
  }
  return M;
}

py::dict state_dict(const rif::AttributionState& s) {
  py::dict d;
  d["theta_kernel"] = copy_vector(s.theta);
  d["centre"] = copy_vector(s.centre);
  d["residuals"] = copy_vector(s.r);
  d["curvature"] = copy_vector(s.a);
  d["leverage"] = copy_vector(s.h);
  d["gradient"] = copy_vector(s.gradient);
  d["hessian_kernel"] = matrix_array(s.H);
  d["factor"] = matrix_array(s.L);
  if (s.kept) {
    d["kept_V"] = matrix_array(s.kept->V);
    d["kept_U"] = matrix_array(s.kept->U);
    d["kept_scale"] = copy_vector(s.kept->scale);
    d["kept_scale_u"] = copy_vector(s.kept->scale_u);
    d["kept_P"] = matrix_array(s.kept->P);
  }
  return d;
}

rif::AttributionState state_from(const py::dict& d) {
  const auto vec = [&](const char* key) { return to_vector(f64_arg(d[key], key), key); };
  rif::AttributionState s{vec("theta_kernel"), vec("centre"),    vec("residuals"),
                          vec("curvature"),    vec("leverage"),  vec("gradient"),
                          square_matrix(d, "hessian_kernel"), square_matrix(d, "factor"),
                          d.contains("theta") ? vec("theta") : rif::Vector(), {}};
  if (d.contains("kept_V")) {  // the kept directions: all five entries or none
    s.kept = rif::Projection{state_matrix(d, "kept_V"), state_matrix(d, "kept_U"),
                             vec("kept_scale"), vec("kept_scale_u"), state_matrix(d, "kept_P")};
  }
  return s;
}

}  // namespace

void bind_attribution(py::module_& m) {
  py::class_<PyAttribution>(m, "Attribution", "Kernel object: factor once, answer many questions.")
      .def(py::init([](const py::object& X, const py::object& y, const py::object& theta,
                       const py::object& l2, const py::object& family,
                       const py::object& sample_weight, const py::object& fit_intercept_arg,
                       const py::object& num_threads_arg, const py::object& use_cuda_arg,
                       const py::object& device, const py::object& device_owner,
                       const py::object& solver_arg, const py::object& precision,
                       const py::object& directions_arg) {
             auto self = std::make_unique<PyAttribution>();
             std::optional<rif::Matrix> kept;
             if (!directions_arg.is_none()) kept = directions(directions_arg);
             const bool mixed = precision_arg(precision);
             self->device_owner = device_owner;
             const bool fit_intercept = flag_arg(fit_intercept_arg, "fit_intercept");
             const int num_threads = threads_arg(num_threads_arg);
             const bool use_cuda = flag_arg(use_cuda_arg, "use_cuda");
             rif::cuda::DeviceMatrix dev;
             const bool on_device = !device.is_none();
             if (on_device) {
               if (!py::isinstance<py::tuple>(device)) {
                 throw py::type_error("device must be a (pointer, rows, cols, f32) tuple");
               }
               dev = device_matrix(device.cast<py::tuple>());
             } else {
               self->X = design_arg(X);  // the array the kernel reads, owned here
             }
             // For device X a shape-only view: the CPU-side queries need attach_host() first.
             const rif::Design design =
                 on_device ? rif::Design(static_cast<const double*>(nullptr), dev.rows, dev.cols,
                                         fit_intercept)
                           : to_design(self->X, fit_intercept);
             rif::Problem problem = make_problem(design, y, sample_weight, l2, family);
             problem.X.set_mixed(mixed);
             rif::Vector t = to_vector(f64_arg(theta, "theta"), "theta");
             const std::string solver = text_arg(solver_arg, "solver");
             if (solver != "auto" && solver != "primal" && solver != "dual") {
               throw std::invalid_argument("solver must be 'auto', 'primal' or 'dual', got '" +
                                           solver + "'");
             }
             const rif::HessianPath path = solver == "dual"     ? rif::HessianPath::dual
                                           : solver == "primal" ? rif::HessianPath::primal
                                                                : rif::HessianPath::automatic;
             // Safe without the GIL: the kernel reads only X's buffer (kept alive by self) and
             // its own copies of y, w and theta.
             py::gil_scoped_release release;
             self->core = std::make_unique<rif::Attribution>(std::move(problem), std::move(t),
                                                             num_threads, use_cuda,
                                                             on_device ? &dev : nullptr, path,
                                                             kept ? &*kept : nullptr);
             return self;
           }),
           py::arg("X"), py::arg("y"), py::arg("theta"), py::arg("l2"), py::arg("family"),
           py::arg("sample_weight"), py::arg("fit_intercept"), py::arg("num_threads"),
           py::arg("use_cuda") = false, py::arg("device") = py::none(),
           py::arg("device_owner") = py::none(), py::arg("solver") = "auto",
           py::arg("precision") = "double", py::arg("directions") = py::none())
      .def_property_readonly("kept_directions",
                             [](const PyAttribution& s) { return s.core->kept_directions(); })
      .def_property_readonly("dual", [](const PyAttribution& s) { return s.core->dual(); })
      .def_property_readonly("mixed", [](const PyAttribution& s) { return s.core->mixed(); })
      .def_static(
          "restore",
          [](const py::object& X, const py::object& y, const py::object& l2,
             const py::object& family, const py::object& sample_weight,
             const py::object& fit_intercept_arg, const py::object& num_threads_arg,
             const py::dict& state, const py::object& precision) {
            auto self = std::make_unique<PyAttribution>();
            const bool mixed = precision_arg(precision);
            self->X = design_arg(X);
            rif::Problem problem =
                make_problem(to_design(self->X, flag_arg(fit_intercept_arg, "fit_intercept")), y,
                             sample_weight, l2, family);
            problem.X.set_mixed(mixed && !problem.X.sparse());  // for later passes over X
            rif::AttributionState st = state_from(state);
            const int num_threads = threads_arg(num_threads_arg);
            py::gil_scoped_release release;
            self->core = std::make_unique<rif::Attribution>(std::move(problem), std::move(st),
                                                            num_threads);
            return self;
          },
          py::arg("X"), py::arg("y"), py::arg("l2"), py::arg("family"), py::arg("sample_weight"),
          py::arg("fit_intercept"), py::arg("num_threads"), py::arg("state"),
          py::arg("precision") = "double",
          "Rebuild from a saved state (state()) without the Hessian pass or the factorisation.")
      .def("state", [](const PyAttribution& s) { return state_dict(s.core->state()); },
           "The computed state (kernel coordinates), for saving.")
      .def_property_readonly("has_host_data",
                             [](const PyAttribution& s) { return s.core->has_host_data(); })
      .def_property_readonly("rows_on_device",
                             [](const PyAttribution& s) { return s.core->rows_on_device(); })
      .def_property_readonly("device_panels",
                             [](const PyAttribution& s) { return s.core->device_panels(); })
      .def("attach_host",
           [](PyAttribution& s, const py::object& X) {
             py::object owned = design_arg(X);
             s.core->attach_host(to_design(owned, s.core->problem().X.intercept()));
             s.X = owned;
           },
           py::arg("X"), "Give a host copy of device X to the queries that run on the CPU.")
      .def_property_readonly("leverage",
                             [](const PyAttribution& s) { return copy_vector(s.core->leverage()); })
      .def_property_readonly("rescale",
                             [](const PyAttribution& s) { return copy_vector(s.core->rescale()); })
      .def_property_readonly(
          "residuals", [](const PyAttribution& s) { return copy_vector(s.core->residuals()); })
      .def_property_readonly(
          "curvature", [](const PyAttribution& s) { return copy_vector(s.core->curvature()); })
      .def_property_readonly("theta",
                             [](const PyAttribution& s) {
                               return copy_vector(s.core->user_theta());
                             })
      .def_property_readonly("gradient_norm",
                             [](const PyAttribution& s) { return s.core->gradient_norm(); })
      .def_property_readonly("timings",
                             [](const PyAttribution& s) {
                               const auto& t = s.core->timings();
                               py::dict d;
                               d["hessian"] = t.hessian;
                               d["cholesky"] = t.cholesky;
                               d["leverage"] = t.leverage;
                               return d;
                             })
      .def_property_readonly("woodbury_limit",
                             [](const PyAttribution& s) { return s.core->woodbury_limit(); })
      .def("hessian",
           [](const PyAttribution& s) { return matrix_array(s.core->hessian()); })
      .def("solve",
           [](const PyAttribution& s, const py::object& V) {
             rif::Matrix U = directions(V);
             {
               py::gil_scoped_release release;
               s.core->solve(U);
             }
             auto out = row_matrix(U.cols(), U.rows());
             Eigen::Map<rif::Matrix>(out.mutable_data(), U.rows(), U.cols()) = U;
             return out;
           },
           py::arg("V"), "H^{-1} V for V given as (m, p); returns (m, p).")
      .def("influence_rows",
           [](const PyAttribution& s, const py::object& indices_arg,
              const py::object& rescaled_arg, const py::object& threads) {
             const I64Array indices = i64_arg(indices_arg, "indices");
             const bool rescaled = flag_arg(rescaled_arg, "rescaled");
             const int num_threads = threads_arg(threads);
             if (indices.ndim() != 1) throw std::invalid_argument("indices must be 1-D");
             const rif::Index k = indices.shape(0);
             auto out = row_matrix(k, s.core->params());
             auto map = as_map(out);
             py::gil_scoped_release release;  // reads X (kept alive) and writes only `out`
             s.core->influence_rows(indices.data(), k, rescaled, map, num_threads);
             return out;
           },
           py::arg("indices"), py::arg("rescaled"), py::arg("num_threads"))
      .def("scores",
           [](const PyAttribution& s, const py::object& V, const py::object& rescaled_arg,
              const py::object& threads) {
             const rif::Matrix D = directions(V);
             const bool rescaled = flag_arg(rescaled_arg, "rescaled");
             const int num_threads = threads_arg(threads);
             auto out = row_matrix(s.core->problem().X.rows(), D.cols());
             auto map = as_map(out);
             py::gil_scoped_release release;  // reads X (kept alive) and writes only `out`
             s.core->scores(D, rescaled, map, num_threads);
             return out;
           },
           py::arg("V"), py::arg("rescaled"), py::arg("num_threads"))
      .def("group_sums",
           [](const PyAttribution& s, const py::object& indices_arg,
              const py::object& offsets_arg, const py::object& rescaled_arg,
              const py::object& threads) {
             const I64Array indices = i64_arg(indices_arg, "indices");
             const I64Array offsets = i64_arg(offsets_arg, "offsets");
             const bool rescaled = flag_arg(rescaled_arg, "rescaled");
             const int num_threads = threads_arg(threads);
             const rif::SetList sets = set_list(indices, offsets);
             auto out = row_matrix(sets.count, s.core->params());
             auto map = as_map(out);
             py::gil_scoped_release release;  // reads X (kept alive) and writes only `out`
             s.core->group_sums(sets, rescaled, map, num_threads);
             return out;
           },
           py::arg("indices"), py::arg("offsets"), py::arg("rescaled"), py::arg("num_threads"))
      .def("newton_step",
           [](const PyAttribution& s, const py::object& indices_arg,
              const py::object& offsets_arg, const py::object& threads) {
             const I64Array indices = i64_arg(indices_arg, "indices");
             const I64Array offsets = i64_arg(offsets_arg, "offsets");
             const int num_threads = threads_arg(threads);
             const rif::SetList sets = set_list(indices, offsets);
             auto out = row_matrix(sets.count, s.core->params());
             auto map = as_map(out);
             std::vector<rif::Index> singular;
             {
               py::gil_scoped_release release;  // reads X (kept alive) and writes only `out`
               s.core->newton_step(sets, map, singular, num_threads);
             }
             return py::make_tuple(out, singular);
           },
           py::arg("indices"), py::arg("offsets"), py::arg("num_threads"))
      .def("retrain",
           [](const PyAttribution& s, const py::object& indices_arg,
              const py::object& offsets_arg, const py::object& tol_arg,
              const py::object& max_iter_arg, const py::object& threads) {
             const I64Array indices = i64_arg(indices_arg, "indices");
             const I64Array offsets = i64_arg(offsets_arg, "offsets");
             const double tol = real_arg(tol_arg, "tol");
             const int max_iter = int_arg(max_iter_arg, "max_iter");
             const int num_threads = threads_arg(threads);
             rif::check_stopping(tol, max_iter);  // before any work
             const rif::SetList sets = set_list(indices, offsets);
             rif::RetrainResult r;
             {
               py::gil_scoped_release release;  // reads X (kept alive) and the sets' arrays
               r = rif::retrain(*s.core, sets, rif::RetrainOptions{tol, max_iter, num_threads});
             }
             py::dict d;
             auto theta = row_matrix(r.theta.rows(), r.theta.cols());
             as_map(theta) = r.theta;
             d["theta"] = theta;
             d["grad_norm"] = copy_vector(r.grad_norm);
             d["tolerance"] = copy_vector(r.tolerance);
             d["n_iter"] = r.iterations;
             d["converged"] = std::vector<bool>(r.converged.begin(), r.converged.end());
             d["refreshed"] = std::vector<bool>(r.refreshed.begin(), r.refreshed.end());
             d["singular"] = std::vector<bool>(r.singular.begin(), r.singular.end());
             return d;
           },
           py::arg("indices"), py::arg("offsets"), py::arg("tol"), py::arg("max_iter"),
           py::arg("num_threads"));

  m.def("fit",
        [](const py::object& X_arg, const py::object& y, const py::object& theta0,
           const py::object& l2, const py::object& family, const py::object& sample_weight,
           const py::object& fit_intercept_arg, const py::object& tol_arg,
           const py::object& max_iter_arg, const py::object& threads,
           const py::object& precision, const std::string& solver) {
          const py::object X = design_arg(X_arg);  // owned here while the kernel reads it
          const bool mixed = precision_arg(precision);
          const bool fit_intercept = flag_arg(fit_intercept_arg, "fit_intercept");
          const double tol = real_arg(tol_arg, "tol");
          const int max_iter = int_arg(max_iter_arg, "max_iter");
          const int num_threads = threads_arg(threads);
          rif::check_stopping(tol, max_iter);  // before any work
          rif::Problem problem =
              make_problem(to_design(X, fit_intercept), y, sample_weight, l2, family);
          problem.X.set_mixed(mixed);
          rif::Vector t = to_vector(f64_arg(theta0, "theta0"), "theta0");
          rif::FitOptions options{tol, max_iter, num_threads, rif::parse_fit_steps(solver)};
          rif::FitResult result;
          {
            py::gil_scoped_release release;  // X stays alive through the argument `X`
            result = rif::fit(problem, std::move(t), options);
          }
          py::dict d;
          d["theta"] = copy_vector(result.theta);
          d["grad_norm"] = result.grad_norm;
          d["loss"] = result.loss;
          d["n_iter"] = result.iterations;
          d["converged"] = result.converged;
          d["stalled"] = result.stalled;
          d["hessians"] = result.hessians;
          d["sampled_hessians"] = result.sampled_hessians;
          d["lbfgs_steps"] = result.quasi_newton_steps;
          return d;
        },
        py::arg("X"), py::arg("y"), py::arg("theta0"), py::arg("l2"), py::arg("family"),
        py::arg("sample_weight"), py::arg("fit_intercept"), py::arg("tol"), py::arg("max_iter"),
        py::arg("num_threads"), py::arg("precision") = "double", py::arg("solver") = "auto");
}

}  // namespace rif_py
