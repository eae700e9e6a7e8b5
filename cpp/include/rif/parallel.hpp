#pragma once
/// Threading over row blocks: one Eigen call per thread, never Eigen's own threads.

#include "rif/interrupt.hpp"
#include "rif/types.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>

#ifdef RIF_HAVE_OPENMP
#include <omp.h>
#endif

namespace rif {

/// The cores this process may use (at least 1).
int available_cores();

/// The default thread count: the cores that no other process keeps busy right now (at least
/// one), so that a call on a shared machine does not fight the other work for cores.
int default_threads();

/// Number of threads to use: `requested` if positive, otherwise default_threads(), and never
/// more than the cores there are (more threads than cores only contend). Throws
/// std::invalid_argument for a negative request.
int resolve_threads(int requested);

/// Index of the calling thread inside a parallel region (0 outside one).
inline int thread_index() {
#ifdef RIF_HAVE_OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Rows per block for a pass over X with p parameters: about 2 MiB of doubles, at least 32 rows.
inline Index block_rows(Index p) {
  const Index target = (Index{1} << 18) / std::max<Index>(p, 1);
  return std::clamp<Index>(target, 32, 4096);
}

/// Rows per block for a memory-bound pass that reads each block twice (a product, then another):
/// about 256 KiB of doubles, so that the block stays in cache between the two.
inline Index cache_block_rows(Index p) {
  return std::clamp<Index>((Index{1} << 15) / std::max<Index>(p, 1), 8, 4096);
}

/// Calls f(thread, begin, count) for consecutive chunks of [0, n) of at most `block` items, on up
/// to `threads` threads. Between chunks it checks for an interruption (check_interrupt). The
/// first exception thrown by f is rethrown after the loop; once one is thrown, the chunks not
/// yet started are skipped.
template <class F>
void parallel_chunks(Index n, Index block, int threads, F&& f) {
  const Index chunks = (n + block - 1) / block;
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
  auto run = [&](Index c) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      check_interrupt();
      const Index begin = c * block;
      f(thread_index(), begin, std::min(block, n - begin));
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  };
#ifdef RIF_HAVE_OPENMP
  const int t = static_cast<int>(std::min<Index>(threads, std::max<Index>(chunks, 1)));
#pragma omp parallel for schedule(dynamic, 1) num_threads(t)
  for (Index c = 0; c < chunks; ++c) run(c);
#else
  (void)threads;
  for (Index c = 0; c < chunks; ++c) run(c);
#endif
  if (error) std::rethrow_exception(error);
}

/// Calls f(j, inner) for every item j in [0, count): with at least `threads` items, in parallel
/// with inner = 1; with fewer, one after the other with inner = threads, so that each item can
/// split its own work (a parallel region around a nested one would leave that on one thread).
template <class F>
void for_each_item(Index count, int threads, F&& f) {
  if (count < threads) {
    for (Index j = 0; j < count; ++j) f(j, threads);
    return;
  }
  parallel_chunks(count, 1, threads, [&](int, Index j, Index) { f(j, 1); });
}

/// The number of fixed ranges parallel_ranges splits [0, n) into (sizes per-range sums).
inline Index range_count(Index n, Index block, int threads) {
  const Index blocks = (n + block - 1) / block;
  return std::max<Index>(1, std::min<Index>(threads, blocks));
}

/// Calls f(range, begin, count) for consecutive blocks of at most `block` items of [0, n), the
/// blocks split into range_count() fixed ranges, each range's blocks in order on one thread:
/// sums kept per range and added in range order then do not depend on the threads' timing
/// (parallel_chunks hands out blocks dynamically). Checks for an interruption between blocks.
template <class F>
void parallel_ranges(Index n, Index block, int threads, F&& f) {
  const Index blocks = (n + block - 1) / block, ranges = range_count(n, block, threads);
  parallel_chunks(ranges, 1, static_cast<int>(ranges), [&](int, Index range, Index) {
    for (Index b = blocks * range / ranges; b < blocks * (range + 1) / ranges; ++b) {
      check_interrupt();
      const Index begin = b * block;
      f(range, begin, std::min(block, n - begin));
    }
  });
}

/// The slots parallel_sums hands out (sizes its per-slot sums and scratch).
inline Index sum_slots(Index n, Index block, int threads, bool in_order);

/// Calls f(slot, begin, count) for the blocks of [0, n), for sums kept per slot and added in
/// slot order afterwards. By default each slot takes a fixed range of blocks (parallel_ranges),
/// so that the sums come out the same on every call with the same thread count. With
/// `in_order` (a source read from disk, whose reader serves blocks in order) the blocks go to
/// the threads as they come free (parallel_chunks, slot = thread): the sums may then round
/// differently from one call to the next.
template <class F>
void parallel_sums(Index n, Index block, int threads, bool in_order, F&& f) {
  if (in_order) {
    parallel_chunks(n, block, threads,
                    [&](int t, Index begin, Index count) { f(Index{t}, begin, count); });
  } else {
    parallel_ranges(n, block, threads, f);
  }
}

/// The number of threads parallel_chunks will actually use (sizes per-thread accumulators).
inline int chunk_threads(Index n, Index block, int threads) {
#ifdef RIF_HAVE_OPENMP
  const Index chunks = (n + block - 1) / block;
  return static_cast<int>(std::max<Index>(1, std::min<Index>(threads, chunks)));
#else
  (void)n;
  (void)block;
  (void)threads;
  return 1;
#endif
}

inline Index sum_slots(Index n, Index block, int threads, bool in_order) {
  return in_order ? chunk_threads(n, block, threads) : range_count(n, block, threads);
}

}  // namespace rif
