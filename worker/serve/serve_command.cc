#include "worker/serve/serve_command.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <filesystem>
#include <iostream>
#include <regex>
#include <thread>

#include "common/http_server.h"
#include "worker/serve/engine.h"
#include "worker/serve/generate_service.h"
#include "worker/serve/serve_metrics.h"
#include "worker/tokenizer/tokenizer.h"

namespace gpt2 {
namespace {

int Fail(const std::string& message, int code = 1) {
  std::cerr << "gpt2-worker: error: " << message << std::endl;
  return code;
}

// "runs/job-000001/step_00000300" -> 300; 0 for a directory not named like a checkpoint.
int64_t StepOf(const std::string& dir) {
  static const std::regex kStep(R"(step_0*([0-9]+))");
  std::smatch m;
  const std::string name = std::filesystem::path(dir).lexically_normal().filename().string();
  return std::regex_match(name, m, kStep) ? std::stoll(m[1].str()) : 0;
}

}  // namespace

int RunServeCommand(const ServeOptions& o, const std::atomic<bool>& stop) {
  if (o.kv_cache_mb <= 0) return Fail("--kv-cache-mb must be > 0", 2);
  absl::StatusOr<Tokenizer> tok = LoadTokenizer(o.vocab);
  if (!tok.ok()) return Fail(std::string(tok.status().message()));
  EngineOptions eo;
  eo.device = o.device;
  eo.kv_cache_bytes = o.kv_cache_mb << 20;
  eo.max_slots = o.max_slots;
  eo.max_queue = o.max_queue;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(o.model_dir, eo);
  if (!engine.ok()) return Fail(std::string(engine.status().message()));
  std::shared_ptr<Engine> shared = *std::move(engine);

  auto registry = std::make_shared<prometheus::Registry>();
  ServeMetrics metrics(registry);
  GenerateServiceImpl service(shared, {o.job_id, std::filesystem::absolute(o.model_dir).string(), StepOf(o.model_dir)},
                              *tok, metrics);
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
  const EngineStats s = shared->stats();
  std::cerr << "gpt2-worker: serving " << o.model_dir << " on " << o.listen << " (" << s.slots << " KV-cache slots of "
            << shared->config().n_positions << " tokens)" << std::endl;
  while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace gpt2
