// Files: the one way dsee writes a file (atomically and durably), the one way
// it appends to a growing file (metrics.jsonl), the one way it creates a
// folder, and the one way it reads a text or JSON file, with errors that name
// the file, what failed and the system's reason ("No space left on device",
// "Read-only file system", "Disk quota exceeded", "Input/output error") and
// what to do about it.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace dsee {

class FileWriter;

// Writes `path` so that a reader sees either the previous file or the whole
// new one, also after a crash or power loss (Note [Atomic writes] in
// files.cpp): `fill(out)` writes the content through `out`, a hidden
// temporary in the same folder, which is then fsynced, renamed over `path`,
// and the folder fsynced. On any failure (`fill` throwing included) the
// temporary is removed and `path` is left as it was; dsee::Error names
// `path`, the step and the reason.
void file_write_atomic(const std::filesystem::path& path, const std::function<void(FileWriter& out)>& fill);

// `text` / `value.dump(2)` and a newline, through file_write_atomic.
void file_write_text(const std::filesystem::path& path, std::string_view text);
void file_write_json(const std::filesystem::path& path, const nlohmann::json& value);

// The whole file. dsee::Error "cannot read '<path>': <reason>" when it is
// missing or unreadable.
std::string file_read_text(const std::filesystem::path& path);
// The file parsed as JSON. dsee::Error names the file and the parser's
// complaint, followed by `advice` (what the user should do) when given.
nlohmann::json file_read_json(const std::filesystem::path& path, std::string_view advice = {});

// Creates `folder` and any missing parents (existing ones are fine).
// dsee::Error "cannot create the folder '<folder>': <reason>; <advice>".
void folder_create(const std::filesystem::path& folder);

// The temporary file inside file_write_atomic's `fill`: every write is
// complete or throws dsee::Error "writing '<path>': cannot write
// '<temporary>': <reason>; <advice>".
class FileWriter {
 public:
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  void write(const void* data, std::size_t size);
  // The temporary's name (HDF5 names its in-memory file after it).
  const std::filesystem::path& temporary() const { return temporary_; }

 private:
  friend void file_write_atomic(const std::filesystem::path&, const std::function<void(FileWriter&)>&);
  FileWriter(const std::filesystem::path& temporary, const std::filesystem::path& target);
  // fsync and close; dsee::Error on failure (delayed write errors surface here).
  void sync_and_close();

  std::filesystem::path temporary_;
  std::filesystem::path target_;
  int fd_ = -1;
};

// A file that grows by whole records (metrics.jsonl: one JSON line per
// record), opened for appending and created when missing. An append adds all
// of `text` or, when the system refuses (a full disk), cuts the file back to
// its length before and throws dsee::Error "cannot append to '<path>':
// <reason>; <advice>": the file keeps only whole records. Appends are not
// atomic against a crash (a killed process may leave a torn last line;
// readers pass over it) and are not fsynced.
class FileAppender {
 public:
  explicit FileAppender(const std::filesystem::path& path);
  ~FileAppender();
  FileAppender(const FileAppender&) = delete;
  FileAppender& operator=(const FileAppender&) = delete;

  void append(std::string_view text);
  // The file's length now, in bytes.
  std::int64_t size() const;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// strerror(error) (default: errno now), e.g. "No space left on device".
std::string errno_text(int error);
std::string errno_text();
// What to do about a failed write with this errno, starting "; " (empty when
// there is nothing specific to say), e.g. "; free space on that file system
// (or point the output elsewhere) and run the command again".
std::string errno_advice(int error);

}  // namespace dsee
