// The service edge's checks of what callers send, before anything reaches the coordinator:
// INVALID_ARGUMENT naming the field at fault. What passes is well formed; the coordinator only
// checks state (a taken name, an unknown job).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gpt2d/v1/cluster.pb.h"
#include "gpt2d/v1/train.pb.h"
#include "gpt2d/v1/worker.pb.h"
#include "server/job_scheduler.h"

namespace gpt2 {

// The spec resolves (common/job_spec.h: every field, the batch arithmetic) and the key is at
// most 256 bytes; returns what the scheduler needs of the spec.
absl::StatusOr<JobShape> ValidateSubmission(const v1::TrainSpec& spec, const std::string& idempotency_key);

// A name of lowercase letters, digits and '-' (at most 63, as a DNS label; empty: "default"),
// exactly one of checkpoint and follow_job, replicas in [1, 64] (0: 1). Returns `d` with those
// defaults (the fields gpt2d owns, worker_ids, status and created_at, are Deployments::Create's).
absl::StatusOr<v1::Deployment> ValidateDeployment(v1::Deployment d);

// A worker's Register: worker_id, device and host present.
absl::Status ValidateRegistration(const v1::Register& reg);

}  // namespace gpt2
