// gpt2d: the coordinator daemon. gRPC (jobs, cluster, the workers' stream, health, reflection) on
// --listen; /metrics and /healthz on --http-listen; state in the SQLite database --db.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/client_channel.h"
#include "common/grpc_status.h"
#include "common/http_server.h"
#include "common/openai_server.h"
#include "common/server_credentials.h"
#include "server/coordinator.h"
#include "server/generate_relay.h"
#include "server/metrics.h"
#include "server/services.h"
#include "server/store.h"

namespace {

int Fail(const std::string& message) {
  std::cerr << "gpt2d: error: " << message << std::endl;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gpt2d: the gpt2d coordinator. Accepts training jobs, schedules them on gpt2-worker daemons, "
      "and keeps their history."};
  std::string listen = "0.0.0.0:50051", http_listen = "0.0.0.0:9400", db_path = "gpt2d.db";
  std::string auth_token_file, cluster_token_file, rendezvous_ports = "29500-29999";
  std::string openai_listen = ":8000", vocab;
  gpt2::ServerTlsOptions tls;
  gpt2::ClientChannelOptions replicas;
  gpt2::CoordinatorOptions opts;
  double heartbeat_interval = 1, heartbeat_timeout = 10, recovery_grace = 20, rank_progress_timeout = 600;
  app.add_option("--listen", listen, "gRPC address (host:port)")->capture_default_str();
  app.add_option("--http-listen", http_listen, "HTTP address for /metrics and /healthz")->capture_default_str();
  app.add_option("--openai-listen", openai_listen,
                 "HTTP address of the OpenAI-compatible API (/v1/completions, /v1/models); empty turns it off")
      ->capture_default_str();
  app.add_option("--vocab", vocab,
                 "GPT-2 vocabulary for the OpenAI API's token texts and /tokenize (default: $GPT2_VOCAB, then "
                 "assets/gpt2.tiktoken)");
  app.add_option("--db", db_path, "SQLite database (created when missing)")->capture_default_str();
  app.add_option("--checkpoint-root", opts.checkpoint_root,
                 "Where jobs without checkpoint.dir write their checkpoints (<root>/<job id>); must be shared "
                 "with the workers")
      ->capture_default_str();
  app.add_option("--auth-token-file", auth_token_file,
                 "Require \"authorization: Bearer <token>\" with this file's token on every RPC but health");
  app.add_option("--cluster-token-file", cluster_token_file,
                 "The token workers must present (default: the --auth-token-file token)");
  app.add_option("--tls-cert", tls.cert_file, "Server certificate (PEM); with --tls-key enables TLS");
  app.add_option("--tls-key", tls.key_file, "Server private key (PEM)");
  app.add_option("--tls-client-ca", tls.client_ca_file, "Require client certificates signed by this CA (mTLS)");
  app.add_option("--replica-tls-ca", replicas.tls_ca_file,
                 "Reach serving workers over TLS, verifying them with this CA (PEM; workers' --serve-tls-cert)");
  app.add_option("--replica-tls-cert", replicas.tls_cert_file, "Client certificate gpt2d presents to workers (mTLS)");
  app.add_option("--replica-tls-key", replicas.tls_key_file, "Key of --replica-tls-cert");
  app.add_option("--replica-tls-server-name", replicas.tls_server_name,
                 "Name to verify in workers' certificates instead of their advertised host");
  app.add_option("--heartbeat-interval", heartbeat_interval, "Seconds between worker heartbeats")
      ->capture_default_str();
  app.add_option("--heartbeat-timeout", heartbeat_timeout, "Seconds of silence after which a worker is lost")
      ->capture_default_str();
  app.add_option("--recovery-grace", recovery_grace,
                 "After a restart, seconds a running job waits for its workers to reconnect")
      ->capture_default_str();
  app.add_option("--rank-progress-timeout", rank_progress_timeout,
                 "Seconds a rank may make no progress (no micro-step, eval or checkpoint) while its worker "
                 "heartbeats before its attempt is restarted as hung; 0: never")
      ->capture_default_str();
  app.add_option("--max-restarts", opts.max_restarts, "Group restarts per job before it fails")->capture_default_str();
  app.add_option("--rendezvous-ports", rendezvous_ports, "Port range for c10d rendezvous (rank 0's TCPStore)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; a usage error: 2, as gpt2ctl
  }

  if (!(heartbeat_interval > 0) || !(heartbeat_timeout > heartbeat_interval))
    return Fail("--heartbeat-timeout must be greater than --heartbeat-interval > 0");
  if (!(recovery_grace >= 0)) return Fail("--recovery-grace must be >= 0");
  if (!(rank_progress_timeout >= 0)) return Fail("--rank-progress-timeout must be >= 0");
  opts.rank_progress_timeout = std::chrono::milliseconds(static_cast<int64_t>(rank_progress_timeout * 1000));
  if (opts.max_restarts < 0) return Fail("--max-restarts must be >= 0");
  opts.heartbeat_interval = std::chrono::milliseconds(static_cast<int64_t>(heartbeat_interval * 1000));
  opts.heartbeat_timeout = std::chrono::milliseconds(static_cast<int64_t>(heartbeat_timeout * 1000));
  opts.recovery_grace = std::chrono::milliseconds(static_cast<int64_t>(recovery_grace * 1000));
  if (sscanf(rendezvous_ports.c_str(), "%d-%d", &opts.rendezvous_port_min, &opts.rendezvous_port_max) != 2 ||
      opts.rendezvous_port_min < 1 || opts.rendezvous_port_max > 65535 ||
      opts.rendezvous_port_min > opts.rendezvous_port_max)
    return Fail("--rendezvous-ports must be a range like 29500-29999");
  std::error_code ec;
  opts.checkpoint_root = std::filesystem::absolute(opts.checkpoint_root, ec).string();

  std::string auth_token, cluster_token;
  if (!auth_token_file.empty()) {
    absl::StatusOr<std::string> t = gpt2::ReadTokenFile(auth_token_file);
    if (!t.ok()) return Fail(std::string(t.status().message()));
    auth_token = *t;
  }
  cluster_token = auth_token;
  if (!cluster_token_file.empty()) {
    absl::StatusOr<std::string> t = gpt2::ReadTokenFile(cluster_token_file);
    if (!t.ok()) return Fail(std::string(t.status().message()));
    cluster_token = *t;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = gpt2::MakeServerCredentials(tls);
  if (!creds.ok()) return Fail(std::string(creds.status().message()));
  replicas.token = cluster_token;
  replicas.address = "localhost:1";  // only to check the TLS files now rather than at the first request
  if (absl::StatusOr<std::shared_ptr<grpc::Channel>> c = gpt2::MakeClientChannel(replicas); !c.ok())
    return Fail(absl::StrCat("--replica-tls-*: ", c.status().message()));
  replicas.address.clear();

  // SIGINT/SIGTERM end the process through the wait below, never mid-write.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<gpt2::JobStore>> store = gpt2::JobStore::Open(db_path);
  if (!store.ok()) return Fail(std::string(store.status().message()));
  gpt2::ServerMetrics metrics;
  gpt2::Coordinator coordinator(**store, opts, metrics);
  if (absl::Status s = coordinator.Start(); !s.ok()) return Fail(std::string(s.message()));

  gpt2::JobServiceImpl jobs(**store, coordinator, gpt2::RpcGuard(metrics, auth_token));
  gpt2::ClusterServiceImpl cluster(coordinator, gpt2::RpcGuard(metrics, auth_token));
  gpt2::WorkerServiceImpl workers(coordinator, gpt2::RpcGuard(metrics, cluster_token));
  gpt2::DeploymentServiceImpl deployments(coordinator, gpt2::RpcGuard(metrics, auth_token));
  gpt2::GenerateMetrics generate_metrics(*metrics.registry());
  gpt2::GenerateRelay generate(coordinator, gpt2::RpcGuard(metrics, auth_token), generate_metrics, replicas);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *creds, &port);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.RegisterService(&jobs);
  builder.RegisterService(&cluster);
  builder.RegisterService(&workers);
  builder.RegisterService(&deployments);
  builder.RegisterService(&generate);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return Fail(absl::StrCat("cannot listen on ", listen));

  absl::StatusOr<std::unique_ptr<gpt2::HttpServer>> http =
      gpt2::HttpServer::Start(http_listen, metrics.registry(), [] { return std::string(); });
  if (!http.ok()) return Fail(std::string(http.status().message()));
  std::unique_ptr<gpt2::openai::Server> openai;
  if (!openai_listen.empty()) {
    absl::StatusOr<gpt2::Tokenizer> tokenizer = gpt2::LoadTokenizer(vocab);
    if (!tokenizer.ok())
      return Fail(absl::StrCat("--openai-listen needs the vocabulary: ", tokenizer.status().message()));
    gpt2::openai::ServerOptions o;
    o.listen = openai_listen;
    o.token = auth_token;
    o.channel = server->InProcessChannel(grpc::ChannelArguments());
    o.tokenizer = std::make_shared<const gpt2::Tokenizer>(*std::move(tokenizer));
    o.refused = [&generate_metrics](const std::string& code) { generate_metrics.Request("openai", code); };
    auto deployments =
        std::shared_ptr<gpt2d::v1::DeploymentService::Stub>(gpt2d::v1::DeploymentService::NewStub(o.channel));
    o.models = [deployments](const std::string& authorization) -> absl::StatusOr<std::vector<gpt2::openai::ModelInfo>> {
      grpc::ClientContext ctx;
      if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
      gpt2d::v1::ListDeploymentsResponse list;
      grpc::Status st = deployments->ListDeployments(&ctx, gpt2d::v1::ListDeploymentsRequest(), &list);
      if (!st.ok()) return gpt2::FromGrpcStatus(st);
      std::vector<gpt2::openai::ModelInfo> models;
      for (const gpt2d::v1::Deployment& d : list.deployments()) {
        gpt2::openai::ModelInfo m{d.name(), d.created_at().seconds(), d.follow_job(), d.checkpoint(), d.serving_step()};
        if (d.name() == "default")
          models.insert(models.begin(), m);  // the one a request without a model gets
        else
          models.push_back(m);
      }
      return models;
    };
    absl::StatusOr<std::unique_ptr<gpt2::openai::Server>> started = gpt2::openai::Server::Start(std::move(o));
    if (!started.ok()) return Fail(std::string(started.status().message()));
    openai = *std::move(started);
  }
  std::cerr << "gpt2d: listening on " << listen << " (gRPC" << (tls.cert_file.empty() ? "" : ", TLS")
            << (auth_token.empty() ? "" : ", token auth") << "), HTTP on " << http_listen
            << (openai ? absl::StrCat(", OpenAI API on port ", openai->port()) : std::string()) << ", database "
            << db_path << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "gpt2d: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", shutting down" << std::endl;
  openai.reset();  // its calls are cancelled before the gRPC server stops
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
