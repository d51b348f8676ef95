#include "worker/serve/serve_command.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <iostream>
#include <thread>

#include "common/http_server.h"
#include "common/openai_server.h"
#include "worker/serve/engine.h"
#include "worker/serve/generate_service.h"
#include "worker/serve/replica.h"
#include "worker/serve/serve_metrics.h"
#include "worker/tokenizer/tokenizer.h"

namespace gpt2 {
namespace {

int Fail(const std::string& message, int code = 1) {
  std::cerr << "gpt2-worker: error: " << message << std::endl;
  return code;
}

}  // namespace

int RunServeCommand(const ServeOptions& o, const std::atomic<bool>& stop) {
  absl::StatusOr<Tokenizer> tok = LoadTokenizer(o.vocab);
  if (!tok.ok()) return Fail(std::string(tok.status().message()));
  auto registry = std::make_shared<prometheus::Registry>();
  ServeMetrics metrics(registry);
  metrics.Serving("");  // a standalone replica: no deployment
  EngineOptions eo = o.engine;
  eo.device = o.device;
  eo.on_fault =
      metrics.FaultHandler([](const std::string& line) { std::cerr << "gpt2-worker: " << line << std::endl; });
  eo.on_admit = metrics.AdmitHandler();
  absl::StatusOr<std::unique_ptr<Replica>> replica = Replica::Start(o.model_dir, o.job_id, eo);
  if (!replica.ok()) return Fail(std::string(replica.status().message()));

  Replica* r = replica->get();
  GenerateServiceImpl service([r]() -> absl::StatusOr<Replica::Current> { return r->current(); }, *tok, metrics,
                              o.token);
  if (!o.follow_dir.empty()) (*replica)->FollowReported(o.follow_dir, metrics);
  std::unique_ptr<HttpServer> http;
  if (!o.http_listen.empty()) {
    absl::StatusOr<std::unique_ptr<HttpServer>> h = HttpServer::Start(o.http_listen, registry, nullptr);
    if (!h.ok()) return Fail(std::string(h.status().message()));
    http = *std::move(h);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(o.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return Fail("cannot listen on " + o.listen);
  std::unique_ptr<openai::Server> openai_server;
  if (!o.openai_listen.empty()) {
    openai::ServerOptions oo;
    oo.listen = o.openai_listen;
    oo.channel = server->InProcessChannel(grpc::ChannelArguments());
    oo.tokenizer = std::make_shared<const Tokenizer>(*tok);
    oo.token = o.token;
    oo.max_context = r->current().engine->max_context();
    oo.refused = [&metrics](const std::string& code) { metrics.Request("openai", code); };
    const auto started = std::chrono::system_clock::now();
    oo.models = [r, name = o.served_model_name, started](const std::string&) -> absl::StatusOr<std::vector<openai::ModelInfo>> {
      const Replica::Current cur = r->current();
      const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(started.time_since_epoch()).count();
      return std::vector<openai::ModelInfo>{{name, created, cur.version.job_id, cur.version.path, cur.version.step}};
    };
    absl::StatusOr<std::unique_ptr<openai::Server>> s = openai::Server::Start(std::move(oo));
    if (!s.ok()) return Fail(std::string(s.status().message()));
    openai_server = *std::move(s);
  }
  const Replica::Current cur = (*replica)->current();
  std::cerr << "gpt2-worker: serving " << cur.version.path << " on " << o.listen << " (" << cur.engine->stats().slots
            << " KV-cache slots of " << cur.engine->config().n_positions << " tokens)"
            << (openai_server ? " and the OpenAI API on port " + std::to_string(openai_server->port()) : std::string())
            << std::endl;
  while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  openai_server.reset();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace gpt2
