// The engine's scheduler alone: admission, the prefill budget, slots, cancellation, the queue's
// bound, stopping. No model, no tensors.
#include "worker/serve/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

namespace gpt2 {
namespace {

std::vector<int64_t> Ids(const std::vector<Admission>& admitted) {
  std::vector<int64_t> ids;
  for (const Admission& a : admitted) ids.push_back(a.id);
  return ids;
}

TEST(SchedulerTest, AdmitsInArrivalOrderIntoFreeSlotsAndDecodesEveryRunningSlot) {
  Scheduler s({/*slots=*/3, /*max_queue=*/16, /*max_prefill_tokens=*/1000});
  for (int i = 0; i < 5; ++i) ASSERT_EQ(*s.Enqueue(10), i + 1);
  IterationPlan p = s.Next();
  EXPECT_EQ(Ids(p.prefill), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(p.prefill[0].slot, 0);  // slot 0 first
  EXPECT_EQ(p.decode, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(s.queued(), 2);
  EXPECT_EQ(s.running(), 3);

  p = s.Next();  // no slot is free: nothing is admitted, the three decode
  EXPECT_TRUE(p.prefill.empty());
  EXPECT_EQ(p.decode.size(), 3u);

  s.Release(2);  // request 2 ended in slot 1: request 4 takes it
  p = s.Next();
  ASSERT_EQ(p.prefill.size(), 1u);
  EXPECT_EQ(p.prefill[0].id, 4);
  EXPECT_EQ(p.prefill[0].slot, 1);
  EXPECT_EQ(s.Queued(), (std::vector<int64_t>{5}));
}

TEST(SchedulerTest, ThePrefillBudgetBoundsAnIterationButAlwaysAdmitsOnePrompt) {
  Scheduler s({/*slots=*/8, /*max_queue=*/16, /*max_prefill_tokens=*/100});
  ASSERT_TRUE(s.Enqueue(60).ok());   // 1
  ASSERT_TRUE(s.Enqueue(40).ok());   // 2: 60 + 40 fits
  ASSERT_TRUE(s.Enqueue(1).ok());    // 3: over the budget, waits (arrival order: no overtaking)
  ASSERT_TRUE(s.Enqueue(500).ok());  // 4
  EXPECT_EQ(Ids(s.Next().prefill), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Ids(s.Next().prefill), (std::vector<int64_t>{3}));  // 1 + 500 > 100
  EXPECT_EQ(Ids(s.Next().prefill), (std::vector<int64_t>{4}));  // alone, though longer than the budget
}

TEST(SchedulerTest, CancellationTakesEffectInTheNextPlanForQueuedAndRunningRequests) {
  Scheduler s({/*slots=*/1, /*max_queue=*/16, /*max_prefill_tokens=*/1000});
  ASSERT_TRUE(s.Enqueue(5).ok());  // 1: runs
  ASSERT_TRUE(s.Enqueue(5).ok());  // 2: waits
  ASSERT_TRUE(s.Enqueue(5).ok());  // 3: waits
  ASSERT_EQ(Ids(s.Next().prefill), (std::vector<int64_t>{1}));
  s.Cancel(3);   // queued
  s.Cancel(1);   // running
  s.Cancel(99);  // unknown: ignored
  IterationPlan p = s.Next();
  EXPECT_EQ(p.cancelled, (std::vector<int64_t>{3, 1}));
  // Request 1's slot is free at once: request 2 takes it in the same plan.
  ASSERT_EQ(Ids(p.prefill), (std::vector<int64_t>{2}));
  EXPECT_EQ(p.prefill[0].slot, 0);
  EXPECT_EQ(p.decode, (std::vector<int64_t>{0}));
  s.Release(1);  // the engine reports the cancelled request's end: its old slot is not freed twice
  EXPECT_EQ(s.running(), 1);
  s.Release(2);
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(s.queued(), 0);
}

TEST(SchedulerTest, AFullQueueIsRefusedAtOnce) {
  Scheduler s({/*slots=*/1, /*max_queue=*/2, /*max_prefill_tokens=*/1000});
  ASSERT_TRUE(s.Enqueue(1).ok());
  ASSERT_TRUE(s.Enqueue(1).ok());
  absl::StatusOr<int64_t> third = s.Enqueue(1);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("the queue is full (2 requests waiting)"), std::string::npos);
  s.Next();  // one is admitted: there is room again
  EXPECT_TRUE(s.Enqueue(1).ok());
}

TEST(SchedulerTest, NextWaitsForWorkAndStopWakesIt) {
  Scheduler s({/*slots=*/2, /*max_queue=*/4, /*max_prefill_tokens=*/100});
  auto plan = std::async(std::launch::async, [&] { return s.Next(); });
  EXPECT_EQ(plan.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);  // nothing to do
  ASSERT_TRUE(s.Enqueue(3).ok());
  ASSERT_EQ(plan.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(Ids(plan.get().prefill), (std::vector<int64_t>{1}));
  s.Release(1);
  auto stopped = std::async(std::launch::async, [&] { return s.Next(); });
  EXPECT_EQ(stopped.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
  s.Stop();
  ASSERT_EQ(stopped.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(stopped.get().stop);
}

}  // namespace
}  // namespace gpt2
