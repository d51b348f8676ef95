// The torch side of the joint test: a small random GPT-2 that continues prompts greedily.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace gpt2::joint {

class GreedyEngine {
 public:
  explicit GreedyEngine(uint64_t seed);
  ~GreedyEngine();
  std::vector<int32_t> Continue(const std::vector<int32_t>& prompt, int max_tokens);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpt2::joint
