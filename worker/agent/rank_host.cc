#include "worker/agent/rank_host.h"

#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"

namespace gpt2 {
namespace {

namespace v1 = ::gpt2d::v1;
using Clock = std::chrono::steady_clock;

void Log(const std::string& line) { std::cerr << "gpt2-worker: " << line << std::endl; }

// Turns a rank's training events into RankEvents (rank 0 reports steps and evals for the job;
// every rank updates its own metrics).
class EventForwarder final : public TrainObserver {
 public:
  EventForwarder(const RankTask& task, Outbox& outbox, WorkerMetrics& metrics)
      : job_(task.job_id), attempt_(task.attempt), rank_(task.rank), outbox_(outbox), metrics_(metrics) {}
  void OnStep(const StepMetrics& m) override {
    metrics_.OnStep(job_, rank_, m);
    if (rank_ != 0) return;
    v1::WorkerMessage msg;
    v1::StepMetrics& s = *Event(msg).mutable_step();
    s.set_step(m.step);
    s.set_loss(m.loss);
    s.set_lr(m.lr);
    s.set_grad_norm(m.grad_norm);
    s.set_step_seconds(m.step_seconds);
    s.set_tokens_per_second(m.tokens_per_second);
    s.set_mfu(m.mfu);
    s.set_tokens_seen(m.tokens_seen);
    outbox_.Push(std::move(msg));
  }
  void OnEval(const EvalMetrics& e) override {
    metrics_.OnEval(job_, rank_, e);
    if (rank_ != 0) return;
    v1::WorkerMessage msg;
    v1::EvalResult& r = *Event(msg).mutable_eval();
    r.set_step(e.step);
    if (e.val_loss) r.set_val_loss(*e.val_loss);
    if (e.hellaswag_acc) r.set_hellaswag_acc(*e.hellaswag_acc);
    if (e.hellaswag_acc_norm) r.set_hellaswag_acc_norm(*e.hellaswag_acc_norm);
    r.set_hellaswag_examples(e.hellaswag_examples);
    for (const std::string& s : e.samples) r.add_samples(s);
    outbox_.Push(std::move(msg));
  }
  void OnCheckpoint(const CheckpointEvent& c) override {
    v1::WorkerMessage msg;
    v1::RankEvent& ev = Event(msg);
    v1::Checkpoint& k = *ev.mutable_checkpoint();
    k.set_job_id(job_);
    k.set_step(c.step);
    k.set_path(c.path);
    if (c.val_loss) k.set_val_loss(*c.val_loss);
    for (const std::string& p : c.retained) ev.add_retained_checkpoints(p);
    outbox_.Push(std::move(msg));
  }

 private:
  v1::RankEvent& Event(v1::WorkerMessage& msg) {
    v1::RankEvent& ev = *msg.mutable_rank_event();
    ev.set_job_id(job_);
    ev.set_attempt(attempt_);
    ev.set_rank(rank_);
    return ev;
  }
  std::string job_;
  int attempt_, rank_;
  Outbox& outbox_;
  WorkerMetrics& metrics_;
};

}  // namespace

RankHost::RankHost(RankHostOptions options, Outbox& outbox, WorkerMetrics& metrics)
    : opts_(std::move(options)), outbox_(outbox), metrics_(metrics), watchdog_([this] { Watch(); }) {}

RankHost::~RankHost() {
  std::unique_ptr<RankRunner> runner;
  {
    std::lock_guard lock(mu_);
    if (runner_ && running_) {
      runner_->Cancel();
      StartCancelClock();
    }
    runner = std::move(runner_);
  }
  runner.reset();  // waits for the rank; the watchdog ends the process if it never stops
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  watchdog_.join();
}

void RankHost::Assign(const v1::TrainAssignment& a) {
  RankTask task;
  task.job_id = a.job_id();
  task.attempt = a.attempt();
  task.rank = a.rank();
  task.world_size = a.world_size();
  task.master_addr = a.master_addr();
  task.master_port = a.master_port();
  task.resume_from = a.resume_from();
  task.collective_timeout = opts_.collective_timeout;
  task.vocab = opts_.vocab;
  Log(absl::StrCat(task.job_id, " attempt ", task.attempt, ": rank ", task.rank, " of ", task.world_size,
                   task.resume_from.empty() ? "" : absl::StrCat(", resuming from ", task.resume_from)));
  absl::StatusOr<TrainConfig> config = ResolveTrainSpec(a.spec());
  std::lock_guard lock(mu_);
  if (runner_ && running_) {
    Exit(task, absl::FailedPreconditionError(
                   absl::StrCat("worker ", opts_.worker_id, " is still running ", runner_->task().job_id)));
    return;
  }
  if (!config.ok()) {
    Exit(task, config.status());
    return;
  }
  task.config = *std::move(config);
  task.config.device = opts_.device;  // the worker owns its device
  task.config.world_size = task.world_size;
  if (runner_) metrics_.Forget(runner_->task().job_id, runner_->task().rank);
  runner_.reset();  // the previous rank has finished; join its thread
  running_ = true;
  cancelled_at_.reset();
  reporting_ = task;
  const RankTask t = task;
  runner_ = std::make_unique<RankRunner>(std::move(task), std::make_unique<EventForwarder>(t, outbox_, metrics_),
                                         [this, t](absl::Status s) {
                                           std::lock_guard lock(mu_);
                                           running_ = false;
                                           cancelled_at_.reset();
                                           Exit(t, s);
                                         });
}

void RankHost::Cancel(const v1::CancelAssignment& c) {
  std::lock_guard lock(mu_);
  if (runner_ && running_ && runner_->task().job_id == c.job_id() && runner_->task().attempt == c.attempt()) {
    Log(absl::StrCat(c.job_id(), " attempt ", c.attempt(), ": cancelling"));
    runner_->Cancel();
    StartCancelClock();
  } else if (!running_ && reporting_ && reporting_->job_id == c.job_id()) {
    // Already finished; its exit is queued. Nothing to stop.
  } else if (!(runner_ && running_)) {
    // Nothing of that job runs here (gpt2d may think so after a restart): say so.
    RankTask t;
    t.job_id = c.job_id();
    t.attempt = c.attempt();
    Exit(t, absl::CancelledError("not running"));
  }
}

void RankHost::Delivered(const v1::RankEvent& e) {
  std::lock_guard lock(mu_);
  if (reporting_ && !running_ && reporting_->job_id == e.job_id() && reporting_->attempt == e.attempt())
    reporting_.reset();
}

void RankHost::FillRegister(v1::Register& reg) {
  std::lock_guard lock(mu_);
  if (!reporting_) return;
  reg.set_running_job_id(reporting_->job_id);
  reg.set_running_rank(reporting_->rank);
  reg.set_running_attempt(reporting_->attempt);
}

void RankHost::FillHeartbeat(v1::Heartbeat& hb) {
  std::lock_guard lock(mu_);
  if (!runner_ || !running_) return;
  v1::RankProgress& p = *hb.mutable_rank();
  p.set_job_id(runner_->task().job_id);
  p.set_attempt(runner_->task().attempt);
  p.set_rank(runner_->task().rank);
  p.set_ticks(runner_->progress());
  p.set_idle_ms(runner_->idle().count());
}

void RankHost::Exit(const RankTask& t, const absl::Status& s) {
  v1::WorkerMessage msg;
  v1::RankEvent& ev = *msg.mutable_rank_event();
  ev.set_job_id(t.job_id);
  ev.set_attempt(t.attempt);
  ev.set_rank(t.rank);
  v1::RankExit& x = *ev.mutable_exit();
  x.set_ok(s.ok());
  x.set_cancelled(s.code() == absl::StatusCode::kCancelled);
  x.set_code(static_cast<int>(s.code()));
  x.set_error(std::string(s.message()));
  Log(absl::StrCat(t.job_id, " attempt ", t.attempt, " rank ", t.rank, ": ",
                   s.ok() ? "finished" : absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message())));
  outbox_.Push(std::move(msg));
}

void RankHost::StartCancelClock() {
  if (!cancelled_at_) cancelled_at_ = Clock::now();
  cv_.notify_all();
}

void RankHost::Watch() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (running_ && cancelled_at_ && Clock::now() - *cancelled_at_ >= opts_.cancel_grace) {
      // The rank's thread is stuck where no flag reaches it; only the process can end it. Its
      // events are lost with it, which is fine: gpt2d restarts the job from its checkpoint.
      // reporting_, not runner_: the destructor has moved runner_ out while it waits for the rank.
      const RankTask& t = *reporting_;
      Log(absl::StrCat(t.job_id, " attempt ", t.attempt, " rank ", t.rank, ": did not stop within ",
                       opts_.cancel_grace.count() / 1000.0,
                       "s of being cancelled (stuck in a device call, a file system or a collective); exiting with ",
                       kStuckRankExitCode, " so that the supervisor restarts this worker with its device free"));
      std::_Exit(kStuckRankExitCode);
    }
    if (running_ && cancelled_at_)
      cv_.wait_until(lock, *cancelled_at_ + opts_.cancel_grace);
    else
      cv_.wait(lock);
  }
}

}  // namespace gpt2
