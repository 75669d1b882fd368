// masks.h5: writing and reading a PrunePlan (contract and layout: prune_plan.h).
//
// Note [masks.h5 layout]
// ~~~~~~~~~~~~~~~~~~~~~~
// A mask is a mix of ones and zeros after unstructured pruning at moderate
// sparsity, mostly ones with a handful of zeros at very low sparsity, and
// mostly zeros with a handful of ones at very high sparsity, so three
// encodings:
//
//   "bits"          uint8 [ceil(numel / 8)]: the flat row-major mask, 8
//                   entries per byte, the first entry in the most significant
//                   bit (numpy.unpackbits' default order); padding bits of
//                   the last byte are 0. numel/8 bytes whatever the density.
//   "zero_indices"  int64 [zeros]: the ascending flat indices of the zeros;
//                   8 bytes per zero, so smaller than "bits" exactly when
//                   fewer than numel/64 entries are zero. We switch at 1/32:
//                   below it the index list is at most twice the bit string
//                   and is readable by eye.
//   "one_indices"   int64 [ones]: the ascending flat indices of the ones,
//                   used when fewer than numel/32 entries are one (the mask
//                   itself is sparser than 1/32), by the same reasoning.
// Zeros and ones cannot both be under 1/32 of the entries; a mask with no
// zeros is an empty "zero_indices", one with no ones an empty "one_indices".
//
// Every mask dataset carries "shape" (int64 [2], [out, in]), "encoding" and
// "numel" (int64, out·in), checked against each other and the data on read;
// datasets are Fletcher-32 checksummed, so a flipped byte is a read error
// rather than a silently different mask. Heads: /heads/<layer> (decimal
// layer number) holds the removed original head ids, strictly ascending;
// /neurons/<layer> the removed feed-forward neuron ids the same way (written
// only when some are removed, so a plan without neurons is the file older
// versions wrote and read). Root (or group) attributes: "format_version"
// (int64, 1) and "kind": the parts present, "unstructured", "heads",
// "neurons", joined by '+' in that order, or "empty" for none.
#include "core/sparsity/prune_plan.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <charconv>
#include <set>

#include "base/error.h"
#include "base/hashing.h"
#include "core/io/hdf5_io.h"

namespace dsee {
namespace {

using hdf5::Handle;

constexpr std::int64_t kFormatVersion = 1;

std::string plan_kind(const PrunePlan& plan) {
  std::string kind;
  const auto add = [&](bool present, const char* part) {
    if (present) kind += (kind.empty() ? "" : "+") + std::string(part);
  };
  add(!plan.masks.empty(), "unstructured");
  add(!plan.heads.empty(), "heads");
  add(!plan.neurons.empty(), "neurons");
  return kind.empty() ? "empty" : kind;
}

// The kinds a file may name: every non-empty combination in plan_kind's order, and "empty".
bool plan_kind_known(const std::string& kind) {
  for (const char* known : {"empty", "unstructured", "heads", "neurons", "unstructured+heads", "unstructured+neurons",
                            "heads+neurons", "unstructured+heads+neurons"})
    if (kind == known) return true;
  return false;
}

// Checks one layer's removed ids (heads or neurons): non-negative, strictly ascending.
void check_ids(const std::vector<std::int64_t>& ids, const std::string& where, const char* what) {
  for (std::size_t i = 0; i < ids.size(); ++i) {
    DSEE_CHECK(ids[i] >= 0, "{}: {} id {} is negative", where, what, ids[i]);
    DSEE_CHECK(i == 0 || ids[i] > ids[i - 1], "{}: {} ids must be strictly ascending ({} after {})", where, what,
               ids[i], ids[i - 1]);
  }
}

// The mask as a contiguous bool [out, in] on the CPU, after checking it is 2-D and 0/1.
at::Tensor checked_mask(const PrunePlan::Mask& mask, const std::string& where) {
  DSEE_CHECK(!mask.module.empty() && mask.module != "." && mask.module.find('/') == std::string::npos,
             "{}: a module name must be non-empty and contain no '/'", where);
  DSEE_CHECK(mask.mask.defined() && mask.mask.dim() == 2, "{}: the mask must be a 2-D [out, in] tensor, got {}", where,
             mask.mask.defined() ? fmt::format("{} dimensions", mask.mask.dim()) : std::string("none"));
  const at::Tensor cpu = mask.mask.to(at::kCPU);
  if (cpu.scalar_type() == at::kBool) return cpu.contiguous();
  DSEE_CHECK(!at::isComplexType(cpu.scalar_type()), "{}: the mask must be bool or real", where);
  DSEE_CHECK(at::logical_or(cpu == 0, cpu == 1).all().item<bool>(), "{}: the mask holds values other than 0 and 1",
             where);
  return (cpu != 0).contiguous();
}

void write_mask(hid_t group, const std::string& module, const at::Tensor& mask, const std::string& where) {
  const std::int64_t rows = mask.size(0), cols = mask.size(1), numel = mask.numel();
  const auto* on = mask.data_ptr<bool>();
  std::int64_t zeros = 0;
  for (std::int64_t i = 0; i < numel; ++i) zeros += on[i] ? 0 : 1;

  const std::int64_t ones = numel - zeros;
  const char* encoding = zeros * 32 < numel ? "zero_indices" : ones * 32 < numel ? "one_indices" : "bits";
  const auto write_data = [&]() -> Handle {
    if (encoding[0] != 'b') {
      const bool listed = encoding[0] == 'o';  // the value whose positions are listed
      std::vector<std::int64_t> indices;
      indices.reserve(static_cast<std::size_t>(listed ? ones : zeros));
      for (std::int64_t i = 0; i < numel; ++i)
        if (on[i] == listed) indices.push_back(i);
      return hdf5::write_dataset(group, module, H5T_STD_I64LE, H5T_NATIVE_INT64, {indices.size()}, indices.data(), true,
                                 where);
    }
    std::vector<std::uint8_t> bits(static_cast<std::size_t>((numel + 7) / 8), 0);
    for (std::int64_t i = 0; i < numel; ++i)
      if (on[i]) bits[static_cast<std::size_t>(i / 8)] |= static_cast<std::uint8_t>(0x80u >> (i % 8));
    return hdf5::write_dataset(group, module, H5T_STD_U8LE, H5T_NATIVE_UINT8, {bits.size()}, bits.data(), true, where);
  };
  const Handle dataset = write_data();
  hdf5::write_int64_attribute(dataset.get(), "shape", {rows, cols}, false, where);
  hdf5::write_string_attribute(dataset.get(), "encoding", encoding, where);
  hdf5::write_int64_attribute(dataset.get(), "numel", {numel}, true, where);
}

// The raw contents of a 1-D dataset of the given integer kind; throws naming `where`.
template <typename T>
std::vector<T> read_vector(hid_t dataset, hid_t memory_type, std::size_t size, bool is_signed, const std::string& where,
                           const char* what) {
  Handle type(H5Dget_type(dataset), H5Tclose);
  DSEE_CHECK(H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == size &&
                 (H5Tget_sign(type.get()) == H5T_SGN_2) == is_signed,
             "{}: {} must be stored as {}", where, what, is_signed ? "int64" : "uint8");
  Handle space(H5Dget_space(dataset), H5Sclose);
  DSEE_CHECK(H5Sget_simple_extent_ndims(space.get()) == 1, "{}: {} must be a 1-D dataset, got {} dimensions", where,
             what, H5Sget_simple_extent_ndims(space.get()));
  hsize_t count = 0;
  H5Sget_simple_extent_dims(space.get(), &count, nullptr);
  std::vector<T> values(count);
  DSEE_CHECK(count == 0 || H5Dread(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) >= 0,
             "{}: cannot read {} (corrupted: checksum or storage error): {}", where, what, hdf5::error_text());
  return values;
}

PrunePlan::Mask read_mask(hid_t group, const std::string& module, const std::string& where) {
  Handle dataset(H5Dopen2(group, module.c_str(), H5P_DEFAULT), H5Dclose);
  DSEE_CHECK(dataset.ok(), "{}: not a dataset", where);
  const std::vector<std::int64_t> shape = hdf5::read_int64_attribute(dataset.get(), "shape", where);
  DSEE_CHECK(shape.size() == 2 && shape[0] > 0 && shape[1] > 0,
             "{}: attribute 'shape' must hold two positive integers [out, in], got {} values", where, shape.size());
  const std::vector<std::int64_t> numel_attribute = hdf5::read_int64_attribute(dataset.get(), "numel", where);
  const std::int64_t numel = shape[0] * shape[1];
  DSEE_CHECK(numel_attribute.size() == 1 && numel_attribute[0] == numel,
             "{}: attribute 'numel' ({}) does not match shape [{}, {}] ({} entries)", where,
             numel_attribute.empty() ? -1 : numel_attribute[0], shape[0], shape[1], numel);
  const std::string encoding = hdf5::read_string_attribute(dataset.get(), "encoding");

  at::Tensor mask = at::ones({shape[0], shape[1]}, at::kBool);
  auto* on = mask.data_ptr<bool>();
  if (encoding == "bits") {
    const auto bits = read_vector<std::uint8_t>(dataset.get(), H5T_NATIVE_UINT8, 1, false, where, "the bits");
    DSEE_CHECK(static_cast<std::int64_t>(bits.size()) == (numel + 7) / 8,
               "{}: {} bytes of bits for {} entries; expected {} (wrong shape or truncated data)", where, bits.size(),
               numel, (numel + 7) / 8);
    for (std::int64_t i = 0; i < numel; ++i) on[i] = (bits[static_cast<std::size_t>(i / 8)] & (0x80u >> (i % 8))) != 0;
    if (numel % 8 != 0)
      DSEE_CHECK((bits.back() & (0xFFu >> (numel % 8))) == 0, "{}: padding bits of the last byte are not zero", where);
  } else if (encoding == "zero_indices" || encoding == "one_indices") {
    const bool listed = encoding == "one_indices";  // the value at the listed positions
    const auto indices = read_vector<std::int64_t>(dataset.get(), H5T_NATIVE_INT64, 8, true, where,
                                                   listed ? "the one indices" : "the zero indices");
    if (listed) mask.fill_(false);
    for (std::size_t i = 0; i < indices.size(); ++i) {
      DSEE_CHECK(indices[i] >= 0 && indices[i] < numel,
                 "{}: index {} at position {} is outside [0, {}) for shape [{}, {}]", where, indices[i], i, numel,
                 shape[0], shape[1]);
      DSEE_CHECK(i == 0 || indices[i] > indices[i - 1],
                 "{}: indices are not strictly ascending at position {} ({} after {})", where, i, indices[i],
                 indices[i - 1]);
      on[indices[i]] = listed;
    }
  } else {
    DSEE_CHECK(false, "{}: attribute 'encoding' is '{}'; expected 'bits', 'zero_indices' or 'one_indices'", where,
               encoding);
  }
  return {module, mask};
}

std::int64_t parse_layer(const std::string& name, const std::string& where) {
  std::int64_t layer = -1;
  const auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), layer);
  DSEE_CHECK(error == std::errc() && end == name.data() + name.size() && layer >= 0,
             "{}: the name must be a layer number (0, 1, …)", where);
  return layer;
}

void write_plan(hid_t loc, const PrunePlan& plan, const std::string& where) {
  // Validate everything before writing anything.
  std::vector<at::Tensor> masks;
  std::set<std::string> modules;
  for (const PrunePlan::Mask& mask : plan.masks) {
    const std::string mask_where = fmt::format("{}, mask '{}'", where, mask.module);
    DSEE_CHECK(modules.insert(mask.module).second, "{}: the module appears twice", mask_where);
    masks.push_back(checked_mask(mask, mask_where));
  }
  for (const auto& [layer, heads] : plan.heads) {
    const std::string head_where = fmt::format("{}, heads of layer {}", where, layer);
    DSEE_CHECK(layer >= 0, "{}: the layer number must be non-negative", head_where);
    check_ids(heads, head_where, "head");
  }
  for (const auto& [layer, neurons] : plan.neurons) {
    const std::string neuron_where = fmt::format("{}, neurons of layer {}", where, layer);
    DSEE_CHECK(layer >= 0, "{}: the layer number must be non-negative", neuron_where);
    check_ids(neurons, neuron_where, "neuron");
  }

  hdf5::Quiet quiet;
  hdf5::write_int64_attribute(loc, "format_version", {kFormatVersion}, true, where);
  hdf5::write_string_attribute(loc, "kind", plan_kind(plan), where);
  {
    const Handle group = hdf5::create_group(loc, "masks", where);
    for (std::size_t i = 0; i < masks.size(); ++i)
      write_mask(group.get(), plan.masks[i].module, masks[i],
                 fmt::format("{}, dataset 'masks/{}'", where, plan.masks[i].module));
  }
  const auto write_layers = [&](const char* group_name, const std::map<std::int64_t, std::vector<std::int64_t>>& ids) {
    const Handle group = hdf5::create_group(loc, group_name, where);
    for (const auto& [layer, removed] : ids) {
      const std::string name = std::to_string(layer);
      hdf5::write_dataset(group.get(), name, H5T_STD_I64LE, H5T_NATIVE_INT64, {removed.size()}, removed.data(), true,
                          fmt::format("{}, dataset '{}/{}'", where, group_name, name));
    }
  };
  write_layers("heads", plan.heads);
  if (!plan.neurons.empty()) write_layers("neurons", plan.neurons);
}

// Group `group_name` of per-layer id lists ("heads", "neurons"), when present.
std::map<std::int64_t, std::vector<std::int64_t>> read_layers(hid_t loc, const char* group_name, const char* what,
                                                              const std::string& where) {
  std::map<std::int64_t, std::vector<std::int64_t>> out;
  if (H5Lexists(loc, group_name, H5P_DEFAULT) <= 0) return out;
  Handle group(H5Gopen2(loc, group_name, H5P_DEFAULT), H5Gclose);
  DSEE_CHECK(group.ok(), "{}: '{}' is not a group", where, group_name);
  for (const std::string& name : hdf5::children(group.get(), fmt::format("{}, group '{}'", where, group_name))) {
    const std::string layer_where = fmt::format("{}, dataset '{}/{}'", where, group_name, name);
    const std::int64_t layer = parse_layer(name, layer_where);
    Handle dataset(H5Dopen2(group.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    DSEE_CHECK(dataset.ok(), "{}: not a dataset", layer_where);
    auto ids = read_vector<std::int64_t>(dataset.get(), H5T_NATIVE_INT64, 8, true, layer_where,
                                         fmt::format("the {} ids", what).c_str());
    check_ids(ids, layer_where, what);
    out[layer] = std::move(ids);
  }
  return out;
}

}  // namespace

void prune_plan_write_group(std::int64_t location, const PrunePlan& plan) {
  write_plan(static_cast<hid_t>(location), plan, "prune plan");
}

PrunePlan prune_plan_read_group(std::int64_t location, const std::string& where) {
  const auto loc = static_cast<hid_t>(location);
  hdf5::Quiet quiet;
  const std::vector<std::int64_t> version = hdf5::read_int64_attribute(loc, "format_version", where);
  DSEE_CHECK(version.size() == 1 && version[0] == kFormatVersion,
             "{}: format_version {} is not supported (this dsee reads version {})", where,
             version.empty() ? -1 : version[0], kFormatVersion);
  const std::string kind = hdf5::read_string_attribute(loc, "kind");
  DSEE_CHECK(plan_kind_known(kind),
             "{}: attribute 'kind' is '{}'; expected 'empty' or 'unstructured', 'heads', 'neurons' joined by '+' in "
             "that order",
             where, kind);

  PrunePlan plan;
  if (H5Lexists(loc, "masks", H5P_DEFAULT) > 0) {
    Handle group(H5Gopen2(loc, "masks", H5P_DEFAULT), H5Gclose);
    DSEE_CHECK(group.ok(), "{}: 'masks' is not a group", where);
    for (const std::string& module : hdf5::children(group.get(), where + ", group 'masks'"))
      plan.masks.push_back(read_mask(group.get(), module, fmt::format("{}, dataset 'masks/{}'", where, module)));
  }
  plan.heads = read_layers(loc, "heads", "head", where);
  plan.neurons = read_layers(loc, "neurons", "neuron", where);
  const bool kind_matches = kind == plan_kind(plan);
  DSEE_CHECK(kind_matches,
             "{}: attribute 'kind' is '{}' but the file holds {} masks, {} head layers and {} neuron layers ('{}')",
             where, kind, plan.masks.size(), plan.heads.size(), plan.neurons.size(), plan_kind(plan));
  return plan;
}

void prune_plan_write(const std::filesystem::path& path, const PrunePlan& plan) {
  const std::string where = fmt::format("prune plan '{}'", path.string());
  checksum_remove(path);  // Note [Checksum sidecars] in base/hashing.cpp
  hdf5::write_file_atomically(path, "prune plan", [&](hid_t file) { write_plan(file, plan, where); });
  checksum_write(path);
}

PrunePlan prune_plan_read(const std::filesystem::path& path) {
  const std::string source = path.string();
  struct stat status {};
  DSEE_CHECK(::stat(source.c_str(), &status) == 0 && S_ISREG(status.st_mode),
             "prune plan '{}' does not exist (write it with the pipeline's prune stage)", source);
  const std::string what = fmt::format("prune plan '{}'", source);
  checksum_verify(path, what, ChecksumSidecar::if_present);
  hdf5::Quiet quiet;
  const Handle file = hdf5::open_read(path, what);
  return prune_plan_read_group(file.get(), what);
}

}  // namespace dsee
