#include "server/store.h"

#include <google/protobuf/util/time_util.h>
#include <sqlite3.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/states.h"

namespace gpt2 {
namespace {

using google::protobuf::util::TimeUtil;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  num INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  idempotency_key TEXT UNIQUE,
  job BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  step INTEGER,
  event BLOB NOT NULL,
  PRIMARY KEY (job_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
  job_id TEXT NOT NULL,
  step INTEGER NOT NULL,
  checkpoint BLOB NOT NULL,
  PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deployments (
  name TEXT PRIMARY KEY,
  deployment BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
  id TEXT PRIMARY KEY,
  worker BLOB NOT NULL
) WITHOUT ROWID;
)sql";

// A refused write says why, in the code a caller can act on: UNAVAILABLE for a database that is
// locked, read-only or failing I/O (retry later), RESOURCE_EXHAUSTED for a full disk.
absl::Status Error(sqlite3* db, const std::string& what) {
  const std::string message = absl::StrCat("job store: ", what, ": ", sqlite3_errmsg(db));
  switch (sqlite3_errcode(db) & 0xff) {
    case SQLITE_FULL: return absl::ResourceExhaustedError(message);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN: return absl::UnavailableError(message);
    default: return absl::InternalError(message);
  }
}

// One prepared statement; binds by position (1-based), steps, finalizes on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  absl::Status Run(const std::string& what) {
    if (!ok()) return Error(db_, what);
    const int rc = Step();
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? absl::OkStatus() : Error(db_, what);
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    return std::string(static_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back unless Commit() succeeds.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {
    ok_ = sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  ~Transaction() {
    if (ok_ && !done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  absl::Status Begun() { return ok_ ? absl::OkStatus() : Error(db_, "begin"); }
  absl::Status Commit() {
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return Error(db_, "commit");
    done_ = true;
    return absl::OkStatus();
  }

 private:
  sqlite3* db_;
  bool ok_ = false, done_ = false;
};

template <typename Message>
absl::StatusOr<Message> Parse(const std::string& bytes, const std::string& what) {
  Message m;
  if (!m.ParseFromString(bytes)) return absl::DataLossError(absl::StrCat("job store: corrupt ", what));
  return m;
}

absl::Status WriteJob(sqlite3* db, const v1::Job& job) {
  Stmt st(db, "UPDATE jobs SET state = ?1, job = ?2 WHERE id = ?3");
  st.Bind(1, static_cast<int64_t>(job.state())).BindBlob(2, job.SerializeAsString()).Bind(3, job.id());
  if (absl::Status s = st.Run("update job"); !s.ok()) return s;
  if (sqlite3_changes(db) == 0) return absl::NotFoundError(absl::StrCat("no job ", job.id()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path, int busy_timeout_ms) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open the database ", path, ": ", msg));
  }
  std::unique_ptr<JobStore> store(new JobStore(db));
  sqlite3_busy_timeout(db, busy_timeout_ms);
  // WAL: readers never block the writer; synchronous=FULL so that an acknowledged write survives a
  // power loss, not only a process crash (writes are per event, a few per second at most).
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON", kSchema}) {
    if (absl::Status s = store->Exec(sql); !s.ok())
      return absl::UnavailableError(absl::StrCat("cannot initialise the database ", path, ": ", s.message()));
  }
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::Status JobStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(msg);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobStore::CreateJob(v1::Job job, const std::string& idempotency_key, bool* existed,
                                            const std::function<void(v1::Job&)>& named) {
  std::lock_guard lock(mu_);
  *existed = false;
  Transaction tx(db_);
  if (absl::Status s = tx.Begun(); !s.ok()) return s;
  if (!idempotency_key.empty()) {
    Stmt st(db_, "SELECT job FROM jobs WHERE idempotency_key = ?1");
    st.Bind(1, idempotency_key);
    if (st.Step() == SQLITE_ROW) {
      *existed = true;
      return Parse<v1::Job>(st.Blob(0), "job");
    }
  }
  // Ids count up from 1 and are never reused (jobs are never deleted); the transaction is
  // IMMEDIATE, so no other writer can take the same number.
  Stmt next(db_, "SELECT COALESCE(MAX(num), 0) + 1 FROM jobs");
  if (next.Step() != SQLITE_ROW) return Error(db_, "next job id");
  const int64_t num = next.Int(0);
  job.set_id(absl::StrFormat("job-%06d", num));
  if (named) named(job);
  Stmt ins(db_, "INSERT INTO jobs (num, id, state, idempotency_key, job) VALUES (?1, ?2, ?3, ?4, ?5)");
  ins.Bind(1, num).Bind(2, job.id()).Bind(3, static_cast<int64_t>(job.state()));
  if (idempotency_key.empty())
    ins.BindNull(4);
  else
    ins.Bind(4, idempotency_key);
  ins.BindBlob(5, job.SerializeAsString());
  if (absl::Status s = ins.Run("insert job"); !s.ok()) return s;
  if (absl::Status s = tx.Commit(); !s.ok()) return s;
  return job;
}

absl::Status JobStore::UpdateJob(const v1::Job& job) {
  std::lock_guard lock(mu_);
  return WriteJob(db_, job);
}

absl::StatusOr<v1::Job> JobStore::GetJob(const std::string& id) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT job FROM jobs WHERE id = ?1");
  st.Bind(1, id);
  const int rc = st.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("no job \"", id, "\""));
  if (rc != SQLITE_ROW) return Error(db_, "get job");
  return Parse<v1::Job>(st.Blob(0), "job");
}

absl::StatusOr<std::vector<v1::Job>> JobStore::ListJobs(const std::vector<v1::JobState>& states, int page_size,
                                                        const std::string& page_token, std::string* next_page_token) {
  int64_t before = INT64_MAX;
  if (!page_token.empty()) {
    auto [end, ec] = std::from_chars(page_token.data(), page_token.data() + page_token.size(), before);
    if (ec != std::errc() || end != page_token.data() + page_token.size() || before <= 0)
      return absl::InvalidArgumentError("page_token: not a token from a previous ListJobs response");
  }
  std::string state_mask;  // states as a set literal; they are enum numbers, not user text
  for (v1::JobState s : states) absl::StrAppend(&state_mask, state_mask.empty() ? "" : ",", static_cast<int>(s));
  const std::string sql =
      absl::StrCat("SELECT num, job FROM jobs WHERE num < ?1", state_mask.empty() ? "" : " AND state IN (", state_mask,
                   state_mask.empty() ? "" : ")", " ORDER BY num DESC LIMIT ?2");
  std::lock_guard lock(mu_);
  Stmt st(db_, sql.c_str());
  st.Bind(1, before).Bind(2, static_cast<int64_t>(page_size) + 1);
  std::vector<v1::Job> jobs;
  int64_t last = 0;
  next_page_token->clear();
  while (st.Step() == SQLITE_ROW) {
    if (static_cast<int>(jobs.size()) == page_size) {
      *next_page_token = absl::StrCat(last);
      break;
    }
    last = st.Int(0);
    absl::StatusOr<v1::Job> job = Parse<v1::Job>(st.Blob(1), "job");
    if (!job.ok()) return job.status();
    jobs.push_back(*std::move(job));
  }
  return jobs;
}

absl::StatusOr<std::map<v1::JobState, int64_t>> JobStore::CountJobsByState() {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  std::map<v1::JobState, int64_t> out;
  while (st.Step() == SQLITE_ROW) out[static_cast<v1::JobState>(st.Int(0))] = st.Int(1);
  return out;
}

absl::StatusOr<std::vector<v1::Job>> JobStore::ActiveJobs() {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT job FROM jobs WHERE state IN (?1, ?2, ?3) ORDER BY num");
  st.Bind(1, v1::JOB_STATE_QUEUED).Bind(2, v1::JOB_STATE_RUNNING).Bind(3, v1::JOB_STATE_RESTARTING);
  std::vector<v1::Job> jobs;
  while (st.Step() == SQLITE_ROW) {
    absl::StatusOr<v1::Job> job = Parse<v1::Job>(st.Blob(0), "job");
    if (!job.ok()) return job.status();
    jobs.push_back(*std::move(job));
  }
  return jobs;
}

absl::StatusOr<v1::JobEvent> JobStore::AppendEvent(v1::Job* job, v1::JobEvent event) {
  std::lock_guard lock(mu_);
  Transaction tx(db_);
  if (absl::Status s = tx.Begun(); !s.ok()) return s;
  event.set_sequence(job->last_sequence() + 1);
  if (!event.has_time()) *event.mutable_time() = TimeUtil::GetCurrentTime();
  Stmt st(db_, "INSERT INTO events (job_id, sequence, kind, step, event) VALUES (?1, ?2, ?3, ?4, ?5)");
  st.Bind(1, job->id()).Bind(2, event.sequence()).Bind(3, static_cast<int64_t>(event.event_case()));
  if (event.has_step())
    st.Bind(4, event.step().step());
  else if (event.has_eval())
    st.Bind(4, event.eval().step());
  else if (event.has_checkpoint())
    st.Bind(4, event.checkpoint().step());
  else
    st.BindNull(4);
  st.BindBlob(5, event.SerializeAsString());
  if (absl::Status s = st.Run("append event"); !s.ok()) return s;
  v1::Job updated = *job;
  updated.set_last_sequence(event.sequence());
  *updated.mutable_updated_at() = event.time();
  if (absl::Status s = WriteJob(db_, updated); !s.ok()) return s;
  if (absl::Status s = tx.Commit(); !s.ok()) return s;
  *job = std::move(updated);
  return event;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::ListEvents(const std::string& job_id, int64_t after, int limit) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT event FROM events WHERE job_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3");
  st.Bind(1, job_id).Bind(2, after).Bind(3, limit);
  std::vector<v1::JobEvent> events;
  while (st.Step() == SQLITE_ROW) {
    absl::StatusOr<v1::JobEvent> e = Parse<v1::JobEvent>(st.Blob(0), "event");
    if (!e.ok()) return e.status();
    events.push_back(*std::move(e));
  }
  return events;
}

absl::StatusOr<int64_t> JobStore::LastEventStep(const std::string& job_id, v1::JobEvent::EventCase kind) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT COALESCE(MAX(step), 0) FROM events WHERE job_id = ?1 AND kind = ?2");
  st.Bind(1, job_id).Bind(2, static_cast<int64_t>(kind));
  if (st.Step() != SQLITE_ROW) return Error(db_, "last event step");
  return st.Int(0);
}

absl::Status JobStore::ThinStepEvents(const std::string& job_id, int64_t max_steps, int max_points) {
  const int64_t stride = std::max<int64_t>(1, max_steps / std::max(1, max_points - 100));
  std::lock_guard lock(mu_);
  Stmt st(db_,
          "DELETE FROM events WHERE job_id = ?1 AND kind = ?2 AND step > 100 AND step % ?3 != 0 AND step < "
          "(SELECT MAX(step) FROM events WHERE job_id = ?1 AND kind = ?2)");
  st.Bind(1, job_id).Bind(2, static_cast<int64_t>(v1::JobEvent::kStep)).Bind(3, stride);
  return st.Run("thin step events");
}

absl::Status JobStore::PutCheckpoint(const v1::Checkpoint& checkpoint) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "INSERT OR REPLACE INTO checkpoints (job_id, step, checkpoint) VALUES (?1, ?2, ?3)");
  st.Bind(1, checkpoint.job_id()).Bind(2, checkpoint.step()).BindBlob(3, checkpoint.SerializeAsString());
  return st.Run("put checkpoint");
}

absl::Status JobStore::RetainCheckpoints(const std::string& job_id, const std::vector<std::string>& retained) {
  absl::StatusOr<std::vector<v1::Checkpoint>> all = ListCheckpoints(job_id);
  if (!all.ok()) return all.status();
  const std::set<std::string> keep(retained.begin(), retained.end());
  std::lock_guard lock(mu_);
  for (const v1::Checkpoint& c : *all) {
    if (keep.count(c.path())) continue;
    Stmt st(db_, "DELETE FROM checkpoints WHERE job_id = ?1 AND step = ?2");
    st.Bind(1, job_id).Bind(2, c.step());
    if (absl::Status s = st.Run("delete checkpoint"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Checkpoint>> JobStore::ListCheckpoints(const std::string& job_id) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT checkpoint FROM checkpoints WHERE job_id = ?1 ORDER BY step");
  st.Bind(1, job_id);
  std::vector<v1::Checkpoint> out;
  while (st.Step() == SQLITE_ROW) {
    absl::StatusOr<v1::Checkpoint> c = Parse<v1::Checkpoint>(st.Blob(0), "checkpoint");
    if (!c.ok()) return c.status();
    out.push_back(*std::move(c));
  }
  return out;
}

absl::StatusOr<std::optional<v1::Checkpoint>> JobStore::LatestCheckpoint(const std::string& job_id) {
  absl::StatusOr<std::vector<v1::Checkpoint>> all = ListCheckpoints(job_id);
  if (!all.ok()) return all.status();
  if (all->empty()) return std::optional<v1::Checkpoint>();
  return std::optional<v1::Checkpoint>(all->back());
}

absl::Status JobStore::PutDeployment(const v1::Deployment& d) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "INSERT OR REPLACE INTO deployments (name, deployment) VALUES (?1, ?2)");
  st.Bind(1, d.name()).BindBlob(2, d.SerializeAsString());
  return st.Run("put deployment");
}

absl::Status JobStore::DeleteDeployment(const std::string& name) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "DELETE FROM deployments WHERE name = ?1");
  st.Bind(1, name);
  return st.Run("delete deployment");
}

absl::StatusOr<std::vector<v1::Deployment>> JobStore::ListDeployments() {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT deployment FROM deployments ORDER BY name");
  std::vector<v1::Deployment> out;
  while (st.Step() == SQLITE_ROW) {
    absl::StatusOr<v1::Deployment> d = Parse<v1::Deployment>(st.Blob(0), "deployment");
    if (!d.ok()) return d.status();
    out.push_back(*std::move(d));
  }
  return out;
}

absl::Status JobStore::PutWorker(const v1::Worker& worker) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "INSERT OR REPLACE INTO workers (id, worker) VALUES (?1, ?2)");
  st.Bind(1, worker.id()).BindBlob(2, worker.SerializeAsString());
  return st.Run("put worker");
}

absl::StatusOr<std::vector<v1::Worker>> JobStore::ListWorkers() {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT worker FROM workers ORDER BY id");
  std::vector<v1::Worker> out;
  while (st.Step() == SQLITE_ROW) {
    absl::StatusOr<v1::Worker> w = Parse<v1::Worker>(st.Blob(0), "worker");
    if (!w.ok()) return w.status();
    out.push_back(*std::move(w));
  }
  return out;
}

}  // namespace gpt2
