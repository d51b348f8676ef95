// common/openai_protocol: a completions request body of arbitrary bytes becomes gRPC requests
// within the API's limits or a 400-class error naming what is wrong.
#include "common/openai_protocol.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2::openai;
  absl::StatusOr<CompletionsCall> call = ParseCompletions(std::string(gpt2::fuzz::AsText(data, size)));
  if (!call.ok()) {
    FUZZ_CHECK(call.status().code() == absl::StatusCode::kInvalidArgument && !call.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(call->n >= 1 && !call->prompts.empty());
  for (const gpt2d::v1::GenerateRequest& r : call->prompts) FUZZ_CHECK(r.ByteSizeLong() <= size * 8 + 1024);
  return 0;
}
