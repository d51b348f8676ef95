#include "server/deployments.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gpt2 {

using google::protobuf::util::TimeUtil;

absl::Status Deployments::Load() {
  absl::StatusOr<std::vector<v1::Deployment>> deployments = store_.ListDeployments();
  if (!deployments.ok()) return deployments.status();
  for (v1::Deployment& d : *deployments) deployments_[d.name()] = std::move(d);
  return absl::OkStatus();
}

absl::StatusOr<v1::Deployment> Deployments::Create(v1::Deployment d) {
  if (deployments_.count(d.name()))
    return absl::AlreadyExistsError(absl::StrCat("deployment \"", d.name(), "\" exists; delete it first"));
  if (!d.follow_job().empty()) {
    if (absl::StatusOr<v1::Job> job = store_.GetJob(d.follow_job()); !job.ok())
      return absl::InvalidArgumentError(absl::StrCat("deployment.follow_job: ", job.status().message()));
  }
  d.clear_worker_ids();
  d.clear_ready_replicas();
  d.clear_serving_step();
  *d.mutable_created_at() = TimeUtil::GetCurrentTime();
  if (absl::Status s = store_.PutDeployment(d); !s.ok()) return s;
  deployments_[d.name()] = d;
  CoordinatorLog(absl::StrCat("deployment ", d.name(), " created: ", d.replicas(), " replicas of ",
                              d.checkpoint().empty() ? "job " + d.follow_job() : d.checkpoint()));
  return WithStatus(d);
}

std::vector<v1::Deployment> Deployments::List() {
  std::vector<v1::Deployment> out;
  for (const auto& [name, d] : deployments_) out.push_back(WithStatus(d));
  return out;
}

absl::StatusOr<v1::Deployment> Deployments::Get(const std::string& name) {
  auto it = deployments_.find(name);
  if (it == deployments_.end()) return absl::NotFoundError(absl::StrCat("no deployment \"", name, "\""));
  return WithStatus(it->second);
}

absl::Status Deployments::Delete(const std::string& name) {
  auto it = deployments_.find(name);
  if (it == deployments_.end()) return absl::NotFoundError(absl::StrCat("no deployment \"", name, "\""));
  if (absl::Status s = store_.DeleteDeployment(name); !s.ok()) return s;
  for (const std::string& id : it->second.worker_ids()) {
    WorkerEntry* w = workers_.Find(id);
    if (w == nullptr) continue;
    if (w->connected()) {
      v1::CoordinatorMessage m;
      m.mutable_stop_serving()->set_deployment(name);
      w->Send(std::move(m));
      workers_.SetState(*w, v1::WORKER_STATE_IDLE);
    }
    w->serving.Clear();
  }
  deployments_.erase(it);
  CoordinatorLog(absl::StrCat("deployment ", name, " deleted"));
  return absl::OkStatus();
}

bool Deployments::Reattach(WorkerEntry& w, const std::string& deployment) {
  auto d = deployments_.find(deployment);
  const bool member = d != deployments_.end() &&
                      std::count(d->second.worker_ids().begin(), d->second.worker_ids().end(), w.info.id());
  if (member) {
    workers_.SetState(w, v1::WORKER_STATE_SERVING, "", 0, deployment);
    CoordinatorLog(absl::StrCat("worker ", w.info.id(), " re-attached to deployment ", deployment));
    return true;
  }
  v1::CoordinatorMessage stop;
  stop.mutable_stop_serving()->set_deployment(deployment);
  w.Send(std::move(stop));
  return false;
}

void Deployments::Remove(const std::string& worker_id, const std::string& deployment) {
  for (auto& [name, d] : deployments_) {
    if (!deployment.empty() && name != deployment) continue;
    auto* ids = d.mutable_worker_ids();
    auto pos = std::find(ids->begin(), ids->end(), worker_id);
    if (pos == ids->end()) continue;
    ids->erase(pos);
    Put(d);
  }
}

void Deployments::DropDisconnected() {
  for (auto& [name, d] : deployments_) {
    std::vector<std::string> gone;
    for (const std::string& id : d.worker_ids()) {
      WorkerEntry* w = workers_.Find(id);
      if (w == nullptr || !w->connected()) gone.push_back(id);
    }
    for (const std::string& id : gone) Remove(id, name);
  }
}

void Deployments::Place() {
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
    for (WorkerEntry* w : workers_.Idle()) {
      if (d.worker_ids_size() >= d.replicas()) break;
      v1::CoordinatorMessage m;
      *m.mutable_serve() = a;
      w->Send(std::move(m));
      w->serving.Clear();
      workers_.SetState(*w, v1::WORKER_STATE_SERVING, "", 0, name);
      d.add_worker_ids(w->info.id());
      changed = true;
      CoordinatorLog(absl::StrCat("worker ", w->info.id(), " serves deployment ", name, " from ", a.checkpoint()));
    }
    if (changed) Put(d);
  }
}

absl::StatusOr<ReplicaRoute> Deployments::Pick(const std::string& deployment, const std::set<std::string>& exclude) {
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
    WorkerEntry* w = workers_.Find(id);
    if (w == nullptr || !w->connected() || !w->serving.ready() || w->info.serve_address().empty() || w->ejected ||
        exclude.count(id))
      continue;
    const int64_t load = w->serving.active() + w->serving.queued() + w->inflight;
    if (!best || load < best_load) {
      best = w;
      best_load = load;
    }
  }
  if (!best) {
    return absl::UnavailableError(absl::StrCat("deployment \"", name, "\" has no ready replica yet (",
                                               it->second.worker_ids_size(), " of ", it->second.replicas(),
                                               " assigned); retry shortly"));
  }
  ++best->inflight;
  return ReplicaRoute{best->info.id(), best->info.serve_address()};
}

void Deployments::Release(const ReplicaRoute& route, bool failed) {
  WorkerEntry* w = workers_.Find(route.worker_id);
  if (w == nullptr) return;
  if (w->inflight > 0) --w->inflight;
  if (!failed) {
    w->relay_failures = 0;
    return;
  }
  if (++w->relay_failures >= kFailuresToEject && !w->ejected) {
    w->ejected = true;
    w->ejected_at = Clock::now();
    CoordinatorLog(absl::StrCat("worker ", route.worker_id, " failed ", w->relay_failures,
                                " requests in a row: out of routing until it reports serving again"));
  }
}

v1::Deployment Deployments::WithStatus(const v1::Deployment& d) {
  v1::Deployment out = d;
  int ready = 0;
  int64_t step = 0;
  for (const std::string& id : d.worker_ids()) {
    WorkerEntry* w = workers_.Find(id);
    if (w == nullptr || !w->connected() || !w->serving.ready()) continue;
    ++ready;
    step = std::max(step, w->serving.step());
  }
  out.set_ready_replicas(ready);
  out.set_serving_step(step);
  return out;
}

void Deployments::Put(const v1::Deployment& d) {
  if (absl::Status s = store_.PutDeployment(d); !s.ok()) refusals_.Refused(s);
}

}  // namespace gpt2
