#include "server/generate_relay.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/client_channel.h"
#include "common/grpc_status.h"

namespace gpt2 {
namespace {

// Cancels `out` as soon as `in` is cancelled (the client left or its deadline passed).
class CancelLink {
 public:
  CancelLink(grpc::ServerContext* in, grpc::ClientContext* out)
      : thread_([this, in, out] {
          while (!done_) {
            if (in->IsCancelled()) {
              out->TryCancel();
              return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }) {}
  ~CancelLink() {
    done_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace

absl::StatusOr<v1::GenerateService::Stub*> GenerateRelay::StubFor(const std::string& address) {
  std::lock_guard lock(mu_);
  auto& stub = stubs_[address];
  if (!stub) {
    ClientChannelOptions o = replicas_;
    o.address = address;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeClientChannel(o);
    if (!channel.ok())
      return absl::InternalError(absl::StrCat("channel to replica ", address, ": ", channel.status().message()));
    stub = v1::GenerateService::NewStub(*channel);
  }
  return stub.get();
}

template <typename Fn>
grpc::Status GenerateRelay::Measured(grpc::ServerContext* ctx, const char* method, Fn&& fn) {
  const auto arrived = std::chrono::steady_clock::now();
  grpc::Status result = guard_(ctx, method, std::forward<Fn>(fn));
  metrics_.Duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - arrived).count());
  metrics_.Request(ApiOf(*ctx), absl::StatusCodeToString(static_cast<absl::StatusCode>(result.error_code())));
  return result;
}

template <typename Call>
absl::Status GenerateRelay::OnReplica(grpc::ServerContext* ctx, const std::string& deployment, Call&& call,
                                      const std::function<bool()>& relayed) {
  std::set<std::string> tried;  // replicas this request failed on
  absl::Status lost;
  for (;;) {
    absl::StatusOr<ReplicaLease> lease = coordinator_.PickReplica(deployment, tried);
    if (!lease.ok()) return tried.empty() ? lease.status() : lost;  // no other replica to retry on
    const ReplicaRoute route = lease->route();
    if (!tried.empty()) metrics_.Retry();
    grpc::ClientContext out;
    if (ctx->deadline() != std::chrono::system_clock::time_point::max()) out.set_deadline(ctx->deadline());
    out.AddMetadata(std::string(kApiMetadataKey), ApiOf(*ctx));  // the replica names the fields in its terms
    PrepareContext(out, replicas_.token);  // the cluster's token, not the caller's
    absl::StatusOr<v1::GenerateService::Stub*> stub = StubFor(route.address);
    if (!stub.ok()) return stub.status();
    grpc::Status status;
    {
      CancelLink link(ctx, &out);
      status = call(**stub, out);
    }
    const bool failed = status.error_code() == grpc::StatusCode::UNAVAILABLE && !ctx->IsCancelled();
    lease->Release(failed);
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED)  // not the caller's fault: ours
      return absl::InternalError(absl::StrCat("replica ", route.worker_id,
                                              " refused gpt2d's cluster token: ", status.error_message()));
    if (!failed) return FromGrpcStatus(status);
    if (relayed()) {  // the client has part of the answer: a retry would repeat or change it
      return absl::UnavailableError(absl::StrCat("replica ", route.worker_id,
                                                 " was lost mid-stream: ", status.error_message()));
    }
    // Nothing reached the client yet: the same request on another replica is invisible to it.
    lost = absl::UnavailableError(absl::StrCat("replica ", route.worker_id, " failed: ", status.error_message()));
    tried.insert(route.worker_id);
  }
}

grpc::Status GenerateRelay::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                     grpc::ServerWriter<v1::GenerateResponse>* writer) {
  return Measured(ctx, "Generate", [&]() -> absl::Status {
    const auto arrived = std::chrono::steady_clock::now();
    auto previous = arrived;
    bool first = true, relayed = false;
    return OnReplica(
        ctx, req->deployment(),
        [&](v1::GenerateService::Stub& stub, grpc::ClientContext& out) {
      std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub.Generate(&out, *req);
      v1::GenerateResponse m;
      while (reader->Read(&m)) {
        const auto now = std::chrono::steady_clock::now();
        if (m.token_ids_size() > 0) {
          if (first) {
            metrics_.FirstToken(std::chrono::duration<double>(now - arrived).count());
            first = false;
          } else {
            const double gap = std::chrono::duration<double>(now - previous).count() / m.token_ids_size();
            for (int i = 0; i < m.token_ids_size(); ++i) metrics_.InterToken(gap);
          }
          previous = now;
        }
        if (m.done()) metrics_.Tokens(m.usage().prompt_tokens(), m.usage().completion_tokens());
        relayed = true;
        if (!writer->Write(m)) {
          out.TryCancel();
          break;
        }
      }
      return reader->Finish();
        },
        [&] { return relayed; });
  });
}

grpc::Status GenerateRelay::Complete(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                     v1::CompleteResponse* resp) {
  return Measured(ctx, "Complete", [&]() -> absl::Status {
    return OnReplica(ctx, req->deployment(), [&](v1::GenerateService::Stub& stub, grpc::ClientContext& out) {
      grpc::Status status = stub.Complete(&out, *req, resp);
      if (status.ok()) metrics_.Tokens(resp->usage().prompt_tokens(), resp->usage().completion_tokens());
      if (!status.ok()) resp->Clear();  // a retry starts from nothing
      return status;
    }, [] { return false; });  // a whole completion reaches the client only at its end
  });
}

}  // namespace gpt2
