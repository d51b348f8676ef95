// A serving replica's face: gpt2d.v1.GenerateService over the engine. It validates a request
// (INVALID_ARGUMENT naming the field), tokenizes the prompt, streams UTF-8-safe text deltas with
// their token ids as the engine produces them, applies stop sequences, and ends with the finish
// reason, token counts, timings and the checkpoint that served it. A cancelled or disconnected
// client frees its slot within one decode step; a full queue is RESOURCE_EXHAUSTED at once.
//
// gRPC side: no libtorch here (engine.h is plain C++).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "common/http_server.h"
#include "common/tokenizer/tokenizer.h"
#include "gpt2d/v1/generate.grpc.pb.h"
#include "worker/serve/engine.h"
#include "worker/serve/replica.h"
#include "worker/serve/serve_metrics.h"

namespace gpt2 {

class GenerateServiceImpl final : public gpt2d::v1::GenerateService::Service {
 public:
  // What requests run on: the replica's current engine when a request arrives, held to its end;
  // an error status (e.g. UNAVAILABLE: nothing is served yet) refuses the request.
  using Source = std::function<absl::StatusOr<Replica::Current>()>;
  // `token` non-empty: every call must carry "authorization: Bearer <token>" (UNAUTHENTICATED
  // otherwise; in a cluster the cluster token, which gpt2d's relay presents).
  GenerateServiceImpl(Source source, Tokenizer tokenizer, ServeMetrics& metrics, std::string token = "");
  ~GenerateServiceImpl() override;

  grpc::Status Generate(grpc::ServerContext* ctx, const gpt2d::v1::GenerateRequest* req,
                        grpc::ServerWriter<gpt2d::v1::GenerateResponse>* writer) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const gpt2d::v1::GenerateRequest* req,
                        gpt2d::v1::CompleteResponse* resp) override;

 private:
  // Runs one request, handing each piece to `emit` (false from emit = the client is gone).
  grpc::Status Serve(grpc::ServerContext* ctx, const gpt2d::v1::GenerateRequest& req,
                     const std::function<bool(const gpt2d::v1::GenerateResponse&)>& emit);

  Source source_;
  Tokenizer tokenizer_;
  const std::string token_;
  ServeMetrics& metrics_;
  std::atomic<bool> stop_{false};
  std::thread poller_;  // engine gauges for /metrics
};

// A replica's network face as `serve` and `run` both start it: `service` on a gRPC server at
// `listen` (port 0: any free one) with the gRPC health service and reflection, and /metrics +
// /healthz (200 while the process runs) of `registry` at `http_listen` unless that is empty. Destroying it stops the
// gRPC server, giving open calls 2 s.
class ReplicaEndpoints {
 public:
  // Errors name the address that could not be bound.
  static absl::StatusOr<std::unique_ptr<ReplicaEndpoints>> Start(GenerateServiceImpl& service,
                                                                 const std::string& listen,
                                                                 std::shared_ptr<grpc::ServerCredentials> credentials,
                                                                 const std::string& http_listen,
                                                                 std::shared_ptr<prometheus::Registry> registry);
  ~ReplicaEndpoints();

  int port() const { return port_; }  // GenerateService's
  grpc::Server& server() { return *server_; }

 private:
  ReplicaEndpoints() = default;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace gpt2
