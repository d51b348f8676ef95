#include "worker/serve/scheduler.h"

#include "absl/strings/str_cat.h"

namespace gpt2 {

Scheduler::Scheduler(const SchedulerLimits& limits) : limits_(limits), slot_of_(limits.slots, 0) {
  free_.resize(limits.slots);
  for (int64_t s = 0; s < limits.slots; ++s) free_[s] = limits.slots - 1 - s;  // slot 0 first
}

absl::StatusOr<int64_t> Scheduler::Enqueue(int64_t prompt_tokens) {
  int64_t id = 0;
  {
    std::lock_guard lock(mu_);
    if (static_cast<int64_t>(queue_.size()) >= limits_.max_queue) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the queue is full (", limits_.max_queue, " requests waiting); retry later"));
    }
    id = ++next_id_;
    queue_.push_back({id, prompt_tokens});
  }
  cv_.notify_all();
  return id;
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
    if (slot_of_[s] != 0 && cancelled_.count(slot_of_[s])) {
      plan.cancelled.push_back(slot_of_[s]);
      slot_of_[s] = 0;
      free_.push_back(s);
      --running_;
    }
  }
  cancelled_.clear();
  // Admissions: prompts in arrival order into free slots, up to the prefill budget (at least one),
  // so a burst of prompts delays running streams by a bounded amount per iteration.
  int64_t tokens = 0;
  while (!free_.empty() && !queue_.empty()) {
    const Waiting& w = queue_.front();
    if (!plan.prefill.empty() && tokens + w.prompt_tokens > limits_.max_prefill_tokens) break;
    tokens += w.prompt_tokens;
    const int64_t slot = free_.back();
    free_.pop_back();
    slot_of_[slot] = w.id;
    ++running_;
    plan.prefill.push_back({w.id, slot});
    queue_.pop_front();
  }
  for (int64_t s = 0; s < limits_.slots; ++s)
    if (slot_of_[s] != 0) plan.decode.push_back(s);
  return plan;
}

void Scheduler::Release(int64_t id) {
  std::lock_guard lock(mu_);
  for (int64_t s = 0; s < limits_.slots; ++s) {
    if (slot_of_[s] == id) {
      slot_of_[s] = 0;
      free_.push_back(s);
      --running_;
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
