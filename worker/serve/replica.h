// A serving replica's model versions. New requests go to the current engine; a new checkpoint is
// loaded beside it into an engine of its own, checked (it loads, and a one-token generation gives
// a finite log-probability), and then becomes current in one step. Requests already running keep
// the engine they started on (they hold it), so none fails or changes weights mid-stream; the old
// engine goes away with its last request. A load that fails leaves the current engine serving and
// says why. While the two overlap the replica holds two KV caches.
//
// Plain C++ header (the gRPC side includes it).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/serve/engine.h"

namespace gpt2 {

class ServeMetrics;

struct ModelVersion {
  std::string job_id, path;
  int64_t step = 0;
};

// "runs/job-000001/step_00000300" -> 300; 0 for a directory not named like a checkpoint.
int64_t CheckpointStep(const std::string& dir);

class Replica {
 public:
  static absl::StatusOr<std::unique_ptr<Replica>> Start(const std::string& model_dir, std::string job_id,
                                                        EngineOptions options);
  ~Replica();

  struct Current {
    std::shared_ptr<Engine> engine;
    ModelVersion version;
  };
  Current current() const;

  // Loads `model_dir` beside the current engine and switches to it (see above).
  absl::Status Load(const std::string& model_dir);

  // Follows a checkpoint directory: every `interval`, the newest complete step_* under `dir`
  // newer than the current one is loaded. `on_result` hears of every attempt (OK or why not).
  void Follow(const std::string& dir, std::chrono::milliseconds interval,
              std::function<void(const ModelVersion&, const absl::Status&)> on_result);
  // Follow(dir) once a second, counting each load in `metrics` and logging it on stderr ("now
  // serving PATH (step N)", or "kept the current weights: cannot load PATH: why").
  void FollowReported(const std::string& dir, ServeMetrics& metrics);

 private:
  Replica(std::string job_id, EngineOptions options) : job_id_(std::move(job_id)), options_(std::move(options)) {}
  std::string job_id_;
  EngineOptions options_;
  mutable std::mutex mu_;
  Current current_;
  std::mutex load_mu_;  // one load at a time
  std::atomic<bool> stop_{false};
  std::thread follower_;
};

}  // namespace gpt2
