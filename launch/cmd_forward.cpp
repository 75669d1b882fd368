// dsee forward: run a Hugging Face model folder on token ids from a JSON file
// and write its outputs to a safetensors file. This is how a user checks a
// model from the shell and how tests/parity compares dsee with transformers.
//
// IDS.json is either a list of token-id lists (ragged), or an object
//   {"input_ids": [[...], ...], "token_type_ids": [[...], ...]}
// whose token_type_ids (optional) has the lengths of input_ids. Sequences are
// padded on the right with the model's pad_token_id (0 when it has none) and
// the attention mask marks the real tokens. OUT.safetensors holds, in fp32:
//   last_hidden_state  [batch, seq, hidden]
//   logits             [batch, num_labels] (BERT/RoBERTa with a
//                      sequence-classification head) or [batch, seq, vocab]
//                      (GPT-2); absent for a base model without a head
//   pooler_output      [batch, hidden] (BERT, when the checkpoint holds the pooler)
//   attention_mask     [batch, seq] int64
#include <ATen/ATen.h>
#include <torch/types.h>

#include "base/error.h"
#include "base/files.h"
#include "base/shape_text.h"
#include "core/io/safetensors.h"
#include "core/model/device.h"
#include "core/model/pretrained_model.h"
#include "data/id_lists.h"
#include "launch/commands.h"

namespace dsee {
namespace {

// [batch, longest] int64, padded on the right with `pad`.
at::Tensor id_lists_pad(const IdLists& lists, std::int64_t longest, std::int64_t pad) {
  auto out = at::full({std::int64_t(lists.size()), longest}, pad, at::kLong);
  for (std::size_t i = 0; i < lists.size(); ++i)
    out[std::int64_t(i)].narrow(0, 0, std::int64_t(lists[i].size())).copy_(at::tensor(lists[i], at::kLong));
  return out;
}

}  // namespace

Command forward_command(CLI::App& app) {
  struct Options {
    std::string model, input_ids, out, dtype = "fp32", device = "cpu";
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("forward", "Run a Hugging Face model folder on token ids, write its outputs");
  sub->add_option("--model", options->model, "Model folder (config.json + model.safetensors)")->required();
  sub->add_option("--input-ids", options->input_ids,
                  "JSON: [[ids...], ...] or {\"input_ids\": [[...]], \"token_type_ids\": [[...]]}")
      ->required();
  sub->add_option("--out", options->out, "Output .safetensors (logits, last_hidden_state, ...)")->required();
  sub->add_option("--dtype", options->dtype, "Compute dtype")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  sub->add_option("--device", options->device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  return {sub, [options] {
            const IdListsInput parsed = id_lists_parse(file_read_text(options->input_ids), options->input_ids);
            const IdLists& ids = parsed.input_ids;
            const IdLists& types = parsed.token_type_ids;

            const c10::Device device = device_choose(options->device);
            ModelLoadOptions load;
            load.dtype = options->dtype == "bf16" ? at::kBFloat16 : at::kFloat;
            load.device = device;
            auto model = model_load(options->model, load);
            const auto& config = model->config();
            for (const auto& row : ids)
              for (const auto id : row)
                DSEE_CHECK(id < config.vocab_size, "{}: token id {} is outside the vocabulary of {} ids",
                           options->input_ids, id, config.vocab_size);

            std::int64_t longest = 0;
            std::vector<std::int64_t> lengths;
            for (const auto& row : ids) {
              lengths.push_back(std::int64_t(row.size()));
              longest = std::max(longest, lengths.back());
            }
            ModelInput input;
            input.input_ids = id_lists_pad(ids, longest, config.pad_token_id.value_or(0)).to(device);
            const auto mask = at::arange(longest, at::kLong).unsqueeze(0).lt(at::tensor(lengths).unsqueeze(1));
            input.attention_mask = mask.to(at::kLong).to(device);
            if (!types.empty()) input.token_type_ids = id_lists_pad(types, longest, 0).to(device);

            ModelOutput output;
            {
              at::NoGradGuard no_grad;
              output = model->forward(input);
            }
            const auto cpu = [](const at::Tensor& t) { return t.to(at::kCPU, at::kFloat).contiguous(); };
            NamedTensors tensors;
            if (output.logits.defined()) tensors.emplace_back("logits", cpu(output.logits));
            tensors.emplace_back("last_hidden_state", cpu(output.last_hidden_state));
            const auto& fresh = model->new_head_tensors();
            const auto is_new = [&](const std::string& part) {
              return std::any_of(fresh.begin(), fresh.end(),
                                 [&](const std::string& name) { return name.find(part) != std::string::npos; });
            };
            if (output.pooled.defined() && !is_new("pooler."))
              tensors.emplace_back("pooler_output", cpu(output.pooled));
            if (output.logits.defined() && !fresh.empty())
              spdlog::warn(
                  "forward: the logits come from a task head the checkpoint does not hold (initialised at "
                  "random): {}",
                  fmt::join(fresh, ", "));
            tensors.emplace_back("attention_mask", input.attention_mask.to(at::kCPU));
            safetensors_save(options->out, tensors, {{"format", "pt"}});
            spdlog::info("forward: {} sequence(s) of up to {} tokens through {} ({}) → {}", ids.size(), longest,
                         options->model, options->dtype, options->out);
            return 0;
          }};
}

}  // namespace dsee
