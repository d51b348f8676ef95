#include "worker/train_command.h"

#include <torch/utils.h>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/tokenizer/tokenizer.h"
#include "common/train_config.h"
#include "nlohmann/json.hpp"
#include "worker/command_flags.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/train/hellaswag.h"
#include "worker/train/trainer.h"

namespace gpt2 {
namespace {

// Progress for people on `out` (rank 0), every event as JSON for programs.
class ConsoleObserver final : public TrainObserver {
 public:
  ConsoleObserver(std::ostream& out, int rank, int64_t log_every, const std::string& jsonl_path)
      : out_(out), rank_(rank), log_every_(log_every) {
    // One file per rank with "{rank}" in the path; otherwise rank 0 alone writes it.
    const bool per_rank = jsonl_path.find("{rank}") != std::string::npos;
    if (!jsonl_path.empty() && (per_rank || rank == 0)) {
      jsonl_ = std::make_unique<std::ofstream>(absl::StrReplaceAll(jsonl_path, {{"{rank}", std::to_string(rank)}}));
    }
  }
  void OnStep(const StepMetrics& m) override {
    Emit({{"event", "step"},
          {"step", m.step},
          {"loss", m.loss},
          {"lr", m.lr},
          {"grad_norm", m.grad_norm},
          {"step_seconds", m.step_seconds},
          {"tokens_per_second", m.tokens_per_second},
          {"mfu", m.mfu},
          {"tokens_seen", m.tokens_seen}});
    if (rank_ != 0 || (m.step % log_every_ != 0 && m.step != m.max_steps)) return;
    out_ << absl::StrFormat("step %6d/%d | loss %.6f | lr %.4e | norm %.4f | dt %.2fms | tok/s %.0f", m.step,
                            m.max_steps, m.loss, m.lr, m.grad_norm, m.step_seconds * 1e3, m.tokens_per_second);
    if (m.mfu > 0) out_ << absl::StrFormat(" | mfu %.2f%%", m.mfu * 100);
    out_ << std::endl;
  }
  void OnEval(const EvalMetrics& e) override {
    nlohmann::json j{{"event", "eval"}, {"step", e.step}};
    if (e.val_loss) j["val_loss"] = *e.val_loss;
    if (e.hellaswag_acc) {
      j["hellaswag_acc"] = *e.hellaswag_acc;
      j["hellaswag_acc_norm"] = *e.hellaswag_acc_norm;
      j["hellaswag_examples"] = e.hellaswag_examples;
    }
    if (!e.samples.empty()) j["samples"] = e.samples;
    Emit(j);
    if (rank_ != 0) return;
    if (e.val_loss) out_ << absl::StrFormat("step %6d | val loss %.6f", e.step, *e.val_loss) << std::endl;
    if (e.hellaswag_acc) {
      out_ << absl::StrFormat("step %6d | hellaswag acc_norm %.4f (acc %.4f) on %d examples", e.step,
                              *e.hellaswag_acc_norm, *e.hellaswag_acc, e.hellaswag_examples)
           << std::endl;
    }
    for (const std::string& s : e.samples) out_ << "sample: " << nlohmann::json(s).dump() << std::endl;
  }
  void OnCheckpoint(const CheckpointEvent& c) override {
    Emit({{"event", "checkpoint"}, {"step", c.step}, {"path", c.path}});
    out_ << "checkpoint: " << c.path << std::endl;
  }

 private:
  void Emit(const nlohmann::json& j) {
    if (jsonl_) *jsonl_ << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  }
  std::ostream& out_;
  int rank_;
  int64_t log_every_;
  std::unique_ptr<std::ofstream> jsonl_;
};

}  // namespace

int RunTrainCommand(const TrainCommandOptions& o, std::ostream& out, std::ostream& err) {
  absl::StatusOr<TrainConfig> config = ReadTrainConfig(o.spec);
  if (!config.ok()) {
    err << "error: " << config.status().message() << "\n";
    return 2;
  }
  TrainRunOptions run;
  run.dist = {o.rank, o.world_size, o.master_addr, o.master_port, std::chrono::seconds(o.timeout_s)};
  run.resume = o.resume;
  run.vocab = o.vocab;
  if (o.rank == 0) {
    out << absl::StrFormat(
               "train %s: %d layers, %d channels, %d parameters | %d steps of %d tokens (B=%d, T=%d, %d ranks, %d "
               "micro-steps)",
               config->name, config->model.n_layer, config->model.n_embd, config->model.NumParameters(),
               config->max_steps, config->total_batch_tokens, config->micro_batch, config->seq_len, o.world_size,
               config->total_batch_tokens / (config->micro_batch * config->seq_len * o.world_size))
        << std::endl;
  }
  ConsoleObserver observer(out, o.rank, config->log_every, o.metrics_jsonl);
  absl::Status s = RunTraining(*config, run, observer);
  if (!s.ok()) {
    err << "error: rank " << o.rank << ": " << s.message() << "\n";
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

int RunHellaSwagCommand(const HellaSwagCommandOptions& o, std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::vector<HellaSwagExample>> examples = ReadHellaSwag(o.data, o.limit);
  if (!examples.ok()) {
    err << "error: " << examples.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<Tokenizer> tok = LoadTokenizer(o.vocab);
  if (!tok.ok()) {
    err << "error: " << tok.status().message() << "\n";
    return 1;
  }
  absl::StatusOr<GPT> model = LoadHfModel(o.model_dir);
  if (!model.ok()) {
    err << "error: " << model.status().message() << "\n";
    return 1;
  }
  std::unique_ptr<std::ofstream> per_example;
  if (!o.per_example.empty()) per_example = std::make_unique<std::ofstream>(o.per_example);
  HellaSwagResult r;
  for (size_t i = 0; i < examples->size(); ++i) {
    const HellaSwagExample& ex = (*examples)[i];
    HellaSwagScore s = ScoreHellaSwag(*model, *tok, ex);
    r.examples += 1;
    r.correct += s.pred == ex.label;
    r.correct_norm += s.pred_norm == ex.label;
    if (per_example) {
      *per_example << nlohmann::json{{"index", i},
                                     {"label", ex.label},
                                     {"pred", s.pred},
                                     {"pred_norm", s.pred_norm},
                                     {"sum_loss", s.sum_loss},
                                     {"mean_loss", s.mean_loss}}
                          .dump()
                   << "\n";
    }
    if ((i + 1) % 500 == 0)
      err << "hellaswag: " << (i + 1) << "/" << examples->size() << " acc_norm " << r.acc_norm() << "\n";
  }
  out << nlohmann::json{{"examples", r.examples}, {"acc", r.acc()}, {"acc_norm", r.acc_norm()}}.dump() << "\n";
  return 0;
}

WorkerCommand AddTrainCommand(CLI::App& app, const WorkerGlobals& globals) {
  auto o = std::make_shared<TrainCommandOptions>();
  CLI::App* cmd = app.add_subcommand("train", "Train GPT-2 from a job spec (one rank; start one process per rank)");
  cmd->add_option("--spec", o->spec, "Job spec, YAML or JSON (gpt2d.v1.TrainSpec)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--rank", o->rank, "This process's rank")->capture_default_str();
  cmd->add_option("--world-size", o->world_size, "Number of ranks")->capture_default_str();
  cmd->add_option("--master-addr", o->master_addr, "Rank 0's address (TCPStore rendezvous)")->capture_default_str();
  cmd->add_option("--master-port", o->master_port, "Rank 0's rendezvous port")->capture_default_str();
  cmd->add_option("--timeout", o->timeout_s, "Seconds before a silent peer is declared dead")->capture_default_str();
  cmd->add_option("--resume", o->resume, "Checkpoint directory to resume from, or 'latest'");
  cmd->add_option("--metrics-jsonl", o->metrics_jsonl,
                  "Write every event as a JSON line (rank 0 only, or one file per rank if the path has {rank})");
  return {cmd, [o, &globals] {
            o->vocab = globals.vocab;
            return RunTrainCommand(*o, std::cout, std::cerr);
          }};
}

WorkerCommand AddHellaSwagCommand(CLI::App& app, const WorkerGlobals& globals) {
  auto o = std::make_shared<HellaSwagCommandOptions>();
  CLI::App* cmd = app.add_subcommand("eval-hellaswag", "HellaSwag accuracy of a model (official jsonl)");
  cmd->add_option("--model", o->model_dir, "Checkpoint directory")->required();
  cmd->add_option("--data", o->data, "hellaswag_val.jsonl")->required()->check(CLI::ExistingFile);
  cmd->add_option("--limit", o->limit, "Only the first N examples");
  cmd->add_option("--per-example", o->per_example, "Write per-example losses as JSONL");
  return {cmd, [o, &globals] {
            o->vocab = globals.vocab;
            return RunHellaSwagCommand(*o, std::cout, std::cerr);
          }};
}

}  // namespace gpt2
