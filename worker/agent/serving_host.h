// The agent's serving side: the deployment gpt2d assigned this worker and its replica. Serve and
// Stop return at once, whatever a model load in progress is doing: loads, and the retiring of
// replicas (whose follower may be mid-load), run on threads of their own, and a load that a newer
// assignment superseded is discarded when it ends. So a slow or stuck load (a large checkpoint, a
// hung file system) never stalls the stream that carries gpt2d's messages.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "gpt2d/v1/worker.pb.h"
#include "worker/serve/engine.h"
#include "worker/serve/replica.h"

namespace gpt2 {

class ServeMetrics;

class ServingHost {
 public:
  ServingHost(std::string worker_id, std::string device, EngineOptions engine, ServeMetrics& metrics);
  // Stops serving and waits for its threads; a load still blocked after 10 s is left behind.
  ~ServingHost();

  // The replica's current engine; UNAVAILABLE while nothing is assigned or still loading.
  absl::StatusOr<Replica::Current> Now();
  std::string deployment();
  void FillHeartbeat(::gpt2d::v1::Heartbeat& hb);
  // Serves `a` (replacing whatever was served): the load starts on its own thread.
  void Serve(const ::gpt2d::v1::ServeAssignment& a);
  // Stops serving `deployment` (empty: whatever is served). Running requests keep their engine.
  void Stop(const std::string& deployment);

 private:
  struct State;
  void Retire(std::unique_ptr<Replica> replica);
  template <typename F>
  void Spawn(F fn);

  const std::string worker_id_, device_;
  const EngineOptions engine_;
  ServeMetrics& metrics_;
  std::shared_ptr<State> state_;
  struct Task {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex tasks_mu_;
  std::vector<Task> tasks_;
};

}  // namespace gpt2
