// The agent's training side: runs the ranks gpt2d assigns, one at a time, each on its RankRunner
// thread, and turns their events into RankEvents in the Outbox. No libtorch here (rank_runner.h
// holds it) and no stream: the connection (agent.cc) hands it messages and reads its state.
//
// A rank that does not stop within `cancel_grace` of being cancelled (stuck in a device call, a
// file system or a collective that never times out) cannot be stopped from inside the process:
// the worker then exits with kStuckRankExitCode so that its supervisor (systemd, Docker, the
// kubelet) restarts it with the device free; gpt2d sees the stream break and reschedules the job.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "gpt2d/v1/worker.pb.h"
#include "worker/agent/outbox.h"
#include "worker/agent/rank_runner.h"
#include "worker/agent/worker_metrics.h"

namespace gpt2 {

inline constexpr int kStuckRankExitCode = 75;  // EX_TEMPFAIL: restart me

struct RankHostOptions {
  std::string worker_id, device, vocab;
  std::chrono::milliseconds collective_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds cancel_grace{std::chrono::seconds(120)};
};

class RankHost {
 public:
  RankHost(RankHostOptions options, Outbox& outbox, WorkerMetrics& metrics);
  // Cancels the running rank and waits for it (at most cancel_grace, then the process exits).
  ~RankHost();

  void Assign(const ::gpt2d::v1::TrainAssignment& a);
  void Cancel(const ::gpt2d::v1::CancelAssignment& c);
  // gpt2d stored `exit`'s rank exit: nothing is left to report for that rank.
  void Delivered(const ::gpt2d::v1::RankEvent& exit);
  // What a (re)registration says this worker runs: the rank running, or finished with its exit
  // not yet delivered.
  void FillRegister(::gpt2d::v1::Register& reg);
  // The running rank's progress counter, for gpt2d's hung-rank watchdog.
  void FillHeartbeat(::gpt2d::v1::Heartbeat& hb);

 private:
  // mu_ held.
  void Exit(const RankTask& t, const absl::Status& s);
  void StartCancelClock();
  void Watch();

  const RankHostOptions opts_;
  Outbox& outbox_;
  WorkerMetrics& metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<RankRunner> runner_;
  bool running_ = false;
  std::optional<RankTask> reporting_;
  std::optional<std::chrono::steady_clock::time_point> cancelled_at_;  // of the running rank
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace gpt2
