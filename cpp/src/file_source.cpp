#include "rif/file_source.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rif {

namespace {

constexpr std::size_t kAlign = 4096;  // O_DIRECT: offsets, lengths and buffers in these units

std::size_t round_up(std::size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

std::string errno_text(int err) { return std::generic_category().message(err); }

Index total_rows(const std::vector<FileShard>& shards) {
  Index total = 0;
  for (const FileShard& s : shards) total += s.rows;
  return total;
}

/// Reads `length` bytes at `offset` into `out`; the bytes got (short only at the end of the
/// file), or -errno.
std::int64_t read_fully(int fd, char* out, std::size_t length, std::int64_t offset) {
  std::size_t got = 0;
  while (got < length) {
    const ssize_t r = ::pread(fd, out + got, length - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return static_cast<std::int64_t>(got);
}

}  // namespace

FileSource::FileSource(std::vector<FileShard> shards, Index cols, bool f32,
                       std::size_t chunk_bytes, int slots)
    : RowSource(total_rows(shards), cols, f32), shards_(std::move(shards)) {
  if (cols <= 0) throw std::invalid_argument("a file source needs at least one column");
  const Index per = std::max<Index>(1, static_cast<Index>(chunk_bytes / row_bytes()));
  chunk_bytes_ = static_cast<std::size_t>(per) * row_bytes();
  try {
    Index first = 0;
    for (std::size_t f = 0; f < shards_.size(); ++f) {
      open_file(f);
      const FileShard& s = shards_[f];
      for (Index r = 0; r < s.rows; r += per) {
        const Index rows = std::min(per, s.rows - r);
        const std::int64_t at = s.offset + static_cast<std::int64_t>(r) *
                                               static_cast<std::int64_t>(row_bytes());
        chunks_.push_back({f, first, rows, at});
        firsts_.push_back(first);
        first += rows;
      }
    }
    firsts_.push_back(first);
    slots_.resize(static_cast<std::size_t>(std::max(3, slots)));
    for (Slot& slot : slots_) {
      slot.buffer =
          static_cast<char*>(std::aligned_alloc(kAlign, round_up(chunk_bytes_) + 2 * kAlign));
      if (!slot.buffer) throw std::bad_alloc();
    }
    reader_ = std::thread([this] { reader_loop(); });
  } catch (...) {
    free_buffers();
    close_files();
    throw;
  }
}

void FileSource::open_file(std::size_t f) {
  const FileShard& s = shards_[f];
  const int buffered = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (buffered < 0) {
    throw source_read_failure("opening " + s.path + " failed: " + errno_text(errno));
  }
  buffered_fd_.push_back(buffered);
  struct stat st {};
  if (::fstat(buffered, &st) != 0) {
    throw source_read_failure("reading " + s.path + " failed: " + errno_text(errno));
  }
  if (s.inode != 0 && (static_cast<std::uint64_t>(st.st_dev) != s.device ||
                       static_cast<std::uint64_t>(st.st_ino) != s.inode)) {
    throw source_read_failure("the file at " + s.path + " is no longer the one X was opened "
                              "from (replaced since?): open X again");
  }
  const std::int64_t end =
      s.offset + static_cast<std::int64_t>(s.rows) * static_cast<std::int64_t>(row_bytes());
  if (static_cast<std::int64_t>(st.st_size) < end) {
    std::ostringstream msg;
    msg << "reading rows of X from " << s.path << " failed: the file ends at byte "
        << st.st_size << ", before its rows end (byte " << end << ")";
    throw source_read_failure(msg.str());
  }
  int direct = -1;
#ifdef O_DIRECT
  direct = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
#endif
  direct_fd_.push_back(direct);
}

void FileSource::close_files() {
  for (int fd : buffered_fd_) ::close(fd);
  for (int fd : direct_fd_) {
    if (fd >= 0) ::close(fd);
  }
  buffered_fd_.clear();
  direct_fd_.clear();
}

void FileSource::free_buffers() {
  for (Slot& slot : slots_) {
    std::free(slot.buffer);
    slot.buffer = nullptr;
  }
}

FileSource::~FileSource() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (reader_.joinable()) reader_.join();
  free_buffers();
  close_files();
}

Index FileSource::chunk_of(Index row) const {
  const auto it = std::upper_bound(firsts_.begin(), firsts_.end() - 1, row);
  return static_cast<Index>(it - firsts_.begin()) - 1;
}

bool FileSource::idle(const Slot& slot) {
  return slot.state != State::loading && slot.users == 0 && slot.waiters == 0;
}

bool FileSource::claim(Index c, bool wait, std::unique_lock<std::mutex>& lock) const {
  for (;;) {
    Slot& slot = slot_of(c);
    if (slot.chunk == c && slot.state != State::empty) return true;
    // A read ahead takes only a slot that is empty or holds a chunk nobody uses or awaits that
    // is behind c or a ring's length ahead of it (an earlier pass's): a chunk read ahead but
    // not yet read stays. A read that must have the chunk takes the slot once nobody uses or
    // awaits it, waiting if it has to.
    const bool stale = slot.chunk < c || slot.chunk >= c + static_cast<Index>(slots_.size());
    if (idle(slot) && (wait || stale || slot.state == State::empty)) {
      slot.chunk = c;
      slot.state = State::loading;
      slot.error.clear();
      queue_.push_back(c);
      changed_.notify_all();
      return true;
    }
    if (!wait) return false;
    changed_.wait(lock);
  }
}

const FileSource::Slot& FileSource::acquire(Index c) const {
  std::unique_lock<std::mutex> lock(mutex_);
  claim(c, true, lock);
  Slot& slot = slot_of(c);
  ++slot.waiters;  // pinned: nobody evicts it before this thread has had its rows
  while (slot.state == State::loading) changed_.wait(lock);
  --slot.waiters;
  if (slot.state == State::failed) {
    const std::string error = slot.error;
    if (slot.waiters == 0) {  // the last to see the failure: a later read tries again
      slot.chunk = -1;
      slot.state = State::empty;
    }
    changed_.notify_all();
    throw source_read_failure(error);
  }
  // keep the next chunks coming while this one is copied out (claims may allocate: before
  // this slot is marked used)
  for (Index next = c + 1; next < c + static_cast<Index>(slots_.size()) - 1; ++next) {
    if (next >= static_cast<Index>(chunks_.size()) || !claim(next, false, lock)) break;
  }
  ++slot.users;
  return slot;
}

bool FileSource::resident(Index c) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Slot& slot = slot_of(c);
  return slot.chunk == c && slot.state != State::empty;
}

void FileSource::release(Index c) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --slot_of(c).users;
  }
  changed_.notify_all();
}

void FileSource::read(Index begin, Index count, void* out) const {
  char* dst = static_cast<char*>(out);
  while (count > 0) {
    const Index c = chunk_of(begin);
    const Chunk& chunk = chunks_[static_cast<std::size_t>(c)];
    const Index here = std::min(count, chunk.first + chunk.rows - begin);
    if (static_cast<std::size_t>(here) * row_bytes() * 8 < chunk_bytes_ && !resident(c)) {
      read_rows(c, begin, here, dst);  // a few rows (a single sample): not a whole chunk
      dst += here * row_bytes();
      begin += here;
      count -= here;
      continue;
    }
    const Slot& slot = acquire(c);
    std::memcpy(dst, slot.buffer + slot.skew + (begin - chunk.first) * row_bytes(),
                static_cast<std::size_t>(here) * row_bytes());
    release(c);
    dst += here * row_bytes();
    begin += here;
    count -= here;
  }
}

void FileSource::read_rows(Index c, Index begin, Index count, char* out) const {
  const Chunk& chunk = chunks_[static_cast<std::size_t>(c)];
  const std::int64_t at =
      chunk.offset + static_cast<std::int64_t>(begin - chunk.first) *
                         static_cast<std::int64_t>(row_bytes());
  const std::size_t want = static_cast<std::size_t>(count) * row_bytes();
  const std::int64_t got = read_fully(buffered_fd_[chunk.file], out, want, at);
  if (got != static_cast<std::int64_t>(want)) {
    std::ostringstream msg;
    msg << "reading rows " << begin << ":" << begin + count << " of X from "
        << shards_[chunk.file].path << " failed: "
        << (got < 0 ? errno_text(static_cast<int>(-got)) : "the file ends before them");
    throw source_read_failure(msg.str());
  }
}

void FileSource::take(const std::int64_t* idx, Index k, void* out) const {
  char* dst = static_cast<char*>(out);
  for (Index j = 0; j < k; ++j) {
    const Index i = static_cast<Index>(idx[j]);
    read_rows(chunk_of(i), i, 1, dst + j * row_bytes());
  }
}

void FileSource::prefetch(Index begin, Index count) const {
  if (begin >= rows() || count <= 0) return;
  std::unique_lock<std::mutex> lock(mutex_);
  const Index first = chunk_of(begin);  // two chunks at most: never around the ring
  const Index last = std::min(first + 1, chunk_of(std::min(rows() - 1, begin + count - 1)));
  for (Index c = first; c <= last; ++c) {
    if (!claim(c, false, lock)) break;
  }
}

std::string FileSource::load(const Chunk& chunk, Slot& slot) {
  const std::size_t want = static_cast<std::size_t>(chunk.rows) * row_bytes();
  const int direct = direct_fd_[chunk.file];
  std::int64_t got = -EINVAL;
  if (direct >= 0) {
    const std::int64_t start = chunk.offset / static_cast<std::int64_t>(kAlign) *
                               static_cast<std::int64_t>(kAlign);
    slot.skew = static_cast<std::size_t>(chunk.offset - start);
    got = read_fully(direct, slot.buffer, round_up(slot.skew + want), start);
    if (got >= 0) got = std::max<std::int64_t>(0, got - static_cast<std::int64_t>(slot.skew));
  }
  if (got == -EINVAL) {  // no O_DIRECT here (or not with these alignments): the page cache
    slot.skew = 0;
    got = read_fully(buffered_fd_[chunk.file], slot.buffer, want, chunk.offset);
  }
  if (got >= static_cast<std::int64_t>(want)) return std::string();
  std::ostringstream msg;
  msg << "reading rows " << chunk.first << ":" << chunk.first + chunk.rows << " of X from "
      << shards_[chunk.file].path << " failed: "
      << (got < 0 ? errno_text(static_cast<int>(-got)) : "the file ends before them");
  return msg.str();
}

void FileSource::reader_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const Index c = queue_.front();
    queue_.pop_front();
    Slot& slot = slot_of(c);
    if (slot.chunk != c || slot.state != State::loading) continue;
    lock.unlock();  // a loading slot is neither evicted nor read until it is marked
    std::string error;
    try {
      error = load(chunks_[static_cast<std::size_t>(c)], slot);
    } catch (const std::exception& e) {
      error = std::string("reading X failed: ") + e.what();
    }
    lock.lock();
    slot.state = error.empty() ? State::ready : State::failed;
    slot.error = error;
    changed_.notify_all();
  }
}

}  // namespace rif
