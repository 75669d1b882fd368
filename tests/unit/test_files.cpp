// base/files.h and the HDF5 writer on top of it (core/io/hdf5_io.h) on real
// failing file systems (a full or read-only tmpfs) and with injected
// failures: every error says the system's reason with the file and what to
// do, the previous file stays byte for byte, no temporary is left, and an
// HDF5 write leaves no HDF5 id open. Also: HDF5 files built in memory are
// byte for byte those HDF5 writes to disk itself.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <string>

#include "base/env_vars.h"
#include "base/files.h"
#include "core/io/hdf5_io.h"
#include "error_of.h"
#include "run_dsee.h"
#include "tmpfs.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::file_text;
using dsee_test::temporaries_under;
using dsee_test::Tmpfs;

const std::string kFull = "No space left on device; free space on that file system";

// A file of `bytes` bytes.
std::string bytes_of(std::size_t bytes) { return std::string(bytes, 'x'); }

// Sets DSEE_TEST_FAIL_WRITE for the scope.
class InjectedFailure {
 public:
  explicit InjectedFailure(const std::string& value) { ::setenv(env_vars::test_fail_write, value.c_str(), 1); }
  ~InjectedFailure() { ::unsetenv(env_vars::test_fail_write); }
};

std::size_t open_hdf5_ids() { return static_cast<std::size_t>(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL)); }

// On a 1 MiB tmpfs with 64 KiB free, `write(path)` of something larger
// than that fails naming the file and the reason; the previous file stays
// and no temporary is left. Skips the test where no tmpfs can be mounted.
void expect_full_disk_failure(const std::string& name, const std::function<void(const fs::path&)>& write) {
  Tmpfs disk(1 << 20);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  const fs::path path = disk.path() / name;
  file_write_text(path, "previous\n");
  disk.leave_free(64 << 10);
  const std::string error = error_of([&] { write(path); });
  EXPECT_TRUE(contains(
      error, "writing '" + path.string() + "': cannot write '" + disk.path().string() + "/." + name + ".tmp-"));
  EXPECT_TRUE(contains(error, kFull));
  EXPECT_EQ(file_text(path), "previous\n");
  EXPECT_TRUE(temporaries_under(disk.path()).empty());
  disk.free_filler();
  write(path);
  EXPECT_TRUE(temporaries_under(disk.path()).empty());
}

TEST(Files, FullDiskKeepsThePreviousFileAndLeavesNoTemporary) {
  expect_full_disk_failure("summary.json", [](const fs::path& path) { file_write_text(path, bytes_of(200 << 10)); });
}

TEST(Files, ReadOnlyFileSystemIsNamed) {
  Tmpfs disk(64 << 10, "ro");
  DSEE_SKIP_WITHOUT_TMPFS(disk);
  EXPECT_TRUE(contains(error_of([&] { file_write_text(disk.path() / "latest", "step-2.h5\n"); }),
                       "Read-only file system; the file system is read-only: point the output to a writable folder"));
  EXPECT_TRUE(
      contains(error_of([&] { folder_create(disk.path() / "run" / "stages"); }),
               "cannot create the folder '" + (disk.path() / "run" / "stages").string() + "': Read-only file system"));
}

TEST(Files, InjectedFailuresSayTheirReason) {
  const fs::path dir = fs::temp_directory_path() / ("dsee-files-" + std::to_string(::getpid()));
  folder_create(dir);
  const fs::path path = dir / "step-4.h5.sum";
  file_write_text(path, "previous\n");
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"", kFull},
           {":EDQUOT", "Disk quota exceeded; free space within your quota"},
           {":EROFS", "Read-only file system"},
           {":EIO", "Input/output error; the storage device reported an error"}}) {
    InjectedFailure failure("step-4.h5.sum" + name);
    EXPECT_TRUE(contains(error_of([&] { file_write_text(path, "new\n"); }), text)) << name;
    EXPECT_EQ(file_text(path), "previous\n");
  }
  {
    InjectedFailure failure("other.json");
    file_write_text(path, "new\n");  // only the named file fails
  }
  EXPECT_EQ(file_text(path), "new\n");
  EXPECT_TRUE(temporaries_under(dir).empty());
  {
    InjectedFailure failure("step-4.h5.sum:EPERM");
    EXPECT_TRUE(contains(error_of([&] { file_write_text(path, "x"); }),
                         "DSEE_TEST_FAIL_WRITE='step-4.h5.sum:EPERM': the errno after ':' must be"));
  }
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

TEST(Files, AFailedAppendKeepsWholeRecords) {
  Tmpfs disk(64 << 10);
  DSEE_SKIP_WITHOUT_TMPFS(disk);
  const fs::path path = disk.path() / "metrics.jsonl";
  FileAppender metrics(path);
  metrics.append("{\"step\": 1}\n");
  metrics.append("{\"step\": 2}\n");
  const std::string before = file_text(path);
  disk.leave_free(0);
  // The file's page has room for a short line; a line longer than the page does not fit.
  std::string line = bytes_of(8 << 10);
  line += '\n';
  const std::string error = error_of([&] { metrics.append(line); });
  EXPECT_TRUE(contains(error, "cannot append to '" + path.string() + "': " + kFull));
  EXPECT_EQ(file_text(path), before);
  EXPECT_EQ(metrics.size(), static_cast<std::int64_t>(before.size()));
  disk.free_filler();
  metrics.append("{\"step\": 3}\n");
  EXPECT_EQ(file_text(path), before + "{\"step\": 3}\n");
}

TEST(Files, InjectedAppendFailureCutsTheHalfLineAway) {
  const fs::path path = fs::temp_directory_path() / ("dsee-files-metrics-" + std::to_string(::getpid()) + ".jsonl");
  {
    FileAppender metrics(path);
    metrics.append("{\"step\": 1}\n");
    InjectedFailure failure(path.filename().string() + ":EIO");
    EXPECT_TRUE(contains(error_of([&] { metrics.append("{\"step\": 2}\n"); }), "Input/output error"));
  }
  EXPECT_EQ(file_text(path), "{\"step\": 1}\n");
  ::unlink(path.c_str());
}

// Twenty float datasets, chunked with Fletcher-32, in groups; no timestamps
// (so two writes of it are byte-identical).
void fill_example(hid_t file) {
  const hdf5::Handle group = hdf5::create_group(file, "trainable", "example");
  std::vector<float> values(5000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  for (int i = 0; i < 20; ++i) {
    const hsize_t dims[1] = {values.size()};
    hdf5::Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
    hdf5::Handle create_list(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_chunk(create_list.get(), 1, dims);
    H5Pset_fletcher32(create_list.get());
    H5Pset_obj_track_times(create_list.get(), 0);
    hdf5::Handle dataset(H5Dcreate2(group.get(), ("x" + std::to_string(i)).c_str(), H5T_IEEE_F32LE, space.get(),
                                    H5P_DEFAULT, create_list.get(), H5P_DEFAULT),
                         H5Dclose);
    ASSERT_GE(H5Dwrite(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  }
}

TEST(Hdf5Files, TheFileBuiltInMemoryIsTheFileHdf5WritesItself) {
  const fs::path dir = fs::temp_directory_path() / ("dsee-hdf5-files-" + std::to_string(::getpid()));
  folder_create(dir);
  hdf5::write_file_atomically(dir / "in-memory.h5", "example", fill_example);
  {
    hdf5::Handle create_list(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    H5Pset_link_creation_order(create_list.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    hdf5::Handle file(H5Fcreate((dir / "on-disk.h5").c_str(), H5F_ACC_EXCL, create_list.get(), H5P_DEFAULT), H5Fclose);
    fill_example(file.get());
  }
  const std::string in_memory = file_text(dir / "in-memory.h5");
  EXPECT_GT(in_memory.size(), 400000u);
  EXPECT_TRUE(in_memory == file_text(dir / "on-disk.h5")) << "the files differ";
  EXPECT_EQ(open_hdf5_ids(), 0u);
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

TEST(Hdf5Files, FullDiskIsReportedAndLeavesNothingOpen) {
  expect_full_disk_failure("step-4.h5",
                           [](const fs::path& path) { hdf5::write_file_atomically(path, "checkpoint", fill_example); });
  EXPECT_EQ(open_hdf5_ids(), 0u);
}

TEST(Hdf5Files, AnErrorHalfWayThroughLeavesNothingOpenAndNothingWritten) {
  const fs::path dir = fs::temp_directory_path() / ("dsee-hdf5-throw-" + std::to_string(::getpid()));
  folder_create(dir);
  const std::string error = error_of([&] {
    hdf5::write_file_atomically(dir / "plan.h5", "prune plan", [](hid_t file) {
      const hdf5::Handle group = hdf5::create_group(file, "masks", "prune plan");
      const hdf5::Handle inner = hdf5::create_group(group.get(), "inner", "prune plan");
      H5Gcreate2(inner.get(), "left open", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);  // an id nobody closes
      hdf5::create_group(file, "masks", "prune plan");                              // exists: throws
    });
  });
  EXPECT_TRUE(contains(error, "prune plan: cannot create group 'masks' (HDF5 reports: "));
  EXPECT_FALSE(fs::exists(dir / "plan.h5"));
  EXPECT_TRUE(temporaries_under(dir).empty());
  EXPECT_EQ(open_hdf5_ids(), 0u);  // H5F_CLOSE_STRONG closed the group left open
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

}  // namespace
}  // namespace dsee
