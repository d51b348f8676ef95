#include "worker/model/sampling.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/topk.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace gpt2 {

absl::Status ValidateSampling(const SamplingOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be a finite number >= 0, got ", o.temperature));
  }
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", o.top_p));
  }
  return absl::OkStatus();
}

at::Generator MakeGenerator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

SampledToken SampleToken(const at::Tensor& logits, int64_t vocab_size, const SamplingOptions& o,
                         at::Generator& generator) {
  at::Tensor row = logits.slice(0, 0, vocab_size).to(at::kCPU, at::kFloat);  // (V)
  at::Tensor logprobs = at::log_softmax(row, 0);
  auto pick = [&](int64_t id) {
    return SampledToken{id, logprobs[id].item<double>(), TopLogprobs(logprobs, o.top_logprobs)};
  };
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (!o.banned.empty()) {
    row = row.clone();
    for (int64_t t : o.banned)
      if (t >= 0 && t < vocab_size) row[t] = neg_inf;
  }
  if (o.temperature == 0) return pick(at::argmax(row).item<int64_t>());

  at::Tensor scaled = row / o.temperature;
  if (o.top_k > 0 && o.top_k < vocab_size) {
    at::Tensor kth = std::get<0>(at::topk(scaled, o.top_k)).select(0, o.top_k - 1);
    scaled = scaled.masked_fill(scaled < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = at::sort(scaled, /*dim=*/0, /*descending=*/true);
    at::Tensor cum = at::cumsum(at::softmax(sorted, 0), 0);
    // Drop a token when the tokens before it already reach top_p; the first always stays.
    at::Tensor drop_sorted = (cum - at::softmax(sorted, 0)) >= o.top_p;
    at::Tensor drop = at::zeros_like(drop_sorted).scatter(0, order, drop_sorted);
    scaled = scaled.masked_fill(drop, neg_inf);
  }
  at::Tensor probs = at::softmax(scaled, 0);
  return pick(at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>());
}

std::vector<std::pair<int64_t, double>> TopLogprobs(const at::Tensor& logprobs, int64_t k) {
  std::vector<std::pair<int64_t, double>> top;
  k = std::min(k, logprobs.size(0));
  if (k <= 0) return top;
  auto [values, ids] = at::topk(logprobs, k);
  const at::Tensor v = values.to(at::kDouble).contiguous(), i = ids.contiguous();
  const double* vp = v.data_ptr<double>();
  const int64_t* ip = i.data_ptr<int64_t>();
  for (int64_t j = 0; j < k; ++j) top.emplace_back(ip[j], vp[j]);
  std::stable_sort(top.begin(), top.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  return top;
}

}  // namespace gpt2
