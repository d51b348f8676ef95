// `gpt2-worker serve`: one serving replica on its own (no gpt2d): GenerateService on --listen over
// the engine, the OpenAI-compatible API on --openai-listen, /metrics and /healthz on --http-listen.
// Plain C++ header.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "worker/command.h"
#include "worker/serve/engine.h"

namespace gpt2 {

struct ServeOptions {
  std::string model_dir;
  std::string listen = "0.0.0.0:50061";
  std::string http_listen = "0.0.0.0:9402";
  std::string device = "cpu";
  std::string vocab;
  std::string job_id;                      // reported as the served model's job (empty: none)
  std::string follow_dir;                  // hot-load each newer step_* that appears here (a job's checkpoint dir)
  std::string openai_listen;               // the OpenAI-compatible HTTP API (common/openai_server.h); empty: none
  std::string served_model_name = "gpt2";  // the model's id in that API
  std::string token;     // non-empty: required as "authorization: Bearer <token>" on gRPC and HTTP (not /health)
  EngineOptions engine;  // its device is `device`
};

// Runs until `stop`; returns the process exit code.
int RunServeCommand(const ServeOptions& options, const std::atomic<bool>& stop);

// Adds `serve` and its flags to `app` (worker/command.h); it runs until SIGINT or SIGTERM.
WorkerCommand AddServeCommand(CLI::App& app, const WorkerGlobals& globals);

// The engine's flags (--kv-cache-mb, --max-slots, ...), shared by `serve` and `run`; `when`
// prefixes each description.
void AddEngineFlags(CLI::App* cmd, EngineOptions& options, const std::string& when);

}  // namespace gpt2
