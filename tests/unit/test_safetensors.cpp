// safetensors reader and writer: round trips for every dtype, zero-copy
// mapping, the reference writer's layout, sharded checkpoints, and one test
// per kind of bad file, each checking its own message. Parity with the
// Python library is in tests/parity/test_safetensors_python.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "base/error.h"
#include "core/io/safetensors.h"
#include "error_of.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

// std::filesystem::remove_all segfaults in a process linked with libtorch.so
// (torch 2.11 exports its own, broken copy), so the test folders, which are
// flat, are emptied file by file.
void remove_folder(const fs::path& dir) {
  if (!fs::exists(dir)) return;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path());
  for (const auto& file : files) fs::remove(file);
  fs::remove(dir);
}

// A fresh folder per test, removed afterwards.
class Safetensors : public testing::Test {
 protected:
  void SetUp() override {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / fmt::format("dsee-safetensors-{}-{}", getpid(), info->name());
    remove_folder(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { remove_folder(dir_); }

  // A file from a header text and data bytes; `length` overrides the 8-byte
  // header length.
  fs::path write_raw(const std::string& name, const std::string& header, const std::string& data,
                     std::optional<std::uint64_t> length = std::nullopt) const {
    const fs::path path = dir_ / name;
    std::ofstream out(path, std::ios::binary);
    const std::uint64_t n = length.value_or(header.size());
    out.write(reinterpret_cast<const char*>(&n), sizeof n);
    out << header << data;
    return path;
  }
  std::string read_bytes(const fs::path& path) const {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  std::string open_error(const fs::path& path) const {
    return error_of([&] { SafetensorsFile::open(path); });
  }

  fs::path dir_;
};

// One tensor of each dtype dsee stores, with values that use the whole type.
NamedTensors every_dtype() {
  at::manual_seed(7);
  const auto floats = at::randn({3, 5}) * 100;
  return {{"f32", floats},
          {"f16", floats.to(at::kHalf)},
          {"bf16", floats.to(at::kBFloat16)},
          {"f64", floats.to(at::kDouble)},
          {"i64", at::randint(-(int64_t{1} << 40), int64_t{1} << 40, {4}, at::kLong)},
          {"i32", at::randint(-100000, 100000, {2, 2, 2}, at::kInt)},
          {"i16", at::randint(-30000, 30000, {6}, at::kShort)},
          {"i8", at::randint(-128, 128, {6}, at::kChar)},
          {"u8", at::randint(0, 256, {7}, at::kByte)},
          {"bool", at::randint(0, 2, {9}, at::kByte).to(at::kBool)}};
}

TEST_F(Safetensors, RoundTripsEveryDtype) {
  const auto tensors = every_dtype();
  safetensors_save(dir_ / "all.safetensors", tensors, {{"format", "pt"}});
  const auto file = SafetensorsFile::open(dir_ / "all.safetensors");
  EXPECT_EQ(file->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(file->entries().size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    const at::Tensor got = file->tensor(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(at::equal(got, expected)) << name;
  }
}

TEST_F(Safetensors, RoundTripKeepsSpecialFloatBitsExactly) {
  const auto values = at::tensor({0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, 65504.0f, 3.3895e38f, 1e-7f});
  const NamedTensors tensors = {{"f32", values}, {"f16", values.to(at::kHalf)}, {"bf16", values.to(at::kBFloat16)}};
  safetensors_save(dir_ / "special.safetensors", tensors);
  const auto file = SafetensorsFile::open(dir_ / "special.safetensors");
  for (const auto& [name, expected] : tensors) {
    const auto bits = expected.element_size() == 4 ? at::kInt : at::kShort;
    EXPECT_TRUE(at::equal(file->tensor(name).view(bits), expected.view(bits))) << name;
  }
}

TEST_F(Safetensors, TensorsPointIntoTheMappingAndOutliveTheFile) {
  const auto expected = at::arange(1000, at::kFloat).reshape({10, 100});
  safetensors_save(dir_ / "m.safetensors", {{"w", expected}});
  auto file = SafetensorsFile::open(dir_ / "m.safetensors");
  const at::Tensor w = file->tensor("w");
  const auto mapped = file->mapped_bytes();
  const auto* data = static_cast<const std::byte*>(w.const_data_ptr());
  EXPECT_GE(data, mapped.data());
  EXPECT_LE(data + w.nbytes(), mapped.data() + mapped.size());
  file.reset();
  fs::remove(dir_ / "m.safetensors");  // the mapping keeps the pages
  EXPECT_TRUE(at::equal(w, expected));
}

TEST_F(Safetensors, WritingToATensorLeavesTheFileAlone) {
  safetensors_save(dir_ / "m.safetensors", {{"w", at::ones({4})}});
  const std::string before = read_bytes(dir_ / "m.safetensors");
  SafetensorsFile::open(dir_ / "m.safetensors")->tensor("w").mul_(3);
  EXPECT_EQ(read_bytes(dir_ / "m.safetensors"), before);
  EXPECT_TRUE(at::equal(SafetensorsFile::open(dir_ / "m.safetensors")->tensor("w"), at::ones({4})));
}

TEST_F(Safetensors, EmptyAndZeroDimTensorsRoundTrip) {
  const NamedTensors tensors = {{"empty", at::zeros({0})},
                                {"empty_2d", at::zeros({2, 0, 3}, at::kLong)},
                                {"scalar", at::scalar_tensor(2.5, at::kDouble)}};
  safetensors_save(dir_ / "e.safetensors", tensors);
  const auto file = SafetensorsFile::open(dir_ / "e.safetensors");
  EXPECT_EQ(file->tensor("empty").sizes(), at::IntArrayRef({0}));
  EXPECT_EQ(file->tensor("empty_2d").sizes(), at::IntArrayRef({2, 0, 3}));
  EXPECT_EQ(file->tensor("scalar").dim(), 0);
  EXPECT_EQ(file->tensor("scalar").item<double>(), 2.5);
  EXPECT_EQ(file->entry("scalar").shape, std::vector<std::int64_t>{});
}

TEST_F(Safetensors, WritesTheReferenceLayout) {
  // Note [Writer order]: by dtype rank (I64 > F32 > I32 > BOOL), then name;
  // header padded with spaces to a multiple of 8.
  safetensors_save(dir_ / "o.safetensors",
                   {{"d", at::ones({1}, at::kBool)},
                    {"b", at::ones({1}, at::kInt)},
                    {"a", at::ones({1}, at::kFloat)},
                    {"c", at::ones({1}, at::kLong)},
                    {"aa", at::ones({1}, at::kFloat)}},
                   {{"format", "pt"}});
  const std::string bytes = read_bytes(dir_ / "o.safetensors");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string expected =
      R"({"__metadata__":{"format":"pt"},"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"aa":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},)"
      R"("b":{"dtype":"I32","shape":[1],"data_offsets":[16,20]},"d":{"dtype":"BOOL","shape":[1],"data_offsets":[20,21]}})";
  EXPECT_EQ(bytes.substr(8, n), expected + std::string(n - expected.size(), ' '));
  EXPECT_EQ(bytes.size(), 8 + n + 21);
}

TEST_F(Safetensors, SaveReplacesAtomicallyAndLeavesNoTemporary) {
  const fs::path path = dir_ / "a.safetensors";
  safetensors_save(path, {{"x", at::zeros({2})}});
  safetensors_save(path, {{"x", at::ones({3})}});
  EXPECT_TRUE(at::equal(SafetensorsFile::open(path)->tensor("x"), at::ones({3})));
  // A failed save leaves the old file as it was, and nothing else.
  const std::string before = read_bytes(path);
  EXPECT_TRUE(contains(error_of([&] {
                         safetensors_save(path, {{"x", at::ones({1})}, {"x", at::ones({1})}});
                       }),
                       "tensor \"x\": the name is given twice"));
  EXPECT_EQ(read_bytes(path), before);
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir_)) files.push_back(entry.path().filename());
  EXPECT_EQ(files, std::vector<fs::path>{"a.safetensors"});
}

TEST_F(Safetensors, SaveRejectsADtypeTheFormatCannotHold) {
  EXPECT_TRUE(contains(error_of([&] {
                         safetensors_save(dir_ / "c.safetensors", {{"z", at::zeros({2}, at::kComplexFloat)}});
                       }),
                       "tensor \"z\": dtype ComplexFloat cannot be stored"));
}

TEST_F(Safetensors, MisalignedTensorIsReadAsAnAlignedCopy) {
  const float value = 1.5f;
  std::string data = "x";
  data.append(reinterpret_cast<const char*>(&value), 4);
  const auto path = write_raw("mis.safetensors",
                              R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                              R"("f":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})",
                              data);
  const at::Tensor f = SafetensorsFile::open(path)->tensor("f");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(f.const_data_ptr()) % 4, 0u);
  EXPECT_EQ(f.item<float>(), 1.5f);
}

// ---------------------------------------------------------------- bad input

TEST_F(Safetensors, TruncatedBelowTheHeaderLengthIsAnError) {
  std::ofstream(dir_ / "t.safetensors", std::ios::binary) << "abc";
  const std::string message = open_error(dir_ / "t.safetensors");
  EXPECT_TRUE(contains(message, "t.safetensors: the file is 3 bytes, too short for the 8-byte header length"));
}

TEST_F(Safetensors, TruncatedDataIsAnErrorNamingTheTensor) {
  safetensors_save(dir_ / "t.safetensors", {{"weight", at::ones({16})}});
  fs::resize_file(dir_ / "t.safetensors", fs::file_size(dir_ / "t.safetensors") - 4);
  EXPECT_TRUE(contains(open_error(dir_ / "t.safetensors"),
                       "t.safetensors: tensor \"weight\": data_offsets [0, 64] run past the end of the data "
                       "(60 bytes): the file is truncated"));
}

TEST_F(Safetensors, HeaderLengthBeyondTheFileIsAnError) {
  const auto path = write_raw("h.safetensors", "{}", "", 1000);
  EXPECT_TRUE(contains(open_error(path),
                       "h.safetensors: the header length 1000 runs past the end of the file "
                       "(10 bytes)"));
}

TEST_F(Safetensors, HeaderOverTheReferenceLimitIsAnError) {
  const auto path = write_raw("big.safetensors", "{}", "", 200'000'000);
  fs::resize_file(path, 200'000'016);  // sparse: no disk used
  EXPECT_TRUE(contains(open_error(path),
                       "big.safetensors: the header length 200000000 is over the 100000000-byte "
                       "limit"));
}

TEST_F(Safetensors, OverlappingOffsetsAreAnError) {
  const auto path = write_raw("o.safetensors",
                              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              std::string(12, '\0'));
  EXPECT_TRUE(contains(open_error(path),
                       "o.safetensors: tensors \"a\" (bytes [0, 8)) and \"b\" (bytes [4, 12)) "
                       "overlap"));
}

TEST_F(Safetensors, EmptyTensorsAndGapsDoNotCountAsOverlap) {
  const auto path = write_raw("g.safetensors",
                              R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                              R"("e":{"dtype":"F32","shape":[0],"data_offsets":[1,1]},)"
                              R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                              "abcdef");
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->tensor("b")[1].item<std::uint8_t>(), 'f');
  EXPECT_EQ(file->tensor("e").numel(), 0);
}

TEST_F(Safetensors, ByteSizeOtherThanNumelTimesDtypeSizeIsAnError) {
  const auto path =
      write_raw("s.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_TRUE(contains(open_error(path),
                       "s.safetensors: tensor \"w\": data_offsets [0, 4] span 4 bytes, but shape "
                       "[2] of F32 needs 8 bytes"));
}

TEST_F(Safetensors, UnknownDtypeIsAnError) {
  const auto path =
      write_raw("d.safetensors", R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_TRUE(contains(open_error(path), "d.safetensors: tensor \"w\": unknown dtype \"F33\" (dsee reads BOOL, U8"));
}

TEST_F(Safetensors, FormatDtypeDseeDoesNotReadIsNamedAsUnsupported) {
  const auto path =
      write_raw("d.safetensors", R"({"w":{"dtype":"U16","shape":[1],"data_offsets":[0,2]}})", std::string(2, '\0'));
  EXPECT_TRUE(contains(open_error(path), "tensor \"w\": unsupported dtype \"U16\""));
}

TEST_F(Safetensors, DuplicateNamesAreAnError) {
  const auto path = write_raw("n.safetensors",
                              R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                              R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                              "ab");
  EXPECT_TRUE(contains(open_error(path), "n.safetensors (safetensors header): \"w\" appears twice"));
}

TEST_F(Safetensors, DuplicateFieldInAnEntryIsAnError) {
  const auto path =
      write_raw("n.safetensors", R"({"w":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", "a");
  EXPECT_TRUE(contains(open_error(path), "\"w\".\"dtype\" appears twice"));
}

TEST_F(Safetensors, NegativeNonIntegerAndOverflowingShapesAreErrors) {
  auto shaped = [&](const std::string& shape) {
    return open_error(write_raw("shape.safetensors",
                                R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})",
                                std::string(4, '\0')));
  };
  EXPECT_TRUE(contains(shaped("[-1]"), "tensor \"w\": a shape value -1 is negative"));
  EXPECT_TRUE(contains(shaped("[1.5]"), "tensor \"w\": a shape holds 1.5, not a non-negative integer"));
  EXPECT_TRUE(contains(shaped("[\"1\"]"), "not a non-negative integer"));
  EXPECT_TRUE(contains(shaped("[4294967296,4294967296]"),
                       "tensor \"w\": the shape [4294967296,4294967296] has more "
                       "than 2^63 elements"));
  EXPECT_TRUE(contains(shaped("[1152921504606846976,4]"), "takes more than 2^63 bytes"));
  EXPECT_TRUE(contains(shaped("[[1]]"), "nests deeper than 3 levels at \"w\".\"shape\""));
}

TEST_F(Safetensors, MalformedHeadersAreErrors) {
  EXPECT_TRUE(contains(open_error(write_raw("j.safetensors", "{\"w\":", "")),
                       "j.safetensors (safetensors header): "
                       "not valid JSON"));
  EXPECT_TRUE(contains(open_error(write_raw("j.safetensors", "[1]", "")), "a JSON array, not an object of tensors"));
  EXPECT_TRUE(contains(open_error(write_raw("j.safetensors", R"({"w":{"shape":[],"data_offsets":[0,0]}})", "")),
                       "tensor \"w\": the header entry has no \"dtype\""));
  EXPECT_TRUE(
      contains(open_error(write_raw("j.safetensors", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[1]}})", "")),
               "data_offsets holds 1 values, not [begin, end]"));
  EXPECT_TRUE(contains(open_error(write_raw("j.safetensors", R"({"__metadata__":{"k":1}})", "")),
                       "__metadata__ \"k\" is a JSON number, not a string"));
}

TEST_F(Safetensors, BoolBytesOtherThanZeroOrOneAreAnError) {
  const auto path = write_raw("b.safetensors", R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                              std::string("\x01\x00\x07", 3));
  EXPECT_TRUE(contains(error_of([&] { SafetensorsFile::open(path)->tensor("m"); }),
                       "tensor \"m\": BOOL byte 2 is 7, not 0 or 1"));
}

TEST_F(Safetensors, MissingTensorIsAnErrorNamingTheFile) {
  safetensors_save(dir_ / "m.safetensors", {{"w", at::ones({1})}});
  EXPECT_TRUE(contains(error_of([&] { SafetensorsFile::open(dir_ / "m.safetensors")->tensor("v"); }),
                       "m.safetensors: no tensor \"v\" in this file"));
}

// ---------------------------------------------------------------- checkpoints

class SafetensorsSharded : public Safetensors {
 protected:
  void write_shards(const std::string& index) const {
    safetensors_save(dir_ / "model-00001-of-00002.safetensors", {{"a", at::ones({2})}, {"b", at::zeros({3})}});
    safetensors_save(dir_ / "model-00002-of-00002.safetensors", {{"c", at::full({2}, 7.0)}});
    std::ofstream(dir_ / "model.safetensors.index.json") << index;
  }
  std::string checkpoint_error() const {
    return error_of([&] { SafetensorsCheckpoint::open(dir_); });
  }
  static constexpr const char* kIndex =
      R"({"metadata":{"total_size":28},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
      R"("b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})";
};

TEST_F(SafetensorsSharded, IndexMapsNamesToTheirShards) {
  write_shards(kIndex);
  const auto checkpoint = SafetensorsCheckpoint::open(dir_);
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(at::equal(checkpoint.tensor("c"), at::full({2}, 7.0)));
  EXPECT_EQ(checkpoint.entry("b").shape, std::vector<std::int64_t>{3});
  EXPECT_TRUE(contains(checkpoint.describe(), "model.safetensors.index.json"));
}

TEST_F(SafetensorsSharded, SingleFileIsPreferredAsTransformersDoes) {
  write_shards(kIndex);
  safetensors_save(dir_ / "model.safetensors", {{"only", at::ones({1})}});
  EXPECT_EQ(SafetensorsCheckpoint::open(dir_).names(), std::vector<std::string>{"only"});
}

TEST_F(SafetensorsSharded, MissingShardFileIsAnError) {
  write_shards(kIndex);
  fs::remove(dir_ / "model-00002-of-00002.safetensors");
  EXPECT_TRUE(contains(checkpoint_error(), "model.safetensors.index.json: shard "));
  EXPECT_TRUE(contains(checkpoint_error(), "model-00002-of-00002.safetensors (holding \"c\") is missing"));
}

TEST_F(SafetensorsSharded, NameListedButAbsentFromItsShardIsAnError) {
  write_shards(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
               R"("c":"model-00002-of-00002.safetensors","d":"model-00002-of-00002.safetensors"}})");
  EXPECT_TRUE(contains(checkpoint_error(), "tensor \"d\" is listed in the index but missing from"));
}

TEST_F(SafetensorsSharded, NameInTwoShardsIsAnError) {
  write_shards(kIndex);
  safetensors_save(dir_ / "model-00002-of-00002.safetensors", {{"a", at::ones({2})}, {"c", at::ones({2})}});
  EXPECT_TRUE(contains(checkpoint_error(), "tensor \"a\" is in both"));
}

TEST_F(SafetensorsSharded, DuplicateOrEscapingIndexEntriesAreErrors) {
  write_shards(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","a":"model-00002-of-00002.safetensors"}})");
  EXPECT_TRUE(contains(checkpoint_error(), "\"weight_map\".\"a\" appears twice"));
  write_shards(R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})");
  EXPECT_TRUE(contains(checkpoint_error(), "not a file name in the index's folder"));
}

TEST_F(SafetensorsSharded, FolderWithoutWeightsIsAnError) {
  EXPECT_TRUE(contains(checkpoint_error(), "neither model.safetensors nor model.safetensors.index.json"));
}

}  // namespace
}  // namespace dsee
