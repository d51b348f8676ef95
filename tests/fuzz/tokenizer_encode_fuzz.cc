// worker/tokenizer: GPT-2's tokenizer encodes arbitrary bytes into ids of its vocabulary that
// decode to the bytes (invalid UTF-8 replaced as Python's errors="replace"), with and without
// special tokens, and a StreamDecoder's deltas concatenate to the same text.
#include "tests/fuzz/fuzz_util.h"
#include "worker/tokenizer/stream_decoder.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  static const Tokenizer tok = *LoadTokenizer("");
  const std::string_view bytes = fuzz::AsText(data, size);
  const std::string text = ReplaceInvalidUtf8(bytes);
  for (bool special : {false, true}) {
    const std::vector<TokenId> ids = tok.encode(bytes, special);
    for (TokenId id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size() && (special || id != tok.eot_token()));
    absl::StatusOr<std::string> back = tok.decode(ids);
    FUZZ_CHECK(back.ok() && *back == text);
    StreamDecoder stream(tok);
    std::string streamed;
    for (TokenId id : ids) {
      absl::StatusOr<std::string> delta = stream.push(id);
      FUZZ_CHECK(delta.ok() && ValidUtf8PrefixLength(*delta) == delta->size());
      streamed += *delta;
    }
    streamed += stream.finish();
    FUZZ_CHECK(streamed == text);
  }
  return 0;
}
