#include "worker/serve/serve_metrics.h"

namespace gpt2 {
namespace {

// 1 ms .. 60 s: a GPU's inter-token latency and a CPU's time to first token on one scale.
const prometheus::Histogram::BucketBoundaries kLatency = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                          0.5,   1,      2.5,   5,    10,    30,   60};

prometheus::Histogram& Latency(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, kLatency);
}

prometheus::Gauge& Gauge(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

GenerateMetrics::GenerateMetrics(prometheus::Registry& reg)
    : requests_(prometheus::BuildCounter()
                    .Name("gpt2_generate_requests_total")
                    .Help("Completion requests by API (grpc, openai) and gRPC status code.")
                    .Register(reg)),
      ttft_(Latency(reg, "gpt2_generate_time_to_first_token_seconds",
                    "From arrival to the first token (queue + prefill).")),
      itl_(Latency(reg, "gpt2_generate_inter_token_latency_seconds",
                   "Between consecutive tokens of a request (decode).")),
      duration_(Latency(reg, "gpt2_generate_request_duration_seconds", "From arrival to the last token.")),
      tokens_(prometheus::BuildCounter()
                  .Name("gpt2_generate_tokens_total")
                  .Help("Tokens processed, by kind: prompt or completion.")
                  .Register(reg)),
      prompt_tokens_(tokens_.Add({{"kind", "prompt"}})),
      completion_tokens_(tokens_.Add({{"kind", "completion"}})),
      retries_(prometheus::BuildCounter()
                   .Name("gpt2_generate_retries_total")
                   .Help("Requests gpt2d moved to another replica after the first failed before answering.")
                   .Register(reg)
                   .Add({})) {
  // Exported at 0 from the start, so that rate() sees the first successful requests (a series
  // born with its first increment has no earlier sample to rise from).
  for (const char* api : {"grpc", "openai"}) requests_.Add({{"api", api}, {"code", "OK"}});
}

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
      prefix_(prometheus::BuildCounter()
                  .Name("gpt2_serve_prefix_cache_tokens_total")
                  .Help("Prompt tokens admitted, by result: hit (KV rows reused from a cached prefix), miss (computed).")
                  .Register(*r)),
      prefix_hit_(prefix_.Add({{"result", "hit"}})),
      prefix_miss_(prefix_.Add({{"result", "miss"}})) {
  for (const char* step : {"prefill", "decode"}) faults_.Add({{"step", step}});  // exported at 0 from the start
}

void GenerateMetrics::Request(const std::string& api, const std::string& code) {
  requests_.Add({{"api", api}, {"code", code}}).Increment();
}
void GenerateMetrics::FirstToken(double seconds) { ttft_.Observe(seconds); }
void GenerateMetrics::InterToken(double seconds) { itl_.Observe(seconds); }
void GenerateMetrics::Duration(double seconds) { duration_.Observe(seconds); }
void GenerateMetrics::Tokens(int64_t prompt, int64_t completion) {
  prompt_tokens_.Increment(static_cast<double>(prompt));
  completion_tokens_.Increment(static_cast<double>(completion));
}
void GenerateMetrics::Retry() { retries_.Increment(); }
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
