// Pre-tokenisation: the regex split of text into pieces that byte-pair encoding then handles one
// at a time. GPT-2 (tiktoken's "gpt2" / r50k_base) splits with
//
//   '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// under Rust regex semantics (fancy-regex). PCRE2 (UTF + UCP) matches it the same way except on a
// few code points whose classes differ between the engines' Unicode tables; text holding one of
// them is split with an equivalent pattern whose classes spell tiktoken's out (pretokenizer.cc).

#pragma once

#include <memory>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

namespace gpt2 {

// The split pattern as tiktoken writes it (for documentation and the reference tests).
inline constexpr std::string_view kGpt2SplitPattern =
    R"('(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The compiled split patterns (PCRE2, UTF + UCP, JIT-compiled where the platform supports it).
// Immutable after Create(); Split() is safe to call from many threads at once.
class Pretokenizer {
 public:
  static absl::StatusOr<Pretokenizer> Create();

  Pretokenizer(Pretokenizer&&) noexcept;
  Pretokenizer& operator=(Pretokenizer&&) noexcept;
  ~Pretokenizer();

  // Calls on_piece for each piece of `text`, in order; the pieces tile `text`.
  // REQUIRES: text is valid UTF-8 (see ReplaceInvalidUtf8).
  void Split(std::string_view text, absl::FunctionRef<void(std::string_view)> on_piece) const;

  // Whether the pattern runs as JIT code (false: the PCRE2 interpreter).
  bool UsesJit() const;

 private:
  struct Compiled;
  explicit Pretokenizer(std::unique_ptr<Compiled> compiled);
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace gpt2
