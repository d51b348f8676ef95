// common/tokenizer/vocab_files: a .tiktoken file of arbitrary bytes reads or is refused; a
// vocabulary it reads builds a tokenizer (or is refused by FromRanks) that round-trips text.
#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/vocab_files.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  absl::StatusOr<std::vector<std::string>> ranks =
      ReadTiktokenFile(fuzz::WriteFile("gpt2.tiktoken", fuzz::AsText(data, size)));
  if (!ranks.ok()) return 0;
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromRanks(*std::move(ranks));
  if (!tok.ok()) return 0;
  const std::string text = "Hello, world! 123 \xF0\x9F\x98\x80 <|endoftext|>";
  absl::StatusOr<std::string> back = tok->Decode(tok->Encode(text, /*allow_special=*/true));
  FUZZ_CHECK(back.ok() && *back == text);
  return 0;
}
