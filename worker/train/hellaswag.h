// HellaSwag, completion style (build-nanogpt's hellaswag.py): each of the four endings is scored
// as the continuation " " + ending of the context; the prediction is the ending with the lowest
// total loss (acc) and with the lowest mean loss per token (acc_norm, the number usually quoted:
// GPT-2 124M scores 0.2955 on the 10,042 validation examples).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"
#include "worker/model/gpt2.h"
#include "worker/train/hellaswag_data.h"

namespace gpt2 {

class ProcessGroup;

struct HellaSwagScore {
  std::vector<double> sum_loss, mean_loss;  // per ending, nats
  int pred = 0, pred_norm = 0;
};

// Scores one example: one batch of four rows, right-padded, loss masked to the ending tokens. Rows
// longer than the context keep their last n_positions tokens.
HellaSwagScore ScoreHellaSwag(GPT& model, const Tokenizer& tokenizer, const HellaSwagExample& example);

struct HellaSwagResult {
  int64_t examples = 0, correct = 0, correct_norm = 0;
  double acc() const { return examples ? static_cast<double>(correct) / examples : 0; }
  double acc_norm() const { return examples ? static_cast<double>(correct_norm) / examples : 0; }
};

// Rank r scores examples i with i % world == r; counts are summed over ranks (group may be null
// for a single process).
HellaSwagResult EvalHellaSwag(GPT& model, const Tokenizer& tokenizer, const std::vector<HellaSwagExample>& examples,
                              ProcessGroup* group);

}  // namespace gpt2
