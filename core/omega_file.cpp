// Ω files on the HDF5 1.10 C API. Layout and validation rules: omega_file.h.
//
// HDF5 prints its own error stack to stderr on every failed call; an
// ErrorPrintingOff guard silences it for the duration of a read or write, and
// each failure becomes one dsee::Error that names the file and the dataset.
//
// Note [std::filesystem and libtorch]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// libtorch.so (the PyPI wheel, built with GCC 13) exports its own copies of
// libstdc++'s std::filesystem functions, and the dynamic linker binds ours to
// them: std::filesystem::remove_all segfaulted in a unit test. File
// operations here therefore use POSIX calls (stat, rename, unlink); paths are
// only carried in std::filesystem::path.
#include "core/omega_file.h"

#include <ATen/ATen.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>

#include "data/error.h"

namespace dsee {
namespace {

// Owns one hid_t and closes it with the matching H5?close.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

class ErrorPrintingOff {
 public:
  ErrorPrintingOff() {
    H5Eget_auto2(H5E_DEFAULT, &function_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ErrorPrintingOff(const ErrorPrintingOff&) = delete;
  ErrorPrintingOff& operator=(const ErrorPrintingOff&) = delete;
  ~ErrorPrintingOff() { H5Eset_auto2(H5E_DEFAULT, function_, data_); }

 private:
  H5E_auto2_t function_ = nullptr;
  void* data_ = nullptr;
};

// Checks the indices of one entry; `where` names file and dataset.
void check_indices(const at::Tensor& indices, std::int64_t rows, std::int64_t cols, const std::string& where) {
  DSEE_CHECK(rows > 0 && cols > 0, "{}: shape [{}, {}] is not a positive matrix shape", where, rows, cols);
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

template <typename T>
void write_number_attribute(hid_t object, const char* name, hid_t file_type, hid_t memory_type,
                            const std::vector<T>& values, bool scalar, const std::string& where) {
  const hsize_t dims[1] = {values.size()};
  Handle space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, nullptr), H5Sclose);
  Handle attribute(H5Acreate2(object, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DSEE_CHECK(attribute.ok() && H5Awrite(attribute.get(), memory_type, values.data()) >= 0,
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

template <typename T>
T read_number_attribute(hid_t object, const char* name, hid_t memory_type, T fallback) {
  if (H5Aexists(object, name) <= 0) return fallback;
  Handle attribute(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  T value = fallback;
  if (H5Aread(attribute.get(), memory_type, &value) < 0) return fallback;
  return value;
}

herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* names) {
  static_cast<std::vector<std::string>*>(names)->emplace_back(name);
  return 0;
}

OmegaEntry read_entry(hid_t file, const std::string& name, const std::string& source) {
  const std::string where = fmt::format("Ω file '{}', dataset '{}'", source, name);
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

}  // namespace

void omega_write(const std::filesystem::path& path, const std::vector<OmegaEntry>& entries, const OmegaFileInfo& info) {
  const std::string source = path.string();
  std::set<std::string> names;
  for (const OmegaEntry& entry : entries) {
    const std::string where = fmt::format("Ω file '{}', dataset '{}'", source, entry.name);
    DSEE_CHECK(!entry.name.empty() && entry.name != "." && entry.name.find('/') == std::string::npos,
               "{}: a dataset name must be non-empty and contain no '/'", where);
    DSEE_CHECK(names.insert(entry.name).second, "{}: the name appears twice", where);
    check_indices(entry.indices, entry.rows, entry.cols, where);
  }

  ErrorPrintingOff quiet;
  const std::filesystem::path temporary = path.string() + fmt::format(".tmp-{}", ::getpid());
  try {
    {
      Handle create_list(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
      H5Pset_link_creation_order(create_list.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
      Handle file(H5Fcreate(temporary.c_str(), H5F_ACC_TRUNC, create_list.get(), H5P_DEFAULT), H5Fclose);
      DSEE_CHECK(file.ok(), "Ω file '{}': cannot create '{}' (does the folder exist and is it writable?)", source,
                 temporary.string());
      const std::string file_where = fmt::format("Ω file '{}'", source);
      write_string_attribute(file.get(), "method", info.method, file_where);
      write_string_attribute(file.get(), "variant", info.variant, file_where);
      write_number_attribute<std::uint64_t>(file.get(), "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, {info.seed}, true,
                                            file_where);
      write_number_attribute<std::int64_t>(file.get(), "c", H5T_STD_I64LE, H5T_NATIVE_INT64, {info.c}, true,
                                           file_where);
      for (const OmegaEntry& entry : entries) {
        const std::string where = fmt::format("Ω file '{}', dataset '{}'", source, entry.name);
        const at::Tensor indices = entry.indices.to(at::kCPU).contiguous();
        const hsize_t dims[1] = {static_cast<hsize_t>(indices.numel())};
        Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
        Handle dataset(H5Dcreate2(file.get(), entry.name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                  H5P_DEFAULT),
                       H5Dclose);
        DSEE_CHECK(dataset.ok(), "{}: cannot create the dataset", where);
        if (indices.numel() > 0)
          DSEE_CHECK(H5Dwrite(dataset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                              indices.data_ptr<std::int64_t>()) >= 0,
                     "{}: cannot write the indices", where);
        write_number_attribute<std::int64_t>(dataset.get(), "shape", H5T_STD_I64LE, H5T_NATIVE_INT64,
                                             {entry.rows, entry.cols}, false, where);
      }
      DSEE_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0, "Ω file '{}': cannot flush '{}'", source,
                 temporary.string());
    }
    DSEE_CHECK(::rename(temporary.c_str(), path.c_str()) == 0, "Ω file '{}': cannot move '{}' into place: {}", source,
               temporary.string(), std::strerror(errno));
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
}

std::vector<OmegaEntry> omega_read(const std::filesystem::path& path, OmegaFileInfo* info) {
  const std::string source = path.string();
  struct stat status {};
  DSEE_CHECK(::stat(source.c_str(), &status) == 0 && S_ISREG(status.st_mode),
             "Ω file '{}' does not exist (write it with dsee omega)", source);
  ErrorPrintingOff quiet;
  DSEE_CHECK(H5Fis_hdf5(source.c_str()) > 0, "Ω file '{}' is not an HDF5 file", source);
  Handle file(H5Fopen(source.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  DSEE_CHECK(file.ok(), "Ω file '{}': cannot open it", source);

  // Files written by dsee track creation order; others (h5py by default) are read in name order.
  Handle root(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose);
  Handle create_list(H5Gget_create_plist(root.get()), H5Pclose);
  unsigned order_flags = 0;
  H5Pget_link_creation_order(create_list.get(), &order_flags);
  const H5_index_t index = (order_flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
  std::vector<std::string> names;
  DSEE_CHECK(H5Literate(file.get(), index, H5_ITER_INC, nullptr, collect_name, &names) >= 0,
             "Ω file '{}': cannot list its datasets", source);

  if (info != nullptr) {
    info->method = read_string_attribute(file.get(), "method");
    info->variant = read_string_attribute(file.get(), "variant");
    info->seed = read_number_attribute<std::uint64_t>(file.get(), "seed", H5T_NATIVE_UINT64, 0);
    info->c = read_number_attribute<std::int64_t>(file.get(), "c", H5T_NATIVE_INT64, -1);
  }
  std::vector<OmegaEntry> entries;
  for (const std::string& name : names) entries.push_back(read_entry(file.get(), name, source));
  return entries;
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
