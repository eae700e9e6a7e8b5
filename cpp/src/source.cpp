#include "rif/source.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define RIF_HAVE_MADVISE 1
#endif

namespace rif {

void RowSource::take(const std::int64_t* idx, Index k, void* out) const {
  char* dst = static_cast<char*>(out);
  for (Index j = 0; j < k; ++j) read(static_cast<Index>(idx[j]), 1, dst + j * row_bytes());
}

namespace {

Index total_rows(const std::vector<Index>& rows) {
  return std::accumulate(rows.begin(), rows.end(), Index{0});
}

}  // namespace

ShardSource::ShardSource(std::vector<const void*> shards, std::vector<Index> rows, Index cols,
                         bool f32)
    : RowSource(total_rows(rows), cols, f32), shards_(std::move(shards)) {
  if (shards_.size() != rows.size()) throw std::invalid_argument("shards: one row count each");
  start_.resize(rows.size() + 1, 0);
  for (std::size_t s = 0; s < rows.size(); ++s) start_[s + 1] = start_[s] + rows[s];
}

std::size_t ShardSource::shard_of(Index i) const {
  // the last shard whose first row is <= i (empty shards are skipped by upper_bound)
  const auto it = std::upper_bound(start_.begin(), start_.end() - 1, i);
  return static_cast<std::size_t>(it - start_.begin()) - 1;
}

const void* ShardSource::direct(Index begin, Index count) const {
  if (count <= 0) return nullptr;
  const std::size_t s = shard_of(begin);
  if (begin + count > start_[s + 1]) return nullptr;
  return static_cast<const char*>(shards_[s]) + (begin - start_[s]) * row_bytes();
}

void ShardSource::read(Index begin, Index count, void* out) const {
  char* dst = static_cast<char*>(out);
  while (count > 0) {
    const std::size_t s = shard_of(begin);
    const Index here = std::min(count, start_[s + 1] - begin);
    std::memcpy(dst, static_cast<const char*>(shards_[s]) + (begin - start_[s]) * row_bytes(),
                static_cast<std::size_t>(here) * row_bytes());
    dst += here * row_bytes();
    begin += here;
    count -= here;
  }
}

void ShardSource::take(const std::int64_t* idx, Index k, void* out) const {
  char* dst = static_cast<char*>(out);
  for (Index j = 0; j < k; ++j) {
    const Index i = static_cast<Index>(idx[j]);
    const std::size_t s = shard_of(i);
    std::memcpy(dst + j * row_bytes(),
                static_cast<const char*>(shards_[s]) + (i - start_[s]) * row_bytes(), row_bytes());
  }
}

void ShardSource::prefetch(Index begin, Index count) const {
#ifdef RIF_HAVE_MADVISE
  static const std::uintptr_t page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  count = std::min(count, rows() - begin);
  while (count > 0) {
    const std::size_t s = shard_of(begin);
    const Index here = std::min(count, start_[s + 1] - begin);
    const auto first = reinterpret_cast<std::uintptr_t>(static_cast<const char*>(shards_[s]) +
                                                        (begin - start_[s]) * row_bytes());
    const std::uintptr_t aligned = first & ~(page - 1);
    const std::size_t length = static_cast<std::size_t>(here) * row_bytes() + (first - aligned);
    // Only a hint: memory that is not a mapping (an array in RAM) just answers ENOMEM.
    (void)madvise(reinterpret_cast<void*>(aligned), length, MADV_WILLNEED);
    begin += here;
    count -= here;
  }
#else
  (void)begin;
  (void)count;
#endif
}

void CsrSource::dense_row(Index i, char* out) const {
  if (is_float32()) {
    float* row = reinterpret_cast<float*>(out);
    std::fill_n(row, cols(), 0.0f);
    const float* v = static_cast<const float*>(values_);
    for (std::int64_t q = ptr_[i]; q < ptr_[i + 1]; ++q) row[cols_[q]] = v[q];
  } else {
    double* row = reinterpret_cast<double*>(out);
    std::fill_n(row, cols(), 0.0);
    const double* v = static_cast<const double*>(values_);
    for (std::int64_t q = ptr_[i]; q < ptr_[i + 1]; ++q) row[cols_[q]] = v[q];
  }
}

void CsrSource::read(Index begin, Index count, void* out) const {
  char* dst = static_cast<char*>(out);
  for (Index j = 0; j < count; ++j) dense_row(begin + j, dst + j * row_bytes());
}

void CsrSource::take(const std::int64_t* idx, Index k, void* out) const {
  char* dst = static_cast<char*>(out);
  for (Index j = 0; j < k; ++j) dense_row(static_cast<Index>(idx[j]), dst + j * row_bytes());
}

}  // namespace rif
