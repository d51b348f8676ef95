// The coordinator: gpt2d's one owner of job and worker state. It admits jobs, gang-schedules them
// onto idle workers, follows their ranks' events, restarts a job's whole group from its last
// checkpoint when a rank fails or a worker is lost (torchelastic semantics), and after its own
// restart re-attaches the ranks that are still running.
//
// Every public method is thread-safe (one mutex). State changes are written to the JobStore before
// they are acknowledged; the in-memory state is a cache of active jobs and connected workers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gpt2d/v1/worker.pb.h"
#include "server/metrics.h"
#include "server/store.h"

namespace gpt2 {

using Clock = std::chrono::steady_clock;

struct CoordinatorOptions {
  // Jobs that name no checkpoint.dir write to <checkpoint_root>/<job id>.
  std::string checkpoint_root = "runs";
  std::chrono::milliseconds heartbeat_interval{1000};
  // A connected worker silent for this long is lost.
  std::chrono::milliseconds heartbeat_timeout{10000};
  // After gpt2d restarts, how long a running job waits for its ranks' workers to reconnect before
  // its group is restarted from the last checkpoint.
  std::chrono::milliseconds recovery_grace{20000};
  // A rank whose progress counter (RankProgress.ticks) stands still this long while its worker
  // heartbeats hangs: its attempt fails and the group restarts. Zero: never.
  std::chrono::milliseconds rank_progress_timeout{600000};
  // Restarts after a lost worker or a failed rank before the job FAILS.
  int max_restarts = 3;
  // A replica that failed kFailuresToEject requests in a row stays out of routing at least this long.
  std::chrono::milliseconds replica_ejection{5000};
  // c10d rendezvous (TCPStore) ports handed to rank 0, one per running job.
  int rendezvous_port_min = 29500, rendezvous_port_max = 29999;
};

// One connected worker's outgoing messages, drained by its stream's writer.
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

class Coordinator {
 public:
  Coordinator(JobStore& store, CoordinatorOptions options, ServerMetrics& metrics);
  ~Coordinator();

  // Loads the jobs that had not finished: queued ones queue again, running ones wait
  // recovery_grace for their workers. Then starts the background ticker (heartbeats, scheduling).
  absl::Status Start();

  // ---- Jobs (JobService)
  // INVALID_ARGUMENT naming the spec field; nothing is stored then.
  absl::StatusOr<v1::Job> Submit(const v1::TrainSpec& spec, const std::string& idempotency_key);
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // Returns once job `id` has an event after `after_sequence`, has ended, or at the deadline.
  void WaitForEvents(const std::string& job_id, int64_t after_sequence, Clock::time_point deadline);

  // ---- Workers (WorkerService, ClusterService)
  // A worker's stream opened with `reg`. `abort` cancels the stream (used when the worker is lost).
  absl::StatusOr<std::shared_ptr<WorkerSession>> Connect(const v1::Register& reg, std::function<void()> abort);
  void Receive(const std::string& worker_id, const std::shared_ptr<WorkerSession>& session,
               const v1::WorkerMessage& message);
  void Disconnect(const std::string& worker_id, const std::shared_ptr<WorkerSession>& session,
                  const std::string& reason);
  std::vector<v1::Worker> ListWorkers();
  absl::StatusOr<v1::Worker> GetWorker(const std::string& id);

  // ---- Deployments (DeploymentService) and routing (GenerateService)
  // INVALID_ARGUMENT naming the field, ALREADY_EXISTS for a taken name.
  absl::StatusOr<v1::Deployment> CreateDeployment(v1::Deployment d);
  std::vector<v1::Deployment> ListDeployments();
  absl::StatusOr<v1::Deployment> GetDeployment(const std::string& name);
  absl::Status DeleteDeployment(const std::string& name);
  struct Route {
    std::string worker_id, address;
  };
  // The least-loaded ready replica of `deployment` (empty: "default", or the only deployment),
  // not one of `exclude` (workers a retried request already failed on) nor one taken out of
  // routing; counts the request against it until Release. NOT_FOUND for no such deployment,
  // UNAVAILABLE when none of its replicas is ready.
  absl::StatusOr<Route> PickReplica(const std::string& deployment, const std::set<std::string>& exclude = {});
  // `failed`: the replica failed the request (UNAVAILABLE from it, not the caller leaving). After
  // kFailuresToEject failures in a row it is taken out of routing, until a heartbeat at least
  // options.replica_ejection later says it serves again; a success resets the count.
  void Release(const Route& route, bool failed = false);
  static constexpr int kFailuresToEject = 2;

 private:
  struct WorkerEntry {
    v1::Worker info;
    std::shared_ptr<WorkerSession> session;  // null while disconnected
    Clock::time_point last_seen;
    v1::ServeStatus serving;  // from its latest heartbeat
    int64_t inflight = 0;     // requests gpt2d has routed to it and not seen end
    int relay_failures = 0;   // requests it failed in a row (Release)
    bool ejected = false;     // out of routing since ejected_at
    Clock::time_point ejected_at;
    int64_t rank_ticks = -1;          // its rank's progress counter, from heartbeats
    Clock::time_point progressed_at;  // when rank_ticks last moved (or the rank was assigned)
  };
  struct ActiveJob {
    v1::Job job;
    std::set<std::string> running;  // workers running a rank of the current attempt
    std::set<int> exited_ok;        // ranks of the current attempt that finished
    bool adopting = false;          // after a gpt2d restart, waiting for ranks to re-attach
    Clock::time_point adopt_deadline;
    int port = 0;
    int64_t last_eval_step = 0, last_checkpoint_step = 0;  // to drop repeated reports
  };

  void Tick();
  void Schedule();
  void OnRankEvent(WorkerEntry& worker, const v1::RankEvent& e);
  // A rank failed or its worker was lost: restart the group (or FAIL the job past max_restarts).
  void FailAttempt(ActiveJob& aj, const std::string& reason, bool retryable, bool counts_as_restart = true);
  // `recorded`: the terminal state's event is already in the store (Cancel writes it first).
  void Finish(ActiveJob& aj, v1::JobState state, const std::string& reason, bool recorded = false);
  void CancelRanks(ActiveJob& aj);
  void LoseWorker(WorkerEntry& worker, const std::string& reason);
  void SetWorkerState(WorkerEntry& worker, v1::WorkerState state, const std::string& job_id = "", int rank = 0,
                      const std::string& deployment = "");
  void ScheduleDeployments();
  v1::Deployment WithStatus(const v1::Deployment& d);
  void RemoveFromDeployment(const std::string& worker_id, const std::string& deployment);
  void Record(ActiveJob& aj, v1::JobEvent event);
  // A store write that failed inside an operation: logged, counted, and kept (the first of the
  // operation) so that the public method that acknowledges the change can return it instead.
  void Refused(const absl::Status& status);
  absl::Status TakeStoreError();
  absl::Status store_error_;
  void SetState(ActiveJob& aj, v1::JobState state, const std::string& message = "");
  void Note(ActiveJob& aj, const std::string& message);
  int TakePort();
  // Hung ranks: RUNNING jobs with a rank whose progress stood still for rank_progress_timeout.
  void CheckProgress(Clock::time_point now);
  // Gauges of workers and jobs by state, from memory: active jobs from active_, ended ones from
  // ended_counts_ (read from the store once, at Start), so that no state change runs SQL for them.
  void UpdateCountMetrics();
  std::map<v1::JobState, int64_t> ended_counts_;

  JobStore& store_;
  const CoordinatorOptions opts_;
  ServerMetrics& metrics_;

  std::mutex mu_;
  std::condition_variable events_cv_;  // any job's history grew or a job ended
  std::map<std::string, WorkerEntry> workers_;
  std::map<std::string, ActiveJob> active_;  // by id: submission order
  std::map<std::string, v1::Deployment> deployments_;
  Clock::time_point started_ = Clock::now();
  int next_port_;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread ticker_;
};

}  // namespace gpt2
