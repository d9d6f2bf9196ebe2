#include "service/store/spool/result_spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "service/base/log.h"

namespace batchfetch {
namespace {

constexpr absl::string_view kSegmentSuffix = ".spool";
constexpr size_t kSegmentDigits = 20;

// The segment number a directory entry names, or 0 for any other file.
uint64_t SegmentNumberOf(absl::string_view name) {
  if (name.size() != kSegmentDigits + kSegmentSuffix.size()) return 0;
  if (name.substr(kSegmentDigits) != kSegmentSuffix) return 0;
  const absl::string_view digits = name.substr(0, kSegmentDigits);
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return 0;
  }
  uint64_t number = 0;
  if (!absl::SimpleAtoi(digits, &number)) return 0;
  return number;
}

absl::Status FsyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "opening spool dir " + dir);
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) return absl::ErrnoToStatus(error, "fsync of spool dir " + dir);
  return absl::OkStatus();
}

}  // namespace

std::string ResultSpool::SegmentPath(const std::string& dir, uint64_t segment) {
  return absl::StrFormat("%s/%020u%s", dir, segment, kSegmentSuffix);
}

absl::StatusOr<std::unique_ptr<ResultSpool>> ResultSpool::Open(
    ResultSpoolOptions options) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("spool dir: must not be empty");
  }
  if (options.clock == nullptr) options.clock = Clock::Real();
  if (!options.datasync)
    options.datasync = [](int fd) { return ::fdatasync(fd); };
  if (::mkdir(options.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, "creating spool dir " + options.dir);
  }
  const std::string lock_path = options.dir + "/LOCK";
  const int lock_fd =
      ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) return absl::ErrnoToStatus(errno, "opening " + lock_path);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(lock_fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "spool dir ", options.dir, " is in use by another spool (", lock_path,
          " is locked)"));
    }
    return absl::ErrnoToStatus(error, "locking " + lock_path);
  }
  // From here the spool owns lock_fd (its destructor closes it).
  std::unique_ptr<ResultSpool> spool(
      new ResultSpool(std::move(options), lock_fd));
  const std::string& dir = spool->options_.dir;

  DIR* listing = ::opendir(dir.c_str());
  if (listing == nullptr) {
    return absl::ErrnoToStatus(errno, "listing spool dir " + dir);
  }
  absl::MutexLock lock(&spool->mu_);
  absl::Status status;
  while (dirent* entry = ::readdir(listing)) {
    const uint64_t number = SegmentNumberOf(entry->d_name);
    if (number == 0) continue;
    struct stat st;
    const std::string path = SegmentPath(dir, number);
    if (::stat(path.c_str(), &st) != 0) {
      status = absl::ErrnoToStatus(errno, "stat of " + path);
      break;
    }
    spool->closed_[number] = static_cast<uint64_t>(st.st_size);
    spool->used_bytes_ += static_cast<uint64_t>(st.st_size);
    if (number >= spool->next_segment_) spool->next_segment_ = number + 1;
  }
  ::closedir(listing);
  if (!status.ok()) return status;
  return spool;
}

ResultSpool::ResultSpool(ResultSpoolOptions options, int lock_fd)
    : options_(std::move(options)),
      lock_fd_(lock_fd),
      oldest_unsynced_at_(options_.clock->MonoNow()) {}

ResultSpool::~ResultSpool() {
  {
    absl::MutexLock lock(&mu_);
    // Best effort: a failure leaves what a crash would.
    RollLocked().IgnoreError();
    if (active_ != nullptr) ::close(active_->fd);
  }
  ::close(lock_fd_);  // releases the flock
}

absl::Status ResultSpool::StartSegmentLocked() {
  const uint64_t number = next_segment_;
  const std::string path = SegmentPath(options_.dir, number);
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, "creating " + path);
  ++next_segment_;
  // The file's directory entry must be durable before any record in it is
  // reported durable.
  if (absl::Status synced = FsyncDirectory(options_.dir); !synced.ok()) {
    ::close(fd);
    ::unlink(path.c_str());
    return synced;
  }
  auto active = std::make_unique<ActiveSegment>();
  active->number = number;
  active->fd = fd;
  active->writer = std::make_unique<SpoolLogWriter>(fd, 0);
  active_ = std::move(active);
  return absl::OkStatus();
}

absl::Status ResultSpool::SyncFailedLocked(int error) {
  sync_error_ = absl::UnavailableError(absl::StrCat(
      "spool fdatasync failed (", absl::ErrnoToStatus(error, "").message(),
      "); the spool takes no more records"));
  return sync_error_;
}

absl::Status ResultSpool::RollLocked() {
  // Never close the file under a sync running outside the lock.
  while (sync_in_progress_) sync_done_.Wait(&mu_);
  if (active_ == nullptr) return absl::OkStatus();
  if (!sync_error_.ok()) return sync_error_;
  if (options_.datasync(active_->fd) != 0) return SyncFailedLocked(errno);
  // Every record is now in a synced, closed segment.
  durable_sequence_ = appended_sequence_;
  // The file's real size: a broken writer (a failed write it could not cut
  // away) leaves torn bytes past its file_length(). They count against
  // max_bytes until the segment is released, which subtracts this size.
  uint64_t bytes = active_->writer->file_length();
  struct stat st;
  if (::fstat(active_->fd, &st) == 0 &&
      static_cast<uint64_t>(st.st_size) > bytes) {
    used_bytes_ += static_cast<uint64_t>(st.st_size) - bytes;
    bytes = static_cast<uint64_t>(st.st_size);
  }
  closed_[active_->number] = bytes;
  ::close(active_->fd);
  active_.reset();
  return absl::OkStatus();
}

absl::Status ResultSpool::SyncLocked(uint64_t sequence) {
  while (durable_sequence_ < sequence) {
    if (!sync_error_.ok()) return sync_error_;
    if (sync_in_progress_) {
      // Another caller's sync may cover `sequence`: wait for it, then look
      // again.
      sync_done_.Wait(&mu_);
      continue;
    }
    if (active_ == nullptr) {
      // Every record is in a closed (synced) segment.
      durable_sequence_ = appended_sequence_;
      break;
    }
    // Lead one sync for everything appended so far.
    const uint64_t target = appended_sequence_;
    const MonoTime started = options_.clock->MonoNow();
    const int fd = active_->fd;
    sync_in_progress_ = true;
    mu_.Unlock();
    const int rc = options_.datasync(fd);
    const int error = errno;
    mu_.Lock();
    sync_in_progress_ = false;
    sync_done_.SignalAll();
    if (rc != 0) return SyncFailedLocked(error);
    if (target > durable_sequence_) durable_sequence_ = target;
    // Records appended during the sync were appended after `started`.
    oldest_unsynced_at_ = started;
  }
  return absl::OkStatus();
}

bool ResultSpool::SyncDueLocked() const {
  const uint64_t pending = appended_sequence_ - durable_sequence_;
  if (pending == 0) return false;
  return pending >= options_.max_unsynced_records ||
         Since(options_.clock->MonoNow(), oldest_unsynced_at_) >=
             options_.max_sync_delay;
}

absl::StatusOr<uint64_t> ResultSpool::Append(const SpoolRecord& record) {
  const std::string payload = EncodeSpoolRecord(record);
  absl::MutexLock lock(&mu_);
  if (!sync_error_.ok()) return sync_error_;
  if (active_ != nullptr &&
      active_->writer->file_length() >= options_.segment_bytes) {
    if (absl::Status rolled = RollLocked(); !rolled.ok()) return rolled;
  }
  const uint64_t file_length =
      active_ == nullptr ? 0 : active_->writer->file_length();
  const uint64_t bytes = SpoolFramedRecordSize(file_length, payload.size());
  if (used_bytes_ + bytes > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "spool full: a record of ", bytes, " bytes would take the spool in ",
        options_.dir, " past --spool_max_bytes=", options_.max_bytes, " (",
        used_bytes_, " bytes used)"));
  }
  if (active_ == nullptr) {
    if (absl::Status started = StartSegmentLocked(); !started.ok()) {
      return started;
    }
  }
  if (absl::Status written = active_->writer->AddRecord(payload);
      !written.ok()) {
    // A writer that could not cut its torn record away must not be written
    // after: close its segment (what it holds is still readable).
    if (active_->writer->broken()) RollLocked().IgnoreError();
    return written;
  }
  used_bytes_ += bytes;
  if (appended_sequence_ == durable_sequence_) {
    oldest_unsynced_at_ = options_.clock->MonoNow();
  }
  const uint64_t sequence = ++appended_sequence_;
  // A sync already running is not waited for: Append stays cheap, and the
  // next due Append (or a waiter) covers what that sync does not.
  if (!sync_in_progress_ && SyncDueLocked()) {
    if (absl::Status synced = SyncLocked(sequence); !synced.ok()) {
      return synced;
    }
  }
  return sequence;
}

absl::Status ResultSpool::WaitDurable(uint64_t sequence) {
  absl::MutexLock lock(&mu_);
  if (sequence > appended_sequence_) {
    // Not appended (yet): nothing can make it durable, so OK would lie.
    return absl::InvalidArgumentError(
        absl::StrCat("spool WaitDurable(", sequence, "): only ",
                     appended_sequence_, " records were appended"));
  }
  return SyncLocked(sequence);
}

absl::Status ResultSpool::Sync() {
  absl::MutexLock lock(&mu_);
  return SyncLocked(appended_sequence_);
}

absl::Status ResultSpool::SyncIfDue() {
  absl::MutexLock lock(&mu_);
  if (!SyncDueLocked()) return absl::OkStatus();
  return SyncLocked(appended_sequence_);
}

ResultSpoolStats ResultSpool::Stats() const {
  absl::MutexLock lock(&mu_);
  ResultSpoolStats stats;
  stats.used_bytes = used_bytes_;
  stats.max_bytes = options_.max_bytes;
  stats.segments = closed_.size() + (active_ != nullptr ? 1 : 0);
  stats.appended_sequence = appended_sequence_;
  stats.durable_sequence = durable_sequence_;
  return stats;
}

absl::StatusOr<std::vector<uint64_t>> ResultSpool::SealForReplay() {
  absl::MutexLock lock(&mu_);
  if (absl::Status rolled = RollLocked(); !rolled.ok()) return rolled;
  std::vector<uint64_t> segments;
  segments.reserve(closed_.size());
  for (const auto& [number, bytes] : closed_) segments.push_back(number);
  return segments;
}

absl::StatusOr<SpoolSegmentReplay> ResultSpool::ReplaySegment(
    uint64_t segment,
    absl::FunctionRef<absl::Status(const SpoolRecord&)> visit) const {
  {
    absl::MutexLock lock(&mu_);
    if (closed_.count(segment) == 0) {
      return absl::NotFoundError(
          absl::StrCat("spool segment ", segment, " is not a closed segment"));
    }
  }
  // A closed segment is never written again, so it is read without the lock.
  const std::string path = SegmentPath(options_.dir, segment);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "opening " + path);
  SpoolLogReader reader = SpoolLogReader::ForFileDescriptor(fd);
  SpoolSegmentReplay replay;
  absl::Status status;
  absl::string_view bytes;
  while (reader.ReadRecord(&bytes)) {
    absl::StatusOr<SpoolRecord> record = DecodeSpoolRecord(bytes);
    if (!record.ok()) {
      ++replay.undecodable_records;
      continue;
    }
    status = visit(*record);
    if (!status.ok()) break;
    ++replay.records;
  }
  ::close(fd);
  if (!status.ok()) return status;
  if (!reader.status().ok()) return reader.status();
  replay.log = reader.stats();
  return replay;
}

absl::Status ResultSpool::ReleaseSegment(uint64_t segment) {
  absl::MutexLock lock(&mu_);
  auto it = closed_.find(segment);
  if (it == closed_.end()) {
    return absl::NotFoundError(
        absl::StrCat("spool segment ", segment, " is not a closed segment"));
  }
  const std::string path = SegmentPath(options_.dir, segment);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, "deleting " + path);
  }
  used_bytes_ -= it->second;
  closed_.erase(it);
  return absl::OkStatus();
}

absl::Status ResultSpool::ReleaseReplayedSegment(
    uint64_t segment, const SpoolSegmentReplay& replay) {
  if (absl::Status released = ReleaseSegment(segment); !released.ok()) {
    return released;
  }
  // A torn tail alone is not damage: it is the end of a log whose writer
  // died mid-append, a record that was never durable.
  if (replay.undecodable_records > 0 || replay.log.corruptions > 0) {
    // What could not be read is gone with the segment: say how much.
    LogEvent(LogLevel::kWarning, "spool_segment_released_with_damage")
        .Add("segment", segment)
        .Add("records_stored", replay.records)
        .Add("undecodable_records", replay.undecodable_records)
        .Add("corruptions", replay.log.corruptions)
        .Add("corrupt_bytes", replay.log.corrupt_bytes)
        .Add("torn_tail_bytes", replay.log.torn_tail_bytes);
  }
  return absl::OkStatus();
}

absl::StatusOr<SpoolSegmentReplay> ResultSpool::ReplayAndRelease(
    absl::FunctionRef<absl::Status(const SpoolRecord&)> store) {
  absl::StatusOr<std::vector<uint64_t>> segments = SealForReplay();
  if (!segments.ok()) return segments.status();
  SpoolSegmentReplay total;
  for (uint64_t segment : *segments) {
    absl::StatusOr<SpoolSegmentReplay> replay = ReplaySegment(segment, store);
    if (!replay.ok()) return replay.status();
    if (absl::Status released = ReleaseReplayedSegment(segment, *replay);
        !released.ok()) {
      return released;
    }
    total.records += replay->records;
    total.undecodable_records += replay->undecodable_records;
    total.log.records += replay->log.records;
    total.log.corrupt_bytes += replay->log.corrupt_bytes;
    total.log.corruptions += replay->log.corruptions;
    total.log.torn_tail_bytes += replay->log.torn_tail_bytes;
  }
  return total;
}

}  // namespace batchfetch
