// absl::Status <-> grpc::Status, in one place: errors travel as absl::Status inside our code and
// become gRPC status codes at the edge (the canonical codes are the same numbers).
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace gpt2 {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// The request metadata by which a face of the API that calls GenerateService names itself: "openai"
// (the OpenAI-compatible HTTP server, which calls it in-process) makes errors name OpenAI's fields
// and labels the request's metrics api="openai"; without it, "grpc".
inline constexpr std::string_view kApiMetadataKey = "x-gpt2d-api";

inline std::string ApiOf(const grpc::ServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(grpc::string_ref(kApiMetadataKey.data(), kApiMetadataKey.size()));
  return it != md.end() && it->second == "openai" ? "openai" : "grpc";
}

}  // namespace gpt2
