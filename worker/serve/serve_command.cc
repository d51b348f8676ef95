#include "worker/serve/serve_command.h"

#include <grpcpp/grpcpp.h>

#include <iostream>
#include <thread>

#include "common/http_server.h"
#include "common/openai_server.h"
#include "common/tokenizer/tokenizer.h"
#include "worker/command_flags.h"
#include "worker/serve/engine.h"
#include "worker/serve/generate_service.h"
#include "worker/serve/replica.h"
#include "worker/serve/serve_metrics.h"
#include "worker/serve/weight_format.h"

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
  absl::StatusOr<std::unique_ptr<ReplicaEndpoints>> endpoints =
      ReplicaEndpoints::Start(service, o.listen, grpc::InsecureServerCredentials(), o.http_listen, registry);
  if (!endpoints.ok()) return Fail(std::string(endpoints.status().message()));
  std::unique_ptr<openai::Server> openai_server;
  if (!o.openai_listen.empty()) {
    openai::ServerOptions oo;
    oo.listen = o.openai_listen;
    oo.channel = (*endpoints)->server().InProcessChannel(grpc::ChannelArguments());
    oo.tokenizer = std::make_shared<const Tokenizer>(*tok);
    oo.token = o.token;
    oo.max_context = r->current().engine->max_context();
    oo.refused = [&metrics](const std::string& code) { metrics.Request("openai", code); };
    const auto started = std::chrono::system_clock::now();
    oo.models = [r, name = o.served_model_name,
                 started](const std::string&) -> absl::StatusOr<std::vector<openai::ModelInfo>> {
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
  openai_server.reset();  // before the gRPC server it calls in-process
  return 0;
}

void AddEngineFlags(CLI::App* cmd, EngineOptions& eo, const std::string& when) {
  cmd->add_option_function<int64_t>(
         "--kv-cache-mb", [&eo](int64_t mb) { eo.kv_cache_bytes = mb << 20; }, when + "KV-cache memory (MiB)")
      ->default_str(std::to_string(eo.kv_cache_bytes >> 20))
      ->check(AtLeast(1));
  cmd->add_option("--max-slots", eo.max_slots, when + "most concurrent requests (the KV budget may allow fewer)")
      ->capture_default_str()
      ->check(AtLeast(1));
  cmd->add_option("--max-context", eo.max_context,
                  when + "tokens a request may span (prompt + max_tokens); 0 = the model's context")
      ->capture_default_str()
      ->check(AtLeast(0));
  cmd->add_option("--max-queue", eo.max_queue, when + "most waiting requests before RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(AtLeast(0));
  cmd->add_option("--max-prefill-tokens", eo.max_prefill_tokens,
                  when + "prompt tokens prefilled together between two decode steps (a longer prompt goes alone)")
      ->capture_default_str()
      ->check(AtLeast(1));
  cmd->add_flag("!--no-prefix-caching", eo.prefix_caching,
                when + "compute every prompt in full instead of reusing the KV rows of cached prefixes");
  cmd->add_option("--weights", eo.weights,
                  when +
                      "weight format: fp32, bf16 (half the bytes), int8 (a quarter; a scale per row) or w8a8 "
                      "(int8 weights and activations)")
      ->capture_default_str()
      ->check(CLI::IsMember(WeightFormatNames()));
}

WorkerCommand AddServeCommand(CLI::App& app, const WorkerGlobals& globals) {
  auto o = std::make_shared<ServeOptions>();
  auto token_file = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("serve", "One serving replica on its own: GenerateService over a checkpoint");
  cmd->add_option("--model", o->model_dir, "Checkpoint directory (config.json + model.safetensors)")->required();
  cmd->add_option("--listen", o->listen, "gRPC address")->capture_default_str();
  cmd->add_option("--http-listen", o->http_listen, "Address for /metrics and /healthz; empty: none")
      ->capture_default_str();
  cmd->add_option("--device", o->device, "cpu or cuda:N")->capture_default_str();
  AddEngineFlags(cmd, o->engine, "");
  cmd->add_option("--openai-listen", o->openai_listen,
                  "HTTP address of the OpenAI-compatible API (/v1/completions, /v1/models), e.g. :8000; empty: none")
      ->capture_default_str();
  cmd->add_option("--served-model-name", o->served_model_name, "The model's id in the OpenAI API")
      ->capture_default_str();
  cmd->add_option("--auth-token-file", *token_file,
                  "Require \"authorization: Bearer <token>\" with this file's token on gRPC and the OpenAI API "
                  "(all but health)");
  cmd->add_option("--job-id", o->job_id, "The training job the checkpoint came from (reported in responses)");
  cmd->add_option("--follow", o->follow_dir,
                  "Hot-load every newer step_* checkpoint that appears in this directory (a job's checkpoint dir)");
  return {cmd, [o, token_file, &globals] {
            o->vocab = globals.vocab;
            if (!ReadTokenFlag(*token_file, &o->token)) return 2;
            return RunServeCommand(*o, StopOnSignals());
          }};
}

}  // namespace gpt2
