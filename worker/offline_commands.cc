#include "worker/offline_commands.h"

#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/stream_decoder.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "worker/command_flags.h"
#include "worker/model/gpt2.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/sampling.h"
#include "worker/serve/completion_request.h"
#include "worker/serve/engine.h"
#include "worker/serve/token_stream.h"
#include "worker/serve/weight_format.h"

namespace gpt2 {
namespace {

int Fail(std::ostream& err, const absl::Status& s, int code = 1) {
  err << "error: " << s.message() << "\n";
  return code;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

torch::Tensor ToTensor(const std::vector<TokenId>& ids, int64_t begin, int64_t end) {
  std::vector<int64_t> v(ids.begin() + begin, ids.begin() + end);
  return torch::tensor(v, torch::kLong).unsqueeze(0);  // (1,T)
}

}  // namespace

int RunScore(const ScoreOptions& o, std::ostream& out, std::ostream& err) {
  absl::StatusOr<Tokenizer> tok = LoadTokenizer(o.vocab);
  if (!tok.ok()) return Fail(err, tok.status());
  absl::StatusOr<GPT> model = LoadHfModel(o.model_dir);
  if (!model.ok()) return Fail(err, model.status());
  const GPTConfig& cfg = (*model)->config();

  // One token stream: every document preceded by <|endoftext|>, as in training data, so that each
  // document's first token is predicted too.
  std::vector<TokenId> ids;
  for (const std::string& f : o.files) {
    absl::StatusOr<std::string> text = ReadFile(f);
    if (!text.ok()) return Fail(err, text.status(), 2);
    ids.push_back(tok->eot_token());
    std::vector<TokenId> doc = tok->EncodeOrdinary(*text);
    ids.insert(ids.end(), doc.begin(), doc.end());
  }
  const int64_t N = static_cast<int64_t>(ids.size());
  const int64_t ctx = cfg.n_positions;
  const int64_t stride = o.stride > 0 ? std::min(o.stride, ctx) : std::max<int64_t>(1, ctx / 2);

  // Sliding window: each target t >= 1 is scored once, with as much left context as fits.
  // Window [end - ctx, end) scores the targets in [previous end, end).
  torch::InferenceMode inference;
  double total = 0;
  int64_t scored = 0;
  for (int64_t prev_end = 1, end = std::min(ctx, N); prev_end < N; prev_end = end, end = std::min(end + stride, N)) {
    const int64_t begin = std::max<int64_t>(0, end - ctx);
    torch::Tensor logits = (*model)->forward(ToTensor(ids, begin, end))[0];  // (T,Vp)
    torch::Tensor logp = torch::log_softmax(logits.slice(1, 0, cfg.vocab_size).to(torch::kDouble), 1);
    torch::Tensor targets =
        torch::tensor(std::vector<int64_t>(ids.begin() + prev_end, ids.begin() + end), torch::kLong);
    // target at position t is predicted by the logits at position t - 1
    torch::Tensor rows = logp.slice(0, prev_end - 1 - begin, end - 1 - begin);
    total -= rows.gather(1, targets.unsqueeze(1)).sum().item<double>();
    scored += end - prev_end;
  }
  const double mean = scored > 0 ? total / static_cast<double>(scored) : 0.0;
  nlohmann::ordered_json j;
  j["files"] = o.files.size();
  j["tokens"] = scored;
  j["mean_loss"] = mean;
  j["perplexity"] = std::exp(mean);
  j["context"] = ctx;
  j["stride"] = stride;
  out << j.dump() << "\n";
  return 0;
}

int RunSample(const SampleOptions& o, std::ostream& out, std::ostream& err) {
  if (o.max_new_tokens < 0) return Fail(err, absl::InvalidArgumentError("max-new-tokens must be >= 0"), 2);
  absl::StatusOr<Tokenizer> tok = LoadTokenizer(o.vocab);
  if (!tok.ok()) return Fail(err, tok.status());
  // The serving engine with one slot: offline samples are exactly what a replica would serve.
  EngineOptions engine_options;
  engine_options.max_slots = 1;
  engine_options.weights = o.weights;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(o.model_dir, engine_options);
  if (!engine.ok()) return Fail(err, engine.status());

  GenerationParams params;
  params.prompt = tok->EncodePrompt(o.prompt);
  params.temperature = o.temperature;
  params.top_k = o.top_k;
  params.top_p = o.top_p;
  params.seed = o.seed;
  params.max_tokens = o.max_new_tokens;
  params.ignore_eos = o.ignore_eos;

  std::vector<TokenId> tokens;
  std::vector<float> logprobs;
  std::string text;
  std::string finish = "length";
  if (o.max_new_tokens > 0) {
    if (absl::Status s = ValidateGeneration(params, (*engine)->config()); !s.ok()) return Fail(err, s, 2);
    // Events arrive on the engine's thread; this one prints them in order.
    TokenStream stream;
    absl::StatusOr<int64_t> id = (*engine)->Submit(params, stream.Callback());
    if (!id.ok()) return Fail(err, id.status(), 2);
    if (!o.json) out << o.prompt << std::flush;
    StreamDecoder decoder(*tok);
    for (bool done = false; !done;) {
      for (const TokenEvent& e : stream.Next(std::chrono::seconds(1))) {
        if (e.token >= 0) {
          tokens.push_back(static_cast<TokenId>(e.token));
          logprobs.push_back(e.logprob);
          absl::StatusOr<std::string> delta = decoder.Push(static_cast<TokenId>(e.token));
          if (!delta.ok()) return Fail(err, delta.status());
          text += *delta;
          if (!o.json) out << *delta << std::flush;
        }
        if (e.finish != FinishReason::kNone) {
          done = true;
          if (e.finish == FinishReason::kEos) finish = "eos";
          if (e.finish == FinishReason::kCancelled || e.finish == FinishReason::kError)
            return Fail(err, absl::InternalError(absl::StrCat("generation stopped: ", e.error)));
        }
      }
    }
    std::string rest = decoder.Finish();
    text += rest;
    if (!o.json) out << rest;
  } else if (!o.json) {
    out << o.prompt;
  }
  if (o.json) {
    nlohmann::ordered_json j;
    j["prompt"] = o.prompt;
    j["text"] = text;
    j["tokens"] = tokens;
    j["logprobs"] = logprobs;
    j["finish_reason"] = finish;
    out << j.dump() << "\n";
  } else {
    out << "\n";
  }
  return 0;
}

int RunInit(const InitOptions& o, std::ostream& out, std::ostream& err) {
  absl::StatusOr<GPTConfig> cfg = PresetConfig(o.preset);
  if (!cfg.ok()) return Fail(err, cfg.status(), 2);
  if (o.n_layer) cfg->n_layer = *o.n_layer;
  if (o.n_head) cfg->n_head = *o.n_head;
  if (o.n_embd) cfg->n_embd = *o.n_embd;
  if (o.n_positions) cfg->n_positions = *o.n_positions;
  if (o.vocab_size) cfg->vocab_size = *o.vocab_size;
  if (absl::Status s = Validate(*cfg); !s.ok()) return Fail(err, s, 2);
  torch::manual_seed(o.seed);
  GPT model(*cfg);
  if (absl::Status s = SaveHfModel(model, o.out_dir); !s.ok()) return Fail(err, s);
  out << "wrote " << o.out_dir << " (" << cfg->n_layer << " layers, " << cfg->n_embd << " channels, " << cfg->n_head
      << " heads, context " << cfg->n_positions << ", " << cfg->NumParameters() << " parameters)\n";
  return 0;
}

WorkerCommand AddScoreCommand(CLI::App& app, const WorkerGlobals& globals) {
  auto o = std::make_shared<ScoreOptions>();
  CLI::App* cmd = app.add_subcommand("score", "Mean loss and perplexity of a model on text files");
  cmd->add_option("--model", o->model_dir, "Checkpoint directory (config.json + model.safetensors)")->required();
  cmd->add_option("--stride", o->stride, "Sliding-window step in tokens (default: half the context)")
      ->check(AtLeast(0));
  cmd->add_option("files", o->files, "Text files; each is one document")->required()->check(CLI::ExistingFile);
  return {cmd, [o, &globals] {
            o->vocab = globals.vocab;
            return RunScore(*o, std::cout, std::cerr);
          }};
}

WorkerCommand AddSampleCommand(CLI::App& app, const WorkerGlobals& globals) {
  auto o = std::make_shared<SampleOptions>();
  CLI::App* cmd = app.add_subcommand("sample", "Continue a prompt");
  cmd->add_option("--model", o->model_dir, "Checkpoint directory")->required();
  cmd->add_option("--prompt", o->prompt, "Prompt text (empty: start a new document)");
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "Keep the k most likely tokens; 0 = all")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling threshold in (0, 1]")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at <|endoftext|>");
  cmd->add_flag("--json", o->json, "Print one JSON object (text, tokens, logprobs, finish_reason)");
  cmd->add_option("--weights", o->weights, "Weight format: fp32, bf16, int8 or w8a8 (as `serve --weights`)")
      ->capture_default_str()
      ->check(CLI::IsMember(WeightFormatNames()));
  return {cmd, [o, &globals] {
            o->vocab = globals.vocab;
            return RunSample(*o, std::cout, std::cerr);
          }};
}

WorkerCommand AddInitCommand(CLI::App& app) {
  auto o = std::make_shared<InitOptions>();
  CLI::App* cmd = app.add_subcommand("init", "Write a freshly initialised GPT-2 as a checkpoint directory");
  cmd->add_option("--config", o->preset, "gpt2, gpt2-medium, gpt2-large or gpt2-xl")->capture_default_str();
  cmd->add_option("--n-layer", o->n_layer, "Override the number of layers");
  cmd->add_option("--n-head", o->n_head, "Override the number of heads");
  cmd->add_option("--n-embd", o->n_embd, "Override the channels");
  cmd->add_option("--n-positions", o->n_positions, "Override the context length");
  cmd->add_option("--vocab-size", o->vocab_size, "Override the vocabulary size");
  cmd->add_option("--seed", o->seed, "Seed of the initialisation")->capture_default_str();
  cmd->add_option("--out", o->out_dir, "Directory to write")->required();
  return {cmd, [o] { return RunInit(*o, std::cout, std::cerr); }};
}

}  // namespace gpt2
