#include "rif_python.hpp"

#include "rif/build_info.hpp"
#include "rif/cuda_backend.hpp"
#include "rif/interrupt.hpp"
#include "rif/parallel.hpp"

#include <pythread.h>

#include <atomic>
#include <sstream>

namespace rif_py {

namespace {

/// Python's main thread, the only one its signal handlers (Ctrl-C) run in.
std::atomic<unsigned long> main_thread{0};

/// The exception a signal handler raised while a kernel call was running on this thread: kept
/// (as PyErr_Fetch gives it) until the call has unwound, then raised by the translator.
struct PendingError {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* traceback = nullptr;
};
thread_local PendingError pending;

/// The kernel's interrupt hook: on Python's main thread, takes the GIL (the kernel runs with
/// it released; taking it again is reentrant where it was kept) and runs any pending signal
/// handlers. When one raised (KeyboardInterrupt for Ctrl-C), keeps its exception and asks the
/// kernel to stop.
bool python_interrupt_hook() {
  if (PyThread_get_thread_ident() != main_thread.load(std::memory_order_relaxed)) return false;
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() == 0) return false;
  Py_XDECREF(pending.type);
  Py_XDECREF(pending.value);
  Py_XDECREF(pending.traceback);
  PyErr_Fetch(&pending.type, &pending.value, &pending.traceback);
  return true;
}

/// Raises the exception kept by the hook (KeyboardInterrupt when there is none).
void raise_pending() {
  if (pending.type) {
    PyErr_Restore(pending.type, pending.value, pending.traceback);  // steals the references
    pending = PendingError{};
  } else {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
  }
}

}  // namespace

}  // namespace rif_py

PYBIND11_MODULE(_core, m) {
  m.doc() = "rif-native compiled kernel: leverage, IF, RIF and Newton-step attribution for GLMs";
  rif::initialize();
  rif_py::main_thread.store(
      py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>());
  rif::set_interrupt_hook(&rif_py::python_interrupt_hook);

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
    } catch (const rif::interrupted&) {
      rif_py::raise_pending();
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

  m.def("default_threads", &rif::default_threads,
        "Threads a call with num_threads=None uses now: the cores no other process keeps busy.");
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
  rif_py::bind_sources(m);
  rif_py::bind_chunks(m);
  rif_py::bind_softmax(m);
}
