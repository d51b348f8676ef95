// `gpt2-worker train` and `gpt2-worker eval-hellaswag`. No libtorch in this header.
#pragma once

#include <iosfwd>
#include <string>

#include "worker/command.h"

namespace gpt2 {

struct TrainCommandOptions {
  std::string spec;  // YAML/JSON job spec
  int rank = 0, world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int timeout_s = 300;        // collectives and rendezvous
  std::string resume;         // checkpoint dir or "latest"
  std::string metrics_jsonl;  // every step/eval/checkpoint event as a JSON line (rank 0; or per rank with {rank})
  std::string vocab;
};
int RunTrainCommand(const TrainCommandOptions& options, std::ostream& out, std::ostream& err);

struct HellaSwagCommandOptions {
  std::string model_dir, data;
  int64_t limit = 0;
  std::string per_example;  // JSONL of per-example losses
  std::string vocab;
};
int RunHellaSwagCommand(const HellaSwagCommandOptions& options, std::ostream& out, std::ostream& err);

// `train` and `eval-hellaswag` with their flags (worker/command.h).
WorkerCommand AddTrainCommand(CLI::App& app, const WorkerGlobals& globals);
WorkerCommand AddHellaSwagCommand(CLI::App& app, const WorkerGlobals& globals);

}  // namespace gpt2
