// dsee omega, the command: runs the real dsee binary on tiny model folders
// saved from C++ and checks the Ω file it writes (omega_read) against
// omega_select run here on the same adapted matrices, plus its user errors
// and the --stability table. Parity with the Python reference is in
// tests/parity/test_omega_models.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/sparsity/omega.h"
#include "core/sparsity/omega_file.h"
#include "core/tuning/adapted.h"
#include "error_of.h"
#include "run_dsee.h"
#include "tiny_models.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

using dsee_test::remove_tree;

class OmegaCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);
    dir_ = fmt::format("/tmp/dsee-omega-command-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
  }
  void TearDown() override { remove_tree(dir_); }

  // Saves a tiny model of `json`'s family into dir_/model; returns it (as saved).
  std::unique_ptr<PretrainedModel> save_model(const nlohmann::json& json) {
    auto model = tiny_model(json, 11);
    model_save(*model, dir_ / "model");
    return model;
  }
  dsee_test::SplitResult run(const std::string& arguments) {
    return dsee_test::run_dsee_split(arguments, dir_ / "stderr.txt");
  }
  std::string model_arg() const { return "--model " + (dir_ / "model").string(); }
  fs::path dir_;
};

// omega_select on the model's own adapted matrices, in-process.
std::vector<OmegaEntry> expected_omega(PretrainedModel& model, const std::vector<std::string>& patterns,
                                       const OmegaOptions& options) {
  std::vector<NamedMatrix> matrices;
  for (const AdaptedMatrix& matrix : adapted_matrices(model, patterns))
    matrices.push_back({matrix.name, matrix.weight().contiguous()});
  return omega_select(matrices, options);
}

void expect_same(const std::vector<OmegaEntry>& got, const std::vector<OmegaEntry>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].name, want[i].name);
    EXPECT_EQ(got[i].rows, want[i].rows);
    EXPECT_EQ(got[i].cols, want[i].cols);
    EXPECT_TRUE(at::equal(got[i].indices, want[i].indices))
        << got[i].name << ": " << got[i].indices << " vs " << want[i].indices;
  }
}

TEST_F(OmegaCommand, BertGrebsmoFileEqualsOmegaSelectInOrderWithInfo) {
  auto model = save_model(bert_json());
  const fs::path out = dir_ / "omega.h5";
  const auto r = run(fmt::format("omega {} --out {} --c 5 --seed 3 --outer 2 --threads 1", model_arg(), out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  OmegaFileInfo info;
  const auto got = omega_read(out, &info);
  OmegaOptions options;
  options.c = 5;
  options.seed = 3;
  options.grebsmo.outer = 2;
  const auto want = expected_omega(*model, default_target_modules(ModelFamily::bert), options);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].name, "encoder.layer.0.attention.self.query.weight");
  EXPECT_EQ(got[3].name, "encoder.layer.1.attention.self.value.weight");
  expect_same(got, want);
  for (const auto& entry : want) EXPECT_GT(entry.sparse_nonzeros, 5) << "S should not be empty after 2 outer steps";
  EXPECT_EQ(info.method, "grebsmo");
  EXPECT_EQ(info.variant, "reference");
  EXPECT_EQ(info.seed, 3u);
  EXPECT_EQ(info.c, 5);
  // Progress: one line per matrix with its S non-zeros.
  EXPECT_TRUE(contains(r.output, "[4/4] encoder.layer.1.attention.self.value.weight (24×24)")) << r.output;
  EXPECT_TRUE(contains(r.output, fmt::format("S non-zeros {}", want[0].sparse_nonzeros)));
}

TEST_F(OmegaCommand, Gpt2TargetModulesSelectThirdsAndMethodsMatch) {
  auto model = save_model(gpt2_json());
  const fs::path out = dir_ / "omega.h5";
  for (const std::string method : {"magnitude", "random"}) {
    const auto r = run(fmt::format("omega {} --out {} --c 7 --seed 5 --method {} --target-modules c_attn:v,c_attn:k",
                                   model_arg(), out.string(), method));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    OmegaOptions options;
    options.c = 7;
    options.seed = 5;
    options.method = omega_method_from_name(method);
    const auto want = expected_omega(*model, {"c_attn:v", "c_attn:k"}, options);
    const auto got = omega_read(out);
    ASSERT_EQ(got.size(), 6u) << method;
    EXPECT_EQ(got[0].name, "h.0.attn.c_attn.weight:k");  // model order: k before v
    EXPECT_EQ(got[1].name, "h.0.attn.c_attn.weight:v");
    expect_same(got, want);
  }
}

TEST_F(OmegaCommand, WorkersDoNotChangeTheFileAndToleranceVariantIsRecorded) {
  auto model = save_model(roberta_json());
  const fs::path one = dir_ / "one.h5", two = dir_ / "two.h5";
  const std::string common = model_arg() + " --variant tolerance --max-rank 4 --seed 9";
  ASSERT_EQ(run(fmt::format("omega {} --out {} --workers 1", common, one.string())).exit_code, 0);
  ASSERT_EQ(run(fmt::format("omega {} --out {} --workers 2", common, two.string())).exit_code, 0);
  OmegaFileInfo info;
  const auto a = omega_read(one, &info);
  expect_same(omega_read(two), a);
  EXPECT_EQ(info.variant, "tolerance");
  OmegaOptions options;
  options.seed = 9;
  options.grebsmo = grebsmo_default_options(GrebsmoVariant::tolerance);
  options.grebsmo.max_rank = 4;
  expect_same(a, expected_omega(*model, default_target_modules(ModelFamily::roberta), options));
}

TEST_F(OmegaCommand, StabilityPrintsATableWithATotal) {
  auto model = save_model(bert_json());
  const fs::path out = dir_ / "omega.h5";
  const auto r = run(fmt::format("omega {} --out {} --method magnitude --c 4 --stability", model_arg(), out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  OmegaOptions options;
  options.method = OmegaMethod::magnitude;
  options.c = 4;
  std::vector<NamedMatrix> matrices;
  for (const AdaptedMatrix& matrix : adapted_matrices(*model, default_target_modules(ModelFamily::bert)))
    matrices.push_back({matrix.name, matrix.weight().contiguous()});
  const auto kept = omega_stability(matrices, options);
  std::int64_t total = 0;
  for (const auto& item : kept) {
    EXPECT_TRUE(contains(r.stdout_text, fmt::format("{}  {:>6}  {:>6}\n", item.name, 4, item.kept)));
    total += item.kept;
  }
  EXPECT_TRUE(contains(r.stdout_text, fmt::format("total")));
  EXPECT_TRUE(contains(r.stdout_text, fmt::format("{:>6}  {:>6}  (", 16, total)));
}

TEST_F(OmegaCommand, UserErrorsExitOneWithAClearMessage) {
  save_model(bert_json());
  const std::string out = "--out " + (dir_ / "omega.h5").string();
  auto r = run(fmt::format("omega --model {} {}", (dir_ / "missing").string(), out));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "missing: no such folder"));
  r = run(fmt::format("omega {} {} --method fast", model_arg(), out));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "unknown Ω method 'fast': use 'grebsmo', 'magnitude', 'random' or 'gradient'"));
  // gradient needs the task's data: only `dsee run` computes it.
  r = run(fmt::format("omega {} {} --method gradient", model_arg(), out));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "Ω method 'gradient' needs the task's training data")) << r.output;
  r = run(fmt::format("omega {} {} --variant quick", model_arg(), out));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "quick"));
  r = run(fmt::format("omega {} {} --target-modules nothing_like_this", model_arg(), out));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "nothing_like_this"));
  r = run(fmt::format("omega {} --out {}", model_arg(), (dir_ / "no" / "omega.h5").string()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "does not exist"));
  r = run(fmt::format("omega {} {} --c 100000", model_arg(), out));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "encoder.layer.0.attention.self.query.weight"));
  EXPECT_EQ(run(fmt::format("omega {}", model_arg())).exit_code, 2) << "--out is required";
  struct stat info {};
  EXPECT_NE(::stat((dir_ / "omega.h5").c_str(), &info), 0) << "a failed run must not leave an Ω file";
}

}  // namespace
}  // namespace dsee
