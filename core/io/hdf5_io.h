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

// Owns one hid_t and closes it with the matching H5?close when it goes out
// of scope, also when an error is thrown: every id dsee opens is held by one.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      close_ = other.close_;
      other.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  // Closes now; the close's result (negative: failed).
  herr_t close() {
    const hid_t id = id_;
    id_ = -1;
    return id >= 0 ? close_(id) : 0;
  }

 private:
  void reset() {
    if (id_ >= 0) close_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
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

// HDF5's own account of the call that just failed, from its error stack
// (the innermost message, where the failure was detected), e.g. "HDF5
// reports: truncated file: eof = 512, sblock->base_addr = 0, stored_eof =
// 4096"; "HDF5 reports no details" when the stack is empty. Call it right
// after the failed call: the next HDF5 call clears the stack.
std::string error_text();

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
Handle create_group(hid_t location, const std::string& name, const std::string& where);
// Link names of a group: creation order when tracked (dsee), name order otherwise (h5py).
std::vector<std::string> children(hid_t group, const std::string& where);

// A dataset of `dims` from `data` (memory type `memory_type`, file type
// `file_type`); with `fletcher32` the data are chunked and checksummed (empty
// datasets stay contiguous: nothing to checksum). Returns the open dataset.
Handle write_dataset(hid_t location, const std::string& name, hid_t file_type, hid_t memory_type,
                     const std::vector<hsize_t>& dims, const void* data, bool fletcher32, const std::string& where);

// `path` opened read-only, under a Quiet the caller holds. Not an HDF5 file,
// or one HDF5 cannot open, is an Error: "<what> is not an HDF5 file<note>" or
// "<what>: cannot open it<note>: <HDF5's reason>", with `what` naming the file
// ("Ω file 'x.h5'") and `note` a suffix such as " (truncated or corrupted)".
Handle open_read(const std::filesystem::path& path, const std::string& what, const std::string& note = "");

// Before a reader allocates `elements` values of `element_size` bytes for
// `dataset`: the count fits in int64 and the file holds that many bytes of
// it (as they are, or compressed by at most deflate's ~1032:1 when the
// dataset has filters). Otherwise an Error naming `where` ("truncated or
// damaged"), so a damaged header cannot make the reader allocate terabytes.
void check_dataset_fits(hid_t dataset, hsize_t elements, std::size_t element_size, const std::string& where);

// Creates `path` through base/files.h's file_write_atomic: `fill` writes the
// content into a new HDF5 file held in memory (links keep creation order),
// which is then closed and written out as one block (Note [HDF5 files in
// memory] in hdf5_io.cpp): a full or failing disk is reported by the one
// write path with its errno text, HDF5 never sees it, and no HDF5 id stays
// open. On any failure nothing appears under `path` and no temporary is
// left. `what` names the kind of file in errors ("checkpoint").
void write_file_atomically(const std::filesystem::path& path, const std::string& what,
                           const std::function<void(hid_t file)>& fill);

}  // namespace dsee::hdf5
