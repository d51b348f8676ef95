#include "worker/tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gpt2 {
namespace {

// kGpt2SplitPattern rewritten so that PCRE2 splits exactly as tiktoken's Rust regex does:
//  - \s is Unicode White_Space, spelled out: U+0009..000D, U+0020, U+0085, U+00A0, U+1680,
//    U+2000..200A, U+2028, U+2029, U+202F, U+205F, U+3000 (PCRE2's \s adds U+180E). \S is the
//    negated class.
//  - \p{L} and \p{N} follow Unicode 16 (tiktoken 0.14's regex tables); PCRE2 10.42 knows Unicode
//    14, so the code points that became letters or numbers in Unicode 15 and 16 are listed
//    (redundant, and harmless, with a newer PCRE2). tests/reference compares every code point.
#define GPT2D_WS R"(\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})"
#define GPT2D_LETTER                                                                               \
  R"(\p{L}\x{1C89}-\x{1C8A}\x{A7CB}-\x{A7CD}\x{A7DA}-\x{A7DC}\x{105C0}-\x{105F3}\x{10D4A}-\x{10D65})" \
  R"(\x{10D6F}-\x{10D85}\x{10EC2}-\x{10EC4}\x{1123F}-\x{11240}\x{11380}-\x{11389}\x{1138B}\x{1138E})" \
  R"(\x{11390}-\x{113B5}\x{113B7}\x{113D1}\x{113D3}\x{11BC0}-\x{11BE0}\x{11F02}\x{11F04}-\x{11F10})"   \
  R"(\x{11F12}-\x{11F33}\x{1342F}\x{13441}-\x{13446}\x{13460}-\x{143FA}\x{16100}-\x{1611D})"           \
  R"(\x{16D40}-\x{16D6C}\x{18CFF}\x{1B132}\x{1B155}\x{1DF25}-\x{1DF2A}\x{1E030}-\x{1E06D})"            \
  R"(\x{1E4D0}-\x{1E4EB}\x{1E5D0}-\x{1E5ED}\x{1E5F0}\x{2B739}\x{2EBF0}-\x{2EE5D}\x{31350}-\x{323AF})"
#define GPT2D_NUMBER                                                                               \
  R"(\p{N}\x{10D40}-\x{10D49}\x{116D0}-\x{116E3}\x{11BF0}-\x{11BF9}\x{11F50}-\x{11F59})"             \
  R"(\x{16130}-\x{16139}\x{16D70}-\x{16D79}\x{1CCF0}-\x{1CCF9}\x{1D2C0}-\x{1D2D3}\x{1E4F0}-\x{1E4F9})" \
  R"(\x{1E5F1}-\x{1E5FA})"
constexpr char kPcre2Pattern[] =
    R"('(?:[sdmt]|ll|ve|re))"
    R"(| ?[)" GPT2D_LETTER R"(]+)"
    R"(| ?[)" GPT2D_NUMBER R"(]+)"
    R"(| ?[^)" GPT2D_WS GPT2D_LETTER GPT2D_NUMBER R"(]+)"
    R"(|[)" GPT2D_WS R"(]+(?![^)" GPT2D_WS R"(]))"
    R"(|[)" GPT2D_WS R"(]+)";
#undef GPT2D_WS
#undef GPT2D_LETTER
#undef GPT2D_NUMBER

// Length of the UTF-8 character starting with `lead` (text is known to be valid).
std::size_t Utf8CharLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

}  // namespace

struct Pretokenizer::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

absl::StatusOr<Pretokenizer> Pretokenizer::Create() {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  auto compiled = std::make_unique<Compiled>();
  compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPcre2Pattern), PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (compiled->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InternalError(absl::StrCat("PCRE2 rejected the GPT-2 split pattern at offset ",
                                            error_offset, ": ",
                                            reinterpret_cast<const char*>(message)));
  }
  // JIT is an optimisation only: where it is unavailable the interpreter gives the same matches.
  compiled->jit = pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE) == 0;
  return Pretokenizer(std::move(compiled));
}

Pretokenizer::Pretokenizer(std::unique_ptr<Compiled> compiled) : compiled_(std::move(compiled)) {}
Pretokenizer::Pretokenizer(Pretokenizer&&) noexcept = default;
Pretokenizer& Pretokenizer::operator=(Pretokenizer&&) noexcept = default;
Pretokenizer::~Pretokenizer() = default;

bool Pretokenizer::uses_jit() const { return compiled_->jit; }

void Pretokenizer::split(std::string_view text,
                         absl::FunctionRef<void(std::string_view)> on_piece) const {
  if (text.empty()) return;
  // Match data is per call: the compiled pattern is shared read-only between threads.
  pcre2_match_data* match = pcre2_match_data_create(1, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
  std::size_t pos = 0;
  while (pos < text.size()) {
    int rc = compiled_->jit
                 ? pcre2_jit_match(compiled_->code, subject, text.size(), pos, 0, match, nullptr)
                 : PCRE2_ERROR_JIT_BADOPTION;
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // No JIT, or it ran out of JIT stack: the interpreter keeps its frames on the heap.
      rc = pcre2_match(compiled_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       match, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;  // unreachable: every character matches some branch
    std::size_t start = ovector[0], end = ovector[1];
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
