// Multinomial (softmax) regression's passes over X and the dense steps between them: the
// Python layer (rif_native.multinomial) holds the reduced parameters and the inverse Hessian.
#include "rif_python.hpp"

#include "rif/blas.hpp"
#include "rif/linalg.hpp"
#include "rif/parallel.hpp"
#include "rif/softmax.hpp"

#include <memory>
#include <optional>
#include <sstream>

namespace rif_py {

namespace {

/// X's design view, centred on `centre` when one is given (kept alive by the caller).
struct View {
  py::object X;  ///< keeps converted rows alive
  rif::Vector centre;
  std::optional<rif::Design> design;
};

std::unique_ptr<View> make_view(const py::object& X, const py::object& fit_intercept,
                                const py::object& centre) {
  auto v = std::make_unique<View>();
  v->X = design_arg(X);
  v->design.emplace(to_design(v->X, flag_arg(fit_intercept, "fit_intercept")));
  if (!centre.is_none()) {
    v->centre = to_vector(f64_arg(centre, "centre"), "centre");
    if (v->centre.size() != v->design->features()) {
      throw std::invalid_argument("centre needs one entry per column of X");
    }
    v->design->set_centre(v->centre.data());
  }
  return v;
}

/// a as a C-contiguous float64 (rows, cols) array, converted only when it is not one.
F64Array shaped_arg(const py::object& a, const char* name, rif::Index rows, rif::Index cols) {
  F64Array A = f64_arg(a, name);
  if (A.ndim() != 2 || A.shape(0) != rows || A.shape(1) != cols) {
    std::ostringstream msg;
    msg << name << " must be a (" << rows << ", " << cols << ") array";
    throw std::invalid_argument(msg.str());
  }
  return A;
}

rif::Matrix matrix_arg(const py::object& a, const char* name, rif::Index rows, rif::Index cols) {
  const F64Array A = shaped_arg(a, name, rows, cols);
  return Eigen::Map<const rif::RowMatrix>(A.data(), rows, cols);
}

py::array_t<double> row_out(const rif::RowMatrix& M) {
  py::array_t<double> out({M.rows(), M.cols()});
  std::copy(M.data(), M.data() + M.size(), out.mutable_data());
  return out;
}

py::array_t<double> matrix_out(const rif::Matrix& M, bool symmetric_lower) {
  py::array_t<double> out({M.rows(), M.cols()});
  Eigen::Map<rif::RowMatrix> o(out.mutable_data(), M.rows(), M.cols());
  if (symmetric_lower) {
    o = M.selfadjointView<Eigen::Lower>();
  } else {
    o = M;
  }
  return out;
}

}  // namespace

void bind_softmax(py::module_& m) {
  m.def("softmax_pass",
        [](const py::object& X, const py::object& y, const py::object& w, const py::object& phi,
           const py::object& basis, const py::object& l2, const py::object& fit_intercept,
           const py::object& centre, const py::object& num_threads,
           const py::object& with_hessian) {
          auto v = make_view(X, fit_intercept, centre);
          const rif::Design& design = *v->design;
          const rif::Index n = design.rows(), p = design.params();
          const F64Array Qa = f64_arg(basis, "basis");
          if (Qa.ndim() != 2 || Qa.shape(1) + 1 != Qa.shape(0) || Qa.shape(1) < 1) {
            throw std::invalid_argument("basis must be a (K, K - 1) array with K >= 2");
          }
          const rif::Index K = Qa.shape(0), k = Qa.shape(1);
          const rif::Matrix Q = Eigen::Map<const rif::RowMatrix>(Qa.data(), K, k);
          const rif::Matrix Phi = matrix_arg(phi, "phi", p, k);
          const I64Array labels = i64_arg(y, "y");
          if (labels.ndim() != 1 || labels.shape(0) != n) {
            throw std::invalid_argument("y needs one label per row of X");
          }
          for (rif::Index i = 0; i < n; ++i) {
            if (labels.data()[i] < 0 || labels.data()[i] >= K) {
              std::ostringstream msg;
              msg << "y[" << i << "] = " << labels.data()[i] << " is not a class in 0.."
                  << K - 1;
              throw std::invalid_argument(msg.str());
            }
          }
          rif::Vector weights;
          if (!w.is_none()) {
            weights = to_vector(f64_arg(w, "sample_weight"), "sample_weight");
            if (weights.size() != n) {
              throw std::invalid_argument("sample_weight needs one entry per row of X");
            }
          }
          const double penalty = real_arg(l2, "l2");
          const int threads = threads_arg(num_threads);
          const bool hessian = flag_arg(with_hessian, "with_hessian");
          rif::SoftmaxPass out;
          {
            py::gil_scoped_release release;
            rif::softmax_pass(design, labels.data(), weights, Q, penalty, Phi, out,
                              rif::resolve_threads(threads), hessian);
          }
          py::dict result;
          result["P"] = row_out(out.P);
          result["G"] = matrix_out(out.G, false);
          result["loss"] = out.loss;
          result["H"] = hessian ? py::object(matrix_out(out.H, true)) : py::none();
          return result;
        },
        py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("phi"), py::arg("basis"),
        py::arg("l2"), py::arg("fit_intercept"), py::arg("centre"), py::arg("num_threads"),
        py::arg("with_hessian"),
        "One pass of multinomial regression at the reduced parameters phi (p x (K-1)): "
        "probabilities P (n x K), gradient G (p x (K-1)), loss and, with_hessian, the reduced "
        "Hessian H (symmetric), penalty included.");

  m.def("softmax_quadforms",
        [](const py::object& X, const py::object& hinv, const py::object& classes,
           const py::object& fit_intercept, const py::object& centre,
           const py::object& num_threads) {
          auto v = make_view(X, fit_intercept, centre);
          const rif::Design& design = *v->design;
          const rif::Index k = int_arg(classes, "reduced_classes");
          if (k < 1) throw std::invalid_argument("reduced_classes must be >= 1");
          const rif::Index q = k * design.params();
          const F64Array Ha = shaped_arg(hinv, "hinv", q, q);
          // the row-major array in place: column stride 1, row stride q
          const Eigen::Map<const rif::Matrix, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>
              Hinv(Ha.data(), q, q, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(1, q));
          const int threads = threads_arg(num_threads);
          rif::RowMatrix S;
          {
            py::gil_scoped_release release;
            rif::softmax_quadforms(design, Hinv, k, S, rif::resolve_threads(threads));
          }
          return row_out(S);
        },
        py::arg("X"), py::arg("hinv"), py::arg("reduced_classes"), py::arg("fit_intercept"),
        py::arg("centre"), py::arg("num_threads"),
        "x_i^T (H^{-1})_{kl} x_i for every sample and k <= l (row-major pair order).");

  m.def("spd_inverse",
        [](const py::object& H, const py::object& what, const py::object& num_threads) {
          const F64Array Ha = f64_arg(H, "H");
          if (Ha.ndim() != 2 || Ha.shape(0) != Ha.shape(1)) {
            throw std::invalid_argument("H must be a square matrix");
          }
          const rif::Index q = Ha.shape(0);
          rif::Matrix A = Eigen::Map<const rif::RowMatrix>(Ha.data(), q, q);
          const std::string hint = text_arg(what, "what");
          const int threads = threads_arg(num_threads);
          {
            py::gil_scoped_release release;
            const int nt = rif::resolve_threads(threads);
            rif::cholesky_in_place(A, hint, nt);
            rif::potri_lower(A, nt);
          }
          return matrix_out(A, true);
        },
        py::arg("H"), py::arg("what"), py::arg("num_threads"),
        "The inverse of a symmetric positive definite matrix (lower triangle read), through its "
        "Cholesky factor; NotPositiveDefiniteError names the failing pivot and `what`.");
}

}  // namespace rif_py
