#include "client/format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace gpt2::ctl {

// ---------------------------------------------------------------------------------------------
// Tables and JSON

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) widths[c] = headers_[c].size();
  for (const auto& row : rows_)
    for (size_t c = 0; c < row.size() && c < widths.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < widths.size(); ++c) {
      const std::string& cell = c < row.size() ? row[c] : "";
      line += cell;
      if (c + 1 < widths.size()) line += std::string(widths[c] - cell.size() + 3, ' ');
    }
    out << line << '\n';
  };
  print_row(headers_);
  for (const auto& row : rows_) print_row(row);
}

void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields, std::ostream& out) {
  size_t width = 0;
  for (const auto& [key, value] : fields) width = std::max(width, key.size());
  for (const auto& [key, value] : fields)
    out << key << ":" << std::string(width - key.size() + 2, ' ') << value << "\n";
  out << std::flush;
}

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = pretty;
  std::string json;
  // Fails only for messages that cannot be JSON (unresolvable Any); ours always can.
  google::protobuf::util::Status s = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!s.ok()) return absl::StrFormat("{\"error\": \"%s\"}", s.ToString());
  if (pretty && !json.empty() && json.back() == '\n') json.pop_back();
  return json;
}

// ---------------------------------------------------------------------------------------------
// Values

namespace {
bool IsSet(const google::protobuf::Timestamp& t) { return t.seconds() != 0 || t.nanos() != 0; }
}  // namespace

std::string FormatTimestamp(const google::protobuf::Timestamp& t) {
  if (!IsSet(t)) return "-";
  const std::time_t seconds = static_cast<std::time_t>(t.seconds());
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int64_t NowUnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string FormatAge(const google::protobuf::Timestamp& t, int64_t now_unix_seconds) {
  if (!IsSet(t)) return "-";
  const int64_t age = std::max<int64_t>(0, now_unix_seconds - t.seconds());
  if (age < 60) return absl::StrFormat("%ds ago", age);
  if (age < 3600) return absl::StrFormat("%dm ago", age / 60);
  if (age < 48 * 3600) return absl::StrFormat("%dh ago", age / 3600);
  return absl::StrFormat("%dd ago", age / 86400);
}

std::string FormatTimestampAndAge(const google::protobuf::Timestamp& t, int64_t now_unix_seconds) {
  if (!IsSet(t)) return "-";
  return FormatTimestamp(t) + " (" + FormatAge(t, now_unix_seconds) + ")";
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
}

std::string FormatThousands(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string FormatLoss(std::optional<double> loss) { return loss ? absl::StrFormat("%.4f", *loss) : "-"; }

std::string FormatBytes(int64_t bytes) {
  if (bytes <= 0) return "-";
  constexpr double kGiB = 1024.0 * 1024 * 1024;
  if (bytes >= kGiB) return absl::StrFormat("%.1f GiB", bytes / kGiB);
  return absl::StrFormat("%.0f MiB", bytes / (1024.0 * 1024));
}

// ---------------------------------------------------------------------------------------------
// Progress

std::string FormatProgress(const Progress& p) {
  constexpr int kBarWidth = 20;
  std::string line = absl::StrFormat("step %d", p.step);
  if (p.max_steps > 0) {
    const double fraction = std::clamp(static_cast<double>(p.step) / static_cast<double>(p.max_steps), 0.0, 1.0);
    const int filled = static_cast<int>(fraction * kBarWidth);
    std::string bar(kBarWidth, ' ');
    for (int i = 0; i < filled; ++i) bar[i] = '=';
    if (filled < kBarWidth) bar[filled] = '>';
    absl::StrAppendFormat(&line, "/%d [%s] %3d%%", p.max_steps, bar, static_cast<int>(fraction * 100));
  }
  if (p.loss) absl::StrAppendFormat(&line, " | loss %.4f", *p.loss);
  if (p.val_loss) absl::StrAppendFormat(&line, " | val %.4f", *p.val_loss);
  if (p.tokens_per_second > 0)
    absl::StrAppendFormat(&line, " | %s tok/s", FormatThousands(std::llround(p.tokens_per_second)));
  if (p.eta_seconds) absl::StrAppendFormat(&line, " | ETA %s", FormatDuration(*p.eta_seconds));
  return line;
}

// ---------------------------------------------------------------------------------------------
// Generation

std::string FinishReasonName(gpt2d::v1::FinishReason reason) {
  const std::string& name = gpt2d::v1::FinishReason_Name(reason);
  if (name.empty()) return absl::StrFormat("reason_%d", static_cast<int>(reason));
  constexpr std::string_view kPrefix = "FINISH_REASON_";
  return absl::AsciiStrToLower(name.starts_with(kPrefix) ? name.substr(kPrefix.size()) : name);
}

std::string FormatGenerateSummary(gpt2d::v1::FinishReason reason, const gpt2d::v1::Usage& usage,
                                  const gpt2d::v1::ModelVersion& model, std::optional<double> mean_logprob) {
  const int32_t tokens = usage.completion_tokens();
  std::string line =
      absl::StrFormat("[finish: %s | %d token%s", FinishReasonName(reason), tokens, tokens == 1 ? "" : "s");
  const double ttft = usage.time_to_first_token_seconds(), duration = usage.duration_seconds();
  if (tokens > 0 && ttft > 0) absl::StrAppendFormat(&line, " | ttft %.3fs", ttft);
  if (tokens > 1 && duration > ttft) {
    absl::StrAppendFormat(&line, " | %.1f tok/s", (tokens - 1) / (duration - ttft));
  } else if (tokens > 0 && duration > 0) {
    absl::StrAppendFormat(&line, " | %.1f tok/s", tokens / duration);
  }
  if (mean_logprob) absl::StrAppendFormat(&line, " | mean logprob %.3f", *mean_logprob);
  if (!model.job_id().empty()) {
    absl::StrAppendFormat(&line, " | model %s step %d", model.job_id(), model.step());
  } else if (!model.path().empty()) {
    absl::StrAppendFormat(&line, " | model %s", model.path());
  } else if (model.step() > 0) {
    absl::StrAppendFormat(&line, " | model step %d", model.step());
  }
  return line + "]";
}

}  // namespace gpt2::ctl
