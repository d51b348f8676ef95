// worker/train/hellaswag_data: HellaSwag JSONL of arbitrary bytes reads into examples of four
// endings and a label in 0..3, or is refused with the line.
#include <sstream>

#include "tests/fuzz/fuzz_util.h"
#include "worker/train/hellaswag_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  std::istringstream in{std::string(fuzz::AsText(data, size))};
  absl::StatusOr<std::vector<HellaSwagExample>> examples = ParseHellaSwag(in, "fuzz.jsonl");
  if (!examples.ok()) {
    FUZZ_CHECK(examples.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  for (const HellaSwagExample& e : *examples) FUZZ_CHECK(e.endings.size() == 4 && e.label >= 0 && e.label <= 3);
  return 0;
}
