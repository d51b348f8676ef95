#include "worker/serve/serve_metrics.h"

namespace gpt2 {
namespace {

prometheus::Gauge& Gauge(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

ServeMetrics::ServeMetrics(std::shared_ptr<prometheus::Registry> r)
    : GenerateMetrics(*r),
      batch_(Gauge(*r, "gpt2_serve_batch_size", "Requests in the engine's running batch.")),
      queue_(Gauge(*r, "gpt2_serve_queue_depth", "Requests waiting for a KV-cache slot.")),
      kv_(Gauge(*r, "gpt2_serve_kv_cache_usage_ratio", "Used KV-cache positions / all positions.")),
      step_(Gauge(*r, "gpt2_serve_checkpoint_step", "Training step of the checkpoint being served.")),
      loads_(prometheus::BuildCounter()
                 .Name("gpt2_serve_checkpoint_loads_total")
                 .Help("Hot-loads of new checkpoints, by result (ok, error: the old weights kept serving).")
                 .Register(*r)),
      deployment_info_(prometheus::BuildGauge()
                           .Name("gpt2_serve_deployment_info")
                           .Help("1 for the deployment this replica serves (label deployment).")
                           .Register(*r)),
      faults_(prometheus::BuildCounter()
                  .Name("gpt2_serve_engine_faults_total")
                  .Help("Engine steps that failed, by step (prefill, decode); their requests ended with INTERNAL.")
                  .Register(*r)),
      prefix_(
          prometheus::BuildCounter()
              .Name("gpt2_serve_prefix_cache_tokens_total")
              .Help("Prompt tokens admitted, by result: hit (KV rows reused from a cached prefix), miss (computed).")
              .Register(*r)),
      prefix_hit_(prefix_.Add({{"result", "hit"}})),
      prefix_miss_(prefix_.Add({{"result", "miss"}})) {
  for (const char* step : {"prefill", "decode"}) faults_.Add({{"step", step}});  // exported at 0 from the start
}

void ServeMetrics::Engine(int64_t batch_size, int64_t queue_depth, double kv_cache_usage) {
  batch_.Set(static_cast<double>(batch_size));
  queue_.Set(static_cast<double>(queue_depth));
  kv_.Set(kv_cache_usage);
}
void ServeMetrics::CheckpointStep(int64_t step) { step_.Set(static_cast<double>(step)); }
void ServeMetrics::CheckpointLoad(bool ok) { loads_.Add({{"result", ok ? "ok" : "error"}}).Increment(); }

void ServeMetrics::Serving(const std::string& deployment) {
  std::lock_guard lock(mu_);
  if (serving_ && *serving_ != deployment) deployment_info_.Remove(&deployment_info_.Add({{"deployment", *serving_}}));
  deployment_info_.Add({{"deployment", deployment}}).Set(1);
  serving_ = deployment;
}

void ServeMetrics::PrefixCache(int64_t prompt_tokens, int64_t reused) {
  prefix_hit_.Increment(static_cast<double>(reused));
  prefix_miss_.Increment(static_cast<double>(prompt_tokens - reused));
}

std::function<void(int64_t, int64_t)> ServeMetrics::AdmitHandler() {
  return [this](int64_t prompt_tokens, int64_t reused) { PrefixCache(prompt_tokens, reused); };
}

void ServeMetrics::EngineFault(std::string_view step) { faults_.Add({{"step", std::string(step)}}).Increment(); }

std::function<void(std::string_view, std::string_view)> ServeMetrics::FaultHandler(
    std::function<void(const std::string&)> log) {
  return [this, log = std::move(log)](std::string_view step, std::string_view what) {
    EngineFault(step);
    log(std::string("engine ").append(step).append(" step failed (its requests ended with INTERNAL): ").append(what));
  };
}

void ServeMetrics::NotServing() {
  std::lock_guard lock(mu_);
  if (serving_) deployment_info_.Remove(&deployment_info_.Add({{"deployment", *serving_}}));
  serving_.reset();
}

}  // namespace gpt2
