// CPU-only builds: the CUDA backend is absent, and says so.
#include "rif/cuda_backend.hpp"

#include <stdexcept>

namespace rif::cuda {

bool compiled() { return false; }
bool available() { return false; }
std::string device_name() { return "none: this build has no CUDA backend (RIF_CUDA=OFF)"; }

void attribution_core(const Design&, const Vector&, double, Matrix&, Matrix&, Vector&, double*) {
  throw std::runtime_error(
      "this build of rif-native has no CUDA backend: rebuild with RIF_CUDA=ON (see README)");
}

}  // namespace rif::cuda
