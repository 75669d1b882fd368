// The shared pieces of the fuzz targets (fuzz_target.h).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "fuzz_target.h"

namespace dsee_fuzz {

std::map<std::string, Target>& targets() {
  static std::map<std::string, Target> registered;
  return registered;
}

const std::filesystem::path& scratch_folder() {
  static const std::filesystem::path folder = [] {
    const std::filesystem::path base =
        std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    const auto path = base / ("dsee-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    // The folder goes with the process (libFuzzer's -fork children included).
    static const std::string removal = "rm -rf '" + path.string() + "'";
    std::atexit([] { std::system(removal.c_str()); });
    return path;
  }();
  return folder;
}

void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

}  // namespace dsee_fuzz
