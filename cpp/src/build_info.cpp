#include "rif/build_info.hpp"

#include "rif/blas.hpp"
#include "rif/cuda_backend.hpp"
#include "rif/parallel.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>

#ifdef __linux__
#include <dirent.h>
#endif
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

namespace {

/// Threads of other processes that are running or ready to run now (Linux: the system's
/// runnable count from /proc/loadavg minus this process's own runnable threads, which include
/// OpenMP and BLAS workers still spinning after a previous call); 0 when unknown.
int busy_elsewhere() {
#ifdef __linux__
  std::ifstream loadavg("/proc/loadavg");
  double one, five, fifteen;
  int running = 0;
  char slash;
  int total = 0;
  if (!(loadavg >> one >> five >> fifteen >> running >> slash >> total)) return 0;
  int own = 0;
  if (DIR* dir = opendir("/proc/self/task")) {
    while (const dirent* entry = readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      std::ifstream stat(std::string("/proc/self/task/") + entry->d_name + "/stat");
      std::string line;
      std::getline(stat, line);
      const auto close = line.rfind(')');  // the state follows the command name
      if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'R') ++own;
    }
    closedir(dir);
  }
  return std::max(0, running - std::max(own, 1));
#else
  return 0;
#endif
}

}  // namespace

int default_threads() {
  // Reading the load costs about 0.16 ms (/proc/loadavg and a file per thread of this
  // process), 1% of an attribution at ESC-50's shape (1600 x 512), and the load moves over
  // seconds: an answer is kept for 50 ms. (Two threads may both read it at once; either
  // answer is a fresh one.)
  using clock = std::chrono::steady_clock;
  static std::atomic<clock::rep> stamp{std::numeric_limits<clock::rep>::min()};
  static std::atomic<int> kept{1};
  const clock::rep now = clock::now().time_since_epoch().count();
  const clock::rep keep = std::chrono::duration_cast<clock::duration>(
                              std::chrono::milliseconds(50)).count();
  const clock::rep then = stamp.load(std::memory_order_acquire);
  if (then != std::numeric_limits<clock::rep>::min() && now - then < keep) {
    return kept.load(std::memory_order_relaxed);
  }
  const int cores = available_cores();
  // Cores that other processes keep busy would only make our threads wait for each other
  // (OpenMP and BLAS workers spin at barriers): use the idle ones, at least one.
  const int threads = std::clamp(cores - busy_elsewhere(), 1, cores);
  kept.store(threads, std::memory_order_relaxed);
  stamp.store(now, std::memory_order_release);
  return threads;
}

int resolve_threads(int requested) {
  if (requested < 0) {
    throw std::invalid_argument("num_threads must be >= 1 (or 0 / None for every core), got " +
                                std::to_string(requested));
  }
  const int cores = available_cores();
  return requested == 0 ? default_threads() : std::min(requested, cores);
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
  info.max_threads = available_cores();
  return info;
}

void initialize() { Eigen::setNbThreads(1); }

}  // namespace rif
