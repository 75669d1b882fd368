// Fuzz target: an Ω file (core/sparsity/omega_file.h), as dsee omega,
// h5py or a damaged disk leaves it. An accepted file must hold valid entries
// (distinct names, indices strictly ascending inside out·in) that write back
// and read back the same.
#include "core/sparsity/omega_file.h"

#include <ATen/ATen.h>

#include "base/error.h"
#include "fuzz_target.h"

DSEE_FUZZ_TARGET(omega_file) {
  const auto path = dsee_fuzz::scratch_folder() / "omega.h5";
  dsee_fuzz::write_bytes(path, dsee_fuzz::as_text(data, size));
  std::vector<dsee::OmegaEntry> entries;
  dsee::OmegaFileInfo info;
  try {
    entries = dsee::omega_read(path, &info);
  } catch (const dsee::Error&) {
    return 0;
  }
  for (const auto& entry : entries) {
    dsee_fuzz::require(entry.rows > 0 && entry.cols > 0 && entry.indices.dim() == 1);
    const auto* p = entry.indices.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < entry.indices.numel(); ++i)
      dsee_fuzz::require(p[i] >= 0 && p[i] / entry.cols < entry.rows && (i == 0 || p[i] > p[i - 1]));
  }
  const auto copy = dsee_fuzz::scratch_folder() / "omega-again.h5";
  try {
    dsee::omega_write(copy, entries, info);
  } catch (const dsee::Error&) {
    return 0;  // a name HDF5 took but dsee refuses to write ('/', ".")
  }
  dsee::OmegaFileInfo info_again;
  const auto again = dsee::omega_read(copy, &info_again);
  dsee_fuzz::require(again.size() == entries.size() && info_again.method == info.method &&
                     info_again.seed == info.seed);
  for (std::size_t i = 0; i < entries.size(); ++i)
    dsee_fuzz::require(again[i].name == entries[i].name && again[i].rows == entries[i].rows &&
                       again[i].cols == entries[i].cols && at::equal(again[i].indices, entries[i].indices));
  return 0;
}
