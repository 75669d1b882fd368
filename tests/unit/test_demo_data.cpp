// The demo's data stage: a loadable pretrained model, a teacher that
// disagrees with it on part of the data, balanced labels, and a folder that
// is reused only when made with the same options.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/model/pretrained_model.h"
#include "recipes/demo_data.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

DemoOptions small_options() {
  DemoOptions o;
  o.train_size = 256;
  o.dev_size = 128;
  o.omega.grebsmo = grebsmo_default_options(GrebsmoVariant::tolerance);
  o.omega.grebsmo.max_rank = o.spec.weight_rank;
  return o;
}

TEST(DemoData, TeacherLabelsDifferFromThePretrainedModelAndAreBalanced) {
  const fs::path dir = fs::temp_directory_path() / ("dsee-demo-" + std::to_string(getpid()));
  const auto options = small_options();
  const auto data = demo_prepare(options, dir);
  EXPECT_EQ(data.train_ids.sizes(), (std::vector<std::int64_t>{256, options.spec.seq_len}));
  EXPECT_EQ(data.dev_labels.size(0), 128);
  std::printf("positive fraction %.3f, pretrained dev accuracy %.3f\n", data.positive_fraction,
              data.pretrained_dev_accuracy);
  EXPECT_GT(data.positive_fraction, 0.25);
  EXPECT_LT(data.positive_fraction, 0.75);
  // The untuned model is better than chance but leaves room to learn.
  EXPECT_GT(data.pretrained_dev_accuracy, 0.5);
  EXPECT_LT(data.pretrained_dev_accuracy, 0.9);
  const auto model = model_load(data.pretrained_dir);
  EXPECT_EQ(model->config().hidden_size, options.spec.hidden_size);

  // Same options: read back, identical. Other options: made anew.
  const auto again = demo_prepare(options, dir);
  EXPECT_TRUE(at::equal(again.train_labels, data.train_labels));
  EXPECT_TRUE(at::equal(again.dev_ids, data.dev_ids));
  auto other = options;
  other.teacher_sparse_scale = 0.0;
  other.teacher_lowrank_std = 1e-9;
  const auto changed = demo_prepare(other, dir);
  EXPECT_GT(changed.pretrained_dev_accuracy, 0.97);  // no planted update: the teacher is the model
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

TEST(DemoData, TeacherMarginKeepsTheSequencesFarthestFromTheBoundary) {
  // With margin m, 1/(1 − m) times the sequences are drawn (the first ones
  // are those drawn without it) and the ones nearest the boundary dropped.
  const fs::path dir = fs::temp_directory_path() / ("dsee-demo-margin-" + std::to_string(getpid()));
  auto options = small_options();
  options.teacher_margin = 0.5;
  const auto kept = demo_prepare(options, dir / "kept");
  auto all = options;
  all.teacher_margin = 0.0;
  all.train_size = 512;
  all.dev_size = 256;
  const auto drawn = demo_prepare(all, dir / "all");
  EXPECT_EQ(kept.train_ids.size(0), 256);
  EXPECT_EQ(kept.dev_ids.size(0), 128);
  EXPECT_GT(kept.positive_fraction, 0.4);
  EXPECT_LT(kept.positive_fraction, 0.6);
  // Every kept training sequence is one of the drawn ones, in drawn order, with its label.
  const auto eq = (kept.train_ids.unsqueeze(1) == drawn.train_ids.unsqueeze(0)).all(2);  // [kept, drawn]
  const auto [found, where] = eq.max(1);
  EXPECT_TRUE(found.all().item<bool>());
  EXPECT_TRUE(at::equal(where, std::get<0>(where.sort())));
  EXPECT_TRUE(at::equal(kept.train_labels, drawn.train_labels.index_select(0, where)));
  // Half dropped: the untuned model agrees with the teacher more often far from its boundary.
  EXPECT_GT(kept.pretrained_dev_accuracy, drawn.pretrained_dev_accuracy);
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

}  // namespace
}  // namespace dsee
