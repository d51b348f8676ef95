// worker/data/shard: a token shard of arbitrary bytes, as an llm.c .bin and as a NumPy .npy,
// opens or is refused; one that opens holds exactly the tokens the file's size allows.
#include "tests/fuzz/fuzz_util.h"
#include "worker/data/npy.h"
#include "worker/data/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  const std::string_view bytes = fuzz::AsText(data, size);
  for (const char* name : {"fuzz_train_000000.bin", "fuzz_train_000000.npy"}) {
    absl::StatusOr<Shard> shard = Shard::Open(fuzz::WriteFile(name, bytes));
    if (!shard.ok()) continue;
    FUZZ_CHECK(shard->tokens().size() * 2 <= size);
    unsigned sum = 0;
    for (uint16_t t : shard->tokens()) sum += t;  // every token read (ASan)
    (void)sum;
  }
  absl::StatusOr<NpyHeader> npy = ParseNpyHeader(bytes);
  if (npy.ok()) FUZZ_CHECK(npy->data_offset <= size && npy->count >= 0);
  return 0;
}
