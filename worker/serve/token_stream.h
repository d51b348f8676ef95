// One request's token events, from the engine's thread to the thread that consumes them, in order:
// the one way a caller of Engine::Submit receives its tokens (GenerateService, `gpt2-worker
// sample`, a replica's self-test).
//
// The engine's callback holds the stream's state, not the stream: a consumer may stop waiting (a
// timeout, a client that left) before the request's last event, and the events that still come
// land in the state and go with it. Thread-safe; no libtorch.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "worker/serve/engine.h"

namespace gpt2 {

class TokenStream {
 public:
  TokenStream() : state_(std::make_shared<State>()) {}

  // For Engine::Submit. Several requests may share one stream, each with its own `tag`.
  Engine::Callback Callback(int tag = 0) const {
    return [s = state_, tag](const TokenEvent& e) {
      {
        std::lock_guard lock(s->mu);
        s->events.push_back({tag, e});
      }
      s->cv.notify_all();
    };
  }

  struct Tagged {
    int tag;
    TokenEvent event;
  };
  // The events that arrived since the last call, after waiting up to `timeout` for the first of
  // them (empty when none came in time), with their request's tag. A request's last event has
  // `finish` set.
  std::vector<Tagged> NextTagged(std::chrono::milliseconds timeout) {
    std::unique_lock lock(state_->mu);
    state_->cv.wait_for(lock, timeout, [&] { return !state_->events.empty(); });
    std::vector<Tagged> out;
    out.swap(state_->events);
    return out;
  }
  // The same, for a stream of one request.
  std::vector<TokenEvent> Next(std::chrono::milliseconds timeout) {
    std::vector<TokenEvent> out;
    for (Tagged& t : NextTagged(timeout)) out.push_back(std::move(t.event));
    return out;
  }

  // The request's last event, skipping the others; nothing if it did not end within `timeout`.
  std::optional<TokenEvent> WaitForEnd(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (auto now = std::chrono::steady_clock::now(); now < deadline; now = std::chrono::steady_clock::now()) {
      for (const TokenEvent& e : Next(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now)))
        if (e.finish != FinishReason::kNone) return e;
    }
    return std::nullopt;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Tagged> events;
  };
  std::shared_ptr<State> state_;
};

}  // namespace gpt2
