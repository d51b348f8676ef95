// worker/model/config: Hugging Face config.json text gives a valid config or an error, and a
// config it accepts writes back to JSON that reads as the same config.
#include "common/model_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  absl::StatusOr<GPTConfig> c = ConfigFromHfJson(fuzz::AsText(data, size));
  if (!c.ok()) return 0;
  FUZZ_CHECK(Validate(*c).ok());
  absl::StatusOr<GPTConfig> again = ConfigFromHfJson(ConfigToHfJson(*c));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(ConfigToHfJson(*again) == ConfigToHfJson(*c));
  return 0;
}
