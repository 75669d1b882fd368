// Ω files (HDF5): one int64 dataset per adapted matrix, named by its HF
// parameter name without the family prefix, as core/tuning/adapted.h names it
// ("encoder.layer.0.attention.self.query.weight",
// "h.0.attn.c_attn.weight:q"), holding the c flat indices (row-major in the
// out×in orientation, ascending), with an int64 attribute "shape" = [out, in].
// Datasets keep the order they were written in (link creation order). File
// attributes record how Ω was made: "method", "variant", "seed", "c".
//
// Writing is atomic: a temporary file next to the target, renamed over it.
// Reading validates every dataset and throws dsee::Error naming the file and
// the dataset: missing dataset, missing or wrong shape, not 1-D int64,
// an index out of [0, out·in), indices not strictly ascending.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/sparsity/omega.h"

namespace dsee {

struct OmegaFileInfo {
  std::string method = "grebsmo";
  std::string variant = "reference";
  std::uint64_t seed = 0;
  std::int64_t c = 16;
};

// Throws dsee::Error for a name containing '/' (HDF5 would make groups of it),
// an empty name, a duplicate, or an entry that is not valid as read() checks.
// Writes the checksum sidecar "<path>.sum" after the file (base/hashing.h).
void omega_write(const std::filesystem::path& path, const std::vector<OmegaEntry>& entries, const OmegaFileInfo& info);

// Every dataset of the file, in the order written. A sidecar "<path>.sum",
// where there is one, is verified before HDF5 opens the file.
std::vector<OmegaEntry> omega_read(const std::filesystem::path& path, OmegaFileInfo* info = nullptr);

// The same datasets and attributes inside an open HDF5 file or group
// `location` (an hid_t), for checkpoints; datasets there carry Fletcher-32.
// `where` names the file and group in errors ("checkpoint 'x', group 'omega'").
void omega_write_group(std::int64_t location, const std::vector<OmegaEntry>& entries, const OmegaFileInfo& info,
                       const std::string& where);
std::vector<OmegaEntry> omega_read_group(std::int64_t location, const std::string& where,
                                         OmegaFileInfo* info = nullptr);

struct OmegaExpected {
  std::string name;
  std::int64_t rows = 0, cols = 0;
};

// The named datasets, in the order of `expected`, each checked to have the
// expected shape; extra datasets in the file are an error too (a stale Ω from
// another model).
std::vector<OmegaEntry> omega_read(const std::filesystem::path& path, const std::vector<OmegaExpected>& expected,
                                   OmegaFileInfo* info = nullptr);

}  // namespace dsee
