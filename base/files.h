// Files: the one way dsee writes a file (atomically and durably) and the one
// way it reads a text or JSON file, with errors that name the file, what
// failed and the system's reason ("No space left on device", "Read-only file
// system", "Disk quota exceeded", "Input/output error").
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace dsee {

// Writes `path` so that a reader sees either the previous file or the whole
// new one, also after a crash or power loss (Note [Atomic writes] in
// files.cpp): `fill(temporary)` writes a temporary in the same folder, which
// is then fsynced, renamed over `path`, and the folder fsynced. On any
// failure (`fill` throwing included) the temporary is removed and `path` is
// left as it was; dsee::Error names `path`, the step and the reason.
void file_write_atomic(const std::filesystem::path& path,
                       const std::function<void(const std::filesystem::path& temporary)>& fill);

// `text` / `value.dump(2)` and a newline, through file_write_atomic.
void file_write_text(const std::filesystem::path& path, std::string_view text);
void file_write_json(const std::filesystem::path& path, const nlohmann::json& value);

// The whole file. dsee::Error "cannot read '<path>': <reason>" when it is
// missing or unreadable.
std::string file_read_text(const std::filesystem::path& path);
// The file parsed as JSON. dsee::Error names the file and the parser's
// complaint, followed by `advice` (what the user should do) when given.
nlohmann::json file_read_json(const std::filesystem::path& path, std::string_view advice = {});

// A file being written (usually a temporary inside file_write_atomic's
// `fill`): created exclusively, every write complete or dsee::Error naming
// `path` and the reason. close() reports a failed close (delayed write
// errors on network file systems); the destructor closes silently.
class FileWriter {
 public:
  explicit FileWriter(const std::filesystem::path& path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  void write(const void* data, std::size_t size);
  void close();

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// strerror(error) (default: errno now), e.g. "No space left on device".
std::string errno_text(int error);
std::string errno_text();

}  // namespace dsee
