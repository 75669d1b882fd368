// Ω files: round trip, order, and every bad-file error naming file and dataset.
#include <ATen/ATen.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/omega_file.h"
#include "data/error.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

// Entries of a folder, by POSIX calls (Note [std::filesystem and libtorch] in core/omega_file.cpp).
std::vector<std::string> folder_entries(const fs::path& folder) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(folder.c_str())) {
    while (const dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") names.emplace_back(e->d_name);
    ::closedir(d);
  }
  return names;
}

class OmegaFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fmt::format("/tmp/dsee-omega-file-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
  }
  void TearDown() override {
    for (const std::string& name : folder_entries(dir_)) ::unlink((dir_ / name).c_str());
    ::rmdir(dir_.c_str());
  }
  fs::path path(const std::string& name) const { return dir_ / name; }
  fs::path dir_;
};

OmegaEntry entry(std::string name, std::int64_t rows, std::int64_t cols, std::vector<std::int64_t> indices) {
  return {std::move(name), rows, cols, at::tensor(indices, at::kLong), -1};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// Writes one raw dataset (for files dsee itself refuses to write).
void write_raw(const fs::path& file_path, const std::string& name, const std::vector<std::int64_t>& data,
               const std::vector<std::int64_t>& shape) {
  const hid_t file = H5Fcreate(file_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t dims[1] = {data.size()};
  const hid_t space = H5Screate_simple(1, dims, nullptr);
  const hid_t dataset = H5Dcreate2(file, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (!data.empty()) H5Dwrite(dataset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
  if (!shape.empty()) {
    const hsize_t shape_dims[1] = {shape.size()};
    const hid_t shape_space = H5Screate_simple(1, shape_dims, nullptr);
    const hid_t attribute = H5Acreate2(dataset, "shape", H5T_STD_I64LE, shape_space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attribute, H5T_NATIVE_INT64, shape.data());
    H5Aclose(attribute);
    H5Sclose(shape_space);
  }
  H5Dclose(dataset);
  H5Sclose(space);
  H5Fclose(file);
}

TEST_F(OmegaFile, RoundTripKeepsOrderNamesShapesAndInfo) {
  const std::vector<OmegaEntry> written = {
      entry("bert.encoder.layer.1.attention.self.query.weight", 8, 6, {0, 5, 47}),
      entry("bert.encoder.layer.0.attention.self.value.weight", 8, 6, {3, 4, 9}),
      entry("h.0.attn.c_attn.weight:q", 4, 4, {1, 2, 15}),
      entry("h.0.attn.c_attn.weight:v", 4, 4, {}),
  };
  omega_write(path("omega.h5"), written, {"grebsmo", "tolerance", 42, 3});
  OmegaFileInfo info;
  const auto read = omega_read(path("omega.h5"), &info);
  ASSERT_EQ(read.size(), written.size());
  for (std::size_t i = 0; i < read.size(); ++i) {
    EXPECT_EQ(read[i].name, written[i].name);
    EXPECT_EQ(read[i].rows, written[i].rows);
    EXPECT_EQ(read[i].cols, written[i].cols);
    EXPECT_TRUE(at::equal(read[i].indices, written[i].indices)) << read[i].name;
  }
  EXPECT_EQ(info.method, "grebsmo");
  EXPECT_EQ(info.variant, "tolerance");
  EXPECT_EQ(info.seed, 42u);
  EXPECT_EQ(info.c, 3);
  // No temporary file is left next to it.
  EXPECT_EQ(folder_entries(dir_), std::vector<std::string>{"omega.h5"});

  const auto in_model_order = omega_read(path("omega.h5"), {{"h.0.attn.c_attn.weight:q", 4, 4},
                                                            {"bert.encoder.layer.1.attention.self.query.weight", 8, 6},
                                                            {"bert.encoder.layer.0.attention.self.value.weight", 8, 6},
                                                            {"h.0.attn.c_attn.weight:v", 4, 4}});
  EXPECT_EQ(in_model_order[0].name, "h.0.attn.c_attn.weight:q");
}

TEST_F(OmegaFile, MissingDatasetAndWrongShapeNameFileAndDataset) {
  omega_write(path("omega.h5"), {entry("a.weight", 4, 4, {1, 2})}, {});
  const std::string missing = error_of([&] { omega_read(path("omega.h5"), {{"a.weight", 4, 4}, {"b.weight", 4, 4}}); });
  EXPECT_NE(missing.find("omega.h5"), std::string::npos) << missing;
  EXPECT_NE(missing.find("'b.weight' is missing"), std::string::npos) << missing;
  const std::string shape = error_of([&] { omega_read(path("omega.h5"), {{"a.weight", 4, 5}}); });
  EXPECT_NE(shape.find("'a.weight': shape [4, 4] does not match the model's [4, 5]"), std::string::npos) << shape;
  const std::string extra = error_of([&] { omega_read(path("omega.h5"), std::vector<OmegaExpected>{}); });
  EXPECT_NE(extra.find("'a.weight' is not an adapted matrix"), std::string::npos) << extra;
}

TEST_F(OmegaFile, OutOfRangeUnsortedAndShapelessIndicesAreRejected) {
  write_raw(path("range.h5"), "q.weight", {1, 16}, {4, 4});
  EXPECT_NE(error_of([&] {
              omega_read(path("range.h5"));
            }).find("dataset 'q.weight': index 16 at position 1 is outside [0, 16)"),
            std::string::npos);
  write_raw(path("negative.h5"), "q.weight", {-1, 3}, {4, 4});
  EXPECT_NE(error_of([&] { omega_read(path("negative.h5")); }).find("index -1"), std::string::npos);
  write_raw(path("unsorted.h5"), "q.weight", {5, 3}, {4, 4});
  EXPECT_NE(error_of([&] { omega_read(path("unsorted.h5")); }).find("not strictly ascending"), std::string::npos);
  write_raw(path("duplicate.h5"), "q.weight", {3, 3}, {4, 4});
  EXPECT_NE(error_of([&] { omega_read(path("duplicate.h5")); }).find("not strictly ascending"), std::string::npos);
  write_raw(path("noshape.h5"), "q.weight", {1, 2}, {});
  EXPECT_NE(error_of([&] { omega_read(path("noshape.h5")); }).find("no 'shape' attribute"), std::string::npos);
  write_raw(path("badshape.h5"), "q.weight", {1, 2}, {4, 4, 1});
  EXPECT_NE(error_of([&] { omega_read(path("badshape.h5")); }).find("two integers"), std::string::npos);
}

TEST_F(OmegaFile, MissingOrForeignFileIsAnError) {
  EXPECT_NE(error_of([&] { omega_read(path("none.h5")); }).find("does not exist"), std::string::npos);
  std::ofstream(path("text.h5")) << "not hdf5\n";
  EXPECT_NE(error_of([&] { omega_read(path("text.h5")); }).find("is not an HDF5 file"), std::string::npos);
}

TEST_F(OmegaFile, WriteRefusesSlashesDuplicatesAndBadIndicesAndLeavesNoFile) {
  EXPECT_NE(error_of([&] { omega_write(path("o.h5"), {entry("a/b", 2, 2, {0})}, {}); }).find("no '/'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              omega_write(path("o.h5"), {entry("a", 2, 2, {0}), entry("a", 2, 2, {1})}, {});
            }).find("appears twice"),
            std::string::npos);
  EXPECT_NE(error_of([&] { omega_write(path("o.h5"), {entry("a", 2, 2, {4})}, {}); }).find("outside [0, 4)"),
            std::string::npos);
  EXPECT_TRUE(folder_entries(dir_).empty());
  EXPECT_NE(
      error_of([&] { omega_write(dir_ / "no-such-dir" / "o.h5", {entry("a", 2, 2, {0})}, {}); }).find("cannot create"),
      std::string::npos);
}

TEST_F(OmegaFile, RewriteReplacesTheOldFileWhole) {
  omega_write(path("o.h5"), {entry("old", 2, 2, {0})}, {});
  omega_write(path("o.h5"), {entry("new", 3, 3, {8})}, {});
  const auto read = omega_read(path("o.h5"));
  ASSERT_EQ(read.size(), 1u);
  EXPECT_EQ(read[0].name, "new");
}

}  // namespace
}  // namespace dsee
