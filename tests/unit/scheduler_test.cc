// The engine's scheduler alone: admission, the prefill budget and chunks, prefix reuse, slots,
// cancellation, the queue's bound, stopping. No model, no tensors.
#include "worker/serve/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>
#include <tuple>

namespace gpt2 {
namespace {

std::vector<int64_t> Ids(const std::vector<Chunk>& chunks) {
  std::vector<int64_t> ids;
  for (const Chunk& c : chunks) ids.push_back(c.id);
  return ids;
}

// (id, start, count, last) of each chunk.
std::vector<std::tuple<int64_t, int64_t, int64_t, bool>> Chunks(const IterationPlan& p) {
  std::vector<std::tuple<int64_t, int64_t, int64_t, bool>> out;
  for (const Chunk& c : p.prefill) out.emplace_back(c.id, c.start, c.count, c.last);
  return out;
}

TEST(SchedulerTest, AdmitsInArrivalOrderIntoFreeSlotsAndDecodesEveryCompletePrompt) {
  Scheduler s({/*slots=*/3, /*max_queue=*/16, /*max_prefill_tokens=*/1000});
  for (int i = 0; i < 5; ++i) ASSERT_EQ(*s.Enqueue(10), i + 1);
  IterationPlan p = s.Next();
  EXPECT_EQ(Chunks(p), (decltype(Chunks(p)){{1, 0, 10, true}, {2, 0, 10, true}, {3, 0, 10, true}}));
  EXPECT_EQ(p.prefill[0].slot, 0);  // slot 0 first
  EXPECT_TRUE(p.decode.empty());    // their first tokens come from this iteration's prompt rows
  EXPECT_EQ(s.queued(), 2);
  EXPECT_EQ(s.running(), 3);

  p = s.Next();  // no slot is free: nothing is admitted, the three decode
  EXPECT_TRUE(p.prefill.empty());
  EXPECT_EQ(p.decode, (std::vector<int64_t>{0, 1, 2}));

  s.Release(2);  // request 2 ended in slot 1: request 4 takes it, the others decode beside it
  p = s.Next();
  ASSERT_EQ(p.prefill.size(), 1u);
  EXPECT_EQ(p.prefill[0].id, 4);
  EXPECT_EQ(p.prefill[0].slot, 1);
  EXPECT_EQ(p.decode, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(s.Queued(), (std::vector<int64_t>{5}));
}

TEST(SchedulerTest, ThePrefillBudgetBoundsAnIterationAndLongPromptsGoInChunks) {
  Scheduler s({/*slots=*/8, /*max_queue=*/16, /*max_prefill_tokens=*/100});
  ASSERT_TRUE(s.Enqueue(60).ok());   // 1
  ASSERT_TRUE(s.Enqueue(40).ok());   // 2: 60 + 40 fits
  ASSERT_TRUE(s.Enqueue(1).ok());    // 3: over the budget, waits (arrival order: no overtaking)
  ASSERT_TRUE(s.Enqueue(250).ok());  // 4: three chunks of at most 100
  ASSERT_TRUE(s.Enqueue(5).ok());    // 5
  IterationPlan p = s.Next();
  EXPECT_EQ(Chunks(p), (decltype(Chunks(p)){{1, 0, 60, true}, {2, 0, 40, true}}));
  p = s.Next();  // 1 + 100 > 100: request 4 waits for the next iteration
  EXPECT_EQ(Chunks(p), (decltype(Chunks(p)){{3, 0, 1, true}}));
  EXPECT_EQ(p.decode.size(), 2u);
  p = s.Next();
  EXPECT_EQ(Chunks(p), (decltype(Chunks(p)){{4, 0, 100, false}}));
  EXPECT_EQ(p.decode.size(), 3u);  // the running streams go on beside the chunk
  p = s.Next();
  EXPECT_EQ(Chunks(p), (decltype(Chunks(p)){{4, 100, 100, false}}));
  EXPECT_EQ(p.decode.size(), 3u);  // request 4 does not decode until its prompt is complete
  p = s.Next();  // its last chunk leaves room for request 5
  EXPECT_EQ(Chunks(p), (decltype(Chunks(p)){{4, 200, 50, true}, {5, 0, 5, true}}));
  p = s.Next();
  EXPECT_TRUE(p.prefill.empty());
  EXPECT_EQ(p.decode.size(), 5u);
}

TEST(SchedulerTest, AChunksBoundariesDependOnItsPromptAlone) {
  // Request 2's prompt is split at 64 and 128 whether it starts alone or after others.
  for (int64_t before : {0, 30, 63}) {
    Scheduler s({/*slots=*/4, /*max_queue=*/16, /*max_prefill_tokens=*/64});
    if (before > 0) ASSERT_TRUE(s.Enqueue(before).ok());
    const int64_t id = *s.Enqueue(150);
    std::vector<std::pair<int64_t, int64_t>> spans;
    for (int i = 0; i < 8; ++i) {
      for (const Chunk& c : s.Next().prefill) {
        if (c.id == id) spans.emplace_back(c.start, c.count);
        EXPECT_LE(c.count, 64);
      }
    }
    EXPECT_EQ(spans, (std::vector<std::pair<int64_t, int64_t>>{{0, 64}, {64, 64}, {128, 22}})) << before;
  }
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
  EXPECT_TRUE(p.decode.empty());
  s.Release(1);  // the engine reports the cancelled request's end: its old slot is not freed twice
  EXPECT_EQ(s.running(), 1);
  EXPECT_EQ(s.Next().decode, (std::vector<int64_t>{0}));
  s.Release(2);
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(s.queued(), 0);
}

TEST(SchedulerTest, ARequestCancelledBetweenItsChunksFreesItsSlot) {
  Scheduler s({/*slots=*/1, /*max_queue=*/16, /*max_prefill_tokens=*/10});
  ASSERT_TRUE(s.Enqueue(35).ok());  // 1: four chunks
  ASSERT_TRUE(s.Enqueue(3).ok());   // 2: waits for the slot
  EXPECT_EQ(Chunks(s.Next()), (std::vector<std::tuple<int64_t, int64_t, int64_t, bool>>{{1, 0, 10, false}}));
  s.Cancel(1);
  IterationPlan p = s.Next();
  EXPECT_EQ(p.cancelled, (std::vector<int64_t>{1}));
  EXPECT_EQ(Chunks(p), (std::vector<std::tuple<int64_t, int64_t, int64_t, bool>>{{2, 0, 3, true}}));
}

std::vector<int32_t> Tokens(int32_t from, int32_t n) {
  std::vector<int32_t> t(n);
  for (int32_t i = 0; i < n; ++i) t[i] = from + i;
  return t;
}
std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(SchedulerTest, APromptReusesTheLongestCachedPrefixInPlaceOrByCopy) {
  Scheduler s({/*slots=*/3, /*max_queue=*/16, /*max_prefill_tokens=*/100});
  const std::vector<int32_t> a = Tokens(1000, 40);
  ASSERT_EQ(*s.Enqueue(a), 1);
  IterationPlan p = s.Next();
  ASSERT_EQ(p.prefill.size(), 1u);
  const int64_t slot_a = p.prefill[0].slot;
  EXPECT_TRUE(p.prefill[0].first);
  s.Release(1);  // ended: its slot keeps a's 40 rows
  // 30 tokens in common: admitted into a's old slot, nothing copied, computing from 30.
  ASSERT_EQ(*s.Enqueue(Concat(Tokens(1000, 30), Tokens(5, 10))), 2);
  p = s.Next();
  EXPECT_EQ(Chunks(p), (std::vector<std::tuple<int64_t, int64_t, int64_t, bool>>{{2, 30, 10, true}}));
  EXPECT_EQ(p.prefill[0].slot, slot_a);
  EXPECT_TRUE(p.prefill[0].first);
  EXPECT_TRUE(p.copies.empty());
  // Request 2 runs in a's slot; a prompt sharing its first 35 tokens copies them into a free slot.
  ASSERT_EQ(*s.Enqueue(Concat(Tokens(1000, 30), Tokens(5, 7))), 3);
  p = s.Next();
  ASSERT_EQ(p.prefill.size(), 1u);
  EXPECT_NE(p.prefill[0].slot, slot_a);
  EXPECT_EQ(p.prefill[0].start, 36);  // 37 tokens, all but the last shared
  ASSERT_EQ(p.copies.size(), 1u);
  EXPECT_EQ(p.copies[0].from, slot_a);
  EXPECT_EQ(p.copies[0].to, p.prefill[0].slot);
  EXPECT_EQ(p.copies[0].count, 36);
  EXPECT_EQ(s.prompt_tokens(), 40 + 40 + 37);
  EXPECT_EQ(s.prefix_hit_tokens(), 30 + 36);
}

TEST(SchedulerTest, PrefixReuseRespectsGranularityRowsInFlightAndFailedSteps) {
  SchedulerLimits limits{/*slots=*/3, /*max_queue=*/16, /*max_prefill_tokens=*/100};
  limits.prefix_granularity = 16;
  Scheduler s(limits);
  const std::vector<int32_t> a = Tokens(1000, 150);
  ASSERT_TRUE(s.Enqueue(a).ok());  // 1: chunks [0,100), [100,150)
  s.Next();                        // computes [0, 100)
  ASSERT_TRUE(s.Enqueue(Concat(Tokens(1000, 140), Tokens(7, 5))).ok());  // 2: shares 140 with a
  IterationPlan p = s.Next();      // a's [100, 150) is computed in this very iteration: 2 reuses 96
  ASSERT_EQ(p.prefill.size(), 2u);
  EXPECT_EQ(p.prefill[1].id, 2);
  EXPECT_EQ(p.prefill[1].start, 96);  // 100 rows ready, a multiple of 16
  ASSERT_EQ(p.copies.size(), 1u);
  EXPECT_EQ(p.copies[0].count, 96);
  // A request whose step failed leaves nothing to reuse.
  s.Release(2, /*cache_valid=*/false);
  s.Release(1, /*cache_valid=*/false);
  ASSERT_TRUE(s.Enqueue(Concat(Tokens(1000, 140), Tokens(7, 5))).ok());  // 3
  p = s.Next();
  ASSERT_EQ(p.prefill.size(), 1u);
  EXPECT_EQ(p.prefill[0].start, 0);
  EXPECT_TRUE(p.copies.empty());
  // Without prefix caching nothing is reused.
  limits.prefix_caching = false;
  Scheduler off(limits);
  ASSERT_TRUE(off.Enqueue(a).ok());
  off.Next();
  off.Release(1);
  ASSERT_TRUE(off.Enqueue(a).ok());
  EXPECT_EQ(off.Next().prefill[0].start, 0);
  EXPECT_EQ(off.prefix_hit_tokens(), 0);
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
