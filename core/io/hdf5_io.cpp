// Shared HDF5 pieces (contract: hdf5_io.h).
//
// Note [HDF5 files in memory]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// HDF5 writes a file in many small pieces, some of them only when the file
// is closed (metadata, chunk caches). When one of those writes fails (a full
// disk), HDF5 1.10 cannot close the file: H5Fclose fails, its id stays
// registered with a half-torn-down file behind it, and at exit the library's
// shutdown walks that id again — the result was a SIGSEGV in H5F__close_cb,
// or "HDF5: infinite loop closing library" and a line of "FL,FL,…" on
// stderr, and a message that blamed the folder instead of the disk.
//
// So dsee builds every HDF5 file in memory, with the core driver and no
// backing store (H5Pset_fapl_core(…, 0)): H5Fcreate, every dataset and the
// final H5Fclose only move bytes in memory, where nothing can fail but an
// allocation. File-image callbacks (H5Pset_file_image_callbacks) hand us the
// driver's buffer at close instead of freeing it; its first bytes are the
// superblock, whose end-of-file address (HDF5 file format specification,
// "Superblock"; offset 40 in version 0, 44 in 1, 28 in 2 and 3) is where
// the sec2 driver would have truncated the file, so the bytes written are
// exactly those HDF5 writes to disk itself (the buffer grows in increments
// and is larger). That one block then goes through base/files.h's
// file_write_atomic like every other file: its errors carry errno's text
// and the temporary is removed. The cost is one copy of the file in memory
// while it is built (the tensors are copied to the CPU for the write anyway).
//
// Reading stays with the default (sec2) driver: nothing is written, and a
// failed read leaves nothing dirty behind.
#include "core/io/hdf5_io.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "base/error.h"
#include "base/files.h"

namespace dsee::hdf5 {

void write_string_attribute(hid_t object, const char* name, const std::string& value, const std::string& where) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attribute(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const char* data = value.c_str();
  DSEE_CHECK(attribute.ok() && H5Awrite(attribute.get(), type.get(), &data) >= 0,
             "{}: cannot write attribute '{}' ({})", where, name, error_text());
}

void write_int64_attribute(hid_t object, const char* name, const std::vector<std::int64_t>& values, bool scalar,
                           const std::string& where) {
  const hsize_t dims[1] = {values.size()};
  Handle space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, nullptr), H5Sclose);
  Handle attribute(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DSEE_CHECK(attribute.ok() && (values.empty() || H5Awrite(attribute.get(), H5T_NATIVE_INT64, values.data()) >= 0),
             "{}: cannot write attribute '{}' ({})", where, name, error_text());
}

void write_uint64_attribute(hid_t object, const char* name, std::uint64_t value, const std::string& where) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attribute(H5Acreate2(object, name, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DSEE_CHECK(attribute.ok() && H5Awrite(attribute.get(), H5T_NATIVE_UINT64, &value) >= 0,
             "{}: cannot write attribute '{}' ({})", where, name, error_text());
}

std::string read_string_attribute(hid_t object, const char* name) {
  if (H5Aexists(object, name) <= 0) return "";
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attribute.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) return "";
  if (H5Tis_variable_str(type.get()) > 0) {
    char* data = nullptr;
    if (H5Aread(attribute.get(), type.get(), &data) < 0 || data == nullptr) return "";
    std::string value(data);
    H5free_memory(data);
    return value;
  }
  std::string value(H5Tget_size(type.get()), '\0');
  if (H5Aread(attribute.get(), type.get(), value.data()) < 0) return "";
  return value.substr(0, value.find('\0'));
}

namespace {

hsize_t attribute_count(hid_t attribute, const std::string& where, const char* name) {
  Handle space(H5Aget_space(attribute), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  DSEE_CHECK(rank == 0 || rank == 1, "{}: attribute '{}' must be a scalar or a 1-D list", where, name);
  if (rank == 0) return 1;
  hsize_t count = 0;
  H5Sget_simple_extent_dims(space.get(), &count, nullptr);
  return count;
}

}  // namespace

std::vector<std::int64_t> read_int64_attribute(hid_t object, const char* name, const std::string& where) {
  DSEE_CHECK(H5Aexists(object, name) > 0, "{}: attribute '{}' is missing", where, name);
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attribute.get()), H5Tclose);
  DSEE_CHECK(H5Tget_class(type.get()) == H5T_INTEGER, "{}: attribute '{}' must hold integers", where, name);
  std::vector<std::int64_t> values(attribute_count(attribute.get(), where, name));
  DSEE_CHECK(values.empty() || H5Aread(attribute.get(), H5T_NATIVE_INT64, values.data()) >= 0,
             "{}: cannot read attribute '{}'", where, name);
  return values;
}

std::uint64_t read_uint64_attribute(hid_t object, const char* name, const std::string& where) {
  DSEE_CHECK(H5Aexists(object, name) > 0, "{}: attribute '{}' is missing", where, name);
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attribute.get()), H5Tclose);
  DSEE_CHECK(H5Tget_class(type.get()) == H5T_INTEGER && attribute_count(attribute.get(), where, name) == 1,
             "{}: attribute '{}' must be one integer", where, name);
  std::uint64_t value = 0;
  DSEE_CHECK(H5Aread(attribute.get(), H5T_NATIVE_UINT64, &value) >= 0, "{}: cannot read attribute '{}'", where, name);
  return value;
}

Handle create_group(hid_t location, const std::string& name, const std::string& where) {
  Handle create_list(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
  H5Pset_link_creation_order(create_list.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  Handle group(H5Gcreate2(location, name.c_str(), H5P_DEFAULT, create_list.get(), H5P_DEFAULT), H5Gclose);
  DSEE_CHECK(group.ok(), "{}: cannot create group '{}' ({})", where, name, error_text());
  return group;
}

namespace {

herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* names) {
  static_cast<std::vector<std::string>*>(names)->emplace_back(name);
  return 0;
}

}  // namespace

std::vector<std::string> children(hid_t group, const std::string& where) {
  // A file id is also accepted as its root group; its creation list is the root group's.
  Handle self(H5Gopen2(group, ".", H5P_DEFAULT), H5Gclose);
  Handle create_list(self.ok() ? H5Gget_create_plist(self.get()) : -1, H5Pclose);
  unsigned order_flags = 0;
  if (create_list.ok()) H5Pget_link_creation_order(create_list.get(), &order_flags);
  const H5_index_t index = (order_flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
  std::vector<std::string> names;
  DSEE_CHECK(H5Literate(group, index, H5_ITER_INC, nullptr, collect_name, &names) >= 0, "{}: cannot list its members",
             where);
  return names;
}

Handle write_dataset(hid_t location, const std::string& name, hid_t file_type, hid_t memory_type,
                     const std::vector<hsize_t>& dims, const void* data, bool fletcher32, const std::string& where) {
  hsize_t count = 1;
  for (hsize_t d : dims) count *= d;
  Handle space(
      dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
      H5Sclose);
  Handle create_list(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (fletcher32 && !dims.empty() && count > 0) {
    // Chunks of at most ~4 MiB: whole trailing dimensions, as many leading rows as fit.
    const std::size_t element = H5Tget_size(file_type);
    std::vector<hsize_t> chunk = dims;
    hsize_t chunk_bytes = count * element;
    for (std::size_t axis = 0; axis < chunk.size() && chunk_bytes > (hsize_t{4} << 20); ++axis) {
      const hsize_t rest = chunk_bytes / chunk[axis];
      chunk[axis] = std::max<hsize_t>(1, (hsize_t{4} << 20) / std::max<hsize_t>(rest, 1));
      chunk_bytes = rest * chunk[axis];
    }
    DSEE_CHECK(H5Pset_chunk(create_list.get(), static_cast<int>(chunk.size()), chunk.data()) >= 0 &&
                   H5Pset_fletcher32(create_list.get()) >= 0,
               "{}: cannot set up Fletcher-32 for dataset '{}'", where, name);
  }
  Handle dataset(
      H5Dcreate2(location, name.c_str(), file_type, space.get(), H5P_DEFAULT, create_list.get(), H5P_DEFAULT),
      H5Dclose);
  DSEE_CHECK(dataset.ok(), "{}: cannot create dataset '{}' ({})", where, name, error_text());
  DSEE_CHECK(count == 0 || H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0,
             "{}: cannot write dataset '{}' ({})", where, name, error_text());
  return dataset;
}

namespace {

// The core driver's buffer (Note [HDF5 files in memory]): allocated and
// grown by HDF5 through these callbacks, kept at close, freed here.
struct Image {
  void* memory = nullptr;
  std::size_t size = 0;
  bool closed = false;  // HDF5 closed the file and left the buffer to us
  Image() = default;
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  ~Image() { std::free(memory); }
};

void* image_malloc(std::size_t size, H5FD_file_image_op_t, void* udata) {
  auto* image = static_cast<Image*>(udata);
  void* memory = std::malloc(size);
  if (memory != nullptr) {
    std::free(image->memory);
    image->memory = memory;
    image->size = size;
  }
  return memory;
}

void* image_memcpy(void* destination, const void* source, std::size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(destination, source, size);
}

void* image_realloc(void* memory, std::size_t size, H5FD_file_image_op_t, void* udata) {
  auto* image = static_cast<Image*>(udata);
  void* grown = std::realloc(memory, size);
  if (grown != nullptr) {
    image->memory = grown;
    image->size = size;
  }
  return grown;
}

herr_t image_free(void* memory, H5FD_file_image_op_t operation, void* udata) {
  auto* image = static_cast<Image*>(udata);
  if (memory == image->memory) {
    if (operation == H5FD_FILE_IMAGE_OP_FILE_CLOSE) {
      image->closed = true;
      return 0;
    }
    image->memory = nullptr;
    image->size = 0;
  }
  std::free(memory);
  return 0;
}

// The callbacks share one Image however often HDF5 copies the property list.
void* image_udata_copy(void* udata) { return udata; }
herr_t image_udata_free(void*) { return 0; }

// The superblock's end-of-file address: the length of the file as HDF5 would
// leave it on disk (Note [HDF5 files in memory]).
std::size_t image_length(const Image& image) {
  const auto* bytes = static_cast<const unsigned char*>(image.memory);
  DSEE_ASSERT(image.size >= 56 && std::memcmp(bytes, "\x89HDF\r\n\x1a\n", 8) == 0,
              "an HDF5 image of {} bytes does not start with a superblock", image.size);
  const unsigned version = bytes[8];
  const std::size_t offset_size = version <= 1 ? bytes[13] : bytes[9];
  const std::size_t end_offset = version == 0 ? 40 : version == 1 ? 44 : 28;
  DSEE_ASSERT(version <= 3 && offset_size == 8, "HDF5 superblock version {} with {}-byte addresses", version,
              offset_size);
  std::uint64_t end = 0;
  for (std::size_t i = 0; i < 8; ++i) end |= std::uint64_t{bytes[end_offset + i]} << (8 * i);
  DSEE_ASSERT(end > 0 && end <= image.size, "HDF5 image: end-of-file address {} outside its {} bytes", end, image.size);
  return static_cast<std::size_t>(end);
}

herr_t collect_innermost(unsigned, const H5E_error2_t* error, void* text) {
  if (error->desc != nullptr && error->desc[0] != '\0') *static_cast<std::string*>(text) = error->desc;
  return 0;
}

}  // namespace

Handle open_read(const std::filesystem::path& path, const std::string& what, const std::string& note) {
  DSEE_CHECK(H5Fis_hdf5(path.c_str()) > 0, "{} is not an HDF5 file{}", what, note);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  DSEE_CHECK(file.ok(), "{}: cannot open it{}: {}", what, note, error_text());
  return file;
}

void check_dataset_fits(hid_t dataset, hsize_t elements, std::size_t element_size, const std::string& where) {
  DSEE_CHECK(
      element_size > 0 && elements <= static_cast<hsize_t>(std::numeric_limits<std::int64_t>::max()) / element_size,
      "{}: claims {} values, more than memory can address (truncated or damaged)", where, elements);
  Handle file(H5Iget_file_id(dataset), H5Fclose);
  hsize_t file_size = 0;
  DSEE_CHECK(file.ok() && H5Fget_filesize(file.get(), &file_size) >= 0, "{}: cannot size the file: {}", where,
             error_text());
  Handle creation(H5Dget_create_plist(dataset), H5Pclose);
  const bool filtered = creation.ok() && H5Pget_nfilters(creation.get()) > 0;
  const hsize_t held = filtered ? file_size : H5Dget_storage_size(dataset);
  const hsize_t bound = filtered ? held / element_size * 1100 : held / element_size;
  DSEE_CHECK(elements <= bound, "{}: claims {} values but the file holds {} bytes of them (truncated or damaged)",
             where, elements, held);
}

std::string error_text() {
  std::string innermost;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_innermost, &innermost);
  return innermost.empty() ? "HDF5 reports no details" : "HDF5 reports: " + innermost;
}

void write_file_atomically(const std::filesystem::path& path, const std::string& what,
                           const std::function<void(hid_t file)>& fill) {
  const std::string source = path.string();
  Quiet quiet;
  file_write_atomic(path, [&](FileWriter& out) {
    Image image;
    {
      Handle create_list(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
      H5Pset_link_creation_order(create_list.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
      Handle access_list(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
      H5FD_file_image_callbacks_t callbacks = {image_malloc,     image_memcpy,     image_realloc, image_free,
                                               image_udata_copy, image_udata_free, &image};
      // 4 MiB increments; H5F_CLOSE_STRONG: closing the file closes every
      // object still open in it, so an error thrown half-way through `fill`
      // leaves nothing open.
      DSEE_CHECK(H5Pset_fapl_core(access_list.get(), std::size_t{4} << 20, 0) >= 0 &&
                     H5Pset_file_image_callbacks(access_list.get(), &callbacks) >= 0 &&
                     H5Pset_fclose_degree(access_list.get(), H5F_CLOSE_STRONG) >= 0,
                 "{} '{}': cannot set up HDF5's in-memory file ({})", what, source, error_text());
      // Named after the temporary: unique, so HDF5 never takes it for a file it already has open.
      Handle file(H5Fcreate(out.temporary().c_str(), H5F_ACC_EXCL, create_list.get(), access_list.get()), H5Fclose);
      DSEE_CHECK(file.ok(), "{} '{}': HDF5 cannot create the file in memory ({})", what, source, error_text());
      fill(file.get());
      DSEE_CHECK(file.close() >= 0, "{} '{}': HDF5 cannot finish the file in memory ({})", what, source, error_text());
    }
    DSEE_ASSERT(image.closed, "{} '{}': HDF5 closed the file without handing over its image", what, source);
    out.write(image.memory, image_length(image));
  });
}

}  // namespace dsee::hdf5
