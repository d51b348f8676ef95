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
#include "common/tokenizer/tokenizer.h"
#include "gpt2d/v1/worker.grpc.pb.h"
#include "worker/agent/outbox.h"
#include "worker/agent/rank_host.h"
#include "worker/agent/serving_host.h"
#include "worker/agent/worker_metrics.h"
#include "worker/command_flags.h"
#include "worker/serve/generate_service.h"
#include "worker/serve/serve_command.h"
#include "worker/serve/serve_metrics.h"

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
    GenerateServiceImpl generate([&serving]() { return serving.Now(); }, *tok, serve_metrics, opts_.coordinator.token);
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> serve_creds = MakeServerCredentials(opts_.serve_tls);
    if (!serve_creds.ok()) return Fail(std::string(serve_creds.status().message()));
    // /metrics and /healthz carry the worker's metrics and the replica's (one registry).
    absl::StatusOr<std::unique_ptr<ReplicaEndpoints>> endpoints =
        ReplicaEndpoints::Start(generate, opts_.serve_listen, *serve_creds, opts_.http_listen, metrics_.registry());
    if (!endpoints.ok()) return Fail(std::string(endpoints.status().message()));
    serve_address_ = absl::StrCat(opts_.advertise_host, ":", (*endpoints)->port());

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
    Log("stopping");  // the endpoints stop; `ranks` cancels the rank and waits for it; `serving` stops serving
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

WorkerCommand AddRunCommand(CLI::App& app, const WorkerGlobals& globals) {
  struct Flags {
    AgentOptions agent;
    std::string token_file;
    double collective_timeout_s = 60, cancel_grace_s = 120;
  };
  auto f = std::make_shared<Flags>();
  AgentOptions& a = f->agent;
  CLI::App* cmd = app.add_subcommand("run", "The worker daemon: register with gpt2d and run what it assigns");
  cmd->add_option("--coordinator", a.coordinator.address, "gpt2d's gRPC address (host:port)")
      ->envname("GPT2D_SERVER")
      ->required();
  cmd->add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--id", a.worker_id, "Worker id, stable across restarts (default: <hostname>/<device>)");
  cmd->add_option("--advertise-host", a.advertise_host,
                  "Address other workers reach this one at for the rendezvous (default: the hostname)");
  cmd->add_option("--http-listen", a.http_listen, "Address for /metrics and /healthz; empty: none")
      ->capture_default_str();
  cmd->add_option("--token", a.coordinator.token, "The cluster token")->envname("GPT2D_CLUSTER_TOKEN");
  cmd->add_option("--token-file", f->token_file, "A file holding the cluster token");
  cmd->add_flag("--tls", a.coordinator.tls, "Connect with TLS (implied by the --tls-* options)");
  cmd->add_option("--tls-ca", a.coordinator.tls_ca_file, "CA certificate to verify gpt2d with (PEM)");
  cmd->add_option("--tls-cert", a.coordinator.tls_cert_file, "Client certificate for mutual TLS (PEM)");
  cmd->add_option("--tls-key", a.coordinator.tls_key_file, "Client key for mutual TLS (PEM)");
  cmd->add_option("--tls-server-name", a.coordinator.tls_server_name, "Name to verify in gpt2d's certificate");
  cmd->add_option("--collective-timeout", f->collective_timeout_s, "Seconds before a silent peer rank is declared dead")
      ->capture_default_str();
  cmd->add_option("--cancel-grace", f->cancel_grace_s,
                  "Seconds a cancelled rank may take to stop; past them the worker exits with status 75 so that "
                  "its supervisor restarts it (longer than --collective-timeout)")
      ->capture_default_str();
  cmd->add_option("--serve-tls-cert", a.serve_tls.cert_file,
                  "Certificate (PEM) of this worker's GenerateService port; with --serve-tls-key: TLS only");
  cmd->add_option("--serve-tls-key", a.serve_tls.key_file, "Private key (PEM) for --serve-tls-cert");
  cmd->add_option("--serve-tls-client-ca", a.serve_tls.client_ca_file,
                  "Require client certificates signed by this CA on the serving port (mTLS)");
  cmd->add_option("--serve-listen", a.serve_listen,
                  "Address of this worker's GenerateService when gpt2d has it serve (port 0: any free one)")
      ->capture_default_str();
  AddEngineFlags(cmd, a.engine, "When serving: ");
  return {cmd, [f, &globals] {
            AgentOptions& a = f->agent;
            a.vocab = globals.vocab;
            if (!ReadTokenFlag(f->token_file, &a.coordinator.token)) return 2;
            a.collective_timeout = std::chrono::milliseconds(static_cast<int64_t>(f->collective_timeout_s * 1000));
            a.cancel_grace = std::chrono::milliseconds(static_cast<int64_t>(f->cancel_grace_s * 1000));
            return RunAgent(a, StopOnSignals());
          }};
}

}  // namespace gpt2
