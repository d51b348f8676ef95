#include "server/worker_registry.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/states.h"

namespace gpt2 {

using google::protobuf::util::TimeUtil;

// ---- WorkerSession

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

// ---- WorkerRegistry

WorkerRegistry::~WorkerRegistry() {
  for (auto& [id, w] : workers_)
    if (w.session) w.session->Close();
}

absl::Status WorkerRegistry::Load() {
  absl::StatusOr<std::vector<v1::Worker>> known = store_.ListWorkers();
  if (!known.ok()) return known.status();
  for (v1::Worker& w : *known) {
    WorkerEntry& e = workers_[w.id()];
    e.info = std::move(w);
    e.info.set_state(v1::WORKER_STATE_LOST);
  }
  UpdateMetrics();
  return absl::OkStatus();
}

absl::StatusOr<WorkerEntry*> WorkerRegistry::Attach(const v1::Register& reg, std::shared_ptr<WorkerSession> session) {
  auto it = workers_.find(reg.worker_id());
  v1::Worker info = it == workers_.end() ? v1::Worker() : it->second.info;
  info.set_id(reg.worker_id());
  info.set_host(reg.host());
  info.set_device(reg.device());
  info.set_memory_bytes(reg.memory_bytes());
  info.set_serve_address(reg.serve_address());
  *info.mutable_last_heartbeat() = TimeUtil::GetCurrentTime();
  if (absl::Status s = store_.PutWorker(info); !s.ok())
    return absl::Status(s.code(), absl::StrCat("worker ", reg.worker_id(), " not registered: ", s.message()));
  WorkerEntry& w = workers_[reg.worker_id()];
  if (w.session) w.session->Close();  // a reconnect before the old stream was seen to break
  w.session = std::move(session);
  w.last_seen = Clock::now();
  w.info = std::move(info);
  return &w;
}

WorkerEntry* WorkerRegistry::Current(const std::string& id, const std::shared_ptr<WorkerSession>& session) {
  auto it = workers_.find(id);
  return it == workers_.end() || it->second.session != session ? nullptr : &it->second;
}

WorkerEntry* WorkerRegistry::Find(const std::string& id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

void WorkerRegistry::Heard(WorkerEntry& w, const v1::WorkerMessage& message, std::chrono::milliseconds ejection) {
  w.last_seen = Clock::now();
  *w.info.mutable_last_heartbeat() = TimeUtil::GetCurrentTime();
  if (!message.has_heartbeat()) return;
  const v1::Heartbeat& hb = message.heartbeat();
  if (hb.has_rank() && hb.rank().job_id() == w.info.job_id()) {
    w.progressed_at = w.last_seen - std::chrono::milliseconds(std::max<int64_t>(0, hb.rank().idle_ms()));
  }
  w.serving = hb.serving();
  if (w.ejected && w.serving.ready() && w.last_seen - w.ejected_at >= ejection) {
    w.ejected = false;
    w.relay_failures = 0;
    CoordinatorLog(absl::StrCat("worker ", w.info.id(), " serves again: back in routing"));
  }
}

void WorkerRegistry::Detach(WorkerEntry& w) {
  if (w.session) {
    w.session->Close();
    w.session.reset();
  }
  w.serving.Clear();
  SetState(w, v1::WORKER_STATE_LOST);
}

std::vector<WorkerEntry*> WorkerRegistry::Silent(Clock::time_point now, std::chrono::milliseconds timeout) {
  std::vector<WorkerEntry*> out;
  for (auto& [id, w] : workers_)
    if (w.session && now - w.last_seen > timeout) out.push_back(&w);
  return out;
}

std::vector<WorkerEntry*> WorkerRegistry::Idle() {
  std::vector<WorkerEntry*> out;
  for (auto& [id, w] : workers_)
    if (w.session && w.info.state() == v1::WORKER_STATE_IDLE) out.push_back(&w);
  return out;
}

std::vector<v1::Worker> WorkerRegistry::List() const {
  std::vector<v1::Worker> out;
  for (const auto& [id, w] : workers_) out.push_back(w.info);
  return out;
}

void WorkerRegistry::SetState(WorkerEntry& w, v1::WorkerState state, const std::string& job_id, int rank,
                              const std::string& deployment) {
  w.info.set_state(state);
  w.info.set_job_id(job_id);
  w.info.set_rank(rank);
  w.info.set_deployment(deployment);
  if (state == v1::WORKER_STATE_TRAINING) w.progressed_at = Clock::now();  // a rank starts or re-attaches
  if (absl::Status s = store_.PutWorker(w.info); !s.ok()) refusals_.Refused(s);
  UpdateMetrics();
}

void WorkerRegistry::UpdateMetrics() {
  std::map<std::string, int64_t> counts;
  for (v1::WorkerState s :
       {v1::WORKER_STATE_IDLE, v1::WORKER_STATE_TRAINING, v1::WORKER_STATE_SERVING, v1::WORKER_STATE_LOST})
    counts[WorkerStateName(s)] = 0;
  for (const auto& [id, w] : workers_) ++counts[WorkerStateName(w.info.state())];
  metrics_.SetWorkerCounts(counts);
}

}  // namespace gpt2
