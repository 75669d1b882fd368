// The pipeline's task data: see task_data.h.
//
// Note [One shape for every task]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The stages (train, prune, retune, eval) take a TaskData and never ask which
// task it is: a split is a map of named tensors whose rows are examples, the
// batch source slices every tensor of the map with the same indices, and the
// model input takes whichever of attention_mask/token_type_ids the split has.
// So the demo (ids and labels only, no padding) and GLUE (padded pairs with
// masks and token types) go through the same code, and a new task only has
// to produce the map.
//
// Note [Data-to-text in the pipeline]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// E2E, WebNLG and DART follow the LoRA NLG examples (docs/nlg-data.md): the
// training sequence is BPE(context) + eos + BPE(" " + completion) + eos,
// labels only on the completion and its eos, so the same map of tensors
// (input_ids, attention_mask, labels [n, seq]) trains through the causal LM
// mode of the trainer (token-weighted loss, train.label_smoothing). Rows are
// right-padded to the split's longest and every batch is cut back to its own
// longest row (dynamic padding; the model never sees the split's width).
// With train.length_buckets the global batches are nlg_length_batches of the
// rows' lengths, so a batch's rows are of similar length and the cut leaves
// little padding; those batches are a function of (seed, epoch) alone, so the
// ranks split each one as they split the sampler's (shard_range), and a
// resumed epoch recomputes them and skips the batches whose samples the
// checkpoint's sample_index counts.
// Evaluation cannot be a forward pass: the dev contexts are decoded with beam
// search (eval.beam_size, eval.length_penalty, eval.no_repeat_ngram_size,
// eval.max_new_tokens, stop at eos or "\n\n") in batches of eval.batch_size
// contexts and the hypotheses scored against each context's references. The
// batches are the same on any number of ranks (each rank decodes whole
// batches of its shard and the ids are gathered), so the hypotheses equal the
// 1-rank ones. The test split (eval.splits = ["dev", "test"]) is decoded the
// same way, by the eval stage only: it must not steer model selection.
#include "recipes/task_data.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <numeric>

#include "base/error.h"
#include "base/files.h"
#include "core/io/safetensors.h"
#include "core/train/losses.h"
#include "core/train/metrics.h"
#include "core/train/nlg_scores.h"
#include "data/glue.h"
#include "data/nlg_encoding.h"
#include "data/nlg_text.h"
#include "data/tokenizer.h"
#include "distributed/coordinator.h"

namespace dsee {
namespace fs = std::filesystem;

namespace {

TaskSplit split_of(std::string name, const GlueTensors& t) {
  TaskSplit split;
  split.name = std::move(name);
  split.tensors["input_ids"] = t.input_ids;
  split.tensors["attention_mask"] = t.attention_mask;
  if (t.token_type_ids.defined()) split.tensors["token_type_ids"] = t.token_type_ids;
  split.tensors["labels"] = t.labels;
  return split;
}

TaskData glue_prepare(const Recipe& recipe) {
  const auto& spec = glue_file_spec(recipe.task.name);
  const fs::path model_path = recipe.model.path;
  const fs::path data_dir = recipe.task.data_dir;
  DSEE_CHECK(!model_path.empty(),
             "task.name = {} needs model.path: a Hugging Face model folder (config.json, model.safetensors and the "
             "tokenizer files, e.g. bert-base-uncased)",
             spec.name);
  DSEE_CHECK(!data_dir.empty(), "task.name = {} needs task.data_dir: the GLUE folder of the task (train.tsv, {})",
             spec.name, fmt::join(spec.dev_files, ", "));
  const auto max_seq_length = recipe.task.max_seq_length;
  const auto tokenizer = Tokenizer::load(model_path);

  TaskData data;
  data.task = spec.name;
  data.pretrained_dir = model_path;
  data.num_labels = spec.num_labels;
  data.regression = spec.num_labels == 1;
  const auto read = [&](const std::string& file) {
    return glue_encode(tokenizer, glue_read(spec.name, data_dir / file), max_seq_length);
  };
  data.train = split_of("train", read("train.tsv"));
  for (const auto& file : spec.dev_files) data.dev.push_back(split_of(fs::path(file).stem().string(), read(file)));
  spdlog::info("{}: {} training and {} dev examples from {} (tokenizer: {}; longest {} tokens)", spec.name,
               data.train.size(), data.dev.front().size(), data_dir.string(), tokenizer.describe(), data.seq_len());
  return data;
}

TaskData nlg_prepare(const Recipe& recipe) {
  const std::string& task = recipe.task.name;
  const bool e2e = task == "e2e";
  const std::string train_file = !recipe.task.train_file.empty() ? recipe.task.train_file
                                 : e2e                           ? "train.txt"
                                                                 : "train.json";
  const std::string dev_file = !recipe.task.dev_file.empty() ? recipe.task.dev_file : e2e ? "valid.txt" : "dev.json";
  DSEE_CHECK(!recipe.model.path.empty(),
             "task.name = {} needs model.path: a GPT-2 model folder (config.json, model.safetensors, vocab.json and "
             "merges.txt or tokenizer.json), e.g. gpt2-medium",
             task);
  DSEE_CHECK(!recipe.task.data_dir.empty(),
             "task.name = {} needs task.data_dir: the folder of the dataset's files ({} and {}; task.train_file and "
             "task.dev_file name others)",
             task, train_file, dev_file);
  const auto max_prompt = recipe.task.max_seq_length - recipe.eval.max_new_tokens;
  DSEE_CHECK(max_prompt >= 1,
             "task.max_seq_length = {} leaves no room for the prompt: it keeps the last task.max_seq_length − "
             "eval.max_new_tokens ({}) context tokens; raise task.max_seq_length or lower eval.max_new_tokens",
             recipe.task.max_seq_length, recipe.eval.max_new_tokens);
  DSEE_CHECK(!recipe_evaluates_test(recipe) || !recipe.task.test_file.empty(),
             "eval.splits lists \"test\" but task.test_file is empty: name the test file under task.data_dir "
             "(LoRA's E2E test.txt, WebNLG test.json, DART dart-v1.1.1-full-test.json), or drop \"test\" from "
             "eval.splits");
  const fs::path model_path = recipe.model.path;
  const fs::path data_dir = recipe.task.data_dir;
  const NlgFormat format = nlg_format_from_name(recipe.task.format);
  auto tokenizer = std::make_shared<const Tokenizer>(Tokenizer::load(model_path));
  const std::int64_t eos = nlg_eos_id(*tokenizer);

  TaskData data;
  data.task = task;
  data.pretrained_dir = model_path;
  data.causal_lm = true;
  data.num_labels = 0;
  const auto sequences =
      nlg_encode_examples(*tokenizer, nlg_read(data_dir / train_file, format), eos, recipe.task.max_seq_length);
  std::vector<std::int64_t> rows(sequences.size());
  std::iota(rows.begin(), rows.end(), 0);
  NlgBatch train = nlg_collate(sequences, rows, eos);
  data.train.name = "train";
  data.train.tensors = {
      {"input_ids", train.input_ids}, {"attention_mask", train.attention_mask}, {"labels", train.labels}};

  auto nlg = std::make_shared<NlgTaskData>();
  nlg->tokenizer = tokenizer;
  // A decoded split: its contexts grouped with their references, the prompts.
  const auto decoded_split = [&](std::string name, const std::string& file, std::int64_t max_items) {
    NlgSplit split;
    split.name = std::move(name);
    split.items = nlg_group(nlg_read(data_dir / file, format));
    if (max_items > 0 && split.items.size() > static_cast<std::size_t>(max_items))
      split.items.resize(static_cast<std::size_t>(max_items));
    for (const auto& item : split.items)
      split.prompts.push_back(nlg_encode_prompt(*tokenizer, item.context, eos, max_prompt));
    return split;
  };
  NlgSplit dev = decoded_split("dev", dev_file, recipe.eval.max_items);
  std::vector<NlgSequence> prompts;
  for (const auto& prompt : dev.prompts) prompts.push_back({prompt, static_cast<std::int64_t>(prompt.size())});
  rows.resize(prompts.size());
  std::iota(rows.begin(), rows.end(), 0);
  const NlgBatch dev_prompts = nlg_collate(prompts, rows, eos);
  TaskSplit dev_split;
  dev_split.name = "dev";
  dev_split.tensors = {{"input_ids", dev_prompts.input_ids}, {"attention_mask", dev_prompts.attention_mask}};
  data.dev.push_back(std::move(dev_split));
  nlg->dev.push_back(std::move(dev));
  if (recipe_evaluates_test(recipe))
    nlg->test = decoded_split("test", recipe.task.test_file, 0);  // eval.max_items limits the dev set only

  GenerationOptions& generation = nlg->generation;
  generation.beam_size = recipe.eval.beam_size;
  generation.length_penalty = recipe.eval.length_penalty;
  generation.no_repeat_ngram_size = recipe.eval.no_repeat_ngram_size;
  generation.max_new_tokens = recipe.eval.max_new_tokens;
  generation.eos_ids = nlg_stop_ids(model_path, *tokenizer);
  data.nlg = std::move(nlg);
  std::int64_t completion_tokens = 0;
  for (const auto& sequence : sequences)
    completion_tokens += static_cast<std::int64_t>(sequence.ids.size()) - sequence.context_length;
  spdlog::info(
      "{}: {} training sequences ({} completion tokens) from {}, {} dev contexts from {}{} (tokenizer: {}; "
      "longest {} tokens)",
      task, data.train.size(), completion_tokens, (data_dir / train_file).string(), data.nlg->dev.front().items.size(),
      (data_dir / dev_file).string(),
      data.nlg->test ? fmt::format(", {} test contexts from {}", data.nlg->test->items.size(),
                                   (data_dir / recipe.task.test_file).string())
                     : "",
      tokenizer->describe(), data.seq_len());
  return data;
}

TaskData demo_of(DemoData demo) {
  TaskData data;
  data.task = "demo";
  data.pretrained_dir = demo.pretrained_dir;
  data.train.name = "train";
  data.train.tensors = {{"input_ids", demo.train_ids}, {"labels", demo.train_labels}};
  TaskSplit dev;
  dev.name = "dev";
  dev.tensors = {{"input_ids", demo.dev_ids}, {"labels", demo.dev_labels}};
  data.dev.push_back(std::move(dev));
  return data;
}

// Logits of rows [begin, end) of the split, fp32 on the CPU, in batches of
// `batch` from `begin`.
at::Tensor logits_of(PretrainedModel& model, const TaskSplit& split, std::int64_t begin, std::int64_t end,
                     std::int64_t num_labels, std::int64_t batch) {
  std::vector<at::Tensor> logits = {at::empty({0, num_labels}, at::kFloat)};
  for (std::int64_t start = begin; start < end; start += batch) {
    std::map<std::string, at::Tensor> rows;
    for (const auto& [name, tensor] : split.tensors)
      if (name != "labels")
        rows[name] = tensor.narrow(0, start, std::min<std::int64_t>(batch, end - start)).to(model.device());
    logits.push_back(model.forward(task_model_input(rows)).logits.to(at::kCPU, at::kFloat));
  }
  return at::cat(logits);
}

}  // namespace

TaskData task_data_prepare(const Recipe& recipe, const DemoOptions& demo, const fs::path& demo_dir) {
  TaskData data = recipe.task.name == "demo" ? demo_of(demo_prepare(demo, demo_dir))
                  : recipe_is_nlg(recipe)    ? nlg_prepare(recipe)
                                             : glue_prepare(recipe);
  data.eval_batch_size = recipe.eval.batch_size;
  return data;
}

namespace {
bool task_is_nlg(const std::string& task_name) {
  return task_name == "e2e" || task_name == "webnlg" || task_name == "dart";
}
}  // namespace

std::string task_main_metric(const std::string& task_name) {
  if (task_name == "demo") return "accuracy";
  if (task_is_nlg(task_name)) return "bleu";
  return glue_task_info(glue_task_from_name(task_name)).main_metric;
}

std::vector<std::string> task_metric_names(const std::string& task_name) {
  if (task_name == "demo") return {"accuracy"};
  if (task_is_nlg(task_name)) return native_metric_names();
  const auto task = glue_task_from_name(task_name);
  auto names = glue_task_info(task).metrics;
  if (task == GlueTask::mnli)
    for (const auto& metric : glue_task_info(task).metrics) names.push_back(metric + "_mismatched");
  return names;
}

TaskBatches::TaskBatches(const TaskSplit& split, std::int64_t global_batch_size, std::uint64_t seed, int rank,
                         int world_size, TaskBatchShape shape)
    : tensors_(split.tensors),
      rank_(rank),
      world_size_(world_size),
      global_batch_(global_batch_size),
      seed_(seed),
      sampler_({split.size(), global_batch_size, seed, true, false}, rank, world_size),
      shape_(shape) {
  if (!shape_.length_buckets) return;
  DSEE_ASSERT(tensors_.contains("attention_mask"), "length buckets of split '{}' without an attention_mask",
              split.name);
  const at::Tensor lengths = tensors_.at("attention_mask").sum(1).to(at::kLong).contiguous();
  lengths_.assign(lengths.data_ptr<std::int64_t>(), lengths.data_ptr<std::int64_t>() + lengths.numel());
}

std::int64_t TaskBatches::batches_per_epoch() const { return sampler_.batches_per_epoch(); }

std::int64_t TaskBatches::sample_index() const {
  return shape_.length_buckets ? bucket_sample_ : sampler_.position().sample;
}

void TaskBatches::start_epoch(std::int64_t epoch) {
  sampler_.set_position({epoch, 0});
  left_ = sampler_.batches_per_epoch();
  if (!shape_.length_buckets) return;
  bucket_batches_ = nlg_length_batches(lengths_, global_batch_, seed_, epoch);
  DSEE_ASSERT(static_cast<std::int64_t>(bucket_batches_.size()) == left_, "{} length-bucketed batches, {} expected",
              bucket_batches_.size(), left_);
  next_bucket_ = 0;
  bucket_sample_ = 0;
}

void TaskBatches::seek(std::int64_t epoch, std::int64_t sample_index) {
  if (!shape_.length_buckets) {
    sampler_.set_position({epoch, sample_index});
    left_ = sampler_.batches_per_epoch() - (sample_index + global_batch_ - 1) / global_batch_;
    return;
  }
  DSEE_CHECK(epoch >= 0 && sample_index >= 0, "cannot resume at epoch {}, sample {}", epoch, sample_index);
  start_epoch(epoch);
  while (next_bucket_ < bucket_batches_.size() && bucket_sample_ < sample_index)
    bucket_sample_ += static_cast<std::int64_t>(bucket_batches_[next_bucket_++].size());
  DSEE_CHECK(bucket_sample_ == sample_index && next_bucket_ < bucket_batches_.size(),
             "cannot resume at epoch {}, sample {}: not the start of a length-bucketed batch of {} in an epoch of {} "
             "samples (was the checkpoint made with another train.batch_size, train.length_buckets or training "
             "set?)",
             epoch, sample_index, global_batch_, lengths_.size());
  left_ -= static_cast<std::int64_t>(next_bucket_);
}

std::optional<TrainBatch> TaskBatches::next() {
  if (left_ <= 0) return std::nullopt;
  --left_;
  std::vector<std::int64_t> indices;
  std::int64_t global_size = 0;
  if (shape_.length_buckets) {
    const auto& batch = bucket_batches_[next_bucket_++];
    global_size = static_cast<std::int64_t>(batch.size());
    const auto [begin, end] = shard_range(global_size, rank_, world_size_);
    indices.assign(batch.begin() + begin, batch.begin() + end);
    bucket_sample_ += global_size;
  } else {
    auto batch = sampler_.next();
    indices = std::move(batch.indices);
    global_size = batch.global_size;
  }
  loss_scale_ = static_cast<double>(indices.size()) * world_size_ / static_cast<double>(global_size);
  const auto index = at::tensor(indices, at::kLong);
  TrainBatch out;
  for (const auto& [name, tensor] : tensors_) out.tensors[name] = tensor.index_select(0, index);
  out.samples = index.size(0);
  if (shape_.trim_padding && out.samples > 0) {  // Note [Data-to-text in the pipeline]
    const auto& mask = out.tensors.at("attention_mask");
    const std::int64_t longest = std::max<std::int64_t>(mask.sum(1).max().item<std::int64_t>(), 1);
    for (auto& [name, tensor] : out.tensors)
      if (tensor.dim() == 2 && tensor.size(1) > longest) tensor = tensor.narrow(1, 0, longest).contiguous();
  }
  return out;
}

ModelInput task_model_input(const std::map<std::string, at::Tensor>& tensors) {
  ModelInput input;
  input.input_ids = tensors.at("input_ids");
  if (const auto it = tensors.find("attention_mask"); it != tensors.end()) input.attention_mask = it->second;
  if (const auto it = tensors.find("token_type_ids"); it != tensors.end()) input.token_type_ids = it->second;
  return input;
}

at::Tensor task_loss(PretrainedModel& model, const TrainBatch& batch) {
  std::map<std::string, at::Tensor> on_device;  // the batch where the model is (a no-op on the CPU)
  for (const auto& [name, tensor] : batch.tensors) on_device[name] = tensor.to(model.device());
  if (on_device.at("labels").dim() == 2) return model.forward(task_model_input(on_device)).logits;
  return sequence_classification_loss(model.forward(task_model_input(on_device)).logits, on_device.at("labels"));
}

std::vector<at::Tensor> task_dev_logits(PretrainedModel& model, ModelTuning* tuning, const TaskData& data,
                                        Communicator* comm) {
  DSEE_CHECK(data.eval_batch_size >= 1, "eval.batch_size = {}: give at least 1", data.eval_batch_size);
  at::NoGradGuard no_grad;
  if (tuning) tuning->set_training(false);
  std::vector<at::Tensor> out;
  for (const auto& split : data.dev) {
    const auto batch = data.eval_batch_size;
    if (comm == nullptr) {
      out.push_back(logits_of(model, split, 0, split.size(), data.num_labels, batch));
      continue;
    }
    const auto [begin, end] = batch_shard_range(split.size(), batch, comm->rank(), comm->world_size());
    const at::Tensor mine = logits_of(model, split, begin, end, data.num_labels, batch).contiguous();
    out.push_back(all_gather_rows(*comm, mine.to(comm->device())).cpu());
  }
  return out;
}

std::map<std::string, double> task_metrics(const TaskData& data, const std::vector<at::Tensor>& logits) {
  DSEE_ASSERT(logits.size() == data.dev.size(), "{} logits for {} dev splits", logits.size(), data.dev.size());
  std::map<std::string, double> out;
  for (std::size_t i = 0; i < data.dev.size(); ++i) {
    const auto labels = data.dev[i].tensors.at("labels").to(at::kCPU);
    std::map<std::string, double> metrics;
    if (data.task == "demo") {
      const auto predictions = logits[i].argmax(1).contiguous();
      const auto truth = labels.contiguous();
      metrics["accuracy"] =
          accuracy({predictions.data_ptr<std::int64_t>(), static_cast<std::size_t>(predictions.numel())},
                   {truth.data_ptr<std::int64_t>(), static_cast<std::size_t>(truth.numel())});
    } else {
      metrics = glue_metrics(glue_task_from_name(data.task), logits[i], labels);
    }
    for (const auto& [name, value] : metrics) out[i == 0 ? name : name + "_mismatched"] = value;
  }
  return out;
}

std::vector<std::string> task_nlg_hypotheses(PretrainedModel& model, ModelTuning* tuning, const TaskData& data,
                                             const NlgSplit& split, Communicator* comm) {
  DSEE_ASSERT(data.nlg != nullptr, "task '{}' has no contexts to decode", data.task);
  DSEE_CHECK(data.eval_batch_size >= 1, "eval.batch_size = {}: give at least 1", data.eval_batch_size);
  at::NoGradGuard no_grad;
  if (tuning) tuning->set_training(false);
  const NlgTaskData& nlg = *data.nlg;
  const auto max_new = nlg.generation.max_new_tokens;
  const auto n = static_cast<std::int64_t>(split.prompts.size());
  const auto batch = data.eval_batch_size;
  const auto [begin, end] = comm == nullptr ? std::pair<std::int64_t, std::int64_t>{0, n}
                                            : batch_shard_range(n, batch, comm->rank(), comm->world_size());
  // Generated ids of rows [begin, end), -1 after a row's last one.
  at::Tensor ids = at::full({end - begin, max_new}, -1, at::kLong);
  auto written = ids.accessor<std::int64_t, 2>();
  const auto started = std::chrono::steady_clock::now();
  for (std::int64_t start = begin; start < end; start += batch) {
    const auto stop = std::min(end, start + batch);
    const std::vector<std::vector<std::int64_t>> prompts(split.prompts.begin() + start, split.prompts.begin() + stop);
    const auto generated = generate(model, prompts, nlg.generation);
    for (std::size_t i = 0; i < generated.size(); ++i)
      for (std::size_t t = 0; t < generated[i].size(); ++t)
        written[start - begin + static_cast<std::int64_t>(i)][static_cast<std::int64_t>(t)] = generated[i][t];
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (comm == nullptr || comm->world_size() == 1)
      spdlog::info("decoding {}: {}/{} contexts ({:.1f} s)", split.name, stop, n, seconds);
    else if (comm->rank() == 0)
      spdlog::info("decoding {}: {}/{} contexts of rank 0's share ({} of {}; {:.1f} s)", split.name, stop - begin,
                   end - begin, end - begin, n, seconds);
  }
  if (comm != nullptr) ids = all_gather_rows(*comm, ids.to(comm->device())).cpu().contiguous();
  const auto all = ids.accessor<std::int64_t, 2>();
  std::vector<std::string> texts;
  for (std::int64_t row = 0; row < n; ++row) {
    std::vector<std::int64_t> generated;
    for (std::int64_t t = 0; t < max_new && all[row][t] >= 0; ++t) generated.push_back(all[row][t]);
    texts.push_back(nlg_completion_text(*nlg.tokenizer, std::move(generated), nlg.generation.eos_ids));
  }
  return texts;
}

std::vector<std::vector<std::string>> task_dev_hypotheses(PretrainedModel& model, ModelTuning* tuning,
                                                          const TaskData& data, Communicator* comm) {
  DSEE_ASSERT(data.nlg != nullptr, "task '{}' has no contexts to decode", data.task);
  std::vector<std::vector<std::string>> out;
  for (const auto& split : data.nlg->dev) out.push_back(task_nlg_hypotheses(model, tuning, data, split, comm));
  return out;
}

std::map<std::string, double> task_nlg_scores(const TaskData& data, const NlgSplit& split,
                                              const std::vector<std::string>& hypotheses) {
  DSEE_ASSERT(hypotheses.size() == split.items.size(), "{} hypotheses for {} {} contexts", hypotheses.size(),
              split.items.size(), split.name);
  std::vector<TextItem> all, seen, unseen;
  for (std::size_t k = 0; k < split.items.size(); ++k) {
    TextItem item{hypotheses[k], split.items[k].references};
    if (split.items[k].seen.has_value()) (*split.items[k].seen ? seen : unseen).push_back(item);
    all.push_back(std::move(item));
  }
  std::map<std::string, double> out = score_corpus(all, native_metric_names());
  if (data.task != "webnlg") return out;
  for (const auto& [part, part_items] : {std::pair{"_seen", &seen}, std::pair{"_unseen", &unseen}})
    if (!part_items->empty())
      for (const auto& [name, value] : score_corpus(*part_items, native_metric_names())) out[name + part] = value;
  return out;
}

std::map<std::string, double> task_nlg_metrics(const TaskData& data,
                                               const std::vector<std::vector<std::string>>& hypotheses) {
  DSEE_ASSERT(data.nlg != nullptr && hypotheses.size() == data.nlg->dev.size(), "{} hypothesis sets for {} splits",
              hypotheses.size(), data.nlg ? data.nlg->dev.size() : 0);
  std::map<std::string, double> out;
  for (std::size_t i = 0; i < hypotheses.size(); ++i) {
    const std::string suffix = i == 0 ? "" : "_" + data.dev[i].name;
    for (const auto& [name, value] : task_nlg_scores(data, data.nlg->dev[i], hypotheses[i])) out[name + suffix] = value;
  }
  return out;
}

void task_write_hypotheses(const NlgSplit& split, const std::vector<std::string>& hypotheses, const fs::path& dir) {
  DSEE_ASSERT(hypotheses.size() == split.items.size(), "{} hypotheses for {} {} contexts", hypotheses.size(),
              split.items.size(), split.name);
  folder_create(dir);
  std::string hyps, grouped;
  std::size_t most = 0;
  for (std::size_t k = 0; k < split.items.size(); ++k) {
    hyps += hypotheses[k] + "\n";
    for (const auto& reference : split.items[k].references) grouped += reference + "\n";
    grouped += "\n";
    most = std::max(most, split.items[k].references.size());
  }
  file_write_text(dir / (split.name + ".hyp.txt"), hyps);
  file_write_text(dir / (split.name + ".refs.txt"), grouped);
  for (std::size_t r = 0; r < most; ++r) {
    std::string lines;
    for (const auto& item : split.items) lines += (r < item.references.size() ? item.references[r] : "") + "\n";
    file_write_text(dir / fmt::format("{}.ref{}.txt", split.name, r), lines);
  }
}

std::map<std::string, double> task_evaluate(PretrainedModel& model, ModelTuning* tuning, const TaskData& data,
                                            Communicator* comm) {
  if (data.causal_lm) return task_nlg_metrics(data, task_dev_hypotheses(model, tuning, data, comm));
  return task_metrics(data, task_dev_logits(model, tuning, data, comm));
}

void task_write_predictions(const TaskData& data, const std::vector<at::Tensor>& logits, const fs::path& path) {
  DSEE_ASSERT(logits.size() == data.dev.size(), "{} logits for {} dev splits", logits.size(), data.dev.size());
  NamedTensors tensors;
  for (std::size_t i = 0; i < data.dev.size(); ++i) {
    const auto& split = data.dev[i];
    tensors.emplace_back(split.name + ".logits", logits[i].contiguous());
    tensors.emplace_back(split.name + ".labels", split.tensors.at("labels").to(at::kCPU).contiguous());
  }
  safetensors_save(path, tensors);
}

}  // namespace dsee
