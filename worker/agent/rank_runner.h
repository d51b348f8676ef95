// One training rank on its own thread: the #3 trainer behind plain types, so that the daemon's
// gRPC side never includes libtorch (docs/process-model.md).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/train_config.h"
#include "worker/train/events.h"

namespace gpt2 {

struct RankTask {
  std::string job_id;
  int attempt = 0;
  int rank = 0, world_size = 1;
  std::string master_addr;
  int master_port = 0;
  std::string resume_from;  // checkpoint directory; empty = fresh start
  std::chrono::milliseconds collective_timeout{std::chrono::seconds(60)};
  std::string vocab;
  TrainConfig config;
};

class RankRunner {
 public:
  // Starts the rank at once. Events reach `observer` on the training thread; `done` runs last, on
  // the same thread, with the run's outcome (CANCELLED after Cancel()).
  RankRunner(RankTask task, std::unique_ptr<TrainObserver> observer, std::function<void(absl::Status)> done);
  // Cancels and waits for the thread.
  ~RankRunner();
  // Stops the rank at its next micro-step (all ranks of the group agree on the same one).
  void Cancel() { cancelled_ = true; }
  const RankTask& task() const { return task_; }
  // Grows with every micro-step, validation batch, sample token, eval and checkpoint: a counter
  // that stands still while the worker is alive means the rank hangs.
  int64_t progress() const { return progress_.ticks.load(); }
  // How long since the counter last moved (or the rank started).
  std::chrono::milliseconds idle() const;

 private:
  class StoppableObserver;
  RankTask task_;
  std::atomic<bool> cancelled_{false};
  struct Progress {
    std::atomic<int64_t> ticks{0};
    std::atomic<int64_t> at_ns{0};  // steady_clock time of the last tick
    void Tick();
  };
  Progress progress_;
  std::unique_ptr<TrainObserver> observer_;
  std::thread thread_;
};

// Checks that `device` ("cpu", "cuda", "cuda:N") exists here; returns its memory in bytes (host
// memory for cpu).
absl::StatusOr<int64_t> ProbeDevice(const std::string& device);

}  // namespace gpt2
