#include "worker/data/prep_command.h"

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/tokenizer.h"

namespace gpt2 {
namespace {

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kBadInput = 2;

int Fail(const absl::Status& status, std::ostream& err) {
  err << "error: " << status.message() << "\n";
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
      return kBadInput;
    default:
      return kFailed;
  }
}

}  // namespace

int RunPrepCommand(const PrepOptions& options, std::ostream& out, std::ostream& err) {
  absl::StatusOr<Tokenizer> tokenizer = LoadTokenizer(options.vocab);
  if (!tokenizer.ok()) {
    err << "error: " << tokenizer.status().message() << "\n";
    return kFailed;
  }
  absl::StatusOr<PrepResult> result = PrepareShards(*tokenizer, options, err);
  if (!result.ok()) return Fail(result.status(), err);

  const nlohmann::ordered_json summary = {
      {"documents", result->documents},
      {"tokens", result->tokens},
      {"shards", result->shards},
      {"val_tokens", result->val_tokens},
      {"train_tokens", result->train_tokens},
      {"skipped_lines", result->skipped_lines},
  };
  out << summary.dump() << "\n" << std::flush;
  return out ? kOk : kFailed;
}

}  // namespace gpt2
