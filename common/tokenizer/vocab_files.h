// Reading the GPT-2 vocabulary from disk, in either of its published forms:
//
//   tiktoken:  one token a line, "<base64 of its bytes> <rank>", ranks 0..N-1 each exactly once
//              (assets/gpt2.tiktoken; blank lines are ignored).
//   OpenAI / Hugging Face:  encoder.json (vocab.json) maps each token, written with GPT-2's
//              printable stand-ins for bytes, to its id; vocab.bpe (merges.txt) lists the merges
//              in priority order after a "#version" comment line. <|endoftext|> may appear in
//              the JSON and must then have the id after the last mergeable token.
//
// Each reader returns the mergeable tokens' bytes indexed by rank, ready for Tokenizer::FromRanks.
// Every error names the file, and the line where there is one; a reader never crashes on bad input.

#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

// Errors: NotFound / PermissionDenied if unreadable; InvalidArgument for bad base64, a missing or
// non-numeric rank, a duplicate rank or byte string, or ranks with a gap.
absl::StatusOr<std::vector<std::string>> ReadTiktokenFile(const std::string& path);

// Errors: as ReadTiktokenFile, plus: invalid JSON, a key that is not made of byte stand-ins, a
// merge line that is not two known tokens joining into a known token, or merges whose order
// disagrees with the ids (tiktoken-style merging by id would then differ from the merge list).
absl::StatusOr<std::vector<std::string>> ReadEncoderJsonFiles(const std::string& encoder_json_path,
                                                              const std::string& merges_path);

// GPT-2's printable stand-ins for bytes, as in encoder.json: bytes 33-126, 161-172 and 174-255
// stand for themselves (as code points); the other 68 bytes map to U+0100 + n in ascending byte
// order (so ' ' is U+0120 and '\n' is U+010A). Returns the UTF-8 of the stand-ins.
std::string BytesToGpt2Unicode(std::string_view bytes);

// The inverse. Error (InvalidArgument) for text that is not valid UTF-8 made only of stand-ins.
absl::StatusOr<std::string> Gpt2UnicodeToBytes(std::string_view text);

}  // namespace gpt2
