#include "common/tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gpt2 {
namespace {

// PCRE2 and tiktoken's Rust regex disagree on a few code points:
//  - PCRE2's \s (with UCP) also matches U+180E MONGOLIAN VOWEL SEPARATOR, which is not Unicode
//    White_Space (since Unicode 6.3) and so not Rust's \s.
//  - PCRE2 10.42 has Unicode 14 tables, tiktoken 0.14's regex Unicode 16: the code points below
//    became letters (\p{L}) or numbers (\p{N}) in Unicode 15.0 and 16.0. (With a newer PCRE2 the
//    lists are redundant, and harmless.) tests/reference checks every code point against tiktoken.
struct CodePointRange {
  char32_t first, last;
};
constexpr char32_t kMongolianVowelSeparator = 0x180E;
constexpr CodePointRange kNewLetters[] = {
    {0x1C89, 0x1C8A},   {0xA7CB, 0xA7CD},   {0xA7DA, 0xA7DC},   {0x105C0, 0x105F3}, {0x10D4A, 0x10D65},
    {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x1123F, 0x11240}, {0x11380, 0x11389}, {0x1138B, 0x1138B},
    {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3},
    {0x11BC0, 0x11BE0}, {0x11F02, 0x11F02}, {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x1342F, 0x1342F},
    {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C}, {0x18CFF, 0x18CFF},
    {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D}, {0x1E4D0, 0x1E4EB},
    {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0}, {0x2B739, 0x2B739}, {0x2EBF0, 0x2EE5D}, {0x31350, 0x323AF},
};
constexpr CodePointRange kNewNumbers[] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x11F50, 0x11F59}, {0x16130, 0x16139},
    {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3}, {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA},
};

// kGpt2SplitPattern with the disagreements settled: White_Space spelled out (\S as its negated
// class) and the new letters and numbers added to \p{L} and \p{N}. Its big classes make PCRE2
// about 1.5x slower, so it only runs on text that holds one of those code points; on any other
// text it matches exactly what kGpt2SplitPattern itself does.
std::string ExactPattern() {
  const auto ranges = [](const auto& list) {
    std::string out;
    for (const CodePointRange& r : list) {
      absl::StrAppend(&out, "\\x{", absl::Hex(static_cast<uint32_t>(r.first)), "}-\\x{",
                      absl::Hex(static_cast<uint32_t>(r.last)), "}");
    }
    return out;
  };
  const std::string space = R"(\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A})"
                            R"(\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
  const std::string letter = absl::StrCat(R"(\p{L})", ranges(kNewLetters));
  const std::string number = absl::StrCat(R"(\p{N})", ranges(kNewNumbers));
  return absl::StrCat("'(?:[sdmt]|ll|ve|re)| ?[", letter, "]+| ?[", number, "]+| ?[^", space, letter, number, "]+|[",
                      space, "]+(?![^", space, "])|[", space, "]+");
}

bool InRanges(char32_t cp, std::span<const CodePointRange> list) {
  for (const CodePointRange& r : list) {
    if (cp >= r.first && cp <= r.last) return true;
  }
  return false;
}

// Whether valid UTF-8 `text` holds a code point on which PCRE2's tables and tiktoken's differ.
bool NeedsExactPattern(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    if (end - p >= 8) {  // ASCII, eight bytes at a time
      uint64_t word;
      std::memcpy(&word, p, 8);
      if ((word & 0x8080808080808080ULL) == 0) {
        p += 8;
        continue;
      }
    }
    if (*p < 0xE1) {  // below U+1000 (or a continuation byte): the engines agree
      ++p;
      continue;
    }
    char32_t cp;
    if (*p < 0xF0) {
      cp = (char32_t{*p & 0x0Fu} << 12) | (char32_t{p[1] & 0x3Fu} << 6) | (p[2] & 0x3Fu);
      p += 3;
    } else {
      cp = (char32_t{*p & 0x07u} << 18) | (char32_t{p[1] & 0x3Fu} << 12) | (char32_t{p[2] & 0x3Fu} << 6) |
           (p[3] & 0x3Fu);
      p += 4;
    }
    if (cp == kMongolianVowelSeparator || InRanges(cp, kNewLetters) || InRanges(cp, kNewNumbers)) {
      return true;
    }
  }
  return false;
}

// Length of the UTF-8 character starting with `lead` (text is known to be valid).
size_t Utf8CharLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

struct CompiledPattern {
  pcre2_code* code = nullptr;
  bool jit = false;
};

absl::StatusOr<CompiledPattern> Compile(const std::string& pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  CompiledPattern compiled;
  compiled.code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                &error_code, &error_offset, nullptr);
  if (compiled.code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InternalError(absl::StrCat("PCRE2 rejected the split pattern at offset ", error_offset, ": ",
                                            reinterpret_cast<const char*>(message)));
  }
  // JIT is an optimisation only: where it is unavailable the interpreter gives the same matches.
  compiled.jit = pcre2_jit_compile(compiled.code, PCRE2_JIT_COMPLETE) == 0;
  return compiled;
}

}  // namespace

struct Pretokenizer::Compiled {
  CompiledPattern fast;   // kGpt2SplitPattern as tiktoken writes it
  CompiledPattern exact;  // ExactPattern()
  ~Compiled() {
    pcre2_code_free(fast.code);
    pcre2_code_free(exact.code);
  }
};

absl::StatusOr<Pretokenizer> Pretokenizer::Create() {
  auto compiled = std::make_unique<Compiled>();
  absl::StatusOr<CompiledPattern> fast = Compile(std::string(kGpt2SplitPattern));
  if (!fast.ok()) return fast.status();
  compiled->fast = *fast;
  absl::StatusOr<CompiledPattern> exact = Compile(ExactPattern());
  if (!exact.ok()) return exact.status();
  compiled->exact = *exact;
  return Pretokenizer(std::move(compiled));
}

Pretokenizer::Pretokenizer(std::unique_ptr<Compiled> compiled) : compiled_(std::move(compiled)) {}
Pretokenizer::Pretokenizer(Pretokenizer&&) noexcept = default;
Pretokenizer& Pretokenizer::operator=(Pretokenizer&&) noexcept = default;
Pretokenizer::~Pretokenizer() = default;

bool Pretokenizer::UsesJit() const { return compiled_->fast.jit && compiled_->exact.jit; }

void Pretokenizer::Split(std::string_view text, absl::FunctionRef<void(std::string_view)> on_piece) const {
  if (text.empty()) return;
  const CompiledPattern& pattern = NeedsExactPattern(text) ? compiled_->exact : compiled_->fast;
  // Match data is per call: the compiled pattern is shared read-only between threads.
  pcre2_match_data* match = pcre2_match_data_create(1, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pattern.jit ? pcre2_jit_match(pattern.code, subject, text.size(), pos, 0, match, nullptr)
                         : PCRE2_ERROR_JIT_BADOPTION;
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // No JIT, or it ran out of JIT stack: the interpreter keeps its frames on the heap.
      rc = pcre2_match(pattern.code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;  // unreachable: every character matches some branch
    size_t start = ovector[0], end = ovector[1];
    if (rc < 0 || end <= pos) {
      // A resource limit hit by both engines. Never seen with this pattern (its repeats are all
      // single-character ones); degrade to one character per piece rather than fail the encode.
      start = pos;
      end = pos + Utf8CharLength(static_cast<unsigned char>(text[pos]));
    }
    on_piece(text.substr(start, end - start));
    pos = end;
  }
  pcre2_match_data_free(match);
}

}  // namespace gpt2
