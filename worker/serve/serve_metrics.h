// A serving replica's Prometheus metrics (names in docs/serving.md): the request metrics it shares
// with gpt2d's router (GenerateMetrics), batch size, queue depth, KV-cache usage, prefix-cache hits,
// engine faults and the checkpoint step served. Thread-safe.
#pragma once

#include "common/generate_metrics.h"

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

// A replica's: GenerateMetrics (common/generate_metrics.h), and its engine and checkpoint.
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
