// Shared HDF5 pieces (contract: hdf5_io.h).
//
// Note [Atomic HDF5 writes]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// A reader must never see a half-written file under the final name: the file
// is built as "<path>.tmp-<pid>", flushed and closed by HDF5, fsynced (so the
// data are on disk before the name is), renamed over the target (atomic on
// POSIX within one file system), and the folder is fsynced so the rename
// itself survives a crash. File operations use POSIX calls: see
// Note [std::filesystem and libtorch] in omega_file.cpp.
#include "core/io/hdf5_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

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
  DSEE_CHECK(attribute.ok() && H5Awrite(attribute.get(), type.get(), &data) >= 0, "{}: cannot write attribute '{}'",
             where, name);
}

void write_int64_attribute(hid_t object, const char* name, const std::vector<std::int64_t>& values, bool scalar,
                           const std::string& where) {
  const hsize_t dims[1] = {values.size()};
  Handle space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, nullptr), H5Sclose);
  Handle attribute(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DSEE_CHECK(attribute.ok() && (values.empty() || H5Awrite(attribute.get(), H5T_NATIVE_INT64, values.data()) >= 0),
             "{}: cannot write attribute '{}'", where, name);
}

void write_uint64_attribute(hid_t object, const char* name, std::uint64_t value, const std::string& where) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attribute(H5Acreate2(object, name, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DSEE_CHECK(attribute.ok() && H5Awrite(attribute.get(), H5T_NATIVE_UINT64, &value) >= 0,
             "{}: cannot write attribute '{}'", where, name);
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

hid_t create_group(hid_t location, const std::string& name, const std::string& where) {
  Handle create_list(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
  H5Pset_link_creation_order(create_list.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  const hid_t group = H5Gcreate2(location, name.c_str(), H5P_DEFAULT, create_list.get(), H5P_DEFAULT);
  DSEE_CHECK(group >= 0, "{}: cannot create group '{}'", where, name);
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

hid_t write_dataset(hid_t location, const std::string& name, hid_t file_type, hid_t memory_type,
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
  const hid_t dataset =
      H5Dcreate2(location, name.c_str(), file_type, space.get(), H5P_DEFAULT, create_list.get(), H5P_DEFAULT);
  DSEE_CHECK(dataset >= 0, "{}: cannot create dataset '{}'", where, name);
  if (count > 0 && H5Dwrite(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
    H5Dclose(dataset);
    DSEE_CHECK(false, "{}: cannot write dataset '{}'", where, name);
  }
  return dataset;
}

void write_file_atomically(const std::filesystem::path& path, const std::string& what,
                           const std::function<void(hid_t file)>& fill) {
  const std::string source = path.string();
  Quiet quiet;
  file_write_atomic(path, [&](const std::filesystem::path& temporary) {
    Handle create_list(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    H5Pset_link_creation_order(create_list.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    // H5F_CLOSE_STRONG: closing the file closes every object still open in
    // it, so an error thrown half-way through `fill` leaves nothing open.
    Handle access_list(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Pset_fclose_degree(access_list.get(), H5F_CLOSE_STRONG);
    errno = 0;
    Handle file(H5Fcreate(temporary.c_str(), H5F_ACC_EXCL, create_list.get(), access_list.get()), H5Fclose);
    DSEE_CHECK(file.ok(), "{} '{}': cannot create '{}': {}", what, source, temporary.string(),
               errno != 0 ? errno_text() : "HDF5 could not create it");
    fill(file.get());
    errno = 0;
    DSEE_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0, "{} '{}': cannot flush '{}': {}", what, source,
               temporary.string(), errno != 0 ? errno_text() : "HDF5 could not write it");
  });
}

}  // namespace dsee::hdf5
