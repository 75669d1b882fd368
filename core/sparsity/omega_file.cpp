// Ω files on the HDF5 1.10 C API. Layout and validation rules: omega_file.h.
//
// HDF5 prints its own error stack to stderr on every failed call; an
// hdf5::Quiet guard (core/io/hdf5_io.h) silences it for the duration of a read or write, and
// each failure becomes one dsee::Error that names the file and the dataset.
//
// Note [std::filesystem and libtorch]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// libtorch.so (the PyPI wheel, built with GCC 13) exports its own copies of
// libstdc++'s std::filesystem functions, and the dynamic linker binds ours to
// them: std::filesystem::remove_all segfaulted in a unit test. File
// operations here therefore use POSIX calls (stat, rename, unlink); paths are
// only carried in std::filesystem::path.
#include "core/sparsity/omega_file.h"

#include <ATen/ATen.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "base/error.h"
#include "base/hashing.h"
#include "core/io/hdf5_io.h"

namespace dsee {
namespace {

using hdf5::Handle;

// Checks the indices of one entry; `where` names file and dataset.
void check_indices(const at::Tensor& indices, std::int64_t rows, std::int64_t cols, const std::string& where) {
  DSEE_CHECK(rows > 0 && cols > 0, "{}: shape [{}, {}] is not a positive matrix shape", where, rows, cols);
  DSEE_CHECK(rows <= std::numeric_limits<std::int64_t>::max() / cols,
             "{}: shape [{}, {}] has more entries than an int64 counts (a damaged file?)", where, rows, cols);
  DSEE_CHECK(indices.defined() && indices.dim() == 1 && indices.scalar_type() == at::kLong,
             "{}: indices must be a 1-D int64 tensor", where);
  const at::Tensor cpu = indices.to(at::kCPU).contiguous();
  const auto* p = cpu.data_ptr<std::int64_t>();
  const std::int64_t size = rows * cols;
  for (std::int64_t i = 0; i < cpu.numel(); ++i) {
    DSEE_CHECK(p[i] >= 0 && p[i] < size, "{}: index {} at position {} is outside [0, {}) for shape [{}, {}]", where,
               p[i], i, size, rows, cols);
    DSEE_CHECK(i == 0 || p[i] > p[i - 1], "{}: indices are not strictly ascending at position {} ({} after {})", where,
               i, p[i], p[i - 1]);
  }
}

// `source` names the file or group in errors ("Ω file 'x'").
OmegaEntry read_entry(hid_t file, const std::string& name, const std::string& source) {
  const std::string where = fmt::format("{}, dataset '{}'", source, name);
  Handle dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  DSEE_CHECK(dataset.ok(), "{}: not a dataset (rewrite the file with dsee omega)", where);
  Handle type(H5Dget_type(dataset.get()), H5Tclose);
  DSEE_CHECK(
      H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == 8 && H5Tget_sign(type.get()) == H5T_SGN_2,
      "{}: indices must be stored as int64", where);
  Handle space(H5Dget_space(dataset.get()), H5Sclose);
  DSEE_CHECK(H5Sget_simple_extent_ndims(space.get()) == 1, "{}: indices must be a 1-D dataset, got {} dimensions",
             where, H5Sget_simple_extent_ndims(space.get()));
  hsize_t count = 0;
  H5Sget_simple_extent_dims(space.get(), &count, nullptr);

  DSEE_CHECK(H5Aexists(dataset.get(), "shape") > 0, "{}: has no 'shape' attribute ([out, in])", where);
  Handle shape_attribute(H5Aopen(dataset.get(), "shape", H5P_DEFAULT), H5Aclose);
  Handle shape_space(H5Aget_space(shape_attribute.get()), H5Sclose);
  hsize_t shape_count = 0;
  const bool shape_is_pair = H5Sget_simple_extent_ndims(shape_space.get()) == 1 &&
                             H5Sget_simple_extent_dims(shape_space.get(), &shape_count, nullptr) == 1 &&
                             shape_count == 2;
  std::array<std::int64_t, 2> shape{0, 0};
  DSEE_CHECK(shape_is_pair && H5Aread(shape_attribute.get(), H5T_NATIVE_INT64, shape.data()) >= 0,
             "{}: attribute 'shape' must hold two integers [out, in]", where);

  // Before anything is sized by `count`: indices are distinct positions of
  // the matrix, and a dataset's bytes are in the file (stored as they are,
  // or compressed, by at most deflate's ~1032:1).
  DSEE_CHECK(shape[0] > 0 && shape[1] > 0 && shape[0] <= std::numeric_limits<std::int64_t>::max() / shape[1] &&
                 count <= static_cast<hsize_t>(shape[0] * shape[1]),
             "{}: {} indices do not fit shape [{}, {}]", where, count, shape[0], shape[1]);
  hdf5::check_dataset_fits(dataset.get(), count, sizeof(std::int64_t), where);

  OmegaEntry entry;
  entry.name = name;
  entry.rows = shape[0];
  entry.cols = shape[1];
  entry.indices = at::empty({static_cast<std::int64_t>(count)}, at::kLong);
  if (count > 0)
    DSEE_CHECK(H5Dread(dataset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       entry.indices.data_ptr<std::int64_t>()) >= 0,
               "{}: cannot read the indices", where);
  check_indices(entry.indices, entry.rows, entry.cols, where);
  return entry;
}

void check_entries(const std::vector<OmegaEntry>& entries, const std::string& source) {
  std::set<std::string> names;
  for (const OmegaEntry& entry : entries) {
    const std::string where = fmt::format("{}, dataset '{}'", source, entry.name);
    DSEE_CHECK(!entry.name.empty() && entry.name != "." && entry.name.find('/') == std::string::npos,
               "{}: a dataset name must be non-empty and contain no '/'", where);
    DSEE_CHECK(names.insert(entry.name).second, "{}: the name appears twice", where);
    check_indices(entry.indices, entry.rows, entry.cols, where);
  }
}

// Attributes and datasets into `location`; `fletcher32` checksums each dataset (checkpoints).
void write_entries(hid_t location, const std::vector<OmegaEntry>& entries, const OmegaFileInfo& info,
                   const std::string& source, bool fletcher32) {
  hdf5::write_string_attribute(location, "method", info.method, source);
  hdf5::write_string_attribute(location, "variant", info.variant, source);
  hdf5::write_uint64_attribute(location, "seed", info.seed, source);
  hdf5::write_int64_attribute(location, "c", {info.c}, true, source);
  for (const OmegaEntry& entry : entries) {
    const std::string where = fmt::format("{}, dataset '{}'", source, entry.name);
    const at::Tensor indices = entry.indices.to(at::kCPU).contiguous();
    const Handle dataset = hdf5::write_dataset(location, entry.name, H5T_STD_I64LE, H5T_NATIVE_INT64,
                                               {static_cast<hsize_t>(indices.numel())},
                                               indices.data_ptr<std::int64_t>(), fletcher32, where);
    hdf5::write_int64_attribute(dataset.get(), "shape", {entry.rows, entry.cols}, false, where);
  }
}

std::vector<OmegaEntry> read_entries(hid_t location, const std::string& source, OmegaFileInfo* info) {
  const std::vector<std::string> names = hdf5::children(location, source);
  if (info != nullptr) {
    info->method = hdf5::read_string_attribute(location, "method");
    info->variant = hdf5::read_string_attribute(location, "variant");
    info->seed = H5Aexists(location, "seed") > 0 ? hdf5::read_uint64_attribute(location, "seed", source) : 0;
    const auto c = H5Aexists(location, "c") > 0 ? hdf5::read_int64_attribute(location, "c", source)
                                                : std::vector<std::int64_t>{-1};
    info->c = c.size() == 1 ? c[0] : -1;
  }
  std::vector<OmegaEntry> entries;
  for (const std::string& name : names) entries.push_back(read_entry(location, name, source));
  return entries;
}

}  // namespace

void omega_write(const std::filesystem::path& path, const std::vector<OmegaEntry>& entries, const OmegaFileInfo& info) {
  const std::string source = fmt::format("Ω file '{}'", path.string());
  check_entries(entries, source);
  checksum_remove(path);  // Note [Checksum sidecars] in base/hashing.cpp
  hdf5::write_file_atomically(path, "Ω file", [&](hid_t file) { write_entries(file, entries, info, source, false); });
  checksum_write(path);
}

void omega_write_group(std::int64_t location, const std::vector<OmegaEntry>& entries, const OmegaFileInfo& info,
                       const std::string& where) {
  check_entries(entries, where);
  hdf5::Quiet quiet;
  write_entries(static_cast<hid_t>(location), entries, info, where, true);
}

std::vector<OmegaEntry> omega_read_group(std::int64_t location, const std::string& where, OmegaFileInfo* info) {
  hdf5::Quiet quiet;
  return read_entries(static_cast<hid_t>(location), where, info);
}

std::vector<OmegaEntry> omega_read(const std::filesystem::path& path, OmegaFileInfo* info) {
  const std::string source = path.string();
  struct stat status {};
  DSEE_CHECK(::stat(source.c_str(), &status) == 0 && S_ISREG(status.st_mode),
             "Ω file '{}' does not exist (write it with dsee omega)", source);
  const std::string what = fmt::format("Ω file '{}'", source);
  checksum_verify(path, what, ChecksumSidecar::if_present);
  hdf5::Quiet quiet;
  const Handle file = hdf5::open_read(path, what);
  // Files written by dsee track creation order; others (h5py by default) are read in name order.
  return read_entries(file.get(), what, info);
}

std::vector<OmegaEntry> omega_read(const std::filesystem::path& path, const std::vector<OmegaExpected>& expected,
                                   OmegaFileInfo* info) {
  std::vector<OmegaEntry> stored = omega_read(path, info);
  std::vector<OmegaEntry> entries;
  for (const OmegaExpected& want : expected) {
    auto found = std::find_if(stored.begin(), stored.end(), [&](const OmegaEntry& e) { return e.name == want.name; });
    DSEE_CHECK(found != stored.end(), "Ω file '{}': dataset '{}' is missing (was Ω computed for this model?)",
               path.string(), want.name);
    DSEE_CHECK(found->rows == want.rows && found->cols == want.cols,
               "Ω file '{}', dataset '{}': shape [{}, {}] does not match the model's [{}, {}]", path.string(),
               want.name, found->rows, found->cols, want.rows, want.cols);
    entries.push_back(std::move(*found));
    stored.erase(found);
  }
  DSEE_CHECK(stored.empty(), "Ω file '{}': dataset '{}' is not an adapted matrix of this model", path.string(),
             stored.empty() ? "" : stored.front().name);
  return entries;
}

}  // namespace dsee
