// What a serving replica and gpt2d's router both measure of each completion request (names in
// docs/serving.md and docs/control-plane.md): requests by API and status code, time to first
// token, inter-token latency, request duration, prompt and completion tokens, retries. Histogram
// buckets span CPU (seconds) and GPU (ms). Thread-safe.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <string>

namespace gpt2 {

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

}  // namespace gpt2
