// The engine's scheduler: which requests run in the next iteration, in which KV-cache slots, and
// which of their prompt tokens each iteration computes. It holds no tensors and knows a request
// only by its id and prompt length, so it is tested without a model (tests/unit/scheduler_test).
// Each iteration is planned under its lock, in one call, after which the engine's runner executes
// the plan as one batch and reports the requests that ended.
//
// Its rules (docs/serving.md): requests are admitted in arrival order into free slots. A prompt is
// computed in chunks of at most `max_prefill_tokens` tokens whose boundaries are fixed by the
// prompt alone (chunk k spans tokens [k·B, (k+1)·B) of it), so how a prompt is split never depends
// on what else runs. An iteration computes prompt chunks totalling at most `max_prefill_tokens`:
// first those of requests already prefilling, then those of new admissions, in arrival order, up
// to the first that does not fit (no overtaking); every request whose prompt is complete also
// decodes one token. A burst of long prompts therefore delays running streams by a bounded amount
// per iteration, and a request's first token comes from the iteration that computes its last chunk.
// A cancellation takes effect in the next plan, for a queued request and a running one alike; at
// most `max_queue` requests wait.
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
  int64_t max_prefill_tokens = 512;  // prompt tokens per iteration, and the chunk size
};

// Prompt tokens [start, start + count) of request `id`, whose KV cache is slot `slot`.
struct Chunk {
  int64_t id = 0;
  int64_t slot = 0;
  int64_t start = 0, count = 0;
  bool last = false;  // completes the prompt: the request samples its first token
};

// One iteration.
struct IterationPlan {
  bool stop = false;               // Stop() was called: end every request (Queued() and the running)
  std::vector<int64_t> cancelled;  // end now, cancelled; the running ones' slots are already free
  std::vector<Chunk> prefill;      // prompt chunks, in arrival order of their requests
  std::vector<int64_t> decode;     // slots whose request's prompt was complete before this
                                   // iteration, ascending: each advances one token
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerLimits& limits);

  // Queues a request whose prompt has `prompt_tokens` (>= 1) tokens; returns its id (1, 2, ...),
  // or RESOURCE_EXHAUSTED when `max_queue` requests already wait.
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
  struct Slot {
    int64_t id = 0;  // 0 = free
    int64_t prompt_tokens = 0, computed = 0;
    int64_t admitted = 0;  // admission order
  };
  // The next chunk of the request in `slot` (its prompt not yet complete).
  Chunk NextChunk(int64_t slot) const;
  void Free(int64_t slot);

  const SchedulerLimits limits_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Waiting> queue_;
  std::vector<Slot> slot_;
  std::vector<int64_t> free_;  // free slots; the last is taken first
  std::set<int64_t> cancelled_;
  int64_t next_id_ = 0, running_ = 0, admissions_ = 0;
  bool stop_ = false;
};

}  // namespace gpt2
