#include "common/tokenizer/stream_decoder.h"

#include <utility>

#include "common/utf8.h"

namespace gpt2 {

StreamDecoder::StreamDecoder(Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}

absl::StatusOr<std::string> StreamDecoder::Push(TokenId id) {
  absl::StatusOr<std::string_view> bytes = tokenizer_.TokenBytes(id);
  if (!bytes.ok()) return bytes.status();
  pending_.append(*bytes);
  // pending_ starts at a character boundary, so its final prefix decodes the same on its own as
  // it would inside the whole stream.
  const size_t final_length = FinalUtf8PrefixLength(pending_);
  std::string delta = ReplaceInvalidUtf8(std::string_view(pending_).substr(0, final_length));
  pending_.erase(0, final_length);
  return delta;
}

std::string StreamDecoder::Finish() {
  std::string rest = ReplaceInvalidUtf8(pending_);
  pending_.clear();
  return rest;
}

}  // namespace gpt2
