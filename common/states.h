// The job and worker states of the API (gpt2d.v1), named and classified once for gpt2d and
// gpt2ctl alike.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gpt2d/v1/cluster.pb.h"
#include "gpt2d/v1/jobs.pb.h"

namespace gpt2 {

// JOB_STATE_RUNNING -> "RUNNING"; WORKER_STATE_IDLE -> "IDLE"; an unknown value -> "STATE_<n>".
std::string JobStateName(gpt2d::v1::JobState state);
std::string WorkerStateName(gpt2d::v1::WorkerState state);
// "running", "RUNNING", "job_state_running" -> JOB_STATE_RUNNING; nullopt for anything else.
std::optional<gpt2d::v1::JobState> ParseJobState(std::string_view name);
// The names ParseJobState accepts, lower case, for help and errors.
std::vector<std::string> JobStateChoices();
// SUCCEEDED, FAILED or CANCELLED: the job will not change again.
bool IsTerminal(gpt2d::v1::JobState state);

}  // namespace gpt2
