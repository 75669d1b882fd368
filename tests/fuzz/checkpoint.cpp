// Fuzz target: a training checkpoint (core/train/checkpoint.h) read back on
// resume, without its sidecar: the SHA-256 check refuses any file changed
// after it was written, so this is the reader behind it, facing a file that
// was damaged before its checksum was taken or written by another tool. An
// accepted checkpoint must hold defined, named tensors.
#include "core/train/checkpoint.h"

#include <ATen/ATen.h>

#include "base/error.h"
#include "fuzz_target.h"

DSEE_FUZZ_TARGET(checkpoint) {
  const auto path = dsee_fuzz::scratch_folder() / "step-1.h5";
  dsee_fuzz::write_bytes(path, dsee_fuzz::as_text(data, size));
  try {
    const dsee::CheckpointState state = dsee::checkpoint_read(path, /*verify_sidecar=*/false);
    dsee_fuzz::require(state.format_version == 1);
    for (const auto* group : {&state.trainable, &state.best, &state.optimizer})
      for (const auto& named : *group) dsee_fuzz::require(named.tensor.defined() && !named.name.empty());
  } catch (const dsee::Error&) {
  }
  return 0;
}
