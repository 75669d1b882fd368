// The XML reader of nlg_xml.h: a recursive-descent parser over the whole
// text, with the element depth bounded so hostile input cannot exhaust the
// stack.
#include "data/nlg_xml.h"

#include <fmt/format.h>

#include <charconv>

#include "base/error.h"
#include "data/unicode.h"

namespace dsee {
namespace {

constexpr int kMaxDepth = 200;

class XmlParser {
 public:
  XmlParser(const std::string& text, const std::string& where) : text_(text), where_(where) {}

  XmlElement document() {
    skip_misc(true);
    expect(at("<") && !at("</"), "expected the root element");
    XmlElement root = element(0);
    skip_misc(false);
    expect(pos_ >= text_.size(), "text after the root element");
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("{}: line {}: not well-formed XML: {}", where_, line_, what));
  }
  void expect(bool condition, const char* what) const {
    if (!condition) fail(what);
  }
  bool at(std::string_view s) const { return std::string_view(text_).substr(pos_).starts_with(s); }
  void advance(std::size_t n) {
    for (std::size_t k = 0; k < n && pos_ < text_.size(); ++k)
      if (text_[pos_++] == '\n') ++line_;
  }
  // Moves past `end`, failing with `what` when the text ends first.
  std::string until(std::string_view end, const char* what) {
    const std::size_t found = text_.find(end, pos_);
    if (found == std::string::npos) fail(what);
    std::string inside = text_.substr(pos_, found - pos_);
    advance(found - pos_ + end.size());
    return inside;
  }
  static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) advance(1);
  }
  // White space, comments and processing instructions (and, before the
  // root, one DOCTYPE) between elements.
  void skip_misc(bool prolog) {
    while (true) {
      skip_space();
      if (at("<?")) {
        until("?>", "a processing instruction '<?' is never closed with '?>'");
      } else if (at("<!--")) {
        advance(4);
        until("-->", "a comment '<!--' is never closed with '-->'");
      } else if (prolog && at("<!DOCTYPE")) {
        const std::string doctype = until(">", "<!DOCTYPE is never closed with '>'");
        if (doctype.find('[') != std::string::npos) fail("a DOCTYPE with an internal subset is not supported");
      } else {
        return;
      }
    }
  }
  std::string name() {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && !is_space(text_[pos_]) && text_[pos_] != '>' && text_[pos_] != '/' &&
           text_[pos_] != '=' && text_[pos_] != '<' && text_[pos_] != '"' && text_[pos_] != '\'')
      advance(1);
    if (pos_ == start) fail("expected a name");
    return text_.substr(start, pos_ - start);
  }
  // Appends `raw` to `out` with character and entity references replaced.
  void append_decoded(std::string_view raw, std::string& out) const {
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '&') {
        out += raw[i];
        continue;
      }
      const std::size_t semicolon = raw.find(';', i);
      if (semicolon == std::string::npos) fail("'&' without ';' (write a literal '&' as '&amp;')");
      const std::string_view entity = raw.substr(i + 1, semicolon - i - 1);
      i = semicolon;
      if (entity == "lt")
        out += '<';
      else if (entity == "gt")
        out += '>';
      else if (entity == "amp")
        out += '&';
      else if (entity == "quot")
        out += '"';
      else if (entity == "apos")
        out += '\'';
      else if (entity.starts_with("#")) {
        const bool hex = entity.starts_with("#x");
        const std::string_view digits = entity.substr(hex ? 2 : 1);
        std::uint32_t code = 0;
        const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), code, hex ? 16 : 10);
        if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() || code == 0 ||
            code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
          fail(fmt::format("'&{};' is not a valid character reference", entity));
        unicode::utf8_append(out, static_cast<char32_t>(code));
      } else {
        fail(fmt::format("unknown entity '&{};' (XML knows &lt; &gt; &amp; &quot; &apos; and &#N;)", entity));
      }
    }
  }
  XmlElement element(int depth) {
    if (depth >= kMaxDepth) fail(fmt::format("elements nest deeper than {}", kMaxDepth));
    XmlElement e;
    e.line = line_;
    advance(1);  // '<'
    e.name = name();
    while (true) {
      skip_space();
      expect(pos_ < text_.size(), "the file ends inside a start tag");
      if (at("/>")) {
        advance(2);
        return e;
      }
      if (at(">")) {
        advance(1);
        break;
      }
      std::string key = name();
      skip_space();
      expect(at("="), "expected '=' after an attribute name");
      advance(1);
      skip_space();
      expect(at("\"") || at("'"), "an attribute value must be quoted");
      const char quote[2] = {text_[pos_], '\0'};
      advance(1);
      const std::string raw = until(quote, "an attribute value is never closed");
      if (raw.find('<') != std::string::npos) fail("'<' inside an attribute value");
      for (const auto& [existing, value] : e.attributes)
        if (existing == key) fail(fmt::format("attribute '{}' is given twice on <{}>", key, e.name));
      std::string value;
      append_decoded(raw, value);
      e.attributes.emplace_back(std::move(key), std::move(value));
    }
    while (true) {
      expect(pos_ < text_.size(), "the file ends before the element is closed");
      if (at("</")) {
        advance(2);
        const std::string closing = name();
        if (closing != e.name) fail(fmt::format("</{}> closes <{}> (opened on line {})", closing, e.name, e.line));
        skip_space();
        expect(at(">"), "expected '>' after the end tag's name");
        advance(1);
        return e;
      }
      if (at("<!--")) {
        advance(4);
        until("-->", "a comment '<!--' is never closed with '-->'");
      } else if (at("<![CDATA[")) {
        advance(9);
        e.text += until("]]>", "a CDATA section is never closed with ']]>'");
      } else if (at("<?")) {
        until("?>", "a processing instruction '<?' is never closed with '?>'");
      } else if (at("<")) {
        e.children.push_back(element(depth + 1));
      } else {
        const std::size_t next = std::min(text_.find('<', pos_), text_.size());
        const std::size_t start = pos_;
        advance(next - pos_);
        append_decoded(std::string_view(text_).substr(start, next - start), e.text);
      }
    }
  }

  const std::string& text_;
  const std::string& where_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
};

}  // namespace

std::optional<std::string> XmlElement::attribute(const std::string& key) const {
  for (const auto& [k, v] : attributes)
    if (k == key) return v;
  return std::nullopt;
}

const XmlElement* XmlElement::child(const std::string& child_name) const {
  for (const XmlElement& c : children)
    if (c.name == child_name) return &c;
  return nullptr;
}

XmlElement xml_parse(const std::string& text, const std::string& where) { return XmlParser(text, where).document(); }

}  // namespace dsee
