// The helpers gpt2-worker's commands define their flags and run with (CLI11, header-only).
#pragma once

#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdint>
#include <iostream>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/client_channel.h"
#include "worker/command.h"

namespace gpt2 {

// An integer flag's lower bound, said plainly ("must be >= 1, got 0").
inline CLI::Validator AtLeast(int64_t min) {
  return CLI::Validator(
      [min](std::string& value) -> std::string {
        int64_t v = 0;
        if (!CLI::detail::lexical_cast(value, v)) return "must be an integer, got " + value;
        return v < min ? "must be >= " + std::to_string(min) + ", got " + value : std::string();
      },
      ">=" + std::to_string(min));
}

// Reads `path` into *token when path is non-empty (a --token-file flag). False after printing the
// error naming the file on stderr.
inline bool ReadTokenFlag(const std::string& path, std::string* token) {
  if (path.empty()) return true;
  absl::StatusOr<std::string> t = ReadTokenFile(path);
  if (!t.ok()) {
    std::cerr << "error: " << t.status().message() << "\n";
    return false;
  }
  *token = *std::move(t);
  return true;
}

// For the daemons (`run`, `serve`): blocks SIGINT and SIGTERM in this thread and in every thread
// started after it, and sets the returned flag when either arrives. Call it before starting any
// thread, so that only its waiter receives them.
inline const std::atomic<bool>& StopOnSignals() {
  static std::atomic<bool> stop{false};
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    stop = true;
  }).detach();
  return stop;
}

}  // namespace gpt2
