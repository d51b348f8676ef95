// gpt2d's GenerateService: routes each request to the least-loaded ready replica of its deployment
// and relays the stream. The client's cancellation and deadline travel to the replica; the
// replica's status (RESOURCE_EXHAUSTED, INVALID_ARGUMENT naming the field, ...) travels back.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/client_channel.h"
#include "common/generate_metrics.h"
#include "gpt2d/v1/generate.grpc.pb.h"
#include "server/coordinator.h"
#include "server/rpc.h"

namespace gpt2 {

class GenerateRelay final : public v1::GenerateService::Service {
 public:
  // `replicas`: how the relay reaches replicas, its address left empty (each replica's own): the
  // token it presents (the cluster token; empty: none) and TLS (the CA to verify them with, a
  // client certificate for mTLS, the name in their certificates).
  GenerateRelay(Coordinator& coordinator, RpcGuard guard, GenerateMetrics& metrics, ClientChannelOptions replicas = {})
      : coordinator_(coordinator), guard_(std::move(guard)), metrics_(metrics), replicas_(std::move(replicas)) {}
  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const v1::GenerateRequest* req, v1::CompleteResponse* resp) override;

 private:
  // INTERNAL when the channel cannot be made (an unreadable TLS file: gpt2d checks them at start).
  absl::StatusOr<v1::GenerateService::Stub*> StubFor(const std::string& address);
  // `fn` under the RPC guard, counted and timed as a request of `method`.
  template <typename Fn>
  grpc::Status Measured(grpc::ServerContext* ctx, const char* method, Fn&& fn);
  // `call(stub, out)` against a replica of `deployment` picked for this request (counted against
  // it until the call ends); the client's deadline and cancellation go with `out`. A replica that
  // fails (UNAVAILABLE) before `relayed()` is true is replaced by another ready one, each tried
  // once; after, the call ends UNAVAILABLE saying the replica was lost mid-stream.
  template <typename Call>
  absl::Status OnReplica(grpc::ServerContext* ctx, const std::string& deployment, Call&& call,
                         const std::function<bool()>& relayed);
  Coordinator& coordinator_;
  RpcGuard guard_;
  GenerateMetrics& metrics_;
  const ClientChannelOptions replicas_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<v1::GenerateService::Stub>> stubs_;  // by replica address
};

}  // namespace gpt2
