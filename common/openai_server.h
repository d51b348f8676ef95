// The OpenAI-compatible HTTP API (docs/serving.md): POST /v1/completions (JSON, or server-sent
// events with "stream": true), GET /v1/models, GET /health, and vLLM's tokenizer endpoints
// (POST /tokenize, POST /detokenize, GET /tokenizer_info) that evaluation harnesses use.
//
// It is a face of gpt2d.v1.GenerateService, not a second serving path: each completion is one
// Generate call per prompt on `channel` (the process's own gRPC server, in-process), carrying the
// caller's bearer token and kApiMetadataKey = "openai", so routing, validation (in OpenAI's field
// names), auth and metrics are the gRPC API's. A client that disconnects (noticed by reading its
// socket, streamed or not) cancels its calls.
//
// HTTP is Boost.Beast (Debian's libboost1.74-dev), one thread per connection: cpp-httplib 0.11
// (our /metrics server) gives a handler no way to see a client leave until a write fails, and none
// at all while a non-streamed completion is computed. No libtorch.
#pragma once

#include <grpcpp/channel.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"

namespace gpt2::openai {

// One entry of GET /v1/models: a deployment and the checkpoint it serves.
struct ModelInfo {
  std::string id;
  int64_t created = 0;  // Unix seconds
  std::string job_id, checkpoint;
  int64_t step = 0;
};

struct ServerOptions {
  std::string listen;                      // HOST:PORT (":8000" = every interface; port 0 = any free one)
  std::string token;                       // the bearer token every endpoint but /health requires; empty = none
  std::shared_ptr<grpc::Channel> channel;  // to GenerateService
  // The models served, for GET /v1/models and to refuse an unknown `model` (404); called with
  // the caller's Authorization header. The first is the default (a request without `model`).
  std::function<absl::StatusOr<std::vector<ModelInfo>>(const std::string& authorization)> models;
  std::shared_ptr<const Tokenizer> tokenizer;
  int64_t max_context = 1024;  // for /tokenizer_info
  // A request refused before it reached GenerateService (bad JSON, unknown model, no token), by
  // gRPC status code name: for the metrics GenerateService keeps of the others.
  std::function<void(const std::string& code)> refused;
  int max_connections = 1024;
};

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options);
  ~Server();  // closes every connection (their calls are cancelled) and stops
  int port() const;

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpt2::openai
