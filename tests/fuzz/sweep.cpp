// Fuzz target: a sweep file (recipes/sweep.h) next to a small valid base
// recipe "base.toml". An accepted sweep must expand to between 1 and
// max_runs runs with distinct names, each inside the sweep's folder, each
// recipe resolved.
#include "recipes/sweep.h"

#include <set>

#include "base/error.h"
#include "fuzz_target.h"

DSEE_FUZZ_TARGET(sweep) {
  const auto folder = dsee_fuzz::scratch_folder();
  static const bool base_written = [&] {
    dsee_fuzz::write_bytes(folder / "base.toml", "[run]\nname = \"base\"\n[train]\nlr = 1e-3\n");
    return true;
  }();
  (void)base_written;
  const auto path = folder / "sweep.toml";
  dsee_fuzz::write_bytes(path, dsee_fuzz::as_text(data, size));
  try {
    const dsee::Sweep sweep = dsee::sweep_load(path, {}, 64);
    dsee_fuzz::require(!sweep.runs.empty() && sweep.runs.size() <= 64);
    std::set<std::string> names;
    for (const auto& run : sweep.runs) {
      dsee_fuzz::require(names.insert(run.name).second && run.run_dir.parent_path() == sweep.out_dir);
      dsee_fuzz::require(run.overrides.size() >= 3);
    }
  } catch (const dsee::Error&) {
  }
  return 0;
}
