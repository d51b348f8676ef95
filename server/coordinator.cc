#include "server/coordinator.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"

namespace gpt2 {

void ReplicaLease::Release(bool failed) {
  if (coordinator_ == nullptr) return;
  coordinator_->Release(route_, failed);
  coordinator_ = nullptr;
}

Coordinator::Coordinator(JobStore& store, CoordinatorOptions options, ServerMetrics& metrics)
    : store_(store),
      opts_(std::move(options)),
      refusals_(metrics),
      workers_(store, metrics, refusals_),
      deployments_(store, workers_, refusals_),
      jobs_(store, opts_, metrics, workers_, refusals_, events_cv_) {}

Coordinator::~Coordinator() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
}

absl::Status Coordinator::Start() {
  {
    std::lock_guard lock(mu_);
    if (absl::Status s = workers_.Load(); !s.ok()) return s;
    if (absl::Status s = deployments_.Load(); !s.ok()) return s;
    started_ = Clock::now();
    if (absl::Status s = jobs_.Load(); !s.ok()) return s;
    CoordinatorLog(absl::StrCat("recovered ", workers_.List().size(), " known workers and the unfinished jobs"));
  }
  ticker_ = std::thread([this] {
    std::unique_lock lock(stop_mu_);
    while (!stop_cv_.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping_; })) {
      lock.unlock();
      Tick();
      lock.lock();
    }
  });
  return absl::OkStatus();
}

// ---- jobs

absl::StatusOr<v1::Job> Coordinator::Submit(const v1::TrainSpec& spec, const JobShape& shape,
                                            const std::string& idempotency_key) {
  std::lock_guard lock(mu_);
  absl::StatusOr<v1::Job> job = jobs_.Submit(spec, shape, idempotency_key);
  Schedule();
  return job;
}

absl::StatusOr<v1::Job> Coordinator::Cancel(const std::string& job_id) {
  std::lock_guard lock(mu_);
  absl::StatusOr<v1::Job> job = jobs_.Cancel(job_id);
  Schedule();
  return job;
}

void Coordinator::WaitForEvents(const std::string& job_id, int64_t after_sequence, Clock::time_point deadline) {
  std::unique_lock lock(mu_);
  events_cv_.wait_until(lock, deadline, [&] { return jobs_.HasNews(job_id, after_sequence); });
}

// ---- workers

absl::StatusOr<std::shared_ptr<WorkerSession>> Coordinator::Connect(const v1::Register& reg,
                                                                    std::function<void()> abort) {
  auto session = std::make_shared<WorkerSession>(std::move(abort));
  std::lock_guard lock(mu_);
  absl::StatusOr<WorkerEntry*> attached = workers_.Attach(reg, session);
  if (!attached.ok()) return attached.status();
  WorkerEntry& w = **attached;

  v1::CoordinatorMessage hello;
  hello.mutable_registered()->set_worker_id(reg.worker_id());
  hello.mutable_registered()->set_heartbeat_interval_ms(static_cast<int32_t>(opts_.heartbeat_interval.count()));
  session->Send(std::move(hello));

  if (!reg.serving_deployment().empty() && deployments_.Reattach(w, reg.serving_deployment())) {
    Schedule();
    return session;
  }
  deployments_.Remove(reg.worker_id());  // it serves nothing now
  if (reg.running_job_id().empty()) {
    workers_.SetState(w, v1::WORKER_STATE_IDLE);
    CoordinatorLog(absl::StrCat("worker ", reg.worker_id(), " (", reg.device(), " on ", reg.host(), ") connected"));
  } else {
    jobs_.Reattach(w, reg);  // it still runs (or still reports) a rank
  }
  Schedule();
  return session;
}

void Coordinator::Receive(const std::string& worker_id, const std::shared_ptr<WorkerSession>& session,
                          const v1::WorkerMessage& message) {
  std::lock_guard lock(mu_);
  WorkerEntry* w = workers_.Current(worker_id, session);
  if (w == nullptr) return;  // replaced by a newer stream
  workers_.Heard(*w, message, opts_.replica_ejection);
  if (!message.has_rank_event()) return;
  jobs_.OnRankEvent(*w, message.rank_event());
  if (message.rank_event().sequence() > 0) {
    v1::CoordinatorMessage ack;
    ack.mutable_ack()->set_sequence(message.rank_event().sequence());
    session->Send(std::move(ack));
  }
  // Only an exit frees a worker or ends an attempt; steps and evals change nothing to schedule
  // (and a new checkpoint reaches a following deployment at the next tick).
  if (message.rank_event().has_exit()) Schedule();
}

void Coordinator::Disconnect(const std::string& worker_id, const std::shared_ptr<WorkerSession>& session,
                             const std::string& reason) {
  std::lock_guard lock(mu_);
  WorkerEntry* w = workers_.Current(worker_id, session);
  if (w == nullptr) return;
  LoseWorker(*w, reason);
  Schedule();
}

std::vector<v1::Worker> Coordinator::ListWorkers() {
  std::lock_guard lock(mu_);
  return workers_.List();
}

absl::StatusOr<v1::Worker> Coordinator::GetWorker(const std::string& id) {
  std::lock_guard lock(mu_);
  WorkerEntry* w = workers_.Find(id);
  if (w == nullptr) return absl::NotFoundError(absl::StrCat("no worker \"", id, "\""));
  return w->info;
}

// ---- deployments and routing

absl::StatusOr<v1::Deployment> Coordinator::CreateDeployment(v1::Deployment d) {
  std::lock_guard lock(mu_);
  absl::StatusOr<v1::Deployment> created = deployments_.Create(std::move(d));
  if (!created.ok()) return created;
  Schedule();
  return deployments_.Get(created->name());
}

std::vector<v1::Deployment> Coordinator::ListDeployments() {
  std::lock_guard lock(mu_);
  return deployments_.List();
}

absl::StatusOr<v1::Deployment> Coordinator::GetDeployment(const std::string& name) {
  std::lock_guard lock(mu_);
  return deployments_.Get(name);
}

absl::Status Coordinator::DeleteDeployment(const std::string& name) {
  std::lock_guard lock(mu_);
  absl::Status s = deployments_.Delete(name);
  if (s.ok()) Schedule();
  return s;
}

absl::StatusOr<ReplicaLease> Coordinator::PickReplica(const std::string& deployment,
                                                      const std::set<std::string>& exclude) {
  std::lock_guard lock(mu_);
  absl::StatusOr<ReplicaRoute> route = deployments_.Pick(deployment, exclude);
  if (!route.ok()) return route.status();
  return ReplicaLease(this, *std::move(route));
}

void Coordinator::Release(const ReplicaRoute& route, bool failed) {
  std::lock_guard lock(mu_);
  deployments_.Release(route, failed);
}

// ---- internals (mu_ held)

void Coordinator::Tick() {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  for (WorkerEntry* w : workers_.Silent(now, opts_.heartbeat_timeout))
    LoseWorker(*w, absl::StrCat("no heartbeat for ", opts_.heartbeat_timeout.count() / 1000.0, "s"));
  if (now - started_ > opts_.recovery_grace) deployments_.DropDisconnected();
  jobs_.Tick(now);
  Schedule();
}

void Coordinator::Schedule() {
  jobs_.Schedule();
  deployments_.Place();
}

void Coordinator::LoseWorker(WorkerEntry& w, const std::string& reason) {
  const std::string job_id = w.info.job_id();
  const int rank = w.info.rank();
  const std::string deployment = w.info.deployment();
  workers_.Detach(w);
  if (!deployment.empty()) deployments_.Remove(w.info.id(), deployment);
  CoordinatorLog(absl::StrCat("worker ", w.info.id(), " lost: ", reason));
  jobs_.WorkerLost(w.info.id(), job_id, rank, reason);
}

}  // namespace gpt2
