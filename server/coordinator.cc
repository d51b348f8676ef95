#include "server/coordinator.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/train/spec.h"

namespace gpt2 {
namespace {

using google::protobuf::util::TimeUtil;

std::string StateName(v1::JobState s) {
  std::string name = v1::JobState_Name(s);
  return name.substr(std::string("JOB_STATE_").size());
}

std::string WorkerStateName(v1::WorkerState s) {
  std::string name = v1::WorkerState_Name(s);
  return name.substr(std::string("WORKER_STATE_").size());
}

void Log(const std::string& line) { std::cerr << "gpt2d: " << line << std::endl; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// WorkerSession

void WorkerSession::Send(v1::CoordinatorMessage m) {
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    queue_.push_back(std::move(m));
  }
  cv_.notify_all();
}

std::optional<v1::CoordinatorMessage> WorkerSession::Next(Clock::time_point deadline) {
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, deadline, [&] { return closed_ || !queue_.empty(); });
  if (closed_ || queue_.empty()) return std::nullopt;
  v1::CoordinatorMessage m = std::move(queue_.front());
  queue_.pop_front();
  return m;
}

void WorkerSession::Close() {
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  cv_.notify_all();
  if (abort_) abort_();
}

bool WorkerSession::closed() {
  std::lock_guard lock(mu_);
  return closed_;
}

// ---------------------------------------------------------------------------------------------
// Coordinator

Coordinator::Coordinator(JobStore& store, CoordinatorOptions options, ServerMetrics& metrics)
    : store_(store), opts_(std::move(options)), metrics_(metrics), next_port_(opts_.rendezvous_port_min) {}

Coordinator::~Coordinator() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  std::lock_guard lock(mu_);
  for (auto& [id, w] : workers_)
    if (w.session) w.session->Close();
}

absl::Status Coordinator::Start() {
  {
    std::lock_guard lock(mu_);
    // Workers come back by reconnecting; until then they are LOST.
    absl::StatusOr<std::vector<v1::Worker>> known = store_.ListWorkers();
    if (!known.ok()) return known.status();
    for (v1::Worker& w : *known) {
      WorkerEntry& e = workers_[w.id()];
      e.info = std::move(w);
      e.info.set_state(v1::WORKER_STATE_LOST);
    }
    absl::StatusOr<std::vector<v1::Deployment>> deployments = store_.ListDeployments();
    if (!deployments.ok()) return deployments.status();
    for (v1::Deployment& d : *deployments) deployments_[d.name()] = std::move(d);
    absl::StatusOr<std::map<v1::JobState, int64_t>> counts = store_.CountJobsByState();
    if (!counts.ok()) return counts.status();
    for (const auto& [state, n] : *counts)
      if (state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED)
        ended_counts_[state] = n;
    started_ = Clock::now();
    absl::StatusOr<std::vector<v1::Job>> jobs = store_.ActiveJobs();
    if (!jobs.ok()) return jobs.status();
    for (v1::Job& job : *jobs) {
      ActiveJob& aj = active_[job.id()];
      aj.job = std::move(job);
      absl::StatusOr<int64_t> eval_step = store_.LastEventStep(aj.job.id(), v1::JobEvent::kEval);
      absl::StatusOr<int64_t> checkpoint_step = store_.LastEventStep(aj.job.id(), v1::JobEvent::kCheckpoint);
      if (!eval_step.ok()) return eval_step.status();
      if (!checkpoint_step.ok()) return checkpoint_step.status();
      aj.last_eval_step = *eval_step;
      aj.last_checkpoint_step = *checkpoint_step;
      if (aj.job.state() == v1::JOB_STATE_RUNNING) {
        aj.adopting = true;
        aj.adopt_deadline = Clock::now() + opts_.recovery_grace;
        Note(aj, absl::StrCat("gpt2d restarted; waiting up to ", opts_.recovery_grace.count() / 1000,
                              "s for the job's workers to reconnect"));
      }
    }
    Log(absl::StrCat("recovered ", active_.size(), " unfinished jobs and ", workers_.size(), " known workers"));
    UpdateCountMetrics();
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

absl::StatusOr<v1::Job> Coordinator::Submit(const v1::TrainSpec& spec, const std::string& idempotency_key) {
  absl::StatusOr<TrainConfig> config = ResolveTrainSpec(spec);
  if (!config.ok()) return config.status();
  if (idempotency_key.size() > 256) return absl::InvalidArgumentError("idempotency_key: longer than 256 bytes");

  v1::Job job;
  *job.mutable_spec() = spec;
  job.set_state(v1::JOB_STATE_QUEUED);
  job.set_max_steps(config->max_steps);
  job.set_world_size(config->world_size);
  *job.mutable_created_at() = TimeUtil::GetCurrentTime();
  *job.mutable_updated_at() = job.created_at();

  std::lock_guard lock(mu_);
  bool existed = false;
  absl::StatusOr<v1::Job> created = store_.CreateJob(std::move(job), idempotency_key, &existed, [&](v1::Job& j) {
    if (j.spec().checkpoint().dir().empty()) {
      j.mutable_spec()->mutable_checkpoint()->set_dir(
          (std::filesystem::path(opts_.checkpoint_root) / j.id()).lexically_normal().string());
    }
  });
  if (!created.ok() || existed) return created;
  ActiveJob& aj = active_[created->id()];
  aj.job = *created;
  SetState(
      aj, v1::JOB_STATE_QUEUED,
      absl::StrCat("waiting for ", aj.job.world_size(), aj.job.world_size() == 1 ? " idle worker" : " idle workers"));
  Log(absl::StrCat(aj.job.id(), " submitted: ", config->name, ", ", config->max_steps, " steps on ", config->world_size,
                   " ranks"));
  const v1::Job result = aj.job;
  Schedule();
  return result;
}

absl::StatusOr<v1::Job> Coordinator::Cancel(const std::string& job_id) {
  std::lock_guard lock(mu_);
  auto it = active_.find(job_id);
  if (it == active_.end()) {
    absl::StatusOr<v1::Job> job = store_.GetJob(job_id);
    if (!job.ok()) return job.status();
    if (job->state() == v1::JOB_STATE_CANCELLED) return job;  // cancelling twice is fine
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " already ended (", StateName(job->state()), "); nothing to cancel"));
  }
  // On disk first: if the store refuses, nothing changes (the ranks keep running) and the caller
  // hears why.
  ActiveJob& aj = it->second;
  const v1::Job before = aj.job;
  (void)TakeStoreError();
  SetState(aj, v1::JOB_STATE_CANCELLED, "");
  if (absl::Status s = TakeStoreError(); !s.ok()) {
    aj.job = before;
    UpdateCountMetrics();
    return absl::Status(s.code(), absl::StrCat("job ", job_id, " not cancelled: ", s.message()));
  }
  CancelRanks(aj);
  const std::string id = aj.job.id();
  Finish(aj, v1::JOB_STATE_CANCELLED, "cancelled by request", /*recorded=*/true);
  return store_.GetJob(id);
}

void Coordinator::WaitForEvents(const std::string& job_id, int64_t after_sequence, Clock::time_point deadline) {
  std::unique_lock lock(mu_);
  events_cv_.wait_until(lock, deadline, [&] {
    auto it = active_.find(job_id);
    return it == active_.end() || it->second.job.last_sequence() > after_sequence;
  });
}

// ---- workers

absl::StatusOr<std::shared_ptr<WorkerSession>> Coordinator::Connect(const v1::Register& reg,
                                                                    std::function<void()> abort) {
  if (reg.worker_id().empty()) return absl::InvalidArgumentError("register.worker_id: required");
  if (reg.device().empty()) return absl::InvalidArgumentError("register.device: required (cpu, cuda:N)");
  if (reg.host().empty()) return absl::InvalidArgumentError("register.host: required (the rendezvous address)");
  auto session = std::make_shared<WorkerSession>(std::move(abort));
  std::lock_guard lock(mu_);
  WorkerEntry& w = workers_[reg.worker_id()];
  if (w.session) w.session->Close();  // a reconnect before the old stream was seen to break
  w.session = session;
  w.last_seen = Clock::now();
  w.info.set_id(reg.worker_id());
  w.info.set_host(reg.host());
  w.info.set_device(reg.device());
  w.info.set_memory_bytes(reg.memory_bytes());
  w.info.set_serve_address(reg.serve_address());
  *w.info.mutable_last_heartbeat() = TimeUtil::GetCurrentTime();

  v1::CoordinatorMessage hello;
  hello.mutable_registered()->set_worker_id(reg.worker_id());
  hello.mutable_registered()->set_heartbeat_interval_ms(static_cast<int32_t>(opts_.heartbeat_interval.count()));
  session->Send(std::move(hello));

  if (!reg.serving_deployment().empty()) {
    auto d = deployments_.find(reg.serving_deployment());
    const bool member = d != deployments_.end() &&
                        std::count(d->second.worker_ids().begin(), d->second.worker_ids().end(), reg.worker_id());
    if (member) {
      SetWorkerState(w, v1::WORKER_STATE_SERVING, "", 0, reg.serving_deployment());
      Log(absl::StrCat("worker ", reg.worker_id(), " re-attached to deployment ", reg.serving_deployment()));
      Schedule();
      return session;
    }
    v1::CoordinatorMessage stop;
    stop.mutable_stop_serving()->set_deployment(reg.serving_deployment());
    session->Send(std::move(stop));
  }
  for (auto& [name, d] : deployments_) RemoveFromDeployment(reg.worker_id(), name);  // it serves nothing now
  if (reg.running_job_id().empty()) {
    SetWorkerState(w, v1::WORKER_STATE_IDLE);
    Log(absl::StrCat("worker ", reg.worker_id(), " (", reg.device(), " on ", reg.host(), ") connected"));
  } else {
    // It is still running (or still reporting) a rank: re-attach it, or tell it to stop.
    auto it = active_.find(reg.running_job_id());
    ActiveJob* aj = it == active_.end() ? nullptr : &it->second;
    const bool current = aj && aj->job.state() == v1::JOB_STATE_RUNNING && aj->job.attempt() == reg.running_attempt() &&
                         reg.running_rank() >= 0 && reg.running_rank() < aj->job.worker_ids_size() &&
                         aj->job.worker_ids(reg.running_rank()) == reg.worker_id();
    SetWorkerState(w, v1::WORKER_STATE_TRAINING, reg.running_job_id(), reg.running_rank());
    if (current) {
      aj->running.insert(reg.worker_id());
      Log(absl::StrCat("worker ", reg.worker_id(), " re-attached to ", aj->job.id(), " rank ", reg.running_rank()));
      if (aj->adopting && static_cast<int>(aj->running.size() + aj->exited_ok.size()) >= aj->job.world_size()) {
        aj->adopting = false;
        Note(*aj, "all ranks re-attached after the gpt2d restart");
      }
    } else {
      // A rank of this job's failed attempt, still running after a reconnect: the next attempt
      // waits until it has stopped, as for the ranks gpt2d cancelled itself.
      if (aj && aj->job.attempt() == reg.running_attempt()) aj->running.insert(reg.worker_id());
      v1::CoordinatorMessage cancel;
      cancel.mutable_cancel()->set_job_id(reg.running_job_id());
      cancel.mutable_cancel()->set_attempt(reg.running_attempt());
      session->Send(std::move(cancel));
      Log(absl::StrCat("worker ", reg.worker_id(), " reconnected running a stale rank of ", reg.running_job_id(),
                       "; cancelling it"));
    }
  }
  Schedule();
  return session;
}

void Coordinator::Receive(const std::string& worker_id, const std::shared_ptr<WorkerSession>& session,
                          const v1::WorkerMessage& message) {
  std::lock_guard lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.session != session) return;  // replaced by a newer stream
  WorkerEntry& w = it->second;
  w.last_seen = Clock::now();
  *w.info.mutable_last_heartbeat() = TimeUtil::GetCurrentTime();
  if (message.has_heartbeat()) {
    const v1::RankProgress& p = message.heartbeat().rank();
    if (message.heartbeat().has_rank() && p.job_id() == w.info.job_id() && p.ticks() != w.rank_ticks) {
      w.rank_ticks = p.ticks();
      w.progressed_at = w.last_seen;
    }
    w.serving = message.heartbeat().serving();
    if (w.ejected && w.serving.ready() && w.last_seen - w.ejected_at >= opts_.replica_ejection) {
      w.ejected = false;
      w.relay_failures = 0;
      Log(absl::StrCat("worker ", worker_id, " serves again: back in routing"));
    }
  }
  if (!message.has_rank_event()) return;
  OnRankEvent(w, message.rank_event());
  if (message.rank_event().sequence() > 0) {
    v1::CoordinatorMessage ack;
    ack.mutable_ack()->set_sequence(message.rank_event().sequence());
    session->Send(std::move(ack));
  }
}

void Coordinator::Disconnect(const std::string& worker_id, const std::shared_ptr<WorkerSession>& session,
                             const std::string& reason) {
  std::lock_guard lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.session != session) return;
  LoseWorker(it->second, reason);
}

std::vector<v1::Worker> Coordinator::ListWorkers() {
  std::lock_guard lock(mu_);
  std::vector<v1::Worker> out;
  for (const auto& [id, w] : workers_) out.push_back(w.info);
  return out;
}

absl::StatusOr<v1::Worker> Coordinator::GetWorker(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) return absl::NotFoundError(absl::StrCat("no worker \"", id, "\""));
  return it->second.info;
}

// ---- internals (mu_ held)

void Coordinator::Tick() {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  for (auto& [id, w] : workers_) {
    if (w.session && now - w.last_seen > opts_.heartbeat_timeout) {
      LoseWorker(w, absl::StrCat("no heartbeat for ", opts_.heartbeat_timeout.count() / 1000.0, "s"));
    }
  }
  if (now - started_ > opts_.recovery_grace) {
    for (auto& [name, d] : deployments_) {
      std::vector<std::string> gone;
      for (const std::string& id : d.worker_ids()) {
        auto it = workers_.find(id);
        if (it == workers_.end() || !it->second.session) gone.push_back(id);
      }
      for (const std::string& id : gone) RemoveFromDeployment(id, name);
    }
  }
  std::vector<std::string> expired;
  for (auto& [id, aj] : active_)
    if (aj.adopting && now > aj.adopt_deadline) expired.push_back(id);
  for (const std::string& id : expired) {
    ActiveJob& aj = active_.at(id);
    aj.adopting = false;
    std::vector<std::string> missing;
    for (int r = 0; r < aj.job.worker_ids_size(); ++r)
      if (!aj.running.count(aj.job.worker_ids(r)) && !aj.exited_ok.count(r))
        missing.push_back(absl::StrCat("rank ", r, " (", aj.job.worker_ids(r), ")"));
    FailAttempt(aj, absl::StrCat("after the gpt2d restart, ", absl::StrJoin(missing, ", "), " did not reconnect"),
                /*retryable=*/true, /*counts_as_restart=*/false);
  }
  CheckProgress(now);
  Schedule();
}

void Coordinator::CheckProgress(Clock::time_point now) {
  if (opts_.rank_progress_timeout.count() <= 0) return;
  std::vector<std::pair<std::string, std::string>> hung;  // job id, reason
  for (auto& [id, aj] : active_) {
    if (aj.job.state() != v1::JOB_STATE_RUNNING || aj.adopting) continue;
    // One hung rank soon stalls the others in their next collective, so every stalled rank is
    // named: the rank that is truly stuck is the one that then does not stop when cancelled.
    std::vector<std::string> stalled;
    for (int r = 0; r < aj.job.worker_ids_size(); ++r) {
      const std::string& wid = aj.job.worker_ids(r);
      auto it = workers_.find(wid);
      if (it == workers_.end() || !aj.running.count(wid) || aj.exited_ok.count(r)) continue;
      const WorkerEntry& w = it->second;
      if (w.session && w.info.job_id() == id && now - w.progressed_at > opts_.rank_progress_timeout)
        stalled.push_back(absl::StrCat("rank ", r, " (", wid, ")"));
    }
    if (stalled.empty()) continue;
    hung.emplace_back(id, absl::StrCat(absl::StrJoin(stalled, ", "), " made no progress for ",
                                       opts_.rank_progress_timeout.count() / 1000.0,
                                       "s while heartbeating: a hung rank (a stuck device call, file system or "
                                       "collective)"));
  }
  for (const auto& [id, reason] : hung) {
    auto it = active_.find(id);
    if (it != active_.end()) FailAttempt(it->second, reason, /*retryable=*/true);
  }
}

void Coordinator::Schedule() {
  for (auto& [id, aj] : active_) {
    v1::Job& job = aj.job;
    if (job.state() != v1::JOB_STATE_QUEUED && job.state() != v1::JOB_STATE_RESTARTING) continue;
    if (!aj.running.empty()) continue;  // the previous attempt's ranks are still stopping
    std::vector<WorkerEntry*> idle;
    for (auto& [wid, w] : workers_)
      if (w.session && w.info.state() == v1::WORKER_STATE_IDLE) idle.push_back(&w);
    if (static_cast<int>(idle.size()) < job.world_size()) continue;  // later jobs may still fit
    idle.resize(job.world_size());

    absl::StatusOr<std::optional<v1::Checkpoint>> latest = store_.LatestCheckpoint(job.id());
    std::string resume;
    int64_t resume_step = 0;
    if (latest.ok() && latest->has_value()) {
      resume = (*latest)->path();
      resume_step = (*latest)->step();
    }
    aj.port = TakePort();
    job.set_attempt(job.attempt() + 1);
    job.clear_worker_ids();
    aj.exited_ok.clear();
    for (int r = 0; r < job.world_size(); ++r) {
      WorkerEntry& w = *idle[r];
      job.add_worker_ids(w.info.id());
      v1::CoordinatorMessage m;
      v1::TrainAssignment& a = *m.mutable_train();
      a.set_job_id(job.id());
      a.set_attempt(job.attempt());
      *a.mutable_spec() = job.spec();
      a.set_rank(r);
      a.set_world_size(job.world_size());
      a.set_master_addr(idle[0]->info.host());
      a.set_master_port(aj.port);
      a.set_resume_from(resume);
      w.session->Send(std::move(m));
      SetWorkerState(w, v1::WORKER_STATE_TRAINING, job.id(), r);
      aj.running.insert(w.info.id());
    }
    if (!job.has_started_at()) *job.mutable_started_at() = TimeUtil::GetCurrentTime();
    SetState(aj, v1::JOB_STATE_RUNNING,
             absl::StrCat("attempt ", job.attempt(), " on ", absl::StrJoin(job.worker_ids(), ", "), " (rendezvous ",
                          idle[0]->info.host(), ":", aj.port, ")",
                          resume.empty() ? "" : absl::StrCat(", resuming from step ", resume_step)));
    Log(absl::StrCat(job.id(), " attempt ", job.attempt(), " started on ", absl::StrJoin(job.worker_ids(), ", ")));
  }
  ScheduleDeployments();
}

void Coordinator::ScheduleDeployments() {
  for (auto& [name, d] : deployments_) {
    if (d.worker_ids_size() >= d.replicas()) continue;
    v1::ServeAssignment a;
    a.set_deployment(name);
    if (!d.follow_job().empty()) {
      absl::StatusOr<v1::Job> job = store_.GetJob(d.follow_job());
      absl::StatusOr<std::optional<v1::Checkpoint>> latest = store_.LatestCheckpoint(d.follow_job());
      if (!job.ok() || !latest.ok() || !latest->has_value()) continue;  // nothing to serve yet
      a.set_checkpoint((*latest)->path());
      a.set_follow_dir(job->spec().checkpoint().dir());
      a.set_job_id(d.follow_job());
    } else {
      a.set_checkpoint(d.checkpoint());
    }
    bool changed = false;
    for (auto& [wid, w] : workers_) {
      if (d.worker_ids_size() >= d.replicas()) break;
      if (!w.session || w.info.state() != v1::WORKER_STATE_IDLE) continue;
      v1::CoordinatorMessage m;
      *m.mutable_serve() = a;
      w.session->Send(std::move(m));
      w.serving.Clear();
      SetWorkerState(w, v1::WORKER_STATE_SERVING, "", 0, name);
      d.add_worker_ids(wid);
      changed = true;
      Log(absl::StrCat("worker ", wid, " serves deployment ", name, " from ", a.checkpoint()));
    }
    if (changed) {
      if (absl::Status s = store_.PutDeployment(d); !s.ok()) Refused(s);
    }
  }
}

void Coordinator::RemoveFromDeployment(const std::string& worker_id, const std::string& deployment) {
  auto it = deployments_.find(deployment);
  if (it == deployments_.end()) return;
  v1::Deployment& d = it->second;
  auto* ids = d.mutable_worker_ids();
  auto pos = std::find(ids->begin(), ids->end(), worker_id);
  if (pos == ids->end()) return;
  ids->erase(pos);
  if (absl::Status s = store_.PutDeployment(d); !s.ok()) Refused(s);
}

v1::Deployment Coordinator::WithStatus(const v1::Deployment& d) {
  v1::Deployment out = d;
  int ready = 0;
  int64_t step = 0;
  for (const std::string& id : d.worker_ids()) {
    auto it = workers_.find(id);
    if (it == workers_.end() || !it->second.session || !it->second.serving.ready()) continue;
    ++ready;
    step = std::max(step, it->second.serving.step());
  }
  out.set_ready_replicas(ready);
  out.set_serving_step(step);
  return out;
}

absl::StatusOr<v1::Deployment> Coordinator::CreateDeployment(v1::Deployment d) {
  static const std::regex kName("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?");
  if (d.name().empty()) d.set_name("default");
  if (!std::regex_match(d.name(), kName))
    return absl::InvalidArgumentError(
        absl::StrCat("deployment.name: \"", d.name(), "\" must be lowercase letters, digits and '-', at most 63"));
  if (d.checkpoint().empty() == d.follow_job().empty())
    return absl::InvalidArgumentError("deployment.checkpoint: set exactly one of checkpoint and follow_job");
  if (d.replicas() == 0) d.set_replicas(1);
  if (d.replicas() < 1 || d.replicas() > 64)
    return absl::InvalidArgumentError(absl::StrCat("deployment.replicas: ", d.replicas(), " is not in [1, 64]"));
  if (!d.follow_job().empty()) {
    if (absl::StatusOr<v1::Job> job = store_.GetJob(d.follow_job()); !job.ok())
      return absl::InvalidArgumentError(absl::StrCat("deployment.follow_job: ", job.status().message()));
  }
  d.clear_worker_ids();
  d.clear_ready_replicas();
  d.clear_serving_step();
  *d.mutable_created_at() = TimeUtil::GetCurrentTime();
  std::lock_guard lock(mu_);
  if (deployments_.count(d.name()))
    return absl::AlreadyExistsError(absl::StrCat("deployment \"", d.name(), "\" exists; delete it first"));
  if (absl::Status s = store_.PutDeployment(d); !s.ok()) return s;
  deployments_[d.name()] = d;
  Log(absl::StrCat("deployment ", d.name(), " created: ", d.replicas(), " replicas of ",
                   d.checkpoint().empty() ? "job " + d.follow_job() : d.checkpoint()));
  Schedule();
  return WithStatus(deployments_.at(d.name()));
}

std::vector<v1::Deployment> Coordinator::ListDeployments() {
  std::lock_guard lock(mu_);
  std::vector<v1::Deployment> out;
  for (const auto& [name, d] : deployments_) out.push_back(WithStatus(d));
  return out;
}

absl::StatusOr<v1::Deployment> Coordinator::GetDeployment(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = deployments_.find(name);
  if (it == deployments_.end()) return absl::NotFoundError(absl::StrCat("no deployment \"", name, "\""));
  return WithStatus(it->second);
}

absl::Status Coordinator::DeleteDeployment(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = deployments_.find(name);
  if (it == deployments_.end()) return absl::NotFoundError(absl::StrCat("no deployment \"", name, "\""));
  for (const std::string& id : it->second.worker_ids()) {
    auto w = workers_.find(id);
    if (w == workers_.end()) continue;
    if (w->second.session) {
      v1::CoordinatorMessage m;
      m.mutable_stop_serving()->set_deployment(name);
      w->second.session->Send(std::move(m));
      SetWorkerState(w->second, v1::WORKER_STATE_IDLE);
    }
    w->second.serving.Clear();
  }
  if (absl::Status s = store_.DeleteDeployment(name); !s.ok()) return s;
  deployments_.erase(it);
  Log(absl::StrCat("deployment ", name, " deleted"));
  Schedule();
  return absl::OkStatus();
}

absl::StatusOr<Coordinator::Route> Coordinator::PickReplica(const std::string& deployment,
                                                            const std::set<std::string>& exclude) {
  std::lock_guard lock(mu_);
  std::string name = deployment;
  if (name.empty()) {
    if (deployments_.count("default"))
      name = "default";
    else if (deployments_.size() == 1)
      name = deployments_.begin()->first;
    else
      return absl::NotFoundError("no deployment named: there is no \"default\" deployment (gpt2ctl deploy create)");
  }
  auto it = deployments_.find(name);
  if (it == deployments_.end()) return absl::NotFoundError(absl::StrCat("no deployment \"", name, "\""));
  WorkerEntry* best = nullptr;
  int64_t best_load = 0;
  for (const std::string& id : it->second.worker_ids()) {
    auto w = workers_.find(id);
    if (w == workers_.end() || !w->second.session || !w->second.serving.ready() ||
        w->second.info.serve_address().empty() || w->second.ejected || exclude.count(id))
      continue;
    const int64_t load = w->second.serving.active() + w->second.serving.queued() + w->second.inflight;
    if (!best || load < best_load) {
      best = &w->second;
      best_load = load;
    }
  }
  if (!best) {
    return absl::UnavailableError(absl::StrCat("deployment \"", name, "\" has no ready replica yet (",
                                               it->second.worker_ids_size(), " of ", it->second.replicas(),
                                               " assigned); retry shortly"));
  }
  ++best->inflight;
  return Route{best->info.id(), best->info.serve_address()};
}

void Coordinator::Release(const Route& route, bool failed) {
  std::lock_guard lock(mu_);
  auto it = workers_.find(route.worker_id);
  if (it == workers_.end()) return;
  WorkerEntry& w = it->second;
  if (w.inflight > 0) --w.inflight;
  if (!failed) {
    w.relay_failures = 0;
    return;
  }
  if (++w.relay_failures >= kFailuresToEject && !w.ejected) {
    w.ejected = true;
    w.ejected_at = Clock::now();
    Log(absl::StrCat("worker ", route.worker_id, " failed ", w.relay_failures,
                     " requests in a row: out of routing until it reports serving again"));
  }
}

void Coordinator::OnRankEvent(WorkerEntry& w, const v1::RankEvent& e) {
  auto it = active_.find(e.job_id());
  const bool current = it != active_.end() && e.attempt() == it->second.job.attempt() &&
                       e.rank() < it->second.job.worker_ids_size() &&
                       it->second.job.worker_ids(e.rank()) == w.info.id();
  if (e.has_exit()) {
    // The worker is free again whatever the rank belonged to.
    if (w.info.job_id() == e.job_id()) SetWorkerState(w, v1::WORKER_STATE_IDLE);
  }
  if (!current) {
    Schedule();
    return;  // a stale attempt's or an ended job's report
  }
  ActiveJob& aj = it->second;
  v1::Job& job = aj.job;
  const bool reporting = e.rank() == 0 && job.state() == v1::JOB_STATE_RUNNING;
  v1::JobEvent ev;
  switch (e.event_case()) {
    case v1::RankEvent::kStep: {
      // Repeats (a resent event, or steps a restarted group recomputes) are already recorded.
      if (!reporting || e.step().step() <= job.step()) return;
      job.set_step(e.step().step());
      *job.mutable_last_step() = e.step();
      *ev.mutable_step() = e.step();
      Record(aj, std::move(ev));
      metrics_.SetJobStep(job.id(),
                          {static_cast<double>(e.step().step()), static_cast<double>(job.max_steps()), e.step().loss(),
                           e.step().lr(), e.step().grad_norm(), e.step().tokens_per_second(), e.step().mfu()});
      metrics_.SetJobRestarts(job.id(), job.restarts());
      return;
    }
    case v1::RankEvent::kEval: {
      if (!reporting || e.eval().step() <= aj.last_eval_step) return;
      aj.last_eval_step = e.eval().step();
      if (e.eval().has_val_loss()) {
        if (!job.has_best_val_loss() || e.eval().val_loss() < job.best_val_loss())
          job.set_best_val_loss(e.eval().val_loss());
        metrics_.SetJobValLoss(job.id(), e.eval().val_loss());
      }
      if (e.eval().has_hellaswag_acc_norm()) metrics_.SetJobHellaSwag(job.id(), e.eval().hellaswag_acc_norm());
      *ev.mutable_eval() = e.eval();
      Record(aj, std::move(ev));
      return;
    }
    case v1::RankEvent::kCheckpoint: {
      if (e.rank() != 0) return;
      v1::Checkpoint c = e.checkpoint();
      const bool repeat = c.step() <= aj.last_checkpoint_step;
      aj.last_checkpoint_step = std::max(aj.last_checkpoint_step, c.step());
      c.set_job_id(job.id());
      if (!c.has_created_at()) *c.mutable_created_at() = TimeUtil::GetCurrentTime();
      if (absl::Status s = store_.PutCheckpoint(c); !s.ok()) Refused(s);
      if (e.retained_checkpoints_size() > 0) {
        std::vector<std::string> kept(e.retained_checkpoints().begin(), e.retained_checkpoints().end());
        if (absl::Status s = store_.RetainCheckpoints(job.id(), kept); !s.ok()) Refused(s);
      }
      if (repeat) return;  // stored again above (same step, same path); no second event
      *ev.mutable_checkpoint() = std::move(c);
      Record(aj, std::move(ev));
      return;
    }
    case v1::RankEvent::kExit: {
      aj.running.erase(w.info.id());
      const v1::RankExit& x = e.exit();
      if (job.state() == v1::JOB_STATE_RESTARTING) {
        Schedule();  // the old group is stopping; the last one out lets the new attempt start
        return;
      }
      if (x.ok()) {
        aj.exited_ok.insert(e.rank());
        if (static_cast<int>(aj.exited_ok.size()) == job.world_size()) Finish(aj, v1::JOB_STATE_SUCCEEDED, "");
      } else if (x.cancelled()) {
        // Only gpt2d cancels ranks, and it ends or restarts the job first; a rank that stops on its
        // own accord is a failure.
        FailAttempt(aj, absl::StrCat("rank ", e.rank(), " (", w.info.id(), ") stopped unexpectedly"), true);
      } else {
        const auto code = static_cast<absl::StatusCode>(x.code());
        const bool retryable = code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kNotFound;
        FailAttempt(aj, absl::StrCat("rank ", e.rank(), " (", w.info.id(), ") failed: ", x.error()), retryable);
      }
      Schedule();
      return;
    }
    default:
      return;
  }
}

void Coordinator::FailAttempt(ActiveJob& aj, const std::string& reason, bool retryable, bool counts_as_restart) {
  v1::Job& job = aj.job;
  if (job.state() != v1::JOB_STATE_RUNNING) return;
  CancelRanks(aj);
  aj.adopting = false;
  if (!retryable || (counts_as_restart && job.restarts() >= opts_.max_restarts)) {
    Finish(aj, v1::JOB_STATE_FAILED,
           retryable ? absl::StrCat(reason, " (gave up after ", job.restarts(), " restarts)") : reason);
    return;
  }
  if (counts_as_restart) job.set_restarts(job.restarts() + 1);
  metrics_.SetJobRestarts(job.id(), job.restarts());
  SetState(aj, v1::JOB_STATE_RESTARTING,
           absl::StrCat(reason, "; restarting the group from its last checkpoint",
                        counts_as_restart ? absl::StrCat(" (restart ", job.restarts(), " of ", opts_.max_restarts, ")")
                                          : std::string()));
  Log(absl::StrCat(job.id(), ": ", reason, "; restarting"));
}

void Coordinator::Finish(ActiveJob& aj, v1::JobState state, const std::string& reason, bool recorded) {
  v1::Job& job = aj.job;
  const std::string id = job.id();
  if (state == v1::JOB_STATE_FAILED) job.set_failure_reason(reason);
  *job.mutable_finished_at() = TimeUtil::GetCurrentTime();
  if (recorded) {
    if (!reason.empty()) Note(aj, reason);
  } else {
    SetState(aj, state, reason);
  }
  if (absl::Status s = store_.ThinStepEvents(id, job.max_steps(), 1000); !s.ok()) Refused(s);
  metrics_.ForgetJob(id);
  ++ended_counts_[state];
  Log(absl::StrCat(id, " ", StateName(state), reason.empty() ? "" : ": " + reason));
  active_.erase(id);
  UpdateCountMetrics();
  events_cv_.notify_all();
}

void Coordinator::CancelRanks(ActiveJob& aj) {
  for (const std::string& wid : aj.running) {
    auto it = workers_.find(wid);
    if (it == workers_.end() || !it->second.session) continue;
    v1::CoordinatorMessage m;
    m.mutable_cancel()->set_job_id(aj.job.id());
    m.mutable_cancel()->set_attempt(aj.job.attempt());
    it->second.session->Send(std::move(m));
  }
}

void Coordinator::LoseWorker(WorkerEntry& w, const std::string& reason) {
  if (w.session) {
    w.session->Close();
    w.session.reset();
  }
  const std::string job_id = w.info.job_id();
  const int rank = w.info.rank();
  const std::string deployment = w.info.deployment();
  w.serving.Clear();
  SetWorkerState(w, v1::WORKER_STATE_LOST);
  if (!deployment.empty()) RemoveFromDeployment(w.info.id(), deployment);
  Log(absl::StrCat("worker ", w.info.id(), " lost: ", reason));
  auto it = active_.find(job_id);
  if (it == active_.end() || !it->second.running.erase(w.info.id())) {
    Schedule();
    return;
  }
  FailAttempt(it->second, absl::StrCat("worker ", w.info.id(), " (rank ", rank, ") lost: ", reason), true);
  Schedule();
}

void Coordinator::SetWorkerState(WorkerEntry& w, v1::WorkerState state, const std::string& job_id, int rank,
                                 const std::string& deployment) {
  w.info.set_state(state);
  w.info.set_job_id(job_id);
  w.info.set_rank(rank);
  w.info.set_deployment(deployment);
  if (state == v1::WORKER_STATE_TRAINING) {  // a rank starts (or re-attaches): its clock starts now
    w.rank_ticks = -1;
    w.progressed_at = Clock::now();
  }
  if (absl::Status s = store_.PutWorker(w.info); !s.ok()) Refused(s);
  UpdateCountMetrics();
}

void Coordinator::Refused(const absl::Status& status) {
  Log(absl::StrCat("the job store refused a write: ", status.message()));
  metrics_.StoreWriteFailed();
  if (store_error_.ok()) store_error_ = status;
}

absl::Status Coordinator::TakeStoreError() {
  absl::Status s = std::move(store_error_);
  store_error_ = absl::OkStatus();
  return s;
}

void Coordinator::Record(ActiveJob& aj, v1::JobEvent event) {
  absl::StatusOr<v1::JobEvent> stored = store_.AppendEvent(&aj.job, std::move(event));
  if (!stored.ok()) Refused(stored.status());
  events_cv_.notify_all();
}

void Coordinator::SetState(ActiveJob& aj, v1::JobState state, const std::string& message) {
  aj.job.set_state(state);
  v1::JobEvent e;
  e.set_state(state);
  Record(aj, std::move(e));
  if (!message.empty()) Note(aj, message);
  UpdateCountMetrics();
}

void Coordinator::Note(ActiveJob& aj, const std::string& message) {
  v1::JobEvent e;
  e.set_message(message);
  Record(aj, std::move(e));
}

int Coordinator::TakePort() {
  std::set<int> used;
  for (const auto& [id, aj] : active_) used.insert(aj.port);
  const int span = opts_.rendezvous_port_max - opts_.rendezvous_port_min + 1;
  for (int i = 0; i < span; ++i) {
    const int port = next_port_;
    next_port_ = next_port_ >= opts_.rendezvous_port_max ? opts_.rendezvous_port_min : next_port_ + 1;
    if (!used.count(port)) return port;
  }
  return next_port_;  // more running jobs than ports: share one (configuration error, logged at start)
}

void Coordinator::UpdateCountMetrics() {
  std::map<std::string, int64_t> workers;
  for (v1::WorkerState s :
       {v1::WORKER_STATE_IDLE, v1::WORKER_STATE_TRAINING, v1::WORKER_STATE_SERVING, v1::WORKER_STATE_LOST})
    workers[WorkerStateName(s)] = 0;
  for (const auto& [id, w] : workers_) ++workers[WorkerStateName(w.info.state())];
  metrics_.SetWorkerCounts(workers);
  std::map<std::string, int64_t> jobs;
  for (int s = v1::JOB_STATE_QUEUED; s <= v1::JOB_STATE_CANCELLED; ++s) {
    const auto state = static_cast<v1::JobState>(s);
    auto ended = ended_counts_.find(state);
    jobs[StateName(state)] = ended == ended_counts_.end() ? 0 : ended->second;
  }
  for (const auto& [id, aj] : active_) ++jobs[StateName(aj.job.state())];
  metrics_.SetJobCounts(jobs);
}

}  // namespace gpt2
