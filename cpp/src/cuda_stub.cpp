// CPU-only builds: the CUDA backend is absent, and says so.
#include "rif/cuda_backend.hpp"

#include <stdexcept>

namespace rif::cuda {

namespace {

[[noreturn]] void absent() {
  throw std::runtime_error(
      "this build of rif-native has no CUDA backend: rebuild with RIF_CUDA=ON (see README)");
}

}  // namespace

class State {};
void StateDeleter::operator()(State* state) const { delete state; }

bool compiled() { return false; }
int eigen_align_bytes() { return EIGEN_DEFAULT_ALIGN_BYTES; }
bool available() { return false; }
std::string device_name() { return "none: this build has no CUDA backend (RIF_CUDA=OFF)"; }

StatePtr attribute(const Design&, const DeviceMatrix*, Family, const Vector&, const Vector&,
                   const Vector&, double, void (*)(const Design&, const Results&), Results&) {
  absent();
}

void project(State&, const Design&, const Matrix&, Eigen::Ref<RowMatrix>) { absent(); }
void fetch_factor(State&, Matrix&, Matrix&) { absent(); }
void solve(State&, Eigen::Ref<Matrix>) { absent(); }

bool influence_rows(State&, const std::int64_t*, Index, const Vector&, Eigen::Ref<RowMatrix>) {
  return false;
}
bool resident(const State&) { return false; }
void gather(State&, const std::int64_t*, Index, const double*, Eigen::Ref<Matrix>) { absent(); }
void accumulate(State&, const std::int64_t*, Index, const double*, Eigen::Ref<Vector>) {
  absent();
}
void gradients(State&, const Design&, const Matrix&, Matrix&) { absent(); }

class Panel {};
void PanelDeleter::operator()(Panel* panel) const { delete panel; }
PanelPtr woodbury_panel(State&, const std::int64_t*, const Vector&, const std::vector<Index>&,
                        Vector&) {
  return nullptr;
}
void woodbury_solve(State&, const Panel&, Matrix&, const std::vector<Index>&,
                    const std::vector<Index>&, const std::function<void(Vector&)>&) {
  absent();
}

void copy_to_host(const DeviceMatrix&, void*) { absent(); }

}  // namespace rif::cuda
