// Files (contract: files.h).
//
// Note [Atomic writes]
// ~~~~~~~~~~~~~~~~~~~~
// A file is written under a hidden temporary name in its own folder
// (".<name>.tmp-<pid>-<n>": unique per process and call, on the same file
// system so the rename cannot become a copy), fsynced so its bytes are on
// disk, renamed over the final name (atomic on POSIX file systems: readers
// see the old file or the new one), and then the folder is fsynced so the
// rename itself survives a power loss. Every failure removes the temporary
// and leaves the final name untouched; the message carries errno's text,
// which is what tells a user that the disk is full rather than that the
// folder is missing. HDF5 files take the same road: they are built in memory
// and written here as one block (Note [HDF5 files in memory] in
// core/io/hdf5_io.cpp), so HDF5 never meets a full disk.
//
// Note [Injected write failures]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// DSEE_TEST_FAIL_WRITE (base/env_vars.h) makes the writes to one file fail
// the way a full, read-only or broken disk fails them: half of the first
// write lands, then the call reports the chosen errno. A small tmpfs
// makes the real failure, but which of a run's many files meets the full
// disk depends on every byte written before it; the hook aims at one write
// site exactly, and what follows the failed call is the same code either way.
#include "base/files.h"

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <system_error>
#include <utility>

#include "base/env_vars.h"
#include "base/error.h"

namespace dsee {
namespace fs = std::filesystem;
namespace {

std::string failure_text(const char* step, const fs::path& file, int error) {
  return fmt::format("{} '{}': {}{}", step, file.string(), errno_text(error), errno_advice(error));
}

// The errno DSEE_TEST_FAIL_WRITE injects into writes to `target`, or 0
// (Note [Injected write failures]).
int injected_write_error(const fs::path& target) {
  const char* value = std::getenv(env_vars::test_fail_write);
  if (value == nullptr || *value == '\0') return 0;
  const std::string_view text(value);
  const auto colon = text.find(':');
  const std::string_view name = text.substr(0, colon);
  const std::string path = target.string();
  if (!(path == name || (path.ends_with(name) && path[path.size() - name.size() - 1] == '/'))) return 0;
  if (colon == std::string_view::npos) return ENOSPC;
  constexpr std::array<std::pair<std::string_view, int>, 4> known = {
      {{"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS}, {"EIO", EIO}}};
  for (const auto& [name, error] : known)
    if (text.substr(colon + 1) == name) return error;
  throw Error(fmt::format("{}='{}': the errno after ':' must be ENOSPC, EDQUOT, EROFS or EIO",
                          env_vars::test_fail_write, text));
}

// Writes all `size` bytes to `fd`; 0 or the errno of the failed call. With
// `injected` set, half of the bytes are written and `injected` returned.
int write_all(int fd, const void* data, std::size_t size, int injected) {
  const auto* bytes = static_cast<const char*>(data);
  std::size_t left = injected != 0 ? size / 2 : size;
  while (left > 0) {
    const ssize_t written = ::write(fd, bytes, left);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return written < 0 ? errno : ENOSPC;
    bytes += written;
    left -= static_cast<std::size_t>(written);
  }
  return injected;
}

void fsync_folder(const fs::path& folder, const fs::path& target) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("writing '{}': {}", target.string(), failure_text("cannot open", folder, errno)));
  const bool synced = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!synced)
    throw Error(fmt::format("writing '{}': {}", target.string(), failure_text("cannot fsync", folder, error)));
}

}  // namespace

std::string errno_text(int error) { return std::strerror(error); }
std::string errno_text() { return errno_text(errno); }

std::string errno_advice(int error) {
  switch (error) {
    case ENOSPC:
      return "; free space on that file system (or point the output elsewhere) and run the command again";
    case EDQUOT:
      return "; free space within your quota (or point the output elsewhere) and run the command again";
    case EROFS:
      return "; the file system is read-only: point the output to a writable folder";
    case EACCES:
    case EPERM:
      return "; make the folder writable for this user, or point the output elsewhere";
    case ENOENT:
      return "; does the folder exist?";
    case EIO:
      return "; the storage device reported an error: check it (and the system log) before running the command "
             "again";
    default:
      return "";
  }
}

// ---------------------------------------------------------------- FileWriter

FileWriter::FileWriter(const fs::path& temporary, const fs::path& target) : temporary_(temporary), target_(target) {
  fd_ = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0)
    throw Error(fmt::format("writing '{}': {}", target.string(), failure_text("cannot create", temporary, errno)));
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void FileWriter::write(const void* data, std::size_t size) {
  DSEE_ASSERT(fd_ >= 0, "write to a closed FileWriter ('{}')", temporary_.string());
  if (const int error = write_all(fd_, data, size, injected_write_error(target_)); error != 0)
    throw Error(fmt::format("writing '{}': {}", target_.string(), failure_text("cannot write", temporary_, error)));
}

void FileWriter::sync_and_close() {
  const int fd = std::exchange(fd_, -1);
  const bool synced = ::fsync(fd) == 0;
  const int sync_error = errno;
  const bool closed = ::close(fd) == 0;
  const int close_error = errno;
  if (!synced)
    throw Error(
        fmt::format("writing '{}': {}", target_.string(), failure_text("cannot fsync", temporary_, sync_error)));
  if (!closed)
    throw Error(
        fmt::format("writing '{}': {}", target_.string(), failure_text("cannot close", temporary_, close_error)));
}

void file_write_atomic(const fs::path& path, const std::function<void(FileWriter& out)>& fill) {
  static std::atomic<unsigned> counter{0};
  const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const fs::path temporary =
      folder / fmt::format(".{}.tmp-{}-{}", path.filename().string(), ::getpid(), counter.fetch_add(1));
  FileWriter out(temporary, path);
  try {
    fill(out);
    out.sync_and_close();
    if (::rename(temporary.c_str(), path.c_str()) != 0)
      throw Error(fmt::format("writing '{}': {}", path.string(), failure_text("cannot rename", temporary, errno)));
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
  fsync_folder(folder, path);
}

void file_write_text(const fs::path& path, std::string_view text) {
  file_write_atomic(path, [&](FileWriter& out) { out.write(text.data(), text.size()); });
}

void file_write_json(const fs::path& path, const nlohmann::json& value) { file_write_text(path, value.dump(2) + "\n"); }

// ---------------------------------------------------------------- FileAppender

FileAppender::FileAppender(const fs::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd_ < 0) throw Error(failure_text("cannot open for appending", path, errno));
}

FileAppender::~FileAppender() {
  if (fd_ >= 0) ::close(fd_);
}

std::int64_t FileAppender::size() const {
  struct stat status {};
  if (::fstat(fd_, &status) != 0) throw Error(failure_text("cannot read the length of", path_, errno));
  return static_cast<std::int64_t>(status.st_size);
}

void FileAppender::append(std::string_view text) {
  const std::int64_t before = size();
  const int error = write_all(fd_, text.data(), text.size(), injected_write_error(path_));
  if (error == 0) return;
  // Keep whole records only: a partial record would be a torn line.
  const bool restored = ::ftruncate(fd_, static_cast<off_t>(before)) == 0;
  throw Error(fmt::format("{}{}", failure_text("cannot append to", path_, error),
                          restored ? "" : fmt::format(" (and cannot cut it back to its {} bytes before)", before)));
}

// ---------------------------------------------------------------- folders and reads

void folder_create(const fs::path& folder) {
  std::error_code error;
  fs::create_directories(folder, error);
  if (error) throw Error(failure_text("cannot create the folder", folder, error.value()));
}

std::string file_read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(failure_text("cannot read", path, errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(failure_text("cannot read", path, errno));
  return text;
}

nlohmann::json file_read_json(const fs::path& path, std::string_view advice) {
  const std::string text = file_read_text(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(
        fmt::format("{}: not valid JSON ({}){}{}", path.string(), e.what(), advice.empty() ? "" : "; ", advice));
  }
}

}  // namespace dsee
