// The coordinator keeps its promise that a state change is on disk before it is acknowledged: a
// job store that refuses writes (a database locked by another process; a full disk) fails the
// operation with a status that says why, and nothing is changed or reported done. Real SQLite
// files; the full disk is a 256 KiB tmpfs (root only: skipped otherwise).
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "server/coordinator.h"
#include "server/validation.h"
#include "server/metrics.h"
#include "server/store.h"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;
namespace v1 = gpt2d::v1;
using namespace std::chrono_literals;

v1::TrainSpec Spec() {
  v1::TrainSpec spec;
  spec.mutable_data()->set_dir("/data");
  return spec;
}

class StoreRefusalTest : public ::testing::Test {
 protected:
  void Open(const fs::path& dir) {
    dir_ = dir;
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open((dir / "gpt2d.db").string(), /*busy_timeout_ms=*/50);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    CoordinatorOptions o;
    o.checkpoint_root = (dir / "runs").string();
    coordinator_ = std::make_unique<Coordinator>(*store_, o, metrics_);
    ASSERT_TRUE(coordinator_->Start().ok());
  }
  void TearDown() override { coordinator_.reset(); }
  static v1::Register Worker() {
    v1::Register reg;
    reg.set_worker_id("w0");
    reg.set_device("cpu");
    reg.set_host("127.0.0.1");
    return reg;
  }
  std::vector<v1::Job> Jobs() {
    std::string next;
    absl::StatusOr<std::vector<v1::Job>> jobs = store_->ListJobs({}, 100, "", &next);
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    return jobs.ok() ? *jobs : std::vector<v1::Job>{};
  }

  fs::path dir_;
  ServerMetrics metrics_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<Coordinator> coordinator_;
};

// Another connection holds the write lock (as `sqlite3 gpt2d.db` with BEGIN EXCLUSIVE would).
class Lock {
 public:
  explicit Lock(const fs::path& db) {
    EXPECT_EQ(sqlite3_open(db.c_str(), &db_), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db_, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  }
  ~Lock() {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(db_);
  }

 private:
  sqlite3* db_ = nullptr;
};

TEST_F(StoreRefusalTest, ALockedDatabaseFailsTheOperationAndChangesNothing) {
  const fs::path dir = fs::temp_directory_path() / ("gpt2d-store-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  Open(dir);
  {
    Lock lock(dir / "gpt2d.db");
    absl::StatusOr<v1::Job> refused = coordinator_->Submit(Spec(), *ValidateSubmission(Spec(), ""), "");
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
    EXPECT_NE(refused.status().message().find("locked"), std::string::npos) << refused.status();
  }
  EXPECT_TRUE(Jobs().empty());
  absl::StatusOr<v1::Job> job = coordinator_->Submit(Spec(), *ValidateSubmission(Spec(), ""), "");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_QUEUED);
  {
    Lock lock(dir / "gpt2d.db");
    absl::StatusOr<v1::Job> refused = coordinator_->Cancel(job->id());
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
    EXPECT_NE(refused.status().message().find("not cancelled"), std::string::npos) << refused.status();
    v1::Deployment d;
    d.set_name("default");
    d.set_checkpoint("/models/step_00000001");
    EXPECT_EQ(coordinator_->CreateDeployment(d).status().code(), absl::StatusCode::kUnavailable);
    absl::StatusOr<std::shared_ptr<WorkerSession>> session = coordinator_->Connect(Worker(), [] {});
    ASSERT_FALSE(session.ok());  // a registration nobody could remember is refused; the worker retries
    EXPECT_EQ(session.status().code(), absl::StatusCode::kUnavailable) << session.status();
    EXPECT_NE(session.status().message().find("not registered"), std::string::npos) << session.status();
  }
  EXPECT_TRUE(coordinator_->ListWorkers().empty());
  EXPECT_EQ(store_->GetJob(job->id())->state(), v1::JOB_STATE_QUEUED);  // the refused cancel changed nothing
  EXPECT_TRUE(coordinator_->ListDeployments().empty());
  absl::StatusOr<v1::Job> cancelled = coordinator_->Cancel(job->id());  // the job is still cancellable
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(store_->GetJob(job->id())->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(coordinator_->Connect(Worker(), [] {}).ok());  // the worker's retry, the lock gone
  ASSERT_EQ(coordinator_->ListWorkers().size(), 1u);
  EXPECT_EQ(coordinator_->ListWorkers()[0].state(), v1::WORKER_STATE_IDLE);
  coordinator_.reset();
  store_.reset();
  fs::remove_all(dir);
}

TEST_F(StoreRefusalTest, AFullDiskIsResourceExhaustedAndRecoversWhenSpaceReturns) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  const fs::path dir = fs::temp_directory_path() / ("gpt2d-full-disk-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=256k") != 0) {
    fs::remove_all(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here";
  }
  Open(dir);
  absl::StatusOr<v1::Job> first = coordinator_->Submit(Spec(), *ValidateSubmission(Spec(), ""), "");
  ASSERT_TRUE(first.ok()) << first.status();
  {  // fill the disk
    std::FILE* f = std::fopen((dir / "filler").c_str(), "wb");
    ASSERT_NE(f, nullptr);
    const std::string block(4096, 'x');
    while (std::fwrite(block.data(), 1, block.size(), f) == block.size() && std::fflush(f) == 0) {
    }
    std::fclose(f);
  }
  absl::StatusOr<v1::Job> refused = coordinator_->Submit(Spec(), *ValidateSubmission(Spec(), ""), "");
  for (int i = 0; i < 50 && refused.ok(); ++i) refused = coordinator_->Submit(Spec(), *ValidateSubmission(Spec(), ""), "");  // SQLite's free pages
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("full"), std::string::npos) << refused.status();
  const size_t stored = Jobs().size();
  absl::StatusOr<v1::Job> not_cancelled = coordinator_->Cancel(first->id());
  EXPECT_FALSE(not_cancelled.ok());
  EXPECT_EQ(store_->GetJob(first->id())->state(), v1::JOB_STATE_QUEUED);
  fs::remove(dir / "filler");
  absl::StatusOr<v1::Job> again = coordinator_->Submit(Spec(), *ValidateSubmission(Spec(), ""), "");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(Jobs().size(), stored + 1);
  EXPECT_TRUE(coordinator_->Cancel(first->id()).ok());
  coordinator_.reset();
  store_.reset();
  ::umount(dir.c_str());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gpt2
