// Ω files: round trip, order, and every bad-file error naming file and dataset.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "base/hashing.h"
#include "core/sparsity/omega_file.h"
#include "test_files.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

using dsee_test::folder_entries;

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
  EXPECT_EQ(folder_entries(dir_), (std::vector<std::string>{"omega.h5", "omega.h5.sum"}));

  const auto in_model_order = omega_read(path("omega.h5"), {{"h.0.attn.c_attn.weight:q", 4, 4},
                                                            {"bert.encoder.layer.1.attention.self.query.weight", 8, 6},
                                                            {"bert.encoder.layer.0.attention.self.value.weight", 8, 6},
                                                            {"h.0.attn.c_attn.weight:v", 4, 4}});
  EXPECT_EQ(in_model_order[0].name, "h.0.attn.c_attn.weight:q");
}

// Matches a dsee::Error whose message contains every one of `parts`.
template <typename... Parts>
auto error_with(Parts... parts) {
  return ThrowsMessage<Error>(AllOf(HasSubstr(parts)...));
}

TEST_F(OmegaFile, MissingDatasetAndWrongShapeNameFileAndDataset) {
  const fs::path file = path("omega.h5");
  omega_write(file, {entry("a.weight", 4, 4, {1, 2})}, {});
  EXPECT_THAT(
      [&] {
        omega_read(file, {{"a.weight", 4, 4}, {"b.weight", 4, 4}});
      },
      error_with(file.string(), "dataset 'b.weight' is missing"));
  EXPECT_THAT(
      [&] {
        omega_read(file, {{"a.weight", 4, 5}});
      },
      error_with(file.string(), "'a.weight': shape [4, 4] does not match the model's [4, 5]"));
  EXPECT_THAT([&] { omega_read(file, std::vector<OmegaExpected>{}); },
              error_with(file.string(), "'a.weight' is not an adapted matrix"));
}

TEST_F(OmegaFile, OutOfRangeUnsortedAndShapelessIndicesAreRejected) {
  const auto read_raw = [&](const std::string& name, const std::vector<std::int64_t>& data,
                            const std::vector<std::int64_t>& shape) {
    write_raw(path(name), "q.weight", data, shape);
    return [this, name] { omega_read(path(name)); };
  };
  EXPECT_THAT(read_raw("range.h5", {1, 16}, {4, 4}),
              error_with("range.h5", "dataset 'q.weight': index 16 at position 1 is outside [0, 16)"));
  EXPECT_THAT(read_raw("negative.h5", {-1, 3}, {4, 4}), error_with("negative.h5", "'q.weight'", "index -1"));
  EXPECT_THAT(read_raw("unsorted.h5", {5, 3}, {4, 4}), error_with("'q.weight'", "not strictly ascending"));
  EXPECT_THAT(read_raw("duplicate.h5", {3, 3}, {4, 4}), error_with("'q.weight'", "not strictly ascending"));
  EXPECT_THAT(read_raw("noshape.h5", {1, 2}, {}), error_with("'q.weight'", "no 'shape' attribute"));
  EXPECT_THAT(read_raw("badshape.h5", {1, 2}, {4, 4, 1}), error_with("'q.weight'", "two integers"));
}

// Found by fuzzing: a shape whose entry count overflows int64, and datasets
// that claim more indices than the file holds, are refused before anything
// is sized by them.
TEST_F(OmegaFile, ShapesAndCountsBeyondTheFileAreRefusedBeforeAllocating) {
  write_raw(path("overflow.h5"), "q.weight", {1, 2}, {std::int64_t{1} << 58, 64});
  EXPECT_THAT([&] { omega_read(path("overflow.h5")); },
              error_with("'q.weight'", "2 indices do not fit shape [288230376151711744, 64]"));
  write_raw(path("toomany.h5"), "q.weight", {0, 1, 2, 3, 4}, {2, 2});
  EXPECT_THAT([&] { omega_read(path("toomany.h5")); }, error_with("'q.weight'", "5 indices do not fit shape [2, 2]"));
  // 2^40 indices declared, none written (HDF5 allocates storage late).
  const hid_t file = H5Fcreate(path("unwritten.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t dims[1] = {hsize_t{1} << 40};
  const hid_t space = H5Screate_simple(1, dims, nullptr);
  const hid_t dataset = H5Dcreate2(file, "q.weight", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const std::int64_t shape[2] = {std::int64_t{1} << 30, std::int64_t{1} << 30};
  const hsize_t shape_dims[1] = {2};
  const hid_t shape_space = H5Screate_simple(1, shape_dims, nullptr);
  const hid_t attribute = H5Acreate2(dataset, "shape", H5T_STD_I64LE, shape_space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(attribute, H5T_NATIVE_INT64, shape);
  H5Aclose(attribute);
  H5Sclose(shape_space);
  H5Dclose(dataset);
  H5Sclose(space);
  H5Fclose(file);
  EXPECT_THAT([&] { omega_read(path("unwritten.h5")); },
              error_with("'q.weight'", "claims 1099511627776 values but the file holds 0 bytes of them"));
}

TEST_F(OmegaFile, MissingOrForeignFileIsAnError) {
  EXPECT_THAT([&] { omega_read(path("none.h5")); }, error_with("none.h5", "does not exist"));
  std::ofstream(path("text.h5")) << "not hdf5\n";
  EXPECT_THAT([&] { omega_read(path("text.h5")); }, error_with("text.h5", "is not an HDF5 file"));
}

TEST_F(OmegaFile, WriteRefusesSlashesDuplicatesAndBadIndicesAndLeavesNoFile) {
  const auto write = [&](std::vector<OmegaEntry> entries, fs::path file = {}) {
    return [this, entries, file] { omega_write(file.empty() ? path("o.h5") : file, entries, {}); };
  };
  EXPECT_THAT(write({entry("a/b", 2, 2, {0})}), error_with("'a/b'", "no '/'"));
  EXPECT_THAT(write({entry("a", 2, 2, {0}), entry("a", 2, 2, {1})}), error_with("appears twice"));
  EXPECT_THAT(write({entry("a", 2, 2, {4})}), error_with("outside [0, 4)"));
  EXPECT_TRUE(folder_entries(dir_).empty());
  EXPECT_THAT(write({entry("a", 2, 2, {0})}, dir_ / "no-such-dir" / "o.h5"), error_with("cannot create"));
}

TEST_F(OmegaFile, RewriteReplacesTheOldFileWhole) {
  omega_write(path("o.h5"), {entry("old", 2, 2, {0})}, {});
  omega_write(path("o.h5"), {entry("new", 3, 3, {8})}, {});
  const auto read = omega_read(path("o.h5"));
  ASSERT_EQ(read.size(), 1u);
  EXPECT_EQ(read[0].name, "new");
}

// The checksum sidecar (Note [Checksum sidecars] in base/hashing.cpp): a
// damaged Ω file dsee wrote is refused before HDF5 parses it, which fuzzing
// showed can crash on malformed files; a file without sidecar is read as is.
TEST_F(OmegaFile, SidecarRefusesADamagedFileBeforeHdf5ReadsIt) {
  omega_write(path("omega.h5"), {entry("a.weight", 8, 8, {1, 2, 30})}, {});
  EXPECT_EQ(dsee_test::file_text(path("omega.h5.sum")), sha256_file(path("omega.h5")) + "  omega.h5\n");
  dsee_test::flip_byte(path("omega.h5"), 40);  // inside HDF5's superblock
  EXPECT_THAT([&] { omega_read(path("omega.h5")); },
              error_with(fmt::format("Ω file '{}': SHA-256 ", path("omega.h5").string()),
                         "(truncated or corrupted since it was written; if you replaced the file on purpose, delete "
                         "'omega.h5.sum')"));
  omega_write(path("omega.h5"), {entry("a.weight", 8, 8, {1, 2, 30})}, {});
  ASSERT_EQ(::truncate(path("omega.h5").c_str(), 100), 0);
  EXPECT_THAT([&] { omega_read(path("omega.h5")); }, error_with("SHA-256", "does not match"));

  omega_write(path("omega.h5"), {entry("a.weight", 8, 8, {1, 2, 30})}, {});
  ASSERT_EQ(::unlink(path("omega.h5.sum").c_str()), 0);
  ASSERT_EQ(omega_read(path("omega.h5")).size(), 1u);
}

}  // namespace
}  // namespace dsee
