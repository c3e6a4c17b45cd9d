// The T5 tokenizer over sentencepiece, and diffusers' prompt cleaning for Wan. Compiled only
// where CMake found sentencepiece (DITKIT_HAVE_SENTENCEPIECE).
#include "dit/tokenizer.h"

#include <ATen/ATen.h>
#include <sentencepiece_processor.h>

#include <filesystem>
#include <stdexcept>

namespace ditkit {
namespace {

// --- UTF-8 <-> code points -------------------------------------------------------------------

std::u32string decode_utf8(const std::string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    const int extra = lead < 0x80 ? 0 : (lead >> 5) == 0x6 ? 1 : (lead >> 4) == 0xE ? 2 : (lead >> 3) == 0x1E ? 3 : -1;
    char32_t c = extra == 0 ? lead : extra == 1 ? lead & 0x1F : extra == 2 ? lead & 0x0F : lead & 0x07;
    bool ok = extra >= 0;
    for (int k = 1; ok && k <= extra; ++k) {
      ok = i + size_t(k) < text.size() && (static_cast<unsigned char>(text[i + size_t(k)]) & 0xC0) == 0x80;
      if (ok) c = (c << 6) | (static_cast<unsigned char>(text[i + size_t(k)]) & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8 either.
    static const char32_t kLeast[4] = {0, 0x80, 0x800, 0x10000};
    if (!ok || c < kLeast[extra] || (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF)
      throw std::invalid_argument("not valid UTF-8 at byte " + std::to_string(i));
    out.push_back(c);
    i += size_t(extra) + 1;
  }
  return out;
}

std::string encode_utf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c < 0x80) {
      out += char(c);
    } else if (c < 0x800) {
      out += char(0xC0 | (c >> 6));
      out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += char(0xE0 | (c >> 12));
      out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    } else {
      out += char(0xF0 | (c >> 18));
      out += char(0x80 | ((c >> 12) & 0x3F));
      out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    }
  }
  return out;
}

// --- html.unescape (the parts prompts meet) ---------------------------------------------------

// What Python's html.unescape makes of the numeric reference &#num; (html._replace_charref).
std::u32string numeric_reference(char32_t num, bool too_big) {
  // html._invalid_charrefs: Windows-1252's meaning for 0x80..0x9F, as browsers do.
  static const char32_t kCp1252[32] = {0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                       0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
                                       0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                       0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};
  if (too_big || num == 0 || (num >= 0xD800 && num <= 0xDFFF)) return U"\uFFFD";
  if (num == 0x0D) return U"\r";
  if (num >= 0x80 && num <= 0x9F) return std::u32string(1, kCp1252[num - 0x80]);
  // html._invalid_codepoints vanish.
  if ((num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F) || num == 0x7F ||
      (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
    return U"";
  return std::u32string(1, num);
}

// The named references kept: the five that prompts meet; "apos;" only with its semicolon, the
// others also without (HTML's legacy forms, matched as prefixes of a longer name, as Python does).
const std::pair<const char32_t*, char32_t> kNamed[] = {
    {U"amp;", U'&'},  {U"lt;", U'<'},  {U"gt;", U'>'},  {U"quot;", U'"'},  {U"apos;", U'\''}, {U"nbsp;", 0xA0},
    {U"amp", U'&'},   {U"lt", U'<'},   {U"gt", U'>'},   {U"quot", U'"'},   {U"nbsp", 0xA0}};

bool named_reference(const std::u32string& name, char32_t& out) {
  for (const auto& [key, value] : kNamed)
    if (name == key) {
      out = value;
      return true;
    }
  return false;
}

bool is_digit(char32_t c, int base) {
  return (c >= '0' && c <= '9') || (base == 16 && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
}

// One pass of html.unescape: the regex &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?).
std::u32string html_unescape(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s[i] != U'&') {
      out += s[i++];
      continue;
    }
    size_t j = i + 1;
    if (j < s.size() && s[j] == U'#') {
      const bool hex = j + 1 < s.size() && (s[j + 1] == U'x' || s[j + 1] == U'X');
      const int base = hex ? 16 : 10;
      size_t k = j + (hex ? 2 : 1);
      const size_t digits_start = k;
      char32_t num = 0;
      bool too_big = false;
      for (; k < s.size() && is_digit(s[k], base); ++k) {
        const char32_t d = s[k] <= '9' ? s[k] - '0' : (s[k] | 0x20) - 'a' + 10;
        if (!too_big) num = num * base + d;
        too_big = too_big || num > 0x10FFFF;
      }
      if (k == digits_start) {  // "&#" or "&#x" without digits is left as written
        out += s[i++];
        continue;
      }
      if (k < s.size() && s[k] == U';') ++k;
      out += numeric_reference(num, too_big);
      i = k;
      continue;
    }
    size_t k = j;
    while (k < s.size() && k - j < 32 && s[k] != U'\t' && s[k] != U'\n' && s[k] != U'\f' && s[k] != U' ' &&
           s[k] != U'<' && s[k] != U'&' && s[k] != U'#' && s[k] != U';')
      ++k;
    if (k == j) {
      out += s[i++];
      continue;
    }
    if (k < s.size() && s[k] == U';') ++k;
    const std::u32string name = s.substr(j, k - j);
    char32_t value;
    if (named_reference(name, value)) {
      out += value;
      i = k;
      continue;
    }
    bool found = false;
    for (size_t x = name.size() - 1; x >= 2 && !found; --x)
      if (named_reference(name.substr(0, x), value)) {
        out += value;
        out += name.substr(x);
        found = true;
      }
    if (!found) out += U'&' + name;
    i = k;
  }
  return out;
}

// --- whitespace ------------------------------------------------------------------------------

// Python regex's \s: the Unicode White_Space property.
bool is_regex_space(char32_t c) {
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's str.isspace(), what str.strip() removes: \s and the separators 0x1C..0x1F.
bool is_str_space(char32_t c) { return is_regex_space(c) || (c >= 0x1C && c <= 0x1F); }

std::u32string strip(const std::u32string& s) {
  size_t begin = 0, end = s.size();
  while (begin < end && is_str_space(s[begin])) ++begin;
  while (end > begin && is_str_space(s[end - 1])) --end;
  return s.substr(begin, end - begin);
}

}  // namespace

std::string clean_prompt(const std::string& text) {
  // basic_clean: html.unescape(html.unescape(text)).strip()
  std::u32string s = strip(html_unescape(html_unescape(decode_utf8(text))));
  // whitespace_clean: re.sub(r"\s+", " ", text).strip()
  std::u32string collapsed;
  collapsed.reserve(s.size());
  for (char32_t c : s) {
    if (!is_regex_space(c))
      collapsed += c;
    else if (collapsed.empty() || collapsed.back() != U' ')  // a space only ever ends a run here
      collapsed += U' ';
  }
  return encode_utf8(strip(collapsed));
}

Tokenizer::Tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  path_ = fs::is_directory(path) ? (fs::path(path) / "spiece.model").string() : path;
  if (!fs::is_regular_file(path_))
    throw std::runtime_error(path_ + ": no such file (the sentencepiece model, spiece.model in Wan's tokenizer/)");
  auto processor = std::make_shared<sentencepiece::SentencePieceProcessor>();
  const auto status = processor->Load(path_);
  if (!status.ok()) throw std::runtime_error(path_ + ": not a sentencepiece model: " + status.ToString());
  pad_id_ = processor->pad_id();
  eos_id_ = processor->eos_id();
  if (pad_id_ < 0 || eos_id_ < 0)
    throw std::runtime_error(path_ + ": the sentencepiece model has no " + (pad_id_ < 0 ? "pad" : "EOS") +
                             " piece (T5 models are trained with pad 0, EOS 1)");
  processor_ = std::move(processor);
}

int64_t Tokenizer::piece_count() const { return processor_->GetPieceSize(); }

std::vector<int64_t> Tokenizer::tokenize(const std::string& text, int64_t max_length) const {
  if (max_length < 1)
    throw std::invalid_argument("Tokenizer: max_length must be >= 1 (room for EOS), got " +
                                std::to_string(max_length));
  std::vector<int> pieces;
  const auto status = processor_->Encode(text, &pieces);
  if (!status.ok()) throw std::invalid_argument("Tokenizer: cannot encode the text: " + status.ToString());
  // transformers truncates the text's tokens so that they and EOS fit max_length.
  if (int64_t(pieces.size()) > max_length - 1) pieces.resize(size_t(max_length - 1));
  std::vector<int64_t> ids(pieces.begin(), pieces.end());
  ids.push_back(eos_id_);
  return ids;
}

TokenBatch Tokenizer::encode(const std::vector<std::string>& prompts, int64_t max_length) const {
  if (max_length < 1)
    throw std::invalid_argument("Tokenizer: max_length must be >= 1 (room for EOS), got " +
                                std::to_string(max_length));
  const int64_t B = int64_t(prompts.size());
  TokenBatch batch;
  batch.input_ids = at::full({B, max_length}, pad_id_, at::kLong);
  batch.attention_mask = at::zeros_like(batch.input_ids);
  for (int64_t b = 0; b < B; ++b) {
    std::string cleaned;
    try {
      cleaned = clean_prompt(prompts[size_t(b)]);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("Tokenizer: prompt " + std::to_string(b) + ": " + e.what());
    }
    const std::vector<int64_t> ids = tokenize(cleaned, max_length);
    const int64_t n = int64_t(ids.size());
    batch.input_ids[b].narrow(0, 0, n).copy_(at::tensor(ids, at::kLong));
    batch.attention_mask[b].narrow(0, 0, n).fill_(1);
    batch.lengths.push_back(n);
  }
  return batch;
}

}  // namespace ditkit
