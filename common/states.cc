#include "common/states.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace gpt2 {
namespace {

constexpr std::string_view kJobStatePrefix = "JOB_STATE_";
constexpr std::string_view kWorkerStatePrefix = "WORKER_STATE_";

std::string StripPrefix(const std::string& name, std::string_view prefix) {
  return name.starts_with(prefix) ? name.substr(prefix.size()) : name;
}

}  // namespace

std::string JobStateName(gpt2d::v1::JobState state) {
  const std::string& name = gpt2d::v1::JobState_Name(state);
  return name.empty() ? absl::StrFormat("STATE_%d", static_cast<int>(state)) : StripPrefix(name, kJobStatePrefix);
}

std::string WorkerStateName(gpt2d::v1::WorkerState state) {
  const std::string& name = gpt2d::v1::WorkerState_Name(state);
  return name.empty() ? absl::StrFormat("STATE_%d", static_cast<int>(state)) : StripPrefix(name, kWorkerStatePrefix);
}

std::optional<gpt2d::v1::JobState> ParseJobState(std::string_view name) {
  std::string upper = absl::AsciiStrToUpper(std::string(name));
  if (!upper.starts_with(kJobStatePrefix)) upper = std::string(kJobStatePrefix) + upper;
  gpt2d::v1::JobState state;
  if (!gpt2d::v1::JobState_Parse(upper, &state) || state == gpt2d::v1::JOB_STATE_UNSPECIFIED) return std::nullopt;
  return state;
}

std::vector<std::string> JobStateChoices() {
  std::vector<std::string> choices;
  for (int i = gpt2d::v1::JobState_MIN; i <= gpt2d::v1::JobState_MAX; ++i) {
    if (i == gpt2d::v1::JOB_STATE_UNSPECIFIED || !gpt2d::v1::JobState_IsValid(i)) continue;
    choices.push_back(absl::AsciiStrToLower(JobStateName(static_cast<gpt2d::v1::JobState>(i))));
  }
  return choices;
}

bool IsTerminal(gpt2d::v1::JobState state) {
  return state == gpt2d::v1::JOB_STATE_SUCCEEDED || state == gpt2d::v1::JOB_STATE_FAILED ||
         state == gpt2d::v1::JOB_STATE_CANCELLED;
}

}  // namespace gpt2
