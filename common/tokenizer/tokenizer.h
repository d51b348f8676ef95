// GPT-2's byte-level BPE tokenizer, token-for-token identical to tiktoken's "gpt2" encoding
// (r50k_base): 50,256 mergeable tokens (ids 0..50255) and one special token, <|endoftext|> = 50256.
//
// Encoding, as tiktoken does it:
//   1. Text is split into pieces by the GPT-2 regex (see pretokenizer.h).
//   2. A piece that is itself a token becomes that token. Otherwise its bytes are merged: start
//      from single bytes and repeatedly join the adjacent pair whose concatenated bytes have the
//      lowest rank (= id), leftmost first on ties, until no adjacent pair is a token.
//
// Invalid UTF-8 input is first repaired like Python's bytes.decode("utf-8", errors="replace")
// (each maximal ill-formed subpart becomes U+FFFD, see utf8.h), so for any byte string `raw`,
//   EncodeOrdinary(raw) == tiktoken.encode_ordinary(raw.decode("utf-8", "replace")).
//
// A Tokenizer is an immutable value: copies share one vocabulary, and every const method may be
// called from any number of threads at once.

#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

// A token id. Signed 32-bit so that ids drop straight into int32 tensors and files.
using TokenId = int32_t;

class Tokenizer {
 public:
  // The one special token's text. Its id is the number of mergeable tokens (50256 for GPT-2).
  static constexpr std::string_view kEndOfText = "<|endoftext|>";

  // Builds a tokenizer whose mergeable token with id r has bytes token_bytes[r].
  // Errors (InvalidArgument): fewer than 256 tokens, a byte string listed twice, an empty one, or
  // a single byte with no token of its own (every byte must be encodable).
  static absl::StatusOr<Tokenizer> FromRanks(std::vector<std::string> token_bytes);

  // Ids of `text`, where <|endoftext|> is ordinary text (tiktoken's encode_ordinary).
  std::vector<TokenId> EncodeOrdinary(std::string_view text) const;

  // The ids a model continues `text` from: EncodeOrdinary(text), or just eot_token() when that is
  // empty (an empty prompt starts a new document). Serving, `sample` and the trainer's samples.
  std::vector<TokenId> EncodePrompt(std::string_view text) const;

  // With allow_special, each literal <|endoftext|> in `text` becomes eot_token() (tiktoken's
  // encode(text, allowed_special="all")); without it, the same as EncodeOrdinary(text).
  std::vector<TokenId> Encode(std::string_view text, bool allow_special) const;

  // The bytes of `ids` concatenated. A token may end inside a multi-byte character, so the result
  // need not be valid UTF-8 (StreamDecoder yields text). eot_token() decodes to "<|endoftext|>".
  // Error (OutOfRange) naming the first id outside [0, vocab_size()).
  absl::StatusOr<std::string> Decode(std::span<const TokenId> ids) const;

  // The bytes of one token; the view lives as long as any copy of this Tokenizer.
  // Error (OutOfRange) if id is outside [0, vocab_size()).
  absl::StatusOr<std::string_view> TokenBytes(TokenId id) const;

  // Number of ids, special token included: 50257 for GPT-2.
  int vocab_size() const;

  // The id of <|endoftext|>: 50256 for GPT-2.
  TokenId eot_token() const;

 private:
  struct Vocab;
  explicit Tokenizer(std::shared_ptr<const Vocab> vocab);

  // Appends the ids of `text` (valid UTF-8, no special-token handling) to `out`.
  void AppendOrdinary(std::string_view text, std::vector<TokenId>* out) const;
  // Appends the ids of one regex piece.
  void AppendPiece(std::string_view piece, std::vector<TokenId>* out) const;

  std::shared_ptr<const Vocab> vocab_;
};

// Loads the GPT-2 vocabulary from the first of these that is set:
//   1. explicit_path, if not empty: a .tiktoken file, or a directory holding gpt2.tiktoken, or
//      encoder.json + vocab.bpe (OpenAI's names), or vocab.json + merges.txt (Hugging Face's);
//   2. the environment variable GPT2_VOCAB (same forms);
//   3. the build's default, GPT2D_DEFAULT_VOCAB (the repository's assets/gpt2.tiktoken).
// Errors: NotFound listing every place it looked; a malformed file's error (see vocab_files.h).
absl::StatusOr<Tokenizer> LoadTokenizer(std::string_view explicit_path);

}  // namespace gpt2
