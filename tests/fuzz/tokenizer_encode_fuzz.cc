// common/tokenizer: GPT-2's tokenizer encodes arbitrary bytes into ids of its vocabulary that
// decode to the bytes (invalid UTF-8 replaced as Python's errors="replace"), with and without
// special tokens, and a StreamDecoder's deltas concatenate to the same text.
#include "common/tokenizer/stream_decoder.h"
#include "common/tokenizer/tokenizer.h"
#include "common/utf8.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  static const Tokenizer tok = *LoadTokenizer("");
  const std::string_view bytes = fuzz::AsText(data, size);
  const std::string text = ReplaceInvalidUtf8(bytes);
  for (bool special : {false, true}) {
    const std::vector<TokenId> ids = tok.Encode(bytes, special);
    for (TokenId id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size() && (special || id != tok.eot_token()));
    absl::StatusOr<std::string> back = tok.Decode(ids);
    FUZZ_CHECK(back.ok() && *back == text);
    StreamDecoder stream(tok);
    std::string streamed;
    for (TokenId id : ids) {
      absl::StatusOr<std::string> delta = stream.Push(id);
      FUZZ_CHECK(delta.ok() && ValidUtf8PrefixLength(*delta) == delta->size());
      streamed += *delta;
    }
    streamed += stream.Finish();
    FUZZ_CHECK(streamed == text);
  }
  return 0;
}
