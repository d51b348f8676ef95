// `gpt2-worker run`: the daemon. Three parts, one file each:
// - the connection (agent.cc): one stream to gpt2d (WorkerService.Connect) that registers, sends
//   heartbeats and rank events, and hands gpt2d's messages to the two hosts below. When it breaks
//   the worker keeps training and serving, buffers events (outbox.h) and reconnects with backoff,
//   saying what it runs so that its rank and deployment are re-attached, not restarted;
// - the rank host (rank_host.h): the training ranks gpt2d assigns, one at a time;
// - the serving host (serving_host.h): the deployment gpt2d assigns, behind this worker's own
//   GenerateService port (the cluster token, optionally TLS), loads off the stream's thread.
//
// These files see protobuf/gRPC, never libtorch: training runs in RankRunner (rank_runner.h), serving
// in the engine behind Replica (worker/serve/replica.h).
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "common/client_channel.h"
#include "common/server_credentials.h"
#include "worker/command.h"
#include "worker/serve/engine.h"

namespace gpt2 {

struct AgentOptions {
  ClientChannelOptions coordinator;  // address, token, TLS
  std::string worker_id;             // default "<hostname>/<device>"
  std::string advertise_host;        // rank 0's rendezvous address as other workers reach it
  std::string device = "cpu";
  std::string http_listen = "0.0.0.0:9401";  // /metrics, /healthz; empty = off
  std::chrono::milliseconds collective_timeout{std::chrono::seconds(60)};
  // A cancelled rank still running after this long ends the process (rank_host.h). Longer than
  // collective_timeout, so that a rank waiting on a dead peer fails on its own first.
  std::chrono::milliseconds cancel_grace{std::chrono::seconds(120)};
  // GenerateService for the deployment gpt2d assigns (port 0: any free one; advertised with
  // advertise_host), and its engine (the device is the worker's).
  std::string serve_listen = "0.0.0.0:0";
  ServerTlsOptions serve_tls;  // cert + key: the serving port takes TLS only (gpt2d --replica-tls-ca)
  EngineOptions engine;
  std::string vocab;
};

// Runs until `stop` becomes true (SIGINT/SIGTERM). Returns the process exit code; non-zero for a
// configuration gpt2d refuses (bad token, bad registration) or a device that does not exist.
int RunAgent(const AgentOptions& options, const std::atomic<bool>& stop);

// Adds `run` and its flags to `app` (worker/command.h); it runs until SIGINT or SIGTERM.
WorkerCommand AddRunCommand(CLI::App& app, const WorkerGlobals& globals);

}  // namespace gpt2
