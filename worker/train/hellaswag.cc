#include "worker/train/hellaswag.h"

#include <ATen/ops/log_softmax.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/utils.h>

#include "absl/strings/str_cat.h"
#include "worker/train/distributed.h"

namespace gpt2 {

HellaSwagScore ScoreHellaSwag(GPT& model, const Tokenizer& tok, const HellaSwagExample& ex) {
  const int64_t ctx_max = model->config().n_positions;
  const std::vector<TokenId> ctx = tok.EncodeOrdinary(ex.ctx);
  std::vector<std::vector<int64_t>> rows;
  std::vector<int64_t> ending_begin;  // index in each row where the ending starts
  size_t width = 0;
  for (const std::string& ending : ex.endings) {
    std::vector<TokenId> end = tok.EncodeOrdinary(" " + ending);
    std::vector<int64_t> row(ctx.begin(), ctx.end());
    row.insert(row.end(), end.begin(), end.end());
    int64_t begin = static_cast<int64_t>(ctx.size());
    if (static_cast<int64_t>(row.size()) > ctx_max) {  // keep the last n_positions tokens
      const int64_t cut = static_cast<int64_t>(row.size()) - ctx_max;
      row.erase(row.begin(), row.begin() + cut);
      begin = std::max<int64_t>(1, begin - cut);
    }
    width = std::max(width, row.size());
    rows.push_back(std::move(row));
    ending_begin.push_back(begin);
  }
  std::vector<int64_t> flat;
  for (auto& r : rows) {
    std::vector<int64_t> padded = r;
    padded.resize(width, 0);
    flat.insert(flat.end(), padded.begin(), padded.end());
  }
  torch::InferenceMode guard;
  const auto device = model->parameters()[0].device();
  at::Tensor idx = at::tensor(flat, at::kLong).view({4, static_cast<int64_t>(width)}).to(device);
  // (4,W,V) -> log-probs of each next token, in float64 for stable sums
  at::Tensor logp =
      at::log_softmax(model->forward(idx).slice(-1, 0, model->config().vocab_size).to(at::kDouble), -1).cpu();
  HellaSwagScore score;
  for (size_t i = 0; i < rows.size(); ++i) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t t = ending_begin[i]; t < static_cast<int64_t>(rows[i].size()); ++t) {
      sum -= logp[static_cast<int64_t>(i)][t - 1][rows[i][t]].item<double>();  // token t predicted at t-1
      ++n;
    }
    score.sum_loss.push_back(sum);
    score.mean_loss.push_back(n ? sum / static_cast<double>(n) : 0.0);
  }
  for (int i = 1; i < 4; ++i) {
    if (score.sum_loss[i] < score.sum_loss[score.pred]) score.pred = i;
    if (score.mean_loss[i] < score.mean_loss[score.pred_norm]) score.pred_norm = i;
  }
  return score;
}

HellaSwagResult EvalHellaSwag(GPT& model, const Tokenizer& tok, const std::vector<HellaSwagExample>& examples,
                              ProcessGroup* group) {
  const int rank = group ? group->rank() : 0, world = group ? group->world_size() : 1;
  int64_t counts[3] = {0, 0, 0};
  for (size_t i = static_cast<size_t>(rank); i < examples.size(); i += static_cast<size_t>(world)) {
    HellaSwagScore s = ScoreHellaSwag(model, tok, examples[i]);
    counts[0] += 1;
    counts[1] += s.pred == examples[i].label;
    counts[2] += s.pred_norm == examples[i].label;
  }
  if (group && world > 1) {
    // On the model's device: NCCL reduces CUDA tensors only.
    at::Tensor t = at::tensor(std::vector<int64_t>{counts[0], counts[1], counts[2]}, at::kLong)
                       .to(model->parameters()[0].device());
    group->AllReduceSum(t);
    t = t.cpu();
    for (int k = 0; k < 3; ++k) counts[k] = t[k].item<int64_t>();
  }
  return {counts[0], counts[1], counts[2]};
}

}  // namespace gpt2
