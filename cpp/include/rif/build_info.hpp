#pragma once
/// What this build of the kernel was compiled with, reported at run time.

#include <string>

namespace rif {

struct BuildInfo {
  std::string version, compiler, flags, simd, eigen_version, blas;
  bool openmp = false;
  bool cuda = false;
  int max_threads = 1;
};

BuildInfo build_info();

/// One-time kernel set-up: Eigen's internal threading off (the kernel threads over blocks itself).
void initialize();

}  // namespace rif
