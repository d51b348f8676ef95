// gpt2d's Prometheus metrics: jobs and workers by state, gRPC requests, and the latest training
// metrics of each running job (names in docs/metrics.md).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace gpt2 {

class ServerMetrics {
 public:
  ServerMetrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void SetJobCounts(const std::map<std::string, int64_t>& by_state);
  void SetWorkerCounts(const std::map<std::string, int64_t>& by_state);
  void ObserveRpc(const std::string& method, const std::string& code, double seconds);

  struct JobValues {
    double step = 0, max_steps = 0, loss = 0, learning_rate = 0, grad_norm = 0, tokens_per_second = 0, mfu = 0;
  };
  void SetJobStep(const std::string& job, const JobValues& v);
  void SetJobValLoss(const std::string& job, double v);
  void SetJobHellaSwag(const std::string& job, double acc_norm);
  // Group restarts of an active job so far (gpt2_job_restarts).
  void SetJobRestarts(const std::string& job, int restarts);
  void ForgetJob(const std::string& job);
  // A write the job store refused (gpt2_store_write_failures_total).
  void StoreWriteFailed();

 private:
  prometheus::Gauge& JobGauge(prometheus::Family<prometheus::Gauge>& family, const std::string& job);
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Counter>& rpc_total_;
  prometheus::Family<prometheus::Histogram>& rpc_seconds_;
  prometheus::Family<prometheus::Gauge>&job_step_, &job_max_steps_, &job_loss_, &job_val_loss_, &job_lr_,
      &job_grad_norm_, &job_tokens_per_second_, &job_mfu_, &job_hellaswag_, &job_restarts_;
  prometheus::Counter& store_write_failures_;
  std::mutex mu_;
};

}  // namespace gpt2
