// The engine's scheduler: which requests run in the next iteration, and in which KV-cache slots.
// It holds no tensors and knows a request only by its id and prompt length, so it is tested
// without a model (tests/unit/scheduler_test). Each iteration is planned under its lock, in one
// call, after which the engine's runner executes the plan and reports the requests that ended.
//
// Its rules (docs/serving.md): requests are admitted in arrival order into free slots; the prompts
// admitted in one iteration total at most `max_prefill_tokens` (at least one prompt is admitted,
// however long, so no prompt waits forever); a cancellation takes effect in the next plan, for a
// queued request and a running one alike; at most `max_queue` requests wait.
//
// Thread-safe: Enqueue, Cancel and Stop from any thread; Next and Release from the engine's thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

struct SchedulerLimits {
  int64_t slots = 1;                 // KV-cache slots: requests running at once
  int64_t max_queue = 256;           // requests waiting beyond this: RESOURCE_EXHAUSTED
  int64_t max_prefill_tokens = 512;  // prompt tokens admitted per iteration (at least one prompt)
};

struct Admission {
  int64_t id = 0;
  int64_t slot = 0;
};

// One iteration.
struct IterationPlan {
  bool stop = false;               // Stop() was called: end every request (Queued() and the running)
  std::vector<int64_t> cancelled;  // end now, cancelled; the running ones' slots are already free
  std::vector<Admission> prefill;  // prompts to prefill together, each into its slot
  std::vector<int64_t> decode;     // slots that hold a request in this iteration, ascending (those
                                   // admitted above included): each advances one token
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerLimits& limits);

  // Queues a request whose prompt has `prompt_tokens` tokens; returns its id (1, 2, ...), or
  // RESOURCE_EXHAUSTED when `max_queue` requests already wait.
  absl::StatusOr<int64_t> Enqueue(int64_t prompt_tokens);
  // The request leaves in the next plan's `cancelled` (unknown or ended ids are ignored).
  void Cancel(int64_t id);
  // Wakes Next(), whose plan then says stop.
  void Stop();

  // Blocks until there is something to do (a queued, running or cancelled request, or Stop()),
  // then plans one iteration.
  IterationPlan Next();
  // A running request ended (length, end of text, stop, error): its slot is free for the next plan.
  void Release(int64_t id);

  std::vector<int64_t> Queued() const;  // ids waiting, in arrival order
  int64_t queued() const;
  int64_t running() const;
  int64_t slots() const { return limits_.slots; }

 private:
  struct Waiting {
    int64_t id = 0, prompt_tokens = 0;
  };

  const SchedulerLimits limits_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Waiting> queue_;
  std::vector<int64_t> slot_of_;  // request id per slot; 0 = free
  std::vector<int64_t> free_;     // free slots; the last is taken first
  std::set<int64_t> cancelled_;
  int64_t next_id_ = 0, running_ = 0;
  bool stop_ = false;
};

}  // namespace gpt2
