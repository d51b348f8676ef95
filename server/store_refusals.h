// Store writes refused inside the coordinator's own work (a job's events, a worker's state, a
// checkpoint row): logged, counted in gpt2_store_write_failures_total, and the first one kept so
// that the public operation that acknowledges the change can return it instead of OK. Shared by
// the coordinator's parts; not thread-safe (the coordinator's lock guards it).
#pragma once

#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gpt2d/v1/jobs.pb.h"
#include "gpt2d/v1/worker.pb.h"
#include "server/metrics.h"

namespace gpt2 {

namespace v1 = ::gpt2d::v1;

inline void CoordinatorLog(const std::string& line) { std::cerr << "gpt2d: " << line << std::endl; }


class StoreRefusals {
 public:
  explicit StoreRefusals(ServerMetrics& metrics) : metrics_(metrics) {}
  void Refused(const absl::Status& status) {
    CoordinatorLog(absl::StrCat("the job store refused a write: ", status.message()));
    metrics_.StoreWriteFailed();
    if (first_.ok()) first_ = status;
  }
  // The first refusal since the last Take (OK: none), and forgets it.
  absl::Status Take() {
    absl::Status s = std::move(first_);
    first_ = absl::OkStatus();
    return s;
  }

 private:
  ServerMetrics& metrics_;
  absl::Status first_;
};

}  // namespace gpt2
