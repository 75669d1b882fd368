// Parsing and validating safetensors headers. Everything in a header is
// untrusted: a checkpoint comes from the internet, and a wrong offset or size
// would turn into an out-of-bounds read of the mapping. So every field is
// checked here, before the reader turns an entry into a pointer, and each
// failure names the file and the tensor. tests/fuzz/ drives this file.
//
// Note [What the header may say]
// Accepted, as the reference reader (safetensors 0.8.0) accepts it: unknown
// fields inside a tensor entry (ignored), any whitespace around the JSON
// (the writer pads with spaces), an empty name. Rejected, as the reference
// rejects it: a header past the end of the file or over 100 MB, a dtype we
// do not know, a byte size other than numel × dtype size, offsets out of
// bounds or overlapping, a non-string metadata value. Stricter than the
// reference: a name given twice (the reference keeps the last one silently),
// JSON nested deeper than a header ever is. More lenient than the reference:
// gaps between tensors and bytes after the last one (the reference requires
// the data to be covered exactly); neither can make a read go wrong.
#include "core/io/safetensors_header.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <set>

#include "base/error.h"

namespace dsee {
namespace {

using nlohmann::json;

// Ranks: the reference writer orders its dtype enum BOOL < U8 < I8 < I16 <
// F16 < BF16 < I32 < F32 < F64 < I64 and writes higher ranks first.
constexpr std::array<SafetensorsDtype, 10> kDtypes = {{
    {"BOOL", at::kBool, 1, 0},
    {"U8", at::kByte, 1, 1},
    {"I8", at::kChar, 1, 2},
    {"I16", at::kShort, 2, 3},
    {"F16", at::kHalf, 2, 4},
    {"BF16", at::kBFloat16, 2, 5},
    {"I32", at::kInt, 4, 6},
    {"F32", at::kFloat, 4, 7},
    {"F64", at::kDouble, 8, 8},
    {"I64", at::kLong, 8, 9},
}};

// Dtypes the format defines that dsee does not read: named apart from typos.
constexpr std::array<std::string_view, 10> kOtherFormatDtypes = {"U16",     "U32", "U64",     "F8_E5M2", "F8_E4M3",
                                                                 "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};

std::string supported_dtype_names() {
  std::string names;
  for (const auto& dtype : kDtypes) names += (names.empty() ? "" : ", ") + std::string(dtype.name);
  return names;
}

const SafetensorsDtype& dtype_from_name(const std::string& name, const std::string& what) {
  for (const auto& dtype : kDtypes)
    if (dtype.name == name) return dtype;
  const bool in_format =
      std::find(kOtherFormatDtypes.begin(), kOtherFormatDtypes.end(), name) != kOtherFormatDtypes.end();
  throw Error(fmt::format("{}: {} dtype \"{}\" (dsee reads {}){}", what, in_format ? "unsupported" : "unknown", name,
                          supported_dtype_names(), in_format ? "; convert the checkpoint to one of these" : ""));
}

// A JSON number that is a non-negative integer fitting in `limit`; `field`
// says which for the error.
std::uint64_t parse_count(const json& value, std::uint64_t limit, const std::string& what, const char* field) {
  if (value.is_number_unsigned()) {
    const auto count = value.get<std::uint64_t>();
    DSEE_CHECK(count <= limit, "{}: {} value {} is too large (at most {})", what, field, count, limit);
    return count;
  }
  if (value.is_number_integer()) {
    const auto count = value.get<std::int64_t>();
    DSEE_CHECK(count >= 0, "{}: {} value {} is negative", what, field, count);
    return static_cast<std::uint64_t>(count);
  }
  throw Error(fmt::format("{}: {} holds {}, not a non-negative integer", what, field, value.dump()));
}

const json& required_field(const json& entry, const char* field, json::value_t type, const std::string& what) {
  const auto it = entry.find(field);
  DSEE_CHECK(it != entry.end(), "{}: the header entry has no \"{}\"", what, field);
  DSEE_CHECK(it->type() == type, "{}: \"{}\" is a JSON {}, not a JSON {}", what, field, it->type_name(),
             json(type).type_name());
  return *it;
}

SafetensorsEntry parse_entry(const std::string& name, const json& entry, std::uint64_t data_size,
                             const std::string& source) {
  const std::string what = fmt::format("{}: tensor \"{}\"", source, name);
  DSEE_CHECK(entry.is_object(), "{}: the header entry is a JSON {}, not an object with dtype, shape, data_offsets",
             what, entry.type_name());
  SafetensorsEntry parsed;
  parsed.name = name;
  const auto& dtype =
      dtype_from_name(required_field(entry, "dtype", json::value_t::string, what).get<std::string>(), what);
  parsed.dtype = dtype.type;

  // numel and the strides LibTorch derives from the shape must fit int64;
  // a zero dimension counts as one here, as it does in the strides.
  constexpr auto kMaxCount = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t numel = 1, stride_product = 1;
  for (const auto& dim_value : required_field(entry, "shape", json::value_t::array, what)) {
    const std::uint64_t dim = parse_count(dim_value, kMaxCount, what, "a shape");
    DSEE_CHECK(dim <= 1 || stride_product <= kMaxCount / dim, "{}: the shape {} has more than 2^63 elements", what,
               entry["shape"].dump());
    stride_product *= std::max<std::uint64_t>(dim, 1);
    numel *= dim;
    parsed.shape.push_back(static_cast<std::int64_t>(dim));
  }
  DSEE_CHECK(numel <= kMaxCount / dtype.size, "{}: the shape {} of {} takes more than 2^63 bytes", what,
             entry["shape"].dump(), dtype.name);
  const std::uint64_t byte_size = numel * dtype.size;

  const auto& offsets = required_field(entry, "data_offsets", json::value_t::array, what);
  DSEE_CHECK(offsets.size() == 2, "{}: data_offsets holds {} values, not [begin, end]", what, offsets.size());
  parsed.begin = parse_count(offsets[0], std::numeric_limits<std::uint64_t>::max(), what, "data_offsets");
  parsed.end = parse_count(offsets[1], std::numeric_limits<std::uint64_t>::max(), what, "data_offsets");
  DSEE_CHECK(parsed.begin <= parsed.end, "{}: data_offsets [{}, {}] end before they begin", what, parsed.begin,
             parsed.end);
  DSEE_CHECK(parsed.end <= data_size,
             "{}: data_offsets [{}, {}] run past the end of the data ({} bytes): the file is truncated", what,
             parsed.begin, parsed.end, data_size);
  DSEE_CHECK(parsed.end - parsed.begin == byte_size,
             "{}: data_offsets [{}, {}] span {} bytes, but shape {} of {} needs {} bytes ({} elements x {} bytes)",
             what, parsed.begin, parsed.end, parsed.end - parsed.begin, entry["shape"].dump(), dtype.name, byte_size,
             numel, dtype.size);
  return parsed;
}

}  // namespace

const SafetensorsDtype& safetensors_dtype(at::ScalarType type, const std::string& what) {
  for (const auto& dtype : kDtypes)
    if (dtype.type == type) return dtype;
  throw Error(fmt::format("{}: dtype {} cannot be stored (dsee writes {})", what, c10::toString(type),
                          supported_dtype_names()));
}

json json_parse_unique_keys(std::string_view text, const std::string& source, int max_depth) {
  // Keys seen in each open object, innermost last; the callback sees every
  // key before nlohmann stores it, which is the only place a repeat shows.
  std::vector<std::set<std::string>> open_objects;
  std::vector<std::string> key_path;
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        DSEE_CHECK(depth < max_depth, "{}: the JSON nests deeper than {} levels at {}", source, max_depth,
                   key_path.empty() ? std::string("the top") : fmt::format("\"{}\"", fmt::join(key_path, "\".\"")));
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        auto key = parsed.get<std::string>();
        key_path.resize(static_cast<std::size_t>(depth - 1));
        const bool fresh = open_objects.back().insert(key).second;
        key_path.push_back(std::move(key));
        DSEE_CHECK(fresh, "{}: \"{}\" appears twice in the JSON; keep one", source, fmt::join(key_path, "\".\""));
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
}

std::vector<SafetensorsEntry> safetensors_parse_header(std::string_view header_json, std::uint64_t data_size,
                                                       const std::string& source,
                                                       std::map<std::string, std::string>* metadata) {
  // A header is {name: {dtype, shape: [...], data_offsets: [...]}}: three
  // levels; __metadata__ is two.
  const json header = json_parse_unique_keys(header_json, source + " (safetensors header)", 3);
  DSEE_CHECK(header.is_object(), "{}: the safetensors header is a JSON {}, not an object of tensors", source,
             header.type_name());
  std::vector<SafetensorsEntry> entries;
  entries.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      DSEE_CHECK(value.is_object(), "{}: __metadata__ is a JSON {}, not an object of strings", source,
                 value.type_name());
      for (const auto& [key, text] : value.items()) {
        DSEE_CHECK(text.is_string(), "{}: __metadata__ \"{}\" is a JSON {}, not a string", source, key,
                   text.type_name());
        if (metadata) (*metadata)[key] = text.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, value, data_size, source));
  }

  // Overlap: in begin order, a tensor with bytes must start at or after the
  // furthest end so far. Empty tensors own no bytes and overlap nothing.
  std::sort(entries.begin(), entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const SafetensorsEntry* furthest = nullptr;
  for (const auto& entry : entries) {
    if (entry.begin == entry.end) continue;
    DSEE_CHECK(!furthest || entry.begin >= furthest->end,
               "{}: tensors \"{}\" (bytes [{}, {})) and \"{}\" (bytes [{}, {})) overlap: the header is corrupt", source,
               furthest ? furthest->name : "", furthest ? furthest->begin : 0, furthest ? furthest->end : 0, entry.name,
               entry.begin, entry.end);
    if (!furthest || entry.end > furthest->end) furthest = &entry;
  }
  return entries;
}

SafetensorsHeader safetensors_parse_file(std::string_view file_bytes, std::uint64_t file_size,
                                         const std::string& source) {
  static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so must the host be");
  DSEE_CHECK(file_size >= 8 && file_bytes.size() >= 8,
             "{}: the file is {} bytes, too short for the 8-byte header length: it is truncated or not a "
             "safetensors file",
             source, file_size);
  std::uint64_t header_size = 0;
  std::memcpy(&header_size, file_bytes.data(), sizeof header_size);
  DSEE_CHECK(header_size <= file_size - 8,
             "{}: the header length {} runs past the end of the file ({} bytes): the file is truncated or not a "
             "safetensors file",
             source, header_size, file_size);
  DSEE_CHECK(header_size <= kSafetensorsMaxHeaderBytes, "{}: the header length {} is over the {}-byte limit", source,
             header_size, kSafetensorsMaxHeaderBytes);
  DSEE_CHECK(header_size <= file_bytes.size() - 8, "{}: only {} of the {} header bytes were read", source,
             file_bytes.size() - 8, header_size);
  SafetensorsHeader header;
  header.data_start = 8 + header_size;
  header.entries = safetensors_parse_header(file_bytes.substr(8, header_size), file_size - header.data_start, source,
                                            &header.metadata);
  return header;
}

}  // namespace dsee
