#include "worker/agent/rank_runner.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/core/Device.h>
#include <pthread.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "worker/train/trainer.h"

namespace gpt2 {

// Forwards events, counts every call as progress, and answers ShouldStop from the runner's
// cancel flag.
class RankRunner::StoppableObserver final : public TrainObserver {
 public:
  StoppableObserver(TrainObserver& inner, const std::atomic<bool>& cancelled, Progress& progress)
      : inner_(inner), cancelled_(cancelled), progress_(progress) {}
  void OnStep(const StepMetrics& m) override {
    progress_.Tick();
    inner_.OnStep(m);
  }
  void OnEval(const EvalMetrics& e) override {
    progress_.Tick();
    inner_.OnEval(e);
  }
  void OnCheckpoint(const CheckpointEvent& c) override {
    progress_.Tick();
    inner_.OnCheckpoint(c);
  }
  void OnProgress() override { progress_.Tick(); }
  bool ShouldStop() override {
    progress_.Tick();
    return cancelled_.load() || inner_.ShouldStop();
  }

 private:
  TrainObserver& inner_;
  const std::atomic<bool>& cancelled_;
  Progress& progress_;
};

void RankRunner::Progress::Tick() {
  ++ticks;
  at_ns = std::chrono::steady_clock::now().time_since_epoch().count();
}

std::chrono::milliseconds RankRunner::idle() const {
  const std::chrono::steady_clock::time_point at{std::chrono::steady_clock::duration(progress_.at_ns.load())};
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - at);
}

RankRunner::RankRunner(RankTask task, std::unique_ptr<TrainObserver> observer, std::function<void(absl::Status)> done)
    : task_(std::move(task)), observer_(std::move(observer)) {
  progress_.at_ns = std::chrono::steady_clock::now().time_since_epoch().count();
  thread_ = std::thread([this, done = std::move(done)] {
    pthread_setname_np(pthread_self(), "gpt2-rank");  // top -H, gdb and the hung-rank test find it
    TrainRunOptions run;
    run.dist = {task_.rank, task_.world_size, task_.master_addr, task_.master_port, task_.collective_timeout};
    run.resume = task_.resume_from;
    run.vocab = task_.vocab;
    StoppableObserver observer(*observer_, cancelled_, progress_);
    absl::Status s = RunTraining(task_.config, run, observer);
    if (!s.ok() && cancelled_) s = absl::CancelledError(s.message());
    done(s);
  });
}

RankRunner::~RankRunner() {
  cancelled_ = true;
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<int64_t> ProbeDevice(const std::string& device) {
  c10::Device d(c10::kCPU);
  try {
    d = c10::Device(device);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("--device ", device, ": expected cpu, cuda or cuda:N"));
  }
  if (d.is_cpu()) return static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  if (!d.is_cuda()) return absl::InvalidArgumentError(absl::StrCat("--device ", device, ": expected cpu or cuda"));
  const int count = at::cuda::is_available() ? static_cast<int>(at::cuda::device_count()) : 0;
  const int index = d.has_index() ? d.index() : 0;
  if (index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device ", device, ": this machine has ", count, " CUDA devices"));
  }
  return static_cast<int64_t>(at::cuda::getDeviceProperties(index)->totalGlobalMem);
}

}  // namespace gpt2
