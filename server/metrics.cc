#include "server/metrics.h"

namespace gpt2 {
namespace {

prometheus::Family<prometheus::Gauge>& Gauge(prometheus::Registry& r, const std::string& name,
                                             const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

}  // namespace

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      jobs_(Gauge(*registry_, "gpt2_jobs", "Training jobs by state.")),
      workers_(Gauge(*registry_, "gpt2_workers", "Registered workers by state.")),
      rpc_total_(prometheus::BuildCounter()
                     .Name("gpt2_grpc_requests_total")
                     .Help("gRPC calls handled by gpt2d, by method and status code.")
                     .Register(*registry_)),
      rpc_seconds_(prometheus::BuildHistogram()
                       .Name("gpt2_grpc_request_duration_seconds")
                       .Help("gRPC call duration by method (streams: until the stream ends).")
                       .Register(*registry_)),
      job_step_(Gauge(*registry_, "gpt2_job_step", "Optimizer steps completed by the job (rank 0's latest report).")),
      job_max_steps_(Gauge(*registry_, "gpt2_job_max_steps", "The job's total optimizer steps.")),
      job_loss_(Gauge(*registry_, "gpt2_job_loss", "The job's latest training loss (nats/token).")),
      job_val_loss_(Gauge(*registry_, "gpt2_job_val_loss", "The job's latest validation loss (nats/token).")),
      job_lr_(Gauge(*registry_, "gpt2_job_learning_rate", "The job's learning rate at its latest step.")),
      job_grad_norm_(Gauge(*registry_, "gpt2_job_grad_norm", "The job's gradient norm (before clipping).")),
      job_tokens_per_second_(Gauge(*registry_, "gpt2_job_tokens_per_second", "The job's throughput, all ranks.")),
      job_mfu_(Gauge(*registry_, "gpt2_job_mfu_ratio", "The job's model FLOPs utilisation (0..1).")),
      job_hellaswag_(
          Gauge(*registry_, "gpt2_job_hellaswag_accuracy", "The job's latest HellaSwag accuracy (acc_norm).")),
      job_restarts_(Gauge(*registry_, "gpt2_job_restarts",
                          "Times the job's group was restarted from its last checkpoint after a lost rank.")),
      store_write_failures_(prometheus::BuildCounter()
                                .Name("gpt2_store_write_failures_total")
                                .Help("Writes the job store (SQLite) refused: locked, read-only, full disk.")
                                .Register(*registry_)
                                .Add({})) {}

void ServerMetrics::StoreWriteFailed() { store_write_failures_.Increment(); }

void ServerMetrics::SetJobCounts(const std::map<std::string, int64_t>& by_state) {
  std::lock_guard lock(mu_);
  for (const auto& [state, n] : by_state) jobs_.Add({{"state", state}}).Set(static_cast<double>(n));
}

void ServerMetrics::SetWorkerCounts(const std::map<std::string, int64_t>& by_state) {
  std::lock_guard lock(mu_);
  for (const auto& [state, n] : by_state) workers_.Add({{"state", state}}).Set(static_cast<double>(n));
}

void ServerMetrics::ObserveRpc(const std::string& method, const std::string& code, double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  std::lock_guard lock(mu_);
  rpc_total_.Add({{"method", method}, {"code", code}}).Increment();
  rpc_seconds_.Add({{"method", method}}, kBuckets).Observe(seconds);
}

prometheus::Gauge& ServerMetrics::JobGauge(prometheus::Family<prometheus::Gauge>& family, const std::string& job) {
  return family.Add({{"job", job}});
}

void ServerMetrics::SetJobStep(const std::string& job, const JobValues& v) {
  std::lock_guard lock(mu_);
  JobGauge(job_step_, job).Set(v.step);
  JobGauge(job_max_steps_, job).Set(v.max_steps);
  JobGauge(job_loss_, job).Set(v.loss);
  JobGauge(job_lr_, job).Set(v.learning_rate);
  JobGauge(job_grad_norm_, job).Set(v.grad_norm);
  JobGauge(job_tokens_per_second_, job).Set(v.tokens_per_second);
  JobGauge(job_mfu_, job).Set(v.mfu);
}

void ServerMetrics::SetJobValLoss(const std::string& job, double v) {
  std::lock_guard lock(mu_);
  JobGauge(job_val_loss_, job).Set(v);
}

void ServerMetrics::SetJobHellaSwag(const std::string& job, double acc_norm) {
  std::lock_guard lock(mu_);
  JobGauge(job_hellaswag_, job).Set(acc_norm);
}

void ServerMetrics::SetJobRestarts(const std::string& job, int restarts) {
  std::lock_guard lock(mu_);
  JobGauge(job_restarts_, job).Set(restarts);
}

void ServerMetrics::ForgetJob(const std::string& job) {
  std::lock_guard lock(mu_);
  for (auto* family : {&job_step_, &job_max_steps_, &job_loss_, &job_val_loss_, &job_lr_, &job_grad_norm_,
                       &job_tokens_per_second_, &job_mfu_, &job_hellaswag_, &job_restarts_}) {
    if (family->Has({{"job", job}})) family->Remove(&family->Add({{"job", job}}));
  }
}

}  // namespace gpt2
