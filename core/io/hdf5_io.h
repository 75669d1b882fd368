// Small shared pieces of dsee's HDF5 files (Ω files, masks.h5, checkpoints),
// on the HDF5 1.10 C API: handle ownership, quiet error stacks, attributes,
// datasets with optional Fletcher-32, children in creation order, and HDF5
// files written through the one atomic write (base/files.h). Internal to
// core: include only from core .cpp files (callers link dsee::hdf5).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace dsee::hdf5 {

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

// Silences HDF5's own error stack printing while alive.
class Quiet {
 public:
  Quiet() {
    H5Eget_auto2(H5E_DEFAULT, &function_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  Quiet(const Quiet&) = delete;
  Quiet& operator=(const Quiet&) = delete;
  ~Quiet() { H5Eset_auto2(H5E_DEFAULT, function_, data_); }

 private:
  H5E_auto2_t function_ = nullptr;
  void* data_ = nullptr;
};

// Attributes; `where` names file and object in errors.
void write_string_attribute(hid_t object, const char* name, const std::string& value, const std::string& where);
void write_int64_attribute(hid_t object, const char* name, const std::vector<std::int64_t>& values, bool scalar,
                           const std::string& where);
void write_uint64_attribute(hid_t object, const char* name, std::uint64_t value, const std::string& where);
// "" when absent or not a string.
std::string read_string_attribute(hid_t object, const char* name);
// Throws dsee::Error when absent or not integers; any count (scalar = 1).
std::vector<std::int64_t> read_int64_attribute(hid_t object, const char* name, const std::string& where);
std::uint64_t read_uint64_attribute(hid_t object, const char* name, const std::string& where);

// A group whose links keep creation order.
hid_t create_group(hid_t location, const std::string& name, const std::string& where);
// Link names of a group: creation order when tracked (dsee), name order otherwise (h5py).
std::vector<std::string> children(hid_t group, const std::string& where);

// A dataset of `dims` from `data` (memory type `memory_type`, file type
// `file_type`); with `fletcher32` the data are chunked and checksummed (empty
// datasets stay contiguous: nothing to checksum). Returns the open dataset.
hid_t write_dataset(hid_t location, const std::string& name, hid_t file_type, hid_t memory_type,
                    const std::vector<hsize_t>& dims, const void* data, bool fletcher32, const std::string& where);

// Creates `path` through base/files.h's file_write_atomic: `fill` writes the
// content into the open temporary file (links keep creation order), which is
// flushed and closed (every object in it with it), then fsynced and renamed
// over `path`. On any failure the temporary is removed and nothing appears
// under `path`.
void write_file_atomically(const std::filesystem::path& path, const std::string& what,
                           const std::function<void(hid_t file)>& fill);

}  // namespace dsee::hdf5
