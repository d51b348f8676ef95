// gpt2-worker: the process that runs GPT-2. Offline commands (tokenize, prep, init, score, sample,
// train, eval-hellaswag), `serve` (one serving replica on its own: gRPC and the OpenAI API), and
// `run`, the daemon that runs the training ranks and serving replicas gpt2d assigns.
#include <exception>
#include <iostream>
#include <vector>

#include "worker/agent/agent.h"
#include "worker/command_flags.h"
#include "worker/data/prep_command.h"
#include "worker/offline_commands.h"
#include "worker/serve/serve_command.h"
#include "worker/tokenize_command.h"
#include "worker/train_command.h"

// jemalloc's settings, read at start-up: keep freed pages for reuse and never hand them back to the
// kernel. A training step frees and reallocates hundreds of MB of logits and gradients; returning
// them (glibc, or jemalloc's default or even a 30 s decay) makes every step page-fault them in
// again, which on CPU costs as much as the model itself (measured: 1.3k -> 2.6k tokens/s for a
// 2-layer model). The process so holds its peak memory, as PyTorch's CUDA caching allocator does.
// MALLOC_CONF in the environment still overrides this.
extern "C" {
const char* malloc_conf = "dirty_decay_ms:-1,muzzy_decay_ms:-1";
}

int main(int argc, char** argv) {
  CLI::App app{"gpt2-worker: trains and serves GPT-2 (libtorch)"};
  app.require_subcommand(1);
  gpt2::WorkerGlobals globals;
  app.add_option("--vocab", globals.vocab,
                 "GPT-2 vocabulary: a .tiktoken file or a directory with encoder.json + vocab.bpe "
                 "(default: $GPT2_VOCAB, then the one installed with gpt2d)");
  // Each command declares its own flags, beside its Run (worker/command.h).
  std::vector<gpt2::WorkerCommand> commands = {
      gpt2::AddTokenizeCommand(app, globals),  gpt2::AddScoreCommand(app, globals),
      gpt2::AddSampleCommand(app, globals),    gpt2::AddInitCommand(app),
      gpt2::AddPrepCommand(app, globals),      gpt2::AddTrainCommand(app, globals),
      gpt2::AddHellaSwagCommand(app, globals), gpt2::AddRunCommand(app, globals),
      gpt2::AddServeCommand(app, globals),
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; a usage error: 2, as gpt2ctl
  }
  std::ios::sync_with_stdio(false);
  try {
    for (gpt2::WorkerCommand& c : commands)
      if (c.cli->parsed()) return c.run();
  } catch (const std::exception& e) {
    // libtorch reports shape and device errors as exceptions; they end the command, not the process abruptly.
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
