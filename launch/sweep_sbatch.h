// The job-array script of `dsee sweep --slurm` (sweep.sbatch), and the shell
// quoting that it and sweep.commands use.
#pragma once

#include <string>

#include "recipes/sweep.h"

namespace dsee {

// Single quotes for the shell: any text as one word.
std::string shell_quote(const std::string& text);

// The sbatch script of an array of sweep.runs.size() tasks. Task i runs line
// i+1 of <out_dir>/sweep.commands under srun, unless the run directory on row
// i+1 of <out_dir>/sweep.tsv already holds summary.json (then it exits 0).
// It stops and requeues as launch/slurm.sbatch does: Slurm signals the ranks,
// they checkpoint and exit 138 / 143, and the script requeues the task.
std::string sweep_sbatch_script(const std::string& sweep_file, const Sweep& sweep);

}  // namespace dsee
