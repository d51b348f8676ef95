// The agent's outgoing rank events (see Outbox). Shared by the connection (agent.cc), which writes
// them to gpt2d and hands back acknowledgements, and the rank host, which produces them.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "gpt2d/v1/worker.pb.h"

namespace gpt2 {

// Rank events on their way to gpt2d. Survives reconnects: an event leaves only when gpt2d
// acknowledges it (it is stored then); on a new stream the unacknowledged ones go first, in order.
// Bounded: when gpt2d is away for long, the oldest step reports are dropped first; evals,
// checkpoints and exits are always kept.
class Outbox {
 public:
  void Push(::gpt2d::v1::WorkerMessage m) {
    {
      std::lock_guard lock(mu_);
      m.mutable_rank_event()->set_sequence(++next_sequence_);
      queue_.push_back(std::move(m));
      if (queue_.size() > kMax) {
        for (auto it = queue_.begin(); it != queue_.end(); ++it) {
          if (it->rank_event().has_step()) {
            queue_.erase(it);
            break;
          }
        }
      }
    }
    cv_.notify_all();
  }
  // The next message to write (it stays unacknowledged until Ack), waiting until the deadline;
  // nullopt on timeout or Wake().
  std::optional<::gpt2d::v1::WorkerMessage> Pop(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return !queue_.empty() || woken_; });
    woken_ = false;
    if (queue_.empty()) return std::nullopt;
    unacked_.push_back(std::move(queue_.front()));
    queue_.pop_front();
    return unacked_.back();
  }
  // gpt2d stored every event up to `sequence`; returns those events.
  std::vector<::gpt2d::v1::WorkerMessage> Ack(int64_t sequence) {
    std::lock_guard lock(mu_);
    std::vector<::gpt2d::v1::WorkerMessage> done;
    while (!unacked_.empty() && unacked_.front().rank_event().sequence() <= sequence) {
      done.push_back(std::move(unacked_.front()));
      unacked_.pop_front();
    }
    return done;
  }
  // A new stream: what was written but never acknowledged goes again, first.
  void Resend() {
    std::lock_guard lock(mu_);
    queue_.insert(queue_.begin(), std::make_move_iterator(unacked_.begin()), std::make_move_iterator(unacked_.end()));
    unacked_.clear();
  }
  void Wake() {
    {
      std::lock_guard lock(mu_);
      woken_ = true;
    }
    cv_.notify_all();
  }

 private:
  static constexpr size_t kMax = 10000;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<::gpt2d::v1::WorkerMessage> queue_, unacked_;
  int64_t next_sequence_ = 0;
  bool woken_ = false;
};

}  // namespace gpt2
