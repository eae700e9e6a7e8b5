#pragma once
/// The one project header that includes pybind11: shared helpers of the binding files.

#include <pybind11/gil_safe_call_once.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "rif/attribution.hpp"
#include "rif/types.hpp"

#include <string>

namespace py = pybind11;

namespace rif_py {

using F64Array = py::array_t<double, py::array::c_style>;
using I64Array = py::array_t<std::int64_t, py::array::c_style>;

/// A read-only view of a 1-D float64 array as an Eigen vector (copied: these are O(n) or O(p)).
rif::Vector to_vector(const F64Array& a, const char* name);

/// The design view of X, which must already be a C-contiguous float64 or float32 2-D array
/// (the Python layer converts anything else once). The array must outlive the view.
rif::Design to_design(const py::array& X, bool fit_intercept);

void bind_attribution(py::module_& m);

}  // namespace rif_py
