#include "rif_python.hpp"

#include <climits>
#include <cmath>
#include <limits>
#include <sstream>

namespace rif_py {

namespace {

std::string type_name(const py::handle& v) {
  return py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>();
}

[[noreturn]] void wrong_type(const char* name, const char* expected, const py::handle& v) {
  throw py::type_error(std::string(name) + " must be " + expected + ", got " + type_name(v));
}

bool is_bool(const py::handle& v) {
  return PyBool_Check(v.ptr()) || py::isinstance(v, py::module_::import("numpy").attr("bool_"));
}

/// v as an ndarray (without converting its dtype), or a TypeError naming `name`.
py::array any_array(const py::handle& v, const char* name, const char* expected) {
  if (v.is_none()) wrong_type(name, expected, v);
  py::array a = py::array::ensure(v);
  if (!a) {
    PyErr_Clear();
    wrong_type(name, expected, v);
  }
  const char kind = a.dtype().kind();
  if (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f') {
    throw py::type_error(std::string(name) + " must hold real numbers, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  }
  return a;
}

}  // namespace

double real_arg(const py::handle& v, const char* name) {
  if (v.is_none() || is_bool(v) || !(PyFloat_Check(v.ptr()) || PyLong_Check(v.ptr()) ||
                                      PyIndex_Check(v.ptr()) || py::hasattr(v, "__float__"))) {
    wrong_type(name, "a real number", v);
  }
  const double x = PyFloat_AsDouble(v.ptr());
  if (x == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    wrong_type(name, "a real number", v);
  }
  return x;
}

int int_arg(const py::handle& v, const char* name) {
  if (v.is_none() || is_bool(v) || !PyIndex_Check(v.ptr())) wrong_type(name, "an int", v);
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(v.ptr()));
  if (!index) {
    PyErr_Clear();
    wrong_type(name, "an int", v);
  }
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow > 0 || x > INT_MAX) return INT_MAX;
  if (overflow < 0 || x < INT_MIN) return INT_MIN;
  return static_cast<int>(x);
}

int threads_arg(const py::handle& v) {
  const int t = int_arg(v, "num_threads");
  if (t < 0) {
    throw std::invalid_argument("num_threads must be >= 1 (or 0 for every core), got " +
                                py::str(v).cast<std::string>());
  }
  return t;
}

bool flag_arg(const py::handle& v, const char* name) {
  if (!is_bool(v)) wrong_type(name, "True or False", v);
  return v.cast<bool>();
}

std::string text_arg(const py::handle& v, const char* name) {
  if (!PyUnicode_Check(v.ptr())) wrong_type(name, "a str", v);
  return v.cast<std::string>();
}

bool precision_arg(const py::handle& v) {
  const std::string precision = text_arg(v, "precision");
  if (precision != "double" && precision != "mixed") {
    throw std::invalid_argument("precision must be 'double' or 'mixed', got '" + precision + "'");
  }
  return precision == "mixed";
}

/// Whether the array's data are aligned for its type (NumPy's ALIGNED flag). Arrays rebuilt
/// from bytes (pickle protocol 5, a Dask worker's network frames) may not be, and the kernel
/// reads doubles and floats through typed pointers.
bool aligned(const py::array& a) {
  return (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0;
}

/// An aligned C-contiguous copy of `a` in `dtype` (numpy.require).
py::array aligned_copy(const py::array& a, const char* dtype) {
  return py::module_::import("numpy").attr("require")(a, dtype, py::make_tuple("C", "A"));
}

F64Array f64_arg(const py::handle& v, const char* name) {
  py::array a = any_array(v, name, "an array of real numbers");
  F64Array out = F64Array::ensure(a);  // the array itself when already C-contiguous float64
  if (!out) wrong_type(name, "an array of real numbers convertible to float64", v);
  if (!aligned(out)) out = F64Array::ensure(aligned_copy(out, "float64"));
  return out;
}

I64Array i64_arg(const py::handle& v, const char* name) {
  py::array a = any_array(v, name, "an array of integer indices");
  const char kind = a.dtype().kind();
  if ((kind != 'i' && kind != 'u') && a.size() > 0) {
    throw py::type_error(std::string(name) + " must hold integer indices, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  }
  I64Array out = I64Array::ensure(a);
  if (!out) wrong_type(name, "an array of integer indices", v);
  return out;
}

py::object design_arg(const py::handle& v) {
  if (is_source(v)) return py::reinterpret_borrow<py::object>(v);
  py::array a = any_array(v, "X", "a 2-D array of real numbers");
  const bool c_contiguous = a.flags() & py::array::c_style;
  const bool native = a.dtype().byteorder() != '>';
  if (c_contiguous && native && !aligned(a) &&
      (py::isinstance<py::array_t<double>>(a) || py::isinstance<py::array_t<float>>(a))) {
    return aligned_copy(a, py::isinstance<py::array_t<float>>(a) ? "float32" : "float64");
  }
  if (c_contiguous && native &&
      (py::isinstance<py::array_t<double>>(a) || py::isinstance<py::array_t<float>>(a))) {
    return a;
  }
  F64Array out = F64Array::ensure(a);
  if (!out) wrong_type("X", "a 2-D array of real numbers convertible to float64", v);
  return out;
}

rif::Vector to_vector(const F64Array& a, const char* name) {
  if (a.ndim() != 1) {
    std::ostringstream msg;
    msg << name << " must be 1-D, got " << a.ndim() << " dimensions";
    throw std::invalid_argument(msg.str());
  }
  return Eigen::Map<const rif::Vector>(a.data(), a.shape(0));
}

rif::Design to_design(const py::object& obj, bool fit_intercept) {
  if (is_source(obj)) return source_design(obj, fit_intercept);
  const py::array X = py::reinterpret_borrow<py::array>(obj);
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
