#include "rif_python.hpp"

#include "rif/build_info.hpp"
#include "rif/cuda_backend.hpp"

#include <sstream>

namespace rif_py {

rif::Vector to_vector(const F64Array& a, const char* name) {
  if (a.ndim() != 1) {
    std::ostringstream msg;
    msg << name << " must be 1-D, got " << a.ndim() << " dimensions";
    throw std::invalid_argument(msg.str());
  }
  return Eigen::Map<const rif::Vector>(a.data(), a.shape(0));
}

rif::Design to_design(const py::array& X, bool fit_intercept) {
  if (X.ndim() != 2) {
    std::ostringstream msg;
    msg << "X must be 2-D (n samples x d features), got " << X.ndim() << " dimensions";
    throw std::invalid_argument(msg.str());
  }
  if (!(X.flags() & py::array::c_style)) {
    throw py::type_error("X must be C-contiguous here (the Python layer converts it)");
  }
  const auto n = static_cast<rif::Index>(X.shape(0)), d = static_cast<rif::Index>(X.shape(1));
  if (py::isinstance<py::array_t<double>>(X)) {
    return rif::Design(static_cast<const double*>(X.data()), n, d, fit_intercept);
  }
  if (py::isinstance<py::array_t<float>>(X)) {
    return rif::Design(static_cast<const float*>(X.data()), n, d, fit_intercept);
  }
  throw py::type_error("X must be float64 or float32 here (the Python layer converts it)");
}

}  // namespace rif_py

PYBIND11_MODULE(_core, m) {
  m.doc() = "rif-native compiled kernel: leverage, IF, RIF and Newton-step attribution for GLMs";
  rif::initialize();

  // NotPositiveDefiniteError subclasses numpy.linalg.LinAlgError and carries the failing
  // column and pivot as attributes.
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> npd_storage;
  npd_storage.call_once_and_store_result([&m]() {
    py::object base = py::module_::import("numpy.linalg").attr("LinAlgError");
    return py::object(py::exception<rif::not_positive_definite>(m, "NotPositiveDefiniteError",
                                                                base));
  });
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const rif::not_positive_definite& e) {
      const py::object& type = npd_storage.get_stored();
      py::object exc = type(e.what());
      exc.attr("column") = e.column();
      exc.attr("pivot") = e.pivot();
      py::set_error(type, exc);
    }
  });

  m.def("build_info", [] {
    const rif::BuildInfo info = rif::build_info();
    py::dict d;
    d["version"] = info.version;
    d["compiler"] = info.compiler;
    d["flags"] = info.flags;
    d["openmp"] = info.openmp;
    d["simd"] = info.simd;
    d["eigen_version"] = info.eigen_version;
    d["blas"] = info.blas;
    d["cuda"] = info.cuda;
    d["max_threads"] = info.max_threads;
    return d;
  }, "What this build was compiled with.");

  m.def("cuda_available", &rif::cuda::available,
        "Whether this build has the CUDA backend and a usable CUDA device is present.");
  m.def("cuda_device", &rif::cuda::device_name, "Name of CUDA device 0, or why there is none.");
  m.def("cuda_layout_matches",
        [] { return rif::cuda::eigen_align_bytes() == EIGEN_DEFAULT_ALIGN_BYTES; },
        "Whether the CUDA backend and the C++ core agree on Eigen's alignment (always true "
        "without CUDA).");
  m.def("copy_device_to_host",
        [](std::uintptr_t ptr, rif::Index rows, rif::Index cols, bool f32) -> py::array {
          rif::cuda::DeviceMatrix X{reinterpret_cast<const void*>(ptr), rows, cols, f32};
          py::array out = f32 ? py::array(py::array_t<float>({rows, cols}))
                              : py::array(py::array_t<double>({rows, cols}));
          void* dst = out.mutable_data();
          py::gil_scoped_release release;
          rif::cuda::copy_to_host(X, dst);
          return out;
        },
        py::arg("ptr"), py::arg("rows"), py::arg("cols"), py::arg("f32"),
        "Copy a C-contiguous device matrix into a new NumPy array (CUDA builds).");

  rif_py::bind_attribution(m);
}
