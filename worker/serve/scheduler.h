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
// Prefix caching: a slot's KV cache keeps the prompt rows its request computed, also after the
// request ends, until the slot is taken again. A new request whose prompt starts with tokens a
// slot holds reuses them instead of computing them: it is admitted into the free slot holding the
// longest such prefix (nothing to copy), or, when a running request's slot holds a longer one,
// into a free slot with those rows copied from it first (IterationPlan::copies). Its chunks then
// start at the reused length (a multiple of `prefix_granularity`, which the engine sets where rows
// depend on their chunk's shape), and its last prompt token is always computed (it gives the
// first token). A row's K and V depend only on the tokens up to it, so a hit changes no result.
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
  bool prefix_caching = true;
  int64_t prefix_granularity = 1;  // reused prefixes are a multiple of this many tokens
};

// Prompt tokens [start, start + count) of request `id`, whose KV cache is slot `slot`.
struct Chunk {
  int64_t id = 0;
  int64_t slot = 0;
  int64_t start = 0, count = 0;
  bool last = false;   // completes the prompt: the request samples its first token
  bool first = false;  // the request's first chunk: it was admitted into `slot` by this plan
};

// Before the iteration's rows: KV-cache rows [0, count) of slot `from` into slot `to`.
struct PrefixCopy {
  int64_t from = 0, to = 0, count = 0;
};

// One iteration.
struct IterationPlan {
  bool stop = false;               // Stop() was called: end every request (Queued() and the running)
  std::vector<int64_t> cancelled;  // end now, cancelled; the running ones' slots are already free
  std::vector<PrefixCopy> copies;  // reused prefixes to copy first
  std::vector<Chunk> prefill;      // prompt chunks, in arrival order of their requests
  std::vector<int64_t> decode;     // slots whose request's prompt was complete before this
                                   // iteration, ascending: each advances one token
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerLimits& limits);

  // Queues a request whose prompt is `prompt` (>= 1 token); returns its id (1, 2, ...), or
  // RESOURCE_EXHAUSTED when `max_queue` requests already wait. With `reuse` false its prompt is
  // computed in full (its rows may still serve later requests).
  absl::StatusOr<int64_t> Enqueue(std::vector<int32_t> prompt, bool reuse = true);
  // The same for a prompt of `prompt_tokens` tokens not known (it never shares a prefix).
  absl::StatusOr<int64_t> Enqueue(int64_t prompt_tokens);
  // The request leaves in the next plan's `cancelled` (unknown or ended ids are ignored).
  void Cancel(int64_t id);
  // Wakes Next(), whose plan then says stop.
  void Stop();

  // Blocks until there is something to do (a queued, running or cancelled request, or Stop()),
  // then plans one iteration.
  IterationPlan Next();
  // A running request ended (length, end of text, stop, error): its slot is free for the next plan.
  // With `cache_valid` false (its last iteration failed part way) the slot's rows are not reused.
  void Release(int64_t id, bool cache_valid = true);

  std::vector<int64_t> Queued() const;  // ids waiting, in arrival order
  int64_t queued() const;
  int64_t running() const;
  int64_t slots() const { return limits_.slots; }
  // Prompt tokens admitted so far: reused from a cached prefix, and computed.
  int64_t prefix_hit_tokens() const;
  int64_t prompt_tokens() const;

 private:
  struct Waiting {
    int64_t id = 0, prompt_tokens = 0;
    std::vector<int32_t> prompt;  // empty: not known
    bool reuse = true;            // may start from a cached prefix
  };
  struct Slot {
    int64_t id = 0;  // 0 = free
    int64_t prompt_tokens = 0, computed = 0;
    int64_t admitted = 0;          // admission order
    std::vector<int32_t> prompt;   // of the request in the slot, or of the last one (the cache's rows)
    int64_t cached = 0;            // rows [0, cached) of the cache hold `prompt`'s first tokens
  };
  // How many of `prompt`'s first tokens a slot holding rows [0, cached) of `held` can give.
  int64_t Reusable(const std::vector<int32_t>& held, int64_t cached, const std::vector<int32_t>& prompt) const;
  // Queues a request (one lock, so its id and entry are one step).
  absl::StatusOr<int64_t> Push(int64_t prompt_tokens, std::vector<int32_t> prompt, bool reuse);
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
  int64_t hit_tokens_ = 0, prompt_tokens_ = 0;
  bool stop_ = false;
};

}  // namespace gpt2
