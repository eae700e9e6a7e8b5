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

using F64Array = py::array_t<double, py::array::c_style | py::array::forcecast>;
using I64Array = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

// Argument converters. The bindings take every argument as a plain Python object and convert
// it here, so that a wrong type is one line that names the argument and the type expected
// (pybind11's own overload error would print every argument, arrays included).

/// A real number (int, float or NumPy scalar; not bool, not None).
double real_arg(const py::handle& v, const char* name);
/// A Python or NumPy int (not bool); values beyond `int` are clamped to its range.
int int_arg(const py::handle& v, const char* name);
/// Threads: an int >= 0 (0 for every core), clamped to the cores there are by the kernel.
int threads_arg(const py::handle& v);
/// True or False (Python or NumPy bool).
bool flag_arg(const py::handle& v, const char* name);
/// A str.
std::string text_arg(const py::handle& v, const char* name);
/// `precision`: "double" (false) or "mixed" (true: Design::set_mixed).
bool precision_arg(const py::handle& v);
/// An array of real numbers as a C-contiguous float64 array (a new one when v is anything
/// else): the caller keeps the returned array alive while the kernel reads it.
F64Array f64_arg(const py::handle& v, const char* name);
/// The same for integer indices (int64).
I64Array i64_arg(const py::handle& v, const char* name);
/// X as a 2-D C-contiguous float64 or float32 array: the array itself when it already is one,
/// otherwise a float64 copy made once; or a source (is_source()) as it is. The caller must keep
/// the returned object (not v) alive as long as a Design views it.
py::object design_arg(const py::handle& v);

/// Whether v describes a source of rows (the Python layer's rif_native.sources objects: shape,
/// float32, shards, chunk_at, take_into, progress) rather than an array.
bool is_source(const py::handle& v);
/// The design view of such a source: its shards read in place, or rows read by its reader.
rif::Design source_design(const py::object& spec, bool fit_intercept);

/// A read-only view of a 1-D float64 array as an Eigen vector (copied: these are O(n) or O(p)).
rif::Vector to_vector(const F64Array& a, const char* name);

/// The design view of X, which must already be a C-contiguous float64 or float32 2-D array
/// or a source (design_arg() makes one). The object must outlive the view.
rif::Design to_design(const py::object& X, bool fit_intercept);

void bind_attribution(py::module_& m);
void bind_sources(py::module_& m);
void bind_chunks(py::module_& m);
void bind_softmax(py::module_& m);

}  // namespace rif_py
