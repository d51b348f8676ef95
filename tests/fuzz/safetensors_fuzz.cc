// worker/model/safetensors: a file of arbitrary bytes opens or is refused, and every tensor of a
// file that opens lies inside it with dtype x shape bytes.
#include "tests/fuzz/fuzz_util.h"
#include "worker/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  const std::string path = fuzz::WriteFile("model.safetensors", fuzz::AsText(data, size));
  absl::StatusOr<SafetensorsReader> r = SafetensorsReader::Open(path);
  if (!r.ok()) return 0;
  for (const TensorInfo& t : r->tensors()) {
    FUZZ_CHECK(r->Find(t.name) != nullptr);
    const std::span<const std::byte> bytes = r->Data(t);
    FUZZ_CHECK(bytes.size() == static_cast<size_t>(t.numel()) * DTypeSize(t.dtype));
    FUZZ_CHECK(t.end - t.begin == bytes.size() && t.end <= size);
    unsigned sum = 0;  // read every byte (ASan sees a read outside the mapping)
    for (std::byte b : bytes) sum += static_cast<unsigned>(b);
    (void)sum;
  }
  return 0;
}
