#include "worker/agent/serving_host.h"

#include <chrono>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "worker/serve/serve_metrics.h"

namespace gpt2 {
namespace {

void Log(const std::string& line) { std::cerr << "gpt2-worker: " << line << std::endl; }

}  // namespace

// Shared with the load threads, so that one left behind at shutdown touches nothing freed.
struct ServingHost::State {
  std::mutex mu;
  std::string deployment, error;
  uint64_t generation = 0;  // bumped by every Serve and Stop: a load of an older one is discarded
  std::unique_ptr<Replica> replica;
};

ServingHost::ServingHost(std::string worker_id, std::string device, EngineOptions engine, ServeMetrics& metrics)
    : worker_id_(std::move(worker_id)),
      device_(std::move(device)),
      engine_(std::move(engine)),
      metrics_(metrics),
      state_(std::make_shared<State>()) {}

ServingHost::~ServingHost() {
  Stop("");
  std::vector<Task> tasks;
  {
    std::lock_guard lock(tasks_mu_);
    tasks.swap(tasks_);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (Task& t : tasks) {
    while (!*t.done && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (*t.done) {
      t.thread.join();
    } else {
      Log("a model load is still blocked; leaving it behind");
      t.thread.detach();
    }
  }
}

absl::StatusOr<Replica::Current> ServingHost::Now() {
  std::lock_guard lock(state_->mu);
  if (!state_->replica) {
    return absl::UnavailableError(state_->deployment.empty()
                                      ? absl::StrCat("worker ", worker_id_, " serves no deployment")
                                      : absl::StrCat("worker ", worker_id_, " is still loading ", state_->deployment));
  }
  return state_->replica->current();
}

std::string ServingHost::deployment() {
  std::lock_guard lock(state_->mu);
  return state_->deployment;
}

void ServingHost::FillHeartbeat(::gpt2d::v1::Heartbeat& hb) {
  std::lock_guard lock(state_->mu);
  if (state_->deployment.empty()) return;
  ::gpt2d::v1::ServeStatus& s = *hb.mutable_serving();
  s.set_deployment(state_->deployment);
  s.set_ready(state_->replica != nullptr);
  s.set_error(state_->error);
  if (state_->replica) {
    const Replica::Current cur = state_->replica->current();
    const EngineStats st = cur.engine->stats();
    s.set_step(cur.version.step);
    s.set_active(st.active);
    s.set_queued(st.queued);
  }
}

void ServingHost::Serve(const ::gpt2d::v1::ServeAssignment& a) {
  Log(absl::StrCat("serving ", a.deployment(), ": ", a.checkpoint(),
                   a.follow_dir().empty() ? "" : absl::StrCat(", following ", a.follow_dir())));
  uint64_t generation = 0;
  std::unique_ptr<Replica> old;
  {
    std::lock_guard lock(state_->mu);
    generation = ++state_->generation;
    state_->deployment = a.deployment();
    state_->error.clear();
    old = std::move(state_->replica);
  }
  metrics_.NotServing();
  Retire(std::move(old));
  EngineOptions eo = engine_;
  eo.device = device_;
  eo.on_fault = metrics_.FaultHandler(Log);
  eo.on_admit = metrics_.AdmitHandler();
  Spawn([state = state_, generation, a, eo, &metrics = metrics_] {
    absl::StatusOr<std::unique_ptr<Replica>> r = Replica::Start(a.checkpoint(), a.job_id(), eo);
    std::lock_guard lock(state->mu);
    if (state->generation != generation) {
      Log(absl::StrCat("discarded the load of ", a.checkpoint(), " for ", a.deployment(), ": superseded"));
      return;  // `r` goes with this thread
    }
    if (!r.ok()) {
      state->error = std::string(r.status().message());
      Log(absl::StrCat("cannot serve ", a.deployment(), ": ", state->error));
      return;
    }
    if (!a.follow_dir().empty()) (*r)->FollowReported(a.follow_dir(), metrics);
    state->replica = *std::move(r);
    metrics.Serving(a.deployment());
    Log(absl::StrCat("serving ", a.deployment(), " from ", state->replica->current().version.path));
  });
}

void ServingHost::Stop(const std::string& deployment) {
  std::unique_ptr<Replica> old;
  {
    std::lock_guard lock(state_->mu);
    if (!deployment.empty() && deployment != state_->deployment) return;
    if (!state_->deployment.empty()) Log(absl::StrCat("stopped serving ", state_->deployment));
    ++state_->generation;
    state_->deployment.clear();
    state_->error.clear();
    old = std::move(state_->replica);
  }
  metrics_.NotServing();
  Retire(std::move(old));
}

void ServingHost::Retire(std::unique_ptr<Replica> replica) {
  // Its destructor waits for the follower, which may be in the middle of a hot-load.
  if (replica) Spawn([r = std::shared_ptr<Replica>(std::move(replica))]() mutable { r.reset(); });
}

template <typename F>
void ServingHost::Spawn(F fn) {
  std::lock_guard lock(tasks_mu_);
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    if (*it->done) {
      it->thread.join();
      it = tasks_.erase(it);
    } else {
      ++it;
    }
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  tasks_.push_back({std::thread([fn = std::move(fn), done]() mutable {
                      fn();
                      *done = true;
                    }),
                    done});
}

}  // namespace gpt2
