// loader_dump: prints the batches our DataLoader gives, for tests/reference/test_data.py to compare
// with build-nanogpt's DataLoaderLite.
//
//   loader_dump --B 2 --T 8 --rank 0 --world 1 --steps 10 SHARD...
//
// One JSON line per step: {"step": i, "shard": s, "offset": o, "x": [...], "y": [...]}, where
// (shard, offset) is the loader's position before the batch and x, y hold B*T ids row-major.
// Exit status 2 with a message on stderr for bad arguments or a loader error.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/data/loader.h"

namespace {

int Usage(std::string_view problem) {
  std::cerr << "loader_dump: " << problem << "\nusage: loader_dump --B N --T N --rank N --world N --steps N SHARD...\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 0, T = 0, rank = 0, world = 1, steps = 0;
  std::vector<std::string> shards;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    int64_t* target = arg == "--B"       ? &B
                      : arg == "--T"     ? &T
                      : arg == "--rank"  ? &rank
                      : arg == "--world" ? &world
                      : arg == "--steps" ? &steps
                                         : nullptr;
    if (target == nullptr) {
      if (arg.starts_with("--")) return Usage(absl::StrCat("unknown option ", std::string(arg)));
      shards.emplace_back(arg);
      continue;
    }
    if (i + 1 == argc || !absl::SimpleAtoi(argv[i + 1], target)) {
      return Usage(absl::StrCat(std::string(arg), " needs an integer"));
    }
    ++i;
  }
  absl::StatusOr<gpt2::DataLoader> loader =
      gpt2::DataLoader::Create(shards, B, T, static_cast<int>(rank), static_cast<int>(world));
  if (!loader.ok()) return Usage(std::string(loader.status().message()));

  std::vector<int64_t> x(B * T), y(B * T);
  for (int64_t step = 0; step < steps; ++step) {
    const gpt2::LoaderPosition position = loader->position();
    if (absl::Status status = loader->NextBatch(x, y); !status.ok()) {
      std::cerr << "loader_dump: " << status.message() << "\n";
      return 2;
    }
    std::cout << "{\"step\": " << step << ", \"shard\": " << position.shard << ", \"offset\": " << position.offset
              << ", \"x\": [" << absl::StrJoin(x, ", ") << "], \"y\": [" << absl::StrJoin(y, ", ") << "]}\n";
  }
  return std::cout.flush() ? 0 : 1;
}
