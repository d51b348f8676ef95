// gpt2d's job store on a real SQLite database (a file in a temporary directory): ids, paging,
// idempotency, event history, thinning, checkpoints, and that everything survives a reopen.
#include "server/store.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace gpt2 {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("store_test_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<JobStore>> s = JobStore::Open((dir_ / "gpt2d.db").string());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  v1::Job NewJob(const std::string& key = "") {
    v1::Job job;
    job.set_state(v1::JOB_STATE_QUEUED);
    job.mutable_spec()->set_name("t");
    bool existed = false;
    absl::StatusOr<v1::Job> created = store_->CreateJob(job, key, &existed);
    EXPECT_TRUE(created.ok()) << created.status();
    return *created;
  }
  std::filesystem::path dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(StoreTest, IdsCountUpAndIdempotencyKeysReturnTheFirstJob) {
  EXPECT_EQ(NewJob().id(), "job-000001");
  EXPECT_EQ(NewJob("k").id(), "job-000002");
  bool existed = false;
  absl::StatusOr<v1::Job> again = store_->CreateJob(v1::Job(), "k", &existed);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(existed);
  EXPECT_EQ(again->id(), "job-000002");
  EXPECT_EQ(NewJob().id(), "job-000003");
}

TEST_F(StoreTest, CreateJobNamesTheJobBeforeStoringIt) {
  bool existed = false;
  absl::StatusOr<v1::Job> job = store_->CreateJob(
      v1::Job(), "", &existed, [](v1::Job& j) { j.mutable_spec()->mutable_checkpoint()->set_dir("/ckpt/" + j.id()); });
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(store_->GetJob(job->id())->spec().checkpoint().dir(), "/ckpt/job-000001");
}

TEST_F(StoreTest, ListJobsPagesNewestFirstAndFiltersByState) {
  for (int i = 0; i < 5; ++i) NewJob();
  v1::Job third = *store_->GetJob("job-000003");
  third.set_state(v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(store_->UpdateJob(third).ok());

  std::string next;
  absl::StatusOr<std::vector<v1::Job>> page = store_->ListJobs({}, 2, "", &next);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].id(), "job-000005");
  EXPECT_EQ((*page)[1].id(), "job-000004");
  std::vector<std::string> ids;
  while (!next.empty()) {
    std::string token = next;
    page = store_->ListJobs({}, 2, token, &next);
    ASSERT_TRUE(page.ok());
    for (const auto& j : *page) ids.push_back(j.id());
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"job-000003", "job-000002", "job-000001"}));

  page = store_->ListJobs({v1::JOB_STATE_SUCCEEDED}, 50, "", &next);
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].id(), "job-000003");
  EXPECT_TRUE(next.empty());
  EXPECT_EQ(store_->ListJobs({}, 2, "not-a-token", &next).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store_->CountJobsByState())[v1::JOB_STATE_QUEUED], 4);
  EXPECT_EQ(store_->ActiveJobs()->size(), 4u);
}

TEST_F(StoreTest, EventsGetIncreasingSequencesAndSurviveAReopen) {
  v1::Job job = NewJob();
  for (int step = 1; step <= 3; ++step) {
    v1::JobEvent e;
    e.mutable_step()->set_step(step);
    job.set_step(step);
    absl::StatusOr<v1::JobEvent> stored = store_->AppendEvent(&job, e);
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->sequence(), step);
    EXPECT_TRUE(stored->has_time());
  }
  EXPECT_EQ(job.last_sequence(), 3);
  Reopen();
  EXPECT_EQ(store_->GetJob(job.id())->last_sequence(), 3);
  EXPECT_EQ(store_->GetJob(job.id())->step(), 3);  // written with the event, in one transaction
  absl::StatusOr<std::vector<v1::JobEvent>> after1 = store_->ListEvents(job.id(), 1, 100);
  ASSERT_TRUE(after1.ok());
  ASSERT_EQ(after1->size(), 2u);
  EXPECT_EQ((*after1)[0].step().step(), 2);
  EXPECT_EQ(*store_->LastEventStep(job.id(), v1::JobEvent::kStep), 3);
  EXPECT_EQ(*store_->LastEventStep(job.id(), v1::JobEvent::kEval), 0);
  EXPECT_EQ(store_->GetJob("job-000099").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, ThinningKeepsTheFirstStepsAnEvenGridTheLastAndEverythingElse) {
  v1::Job job = NewJob();
  for (int step = 1; step <= 1003; ++step) {
    v1::JobEvent e;
    e.mutable_step()->set_step(step);
    ASSERT_TRUE(store_->AppendEvent(&job, e).ok());
  }
  v1::JobEvent note;
  note.set_message("done");
  ASSERT_TRUE(store_->AppendEvent(&job, note).ok());
  ASSERT_TRUE(store_->ThinStepEvents(job.id(), 1003, 200).ok());  // stride 1003 / 100 = 10
  std::vector<int64_t> steps;
  bool saw_note = false;
  absl::StatusOr<std::vector<v1::JobEvent>> events = store_->ListEvents(job.id(), 0, 10000);
  ASSERT_TRUE(events.ok());
  for (const v1::JobEvent& e : *events) {
    if (e.has_step()) steps.push_back(e.step().step());
    saw_note |= e.has_message();
  }
  EXPECT_TRUE(saw_note);
  ASSERT_GT(steps.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(steps[i], i + 1);
  EXPECT_EQ(steps[100], 110);
  EXPECT_EQ(steps.back(), 1003);
  EXPECT_EQ(steps.size(), 100u + 90u + 1u);  // 110..1000 by 10, then the last
}

TEST_F(StoreTest, CheckpointsFollowRetention) {
  v1::Job job = NewJob();
  for (int step : {10, 20, 30}) {
    v1::Checkpoint c;
    c.set_job_id(job.id());
    c.set_step(step);
    c.set_path("/c/step_" + std::to_string(step));
    ASSERT_TRUE(store_->PutCheckpoint(c).ok());
  }
  ASSERT_TRUE(store_->RetainCheckpoints(job.id(), {"/c/step_20", "/c/step_30"}).ok());
  std::vector<int64_t> steps;
  absl::StatusOr<std::vector<v1::Checkpoint>> kept = store_->ListCheckpoints(job.id());
  ASSERT_TRUE(kept.ok());
  for (const auto& c : *kept) steps.push_back(c.step());
  EXPECT_EQ(steps, (std::vector<int64_t>{20, 30}));
  EXPECT_EQ((*store_->LatestCheckpoint(job.id()))->step(), 30);
  EXPECT_FALSE(store_->LatestCheckpoint("job-000042")->has_value());
}

TEST_F(StoreTest, UnopenableDatabaseIsAClearError) {
  absl::StatusOr<std::unique_ptr<JobStore>> s = JobStore::Open((dir_ / "missing" / "dir" / "x.db").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.status().message()).find("x.db"), std::string::npos);
}

}  // namespace
}  // namespace gpt2
