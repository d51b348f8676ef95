#include "worker/data/prep_command.h"

#include "absl/status/status.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "worker/command_flags.h"

namespace gpt2 {
namespace {

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kBadInput = 2;

int Fail(const absl::Status& status, std::ostream& err) {
  err << "error: " << status.message() << "\n";
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kDataLoss:  // a corrupt gzip file or parquet record
      return kBadInput;
    default:
      return kFailed;
  }
}

}  // namespace

int RunPrepCommand(const PrepOptions& options, std::ostream& out, std::ostream& err) {
  absl::StatusOr<Tokenizer> tokenizer = LoadTokenizer(options.vocab);
  if (!tokenizer.ok()) {
    err << "error: " << tokenizer.status().message() << "\n";
    return kFailed;
  }
  absl::StatusOr<PrepResult> result = PrepareShards(*tokenizer, options, err);
  if (!result.ok()) return Fail(result.status(), err);

  const nlohmann::ordered_json summary = {
      {"documents", result->documents},
      {"tokens", result->tokens},
      {"shards", result->shards},
      {"val_tokens", result->val_tokens},
      {"train_tokens", result->train_tokens},
      {"skipped_lines", result->skipped_lines},
  };
  out << summary.dump() << "\n" << std::flush;
  return out ? kOk : kFailed;
}

WorkerCommand AddPrepCommand(CLI::App& app, const WorkerGlobals& globals) {
  auto o = std::make_shared<PrepOptions>();
  CLI::App* cmd =
      app.add_subcommand("prep", "Text, JSONL and parquet files (gzip too) and directories -> token shards");
  cmd->add_option("--out", o->out_dir, "Output directory")->required();
  cmd->add_option("--name", o->name, "Shard name prefix")->capture_default_str();
  cmd->add_option("--shard-tokens", o->shard_tokens, "Tokens per shard")->capture_default_str();
  cmd->add_option("--val-tokens", o->val_tokens, "Tokens in the first (validation) shard (default: --shard-tokens)");
  cmd->add_option("--format", o->format, "bin (llm.c) or npy (build-nanogpt)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Tokenizer threads (default: all cores)");
  cmd->add_flag("--force", o->force, "Overwrite existing shards");
  cmd->add_flag("--skip-bad-lines", o->skip_bad_lines, "Skip malformed JSONL lines with a warning");
  cmd->add_option("--column", o->column, "The JSONL field or parquet column that holds the text")
      ->capture_default_str();
  cmd->add_option("inputs", o->inputs, "Files and directories")->required();
  return {cmd, [o, &globals] {
            o->vocab = globals.vocab;
            return RunPrepCommand(*o, std::cout, std::cerr);
          }};
}

}  // namespace gpt2
