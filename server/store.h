// gpt2d's durable state in one SQLite database (WAL): jobs with their specs, each job's event
// history (state changes, step metrics, evals, checkpoints, notes), checkpoints and workers.
// Messages are stored as serialized protos beside the columns queries need.
//
// Thread-safe: one connection behind a mutex. Every method is one transaction; a crash leaves
// either all of a method's writes or none.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gpt2d/v1/cluster.pb.h"
#include "gpt2d/v1/jobs.pb.h"

struct sqlite3;

namespace gpt2 {

namespace v1 = ::gpt2d::v1;

class JobStore {
 public:
  // Opens (creating when missing) the database at `path`; ":memory:" for tests.
  // A write that finds the database locked retries for busy_timeout_ms, then fails (UNAVAILABLE).
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path, int busy_timeout_ms = 5000);
  ~JobStore();

  // Inserts `job` under a new id ("job-000001", ...). With a non-empty idempotency key that was used
  // before, inserts nothing and returns the earlier job with *existed = true.
  // `named` runs once the id is set, before the insert (e.g. to derive paths from the id).
  absl::StatusOr<v1::Job> CreateJob(v1::Job job, const std::string& idempotency_key, bool* existed,
                                    const std::function<void(v1::Job&)>& named = nullptr);
  absl::Status UpdateJob(const v1::Job& job);
  // NOT_FOUND names the id.
  absl::StatusOr<v1::Job> GetJob(const std::string& id);
  // Newest first. page_token is empty or a previous next_page_token (INVALID_ARGUMENT otherwise).
  absl::StatusOr<std::vector<v1::Job>> ListJobs(const std::vector<v1::JobState>& states, int page_size,
                                                const std::string& page_token, std::string* next_page_token);
  absl::StatusOr<std::map<v1::JobState, int64_t>> CountJobsByState();
  // Jobs not yet finished (QUEUED, RUNNING, RESTARTING), oldest first.
  absl::StatusOr<std::vector<v1::Job>> ActiveJobs();

  // Appends `event` to the job's history with sequence job->last_sequence + 1 and writes *job
  // (its last_sequence and updated_at advanced) in the same transaction.
  absl::StatusOr<v1::JobEvent> AppendEvent(v1::Job* job, v1::JobEvent event);
  // Up to `limit` events with sequence > after, in order.
  absl::StatusOr<std::vector<v1::JobEvent>> ListEvents(const std::string& job_id, int64_t after, int limit);
  // The highest step among the job's events of one kind (step, eval, checkpoint); 0 when none.
  absl::StatusOr<int64_t> LastEventStep(const std::string& job_id, v1::JobEvent::EventCase kind);
  // Thins a finished job's step events to about `max_points`: all of the first 100 steps, then
  // evenly spaced, and the last.
  absl::Status ThinStepEvents(const std::string& job_id, int64_t max_steps, int max_points);

  absl::Status PutCheckpoint(const v1::Checkpoint& checkpoint);
  // Keeps only the job's checkpoints whose path is in `retained`.
  absl::Status RetainCheckpoints(const std::string& job_id, const std::vector<std::string>& retained);
  absl::StatusOr<std::vector<v1::Checkpoint>> ListCheckpoints(const std::string& job_id);
  // The newest checkpoint (highest step), nullopt when there is none.
  absl::StatusOr<std::optional<v1::Checkpoint>> LatestCheckpoint(const std::string& job_id);

  absl::Status PutDeployment(const v1::Deployment& deployment);
  absl::Status DeleteDeployment(const std::string& name);
  absl::StatusOr<std::vector<v1::Deployment>> ListDeployments();

  absl::Status PutWorker(const v1::Worker& worker);
  absl::StatusOr<std::vector<v1::Worker>> ListWorkers();

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace gpt2
