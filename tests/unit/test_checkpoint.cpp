// Checkpoints (core/train/checkpoint.h): bit-exact round trip of every part,
// keep-last-K, the `latest` pointer, fallback past a truncated or corrupted
// newest file, detection by the sidecar SHA-256 and by Fletcher-32, refusal
// of another recipe with the keys listed, atomicity, and the hashes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/config.h"
#include "core/io/safetensors.h"
#include "core/train/checkpoint.h"
#include "error_of.h"
#include "test_files.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

using dsee_test::flip_byte;
using dsee_test::folder_entries;
using dsee_test::remove_tree;

const char* kConfig = "[model]\npath = \"/models/bert\"\n\n[train]\nlr = 0.0005\nepochs = 3\nbatch_size = 32\n";

// A state with every part filled, seeded by `step`.
CheckpointState sample_state(std::int64_t step) {
  at::Generator generator = at::detail::createCPUGenerator(static_cast<std::uint64_t>(step) + 1);
  CheckpointState state;
  state.step = step;
  state.epoch = step / 10;
  state.sample_index = step * 32 + 7;
  state.trainable = {{"encoder.layer.0.attention.self.query.lora_A", at::randn({4, 24}, generator)},
                     {"encoder.layer.0.attention.self.query.sparse_values", at::randn({16}, generator)},
                     {"classifier.weight", at::randn({2, 24}, generator).to(at::kBFloat16)},
                     {"classifier.bias", at::randn({2}, generator).to(at::kDouble)},
                     {"scale", at::scalar_tensor(0.25)},
                     {"empty", at::empty({0, 3})},
                     {"flags", at::rand({5}, generator) > 0.5},
                     {"half", at::randn({3}, generator).to(at::kHalf)},
                     {"counts", at::randint(-1000, 1000, {3, 2}, generator, at::kLong)}};
  state.best = {{"encoder.layer.0.attention.self.query.lora_A", at::randn({4, 24}, generator)},
                {"classifier.weight", at::randn({2, 24}, generator).to(at::kBFloat16)}};
  state.optimizer = {{"exp_avg.classifier.weight", at::randn({2, 24}, generator)},
                     {"exp_avg_sq.classifier.weight", at::rand({2, 24}, generator)}};
  state.optimizer_step = step;
  state.scheduler = {{"last_epoch", static_cast<double>(step)}, {"base_lr", 5e-4}, {"warmup_steps", 100}};
  checkpoint_capture_rng(state);
  state.omega = {{"bert.encoder.layer.0.attention.self.query.weight", 24, 24, at::tensor({3, 50, 575}, at::kLong), -1},
                 {"h.0.attn.c_attn.weight:q", 8, 4, at::tensor({0, 31}, at::kLong), -1}};
  state.omega_info = {"grebsmo", "reference", 42, 3};
  state.plan.masks.push_back({"encoder.layer.0.attention.self.query", at::rand({24, 24}, generator) > 0.3});
  state.plan.heads[1] = {0, 2};
  state.config_text = kConfig;
  state.model_path = "/models/bert";
  state.model_weights_hash = 0x0123456789abcdefULL;
  return state;
}

// Same bytes, same dtype, same shape.
void expect_bit_exact(const NamedTensors& got, const NamedTensors& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(want[i].name);
    EXPECT_EQ(got[i].name, want[i].name);
    EXPECT_EQ(got[i].tensor.scalar_type(), want[i].tensor.scalar_type());
    EXPECT_EQ(got[i].tensor.sizes(), want[i].tensor.sizes());
    const at::Tensor a = got[i].tensor.contiguous(), b = want[i].tensor.contiguous();
    ASSERT_EQ(a.nbytes(), b.nbytes());
    EXPECT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()), 0);
  }
}

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fmt::format("/tmp/dsee-checkpoint-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    remove_tree(dir_);
    // Warnings into a string, to check what load_latest reports.
    previous_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("checkpoint-test", sink));
  }
  void TearDown() override {
    spdlog::set_default_logger(previous_);
    remove_tree(dir_);
  }
  fs::path ckpt() const { return dir_ / "ckpt"; }
  fs::path dir_;
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(Checkpoint, RoundTripsEveryPartBitExactly) {
  const CheckpointState state = sample_state(120);
  const fs::path path = checkpoint_write(ckpt(), state, 3);
  EXPECT_EQ(path, ckpt() / "step-120.h5");
  const CheckpointState read = checkpoint_read(path);

  EXPECT_EQ(read.step, 120);
  EXPECT_EQ(read.epoch, 12);
  EXPECT_EQ(read.sample_index, 120 * 32 + 7);
  expect_bit_exact(read.trainable, state.trainable);
  expect_bit_exact(read.best, state.best);
  expect_bit_exact(read.optimizer, state.optimizer);
  EXPECT_EQ(read.optimizer_step, 120);
  EXPECT_EQ(read.scheduler, state.scheduler);
  ASSERT_TRUE(read.rng_cpu.defined());
  EXPECT_TRUE(at::equal(read.rng_cpu, state.rng_cpu));
  EXPECT_EQ(read.rng_cuda.size(), state.rng_cuda.size());
  ASSERT_EQ(read.omega.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(read.omega[i].name, state.omega[i].name);
    EXPECT_EQ(read.omega[i].rows, state.omega[i].rows);
    EXPECT_EQ(read.omega[i].cols, state.omega[i].cols);
    EXPECT_TRUE(at::equal(read.omega[i].indices, state.omega[i].indices));
  }
  EXPECT_EQ(read.omega_info.method, "grebsmo");
  EXPECT_EQ(read.omega_info.seed, 42u);
  EXPECT_EQ(read.omega_info.c, 3);
  ASSERT_EQ(read.plan.masks.size(), 1u);
  EXPECT_TRUE(at::equal(read.plan.masks[0].mask, state.plan.masks[0].mask));
  EXPECT_EQ(read.plan.heads, state.plan.heads);
  EXPECT_EQ(read.config_text, kConfig);
  EXPECT_EQ(read.config_hash, config_hash(kConfig));
  EXPECT_EQ(read.model_path, "/models/bert");
  EXPECT_EQ(read.model_weights_hash, 0x0123456789abcdefULL);
  EXPECT_EQ(read.format_version, 1);
  EXPECT_FALSE(read.versions.at("torch").empty());
  EXPECT_FALSE(read.versions.at("hdf5").empty());
}

// Tensors over the 4 MiB chunk size are split into several Fletcher-32 chunks.
TEST_F(Checkpoint, LargeTensorsSpanSeveralChunks) {
  CheckpointState state = sample_state(2);
  at::Generator generator = at::detail::createCPUGenerator(3);
  state.trainable = {{"big", at::randn({1500, 1000}, generator)}, {"long", at::randn({1300000}, generator)}};
  const fs::path path = checkpoint_write(ckpt(), state, 1);
  expect_bit_exact(checkpoint_read(path).trainable, state.trainable);
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t dataset = H5Dopen2(file, "trainable/big", H5P_DEFAULT);
  const hid_t space = H5Dget_space(dataset);
  hsize_t chunks = 0;
  H5Dget_num_chunks(dataset, space, &chunks);
  H5Sclose(space);
  H5Dclose(dataset);
  H5Fclose(file);
  EXPECT_EQ(chunks, 2u) << "6 MB in chunks of at most 4 MiB";
}

TEST_F(Checkpoint, RestoredRngContinuesTheSameStream) {
  CheckpointState state = sample_state(1);
  at::manual_seed(7);
  checkpoint_capture_rng(state);
  const at::Tensor expected = at::randn({8});
  checkpoint_write(ckpt(), state, 1);
  at::manual_seed(99);
  checkpoint_restore_rng(checkpoint_read(ckpt() / "step-1.h5"));
  EXPECT_TRUE(at::equal(at::randn({8}), expected));
}

TEST_F(Checkpoint, KeepsTheLastKAndPointsLatestAtTheNewest) {
  for (std::int64_t step : {10, 20, 30, 40}) checkpoint_write(ckpt(), sample_state(step), 2);
  EXPECT_EQ(folder_entries(ckpt()),
            (std::vector<std::string>{"latest", "step-30.h5", "step-30.h5.sum", "step-40.h5", "step-40.h5.sum"}));
  EXPECT_EQ(dsee_test::file_text(ckpt() / "latest"), "step-40.h5\n");
  const auto loaded = checkpoint_load_latest(ckpt());
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->path, ckpt() / "step-40.h5");
  EXPECT_EQ(loaded->state.step, 40);
  EXPECT_EQ(log_.str(), "") << "no warning for a sound checkpoint";
  EXPECT_FALSE(checkpoint_load_latest(dir_ / "nothing-here").has_value());
}

TEST_F(Checkpoint, SidecarIsSha256sumFormat) {
  const fs::path path = checkpoint_write(ckpt(), sample_state(5), 1);
  const std::string sidecar = dsee_test::file_text(ckpt() / "step-5.h5.sum");
  EXPECT_EQ(sidecar, sha256_file(path) + "  step-5.h5\n");
}

TEST_F(Checkpoint, TruncatedNewestFallsBackToThePreviousWithAWarning) {
  checkpoint_write(ckpt(), sample_state(10), 3);
  const fs::path newest = checkpoint_write(ckpt(), sample_state(20), 3);
  struct stat status {};
  ASSERT_EQ(::stat(newest.c_str(), &status), 0);
  ASSERT_EQ(::truncate(newest.c_str(), status.st_size / 2), 0);

  EXPECT_TRUE(contains(error_of([&] { checkpoint_read(newest); }), "does not match"));
  const auto loaded = checkpoint_load_latest(ckpt());
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.step, 10);
  EXPECT_TRUE(contains(log_.str(), fmt::format("cannot use '{}'", newest.string())));
  EXPECT_TRUE(contains(log_.str(), "truncated or corrupted"));
  EXPECT_TRUE(contains(log_.str(), "resuming from the previous checkpoint"));
}

// The file offset of the first chunk of `dataset`.
haddr_t data_offset(const fs::path& file_path, const char* dataset_name) {
  const hid_t file = H5Fopen(file_path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t dataset = H5Dopen2(file, dataset_name, H5P_DEFAULT);
  const hsize_t origin[2] = {0, 0};
  unsigned filter_mask = 0;
  haddr_t offset = HADDR_UNDEF;
  hsize_t size = 0;
  H5Dget_chunk_info_by_coord(dataset, origin, &filter_mask, &offset, &size);
  H5Dclose(dataset);
  H5Fclose(file);
  return offset;
}

TEST_F(Checkpoint, FlippedByteIsDetectedBySidecarAndByFletcher32) {
  checkpoint_write(ckpt(), sample_state(10), 3);
  const fs::path newest = checkpoint_write(ckpt(), sample_state(20), 3);
  const haddr_t offset = data_offset(newest, "trainable/encoder.layer.0.attention.self.query.lora_A");
  ASSERT_NE(offset, HADDR_UNDEF);
  flip_byte(newest, offset + 13);

  EXPECT_TRUE(
      contains(error_of([&] { checkpoint_read(newest); }), fmt::format("checkpoint '{}': SHA-256", newest.string())));
  // Without the sidecar check, Fletcher-32 names the dataset.
  EXPECT_TRUE(contains(error_of([&] { checkpoint_read(newest, false); }),
                       fmt::format("checkpoint '{}', dataset 'trainable/encoder.layer.0.attention.self.query.lora_A': "
                                   "cannot read the data (corrupted: Fletcher-32",
                                   newest.string())));
  const auto loaded = checkpoint_load_latest(ckpt());
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.step, 10);
  EXPECT_TRUE(contains(log_.str(), "SHA-256"));
}

TEST_F(Checkpoint, MissingSidecarOrLatestFallsBack) {
  checkpoint_write(ckpt(), sample_state(10), 3);
  checkpoint_write(ckpt(), sample_state(20), 3);
  ::unlink((ckpt() / "step-20.h5.sum").c_str());  // as if the write stopped before the sidecar
  auto loaded = checkpoint_load_latest(ckpt());
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.step, 10);
  EXPECT_TRUE(contains(log_.str(), "its checksum file"));

  ::unlink((ckpt() / "latest").c_str());
  loaded = checkpoint_load_latest(ckpt());
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.step, 10) << "newest first without `latest`";
}

TEST_F(Checkpoint, NoUsableCheckpointListsEveryFailure) {
  const fs::path only = checkpoint_write(ckpt(), sample_state(10), 3);
  ASSERT_EQ(::truncate(only.c_str(), 100), 0);
  const std::string message = error_of([&] { checkpoint_load_latest(ckpt()); });
  EXPECT_TRUE(contains(message, "none is usable"));
  EXPECT_TRUE(contains(message, only.string()));
}

TEST_F(Checkpoint, NoPartialFileUnderTheFinalName) {
  CheckpointState bad = sample_state(30);
  bad.trainable.push_back({"a/b", at::ones({2})});  // refused half-way through the write
  checkpoint_write(ckpt(), sample_state(10), 3);
  EXPECT_TRUE(contains(error_of([&] { checkpoint_write(ckpt(), bad, 3); }), "must be non-empty and contain no '/'"));
  EXPECT_EQ(folder_entries(ckpt()), (std::vector<std::string>{"latest", "step-10.h5", "step-10.h5.sum"}))
      << "no step-30.h5, no temporary";
  EXPECT_EQ(dsee_test::file_text(ckpt() / "latest"), "step-10.h5\n");
  CheckpointState unstorable = sample_state(40);
  unstorable.trainable.push_back({"complex", at::ones({2}, at::kComplexFloat)});
  EXPECT_TRUE(contains(error_of([&] { checkpoint_write(ckpt(), unstorable, 3); }), "cannot be stored"));
  EXPECT_EQ(folder_entries(ckpt()).size(), 3u);
}

TEST_F(Checkpoint, RefusesAnotherRecipeListingTheKeys) {
  const fs::path path = checkpoint_write(ckpt(), sample_state(10), 1);
  const CheckpointState state = checkpoint_read(path);
  const std::string other =
      "[model]\npath = \"/models/bert\"\n\n[train]\nlr = 0.001\nepochs = 3\nbatch_size = 16\nwarmup = 10\n";
  const std::string message =
      error_of([&] { checkpoint_check_compatible(path, state, other, state.model_weights_hash); });
  EXPECT_TRUE(contains(message, fmt::format("checkpoint '{}' was written by a different recipe", path.string())));
  EXPECT_TRUE(contains(message, "train.batch_size: 32 → 16"));
  EXPECT_TRUE(contains(message, "train.lr: 0.0005 → 0.001"));
  EXPECT_TRUE(contains(message, "train.warmup: <absent> → 10"));
  EXPECT_FALSE(contains(message, "train.epochs"));
  EXPECT_EQ(config_differences(kConfig, other).size(), 3u);

  EXPECT_EQ(error_of([&] { checkpoint_check_compatible(path, state, kConfig, state.model_weights_hash); }),
            "<no error>");
  EXPECT_EQ(error_of([&] {
              checkpoint_check_compatible(path, state, other, state.model_weights_hash,
                                          {"train.lr", "train.batch_size", "train.warmup"});
            }),
            "<no error>");
  EXPECT_TRUE(contains(error_of([&] { checkpoint_check_compatible(path, state, kConfig, 1); }),
                       "trained from other pretrained weights"));
}

// Known-answer vectors (FIPS 180-2 examples) and hash64's defining properties.
TEST(CheckpointHashes, Sha256KnownAnswers) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(CheckpointHashes, Hash64IsStreamingConsistentAndLengthSensitive) {
  const std::string text = "hello, checkpoint";
  EXPECT_NE(hash64(text.data(), text.size()), hash64(text.data(), text.size() - 1));
  const std::string zeros(9, '\0');
  EXPECT_NE(hash64(zeros.data(), 8), hash64(zeros.data(), 9)) << "zero padding is not the same as zero bytes";
  EXPECT_EQ(config_hash(text), hash64(text.data(), text.size()));
}

TEST(CheckpointHashes, ModelWeightsHashFollowsTheBytesNotTheFileLayout) {
  const fs::path dir = fmt::format("/tmp/dsee-weights-hash-{}", ::getpid());
  ::mkdir(dir.c_str(), 0700);
  const at::Tensor a = at::arange(12, at::kFloat).reshape({3, 4}), b = at::ones({5}, at::kBFloat16);
  safetensors_save(dir / "model.safetensors", {{"a", a}, {"b", b}});
  const std::uint64_t first = model_weights_hash(dir);
  safetensors_save(dir / "model.safetensors", {{"b", b}, {"a", a}}, {{"format", "pt"}});
  EXPECT_EQ(model_weights_hash(dir), first) << "order and metadata do not matter";
  at::Tensor changed = a.clone();
  changed[2][3] = std::nextafter(11.0f, 12.0f);
  safetensors_save(dir / "model.safetensors", {{"a", changed}, {"b", b}});
  EXPECT_NE(model_weights_hash(dir), first);
  safetensors_save(dir / "model.safetensors", {{"a", a.reshape({4, 3})}, {"b", b}});
  EXPECT_NE(model_weights_hash(dir), first) << "shape matters";
  ::unlink((dir / "model.safetensors").c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace dsee
