#include "worker/agent/worker_metrics.h"

namespace gpt2 {
namespace {

prometheus::Family<prometheus::Gauge>& Gauge(prometheus::Registry& r, const std::string& name,
                                             const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

prometheus::Labels JobRank(const std::string& job, int rank) { return {{"job", job}, {"rank", std::to_string(rank)}}; }

}  // namespace

WorkerMetrics::WorkerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      connected_(Gauge(*registry_, "gpt2_worker_connected", "1 while the worker's stream to gpt2d is up.")),
      loss_(Gauge(*registry_, "gpt2_train_loss", "Training loss at the latest step (nats/token, mean over ranks).")),
      val_loss_(Gauge(*registry_, "gpt2_train_val_loss", "Validation loss at the latest evaluation (nats/token).")),
      hellaswag_(Gauge(*registry_, "gpt2_train_hellaswag_accuracy", "HellaSwag accuracy (acc_norm), latest eval.")),
      tokens_per_second_(Gauge(*registry_, "gpt2_train_tokens_per_second", "Training throughput, all ranks.")),
      mfu_(Gauge(*registry_, "gpt2_train_mfu_ratio", "Model FLOPs utilisation (0..1; 0 when the peak is unknown).")),
      lr_(Gauge(*registry_, "gpt2_train_learning_rate", "Learning rate of the latest step.")),
      grad_norm_(Gauge(*registry_, "gpt2_train_grad_norm", "Gradient norm of the latest step, before clipping.")),
      step_(Gauge(*registry_, "gpt2_train_step", "Optimizer steps completed.")) {
  connected_.Add({}).Set(0);
}

void WorkerMetrics::SetConnected(bool connected) { connected_.Add({}).Set(connected ? 1 : 0); }

void WorkerMetrics::OnStep(const std::string& job, int rank, const StepMetrics& m) {
  const prometheus::Labels l = JobRank(job, rank);
  loss_.Add(l).Set(m.loss);
  tokens_per_second_.Add(l).Set(m.tokens_per_second);
  mfu_.Add(l).Set(m.mfu);
  lr_.Add(l).Set(m.lr);
  grad_norm_.Add(l).Set(m.grad_norm);
  step_.Add(l).Set(static_cast<double>(m.step));
}

void WorkerMetrics::OnEval(const std::string& job, int rank, const EvalMetrics& e) {
  const prometheus::Labels l = JobRank(job, rank);
  if (e.val_loss) val_loss_.Add(l).Set(*e.val_loss);
  if (e.hellaswag_acc_norm) hellaswag_.Add(l).Set(*e.hellaswag_acc_norm);
}

void WorkerMetrics::Forget(const std::string& job, int rank) {
  const prometheus::Labels l = JobRank(job, rank);
  for (auto* f : {&loss_, &val_loss_, &hellaswag_, &tokens_per_second_, &mfu_, &lr_, &grad_norm_, &step_})
    if (f->Has(l)) f->Remove(&f->Add(l));
}

}  // namespace gpt2
