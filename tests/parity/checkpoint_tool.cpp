// Driver for tests/parity/test_checkpoint_h5py.py: writes a checkpoint whose
// tensors come from a safetensors file the Python side made, so Python knows
// every expected value; prints the model weights hash and the checkpoint path.
//
//   checkpoint_tool TENSORS.safetensors CKPT_DIR CONFIG.toml MODEL_DIR STEP
//
// Tensor name prefixes in TENSORS: "trainable." → trainable, "best." → the
// best evaluation's tensors, "optimizer." → optimizer state, "omega.<name>" → Ω entry (int64 indices; its [rows, cols]
// from "omega_shape.<name>"), "mask.<module>" → a prune-plan mask.
#include <ATen/ATen.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "base/error.h"
#include "core/io/safetensors.h"
#include "core/train/checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: checkpoint_tool TENSORS.safetensors CKPT_DIR CONFIG.toml MODEL_DIR STEP\n";
    return 2;
  }
  try {
    const auto tensors = dsee::SafetensorsCheckpoint::open(argv[1]);
    dsee::CheckpointState state;
    state.step = std::stoll(argv[5]);
    state.epoch = 2;
    state.sample_index = 4321;
    state.optimizer_step = state.step;
    state.scheduler = {{"last_epoch", 17.0}, {"base_lr", 0.0005}};
    for (const std::string& name : tensors.names()) {
      const at::Tensor tensor = tensors.tensor(name).clone();
      if (name.starts_with("trainable."))
        state.trainable.push_back({name.substr(10), tensor});
      else if (name.starts_with("best."))
        state.best.push_back({name.substr(5), tensor});
      else if (name.starts_with("optimizer."))
        state.optimizer.push_back({name.substr(10), tensor});
      else if (name.starts_with("mask."))
        state.plan.masks.push_back({name.substr(5), tensor});
      else if (name.starts_with("omega.")) {
        const at::Tensor shape = tensors.tensor("omega_shape." + name.substr(6));
        state.omega.push_back(
            {name.substr(6), shape[0].item<std::int64_t>(), shape[1].item<std::int64_t>(), tensor, -1});
      }
    }
    state.plan.heads[3] = {1, 2};
    state.omega_info = {"grebsmo", "reference", 7, 2};
    at::manual_seed(1234);  // the Python side compares with torch.manual_seed(1234)
    dsee::checkpoint_capture_rng(state);
    std::ifstream config(argv[3]);
    std::stringstream text;
    text << config.rdbuf();
    state.config_text = text.str();
    state.model_path = argv[4];
    state.model_weights_hash = dsee::model_weights_hash(argv[4]);
    const auto path = dsee::checkpoint_write(argv[2], state, 2);
    std::cout << "model_weights_hash " << state.model_weights_hash << "\n"
              << "path " << path.string() << "\n";
    return 0;
  } catch (const dsee::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
