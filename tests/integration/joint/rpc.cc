#include "tests/integration/joint/rpc.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "gpt2d/v1/generate.grpc.pb.h"

namespace gpt2::joint {
namespace {

class Service final : public gpt2d::v1::GenerateService::Service {
 public:
  explicit Service(CompleteFn fn) : fn_(std::move(fn)) {}
  grpc::Status Complete(grpc::ServerContext*, const gpt2d::v1::GenerateRequest* req,
                        gpt2d::v1::CompleteResponse* resp) override {
    std::vector<int32_t> prompt(req->prompt_tokens().begin(), req->prompt_tokens().end());
    if (prompt.empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "prompt_tokens: empty"};
    std::vector<int32_t> out = fn_(prompt, req->sampling().max_tokens());
    gpt2d::v1::Choice& choice = *resp->add_choices();
    for (int32_t id : out) choice.add_token_ids(id);
    choice.set_finish_reason(gpt2d::v1::FINISH_REASON_LENGTH);
    resp->mutable_usage()->set_prompt_tokens(static_cast<int32_t>(prompt.size()));
    resp->mutable_usage()->set_completion_tokens(static_cast<int32_t>(out.size()));
    return grpc::Status::OK;
  }

 private:
  CompleteFn fn_;
};

class Server final : public LoopbackServer {
 public:
  explicit Server(CompleteFn fn) : service_(std::move(fn)) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
  }
  ~Server() override { server_->Shutdown(); }
  int port() const override { return port_; }

 private:
  Service service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace

std::unique_ptr<LoopbackServer> LoopbackServer::Start(CompleteFn complete) {
  return std::make_unique<Server>(std::move(complete));
}

absl::StatusOr<std::vector<int32_t>> CallComplete(int port, const std::vector<int32_t>& prompt, int max_tokens) {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto stub = gpt2d::v1::GenerateService::NewStub(channel);
  gpt2d::v1::GenerateRequest req;
  for (int32_t id : prompt) req.add_prompt_tokens(id);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_temperature(0);
  // Round-trip the request through the wire format once more, as a peer would see it.
  gpt2d::v1::GenerateRequest parsed;
  if (!parsed.ParseFromString(req.SerializeAsString()) || parsed.prompt_tokens_size() != req.prompt_tokens_size()) {
    return absl::InternalError("request did not survive serialisation");
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  gpt2d::v1::CompleteResponse resp;
  grpc::Status s = stub->Complete(&ctx, parsed, &resp);
  if (!s.ok()) return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  if (resp.choices_size() != 1 || resp.usage().prompt_tokens() != static_cast<int32_t>(prompt.size()) ||
      resp.usage().completion_tokens() != resp.choices(0).token_ids_size()) {
    return absl::InternalError("usage counts do not match");
  }
  return std::vector<int32_t>(resp.choices(0).token_ids().begin(), resp.choices(0).token_ids().end());
}

}  // namespace gpt2::joint
