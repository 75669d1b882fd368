// A small tmpfs for the full-disk tests: mounted on a fresh folder for the
// test's lifetime (mount(8) needs root, as in CI), filled to leave a chosen
// number of bytes free. Where it cannot be mounted the test reports itself
// skipped with the reason (DSEE_SKIP_WITHOUT_TMPFS), never passed.
#pragma once

#include <gtest/gtest.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace dsee_test {

class Tmpfs {
 public:
  // `options` beyond the size, e.g. "ro".
  explicit Tmpfs(std::uint64_t bytes, const std::string& options = "") {
    static int count = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("dsee-tmpfs-" + std::to_string(::getpid()) + "-" + std::to_string(count++));
    std::filesystem::create_directories(path_);
    const std::string error_file = path_.string() + ".mount-error";
    const std::string command = "mount -t tmpfs -o size=" + std::to_string(bytes) +
                                (options.empty() ? "" : "," + options) + " tmpfs '" + path_.string() + "' 2>'" +
                                error_file + "'";
    mounted_ = std::system(command.c_str()) == 0;
    if (!mounted_) {
      std::ifstream in(error_file);
      std::getline(in, why_);
      why_ = "cannot mount a tmpfs (the full-disk tests need root): " + why_;
    }
    std::filesystem::remove(error_file);
  }
  ~Tmpfs() {
    if (mounted_) std::system(("umount '" + path_.string() + "'").c_str());
    ::rmdir(path_.c_str());  // not remove_all: Note [std::filesystem and libtorch] in omega_file.cpp
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  const std::filesystem::path& path() const { return path_; }

  std::uint64_t free_bytes() const {
    struct statvfs status {};
    EXPECT_EQ(::statvfs(path_.c_str(), &status), 0);
    return static_cast<std::uint64_t>(status.f_bavail) * status.f_frsize;
  }
  // Writes the file ".filler" until at most `bytes` are free (tmpfs counts
  // whole pages: round to 4096).
  void leave_free(std::uint64_t bytes) {
    const std::uint64_t have = free_bytes();
    ASSERT_GE(have, bytes) << "the tmpfs has only " << have << " bytes free";
    std::ofstream out(path_ / ".filler", std::ios::binary | std::ios::app);
    const std::vector<char> block(4096, 'f');
    for (std::uint64_t left = have - bytes; left > 0;) {
      const auto n = static_cast<std::streamsize>(std::min<std::uint64_t>(left, block.size()));
      out.write(block.data(), n);
      left -= static_cast<std::uint64_t>(n);
    }
    out.close();
    ASSERT_TRUE(out.good()) << "cannot fill the tmpfs";
    ASSERT_LE(free_bytes(), bytes);
  }
  // Frees what leave_free took.
  void free_filler() { std::filesystem::remove(path_ / ".filler"); }

 private:
  std::filesystem::path path_;
  bool mounted_ = false;
  std::string why_;
};

// Paths under `folder` (recursively) of temporaries that atomic writes leave
// only when something went wrong (".<name>.tmp-<pid>-<n>").
inline std::vector<std::string> temporaries_under(const std::filesystem::path& folder) {
  std::vector<std::string> found;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(folder))
    if (entry.path().filename().string().find(".tmp-") != std::string::npos) found.push_back(entry.path().string());
  return found;
}

}  // namespace dsee_test

// Skips the test, with the reason, when `tmpfs` could not be mounted.
#define DSEE_SKIP_WITHOUT_TMPFS(tmpfs) \
  if (!(tmpfs).mounted()) GTEST_SKIP() << (tmpfs).why()
