#include "server/validation.h"

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"

namespace gpt2 {
namespace {

// [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?
bool IsDnsLabel(const std::string& s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}

}  // namespace

absl::StatusOr<JobShape> ValidateSubmission(const v1::TrainSpec& spec, const std::string& idempotency_key) {
  absl::StatusOr<TrainConfig> config = ResolveTrainSpec(spec);
  if (!config.ok()) return config.status();
  if (idempotency_key.size() > 256) return absl::InvalidArgumentError("idempotency_key: longer than 256 bytes");
  return JobShape{config->name, config->max_steps, config->world_size};
}

absl::StatusOr<v1::Deployment> ValidateDeployment(v1::Deployment d) {
  if (d.name().empty()) d.set_name("default");
  if (!IsDnsLabel(d.name()))
    return absl::InvalidArgumentError(
        absl::StrCat("deployment.name: \"", d.name(), "\" must be lowercase letters, digits and '-', at most 63"));
  if (d.checkpoint().empty() == d.follow_job().empty())
    return absl::InvalidArgumentError("deployment.checkpoint: set exactly one of checkpoint and follow_job");
  if (d.replicas() == 0) d.set_replicas(1);
  if (d.replicas() < 1 || d.replicas() > 64)
    return absl::InvalidArgumentError(absl::StrCat("deployment.replicas: ", d.replicas(), " is not in [1, 64]"));
  return d;
}

absl::Status ValidateRegistration(const v1::Register& reg) {
  if (reg.worker_id().empty()) return absl::InvalidArgumentError("register.worker_id: required");
  if (reg.device().empty()) return absl::InvalidArgumentError("register.device: required (cpu, cuda:N)");
  if (reg.host().empty()) return absl::InvalidArgumentError("register.host: required (the rendezvous address)");
  return absl::OkStatus();
}

}  // namespace gpt2
