#include "worker/agent/agent.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "common/server_credentials.h"
#include "gpt2d/v1/worker.grpc.pb.h"
#include "worker/agent/outbox.h"
#include "worker/agent/rank_host.h"
#include "worker/agent/serving_host.h"
#include "worker/agent/worker_metrics.h"
#include "worker/serve/generate_service.h"
#include "worker/serve/serve_metrics.h"
#include "worker/tokenizer/tokenizer.h"

namespace gpt2 {
namespace {

namespace v1 = ::gpt2d::v1;
using Clock = std::chrono::steady_clock;

void Log(const std::string& line) { std::cerr << "gpt2-worker: " << line << std::endl; }

class Agent {
 public:
  Agent(const AgentOptions& opts, const std::atomic<bool>& stop) : opts_(opts), stop_(stop) {}

  int Run() {
    absl::StatusOr<int64_t> memory = ProbeDevice(opts_.device);
    if (!memory.ok()) return Fail(std::string(memory.status().message()));
    memory_bytes_ = *memory;
    std::unique_ptr<HttpServer> http;
    if (!opts_.http_listen.empty()) {
      absl::StatusOr<std::unique_ptr<HttpServer>> h =
          HttpServer::Start(opts_.http_listen, metrics_.registry(), [] { return std::string(); });
      if (!h.ok()) return Fail(std::string(h.status().message()));
      http = *std::move(h);
    }
    // The serving face exists from the start; it refuses requests until gpt2d assigns a deployment.
    absl::StatusOr<Tokenizer> tok = LoadTokenizer(opts_.vocab);
    if (!tok.ok()) return Fail(std::string(tok.status().message()));
    ServeMetrics serve_metrics(metrics_.registry());
    ServingHost serving(opts_.worker_id, opts_.device, opts_.engine, serve_metrics);
    serving_ = &serving;
    RankHost ranks({opts_.worker_id, opts_.device, opts_.vocab, opts_.collective_timeout, opts_.cancel_grace}, outbox_,
                   metrics_);
    ranks_ = &ranks;
    // Its port takes the cluster token too: gpt2d's relay presents it, nobody else has it.
    GenerateServiceImpl generate([&serving]() { return serving.Now(); }, *tok, serve_metrics,
                                 opts_.coordinator.token);
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> serve_creds = MakeServerCredentials(opts_.serve_tls);
    if (!serve_creds.ok()) return Fail(std::string(serve_creds.status().message()));
    grpc::ServerBuilder builder;
    int serve_port = 0;
    builder.AddListeningPort(opts_.serve_listen, *serve_creds, &serve_port);
    builder.RegisterService(&generate);
    std::unique_ptr<grpc::Server> serve_server = builder.BuildAndStart();
    if (!serve_server || serve_port == 0) return Fail("cannot serve GenerateService on " + opts_.serve_listen);
    serve_address_ = absl::StrCat(opts_.advertise_host, ":", serve_port);

    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeClientChannel(opts_.coordinator);
    if (!channel.ok()) return Fail(std::string(channel.status().message()));
    auto stub = v1::WorkerService::NewStub(*channel);
    Log(absl::StrCat("worker ", opts_.worker_id, " (", opts_.device, ") connecting to ", opts_.coordinator.address));

    auto backoff = std::chrono::milliseconds(250);
    while (!stop_) {
      const auto started = Clock::now();
      grpc::Status s = Session(*stub);
      metrics_.SetConnected(false);
      if (stop_) break;
      const auto code = s.error_code();
      if (code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED)
        return Fail(absl::StrCat("gpt2d refused the cluster token: ", s.error_message(),
                                 " (pass --token-file or set GPT2D_CLUSTER_TOKEN)"));
      if (code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::UNIMPLEMENTED)
        return Fail(absl::StrCat("gpt2d refused the registration: ", s.error_message()));
      if (Clock::now() - started > std::chrono::seconds(10)) backoff = std::chrono::milliseconds(250);
      Log(absl::StrCat("stream to gpt2d ended (", s.error_message().empty() ? "closed" : s.error_message(),
                       "); reconnecting in ", backoff.count(), " ms"));
      SleepUnlessStopped(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
    Log("stopping");  // `ranks` cancels the rank and waits for it; `serving` stops serving
    serve_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    return 0;
  }

 private:
  int Fail(const std::string& message) {
    std::cerr << "gpt2-worker: error: " << message << std::endl;
    return 1;
  }

  void SleepUnlessStopped(std::chrono::milliseconds d) {
    const auto until = Clock::now() + d;
    while (!stop_ && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  // One stream's life: register, then write (heartbeats, events) on a second thread while this one
  // reads assignments, until the stream breaks or the process stops.
  grpc::Status Session(v1::WorkerService::Stub& stub) {
    grpc::ClientContext ctx;
    PrepareContext(ctx, opts_.coordinator.token);
    std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream = stub.Connect(&ctx);
    v1::WorkerMessage hello;
    v1::Register& reg = *hello.mutable_register_();
    reg.set_worker_id(opts_.worker_id);
    reg.set_host(opts_.advertise_host);
    reg.set_device(opts_.device);
    reg.set_memory_bytes(memory_bytes_);
    reg.set_serve_address(serve_address_);
    reg.set_serving_deployment(serving_->deployment());
    ranks_->FillRegister(reg);
    if (!stream->Write(hello)) return stream->Finish();
    outbox_.Resend();

    std::atomic<bool> done{false};
    std::atomic<int64_t> heartbeat_ms{1000};
    std::thread writer([&] {
      auto next_heartbeat = Clock::now();
      while (!done && !stop_) {
        if (Clock::now() >= next_heartbeat) {
          v1::WorkerMessage hb;
          serving_->FillHeartbeat(*hb.mutable_heartbeat());
          ranks_->FillHeartbeat(*hb.mutable_heartbeat());
          if (!stream->Write(hb)) break;
          next_heartbeat = Clock::now() + std::chrono::milliseconds(heartbeat_ms.load());
        }
        std::optional<v1::WorkerMessage> m =
            outbox_.Pop(std::min(next_heartbeat, Clock::now() + std::chrono::milliseconds(200)));
        // A failed write means the call is over, and the reader sees that too. The message stays
        // unacknowledged: it is sent again on the next stream.
        if (m && !stream->Write(*m)) break;
      }
      if (stop_) ctx.TryCancel();  // unblocks the reader: the process is leaving
    });

    v1::CoordinatorMessage in;
    while (stream->Read(&in)) {
      if (in.has_registered()) {
        heartbeat_ms = std::max(100, in.registered().heartbeat_interval_ms());
        metrics_.SetConnected(true);
        Log(absl::StrCat("registered with gpt2d as ", in.registered().worker_id()));
      } else if (in.has_train()) {
        ranks_->Assign(in.train());
      } else if (in.has_cancel()) {
        ranks_->Cancel(in.cancel());
      } else if (in.has_serve()) {
        serving_->Serve(in.serve());
      } else if (in.has_stop_serving()) {
        serving_->Stop(in.stop_serving().deployment());
      } else if (in.has_ack()) {
        for (const v1::WorkerMessage& m : outbox_.Ack(in.ack().sequence()))
          if (m.rank_event().has_exit()) ranks_->Delivered(m.rank_event());
      }
      if (stop_) break;
    }
    done = true;
    outbox_.Wake();
    if (stop_) ctx.TryCancel();  // the call is still open: end it (gpt2d sees the worker leave)
    writer.join();
    return stream->Finish();  // gpt2d's status when it ended the call (e.g. UNAUTHENTICATED)
  }

  const AgentOptions& opts_;
  const std::atomic<bool>& stop_;
  int64_t memory_bytes_ = 0;
  WorkerMetrics metrics_;
  Outbox outbox_;
  std::string serve_address_;
  RankHost* ranks_ = nullptr;       // Run's, for its lifetime
  ServingHost* serving_ = nullptr;  // Run's, for its lifetime
};

}  // namespace

int RunAgent(const AgentOptions& options, const std::atomic<bool>& stop) {
  AgentOptions opts = options;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  if (opts.advertise_host.empty()) opts.advertise_host = host;
  if (opts.worker_id.empty()) opts.worker_id = absl::StrCat(host, "/", opts.device);
  return Agent(opts, stop).Run();
}

}  // namespace gpt2
