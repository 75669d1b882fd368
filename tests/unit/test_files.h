// Files and folders for the unit tests: a file's bytes, a scratch file, a
// folder's entries and its removal. Folders are listed and removed by POSIX
// calls (Note [std::filesystem and libtorch] in core/sparsity/omega_file.cpp).
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace dsee_test {

// A file's whole contents, bytes as they are (a failed test if it cannot be read).
inline std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Flips the lowest bit of the byte at `offset` of a file, in place.
inline void flip_byte(const std::filesystem::path& path, std::uint64_t offset) {
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(io.good()) << path;
  io.seekg(static_cast<std::streamoff>(offset));
  char byte = 0;
  io.get(byte);
  io.seekp(static_cast<std::streamoff>(offset));
  io.put(static_cast<char>(byte ^ 0x01));
}

// A file in the temporary directory, unique to this process.
inline std::filesystem::path write_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("dsee-test-" + std::to_string(getpid()) + "-" + name);
  std::ofstream(path) << text;
  return path;
}

// The names in a folder (not "." and ".."), sorted; none when it does not exist.
inline std::vector<std::string> folder_entries(const std::filesystem::path& folder) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(folder.c_str())) {
    while (const dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") names.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Removes a folder and everything below it.
inline void remove_tree(const std::filesystem::path& folder) {
  for (const std::string& name : folder_entries(folder)) {
    struct stat status {};
    const std::filesystem::path path = folder / name;
    if (::lstat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode))
      remove_tree(path);
    else
      ::unlink(path.c_str());
  }
  ::rmdir(folder.c_str());
}

}  // namespace dsee_test
