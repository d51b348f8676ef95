#include "worker/serve/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gpt2 {

Scheduler::Scheduler(const SchedulerLimits& limits) : limits_(limits), slot_(limits.slots) {
  free_.resize(limits.slots);
  for (int64_t s = 0; s < limits.slots; ++s) free_[s] = limits.slots - 1 - s;  // slot 0 first
}

absl::StatusOr<int64_t> Scheduler::Push(int64_t prompt_tokens, std::vector<int32_t> prompt, bool reuse) {
  int64_t id = 0;
  {
    std::lock_guard lock(mu_);
    if (static_cast<int64_t>(queue_.size()) >= limits_.max_queue) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the queue is full (", limits_.max_queue, " requests waiting); retry later"));
    }
    id = ++next_id_;
    queue_.push_back({id, std::max<int64_t>(1, prompt_tokens), std::move(prompt), reuse});
  }
  cv_.notify_all();
  return id;
}

absl::StatusOr<int64_t> Scheduler::Enqueue(std::vector<int32_t> prompt, bool reuse) {
  const auto n = static_cast<int64_t>(prompt.size());
  return Push(n, std::move(prompt), reuse);
}

absl::StatusOr<int64_t> Scheduler::Enqueue(int64_t prompt_tokens) { return Push(prompt_tokens, {}, false); }

int64_t Scheduler::Reusable(const std::vector<int32_t>& held, int64_t cached,
                            const std::vector<int32_t>& prompt) const {
  // At most the prompt less its last token, which must be computed for the first token.
  const int64_t limit = std::min<int64_t>(cached, static_cast<int64_t>(prompt.size()) - 1);
  int64_t n = 0;
  while (n < limit && held[n] == prompt[n]) ++n;
  return n / limits_.prefix_granularity * limits_.prefix_granularity;
}

void Scheduler::Cancel(int64_t id) {
  {
    std::lock_guard lock(mu_);
    cancelled_.insert(id);
  }
  cv_.notify_all();
}

void Scheduler::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

Chunk Scheduler::NextChunk(int64_t s) const {
  const Slot& r = slot_[s];
  const int64_t B = limits_.max_prefill_tokens;
  const int64_t end = std::min(r.prompt_tokens, (r.computed / B + 1) * B);
  return {r.id, s, r.computed, end - r.computed, end == r.prompt_tokens};
}

void Scheduler::Free(int64_t s) {
  // The cache keeps the request's computed prompt rows for a later request to reuse.
  slot_[s].cached = std::min(slot_[s].computed, static_cast<int64_t>(slot_[s].prompt.size()));
  slot_[s].id = 0;
  free_.push_back(s);
  --running_;
}

IterationPlan Scheduler::Next() {
  IterationPlan plan;
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return stop_ || !queue_.empty() || running_ > 0 || !cancelled_.empty(); });
  if (stop_) {
    plan.stop = true;
    return plan;
  }
  // Cancellations: waiting requests leave the queue, running ones their slot.
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (cancelled_.count(it->id)) {
      plan.cancelled.push_back(it->id);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  for (int64_t s = 0; s < limits_.slots; ++s) {
    if (slot_[s].id != 0 && cancelled_.count(slot_[s].id)) {
      plan.cancelled.push_back(slot_[s].id);
      Free(s);
    }
  }
  cancelled_.clear();
  // Decoding: every request whose prompt is complete.
  std::vector<int64_t> prefilling;
  for (int64_t s = 0; s < limits_.slots; ++s) {
    if (slot_[s].id == 0) continue;
    if (slot_[s].computed == slot_[s].prompt_tokens)
      plan.decode.push_back(s);
    else
      prefilling.push_back(s);
  }
  // Prompt chunks within the budget: requests already prefilling (in admission order), then
  // admissions in arrival order into free slots, up to the first chunk that does not fit. Every
  // chunk is at most the budget, so the first always does.
  std::sort(prefilling.begin(), prefilling.end(),
            [&](int64_t a, int64_t b) { return slot_[a].admitted < slot_[b].admitted; });
  // Rows each running slot holds before this iteration (copy sources must not be computing them now).
  std::vector<int64_t> ready(limits_.slots, 0);
  for (int64_t s = 0; s < limits_.slots; ++s)
    if (slot_[s].id != 0) ready[s] = std::min<int64_t>(slot_[s].computed, static_cast<int64_t>(slot_[s].prompt.size()));
  int64_t tokens = 0;
  auto take = [&](int64_t s) {
    const Chunk c = NextChunk(s);
    if (tokens + c.count > limits_.max_prefill_tokens) return false;
    tokens += c.count;
    slot_[s].computed += c.count;
    plan.prefill.push_back(c);
    return true;
  };
  bool full = false;
  for (int64_t s : prefilling) {
    if (!take(s)) {
      full = true;
      break;
    }
  }
  while (!full && !free_.empty() && !queue_.empty()) {
    const Waiting& w = queue_.front();
    // The free slot to take (the one holding the longest prefix of the prompt, else the next
    // free one), and a running slot to copy a longer prefix from.
    auto pick = free_.end() - 1;
    int64_t reuse = 0, copy_from = -1;
    if (limits_.prefix_caching && w.reuse && !w.prompt.empty()) {
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        const int64_t n = Reusable(slot_[*it].prompt, slot_[*it].cached, w.prompt);
        if (n > reuse || (n == reuse && n > 0 && it > pick)) {
          reuse = n;
          pick = it;
        }
      }
      for (int64_t s = 0; s < limits_.slots; ++s) {
        if (slot_[s].id == 0) continue;
        const int64_t n = Reusable(slot_[s].prompt, ready[s], w.prompt);
        if (n > reuse) {
          reuse = n;
          copy_from = s;
        }
      }
    }
    const int64_t s = *pick;
    Slot saved = std::move(slot_[s]);
    slot_[s] = {w.id, w.prompt_tokens, reuse, ++admissions_, w.prompt, 0};
    const size_t before = plan.prefill.size();
    if (!take(s)) {  // waits in the queue
      slot_[s] = std::move(saved);
      break;
    }
    plan.prefill[before].first = true;
    if (copy_from >= 0) plan.copies.push_back({copy_from, s, reuse});
    hit_tokens_ += reuse;
    prompt_tokens_ += w.prompt_tokens;
    free_.erase(pick);
    ++running_;
    queue_.pop_front();
  }
  return plan;
}

int64_t Scheduler::prefix_hit_tokens() const {
  std::lock_guard lock(mu_);
  return hit_tokens_;
}

int64_t Scheduler::prompt_tokens() const {
  std::lock_guard lock(mu_);
  return prompt_tokens_;
}

void Scheduler::Release(int64_t id, bool cache_valid) {
  std::lock_guard lock(mu_);
  for (int64_t s = 0; s < limits_.slots; ++s) {
    if (slot_[s].id == id) {
      Free(s);
      if (!cache_valid) slot_[s].cached = 0;
      return;
    }
  }
}

std::vector<int64_t> Scheduler::Queued() const {
  std::lock_guard lock(mu_);
  std::vector<int64_t> ids;
  for (const Waiting& w : queue_) ids.push_back(w.id);
  return ids;
}

int64_t Scheduler::queued() const {
  std::lock_guard lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

int64_t Scheduler::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

}  // namespace gpt2
