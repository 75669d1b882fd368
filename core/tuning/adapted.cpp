// adapted_matrices: see adapted.h.
#include "core/tuning/adapted.h"

#include <ATen/ATen.h>

#include <optional>
#include <regex>

#include "base/error.h"
#include "core/model/pretrained_model.h"

namespace dsee {

at::Tensor AdaptedMatrix::weight() const { return linear->weight.narrow(0, row_offset, rows); }

std::vector<std::string> default_target_modules(ModelFamily family) {
  if (family == ModelFamily::gpt2) return {"c_attn:q", "c_attn:v"};
  return {"query", "value"};
}

namespace {

bool name_matches(const std::string& module, const std::string& pattern) {
  if (module == pattern) return true;
  return module.size() > pattern.size() &&
         module.compare(module.size() - pattern.size(), pattern.size(), pattern) == 0 &&
         module[module.size() - pattern.size() - 1] == '.';
}

struct Pattern {
  std::string text;              // as the user wrote it
  std::string module;            // without the ":part"
  std::optional<std::regex> re;  // "re:" patterns
  int part = -1;                 // 0, 1, 2 for ":q", ":k", ":v"; -1 whole
  bool matched = false;
  bool matches(const std::string& name) const { return re ? std::regex_match(name, *re) : name_matches(name, module); }
};

Pattern parse_pattern(const std::string& text) {
  Pattern p;
  p.text = text;
  p.module = text;
  DSEE_CHECK(!text.empty(), "target_modules: an empty pattern matches nothing");
  const auto colon = text.rfind(':');
  if (colon != std::string::npos && colon + 2 == text.size() && text.rfind("re:", 0) != 0) {
    const char part = text.back();
    DSEE_CHECK(part == 'q' || part == 'k' || part == 'v',
               "target_modules: '{}' selects third '{}'; only :q, :k and :v (of GPT-2's c_attn) exist", text, part);
    p.part = part == 'q' ? 0 : part == 'k' ? 1 : 2;
    p.module = text.substr(0, colon);
  }
  if (text.rfind("re:", 0) == 0) {
    p.module = text.substr(3);
    try {
      p.re = std::regex(p.module);
    } catch (const std::regex_error& e) {
      throw Error(fmt::format("target_modules: '{}' is not a valid regular expression ({})", text, e.what()));
    }
  }
  return p;
}

}  // namespace

std::int64_t layer_of(const std::string& name) {
  static const std::regex layer_re(R"(^(?:encoder\.layer|h)\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(name, m, layer_re) ? std::stoll(m[1].str()) : -1;
}

std::vector<AdaptedMatrix> adapted_matrices(PretrainedModel& model, const std::vector<std::string>& patterns) {
  std::vector<Pattern> parsed;
  for (const auto& text : patterns) parsed.push_back(parse_pattern(text));
  const bool gpt2 = model.config().family == ModelFamily::gpt2;
  static const char* const kParts[] = {"q", "k", "v"};

  std::vector<AdaptedMatrix> out;
  std::vector<std::string> some_names;
  for (auto& [module, linear] : model.linears()) {
    if (some_names.size() < 8) some_names.push_back(module);
    bool whole = false;
    bool parts[3] = {false, false, false};
    for (auto& p : parsed) {
      if (!p.matches(module)) continue;
      p.matched = true;
      if (p.part < 0) {
        whole = true;
        continue;
      }
      const bool fused = gpt2 && name_matches(module, "attn.c_attn");
      DSEE_CHECK(fused, "target_modules: '{}' selects a third of '{}', but only GPT-2's attn.c_attn is fused q|k|v",
                 p.text, module);
      parts[p.part] = true;
    }
    const auto layer = layer_of(module);
    if (whole) {
      out.push_back({module + ".weight", module, module, linear, 0, linear->out_features(), layer});
      continue;
    }
    const auto third = linear->out_features() / 3;
    for (int i = 0; i < 3; ++i)
      if (parts[i])
        out.push_back({fmt::format("{}.weight:{}", module, kParts[i]), module, fmt::format("{}:{}", module, kParts[i]),
                       linear, i * third, third, layer});
  }
  for (const auto& p : parsed)
    DSEE_CHECK(p.matched, "target_modules: '{}' matches no projection of this {} model (module names look like {})",
               p.text, model_family_name(model.config().family), fmt::join(some_names, ", "));
  return out;
}

}  // namespace dsee
