#include "worker/tokenizer/stream_decoder.h"

#include <utility>

#include "worker/tokenizer/utf8.h"

namespace gpt2 {

StreamDecoder::StreamDecoder(Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}

absl::StatusOr<std::string> StreamDecoder::push(TokenId id) {
  absl::StatusOr<std::string_view> bytes = tokenizer_.token_bytes(id);
  if (!bytes.ok()) return bytes.status();
  pending_.append(*bytes);
  // pending_ starts at a character boundary, so its final prefix decodes the same on its own as
  // it would inside the whole stream.
  const std::size_t final_length = FinalUtf8PrefixLength(pending_);
  std::string delta = ReplaceInvalidUtf8(std::string_view(pending_).substr(0, final_length));
  pending_.erase(0, final_length);
  return delta;
}

std::string StreamDecoder::finish() {
  std::string rest = ReplaceInvalidUtf8(pending_);
  pending_.clear();
  return rest;
}

}  // namespace gpt2
