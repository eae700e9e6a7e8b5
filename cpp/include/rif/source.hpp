#pragma once
/// Where the rows of X live when they are not one array in memory: shards (several row-major
/// arrays of one dtype and width, e.g. memory-mapped .npy files, stacked in order into one X) or
/// a reader the host supplies (a chunked file format, a remote store). A pass over X asks the
/// source for one row block at a time, so X never has to fit in memory.

#include "rif/types.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <vector>

namespace rif {

/// A read of X from its files that failed; the message names the rows and the file (the Python
/// layer raises it as SourceReadError).
class source_read_failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class CsrSource;

class RowSource {
 public:
  RowSource(Index rows, Index cols, bool f32) : rows_(rows), cols_(cols), f32_(f32) {}
  virtual ~RowSource() = default;
  RowSource(const RowSource&) = delete;
  RowSource& operator=(const RowSource&) = delete;

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  bool is_float32() const { return f32_; }
  /// Bytes of one row as stored.
  std::size_t row_bytes() const { return static_cast<std::size_t>(cols_) * (f32_ ? 4 : 8); }

  /// Rows [begin, begin + count) where they lie contiguously in memory already (read in place),
  /// or nullptr, and read() copies them.
  virtual const void* direct(Index /*begin*/, Index /*count*/) const { return nullptr; }
  /// Copies rows [begin, begin + count) into out (row-major, as stored). Called from several
  /// threads at once; throws on a failed read.
  virtual void read(Index begin, Index count, void* out) const = 0;
  /// Copies rows idx[0..k) into out (row j = sample idx[j]). The default reads them one by one.
  virtual void take(const std::int64_t* idx, Index k, void* out) const;
  /// A hint that rows [begin, begin + count) will be read soon (default: none).
  virtual void prefetch(Index /*begin*/, Index /*count*/) const {}
  /// The source as compressed sparse rows, or nullptr when it is not one.
  virtual const CsrSource* csr() const { return nullptr; }

  /// Called with the row count of every block a pass reads (progress reporting); may be empty.
  void set_progress(std::function<void(Index)> progress) { progress_ = std::move(progress); }
  void report(Index count) const {
    rows_read_.fetch_add(count, std::memory_order_relaxed);
    if (progress_) progress_(count);
  }
  /// Rows read by passes so far (gathers of single samples excluded): passes = this / rows().
  std::int64_t rows_read() const { return rows_read_.load(std::memory_order_relaxed); }

 private:
  Index rows_, cols_;
  bool f32_;
  std::function<void(Index)> progress_;
  mutable std::atomic<std::int64_t> rows_read_{0};
};

/// Row-major arrays in memory (or memory-mapped files) stacked in order. Blocks that lie
/// inside one shard are read in place; the pages of the next blocks are requested from the
/// operating system ahead of use (madvise WILLNEED), so that reading a mapped file overlaps
/// the computation on the current block.
class ShardSource : public RowSource {
 public:
  /// shards[s] holds rows[s] rows of `cols` values (float32 when f32, else float64).
  ShardSource(std::vector<const void*> shards, std::vector<Index> rows, Index cols, bool f32);
  const void* direct(Index begin, Index count) const override;
  void read(Index begin, Index count, void* out) const override;
  void take(const std::int64_t* idx, Index k, void* out) const override;
  void prefetch(Index begin, Index count) const override;

 private:
  /// The shard holding row i.
  std::size_t shard_of(Index i) const;
  std::vector<const void*> shards_;
  std::vector<Index> start_;  ///< first row of each shard, then the total
};

/// X as compressed sparse rows (SciPy's CSR: row i's nonzeros are values[ptr[i] .. ptr[i+1])
/// in the columns cols[...], sorted and without repeats). read() and take() give dense rows, so
/// every pass works on it; when `sparse_passes` is set, the passes whose cost grows with d^2 per
/// row (the Hessian, the leverages) and the products with X read the nonzeros only
/// (rif/sparse.hpp).
class CsrSource : public RowSource {
 public:
  CsrSource(Index rows, Index cols, const std::int64_t* ptr, const std::int32_t* indices,
            const void* values, bool f32, bool sparse_passes)
      : RowSource(rows, cols, f32), ptr_(ptr), cols_(indices), values_(values),
        sparse_passes_(sparse_passes) {}
  void read(Index begin, Index count, void* out) const override;
  void take(const std::int64_t* idx, Index k, void* out) const override;
  const CsrSource* csr() const override { return this; }

  bool sparse_passes() const { return sparse_passes_; }
  const std::int64_t* row_starts() const { return ptr_; }
  const std::int32_t* columns() const { return cols_; }
  const void* values() const { return values_; }

 private:
  void dense_row(Index i, char* out) const;
  const std::int64_t* ptr_;
  const std::int32_t* cols_;
  const void* values_;
  bool sparse_passes_;
};

}  // namespace rif
