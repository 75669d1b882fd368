// Configuration: TOML files checked against a schema, with dotted-key
// overrides from the command line (`--set train.lr=3e-4`).
//
// A ConfigSchema lists every key a file may hold: its type, default, allowed
// range or choices and one line of documentation (the keys table of
// docs/recipes.md is its output, `dsee config --schema`). Loading rejects unknown keys, wrong types and out-of-range
// values with a dsee::Error naming the key, the file and the line. The result,
// a Config, holds every key of the schema (defaults filled in) and prints back
// as TOML: the resolved configuration a run records.
//
// References. A string value (or an element of a string list) may name
// another string key as ${key}, e.g. task.data_dir = "${paths.data}/SST-2":
// after the file and every override are applied, each reference is replaced
// by that key's final value, so one `--set paths.data=/scratch/glue` moves
// every path that refers to it. The referenced value must not itself hold a
// reference; a key with a fixed set of choices takes none. The
// resolved configuration (to_toml) holds the replaced text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace dsee {

using ConfigValue = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>>;

// "bool", "integer", "float", "string" or "string list".
const char* config_type_name(const ConfigValue& value);

struct ConfigKey {
  std::string name;  // dotted, e.g. "train.lr"
  ConfigValue default_value;
  std::string doc;
  std::optional<double> min = std::nullopt;  // inclusive, numeric keys only
  std::optional<double> max = std::nullopt;
  std::vector<std::string> choices = {};  // allowed strings; empty: any
};

class ConfigSchema {
 public:
  ConfigSchema& add(ConfigKey key);
  const ConfigKey* find(const std::string& name) const;
  const std::vector<ConfigKey>& keys() const { return keys_; }
  // The keys as a Markdown table: key, type, default, range, meaning.
  std::string markdown() const;

 private:
  std::vector<ConfigKey> keys_;
};

class Config {
 public:
  // Reads `file` (throws dsee::Error naming the file when it is missing or
  // malformed), then applies `overrides` ("key=value", left to right).
  static Config load(const ConfigSchema& schema, const std::filesystem::path& file,
                     const std::vector<std::string>& overrides = {});
  // The same from text; `source` names it in errors.
  static Config parse(const ConfigSchema& schema, const std::string& text, const std::string& source,
                      const std::vector<std::string>& overrides = {});
  // Only defaults and overrides.
  static Config defaults(const ConfigSchema& schema, const std::vector<std::string>& overrides = {});

  bool get_bool(const std::string& key) const;
  std::int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;

  // Every key with its resolved value, as a TOML document.
  std::string to_toml() const;
  // Where the configuration was read from ("<defaults>" if nowhere).
  const std::string& source() const { return source_; }

 private:
  void set(const std::string& key, ConfigValue value, const std::string& where);
  void apply_override(const std::string& assignment);
  // Replaces every ${key} in string values (see 'References' above).
  void resolve_references();
  const ConfigValue& value(const std::string& key, const char* wanted) const;

  ConfigSchema schema_;
  std::string source_;
  std::map<std::string, ConfigValue> values_;
};

// Refuses, before toml++ parses `text`, what that library cannot read safely:
// a character beyond ASCII outside strings and comments, and the code points
// its whitespace table mishandles anywhere but in a comment (Note [Non-ASCII
// in TOML text] in config.cpp). The Error names `source`, line and column.
void toml_check_text(const std::string& text, const std::string& source);

// Dotted keys whose values differ between two TOML documents (resolved
// configurations), sorted, each as "key: A → B" with values in TOML syntax
// and "<absent>" for a side that lacks the key. Throws dsee::Error naming
// `source_a` / `source_b` when a text does not parse.
std::vector<std::string> config_differences(const std::string& toml_a, const std::string& toml_b,
                                            const std::string& source_a = "<a>", const std::string& source_b = "<b>");

}  // namespace dsee
