// gpt2-worker's Prometheus metrics: the training metrics of ../docs/metrics.md, labelled by job and
// rank, and whether the worker is connected to gpt2d. Thread-safe.
#pragma once

#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "worker/train/events.h"

namespace gpt2 {

class WorkerMetrics {
 public:
  WorkerMetrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  void SetConnected(bool connected);
  void OnStep(const std::string& job, int rank, const StepMetrics& m);
  void OnEval(const std::string& job, int rank, const EvalMetrics& e);
  // Drops the job's series when its rank ends here.
  void Forget(const std::string& job, int rank);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& connected_;
  prometheus::Family<prometheus::Gauge>&loss_, &val_loss_, &hellaswag_, &tokens_per_second_, &mfu_, &lr_, &grad_norm_,
      &step_;
};

}  // namespace gpt2
