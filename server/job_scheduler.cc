#include "server/job_scheduler.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/states.h"
#include "server/coordinator.h"

namespace gpt2 {

using google::protobuf::util::TimeUtil;

JobScheduler::JobScheduler(JobStore& store, const CoordinatorOptions& options, ServerMetrics& metrics,
                           WorkerRegistry& workers, StoreRefusals& refusals, std::condition_variable& events)
    : store_(store),
      opts_(options),
      metrics_(metrics),
      workers_(workers),
      refusals_(refusals),
      events_(events),
      next_port_(options.rendezvous_port_min) {}

absl::Status JobScheduler::Load() {
  absl::StatusOr<std::map<v1::JobState, int64_t>> counts = store_.CountJobsByState();
  if (!counts.ok()) return counts.status();
  for (const auto& [state, n] : *counts)
    if (IsTerminal(state)) ended_counts_[state] = n;
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
  UpdateCountMetrics();
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobScheduler::Submit(const v1::TrainSpec& spec, const JobShape& shape,
                                             const std::string& idempotency_key) {
  const int64_t max_steps = shape.max_steps;
  const int world_size = shape.world_size;
  v1::Job job;
  *job.mutable_spec() = spec;
  job.set_state(v1::JOB_STATE_QUEUED);
  job.set_max_steps(max_steps);
  job.set_world_size(world_size);
  *job.mutable_created_at() = TimeUtil::GetCurrentTime();
  *job.mutable_updated_at() = job.created_at();
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
  SetState(aj, v1::JOB_STATE_QUEUED,
           absl::StrCat("waiting for ", world_size, world_size == 1 ? " idle worker" : " idle workers"));
  CoordinatorLog(absl::StrCat(aj.job.id(), " submitted: ", shape.name, ", ", max_steps, " steps on ", world_size,
                              " ranks"));
  return aj.job;
}

absl::StatusOr<v1::Job> JobScheduler::Cancel(const std::string& job_id) {
  auto it = active_.find(job_id);
  if (it == active_.end()) {
    absl::StatusOr<v1::Job> job = store_.GetJob(job_id);
    if (!job.ok()) return job.status();
    if (job->state() == v1::JOB_STATE_CANCELLED) return job;  // cancelling twice is fine
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " already ended (", JobStateName(job->state()), "); nothing to cancel"));
  }
  // On disk first: if the store refuses, nothing changes (the ranks keep running) and the caller
  // hears why.
  ActiveJob& aj = it->second;
  const v1::Job before = aj.job;
  (void)refusals_.Take();
  SetState(aj, v1::JOB_STATE_CANCELLED, "");
  if (absl::Status s = refusals_.Take(); !s.ok()) {
    aj.job = before;
    UpdateCountMetrics();
    return absl::Status(s.code(), absl::StrCat("job ", job_id, " not cancelled: ", s.message()));
  }
  CancelRanks(aj);
  Finish(aj, v1::JOB_STATE_CANCELLED, "cancelled by request", /*recorded=*/true);
  return store_.GetJob(job_id);
}

bool JobScheduler::HasNews(const std::string& job_id, int64_t after_sequence) const {
  auto it = active_.find(job_id);
  return it == active_.end() || it->second.job.last_sequence() > after_sequence;
}

void JobScheduler::Reattach(WorkerEntry& w, const v1::Register& reg) {
  auto it = active_.find(reg.running_job_id());
  ActiveJob* aj = it == active_.end() ? nullptr : &it->second;
  const bool current = aj && aj->job.state() == v1::JOB_STATE_RUNNING && aj->job.attempt() == reg.running_attempt() &&
                       reg.running_rank() >= 0 && reg.running_rank() < aj->job.worker_ids_size() &&
                       aj->job.worker_ids(reg.running_rank()) == reg.worker_id();
  workers_.SetState(w, v1::WORKER_STATE_TRAINING, reg.running_job_id(), reg.running_rank());
  if (current) {
    aj->running.insert(reg.worker_id());
    CoordinatorLog(absl::StrCat("worker ", reg.worker_id(), " re-attached to ", aj->job.id(), " rank ",
                                reg.running_rank()));
    if (aj->adopting && static_cast<int>(aj->running.size() + aj->exited_ok.size()) >= aj->job.world_size()) {
      aj->adopting = false;
      Note(*aj, "all ranks re-attached after the gpt2d restart");
    }
    return;
  }
  // A rank of this job's failed attempt, still running after a reconnect: the next attempt waits
  // until it has stopped, as for the ranks gpt2d cancelled itself.
  if (aj && aj->job.attempt() == reg.running_attempt()) aj->running.insert(reg.worker_id());
  v1::CoordinatorMessage cancel;
  cancel.mutable_cancel()->set_job_id(reg.running_job_id());
  cancel.mutable_cancel()->set_attempt(reg.running_attempt());
  w.Send(std::move(cancel));
  CoordinatorLog(absl::StrCat("worker ", reg.worker_id(), " reconnected running a stale rank of ",
                              reg.running_job_id(), "; cancelling it"));
}

void JobScheduler::Tick(Clock::time_point now) {
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
}

void JobScheduler::CheckProgress(Clock::time_point now) {
  if (opts_.rank_progress_timeout.count() <= 0) return;
  auto seconds = [](Clock::duration d) { return absl::StrFormat("%.1fs", std::chrono::duration<double>(d).count()); };
  std::vector<std::pair<std::string, std::string>> hung;  // job id, reason
  for (auto& [id, aj] : active_) {
    if (aj.job.state() != v1::JOB_STATE_RUNNING || aj.adopting) continue;
    struct Still {
      Clock::duration idle;
      std::string rank;
    };
    std::vector<Still> still;  // every running rank of the job, the longest idle first
    for (int r = 0; r < aj.job.worker_ids_size(); ++r) {
      const std::string& wid = aj.job.worker_ids(r);
      const WorkerEntry* w = workers_.Find(wid);
      if (w == nullptr || !aj.running.count(wid) || aj.exited_ok.count(r) || !w->connected() ||
          w->info.job_id() != id)
        continue;
      still.push_back({now - w->progressed_at, absl::StrCat("rank ", r, " (", wid, ")")});
    }
    std::sort(still.begin(), still.end(), [](const Still& a, const Still& b) { return a.idle > b.idle; });
    if (still.empty() || still[0].idle <= opts_.rank_progress_timeout) continue;
    // One hung rank soon stalls the others in their next collective: the one idle longest is the
    // likely culprit, the others are named with their idle time. The rank that is truly stuck is
    // the one that then does not stop when cancelled (its worker exits: rank_host.h).
    std::string reason = absl::StrCat(still[0].rank, " made no progress for ", seconds(still[0].idle),
                                      " while heartbeating: a hung rank (a stuck device call, file system or "
                                      "collective)");
    std::vector<std::string> others;
    for (size_t i = 1; i < still.size(); ++i)
      if (still[i].idle >= std::chrono::seconds(1))
        others.push_back(absl::StrCat(still[i].rank, " for ", seconds(still[i].idle)));
    if (!others.empty()) absl::StrAppend(&reason, "; also idle: ", absl::StrJoin(others, ", "));
    hung.emplace_back(id, std::move(reason));
  }
  for (const auto& [id, reason] : hung) {
    auto it = active_.find(id);
    if (it != active_.end()) FailAttempt(it->second, reason, /*retryable=*/true);
  }
}

void JobScheduler::Schedule() {
  for (auto& [id, aj] : active_) {
    v1::Job& job = aj.job;
    if (job.state() != v1::JOB_STATE_QUEUED && job.state() != v1::JOB_STATE_RESTARTING) continue;
    if (!aj.running.empty()) continue;  // the previous attempt's ranks are still stopping
    std::vector<WorkerEntry*> idle = workers_.Idle();
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
      w.Send(std::move(m));
      workers_.SetState(w, v1::WORKER_STATE_TRAINING, job.id(), r);
      aj.running.insert(w.info.id());
    }
    if (!job.has_started_at()) *job.mutable_started_at() = TimeUtil::GetCurrentTime();
    SetState(aj, v1::JOB_STATE_RUNNING,
             absl::StrCat("attempt ", job.attempt(), " on ", absl::StrJoin(job.worker_ids(), ", "), " (rendezvous ",
                          idle[0]->info.host(), ":", aj.port, ")",
                          resume.empty() ? "" : absl::StrCat(", resuming from step ", resume_step)));
    CoordinatorLog(
        absl::StrCat(job.id(), " attempt ", job.attempt(), " started on ", absl::StrJoin(job.worker_ids(), ", ")));
  }
}

void JobScheduler::OnRankEvent(WorkerEntry& w, const v1::RankEvent& e) {
  auto it = active_.find(e.job_id());
  const bool current = it != active_.end() && e.attempt() == it->second.job.attempt() &&
                       e.rank() < it->second.job.worker_ids_size() &&
                       it->second.job.worker_ids(e.rank()) == w.info.id();
  if (e.has_exit()) {
    // The worker is free again whatever the rank belonged to.
    if (w.info.job_id() == e.job_id()) workers_.SetState(w, v1::WORKER_STATE_IDLE);
  }
  if (!current) return;  // a stale attempt's or an ended job's report
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
      if (absl::Status s = store_.PutCheckpoint(c); !s.ok()) refusals_.Refused(s);
      if (e.retained_checkpoints_size() > 0) {
        std::vector<std::string> kept(e.retained_checkpoints().begin(), e.retained_checkpoints().end());
        if (absl::Status s = store_.RetainCheckpoints(job.id(), kept); !s.ok()) refusals_.Refused(s);
      }
      if (repeat) return;  // stored again above (same step, same path); no second event
      *ev.mutable_checkpoint() = std::move(c);
      Record(aj, std::move(ev));
      return;
    }
    case v1::RankEvent::kExit: {
      aj.running.erase(w.info.id());
      const v1::RankExit& x = e.exit();
      if (job.state() == v1::JOB_STATE_RESTARTING) return;  // the old group is stopping
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
      return;
    }
    default:
      return;
  }
}

void JobScheduler::WorkerLost(const std::string& worker_id, const std::string& job_id, int rank,
                              const std::string& reason) {
  auto it = active_.find(job_id);
  if (it == active_.end() || !it->second.running.erase(worker_id)) return;
  FailAttempt(it->second, absl::StrCat("worker ", worker_id, " (rank ", rank, ") lost: ", reason), true);
}

void JobScheduler::FailAttempt(ActiveJob& aj, const std::string& reason, bool retryable, bool counts_as_restart) {
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
  CoordinatorLog(absl::StrCat(job.id(), ": ", reason, "; restarting"));
}

void JobScheduler::Finish(ActiveJob& aj, v1::JobState state, const std::string& reason, bool recorded) {
  v1::Job& job = aj.job;
  const std::string id = job.id();
  if (state == v1::JOB_STATE_FAILED) job.set_failure_reason(reason);
  *job.mutable_finished_at() = TimeUtil::GetCurrentTime();
  if (recorded) {
    if (!reason.empty()) Note(aj, reason);
  } else {
    SetState(aj, state, reason);
  }
  if (absl::Status s = store_.ThinStepEvents(id, job.max_steps(), 1000); !s.ok()) refusals_.Refused(s);
  metrics_.ForgetJob(id);
  ++ended_counts_[state];
  CoordinatorLog(absl::StrCat(id, " ", JobStateName(state), reason.empty() ? "" : ": " + reason));
  active_.erase(id);
  UpdateCountMetrics();
  events_.notify_all();
}

void JobScheduler::CancelRanks(ActiveJob& aj) {
  for (const std::string& wid : aj.running) {
    WorkerEntry* w = workers_.Find(wid);
    if (w == nullptr) continue;
    v1::CoordinatorMessage m;
    m.mutable_cancel()->set_job_id(aj.job.id());
    m.mutable_cancel()->set_attempt(aj.job.attempt());
    w->Send(std::move(m));
  }
}

void JobScheduler::Record(ActiveJob& aj, v1::JobEvent event) {
  absl::StatusOr<v1::JobEvent> stored = store_.AppendEvent(&aj.job, std::move(event));
  if (!stored.ok()) refusals_.Refused(stored.status());
  events_.notify_all();
}

void JobScheduler::SetState(ActiveJob& aj, v1::JobState state, const std::string& message) {
  aj.job.set_state(state);
  v1::JobEvent e;
  e.set_state(state);
  Record(aj, std::move(e));
  if (!message.empty()) Note(aj, message);
  UpdateCountMetrics();
}

void JobScheduler::Note(ActiveJob& aj, const std::string& message) {
  v1::JobEvent e;
  e.set_message(message);
  Record(aj, std::move(e));
}

int JobScheduler::TakePort() {
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

void JobScheduler::UpdateCountMetrics() {
  std::map<std::string, int64_t> jobs;
  for (int s = v1::JOB_STATE_QUEUED; s <= v1::JOB_STATE_CANCELLED; ++s) {
    const auto state = static_cast<v1::JobState>(s);
    auto ended = ended_counts_.find(state);
    jobs[JobStateName(state)] = ended == ended_counts_.end() ? 0 : ended->second;
  }
  for (const auto& [id, aj] : active_) ++jobs[JobStateName(aj.job.state())];
  metrics_.SetJobCounts(jobs);
}

}  // namespace gpt2
