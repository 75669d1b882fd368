// Fuzz target: masks.h5 (core/sparsity/prune_plan.h). An accepted file must
// give 2-D bool masks and strictly ascending non-negative head ids, and must
// write back and read back the same plan.
#include "core/sparsity/prune_plan.h"

#include <ATen/ATen.h>

#include "base/error.h"
#include "fuzz_target.h"

DSEE_FUZZ_TARGET(prune_plan) {
  const auto path = dsee_fuzz::scratch_folder() / "masks.h5";
  dsee_fuzz::write_bytes(path, dsee_fuzz::as_text(data, size));
  dsee::PrunePlan plan;
  try {
    plan = dsee::prune_plan_read(path);
  } catch (const dsee::Error&) {
    return 0;
  }
  for (const auto& mask : plan.masks) dsee_fuzz::require(mask.mask.dim() == 2 && mask.mask.scalar_type() == at::kBool);
  for (const auto& [layer, heads] : plan.heads) {
    dsee_fuzz::require(layer >= 0);
    for (std::size_t i = 0; i < heads.size(); ++i)
      dsee_fuzz::require(heads[i] >= 0 && (i == 0 || heads[i] > heads[i - 1]));
  }
  const auto copy = dsee_fuzz::scratch_folder() / "masks-again.h5";
  try {
    dsee::prune_plan_write(copy, plan);
  } catch (const dsee::Error&) {
    return 0;  // a module name HDF5 took but dsee refuses to write ('/', ".")
  }
  const dsee::PrunePlan again = dsee::prune_plan_read(copy);
  dsee_fuzz::require(again.masks.size() == plan.masks.size() && again.heads == plan.heads);
  for (std::size_t i = 0; i < plan.masks.size(); ++i)
    dsee_fuzz::require(again.masks[i].module == plan.masks[i].module &&
                       at::equal(again.masks[i].mask, plan.masks[i].mask));
  return 0;
}
