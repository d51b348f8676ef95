// What every gpt2d RPC handler does around its work, in one place: check the bearer token, time
// the call, count it by method and status code, and turn absl::Status into grpc::Status.
#pragma once

#include <grpcpp/server_context.h>

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/grpc_status.h"
#include "common/server_credentials.h"
#include "server/metrics.h"

namespace gpt2 {

class RpcGuard {
 public:
  RpcGuard(ServerMetrics& metrics, std::string token) : metrics_(metrics), token_(std::move(token)) {}

  // Runs `work` (returning absl::Status) if the call is authenticated.
  template <typename Work>
  grpc::Status operator()(grpc::ServerContext* ctx, const char* method, Work&& work) const {
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = CheckBearerToken(*ctx, token_);
    if (s.ok()) s = work();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics_.ObserveRpc(method, std::string(absl::StatusCodeToString(s.code())), seconds);
    return ToGrpcStatus(s);
  }

 private:
  ServerMetrics& metrics_;
  std::string token_;
};

}  // namespace gpt2
