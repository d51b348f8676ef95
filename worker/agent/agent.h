// `gpt2-worker run`: the daemon. It holds one stream to gpt2d (WorkerService.Connect): registers,
// sends heartbeats and its rank's events, and runs the training ranks gpt2d assigns, one at a
// time. When the stream breaks it keeps training, buffers the events, and reconnects with backoff;
// on reconnecting it tells gpt2d what it is running so the rank is re-attached, not restarted.
//
// This file sees protobuf/gRPC, never libtorch: training runs in RankRunner (rank_runner.h).
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "common/client_channel.h"
#include "worker/serve/engine.h"

namespace gpt2 {

struct AgentOptions {
  ClientChannelOptions coordinator;  // address, token, TLS
  std::string worker_id;             // default "<hostname>/<device>"
  std::string advertise_host;        // rank 0's rendezvous address as other workers reach it
  std::string device = "cpu";
  std::string http_listen = "0.0.0.0:9401";  // /metrics, /healthz; empty = off
  std::chrono::milliseconds collective_timeout{std::chrono::seconds(60)};
  // GenerateService for the deployment gpt2d assigns (port 0: any free one; advertised with
  // advertise_host), and its engine (the device is the worker's).
  std::string serve_listen = "0.0.0.0:0";
  EngineOptions engine;
  std::string vocab;
};

// Runs until `stop` becomes true (SIGINT/SIGTERM). Returns the process exit code; non-zero for a
// configuration gpt2d refuses (bad token, bad registration) or a device that does not exist.
int RunAgent(const AgentOptions& options, const std::atomic<bool>& stop);

}  // namespace gpt2
