// masks.h5 (core/sparsity/prune_plan.h): round trip of both mask encodings and the
// head plan, the encoding chosen by density, and every bad-file error naming
// the file and the dataset.
#include <ATen/ATen.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/hashing.h"
#include "core/sparsity/prune_plan.h"
#include "error_of.h"
#include "test_files.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

class PrunePlanFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fmt::format("/tmp/dsee-prune-plan-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
  }
  void TearDown() override {
    for (const std::string& name : entries()) ::unlink((dir_ / name).c_str());
    ::rmdir(dir_.c_str());
  }
  // Folder entries by POSIX calls (Note [std::filesystem and libtorch] in core/sparsity/omega_file.cpp).
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (const dirent* e = ::readdir(d))
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") names.emplace_back(e->d_name);
      ::closedir(d);
    }
    return names;
  }
  fs::path path(const std::string& name) const { return dir_ / name; }
  fs::path dir_;
};

// A bool [rows, cols] mask with about `zero_fraction` zeros, seeded.
at::Tensor random_mask(std::int64_t rows, std::int64_t cols, double zero_fraction, std::uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::rand({rows, cols}, generator) >= zero_fraction;
}

std::string encoding_of(const fs::path& file, const std::string& dataset_name) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, dataset_name.c_str(), H5P_DEFAULT);
  const hid_t a = H5Aopen(d, "encoding", H5P_DEFAULT);
  const hid_t t = H5Aget_type(a);
  char* data = nullptr;
  H5Aread(a, t, &data);
  std::string value = data ? data : "";
  H5free_memory(data);
  H5Tclose(t);
  H5Aclose(a);
  H5Dclose(d);
  H5Fclose(f);
  return value;
}

TEST_F(PrunePlanFile, RoundTripsEveryEncodingAndHeads) {
  PrunePlan plan;
  // 50% zeros → bits; 1 zero in 13·11 = 143 (< 1/32) → zero_indices; 2 ones in
  // 9·10 = 90 (< 1/32) → one_indices; odd sizes exercise the padding.
  plan.masks.push_back({"encoder.layer.1.attention.self.query", random_mask(7, 9, 0.5, 1)});
  at::Tensor few_zeros = at::ones({13, 11}, at::kFloat);
  few_zeros.view({-1})[77] = 0;
  plan.masks.push_back({"encoder.layer.0.attention.self.value", few_zeros});
  plan.masks.push_back({"encoder.layer.0.output.dense", at::ones({4, 6}, at::kBool)});
  at::Tensor few_ones = at::zeros({9, 10}, at::kBool);
  few_ones.view({-1})[5] = true;
  few_ones.view({-1})[89] = true;
  plan.masks.push_back({"encoder.layer.1.attention.self.value", few_ones});
  plan.masks.push_back({"encoder.layer.1.output.dense", at::zeros({3, 3}, at::kBool)});
  plan.heads[0] = {1, 3};
  plan.heads[11] = {0};
  prune_plan_write(path("masks.h5"), plan);

  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/encoder.layer.1.attention.self.query"), "bits");
  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/encoder.layer.0.attention.self.value"), "zero_indices");
  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/encoder.layer.0.output.dense"), "zero_indices");
  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/encoder.layer.1.attention.self.value"), "one_indices");
  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/encoder.layer.1.output.dense"), "one_indices");

  const PrunePlan read = prune_plan_read(path("masks.h5"));
  ASSERT_EQ(read.masks.size(), plan.masks.size());
  for (std::size_t i = 0; i < plan.masks.size(); ++i) {
    EXPECT_EQ(read.masks[i].module, plan.masks[i].module) << "written order is kept";
    EXPECT_EQ(read.masks[i].mask.scalar_type(), at::kBool);
    EXPECT_TRUE(at::equal(read.masks[i].mask, plan.masks[i].mask.to(at::kBool))) << plan.masks[i].module;
  }
  EXPECT_EQ(read.heads, plan.heads);
}

TEST_F(PrunePlanFile, EncodingSwitchesAtOneZeroInThirtyTwo) {
  // 64 entries: 1 zero (1/64 < 1/32) → indices; 2 zeros (= 1/32, not fewer) → bits.
  PrunePlan plan;
  at::Tensor one = at::ones({8, 8}, at::kBool), two = at::ones({8, 8}, at::kBool);
  one[3][4] = false;
  two[0][0] = false;
  two[7][7] = false;
  plan.masks = {{"a", one}, {"b", two}};
  prune_plan_write(path("masks.h5"), plan);
  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/a"), "zero_indices");
  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/b"), "bits");
  const PrunePlan read = prune_plan_read(path("masks.h5"));
  EXPECT_TRUE(at::equal(read.masks[0].mask, one));
  EXPECT_TRUE(at::equal(read.masks[1].mask, two));

  // The same at the other end: 1 one → one_indices; 2 ones → bits.
  plan.masks = {{"a", one.logical_not()}, {"b", two.logical_not()}};
  prune_plan_write(path("masks.h5"), plan);
  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/a"), "one_indices");
  EXPECT_EQ(encoding_of(path("masks.h5"), "masks/b"), "bits");
  const PrunePlan inverse = prune_plan_read(path("masks.h5"));
  EXPECT_TRUE(at::equal(inverse.masks[0].mask, one.logical_not()));
  EXPECT_TRUE(at::equal(inverse.masks[1].mask, two.logical_not()));
}

TEST_F(PrunePlanFile, HeadsOnlyAndEmptyPlans) {
  PrunePlan heads;
  heads.heads[2] = {0, 5, 7};
  prune_plan_write(path("heads.h5"), heads);
  const PrunePlan read = prune_plan_read(path("heads.h5"));
  EXPECT_TRUE(read.masks.empty());
  EXPECT_EQ(read.heads, heads.heads);
  prune_plan_write(path("empty.h5"), PrunePlan{});
  EXPECT_TRUE(prune_plan_read(path("empty.h5")).empty());
}

TEST_F(PrunePlanFile, RefusesInvalidPlansAndLeavesNoFile) {
  PrunePlan not_binary;
  not_binary.masks.push_back({"q", at::full({2, 2}, 0.5)});
  EXPECT_TRUE(contains(error_of([&] { prune_plan_write(path("masks.h5"), not_binary); }),
                       "mask 'q': the mask holds values other than 0 and 1"));
  PrunePlan not_2d;
  not_2d.masks.push_back({"q", at::ones({4}, at::kBool)});
  EXPECT_TRUE(contains(error_of([&] { prune_plan_write(path("masks.h5"), not_2d); }), "must be a 2-D [out, in]"));
  PrunePlan unsorted;
  unsorted.heads[0] = {3, 1};
  EXPECT_TRUE(contains(error_of([&] { prune_plan_write(path("masks.h5"), unsorted); }), "strictly ascending"));
  EXPECT_TRUE(entries().empty()) << "no file, no temporary left";
}

// Raw files dsee refuses to write: one dataset under /masks with the given attributes.
void write_raw_mask(const fs::path& file_path, hid_t file_type, hid_t memory_type, const void* data, hsize_t count,
                    std::vector<std::int64_t> shape, std::int64_t numel, const char* encoding) {
  const hid_t file = H5Fcreate(file_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const std::int64_t version = 1;
  const hid_t scalar = H5Screate(H5S_SCALAR);
  const hid_t va = H5Acreate2(file, "format_version", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(va, H5T_NATIVE_INT64, &version);
  H5Aclose(va);
  const hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, H5T_VARIABLE);
  const char* kind = "unstructured";
  const hid_t ka = H5Acreate2(file, "kind", str, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(ka, str, &kind);
  H5Aclose(ka);
  const hid_t group = H5Gcreate2(file, "masks", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t dims[1] = {count};
  const hid_t space = H5Screate_simple(1, dims, nullptr);
  const hid_t dataset = H5Dcreate2(group, "q", file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  const hsize_t two[1] = {shape.size()};
  const hid_t shape_space = H5Screate_simple(1, two, nullptr);
  const hid_t sa = H5Acreate2(dataset, "shape", H5T_STD_I64LE, shape_space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(sa, H5T_NATIVE_INT64, shape.data());
  H5Aclose(sa);
  const hid_t na = H5Acreate2(dataset, "numel", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(na, H5T_NATIVE_INT64, &numel);
  H5Aclose(na);
  const hid_t ea = H5Acreate2(dataset, "encoding", str, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(ea, str, &encoding);
  H5Aclose(ea);
  H5Sclose(shape_space);
  H5Sclose(space);
  H5Sclose(scalar);
  H5Tclose(str);
  H5Dclose(dataset);
  H5Gclose(group);
  H5Fclose(file);
}

TEST_F(PrunePlanFile, ErrorsNameFileAndDataset) {
  const std::string file = path("bad.h5").string();
  const std::string where = fmt::format("prune plan '{}', dataset 'masks/q'", file);
  const std::vector<std::uint8_t> bits = {0xFF, 0xF0};  // 12 ones of a [3, 4] mask
  const std::vector<std::int64_t> zeros = {2, 5};

  write_raw_mask(file, H5T_STD_U8LE, H5T_NATIVE_UINT8, bits.data(), 2, {3, 4}, 12, "bits");
  ASSERT_EQ(prune_plan_read(file).masks.at(0).mask.sum().item<std::int64_t>(), 12) << "the raw writer itself is sound";

  write_raw_mask(file, H5T_STD_U8LE, H5T_NATIVE_UINT8, bits.data(), 2, {5, 4}, 20, "bits");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }), where + ": 2 bytes of bits for 20 entries"));
  write_raw_mask(file, H5T_STD_U8LE, H5T_NATIVE_UINT8, bits.data(), 2, {3, 4}, 13, "bits");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }), where + ": attribute 'numel' (13) does not match"));
  write_raw_mask(file, H5T_STD_U8LE, H5T_NATIVE_UINT8, bits.data(), 2, {12}, 12, "bits");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }), where + ": attribute 'shape' must hold two"));
  const std::vector<std::uint8_t> padded = {0xFF, 0xF8};
  write_raw_mask(file, H5T_STD_U8LE, H5T_NATIVE_UINT8, padded.data(), 2, {3, 4}, 12, "bits");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }), where + ": padding bits"));
  write_raw_mask(file, H5T_STD_U8LE, H5T_NATIVE_UINT8, bits.data(), 2, {3, 4}, 12, "runs");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }), where + ": attribute 'encoding' is 'runs'"));
  write_raw_mask(file, H5T_STD_I64LE, H5T_NATIVE_INT64, zeros.data(), 2, {3, 4}, 12, "bits");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }), where + ": the bits must be stored as uint8"));

  write_raw_mask(file, H5T_STD_I64LE, H5T_NATIVE_INT64, zeros.data(), 2, {3, 4}, 12, "zero_indices");
  ASSERT_EQ(prune_plan_read(file).masks.at(0).mask.sum().item<std::int64_t>(), 10);
  const std::vector<std::int64_t> out_of_range = {2, 12};
  write_raw_mask(file, H5T_STD_I64LE, H5T_NATIVE_INT64, out_of_range.data(), 2, {3, 4}, 12, "zero_indices");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }),
                       where + ": index 12 at position 1 is outside [0, 12) for shape [3, 4]"));
  const std::vector<std::int64_t> descending = {5, 2};
  write_raw_mask(file, H5T_STD_I64LE, H5T_NATIVE_INT64, descending.data(), 2, {3, 4}, 12, "zero_indices");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }), where + ": indices are not strictly ascending"));
  write_raw_mask(file, H5T_STD_I64LE, H5T_NATIVE_INT64, zeros.data(), 2, {3, 4}, 12, "one_indices");
  ASSERT_EQ(prune_plan_read(file).masks.at(0).mask.sum().item<std::int64_t>(), 2);
  write_raw_mask(file, H5T_STD_I64LE, H5T_NATIVE_INT64, out_of_range.data(), 2, {3, 4}, 12, "one_indices");
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(file); }),
                       where + ": index 12 at position 1 is outside [0, 12) for shape [3, 4]"));

  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(path("missing.h5")); }), "does not exist"));
  std::ofstream(path("text.h5")) << "not hdf5";
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(path("text.h5")); }), "is not an HDF5 file"));
}

// A flipped byte inside a mask's data: the checksum sidecar, or without one
// Fletcher-32, turns it into a read error.
TEST_F(PrunePlanFile, CorruptedDatasetIsDetected) {
  PrunePlan plan;
  const at::Tensor mask = random_mask(64, 64, 0.5, 3);
  plan.masks.push_back({"q", mask});
  prune_plan_write(path("masks.h5"), plan);

  // The data's offset in the file, from HDF5 itself.
  const hid_t f = H5Fopen(path("masks.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, "masks/q", H5P_DEFAULT);
  haddr_t offset = HADDR_UNDEF;
  hsize_t chunk_size = 0;
  const hsize_t origin[1] = {0};
  unsigned filter_mask = 0;
  ASSERT_GE(H5Dget_chunk_info_by_coord(d, origin, &filter_mask, &offset, &chunk_size), 0);
  H5Dclose(d);
  H5Fclose(f);
  ASSERT_NE(offset, HADDR_UNDEF);

  dsee_test::flip_byte(path("masks.h5"), offset + 100);
  // With its checksum file the damage is found before HDF5 opens the file
  // (Note [Checksum sidecars] in base/hashing.cpp) ...
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(path("masks.h5")); }),
                       fmt::format("prune plan '{}': SHA-256 ", path("masks.h5").string())));
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(path("masks.h5")); }),
                       "if you replaced the file on purpose, "
                       "delete 'masks.h5.sum'"));
  // ... and without it (a copy that left it behind), by Fletcher-32.
  ASSERT_EQ(::unlink((path("masks.h5").string() + ".sum").c_str()), 0);
  EXPECT_TRUE(contains(
      error_of([&] { prune_plan_read(path("masks.h5")); }),
      fmt::format("prune plan '{}', dataset 'masks/q': cannot read the bits (corrupted", path("masks.h5").string())));
}

TEST(PrunePlanGroup, WritesIntoAGroupOfAnOpenFile) {
  const std::string file = fmt::format("/tmp/dsee-prune-plan-group-{}.h5", ::getpid());
  PrunePlan plan;
  plan.masks.push_back({"h.0.attn.c_attn", random_mask(5, 3, 0.3, 9)});
  plan.heads[1] = {2};
  {
    const hid_t f = H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hid_t g = H5Gcreate2(f, "plan", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    prune_plan_write_group(g, plan);
    H5Gclose(g);
    H5Fclose(f);
  }
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t g = H5Gopen2(f, "plan", H5P_DEFAULT);
  const PrunePlan read = prune_plan_read_group(g, "checkpoint 'x', group 'plan'");
  H5Gclose(g);
  H5Fclose(f);
  ::unlink(file.c_str());
  ASSERT_EQ(read.masks.size(), 1u);
  EXPECT_TRUE(at::equal(read.masks[0].mask, plan.masks[0].mask));
  EXPECT_EQ(read.heads, plan.heads);
}

// The checksum sidecar: written with the file in `sha256sum` format, replaced
// with it, and a file without one (another tool's) read unchecked.
TEST_F(PrunePlanFile, SidecarIsWrittenWithTheFileAndOptionalOnRead) {
  PrunePlan plan;
  plan.masks.push_back({"q", random_mask(16, 16, 0.5, 4)});
  prune_plan_write(path("masks.h5"), plan);
  const std::string sum = dsee_test::file_text(path("masks.h5.sum"));
  EXPECT_EQ(sum, sha256_file(path("masks.h5")) + "  masks.h5\n");
  plan.masks[0].mask = random_mask(16, 16, 0.5, 5);
  prune_plan_write(path("masks.h5"), plan);
  EXPECT_NE(dsee_test::file_text(path("masks.h5.sum")), sum);
  EXPECT_TRUE(at::equal(prune_plan_read(path("masks.h5")).masks[0].mask, plan.masks[0].mask));
  ASSERT_EQ(::unlink(path("masks.h5.sum").c_str()), 0);
  EXPECT_TRUE(at::equal(prune_plan_read(path("masks.h5")).masks[0].mask, plan.masks[0].mask));
  std::ofstream(path("masks.h5.sum")) << "not a checksum\n";
  EXPECT_TRUE(contains(error_of([&] { prune_plan_read(path("masks.h5")); }),
                       "checksum file '" + path("masks.h5.sum").string() + "' does not start with a SHA-256"));
}

}  // namespace
}  // namespace dsee
