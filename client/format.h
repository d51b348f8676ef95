// What gpt2ctl prints: aligned tables, JSON (the API's own field names), times as ISO-8601 or ages,
// and the one-line progress of a training job. Pure functions of their inputs; no I/O but the
// stream a caller passes.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include "gpt2d/v1/cluster.pb.h"
#include "gpt2d/v1/generate.pb.h"
#include "gpt2d/v1/jobs.pb.h"

namespace gpt2::ctl {

// ---------------------------------------------------------------------------------------------
// Tables and JSON

// Columns left-aligned, separated by three spaces, headers in capitals as given.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void AddRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// The message as JSON with the .proto's field names (snake_case) and every field, zero or not.
// pretty: indented over several lines; else one line (for JSONL).
std::string ToJson(const google::protobuf::Message& message, bool pretty);

// "Key:    value" lines, the values aligned.
void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields, std::ostream& out);

// ---------------------------------------------------------------------------------------------
// Values

// "2025-01-31T12:00:00Z"; "-" when unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& t);
// "12s ago", "3m ago", "5h ago", "2d ago" relative to now_unix_seconds; "-" when unset.
std::string FormatAge(const google::protobuf::Timestamp& t, int64_t now_unix_seconds);
int64_t NowUnixSeconds();
// "2025-01-31T12:00:00Z (3m ago)"; "-" when unset.
std::string FormatTimestampAndAge(const google::protobuf::Timestamp& t, int64_t now_unix_seconds);
// "45s", "1m20s", "2h05m", "3d04h".
std::string FormatDuration(double seconds);
// 12345 -> "12,345".
std::string FormatThousands(int64_t n);
// Losses with four decimals; "-" for none.
std::string FormatLoss(std::optional<double> loss);
// 68719476736 -> "64.0 GiB".
std::string FormatBytes(int64_t bytes);

// State names, parsing and IsTerminal: common/states.h.

// ---------------------------------------------------------------------------------------------
// Progress

struct Progress {
  int64_t step = 0;       // optimizer steps completed
  int64_t max_steps = 0;  // 0: unknown, no bar
  std::optional<double> loss;
  std::optional<double> val_loss;
  double tokens_per_second = 0;
  std::optional<double> eta_seconds;
};

// "step 40/100 [=======>            ]  40% | loss 5.1234 | val 5.3000 | 12,345 tok/s | ETA 1m20s";
// parts that are unknown are left out.
std::string FormatProgress(const Progress& p);

// ---------------------------------------------------------------------------------------------
// Generation

// FINISH_REASON_LENGTH -> "length"; "eos", "stop", "cancelled".
std::string FinishReasonName(gpt2d::v1::FinishReason reason);

// "[finish: length | 24 tokens | ttft 0.123s | 45.6 tok/s | model job-000001 step 300]": tok/s counts
// the tokens after the first over the time after it (the decode rate; ttft covers the prompt). A
// model with no job is named by its path. mean_logprob, when given, is added before the model.
std::string FormatGenerateSummary(gpt2d::v1::FinishReason reason, const gpt2d::v1::Usage& usage,
                                  const gpt2d::v1::ModelVersion& model, std::optional<double> mean_logprob);

}  // namespace gpt2::ctl
