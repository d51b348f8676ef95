#include "common/generate_metrics.h"

namespace gpt2 {
namespace {

// 1 ms .. 60 s: a GPU's inter-token latency and a CPU's time to first token on one scale.
const prometheus::Histogram::BucketBoundaries kLatency = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                          0.5,   1,      2.5,   5,    10,    30,   60};

prometheus::Histogram& Latency(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, kLatency);
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

}  // namespace gpt2
