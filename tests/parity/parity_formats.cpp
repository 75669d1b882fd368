// dsee's files against the Python libraries that read and write them
// (test_checkpoint_h5py.py, test_safetensors_python.py,
// test_prune_plan_h5py.py, test_models.py's round trip).
//
//   checkpoint            a checkpoint whose tensors come from "in", so Python
//                         knows every expected value: name prefixes
//                         "trainable.", "best.", "optimizer.", "mask.<module>"
//                         (a prune-plan mask), "omega.<name>" (int64 indices;
//                         [rows, cols] from "omega_shape.<name>"); fixed
//                         progress (epoch 2, sample_index 4321), scheduler,
//                         heads {3: [1, 2]}, Ω info and the CPU generator
//                         seeded with 1234. Request: checkpoint_dir, step,
//                         config_text, model. result: {"model_weights_hash",
//                         "path"}.
//   safetensors-describe  "in" (a .safetensors file, a checkpoint index or a
//                         model folder) as dsee reads it; result: {name:
//                         {dtype, shape, fnv1a}}, fnv1a the 64-bit FNV-1a hash
//                         of the tensor's bytes (decimal text).
//   safetensors-copy      reads "in" and writes every tensor and the metadata
//                         to "out" with safetensors_save.
//   prune-plan-write      masks.h5 at "plan" from in's "mask.<module>" (uint8
//                         [rows, cols], 0/1) and the request's "heads"
//                         ({layer: [ids]}).
//   prune-plan-read       masks.h5 at "plan" read back; out: "mask.<module>"
//                         (uint8); result: {"masks": [[module, rows, cols]],
//                         "heads": {layer: [ids]}}.
//   model-resave          loads the model folder "model" and saves it to
//                         "save_to" (model_load, model_save).
#include <ATen/ATen.h>

#include "core/model/pretrained_model.h"
#include "core/sparsity/prune_plan.h"
#include "core/train/checkpoint.h"
#include "parity_request.h"

namespace dsee::parity {
namespace {

std::uint64_t fnv1a(const at::Tensor& tensor) {
  const at::Tensor bytes = tensor.contiguous();
  const auto* data = static_cast<const unsigned char*>(bytes.const_data_ptr());
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < bytes.nbytes(); ++i) hash = (hash ^ data[i]) * 0x100000001b3ull;
  return hash;
}

}  // namespace

nlohmann::json checkpoint(const Request& request) {
  CheckpointState state;
  state.step = request.get<std::int64_t>("step");
  state.epoch = 2;
  state.sample_index = 4321;
  state.optimizer_step = state.step;
  state.scheduler = {{"last_epoch", 17.0}, {"base_lr", 0.0005}};
  const auto in = SafetensorsCheckpoint::open(request.get<std::string>("in"));
  for (const std::string& name : in.names()) {
    const at::Tensor tensor = in.tensor(name).clone();
    if (name.starts_with("trainable.")) {
      state.trainable.push_back({name.substr(10), tensor});
    } else if (name.starts_with("best.")) {
      state.best.push_back({name.substr(5), tensor});
    } else if (name.starts_with("optimizer.")) {
      state.optimizer.push_back({name.substr(10), tensor});
    } else if (name.starts_with("mask.")) {
      state.plan.masks.push_back({name.substr(5), tensor});
    } else if (name.starts_with("omega.")) {
      const at::Tensor shape = in.tensor("omega_shape." + name.substr(6));
      state.omega.push_back({name.substr(6), shape[0].item<std::int64_t>(), shape[1].item<std::int64_t>(), tensor, -1});
    }
  }
  state.plan.heads[3] = {1, 2};
  state.omega_info = {"grebsmo", "reference", 7, 2};
  at::manual_seed(1234);  // the Python side compares with torch.manual_seed(1234)
  checkpoint_capture_rng(state);
  state.config_text = request.get<std::string>("config_text");
  state.model_path = request.get<std::string>("model");
  state.model_weights_hash = model_weights_hash(state.model_path);
  const auto path = checkpoint_write(request.get<std::string>("checkpoint_dir"), state, 2);
  return {{"model_weights_hash", state.model_weights_hash}, {"path", path.string()}};
}

nlohmann::json safetensors_describe(const Request& request) {
  const auto checkpoint = SafetensorsCheckpoint::open(request.get<std::string>("in"));
  nlohmann::json out = nlohmann::json::object();
  for (const auto& name : checkpoint.names()) {
    const at::Tensor tensor = checkpoint.tensor(name);
    const auto& dtype = safetensors_dtype(tensor.scalar_type(), name);
    out[name] = {{"dtype", dtype.name}, {"shape", tensor.sizes().vec()}, {"fnv1a", std::to_string(fnv1a(tensor))}};
  }
  return out;
}

nlohmann::json safetensors_copy(const Request& request) {
  const SafetensorsFile& file = request.in();
  NamedTensors tensors;
  for (const auto& entry : file.entries()) tensors.push_back({entry.name, file.tensor(entry.name)});
  request.write_out(tensors, file.metadata());
  return nlohmann::json::object();
}

nlohmann::json prune_plan_write(const Request& request) {
  PrunePlan plan;
  const SafetensorsFile& in = request.in();
  for (const auto& entry : in.entries()) {
    DSEE_CHECK(entry.name.starts_with("mask."), "prune-plan-write: unexpected tensor '{}' in the input", entry.name);
    plan.masks.push_back({entry.name.substr(5), in.tensor(entry.name).to(at::kFloat)});
  }
  const auto heads = request.get<nlohmann::json>("heads", nlohmann::json::object());  // items() only refers to it
  for (const auto& [layer, ids] : heads.items()) plan.heads[std::stoll(layer)] = ids.get<std::vector<std::int64_t>>();
  dsee::prune_plan_write(request.get<std::string>("plan"), plan);
  return nlohmann::json::object();
}

nlohmann::json prune_plan_read(const Request& request) {
  const PrunePlan plan = dsee::prune_plan_read(request.get<std::string>("plan"));
  NamedTensors out;
  nlohmann::json masks = nlohmann::json::array(), heads = nlohmann::json::object();
  for (const auto& mask : plan.masks) {
    const at::Tensor bytes = mask.mask.to(at::kByte).contiguous();
    out.push_back({"mask." + mask.module, bytes});
    masks.push_back({mask.module, bytes.size(0), bytes.size(1)});
  }
  for (const auto& [layer, ids] : plan.heads) heads[std::to_string(layer)] = ids;
  request.write_out(out);
  return {{"masks", masks}, {"heads", heads}};
}

nlohmann::json model_resave(const Request& request) {
  const auto model = model_load(request.get<std::string>("model"));
  model_save(*model, request.get<std::string>("save_to"));
  return nlohmann::json::object();
}

}  // namespace dsee::parity
