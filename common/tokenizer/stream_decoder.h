// Incremental decoding of generated tokens into text that is safe to show or send.
//
// A GPT-2 token may end inside a multi-byte UTF-8 character (an emoji is often two or three
// tokens), so decoding token by token would emit broken characters. A StreamDecoder holds back an
// incomplete trailing character until later tokens complete it:
//
//   StreamDecoder stream(tokenizer);
//   for (TokenId id : generated) send(*stream.Push(id));
//   send(stream.Finish());
//
// Every delta is valid UTF-8 and never splits a character. Bytes that can no longer become a
// valid character become U+FFFD as soon as that is certain, so for any ids
//   concat(Push(ids[i])...) + Finish() == Decode(ids).decode("utf-8", errors="replace").
// Not thread-safe: one StreamDecoder per stream.

#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"

namespace gpt2 {

class StreamDecoder {
 public:
  // Keeps a copy of `tokenizer` (cheap: copies share the vocabulary).
  explicit StreamDecoder(Tokenizer tokenizer);

  // Adds one token; returns the text that became complete (possibly empty).
  // Error (OutOfRange) for an id outside the vocabulary; the stream is unchanged then.
  absl::StatusOr<std::string> Push(TokenId id);

  // Returns what is still held back (an incomplete character becomes U+FFFD) and resets the
  // stream, so the decoder can be reused.
  std::string Finish();

  // Number of bytes held back (0 to 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  Tokenizer tokenizer_;
  std::string pending_;  // a truncated but so far well-formed UTF-8 sequence
};

}  // namespace gpt2
