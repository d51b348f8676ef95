// The worker's offline commands: score text, sample text, create a model. Each returns the process
// exit code (0 ok, 1 failure, 2 bad input) after printing a clear message on failure.
// No libtorch in this header.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "worker/command.h"

namespace gpt2 {

struct ScoreOptions {
  std::string model_dir;
  std::vector<std::string> files;  // each file is one document, preceded by <|endoftext|>
  int64_t stride = 0;              // sliding-window step; 0 = half the context
  std::string vocab;               // tokenizer file; empty = default lookup
};
// Prints one JSON line: {"files", "tokens", "mean_loss", "perplexity", "context", "stride"}.
int RunScore(const ScoreOptions& options, std::ostream& out, std::ostream& err);

struct SampleOptions {
  std::string model_dir;
  std::string prompt;
  int64_t max_new_tokens = 64;
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 42;
  bool ignore_eos = false;
  bool json = false;             // one JSON object at the end instead of streaming text
  std::string weights = "fp32";  // the engine's weight format (EngineOptions::weights)
  std::string vocab;
};
int RunSample(const SampleOptions& options, std::ostream& out, std::ostream& err);

struct InitOptions {
  std::string preset = "gpt2";  // gpt2, gpt2-medium, gpt2-large, gpt2-xl
  std::optional<int64_t> n_layer, n_head, n_embd, n_positions, vocab_size;
  uint64_t seed = 1337;
  std::string out_dir;
};
// Writes a GPT-2 with fresh GPT-2 initialisation as a Hugging Face checkpoint directory.
int RunInit(const InitOptions& options, std::ostream& out, std::ostream& err);

// `score`, `sample` and `init` with their flags (worker/command.h).
WorkerCommand AddScoreCommand(CLI::App& app, const WorkerGlobals& globals);
WorkerCommand AddSampleCommand(CLI::App& app, const WorkerGlobals& globals);
WorkerCommand AddInitCommand(CLI::App& app);

}  // namespace gpt2
