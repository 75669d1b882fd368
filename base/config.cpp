#include "base/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "base/error.h"
#include "base/files.h"

namespace dsee {

// Note [Non-ASCII in TOML text]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// TOML allows characters beyond ASCII only inside strings and comments (bare
// keys are A-Z a-z 0-9 _ -). toml++ 3.3, Debian's, asks a whitespace table
// about characters outside its strings, after a multi-line string's
// line-ending backslash and while it skips a malformed value, and that table
// reaches __builtin_unreachable for U+00A1..U+0499, U+2C5E..U+3057 but
// U+3000, and U+FB26..U+FEFE (undefined behaviour, found by fuzzing the
// recipe and sweep readers). So the text is scanned before toml++ sees it: a
// character beyond ASCII outside strings and comments, and one of those
// ranges anywhere but in a comment, is refused with its line and column; in
// a "..." string the latter can be written as a \uXXXX escape, which is how
// toml_quote prints them (so that config.toml always reads back).
namespace {
bool toml_mishandled(char32_t code) {
  return (code >= 0xA1 && code <= 0x499) || (code >= 0x2C5E && code <= 0x3057 && code != 0x3000) ||
         (code >= 0xFB26 && code <= 0xFEFE);
}
}  // namespace

void toml_check_text(const std::string& text, const std::string& source) {
  std::size_t line = 1, column = 1;
  enum class In { value, comment, basic, literal, multi_basic, multi_literal } in = In::value;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const auto byte = [&](std::size_t k) { return k < text.size() ? static_cast<unsigned char>(text[k]) : 0u; };
    const auto starts = [&](const char* with) {
      return text.compare(i, std::char_traits<char>::length(with), with) == 0;
    };
    if (in != In::comment && byte(i) >= 0xC0) {
      const char32_t code = byte(i) < 0xE0 ? ((byte(i) & 0x1Fu) << 6) | (byte(i + 1) & 0x3Fu)
                            : byte(i) < 0xF0
                                ? ((byte(i) & 0x0Fu) << 12) | ((byte(i + 1) & 0x3Fu) << 6) | (byte(i + 2) & 0x3Fu)
                                : 0x10000;
      if (toml_mishandled(code))
        throw Error(
            fmt::format("{}:{}:{}: character U+{:04X} cannot be read by this build's TOML library "
                        "(toml++ 3.3) here; in a \"...\" string write it as \\u{:04X}",
                        source, line, column, static_cast<std::uint32_t>(code), static_cast<std::uint32_t>(code)));
    }
    switch (in) {
      case In::value:
        if (static_cast<unsigned char>(c) >= 0x80)
          throw Error(
              fmt::format("{}:{}:{}: not valid TOML: a character beyond ASCII outside a string or comment; "
                          "put it in quotes",
                          source, line, column));
        if (c == '#')
          in = In::comment;
        else if (starts("\"\"\""))
          in = In::multi_basic, i += 2, column += 2;
        else if (starts("'''"))
          in = In::multi_literal, i += 2, column += 2;
        else if (c == '"')
          in = In::basic;
        else if (c == '\'')
          in = In::literal;
        break;
      case In::comment:
        if (c == '\n') in = In::value;
        break;
      case In::basic:
        if (c == '\\' && byte(i + 1) < 0x80)  // an escape; a character beyond ASCII is checked on its own
          ++i, ++column;
        else if (c == '"' || c == '\n')
          in = In::value;
        break;
      case In::literal:
        if (c == '\'' || c == '\n') in = In::value;
        break;
      case In::multi_basic:
        if (c == '\\' && byte(i + 1) < 0x80)
          ++i, ++column;
        else if (starts("\"\"\""))
          in = In::value, i += 2, column += 2;
        break;
      case In::multi_literal:
        if (starts("'''")) in = In::value, i += 2, column += 2;
        break;
    }
    if (i < text.size() && text[i] == '\n')
      ++line, column = 1;
    else if (i < text.size() && (byte(i) & 0xC0u) != 0x80u)  // a character's first byte
      ++column;
  }
}

namespace {

toml::table toml_parse(const std::string& text, const std::string& source) {
  toml_check_text(text, source);
  return toml::parse(text, source);
}

std::string format_value(const ConfigValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>)
          return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::int64_t>)
          return std::to_string(v);
        else if constexpr (std::is_same_v<T, double>)
          return fmt::format("{}", v);
        else if constexpr (std::is_same_v<T, std::string>)
          return fmt::format("\"{}\"", v);
        else
          return fmt::format("[{}]", fmt::join(v, ", "));
      },
      value);
}

// Levenshtein distance, to suggest the key a user probably meant.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

[[noreturn]] void throw_unknown_key(const ConfigSchema& schema, const std::string& key, const std::string& where) {
  const ConfigKey* best = nullptr;
  std::size_t best_distance = 4;  // suggest only close matches
  for (const auto& candidate : schema.keys()) {
    const std::size_t d = edit_distance(key, candidate.name);
    if (d < best_distance) best = &candidate, best_distance = d;
  }
  throw Error(fmt::format("{}: unknown key '{}'{}; the known keys are listed in recipes/README.md", where, key,
                          best ? fmt::format(" (did you mean '{}'?)", best->name) : ""));
}

// Converts a TOML node to the type of the schema's default, or says why not.
std::optional<ConfigValue> convert(const toml::node& node, const ConfigValue& like) {
  if (std::holds_alternative<bool>(like)) {
    if (auto v = node.value_exact<bool>()) return ConfigValue{*v};
  } else if (std::holds_alternative<std::int64_t>(like)) {
    if (auto v = node.value_exact<std::int64_t>()) return ConfigValue{*v};
  } else if (std::holds_alternative<double>(like)) {
    if (node.is_floating_point() || node.is_integer()) return ConfigValue{*node.value<double>()};
  } else if (std::holds_alternative<std::string>(like)) {
    if (auto v = node.value_exact<std::string>()) return ConfigValue{*v};
  } else if (const auto* array = node.as_array()) {
    std::vector<std::string> items;
    for (const auto& item : *array) {
      auto s = item.value_exact<std::string>();
      if (!s) return std::nullopt;
      items.push_back(*s);
    }
    return ConfigValue{std::move(items)};
  }
  return std::nullopt;
}

std::string toml_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a bool";
    default:
      return "a date/time";
  }
}

void flatten(const toml::table& table, const std::string& prefix,
             std::vector<std::pair<std::string, const toml::node*>>& out) {
  for (const auto& [key, node] : table) {
    std::string name = prefix.empty() ? std::string(key.str()) : prefix + "." + std::string(key.str());
    if (const auto* sub = node.as_table())
      flatten(*sub, name, out);
    else
      out.emplace_back(std::move(name), &node);
  }
}

}  // namespace

const char* config_type_name(const ConfigValue& value) {
  static constexpr const char* names[] = {"bool", "integer", "float", "string", "string list"};
  return names[value.index()];
}

ConfigSchema& ConfigSchema::add(ConfigKey key) {
  DSEE_ASSERT(find(key.name) == nullptr, "configuration key '{}' declared twice", key.name);
  keys_.push_back(std::move(key));
  return *this;
}

const ConfigKey* ConfigSchema::find(const std::string& name) const {
  for (const auto& key : keys_)
    if (key.name == name) return &key;
  return nullptr;
}

std::string ConfigSchema::markdown() const {
  std::string out = "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
  for (const auto& key : keys_) {
    std::string allowed;
    if (!key.choices.empty())
      allowed = fmt::format("{}", fmt::join(key.choices, ", "));
    else if (key.min || key.max)
      allowed = fmt::format("{} … {}", key.min ? fmt::format("{}", *key.min) : "",
                            key.max ? fmt::format("{}", *key.max) : "");
    out += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", key.name, config_type_name(key.default_value),
                       format_value(key.default_value), allowed, key.doc);
  }
  return out;
}

Config Config::defaults(const ConfigSchema& schema, const std::vector<std::string>& overrides) {
  Config config;
  config.schema_ = schema;
  config.source_ = "<defaults>";
  for (const auto& key : schema.keys()) config.values_[key.name] = key.default_value;
  for (const auto& assignment : overrides) config.apply_override(assignment);
  config.resolve_references();
  return config;
}

Config Config::parse(const ConfigSchema& schema, const std::string& text, const std::string& source,
                     const std::vector<std::string>& overrides) {
  toml::table table;
  try {
    table = toml_parse(text, source);
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}:{}: not valid TOML: {}", source, e.source().begin.line, e.source().begin.column,
                            e.description()));
  }
  Config config = defaults(schema);
  config.source_ = source;
  std::vector<std::pair<std::string, const toml::node*>> leaves;
  flatten(table, "", leaves);
  for (const auto& [name, node] : leaves) {
    const std::string where = fmt::format("{}:{}", source, node->source().begin.line);
    const ConfigKey* key = schema.find(name);
    if (!key) throw_unknown_key(schema, name, where);
    auto value = convert(*node, key->default_value);
    if (!value)
      throw Error(fmt::format("{}: key '{}' must be a {}, but the file gives {}", where, name,
                              config_type_name(key->default_value), toml_type_name(*node)));
    config.set(name, std::move(*value), where);
  }
  for (const auto& assignment : overrides) config.apply_override(assignment);
  config.resolve_references();
  return config;
}

Config Config::load(const ConfigSchema& schema, const std::filesystem::path& file,
                    const std::vector<std::string>& overrides) {
  if (!std::ifstream(file)) {
    std::error_code error;  // the non-throwing form: a name too long for the system is a reason too
    const bool exists = std::filesystem::exists(file, error);
    throw Error(fmt::format("cannot read configuration file '{}': {}", file.string(),
                            error    ? error.message()
                            : exists ? "permission denied"
                                     : "no such file"));
  }
  return parse(schema, file_read_text(file), file.string(), overrides);
}

void Config::apply_override(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UsageError(fmt::format("--set '{}': expected KEY=VALUE, e.g. --set train.lr=3e-4", assignment));
  const std::string name = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  const std::string where = fmt::format("--set {}", assignment);
  const ConfigKey* key = schema_.find(name);
  if (!key) throw_unknown_key(schema_, name, where);
  // Strings may be given bare (--set model.path=/data/bert); everything else
  // is read as a TOML value.
  std::optional<ConfigValue> value;
  if (std::holds_alternative<std::string>(key->default_value) &&
      !(text.size() >= 2 && text.front() == '"' && text.back() == '"')) {
    value = ConfigValue{text};
  } else {
    try {
      const toml::table parsed = toml_parse("v = " + text, where);
      value = convert(*parsed.get("v"), key->default_value);
    } catch (const toml::parse_error&) {
    }
  }
  if (!value)
    throw Error(
        fmt::format("{}: key '{}' must be a {}, got '{}'", where, name, config_type_name(key->default_value), text));
  set(name, std::move(*value), where);
}

void Config::resolve_references() {
  // Expands one text; `owner` is the key holding it (for the messages).
  const auto expand = [&](const std::string& text, const std::string& owner) {
    std::string out;
    std::size_t at = 0;
    for (std::size_t open; (open = text.find("${", at)) != std::string::npos;) {
      const std::size_t close = text.find('}', open);
      if (close == std::string::npos)
        throw Error(fmt::format("{}: key '{}' = \"{}\": '${{' without its closing '}}' (write ${{key}})", source_,
                                owner, text));
      const std::string name = text.substr(open + 2, close - open - 2);
      const auto it = values_.find(name);
      if (it == values_.end() || !std::holds_alternative<std::string>(it->second))
        throw Error(
            fmt::format("{}: key '{}' = \"{}\" refers to ${{{}}}, which is not a string key of the schema "
                        "(see `dsee config --schema`)",
                        source_, owner, text, name));
      const auto& target = std::get<std::string>(it->second);
      if (target.find("${") != std::string::npos)
        throw Error(
            fmt::format("{}: key '{}' refers to ${{{}}}, whose own value \"{}\" holds a reference; give {} "
                        "a plain value",
                        source_, owner, name, target, name));
      out += text.substr(at, open - at) + target;
      at = close + 1;
    }
    return out + text.substr(at);
  };
  std::map<std::string, ConfigValue> resolved = values_;
  for (auto& [name, value] : resolved) {
    // (A key with fixed choices never holds "${": set() accepts only its choices.)
    if (auto* text = std::get_if<std::string>(&value)) {
      *text = expand(*text, name);
    } else if (auto* list = std::get_if<std::vector<std::string>>(&value)) {
      for (auto& element : *list) element = expand(element, name);
    }
  }
  values_ = std::move(resolved);
}

void Config::set(const std::string& name, ConfigValue value, const std::string& where) {
  const ConfigKey* key = schema_.find(name);
  DSEE_ASSERT(key != nullptr, "set() of undeclared key {}", name);
  if (key->min || key->max) {
    const double x =
        std::holds_alternative<double>(value) ? std::get<double>(value) : double(std::get<std::int64_t>(value));
    if (!std::isfinite(x) || (key->min && x < *key->min) || (key->max && x > *key->max))
      throw Error(fmt::format("{}: key '{}' = {} is out of range: it must be {}", where, name, format_value(value),
                              key->min && key->max ? fmt::format("in [{}, {}]", *key->min, *key->max)
                              : key->min           ? fmt::format(">= {}", *key->min)
                                                   : fmt::format("<= {}", *key->max)));
  }
  if (!key->choices.empty()) {
    const auto& s = std::get<std::string>(value);
    if (std::find(key->choices.begin(), key->choices.end(), s) == key->choices.end())
      throw Error(
          fmt::format("{}: key '{}' = \"{}\" is not one of: {}", where, name, s, fmt::join(key->choices, ", ")));
  }
  values_[name] = std::move(value);
}

const ConfigValue& Config::value(const std::string& key, const char* wanted) const {
  const auto it = values_.find(key);
  DSEE_ASSERT(it != values_.end(), "configuration key '{}' is not in the schema", key);
  DSEE_ASSERT(std::string(config_type_name(it->second)) == wanted, "key '{}' is a {}, read as {}", key,
              config_type_name(it->second), wanted);
  return it->second;
}

bool Config::get_bool(const std::string& key) const { return std::get<bool>(value(key, "bool")); }
std::int64_t Config::get_int(const std::string& key) const { return std::get<std::int64_t>(value(key, "integer")); }
double Config::get_float(const std::string& key) const { return std::get<double>(value(key, "float")); }
const std::string& Config::get_string(const std::string& key) const {
  return std::get<std::string>(value(key, "string"));
}
const std::vector<std::string>& Config::get_strings(const std::string& key) const {
  return std::get<std::vector<std::string>>(value(key, "string list"));
}

namespace {

// TOML basic string: quotes, backslashes, control characters and the code
// points toml++ 3.3 mishandles (Note [Non-ASCII in TOML text]) escaped.
std::string toml_quote(const std::string& s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const auto next = [&](std::size_t k) {
      return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) & 0x3Fu : 0u;
    };
    if (c >= 0xC0 && c < 0xF0) {  // two or three bytes: may be one of those code points
      const std::size_t length = c < 0xE0 ? 2 : 3;
      const char32_t code = length == 2 ? ((c & 0x1Fu) << 6) | next(1) : ((c & 0x0Fu) << 12) | (next(1) << 6) | next(2);
      if (toml_mishandled(code) && i + length <= s.size()) {
        out += fmt::format("\\u{:04X}", static_cast<std::uint32_t>(code));
        i += length - 1;
        continue;
      }
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\u{:04X}", c);
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

// Shortest text that reads back as the same double (3e-4 prints as 0.0003,
// not 0.00029999999999999997), always recognisably a float.
std::string toml_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::string text = fmt::format("{}", v);
  if (text.find_first_of(".eE") == std::string::npos) text += ".0";
  return text;
}

std::string toml_value(const ConfigValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          return std::to_string(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return toml_float(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return toml_quote(v);
        } else {
          std::string out = "[";
          for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + toml_quote(v[i]);
          return out + "]";
        }
      },
      value);
}

}  // namespace

// Keys are grouped under a [table] header named by everything before their
// last dot; values_ is a sorted map, so each table's keys are contiguous.
// Keys without a dot come first: after a header they would belong to it.
std::string Config::to_toml() const {
  std::string out, table;
  bool first = true;
  for (const auto& [name, value] : values_) {
    if (name.find('.') != std::string::npos) continue;
    out += fmt::format("{} = {}\n", name, toml_value(value));
    first = false;
  }
  for (const auto& [name, value] : values_) {
    const auto dot = name.rfind('.');
    if (dot == std::string::npos) continue;
    const std::string key_table = name.substr(0, dot), key = name.substr(dot + 1);
    if (first || key_table != table) {
      out += fmt::format("{}[{}]\n", first ? "" : "\n", key_table);
      table = key_table;
      first = false;
    }
    out += fmt::format("{} = {}\n", key, toml_value(value));
  }
  return out;
}

std::vector<std::string> config_differences(const std::string& toml_a, const std::string& toml_b,
                                            const std::string& source_a, const std::string& source_b) {
  // Leaves keyed by dotted name, each printed as TOML, so 1 and 1.0 or "a" and 'a' compare by value as written.
  const auto leaves = [](const std::string& text, const std::string& source) {
    toml::table table;
    try {
      table = toml_parse(text, source);
    } catch (const toml::parse_error& e) {
      DSEE_CHECK(false, "{}: not valid TOML: {}", source, e.description());
    }
    std::vector<std::pair<std::string, const toml::node*>> flat;
    flatten(table, "", flat);
    std::map<std::string, std::string> printed;
    for (const auto& [name, node] : flat) {
      std::ostringstream out;
      if (const auto* number = node->as_floating_point())
        out << fmt::format("{}", number->get());  // shortest form
      else
        node->visit([&](const auto& value) { out << value; });
      printed[name] = out.str();
    }
    return printed;
  };
  const auto a = leaves(toml_a, source_a), b = leaves(toml_b, source_b);
  std::set<std::string> names;
  for (const auto& [name, value] : a) names.insert(name);
  for (const auto& [name, value] : b) names.insert(name);
  std::vector<std::string> differences;
  for (const std::string& name : names) {
    const auto in_a = a.find(name), in_b = b.find(name);
    const std::string value_a = in_a == a.end() ? "<absent>" : in_a->second;
    const std::string value_b = in_b == b.end() ? "<absent>" : in_b->second;
    if (in_a == a.end() || in_b == b.end() || value_a != value_b)
      differences.push_back(fmt::format("{}: {} → {}", name, value_a, value_b));
  }
  return differences;
}

}  // namespace dsee
