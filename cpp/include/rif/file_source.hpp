#pragma once
/// X read from its files with the page cache bypassed (O_DIRECT), for files larger than memory.
///
/// A memory-mapped file larger than the page cache costs the machine more than reading it: every
/// page is allocated, mapped into the process, faulted in and reclaimed again on each pass
/// (measured here on a 32.8 GB .npy read twice: 53.8 CPU-seconds of system time memory-mapped,
/// 7.1 with this reader). FileSource reads whole chunks (32 MiB) of the files into a
/// few buffers of its own, one reader thread keeping two chunks ahead of the pass, and the
/// kernel's threads copy their rows out of them. Gathers of single rows use ordinary reads.
/// Where the file system refuses O_DIRECT, the same chunks are read through the page cache.

#include "rif/source.hpp"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace rif {

/// One file holding `rows` rows of X, row-major as stored, starting `offset` bytes in.
struct FileShard {
  std::string path;
  std::int64_t offset = 0;
  Index rows = 0;
  /// The file X was opened from (st_dev, st_ino; inode 0: not checked): a file found at the
  /// path that is another one (replaced since) is refused rather than read.
  std::uint64_t device = 0, inode = 0;
};

class FileSource : public RowSource {
 public:
  /// Opens the files (std::runtime_error naming the one that fails); nothing is read yet.
  FileSource(std::vector<FileShard> shards, Index cols, bool f32,
             std::size_t chunk_bytes = std::size_t{32} << 20, int slots = 4);
  ~FileSource() override;

  void read(Index begin, Index count, void* out) const override;
  void take(const std::int64_t* idx, Index k, void* out) const override;
  void prefetch(Index begin, Index count) const override;

 private:
  struct Chunk {
    std::size_t file;
    Index first, rows;    ///< rows [first, first + rows) of X
    std::int64_t offset;  ///< of its first row in the file
  };
  enum class State { empty, loading, ready, failed };
  struct Slot {
    Index chunk = -1;
    State state = State::empty;
    int users = 0;    ///< threads copying rows out of it
    int waiters = 0;  ///< threads waiting for it to load
    char* buffer = nullptr;  ///< aligned, chunk_bytes_ + 2 alignments
    std::size_t skew = 0;    ///< bytes before the chunk's first row in the buffer
    std::string error;
  };

  Index chunk_of(Index row) const;
  Slot& slot_of(Index c) const { return slots_[static_cast<std::size_t>(c) % slots_.size()]; }
  /// Starts loading chunk c unless it is resident or loading; false when its slot is busy
  /// (and `wait` is false). Called with the lock held.
  bool claim(Index c, bool wait, std::unique_lock<std::mutex>& lock) const;
  /// Waits until chunk c is loaded and marks it used; throws on a failed read.
  const Slot& acquire(Index c) const;
  void release(Index c) const;
  /// Whether chunk c is loaded or loading.
  bool resident(Index c) const;
  /// Rows [begin, begin + count) of chunk c straight from the file (buffered), into out.
  void read_rows(Index c, Index begin, Index count, char* out) const;
  static bool idle(const Slot& slot);
  void reader_loop();
  /// Reads the chunk into the slot's buffer: "" or what failed.
  std::string load(const Chunk& chunk, Slot& slot);
  /// Opens shard f's file (buffered, and with O_DIRECT where allowed) and checks it.
  void open_file(std::size_t f);
  void close_files();
  void free_buffers();

  std::vector<FileShard> shards_;
  std::vector<int> direct_fd_, buffered_fd_;
  std::vector<Chunk> chunks_;
  std::vector<Index> firsts_;  ///< chunks_[c].first, then rows()
  std::size_t chunk_bytes_;
  mutable std::vector<Slot> slots_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  mutable std::deque<Index> queue_;  ///< chunks to load, in order
  bool stop_ = false;
  std::thread reader_;
};

}  // namespace rif
