#include "rif/build_info.hpp"

#include "rif/blas.hpp"
#include "rif/cuda_backend.hpp"
#include "rif/parallel.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <thread>

#ifndef RIF_VERSION
#define RIF_VERSION "unknown"
#endif
#ifndef RIF_CXX_FLAGS
#define RIF_CXX_FLAGS ""
#endif
#ifndef RIF_COMPILER
#define RIF_COMPILER "unknown"
#endif

namespace rif {

int available_cores() {
#ifdef RIF_HAVE_OPENMP
  return std::max(1, omp_get_num_procs());
#else
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
#endif
}

int resolve_threads(int requested) {
  if (requested < 0) {
    throw std::invalid_argument("num_threads must be >= 1 (or 0 / None for every core), got " +
                                std::to_string(requested));
  }
  const int cores = available_cores();
  return requested == 0 ? cores : std::min(requested, cores);
}

BuildInfo build_info() {
  BuildInfo info;
  info.version = RIF_VERSION;
  info.compiler = RIF_COMPILER;
  info.flags = RIF_CXX_FLAGS;
  info.simd = Eigen::SimdInstructionSetsInUse();
  info.eigen_version = std::to_string(EIGEN_WORLD_VERSION) + "." +
                       std::to_string(EIGEN_MAJOR_VERSION) + "." +
                       std::to_string(EIGEN_MINOR_VERSION);
#ifdef RIF_HAVE_OPENMP
  info.openmp = true;
#endif
  info.blas = blas_is_openblas() ? "OpenBLAS (scipy-openblas32)" : "Eigen";
  info.cuda = cuda::compiled();
  info.max_threads = resolve_threads(0);
  return info;
}

void initialize() { Eigen::setNbThreads(1); }

}  // namespace rif
