// The coordinator's workers: who is connected (its stream's session), when each was last heard
// from, what each is doing (IDLE, TRAINING a rank, SERVING a deployment, LOST), the serving status
// and rank progress its heartbeats carry, and the relay's view of it as a replica (requests in
// flight, failures in a row). Every state change is written to the store (WORKER_STATE rows).
//
// Not thread-safe: the Coordinator calls it under its lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gpt2d/v1/worker.pb.h"
#include "server/store.h"
#include "server/store_refusals.h"

namespace gpt2 {

using Clock = std::chrono::steady_clock;

// One connected worker's outgoing messages, drained by its stream's writer. Thread-safe.
class WorkerSession {
 public:
  explicit WorkerSession(std::function<void()> abort) : abort_(std::move(abort)) {}
  void Send(v1::CoordinatorMessage m);
  // The next message; nullopt once closed or at the deadline (check closed()).
  std::optional<v1::CoordinatorMessage> Next(Clock::time_point deadline);
  // Ends the stream: Next returns nullopt and the call is cancelled.
  void Close();
  bool closed();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::CoordinatorMessage> queue_;
  bool closed_ = false;
  std::function<void()> abort_;
};

struct WorkerEntry {
  v1::Worker info;
  std::shared_ptr<WorkerSession> session;  // null while disconnected
  Clock::time_point last_seen;
  v1::ServeStatus serving;  // from its latest heartbeat
  int64_t inflight = 0;     // requests gpt2d has routed to it and not seen end
  int relay_failures = 0;   // requests it failed in a row (Deployments::Release)
  bool ejected = false;     // out of routing since ejected_at
  Clock::time_point ejected_at;
  Clock::time_point progressed_at;  // its rank's last progress, by the worker's clock (or the assignment)

  bool connected() const { return session != nullptr; }
  void Send(v1::CoordinatorMessage m) {
    if (session) session->Send(std::move(m));
  }
};

class WorkerRegistry {
 public:
  WorkerRegistry(JobStore& store, ServerMetrics& metrics, StoreRefusals& refusals)
      : store_(store), metrics_(metrics), refusals_(refusals) {}
  // Closes every session.
  ~WorkerRegistry();

  // The workers the store knows, all LOST until they reconnect.
  absl::Status Load();

  // `reg` opened a stream: the entry now holds `session` (an older one is closed) and the worker's
  // registration; the store's row is written first, so a refused write refuses the registration
  // (nothing changes then). reg's ids are validated by the caller (WorkerServiceImpl).
  absl::StatusOr<WorkerEntry*> Attach(const v1::Register& reg, std::shared_ptr<WorkerSession> session);
  // The entry whose current stream is `session`; null when a newer stream replaced it.
  WorkerEntry* Current(const std::string& id, const std::shared_ptr<WorkerSession>& session);
  WorkerEntry* Find(const std::string& id);
  // A message arrived: the worker is alive; a heartbeat updates its serving status and rank
  // progress, and readmits an ejected replica that serves again after `ejection`.
  void Heard(WorkerEntry& w, const v1::WorkerMessage& message, std::chrono::milliseconds ejection);
  // The stream ended or went silent: the session is closed and the worker LOST.
  void Detach(WorkerEntry& w);

  // Connected workers silent for longer than `timeout`.
  std::vector<WorkerEntry*> Silent(Clock::time_point now, std::chrono::milliseconds timeout);
  // Connected IDLE workers, in id order.
  std::vector<WorkerEntry*> Idle();
  std::vector<v1::Worker> List() const;

  // Writes the worker's new state (refusals go to `refusals`); a rank's progress clock starts
  // when it is assigned TRAINING.
  void SetState(WorkerEntry& w, v1::WorkerState state, const std::string& job_id = "", int rank = 0,
                const std::string& deployment = "");

 private:
  void UpdateMetrics();

  JobStore& store_;
  ServerMetrics& metrics_;
  StoreRefusals& refusals_;
  std::map<std::string, WorkerEntry> workers_;
};

}  // namespace gpt2
