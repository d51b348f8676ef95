// What gpt2-worker's subcommands share. Each command declares its flags beside its Run, in its own
// file (`Add<Name>Command` registers the subcommand, binds its flags to options the command owns
// and returns how to run it), so that worker/main.cc only dispatches:
//
//   WorkerGlobals globals;                        // --vocab, before the subcommand
//   std::vector<WorkerCommand> commands = {AddPrepCommand(app, globals), ...};
//   app.parse(argc, argv);
//   for (WorkerCommand& c : commands) if (c.cli->parsed()) return c.run();
//
// No CLI11 here (the commands' headers include this); their .cc files include command_flags.h.
#pragma once

#include <functional>
#include <string>

namespace CLI {
class App;
}

namespace gpt2 {

// The options given before the subcommand; read when the command runs (after parsing).
struct WorkerGlobals {
  std::string vocab;  // --vocab: a .tiktoken file or an encoder.json + vocab.bpe directory; empty: the default
};

// A registered subcommand: `cli` holds its flags; `run` runs it once the command line is parsed
// and returns the process exit code (0 ok, 1 failure, 2 bad input or usage).
struct WorkerCommand {
  CLI::App* cli = nullptr;
  std::function<int()> run;
};

}  // namespace gpt2
