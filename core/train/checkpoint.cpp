// Training checkpoints (contract: checkpoint.h; schema for users:
// docs/checkpoints.md).
//
// Note [Checkpoint schema]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// One HDF5 file; groups keep creation order. Root attributes:
//   format_version int64 (1), kind "dsee-checkpoint", step, epoch,
//   sample_index (int64), model_path (string), model_weights_hash (uint64),
//   dsee_version, torch_version, hdf5_version (strings).
// /config               scalar UTF-8 string dataset: the resolved TOML;
//                       attribute "hash" (uint64, hash64 of the text).
// /trainable/<name>     one dataset per trainable tensor, its own shape;
// /best/<name>          the trainable tensors at the best evaluation so far
//                       (train.metric_for_best), the same layout; the group
//                       is empty before the first evaluation (and absent in
//                       files from before it existed: read as empty);
// /optimizer/<name>     attribute "dtype" names the torch dtype:
//                       float32 → IEEE f32 LE, float64 → f64, int64/int32/
//                       int16/int8 → signed LE, uint8 → u8, bool → u8 (0/1),
//                       bfloat16 / float16 → u16 LE holding the raw bits.
//                       /optimizer has attribute "step" (int64).
// /scheduler            group; one float64 attribute per scheduler value.
// /rng/cpu              uint8: at::Generator::get_state() of the CPU generator;
// /rng/cuda/<index>     the same per CUDA device (absent without CUDA).
// /omega                Ω as in an Ω file (omega_file.h): attributes method,
//                       variant, seed, c; int64 datasets with "shape".
// /plan                 the prune plan as in masks.h5 (prune_plan.h).
// Every non-empty, non-scalar dataset is chunked with Fletcher-32.
//
// Note [Checkpoint integrity]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Three layers, each catching what the others may miss: (1) every file is
// written under a temporary name, fsynced, renamed, and the folder fsynced
// (Note [Atomic HDF5 writes] in hdf5_io.cpp), so a crash leaves either the
// old state or the new; (2) the sidecar "<file>.sum" holds the SHA-256 of the
// whole file in `sha256sum` format, checked before the file is opened, so a
// truncated or bit-flipped file is refused even where HDF5 would not notice
// (metadata, attributes, padding); (3) Fletcher-32 on each dataset names the
// dataset that went bad. The order of writes is checkpoint, sidecar,
// `latest`; a crash between them leaves a checkpoint without sidecar (refused)
// or a `latest` that still names the previous, complete one.
//
// Note [Model weights hash]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// hash64 over the concatenation, for every tensor of the model folder in
// sorted name order (model.safetensors or the shards of its index, so the
// value does not depend on sharding or header layout), of: the name's UTF-8
// bytes, a 0 byte, the safetensors dtype ("F32", "BF16", …), a 0 byte, each
// dimension as int64 little-endian, and the tensor's raw bytes. The tensors
// come from the memory mapping, so the bytes are read once from disk (or the
// page cache the model load just filled) and never copied.
#include "core/train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include "base/config.h"
#include "base/error.h"
#include "base/files.h"
#include "base/hashing.h"
#include "base/log.h"
#include "base/versions.h"
#include "core/io/hdf5_io.h"
#include "core/io/safetensors.h"

namespace dsee {
namespace {

using hdf5::Handle;

constexpr std::int64_t kFormatVersion = 1;
constexpr const char* kKind = "dsee-checkpoint";

// ---------------------------------------------------------------- files

std::vector<std::string> folder_entries(const std::filesystem::path& folder) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(folder.c_str())) {
    while (const dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") names.emplace_back(e->d_name);
    ::closedir(d);
  }
  return names;
}

bool is_plain_file(const std::filesystem::path& path) {
  struct stat status {};
  return ::stat(path.c_str(), &status) == 0 && S_ISREG(status.st_mode);
}

// N of "step-N.h5", or -1.
std::int64_t step_of(const std::string& name) {
  if (!name.starts_with("step-") || !name.ends_with(".h5") || name.size() <= 8) return -1;
  const std::string digits = name.substr(5, name.size() - 8);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return -1;
  return std::stoll(digits);
}

// Checkpoint file names of `dir`, newest first.
std::vector<std::string> checkpoints_newest_first(const std::filesystem::path& dir) {
  std::vector<std::pair<std::int64_t, std::string>> found;
  for (const std::string& name : folder_entries(dir))
    if (const std::int64_t step = step_of(name); step >= 0) found.emplace_back(step, name);
  std::sort(found.begin(), found.end(), std::greater<>());
  std::vector<std::string> names;
  for (auto& [step, name] : found) names.push_back(std::move(name));
  return names;
}

// ---------------------------------------------------------------- tensors

struct DtypeMapping {
  at::ScalarType scalar;
  const char* name;
  hid_t file_type;
  hid_t memory_type;
};

// HDF5 type ids are run-time values (H5T_* macros open the library), so the table is built on use.
std::vector<DtypeMapping> dtype_mappings() {
  return {{at::kFloat, "float32", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT},
          {at::kDouble, "float64", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE},
          {at::kLong, "int64", H5T_STD_I64LE, H5T_NATIVE_INT64},
          {at::kInt, "int32", H5T_STD_I32LE, H5T_NATIVE_INT32},
          {at::kShort, "int16", H5T_STD_I16LE, H5T_NATIVE_INT16},
          {at::kChar, "int8", H5T_STD_I8LE, H5T_NATIVE_INT8},
          {at::kByte, "uint8", H5T_STD_U8LE, H5T_NATIVE_UINT8},
          {at::kBool, "bool", H5T_STD_U8LE, H5T_NATIVE_UINT8},
          {at::kBFloat16, "bfloat16", H5T_STD_U16LE, H5T_NATIVE_UINT16},
          {at::kHalf, "float16", H5T_STD_U16LE, H5T_NATIVE_UINT16}};
}

void check_name(const std::string& name, const std::string& where) {
  DSEE_CHECK(!name.empty() && name != "." && name.find('/') == std::string::npos,
             "{}: tensor name '{}' must be non-empty and contain no '/'", where, name);
}

void write_tensors(hid_t location, const std::string& group_name, const NamedTensors& tensors,
                   const std::string& source) {
  const Handle group = hdf5::create_group(location, group_name, source);
  std::set<std::string> names;
  for (const NamedTensor& named : tensors) {
    const std::string where = fmt::format("{}, dataset '{}/{}'", source, group_name, named.name);
    check_name(named.name, where);
    DSEE_CHECK(names.insert(named.name).second, "{}: the name appears twice", where);
    DSEE_CHECK(named.tensor.defined(), "{}: the tensor is undefined", where);
    const at::Tensor cpu = named.tensor.detach().to(at::kCPU).contiguous();
    const auto mappings = dtype_mappings();
    const auto mapping = std::find_if(mappings.begin(), mappings.end(),
                                      [&](const DtypeMapping& m) { return m.scalar == cpu.scalar_type(); });
    DSEE_CHECK(mapping != mappings.end(), "{}: dtype {} cannot be stored in a checkpoint", where,
               c10::toString(cpu.scalar_type()));
    std::vector<hsize_t> dims;
    for (std::int64_t d : cpu.sizes()) dims.push_back(static_cast<hsize_t>(d));
    const Handle dataset = hdf5::write_dataset(group.get(), named.name, mapping->file_type, mapping->memory_type, dims,
                                               cpu.data_ptr(), true, where);
    hdf5::write_string_attribute(dataset.get(), "dtype", mapping->name, where);
  }
}

at::Tensor read_tensor(hid_t group, const std::string& name, const std::string& where) {
  Handle dataset(H5Dopen2(group, name.c_str(), H5P_DEFAULT), H5Dclose);
  DSEE_CHECK(dataset.ok(), "{}: not a dataset", where);
  const std::string dtype = hdf5::read_string_attribute(dataset.get(), "dtype");
  const auto mappings = dtype_mappings();
  const auto mapping =
      std::find_if(mappings.begin(), mappings.end(), [&](const DtypeMapping& m) { return dtype == m.name; });
  DSEE_CHECK(mapping != mappings.end(), "{}: attribute 'dtype' is '{}', not a dtype dsee stores", where, dtype);
  Handle type(H5Dget_type(dataset.get()), H5Tclose);
  DSEE_CHECK(H5Tget_class(type.get()) == H5Tget_class(mapping->file_type) &&
                 H5Tget_size(type.get()) == H5Tget_size(mapping->file_type),
             "{}: stored as a {}-byte {} type, which does not hold dtype {}", where, H5Tget_size(type.get()),
             H5Tget_class(type.get()) == H5T_FLOAT ? "float" : "non-float", dtype);
  Handle space(H5Dget_space(dataset.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  DSEE_CHECK(rank >= 0, "{}: cannot read its shape", where);
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  hsize_t elements = 1;
  for (const hsize_t d : dims) {
    DSEE_CHECK(d == 0 || elements <= std::numeric_limits<hsize_t>::max() / d, "{}: shape overflows (damaged)", where);
    elements *= d;
  }
  hdf5::check_dataset_fits(dataset.get(), elements, H5Tget_size(mapping->file_type), where);
  std::vector<std::int64_t> shape(dims.begin(), dims.end());
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(mapping->scalar));
  if (tensor.numel() > 0)
    DSEE_CHECK(H5Dread(dataset.get(), mapping->memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.data_ptr()) >= 0,
               "{}: cannot read the data (corrupted: Fletcher-32 checksum or storage error): {}", where,
               hdf5::error_text());
  if (mapping->scalar == at::kBool) {
    const auto* raw = static_cast<const std::uint8_t*>(tensor.data_ptr());
    for (std::int64_t i = 0; i < tensor.numel(); ++i)
      DSEE_CHECK(raw[i] <= 1, "{}: a bool tensor holds the byte {} at flat index {}", where, raw[i], i);
  }
  return tensor;
}

NamedTensors read_tensors(hid_t location, const std::string& group_name, const std::string& source) {
  DSEE_CHECK(H5Lexists(location, group_name.c_str(), H5P_DEFAULT) > 0, "{}: group '{}' is missing", source, group_name);
  Handle group(H5Gopen2(location, group_name.c_str(), H5P_DEFAULT), H5Gclose);
  DSEE_CHECK(group.ok(), "{}: '{}' is not a group", source, group_name);
  NamedTensors tensors;
  for (const std::string& name : hdf5::children(group.get(), fmt::format("{}, group '{}'", source, group_name)))
    tensors.push_back(
        {name, read_tensor(group.get(), name, fmt::format("{}, dataset '{}/{}'", source, group_name, name))});
  return tensors;
}

void write_string_dataset(hid_t location, const char* name, const std::string& value, const std::string& where) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle dataset(H5Dcreate2(location, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  const char* data = value.c_str();
  DSEE_CHECK(dataset.ok() && H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &data) >= 0,
             "{}: cannot write dataset '{}'", where, name);
}

std::string read_string_dataset(hid_t location, const char* name, const std::string& where) {
  DSEE_CHECK(H5Lexists(location, name, H5P_DEFAULT) > 0, "{}: dataset '{}' is missing", where, name);
  Handle dataset(H5Dopen2(location, name, H5P_DEFAULT), H5Dclose);
  Handle type(H5Dget_type(dataset.get()), H5Tclose);
  DSEE_CHECK(dataset.ok() && H5Tget_class(type.get()) == H5T_STRING && H5Tis_variable_str(type.get()) > 0,
             "{}: dataset '{}' must be a variable-length string", where, name);
  Handle memory_type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(memory_type.get(), H5T_VARIABLE);
  H5Tset_cset(memory_type.get(), H5T_CSET_UTF8);
  char* data = nullptr;
  DSEE_CHECK(H5Dread(dataset.get(), memory_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &data) >= 0 && data != nullptr,
             "{}: cannot read dataset '{}'", where, name);
  std::string value(data);
  H5free_memory(data);
  return value;
}

std::int64_t read_int64_scalar(hid_t object, const char* name, const std::string& where) {
  const auto values = hdf5::read_int64_attribute(object, name, where);
  DSEE_CHECK(values.size() == 1, "{}: attribute '{}' must be one integer", where, name);
  return values[0];
}

herr_t collect_attribute_name(hid_t, const char* name, const H5A_info_t*, void* names) {
  static_cast<std::vector<std::string>*>(names)->emplace_back(name);
  return 0;
}

void write_checkpoint_file(hid_t file, const CheckpointState& state, const std::string& source) {
  const BuildInfo build = build_info();
  hdf5::write_int64_attribute(file, "format_version", {kFormatVersion}, true, source);
  hdf5::write_string_attribute(file, "kind", kKind, source);
  hdf5::write_int64_attribute(file, "step", {state.step}, true, source);
  hdf5::write_int64_attribute(file, "epoch", {state.epoch}, true, source);
  hdf5::write_int64_attribute(file, "sample_index", {state.sample_index}, true, source);
  hdf5::write_string_attribute(file, "model_path", state.model_path, source);
  hdf5::write_uint64_attribute(file, "model_weights_hash", state.model_weights_hash, source);
  hdf5::write_string_attribute(file, "dsee_version", build.dsee_version, source);
  hdf5::write_string_attribute(file, "torch_version", build.torch_version, source);
  hdf5::write_string_attribute(file, "hdf5_version", build.hdf5_loaded, source);

  write_string_dataset(file, "config", state.config_text, source);
  {
    Handle config(H5Dopen2(file, "config", H5P_DEFAULT), H5Dclose);
    hdf5::write_uint64_attribute(config.get(), "hash", config_hash(state.config_text), source + ", dataset 'config'");
  }
  write_tensors(file, "trainable", state.trainable, source);
  write_tensors(file, "best", state.best, source);
  write_tensors(file, "optimizer", state.optimizer, source);
  {
    Handle optimizer(H5Gopen2(file, "optimizer", H5P_DEFAULT), H5Gclose);
    hdf5::write_int64_attribute(optimizer.get(), "step", {state.optimizer_step}, true, source + ", group 'optimizer'");
  }
  {
    const Handle scheduler = hdf5::create_group(file, "scheduler", source);
    for (const auto& [key, value] : state.scheduler) {
      Handle space(H5Screate(H5S_SCALAR), H5Sclose);
      Handle attribute(H5Acreate2(scheduler.get(), key.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                       H5Aclose);
      DSEE_CHECK(attribute.ok() && H5Awrite(attribute.get(), H5T_NATIVE_DOUBLE, &value) >= 0,
                 "{}, group 'scheduler': cannot write attribute '{}'", source, key);
    }
  }
  {
    const Handle rng = hdf5::create_group(file, "rng", source);
    if (state.rng_cpu.defined()) {
      const at::Tensor bytes = state.rng_cpu.to(at::kCPU).contiguous();
      DSEE_CHECK(bytes.scalar_type() == at::kByte && bytes.dim() == 1, "{}: the CPU generator state must be uint8 [n]",
                 source);
      hdf5::write_dataset(rng.get(), "cpu", H5T_STD_U8LE, H5T_NATIVE_UINT8, {static_cast<hsize_t>(bytes.numel())},
                          bytes.data_ptr(), true, source + ", dataset 'rng/cpu'");
    }
    NamedTensors cuda;
    for (std::size_t i = 0; i < state.rng_cuda.size(); ++i) cuda.push_back({std::to_string(i), state.rng_cuda[i]});
    write_tensors(rng.get(), "cuda", cuda, source + ", group 'rng'");
  }
  {
    const Handle omega = hdf5::create_group(file, "omega", source);
    omega_write_group(omega.get(), state.omega, state.omega_info, source + ", group 'omega'");
  }
  const Handle plan = hdf5::create_group(file, "plan", source);
  prune_plan_write_group(plan.get(), state.plan);
}

CheckpointState read_checkpoint_file(hid_t file, const std::string& source) {
  CheckpointState state;
  state.format_version = read_int64_scalar(file, "format_version", source);
  DSEE_CHECK(state.format_version == kFormatVersion,
             "{}: format_version {} is not supported (this dsee reads version {})", source, state.format_version,
             kFormatVersion);
  const std::string kind = hdf5::read_string_attribute(file, "kind");
  DSEE_CHECK(kind == kKind, "{}: attribute 'kind' is '{}', not '{}' (not a dsee checkpoint)", source, kind, kKind);
  state.step = read_int64_scalar(file, "step", source);
  state.epoch = read_int64_scalar(file, "epoch", source);
  state.sample_index = read_int64_scalar(file, "sample_index", source);
  state.model_path = hdf5::read_string_attribute(file, "model_path");
  state.model_weights_hash = hdf5::read_uint64_attribute(file, "model_weights_hash", source);
  state.versions = {{"dsee", hdf5::read_string_attribute(file, "dsee_version")},
                    {"torch", hdf5::read_string_attribute(file, "torch_version")},
                    {"hdf5", hdf5::read_string_attribute(file, "hdf5_version")}};

  state.config_text = read_string_dataset(file, "config", source);
  {
    Handle config(H5Dopen2(file, "config", H5P_DEFAULT), H5Dclose);
    state.config_hash = hdf5::read_uint64_attribute(config.get(), "hash", source + ", dataset 'config'");
    DSEE_CHECK(state.config_hash == config_hash(state.config_text),
               "{}, dataset 'config': attribute 'hash' {:016x} does not match the text's hash {:016x} (corrupted)",
               source, state.config_hash, config_hash(state.config_text));
  }
  state.trainable = read_tensors(file, "trainable", source);
  if (H5Lexists(file, "best", H5P_DEFAULT) > 0) state.best = read_tensors(file, "best", source);
  state.optimizer = read_tensors(file, "optimizer", source);
  {
    Handle optimizer(H5Gopen2(file, "optimizer", H5P_DEFAULT), H5Gclose);
    state.optimizer_step = read_int64_scalar(optimizer.get(), "step", source + ", group 'optimizer'");
  }
  {
    DSEE_CHECK(H5Lexists(file, "scheduler", H5P_DEFAULT) > 0, "{}: group 'scheduler' is missing", source);
    Handle scheduler(H5Gopen2(file, "scheduler", H5P_DEFAULT), H5Gclose);
    std::vector<std::string> keys;
    hsize_t index = 0;
    H5Aiterate2(scheduler.get(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_attribute_name, &keys);
    for (const std::string& key : keys) {
      Handle attribute(H5Aopen(scheduler.get(), key.c_str(), H5P_DEFAULT), H5Aclose);
      double value = 0;
      DSEE_CHECK(H5Aread(attribute.get(), H5T_NATIVE_DOUBLE, &value) >= 0,
                 "{}, group 'scheduler': cannot read attribute '{}' as a float", source, key);
      state.scheduler[key] = value;
    }
  }
  {
    DSEE_CHECK(H5Lexists(file, "rng", H5P_DEFAULT) > 0, "{}: group 'rng' is missing", source);
    Handle rng(H5Gopen2(file, "rng", H5P_DEFAULT), H5Gclose);
    if (H5Lexists(rng.get(), "cpu", H5P_DEFAULT) > 0) {
      Handle dataset(H5Dopen2(rng.get(), "cpu", H5P_DEFAULT), H5Dclose);
      Handle space(H5Dget_space(dataset.get()), H5Sclose);
      hsize_t count = 0;
      DSEE_CHECK(H5Sget_simple_extent_ndims(space.get()) == 1, "{}, dataset 'rng/cpu': must be 1-D uint8", source);
      H5Sget_simple_extent_dims(space.get(), &count, nullptr);
      state.rng_cpu = at::empty({static_cast<std::int64_t>(count)}, at::kByte);
      DSEE_CHECK(count == 0 || H5Dread(dataset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                       state.rng_cpu.data_ptr()) >= 0,
                 "{}, dataset 'rng/cpu': cannot read the data (corrupted)", source);
    }
    for (NamedTensor& named : read_tensors(rng.get(), "cuda", source + ", group 'rng'"))
      state.rng_cuda.push_back(std::move(named.tensor));
  }
  {
    DSEE_CHECK(H5Lexists(file, "omega", H5P_DEFAULT) > 0, "{}: group 'omega' is missing", source);
    Handle omega(H5Gopen2(file, "omega", H5P_DEFAULT), H5Gclose);
    state.omega = omega_read_group(omega.get(), source + ", group 'omega'", &state.omega_info);
  }
  DSEE_CHECK(H5Lexists(file, "plan", H5P_DEFAULT) > 0, "{}: group 'plan' is missing", source);
  Handle plan(H5Gopen2(file, "plan", H5P_DEFAULT), H5Gclose);
  state.plan = prune_plan_read_group(plan.get(), source + ", group 'plan'");
  return state;
}

}  // namespace

std::uint64_t config_hash(const std::string& config_text) { return hash64(config_text.data(), config_text.size()); }

std::uint64_t model_weights_hash(const std::filesystem::path& model_dir) {
  const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::open(model_dir);
  Hash64 hash;
  const std::uint8_t zero = 0;
  for (const std::string& name : checkpoint.names()) {
    const SafetensorsEntry& entry = checkpoint.entry(name);
    hash.update(name.data(), name.size());
    hash.update(&zero, 1);
    const std::string_view dtype = safetensors_dtype(entry.dtype, name).name;
    hash.update(dtype.data(), dtype.size());
    hash.update(&zero, 1);
    for (std::int64_t d : entry.shape) hash.update(&d, sizeof d);
    const at::Tensor contiguous = checkpoint.tensor(name).contiguous();
    hash.update(contiguous.data_ptr(), static_cast<std::size_t>(contiguous.nbytes()));
  }
  return hash.digest();
}

std::filesystem::path checkpoint_write(const std::filesystem::path& dir, const CheckpointState& state, int keep_last) {
  DSEE_CHECK(keep_last >= 1, "checkpoints: keep_last must be at least 1, got {}", keep_last);
  DSEE_CHECK(state.step >= 0, "checkpoints: the step must be non-negative, got {}", state.step);
  folder_create(dir);

  const std::string name = fmt::format("step-{}.h5", state.step);
  const std::filesystem::path path = dir / name;
  const std::string source = fmt::format("checkpoint '{}'", path.string());
  hdf5::write_file_atomically(path, "checkpoint", [&](hid_t file) { write_checkpoint_file(file, state, source); });
  checksum_write(path);
  file_write_text(dir / "latest", name + "\n");

  const std::vector<std::string> all = checkpoints_newest_first(dir);
  for (std::size_t i = static_cast<std::size_t>(keep_last); i < all.size(); ++i) {
    if (all[i] == name) continue;  // an older step number written later (a restarted run) stays: `latest` names it
    ::unlink((dir / all[i]).c_str());
    ::unlink(checksum_sidecar(dir / all[i]).c_str());
  }
  return path;
}

void checkpoints_remove(const std::filesystem::path& dir) {
  // POSIX calls, not std::filesystem::remove_all (Note [std::filesystem and libtorch] in omega_file.cpp).
  for (const std::string& name : checkpoints_newest_first(dir)) {
    ::unlink((dir / name).c_str());
    ::unlink(checksum_sidecar(dir / name).c_str());
  }
  ::unlink((dir / "latest").c_str());
  ::rmdir(dir.c_str());
}

CheckpointState checkpoint_read(const std::filesystem::path& path, bool verify_sidecar) {
  const std::string source = fmt::format("checkpoint '{}'", path.string());
  DSEE_CHECK(is_plain_file(path), "{} does not exist", source);
  if (verify_sidecar) checksum_verify(path, source, ChecksumSidecar::required);
  hdf5::Quiet quiet;
  const Handle file = hdf5::open_read(path, source, " (truncated or corrupted)");
  return read_checkpoint_file(file.get(), source);
}

std::optional<LoadedCheckpoint> checkpoint_load_latest(const std::filesystem::path& dir) {
  std::vector<std::string> order;
  const std::filesystem::path latest = dir / "latest";
  if (is_plain_file(latest)) {
    std::string named = file_read_text(latest);
    while (!named.empty() && (named.back() == '\n' || named.back() == '\r')) named.pop_back();
    if (step_of(named) >= 0)
      order.push_back(named);
    else
      spdlog::warn("checkpoints: '{}' does not name a checkpoint ('{}'); trying the newest ones", latest.string(),
                   named);
  }
  for (const std::string& name : checkpoints_newest_first(dir))
    if (std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
  if (order.empty()) return std::nullopt;

  std::vector<std::string> failures;
  for (const std::string& name : order) {
    const std::filesystem::path path = dir / name;
    try {
      CheckpointState state = checkpoint_read(path);
      if (!failures.empty())
        spdlog::warn("checkpoints: resuming from the previous checkpoint '{}' instead", path.string());
      return LoadedCheckpoint{path, std::move(state)};
    } catch (const Error& e) {
      spdlog::warn("checkpoints: cannot use '{}': {}", path.string(), e.what());
      failures.push_back(e.what());
    }
  }
  DSEE_CHECK(false, "checkpoints in '{}': none is usable:\n  {}", dir.string(), fmt::join(failures, "\n  "));
  return std::nullopt;
}

void checkpoint_check_compatible(const std::filesystem::path& checkpoint, const CheckpointState& state,
                                 const std::string& config_text, std::uint64_t model_weights_hash,
                                 const std::vector<std::string>& ignore) {
  std::vector<std::string> differing;
  for (std::string& difference : config_differences(
           state.config_text, config_text, fmt::format("checkpoint '{}', dataset 'config'", checkpoint.string()),
           "the current configuration")) {
    const std::string key = difference.substr(0, difference.find(':'));
    if (std::find(ignore.begin(), ignore.end(), key) == ignore.end()) differing.push_back(std::move(difference));
  }
  DSEE_CHECK(differing.empty(),
             "checkpoint '{}' was written by a different recipe; these keys differ (checkpoint → now):\n  {}\n"
             "Resume with the recipe it was written with, or start a new run folder.",
             checkpoint.string(), fmt::join(differing, "\n  "));
  DSEE_CHECK(state.model_weights_hash == model_weights_hash,
             "checkpoint '{}' was trained from other pretrained weights: hash {:016x} (of '{}') but the model now "
             "hashes to {:016x}; resume with the model it was written with",
             checkpoint.string(), state.model_weights_hash, state.model_path, model_weights_hash);
}

void checkpoint_capture_rng(CheckpointState& state) {
  {
    at::Generator cpu = at::globalContext().defaultGenerator(at::Device(at::kCPU));
    std::lock_guard<std::mutex> lock(cpu.mutex());
    state.rng_cpu = cpu.get_state().clone();
  }
  state.rng_cuda.clear();
  const at::CUDAHooksInterface& hooks = at::detail::getCUDAHooks();
  if (!hooks.hasCUDA()) return;
  for (c10::DeviceIndex i = 0; i < hooks.deviceCount(); ++i) {
    at::Generator cuda = at::globalContext().defaultGenerator(at::Device(at::kCUDA, i));
    std::lock_guard<std::mutex> lock(cuda.mutex());
    state.rng_cuda.push_back(cuda.get_state().clone());
  }
}

void checkpoint_restore_rng(const CheckpointState& state) {
  if (state.rng_cpu.defined()) {
    at::Generator cpu = at::globalContext().defaultGenerator(at::Device(at::kCPU));
    std::lock_guard<std::mutex> lock(cpu.mutex());
    cpu.set_state(state.rng_cpu);
  }
  const at::CUDAHooksInterface& hooks = at::detail::getCUDAHooks();
  if (!hooks.hasCUDA()) return;
  const auto count = std::min<std::size_t>(state.rng_cuda.size(), static_cast<std::size_t>(hooks.deviceCount()));
  for (std::size_t i = 0; i < count; ++i) {
    at::Generator cuda = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
    std::lock_guard<std::mutex> lock(cuda.mutex());
    cuda.set_state(state.rng_cuda[i]);
  }
}

}  // namespace dsee
