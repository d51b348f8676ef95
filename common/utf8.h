// UTF-8 validation and repair of byte strings: the tokenizer's, the OpenAI API's and gpt2ctl's.
//
// The tokenizer works on bytes but its pre-tokenisation regex needs valid UTF-8. Invalid input is
// repaired the way Python's bytes.decode("utf-8", errors="replace") does it: every maximal subpart
// of an ill-formed sequence (Unicode 15, section 3.9, "U+FFFD substitution of maximal subparts")
// becomes one U+FFFD. A maximal subpart is the longest prefix of a well-formed sequence that the
// input starts; a byte that can never start one (0x80-0xC1, 0xF5-0xFF) is a subpart of its own.
// Surrogates (ED A0..BF ..) and overlongs (E0 80..9F .., F0 80..8F ..) are ill-formed.

#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace gpt2 {

// The UTF-8 encoding of U+FFFD REPLACEMENT CHARACTER.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Length of the longest well-formed UTF-8 prefix of `bytes` (== bytes.size() if it is all valid).
size_t ValidUtf8PrefixLength(std::string_view bytes);

// Returns `bytes` with every maximal subpart of an ill-formed sequence replaced by U+FFFD.
std::string ReplaceInvalidUtf8(std::string_view bytes);

// Splits `bytes` for incremental decoding. Returns the length of the prefix that is final: every
// sequence in it is either complete or already known to be ill-formed. What follows it (at most 3
// bytes) is a well-formed but truncated sequence that later bytes may still complete.
size_t FinalUtf8PrefixLength(std::string_view bytes);

}  // namespace gpt2
