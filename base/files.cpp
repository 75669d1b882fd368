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
// folder is missing.
#include "base/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <system_error>

#include "base/error.h"

namespace dsee {
namespace fs = std::filesystem;
namespace {

// What to do about a failed write, by errno.
std::string advice_for(int error) {
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
    default:
      return "";
  }
}

std::string failure_text(const char* step, const fs::path& file, int error) {
  return fmt::format("{} '{}': {}{}", step, file.string(), errno_text(error), advice_for(error));
}

void fsync_or_throw(const fs::path& path, bool directory, const fs::path& target) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("writing '{}': {}", target.string(), failure_text("cannot open", path, errno)));
  const bool synced = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!synced) throw Error(fmt::format("writing '{}': {}", target.string(), failure_text("cannot fsync", path, error)));
}

}  // namespace

std::string errno_text(int error) { return std::strerror(error); }
std::string errno_text() { return errno_text(errno); }

FileWriter::FileWriter(const fs::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0) throw Error(failure_text("cannot create", path, errno));
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void FileWriter::write(const void* data, std::size_t size) {
  DSEE_ASSERT(fd_ >= 0, "write to a closed FileWriter ('{}')", path_.string());
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = ::write(fd_, bytes, size);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) throw Error(failure_text("cannot write", path_, written < 0 ? errno : ENOSPC));
    bytes += written;
    size -= static_cast<std::size_t>(written);
  }
}

void FileWriter::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw Error(failure_text("cannot close", path_, errno));
}

void file_write_atomic(const fs::path& path, const std::function<void(const fs::path& temporary)>& fill) {
  static std::atomic<unsigned> counter{0};
  const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const fs::path temporary =
      folder / fmt::format(".{}.tmp-{}-{}", path.filename().string(), ::getpid(), counter.fetch_add(1));
  try {
    fill(temporary);
    fsync_or_throw(temporary, false, path);
    if (::rename(temporary.c_str(), path.c_str()) != 0)
      throw Error(fmt::format("writing '{}': {}", path.string(), failure_text("cannot rename", temporary, errno)));
  } catch (...) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw;
  }
  fsync_or_throw(folder, true, path);
}

void file_write_text(const fs::path& path, std::string_view text) {
  file_write_atomic(path, [&](const fs::path& temporary) {
    FileWriter out(temporary);
    out.write(text.data(), text.size());
    out.close();
  });
}

void file_write_json(const fs::path& path, const nlohmann::json& value) { file_write_text(path, value.dump(2) + "\n"); }

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
    throw Error(fmt::format("{}: not valid JSON ({}){}{}", path.string(), e.what(), advice.empty() ? "" : "; ", advice));
  }
}

}  // namespace dsee
