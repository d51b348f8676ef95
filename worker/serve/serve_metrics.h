// A serving replica's Prometheus metrics (names in docs/serving.md and docs/control-plane.md):
// requests by status code, time to first token, inter-token latency (decode steps only, prefill
// excluded), request duration, prompt and completion tokens, batch size, queue depth, KV-cache
// usage and the checkpoint step served. Histogram buckets span CPU (seconds) and GPU (ms). Thread-safe.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace gpt2 {

// What both a replica and gpt2d's router measure of each request.
class GenerateMetrics {
 public:
  explicit GenerateMetrics(prometheus::Registry& registry);
  // gpt2_generate_requests_total{api="grpc"|"openai", code}.
  void Request(const std::string& api, const std::string& code);
  void FirstToken(double seconds);
  void InterToken(double seconds);
  void Duration(double seconds);
  void Tokens(int64_t prompt, int64_t completion);
  // gpt2d: a request moved to another replica after its first failed before answering
  // (gpt2_generate_retries_total).
  void Retry();

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Histogram &ttft_, &itl_, &duration_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Counter &prompt_tokens_, &completion_tokens_;
  prometheus::Counter& retries_;
};

// A replica's: the above, and its engine and checkpoint.
class ServeMetrics : public GenerateMetrics {
 public:
  explicit ServeMetrics(std::shared_ptr<prometheus::Registry> registry);
  void Engine(int64_t batch_size, int64_t queue_depth, double kv_cache_usage);
  void CheckpointStep(int64_t step);
  void CheckpointLoad(bool ok);
  // gpt2_serve_deployment_info{deployment} = 1 while serving `deployment` (a standalone replica:
  // ""); dashboards join the other series on `instance` to it to filter by deployment.
  void Serving(const std::string& deployment);
  void NotServing();
  // An engine step that failed (its requests ended with INTERNAL): gpt2_serve_engine_faults_total{step}.
  void EngineFault(std::string_view step);
  // Prompt tokens admitted, by whether a cached prefix gave them (gpt2_serve_prefix_cache_tokens_total
  // {result="hit"|"miss"}); AdmitHandler() is the engine's on_admit.
  void PrefixCache(int64_t prompt_tokens, int64_t reused);
  std::function<void(int64_t, int64_t)> AdmitHandler();
  // The engine's fault handler: counts the fault and logs it with `log`.
  std::function<void(std::string_view, std::string_view)> FaultHandler(std::function<void(const std::string&)> log);

 private:
  prometheus::Gauge &batch_, &queue_, &kv_, &step_;
  prometheus::Family<prometheus::Counter>& loads_;
  prometheus::Family<prometheus::Gauge>& deployment_info_;
  prometheus::Family<prometheus::Counter>& faults_;
  prometheus::Family<prometheus::Counter>& prefix_;
  prometheus::Counter &prefix_hit_, &prefix_miss_;
  std::mutex mu_;
  std::optional<std::string> serving_;  // the deployment_info_ series that exists
};

}  // namespace gpt2
