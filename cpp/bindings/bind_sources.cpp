#include "rif_python.hpp"

#include "rif/file_source.hpp"
#include "rif/interrupt.hpp"
#include "rif/source.hpp"

#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace rif_py {

namespace {

/// Releases a Python object with the GIL held, from whichever thread drops the last reference.
void release_with_gil(py::object& o);

/// A failed read of X on its way through the kernel's threads: the Python exception the reader
/// raised, kept (with the GIL-safe deleter) so that the caller gets it back with its cause.
/// Becomes rif_native SourceReadError (a subclass of OSError).
class source_read_error : public std::runtime_error {
 public:
  source_read_error(const std::string& what, py::object raised)
      : std::runtime_error(what), raised_(new py::object(std::move(raised)), [](py::object* o) {
          release_with_gil(*o);
          delete o;
        }) {}
  const py::object& raised() const { return *raised_; }

 private:
  std::shared_ptr<py::object> raised_;
};

PYBIND11_CONSTINIT py::gil_safe_call_once_and_store<py::object> source_error_type;

/// Turns a Python error raised by a source's reader into a C++ exception that may cross the
/// kernel's threads: Ctrl-C stays an interruption; a SourceReadError (the Python layer's, which
/// names the rows) passes as it is; anything else keeps its type's name and text.
[[noreturn]] void rethrow_read_error(py::error_already_set& e, const char* what) {
  if (e.matches(PyExc_KeyboardInterrupt)) throw rif::interrupted();
  const py::object raised = e.value();
  if (e.matches(source_error_type.get_stored())) {
    throw source_read_error(py::str(raised).cast<std::string>(), raised);
  }
  std::ostringstream msg;
  msg << what << ": " << py::str(e.type().attr("__name__")).cast<std::string>() << ": "
      << py::str(raised).cast<std::string>();
  throw source_read_error(msg.str(), raised);
}

void release_with_gil(py::object& o) {
  py::gil_scoped_acquire gil;
  o = py::object();
}

/// A source whose rows a Python object reads: `chunk_at(begin)` gives (array, first row) of a
/// chunk that holds row `begin`, `take_into(idx, out)` fills the (k, d) array out with rows idx.
class PyRowSource : public rif::RowSource {
 public:
  PyRowSource(py::object reader, rif::Index rows, rif::Index cols, bool f32)
      : RowSource(rows, cols, f32), reader_(std::move(reader)) {}
  ~PyRowSource() override { release_with_gil(reader_); }

  void read(rif::Index begin, rif::Index count, void* out) const override {
    char* dst = static_cast<char*>(out);
    while (count > 0) {
      // The reader hands over a chunk it holds (a C-contiguous array of the kernel's dtype and
      // its first row); the rows are copied from it without the GIL, so that the kernel's
      // threads do not queue for it behind the reader's own Python work.
      py::object chunk;
      const char* data = nullptr;
      rif::Index first = 0, rows = 0;
      {
        py::gil_scoped_acquire gil;
        try {
          const py::tuple got(reader_.attr("chunk_at")(begin));
          const py::array a = py::reinterpret_borrow<py::array>(got[0]);
          first = got[1].cast<rif::Index>();
          rows = static_cast<rif::Index>(a.shape(0));
          if (a.ndim() != 2 || a.shape(1) != cols() || !(a.flags() & py::array::c_style) ||
              a.itemsize() != static_cast<py::ssize_t>(is_float32() ? 4 : 8) ||
              begin < first || begin >= first + rows) {
            throw std::logic_error("chunk_at gave an array that does not hold the row");
          }
          data = static_cast<const char*>(a.data());
          chunk = got[0];
        } catch (py::error_already_set& e) {
          rethrow_read_error(e, "reading rows of X failed");
        }
      }
      const rif::Index here = std::min(count, first + rows - begin);
      std::memcpy(dst, data + (begin - first) * row_bytes(),
                  static_cast<std::size_t>(here) * row_bytes());
      release_with_gil(chunk);
      dst += here * row_bytes();
      begin += here;
      count -= here;
    }
  }

  void take(const std::int64_t* idx, rif::Index k, void* out) const override {
    py::gil_scoped_acquire gil;
    try {
      py::array_t<std::int64_t> rows(k);
      std::copy_n(idx, k, rows.mutable_data());
      reader_.attr("take_into")(rows, view(out, k));
    } catch (py::error_already_set& e) {
      rethrow_read_error(e, "reading rows of X failed");
    }
  }

 private:
  /// `count` rows of the caller's buffer as a writable NumPy array (no copy, no owner: valid
  /// only during the call).
  py::array view(void* out, rif::Index count) const {
    const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(count),
                                         static_cast<py::ssize_t>(cols())};
    if (is_float32()) return py::array_t<float>(shape, static_cast<float*>(out), py::none());
    return py::array_t<double>(shape, static_cast<double*>(out), py::none());
  }
  py::object reader_;
};

/// ShardSource over NumPy arrays, which it keeps alive.
class PyShardSource : public rif::ShardSource {
 public:
  PyShardSource(py::list arrays, std::vector<const void*> data, std::vector<rif::Index> rows,
                rif::Index cols, bool f32)
      : ShardSource(std::move(data), std::move(rows), cols, f32), arrays_(std::move(arrays)) {}
  ~PyShardSource() override { release_with_gil(arrays_); }

 private:
  py::object arrays_;
};

std::shared_ptr<rif::RowSource> make_shards(const py::object& spec, rif::Index n, rif::Index d,
                                            bool f32) {
  py::list arrays(spec.attr("shards"));
  std::vector<const void*> data;
  std::vector<rif::Index> rows;
  for (const py::handle& h : arrays) {
    const py::array a = py::reinterpret_borrow<py::array>(h);
    const bool right_type = f32 ? py::isinstance<py::array_t<float>>(a)
                                : py::isinstance<py::array_t<double>>(a);
    if (!py::isinstance<py::array>(h) || a.ndim() != 2 || a.shape(1) != d || !right_type ||
        !(a.flags() & py::array::c_style) ||
        !(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) {
      throw std::invalid_argument(
          "shards must be aligned C-contiguous 2-D arrays of one dtype and width");
    }
    data.push_back(a.data());
    rows.push_back(static_cast<rif::Index>(a.shape(0)));
  }
  auto source = std::make_shared<PyShardSource>(arrays, std::move(data), std::move(rows), d, f32);
  if (source->rows() != n) throw std::invalid_argument("shards: row counts do not add up to n");
  return source;
}

/// FileSource over the files the Python layer names: (path, byte offset, rows, st_dev, st_ino)
/// each.
std::shared_ptr<rif::RowSource> make_files(const py::object& spec, rif::Index n, rif::Index d,
                                           bool f32) {
  const py::object fsencode = py::module_::import("os").attr("fsencode");  // any file name
  std::vector<rif::FileShard> files;
  for (const py::handle& h : py::list(spec.attr("files"))) {
    const py::tuple t = py::reinterpret_borrow<py::tuple>(h);
    files.push_back({fsencode(t[0]).cast<std::string>(), t[1].cast<std::int64_t>(),
                     t[2].cast<rif::Index>(), t[3].cast<std::uint64_t>(),
                     t[4].cast<std::uint64_t>()});
  }
  const auto chunk_bytes = spec.attr("chunk_bytes").cast<std::size_t>();
  std::shared_ptr<rif::RowSource> source;
  {
    py::gil_scoped_release release;  // opens the files and starts the reader thread
    source = std::make_shared<rif::FileSource>(std::move(files), d, f32, chunk_bytes);
  }
  if (source->rows() != n) throw std::invalid_argument("files: row counts do not add up to n");
  return source;
}

/// CsrSource over SciPy's CSR arrays (int64 row starts, int32 columns, values of the source's
/// dtype), which it keeps alive.
class PyCsrSource : public rif::CsrSource {
 public:
  PyCsrSource(py::tuple arrays, rif::Index n, rif::Index d, bool f32, bool sparse_passes)
      : CsrSource(n, d, checked<std::int64_t>(arrays[0], n + 1, "row starts"),
                  checked<std::int32_t>(arrays[1], -1, "columns"),
                  f32 ? static_cast<const void*>(checked<float>(arrays[2], -1, "values"))
                      : static_cast<const void*>(checked<double>(arrays[2], -1, "values")),
                  f32, sparse_passes),
        arrays_(std::move(arrays)) {
    const auto nnz = py::reinterpret_borrow<py::array>(arrays_[1]).shape(0);
    if (py::reinterpret_borrow<py::array>(arrays_[2]).shape(0) != nnz ||
        row_starts()[0] != 0 || row_starts()[n] != static_cast<std::int64_t>(nnz)) {
      throw std::invalid_argument("csr: row starts, columns and values do not agree");
    }
    for (rif::Index i = 0; i < n; ++i) {
      if (row_starts()[i + 1] < row_starts()[i]) {
        throw std::invalid_argument("csr: row starts must not decrease");
      }
    }
    for (py::ssize_t q = 0; q < nnz; ++q) {
      if (columns()[q] < 0 || columns()[q] >= d) {
        throw std::invalid_argument("csr: a column index lies outside [0, " +
                                    std::to_string(d) + ")");
      }
    }
  }
  ~PyCsrSource() override { release_with_gil(arrays_); }

 private:
  template <class T>
  static const T* checked(const py::handle& h, py::ssize_t size, const char* what) {
    if (!py::isinstance<py::array_t<T>>(h)) {
      throw std::invalid_argument(std::string("csr: ") + what + " of the wrong dtype");
    }
    const py::array a = py::reinterpret_borrow<py::array>(h);
    if (a.ndim() != 1 || !(a.flags() & py::array::c_style) || (size >= 0 && a.shape(0) != size)) {
      throw std::invalid_argument(std::string("csr: ") + what + " must be a contiguous vector");
    }
    return static_cast<const T*>(a.data());
  }
  py::tuple arrays_;
};

}  // namespace

bool is_source(const py::handle& v) {
  return py::hasattr(v, "shards") && py::hasattr(v, "chunk_at") && py::hasattr(v, "shape");
}

rif::Design source_design(const py::object& spec, bool fit_intercept) {
  const py::tuple shape(spec.attr("shape"));
  const auto n = shape[0].cast<rif::Index>(), d = shape[1].cast<rif::Index>();
  const bool f32 = spec.attr("float32").cast<bool>();
  std::shared_ptr<rif::RowSource> source;
  const py::object csr = py::getattr(spec, "csr", py::none());
  if (!csr.is_none()) {
    source = std::make_shared<PyCsrSource>(py::tuple(csr), n, d, f32,
                                           spec.attr("sparse_passes").cast<bool>());
  } else if (!py::getattr(spec, "files", py::none()).is_none()) {
    source = make_files(spec, n, d, f32);
  } else if (spec.attr("shards").is_none()) {
    source = std::make_shared<PyRowSource>(spec, n, d, f32);
  } else {
    source = make_shards(spec, n, d, f32);
  }
  py::object progress = spec.attr("progress");
  if (!progress.is_none()) {
    std::shared_ptr<py::object> fn(new py::object(std::move(progress)), [](py::object* o) {
      release_with_gil(*o);
      delete o;
    });
    source->set_progress([fn](rif::Index count) {
      py::gil_scoped_acquire gil;
      try {
        (*fn)(count);
      } catch (py::error_already_set& e) {
        rethrow_read_error(e, "the progress display failed");
      }
    });
  }
  return rif::Design(std::shared_ptr<const rif::RowSource>(std::move(source)), fit_intercept);
}

void bind_sources(py::module_& m) {
  source_error_type.call_once_and_store_result([&m]() {
    return py::object(py::exception<source_read_error>(m, "SourceReadError", PyExc_OSError));
  });
  m.attr("SourceReadError") = source_error_type.get_stored();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const source_read_error& e) {
      const py::object& type = source_error_type.get_stored();
      const py::object& raised = e.raised();
      if (py::isinstance(raised, type)) {  // the Python layer's own, with its cause
        PyErr_SetObject(type.ptr(), raised.ptr());
        return;
      }
      py::object error = type(e.what());
      error.attr("__cause__") = raised;
      PyErr_SetObject(type.ptr(), error.ptr());
    } catch (const rif::source_read_failure& e) {  // the native file reader's
      PyErr_SetString(source_error_type.get_stored().ptr(), e.what());
    }
  });
}

}  // namespace rif_py
