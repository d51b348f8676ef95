// The gRPC side of the joint test: our GenerateService.Complete on loopback, and a client for it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2::joint {

using CompleteFn = std::function<std::vector<int32_t>(const std::vector<int32_t>& prompt, int max_tokens)>;

class LoopbackServer {
 public:
  static std::unique_ptr<LoopbackServer> Start(CompleteFn complete);
  virtual ~LoopbackServer() = default;
  virtual int port() const = 0;
};

// Calls Complete with prompt_tokens; returns the completion's token ids and checks the usage counts.
absl::StatusOr<std::vector<int32_t>> CallComplete(int port, const std::vector<int32_t>& prompt, int max_tokens);

}  // namespace gpt2::joint
