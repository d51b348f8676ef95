// common/tokenizer/vocab_files: encoder.json + vocab.bpe (the input split at its first NUL byte)
// read or are refused; a vocabulary they give builds a tokenizer that round-trips text.
#include <cstring>

#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/vocab_files.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  const std::string_view in = fuzz::AsText(data, size);
  const size_t nul = in.find('\0');
  const std::string_view encoder = in.substr(0, nul), merges = nul == in.npos ? "" : in.substr(nul + 1);
  absl::StatusOr<std::vector<std::string>> ranks =
      ReadEncoderJsonFiles(fuzz::WriteFile("encoder.json", encoder), fuzz::WriteFile("vocab.bpe", merges));
  if (!ranks.ok()) return 0;
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromRanks(*std::move(ranks));
  if (!tok.ok()) return 0;
  const std::string text = "Hello, world! 123 \xF0\x9F\x98\x80";
  absl::StatusOr<std::string> back = tok->Decode(tok->EncodeOrdinary(text));
  FUZZ_CHECK(back.ok() && *back == text);
  return 0;
}
