// The coordinator's jobs: admission, gang scheduling of a job's ranks onto idle workers, their
// events (steps, evals, checkpoints, exits), restarts of the whole group from its last checkpoint
// when a rank fails, hangs or loses its worker (torchelastic semantics), and after gpt2d's own
// restart the re-attachment of ranks that are still running. Every change of a job is an event
// appended to the store before it is acknowledged.
//
// Not thread-safe: the Coordinator calls it under its lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gpt2d/v1/jobs.pb.h"
#include "gpt2d/v1/worker.pb.h"
#include "server/metrics.h"
#include "server/store.h"
#include "server/store_refusals.h"
#include "server/worker_registry.h"

namespace gpt2 {

struct CoordinatorOptions;

// What the service edge learned from a valid spec (ResolveTrainSpec).
struct JobShape {
  std::string name;
  int64_t max_steps = 0;
  int world_size = 1;
};

class JobScheduler {
 public:
  // `events` is notified whenever a job's history grows or a job ends.
  JobScheduler(JobStore& store, const CoordinatorOptions& options, ServerMetrics& metrics, WorkerRegistry& workers,
               StoreRefusals& refusals, std::condition_variable& events);

  // The jobs that had not finished: queued ones queue again, running ones wait recovery_grace
  // for their ranks to re-attach.
  absl::Status Load();

  // `spec` is valid and `shape` what it resolves to (JobServiceImpl checked both).
  absl::StatusOr<v1::Job> Submit(const v1::TrainSpec& spec, const JobShape& shape, const std::string& idempotency_key);
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // Whether job `id` has an event after `after_sequence` or is no longer active.
  bool HasNews(const std::string& job_id, int64_t after_sequence) const;

  // A worker reconnected saying it runs (or last ran) a rank: re-attach it to its job or cancel it.
  void Reattach(WorkerEntry& w, const v1::Register& reg);
  void OnRankEvent(WorkerEntry& w, const v1::RankEvent& e);
  // `worker_id` (running `job_id`'s rank `rank`, if any) was lost.
  void WorkerLost(const std::string& worker_id, const std::string& job_id, int rank, const std::string& reason);
  // Adoption deadlines after a gpt2d restart, and hung ranks.
  void Tick(Clock::time_point now);
  // Starts every queued or restarting job that fits on the idle workers, in submission order.
  void Schedule();

 private:
  struct ActiveJob {
    v1::Job job;
    std::set<std::string> running;  // workers running a rank of the current attempt
    std::set<int> exited_ok;        // ranks of the current attempt that finished
    bool adopting = false;          // after a gpt2d restart, waiting for ranks to re-attach
    Clock::time_point adopt_deadline;
    int port = 0;
    int64_t last_eval_step = 0, last_checkpoint_step = 0;  // to drop repeated reports
  };

  // A rank failed, hung or its worker was lost: restart the group (or FAIL the job past max_restarts).
  void FailAttempt(ActiveJob& aj, const std::string& reason, bool retryable, bool counts_as_restart = true);
  // `recorded`: the terminal state's event is already in the store (Cancel writes it first).
  void Finish(ActiveJob& aj, v1::JobState state, const std::string& reason, bool recorded = false);
  void CancelRanks(ActiveJob& aj);
  void CheckProgress(Clock::time_point now);
  void Record(ActiveJob& aj, v1::JobEvent event);
  void SetState(ActiveJob& aj, v1::JobState state, const std::string& message = "");
  void Note(ActiveJob& aj, const std::string& message);
  int TakePort();
  // Jobs by state, from memory: active jobs from active_, ended ones from ended_counts_ (read
  // from the store once, at Load), so that no state change runs SQL for them.
  void UpdateCountMetrics();

  JobStore& store_;
  const CoordinatorOptions& opts_;
  ServerMetrics& metrics_;
  WorkerRegistry& workers_;
  StoreRefusals& refusals_;
  std::condition_variable& events_;
  std::map<std::string, ActiveJob> active_;  // by id: submission order
  std::map<v1::JobState, int64_t> ended_counts_;
  int next_port_;
};

}  // namespace gpt2
