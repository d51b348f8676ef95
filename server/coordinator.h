// The coordinator: gpt2d's one owner of job, worker and deployment state, in three parts behind one
// lock: the worker registry (worker_registry.h: sessions, heartbeats, states), the job scheduler
// (job_scheduler.h: gang scheduling, restarts, recovery, hung ranks) and the deployments
// (deployments.h: placement and routing). This class holds the lock, runs the ticker (heartbeat
// timeouts, adoption deadlines, hung ranks) and does what touches several parts: a worker that
// connects or is lost, and scheduling after every change.
//
// Every public method is thread-safe. State changes are written to the JobStore before they are
// acknowledged: a refused write fails the operation with the store's status and changes nothing;
// refusals inside the coordinator's own work are logged and counted (store_refusals.h). The
// in-memory state is a cache of active jobs, connected workers and deployments. Requests are
// validated at the service edge (services.cc); what reaches the coordinator is well formed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gpt2d/v1/cluster.pb.h"
#include "gpt2d/v1/worker.pb.h"
#include "server/deployments.h"
#include "server/job_scheduler.h"
#include "server/metrics.h"
#include "server/store.h"
#include "server/store_refusals.h"
#include "server/worker_registry.h"

namespace gpt2 {

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
  // A replica that failed Deployments::kFailuresToEject requests in a row stays out of routing at
  // least this long.
  std::chrono::milliseconds replica_ejection{5000};
  // c10d rendezvous (TCPStore) ports handed to rank 0, one per running job.
  int rendezvous_port_min = 29500, rendezvous_port_max = 29999;
};

class Coordinator;

// A request's hold on the replica picked for it: counted against that replica until released,
// on every path (the destructor releases it as a success when nobody said otherwise).
class ReplicaLease {
 public:
  ReplicaLease(ReplicaLease&& other) noexcept : coordinator_(other.coordinator_), route_(std::move(other.route_)) {
    other.coordinator_ = nullptr;
  }
  ReplicaLease& operator=(ReplicaLease&&) = delete;
  ~ReplicaLease() { Release(false); }
  const ReplicaRoute& route() const { return route_; }
  // `failed`: the replica failed the request (UNAVAILABLE from it, not the caller leaving). After
  // Deployments::kFailuresToEject failures in a row it is taken out of routing, until a heartbeat
  // at least options.replica_ejection later says it serves again; a success resets the count.
  // Only the first call counts.
  void Release(bool failed);

 private:
  friend class Coordinator;
  ReplicaLease(Coordinator* coordinator, ReplicaRoute route) : coordinator_(coordinator), route_(std::move(route)) {}
  Coordinator* coordinator_;
  ReplicaRoute route_;
};

class Coordinator {
 public:
  Coordinator(JobStore& store, CoordinatorOptions options, ServerMetrics& metrics);
  ~Coordinator();

  // Loads workers (LOST until they reconnect), deployments and the jobs that had not finished,
  // then starts the ticker.
  absl::Status Start();

  // ---- Jobs (JobService)
  absl::StatusOr<v1::Job> Submit(const v1::TrainSpec& spec, const JobShape& shape, const std::string& idempotency_key);
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // Returns once job `id` has an event after `after_sequence`, has ended, or at the deadline.
  void WaitForEvents(const std::string& job_id, int64_t after_sequence, Clock::time_point deadline);

  // ---- Workers (WorkerService, ClusterService)
  // A worker's stream opened with `reg` (its ids checked by the service). `abort` cancels the
  // stream (used when the worker is lost). The store's refusal refuses the registration.
  absl::StatusOr<std::shared_ptr<WorkerSession>> Connect(const v1::Register& reg, std::function<void()> abort);
  void Receive(const std::string& worker_id, const std::shared_ptr<WorkerSession>& session,
               const v1::WorkerMessage& message);
  void Disconnect(const std::string& worker_id, const std::shared_ptr<WorkerSession>& session,
                  const std::string& reason);
  std::vector<v1::Worker> ListWorkers();
  absl::StatusOr<v1::Worker> GetWorker(const std::string& id);

  // ---- Deployments (DeploymentService) and routing (GenerateService)
  // `d` is well formed (name, one source, replicas); ALREADY_EXISTS for a taken name.
  absl::StatusOr<v1::Deployment> CreateDeployment(v1::Deployment d);
  std::vector<v1::Deployment> ListDeployments();
  absl::StatusOr<v1::Deployment> GetDeployment(const std::string& name);
  absl::Status DeleteDeployment(const std::string& name);
  // The least-loaded ready replica of `deployment` (empty: "default", or the only deployment),
  // not one of `exclude` (workers a retried request already failed on) nor one taken out of
  // routing. NOT_FOUND for no such deployment, UNAVAILABLE when none of its replicas is ready.
  absl::StatusOr<ReplicaLease> PickReplica(const std::string& deployment, const std::set<std::string>& exclude = {});

 private:
  friend class ReplicaLease;
  void Release(const ReplicaRoute& route, bool failed);
  void Tick();
  // Jobs first, then deployments, onto the idle workers.
  void Schedule();
  void LoseWorker(WorkerEntry& worker, const std::string& reason);

  JobStore& store_;
  const CoordinatorOptions opts_;
  std::mutex mu_;
  std::condition_variable events_cv_;  // any job's history grew or a job ended
  StoreRefusals refusals_;
  WorkerRegistry workers_;
  Deployments deployments_;
  JobScheduler jobs_;
  Clock::time_point started_ = Clock::now();

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread ticker_;
};

}  // namespace gpt2
