// A small XML reader for the WebNLG release files (data/nlg_data.cpp): enough
// XML 1.0 for data files (elements, attributes, character and entity
// references, CDATA, comments, processing instructions, a DOCTYPE without an
// internal subset) and nothing of DTDs or namespaces, which those files do
// not use. A library (libxml2, pugixml) would add a dependency for one
// reader; the subset here is about 200 lines and fuzzed (tests/fuzz/nlg_data.cpp).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dsee {

struct XmlElement {
  std::string name;
  std::vector<std::pair<std::string, std::string>> attributes;  // values with references replaced
  std::string text;                                             // the element's own text, children's excluded
  std::vector<XmlElement> children;
  std::size_t line = 0;  // of the start tag

  std::optional<std::string> attribute(const std::string& key) const;
  const XmlElement* child(const std::string& child_name) const;  // the first, or nullptr
};

// The root element of `text`. dsee::Error "<where>: line N: ..." on text that
// is not well-formed XML or nests deeper than 200 elements.
XmlElement xml_parse(const std::string& text, const std::string& where);

}  // namespace dsee
